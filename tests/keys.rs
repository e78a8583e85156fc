//! Signing-key rotation and revocation across two nodes: the new key is announced under the
//! old one and used once the peer has it; during the overlap both verify; a revoked key is
//! refused from its revocation on; a peer's key revoked here by an admin is refused too.

mod common;

use common::*;
use kinbridge_core::envelope::danger::seal_unchecked;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::admin_service_client::AdminServiceClient;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

async fn keys(admin: &mut AdminServiceClient<Channel>) -> pb::ListKeysResponse {
    admin
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("list keys")
        .into_inner()
}

fn find<'a>(keys: &'a [pb::KeyInfo], node: &str, key_id: &str) -> Option<&'a pb::KeyInfo> {
    keys.iter()
        .find(|k| k.node_id == node && k.key_id == key_id)
}

fn signer_of(delivery: &pb::GetDeliveryResponse) -> String {
    let envelope = delivery.envelope.as_ref().expect("envelope");
    pb::EnvelopeHeader::decode(envelope.header.as_slice())
        .expect("header")
        .signing_key_id
}

#[tokio::test]
async fn a_rotated_key_is_announced_used_and_the_old_one_revoked() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zm_admin = AdminServiceClient::new(fed.channel("ZM-DSW", "admin"));
    let mut mw_admin = AdminServiceClient::new(fed.channel("MW-DSW", "admin"));
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let before = deliver_referrals(&mut zambia, "MW-DSW", 1).await;
    assert_eq!(signer_of(&before[0].1), "ZM-DSW-dev1");

    let rotated = zm_admin
        .rotate_key(pb::RotateKeyRequest {
            key_id: "ZM-DSW-2027".into(),
            overlap_seconds: 3600,
            lifetime_seconds: 30 * 86_400,
        })
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(rotated.announced_to, vec!["MW-DSW".to_owned()]);
    let new_key = rotated.key.expect("key");

    // Malawi learns the key from the announcement; Zambia signs with it once acknowledged.
    eventually("Zambia signs with the new key", || {
        let mut admin = zm_admin.clone();
        async move {
            find(&keys(&mut admin).await.own, "ZM-DSW", "ZM-DSW-2027").is_some_and(|k| k.active)
        }
    })
    .await;
    let held = keys(&mut mw_admin).await;
    let learned = find(&held.peers, "ZM-DSW", "ZM-DSW-2027").expect("Malawi holds the new key");
    assert_eq!(learned.fingerprint, new_key.fingerprint);
    assert_eq!(learned.source, "announced");
    let own = keys(&mut zm_admin).await.own;
    let old = find(&own, "ZM-DSW", "ZM-DSW-dev1").expect("old key");
    assert_eq!(
        old.not_after_ms,
        new_key.not_before_ms + 3_600_000,
        "the overlap ends the old key"
    );
    assert_eq!(
        find(&own, "ZM-DSW", "ZM-DSW-2027")
            .expect("new")
            .acknowledged_by,
        vec!["MW-DSW".to_owned()]
    );

    // A referral now goes out under the new key and is accepted.
    let after = deliver_referrals(&mut zambia, "MW-DSW", 1).await;
    assert_eq!(signer_of(&after[0].1), "ZM-DSW-2027");

    // During the overlap the old key still verifies.
    let mut as_zambia = fed.peer_client_as("MW-DSW", "ZM-DSW");
    let old_key = fed.signing_key("ZM-DSW");
    let in_overlap = seal_unchecked(&draft("ZM-DSW", "MW-DSW"), payload(), &old_key);
    let receipt = as_zambia
        .deliver(pb::DeliverRequest {
            envelope: Some(in_overlap.into()),
        })
        .await
        .expect("the old key verifies during the overlap")
        .into_inner()
        .receipt
        .expect("receipt");
    let body = pb::ReceiptBody::decode(receipt.body.as_slice()).expect("body");
    assert_eq!(body.status, pb::ReceiptStatus::Accepted as i32);

    // Zambia retires the old key: the revocation reaches Malawi, which refuses it from then on.
    let revoked = zm_admin
        .revoke_key(pb::RevokeKeyRequest {
            key_id: "ZM-DSW-dev1".into(),
            reason: "superseded".into(),
            ..Default::default()
        })
        .await
        .expect("revoke the old key")
        .into_inner();
    assert_eq!(revoked.announced_to, vec!["MW-DSW".to_owned()]);
    eventually("Malawi holds the revocation", || {
        let mut admin = mw_admin.clone();
        async move {
            find(&keys(&mut admin).await.peers, "ZM-DSW", "ZM-DSW-dev1")
                .is_some_and(|k| k.revoked_at_ms != 0 && k.revocation_reason == "superseded")
        }
    })
    .await;
    let late = seal_unchecked(&draft("ZM-DSW", "MW-DSW"), payload(), &old_key);
    let status = as_zambia
        .deliver(pb::DeliverRequest {
            envelope: Some(late.into()),
        })
        .await
        .expect_err("a revoked key is refused");
    assert_eq!(
        refusal(&status),
        (Code::Unauthenticated, "key-revoked".to_owned()),
        "{}",
        status.message()
    );
    // The key left cannot be revoked: the node would have nothing to sign with.
    let status = zm_admin
        .revoke_key(pb::RevokeKeyRequest {
            key_id: "ZM-DSW-2027".into(),
            reason: "retired".into(),
            ..Default::default()
        })
        .await
        .expect_err("the last key stays");
    assert_eq!(
        refusal(&status),
        (Code::FailedPrecondition, "key-refused".to_owned())
    );
    deliver_referrals(&mut zambia, "MW-DSW", 1).await;

    // Zambia phones to say its new key leaked: Malawi's admin revokes it there. Zambia's next
    // referral is refused by Malawi, and Zambia's caseworker sees why (to send it again once
    // Zambia has a new key).
    mw_admin
        .revoke_key(pb::RevokeKeyRequest {
            node_id: "ZM-DSW".into(),
            key_id: "ZM-DSW-2027".into(),
            reason: "compromised".into(),
            ..Default::default()
        })
        .await
        .expect("revoke a peer's key here");
    let id = zambia
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect("submit")
        .into_inner()
        .message_id;
    let d = wait_delivery(&mut zambia, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Refused as i32);
    assert!(
        d.last_error.contains("key-revoked") || d.last_error.contains("revoked"),
        "{}",
        d.last_error
    );

    // Both logs say what happened to the keys; Zambia's verifies with both its keys, and no
    // longer with the old key alone.
    let zm_export = fed.dir.path().join("zm.jsonl");
    export_log_to(
        &fed.pki,
        "ZM-DSW",
        fed.node("ZM-DSW").local_addr,
        &zm_export,
    )
    .await;
    let new_public = kinbridge_core::PeerKey::from_public_key_pem(
        key_id("ZM-DSW-2027"),
        &rotated.public_key_pem,
    )
    .expect("new public key");
    let both = [old_key.verifying_key(), *new_public.verifying_key()];
    let zm_entries = entries(&verify_export_file("ZM-DSW", &zm_export, &both));
    let old_only = kinbridge_audit::export::verify_export(
        std::io::BufReader::new(std::fs::File::open(&zm_export).expect("open")),
        &[kinbridge_audit::NoteKey {
            name: kinbridge_audit::checkpoint::origin_of(&node_id("ZM-DSW")),
            key: old_key.verifying_key(),
        }],
        false,
    );
    assert!(
        old_only.is_err(),
        "later checkpoints are signed by the new key"
    );
    let own_events = |event: pb::AuditEvent| {
        zm_entries
            .iter()
            .filter(|e| e.event == event as i32 && e.actor == "admin-1")
            .map(|e| e.reason.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(own_events(pb::AuditEvent::KeyAdded), vec!["ZM-DSW-2027"]);
    assert_eq!(
        own_events(pb::AuditEvent::KeyRevoked),
        vec!["ZM-DSW-dev1:superseded"]
    );
    let mw_export = fed.dir.path().join("mw.jsonl");
    let mw = export_and_verify(
        &fed.pki,
        "MW-DSW",
        fed.node("MW-DSW").local_addr,
        &mw_export,
    )
    .await;
    let mw_entries = entries(&mw);
    let about_zambia = |event: pb::AuditEvent| {
        mw_entries
            .iter()
            .filter(|e| e.event == event as i32 && e.peer == "ZM-DSW")
            .map(|e| e.reason.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(about_zambia(pb::AuditEvent::KeyAdded), vec!["ZM-DSW-2027"]);
    assert_eq!(
        about_zambia(pb::AuditEvent::KeyRevoked),
        vec!["ZM-DSW-dev1:superseded", "ZM-DSW-2027:compromised"]
    );
    assert!(
        about_zambia(pb::AuditEvent::Refused)
            .iter()
            .any(|r| r == "key-revoked")
    );
    fed.shutdown().await;
}
