use super::*;

fn id(s: &str) -> KeyId {
    KeyId::new(s).expect("key id")
}

#[tokio::test]
async fn a_rotated_key_survives_a_restart_and_signs_once_nobody_needs_telling() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let config_key = NodeSigningKey::generate(id("ZM-DSW-dev1"));
    let config_pem = config_key.to_pkcs8_pem().expect("pem");
    let registry = PeerRegistry::default();
    let node = NodeId::new("ZM-DSW").expect("node");
    let load = |store: &Store| {
        KeyBook::load(
            &node,
            NodeSigningKey::from_pkcs8_pem(id("ZM-DSW-dev1"), &config_pem).expect("key"),
            &registry,
            store,
            &dir.path().join("keys"),
        )
        .expect("book")
    };
    let keys = load(&store);
    assert_eq!(keys.signer().id(), &id("ZM-DSW-dev1"));
    let edit = keys.edit().await;
    assert!(matches!(
        edit.make_own(id("ZM-DSW-dev1"), 1000).await,
        Err(KeyBookError::Refused(_))
    ));
    let new = edit
        .make_own(id("ZM-DSW-2"), 86_400_000)
        .await
        .expect("make");
    let overlap = UnixMillis::now().plus_ms(3_600_000);
    edit.add_own(&store, new, overlap, &[]).await.expect("add");
    drop(edit);
    // No peer to tell: the new key signs at once; the old one ends with the overlap.
    assert_eq!(keys.signer().id(), &id("ZM-DSW-2"));
    let (own, _) = keys.list();
    assert_eq!(own.len(), 2);
    assert_eq!(own[0].not_after_ms, overlap.0);
    assert!(own[1].active);
    drop(keys);
    let again = load(&store);
    assert_eq!(again.signer().id(), &id("ZM-DSW-2"));
    assert_eq!(again.own_keyring().keys().len(), 2);
    // The superseded key can be revoked; then the only usable key cannot.
    let edit = again.edit().await;
    edit.check_own_revocation(&id("ZM-DSW-dev1"), UnixMillis::now())
        .expect("revocable");
    edit.revoke_own(&store, &id("ZM-DSW-dev1"), UnixMillis::now(), "superseded")
        .await
        .expect("revoke");
    assert!(
        edit.check_own_revocation(&id("ZM-DSW-2"), UnixMillis::now())
            .is_err()
    );
    drop(edit);
    drop(again);
    let third = load(&store);
    let ring = third.own_keyring();
    assert!(
        ring.get(&id("ZM-DSW-dev1"))
            .expect("kept")
            .revoked_at
            .is_some()
    );
}
