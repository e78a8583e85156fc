//! Unit tests of envelope verification: one test per refusal class, plus receipts.

use super::*;
use crate::envelope::EnvelopeDraft;
use crate::envelope::danger::seal_unchecked as seal_envelope;
use crate::keys::{NodeSigningKey, PeerKey};
use crate::receipt::{ReceiptError, issue_receipt, verify_receipt};

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

struct Fixture {
    key: NodeSigningKey,
    ring: Keyring,
    policy: VerificationPolicy,
}

fn fixture() -> Fixture {
    let key = NodeSigningKey::generate(KeyId::new("zm-1").expect("key id"));
    let ring = Keyring::new(vec![
        PeerKey::new(key.id().clone(), key.verifying_key(), None, None).expect("peer key"),
    ]);
    let policy = VerificationPolicy {
        local_node: node("MW-DSW"),
        max_clock_skew_ms: 60_000,
    };
    Fixture { key, ring, policy }
}

fn referral() -> pb::ReferralPayload {
    pb::ReferralPayload {
        case_reference: "case-1".into(),
        protection_concerns: Some(pb::ProtectionConcerns {
            migratory_status: pb::MigratoryStatus::Unaccompanied as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn draft() -> EnvelopeDraft {
    EnvelopeDraft {
        message_id: MessageId::random(),
        kind: pb::MessageKind::Referral,
        sender: node("ZM-DSW"),
        recipient: node("MW-DSW"),
        created_at: NOW,
        expires_at: NOW.plus_ms(3_600_000),
        purpose: pb::Purpose::ServiceReferral,
        consent_id: "consent-1".into(),
        correlation_id: "corr-1".into(),
        data_categories: vec![pb::DataCategory::ProtectionConcerns],
        consent: None,
        custody: vec![],
        recipient_unit: None,
    }
}

fn sealed(f: &Fixture, d: &EnvelopeDraft) -> SealedEnvelope {
    seal_envelope(d, referral().encode_to_vec(), &f.key)
}

fn verify(f: &Fixture, s: SealedEnvelope) -> Result<VerifiedEnvelope, Refusal> {
    verify_envelope(s, &node("ZM-DSW"), Some(&f.ring), &f.policy, NOW)
}

#[test]
fn good_envelope_verifies() {
    let f = fixture();
    let d = draft();
    let v = verify(&f, sealed(&f, &d)).expect("verifies");
    assert_eq!(v.header().message_id, d.message_id);
    assert_eq!(
        v.referral().map(|r| r.case_reference.as_str()),
        Some("case-1")
    );
}

#[test]
fn unknown_peer() {
    let f = fixture();
    let r = verify_envelope(sealed(&f, &draft()), &node("ZM-DSW"), None, &f.policy, NOW);
    assert_eq!(r.map(|_| ()).unwrap_err().code(), "unknown-peer");
}

#[test]
fn impersonation() {
    let f = fixture();
    let r = verify_envelope(
        sealed(&f, &draft()),
        &node("ZW-DSW"),
        Some(&f.ring),
        &f.policy,
        NOW,
    );
    assert_eq!(r.map(|_| ()).unwrap_err().code(), "impersonation");
}

#[test]
fn wrong_key_and_tampered_header() {
    let f = fixture();
    let impostor = NodeSigningKey::generate(f.key.id().clone());
    let forged = seal_envelope(&draft(), referral().encode_to_vec(), &impostor);
    assert_eq!(
        verify(&f, forged).map(|_| ()).unwrap_err().code(),
        "bad-signature"
    );

    let mut s = sealed(&f, &draft());
    let at = s
        .header
        .windows(6)
        .position(|w| w == b"corr-1")
        .expect("correlation id in header");
    s.header[at + 5] = b'2';
    assert_eq!(
        verify(&f, s).map(|_| ()).unwrap_err().code(),
        "bad-signature"
    );
}

#[test]
fn unknown_key_id() {
    let f = fixture();
    let other = NodeSigningKey::generate(KeyId::new("zm-9").expect("key id"));
    let s = seal_envelope(&draft(), referral().encode_to_vec(), &other);
    assert_eq!(verify(&f, s).map(|_| ()).unwrap_err().code(), "unknown-key");
}

#[test]
fn tampered_payload() {
    let f = fixture();
    let mut s = sealed(&f, &draft());
    let last = s.payload.len() - 1;
    s.payload[last] ^= 1;
    assert_eq!(
        verify(&f, s).map(|_| ()).unwrap_err().code(),
        "payload-digest-mismatch"
    );
}

#[test]
fn expired_and_skewed() {
    let f = fixture();
    let mut d = draft();
    d.created_at = NOW.plus_ms(-7_200_000);
    d.expires_at = NOW.plus_ms(-1);
    assert_eq!(
        verify(&f, sealed(&f, &d)).map(|_| ()).unwrap_err().code(),
        "expired"
    );

    let mut d = draft();
    d.created_at = NOW.plus_ms(120_000);
    d.expires_at = NOW.plus_ms(3_600_000);
    assert_eq!(
        verify(&f, sealed(&f, &d)).map(|_| ()).unwrap_err().code(),
        "clock-skew"
    );
}

#[test]
fn malformed_and_oversized() {
    let f = fixture();
    let mut s = sealed(&f, &draft());
    s.header = vec![0xff; 10];
    assert_eq!(verify(&f, s).map(|_| ()).unwrap_err().code(), "malformed");

    let mut s = sealed(&f, &draft());
    s.payload = vec![0; crate::limits::MAX_PAYLOAD_BYTES + 1];
    assert_eq!(verify(&f, s).map(|_| ()).unwrap_err().code(), "oversized");

    let mut s = sealed(&f, &draft());
    s.signature.pop();
    assert_eq!(verify(&f, s).map(|_| ()).unwrap_err().code(), "malformed");
}

#[test]
fn misdirected_and_category_mismatch() {
    let f = fixture();
    let mut d = draft();
    d.recipient = node("ZW-DSW");
    assert_eq!(
        verify(&f, sealed(&f, &d)).map(|_| ()).unwrap_err().code(),
        "misdirected"
    );

    let mut d = draft();
    d.data_categories = vec![pb::DataCategory::Identity];
    assert_eq!(
        verify(&f, sealed(&f, &d)).map(|_| ()).unwrap_err().code(),
        "category-mismatch"
    );
}

#[test]
fn receipts_verify_and_bind_to_the_envelope() {
    let f = fixture();
    let receiver_key = NodeSigningKey::generate(KeyId::new("mw-1").expect("key id"));
    let receiver_ring = Keyring::new(vec![
        PeerKey::new(
            receiver_key.id().clone(),
            receiver_key.verifying_key(),
            None,
            None,
        )
        .expect("key"),
    ]);
    let v = verify(&f, sealed(&f, &draft())).expect("verifies");
    let receipt = issue_receipt(&v, &node("MW-DSW"), NOW, &receiver_key);
    let id = v.header().message_id;
    let ok = verify_receipt(
        &receipt,
        &node("ZM-DSW"),
        id,
        v.digest(),
        &node("MW-DSW"),
        &receiver_ring,
    )
    .expect("receipt verifies");
    assert_eq!(ok.status, pb::ReceiptStatus::Accepted);

    let other = verify(&f, sealed(&f, &draft())).expect("verifies");
    let err = verify_receipt(
        &receipt,
        &node("ZM-DSW"),
        id,
        other.digest(),
        &node("MW-DSW"),
        &receiver_ring,
    )
    .map(|_| ())
    .unwrap_err();
    assert!(matches!(err, ReceiptError::Mismatch(_)));

    let mut forged = receipt.clone();
    forged.signature[0] ^= 1;
    let err = verify_receipt(
        &forged,
        &node("ZM-DSW"),
        id,
        v.digest(),
        &node("MW-DSW"),
        &receiver_ring,
    )
    .map(|_| ())
    .unwrap_err();
    assert!(matches!(err, ReceiptError::BadSignature { .. }));
}
