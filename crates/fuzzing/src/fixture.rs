//! Fixed keys, nodes and a valid envelope: what the targets sign with and mutate. Everything
//! here is deterministic, so a crash reproduces from its input alone.

use ed25519_dalek::SigningKey;
use kinbridge_core::envelope::danger::seal_unchecked;
use kinbridge_core::limits::SALT_BYTES;
use kinbridge_core::verify::VerificationPolicy;
use kinbridge_core::{
    EnvelopeDraft, KeyId, Keyring, MessageId, NodeId, NodeSigningKey, PayloadCommitment,
    PayloadSalt, PeerKey, SealedEnvelope, UnixMillis,
};
use kinbridge_proto::v1 as pb;
use prost::Message;

/// The instant every target verifies at.
pub const NOW: UnixMillis = UnixMillis(1_800_000_000_000);
/// The sending peer (what its TLS certificate proved).
pub const SENDER: &str = "ZM-DSW";
/// The receiving node (this node).
pub const RECEIVER: &str = "MW-DSW";
/// The sender's signing key id.
pub const SENDER_KEY: &str = "ZM-DSW-fuzz1";
/// The receiver's signing key id.
pub const RECEIVER_KEY: &str = "MW-DSW-fuzz1";
/// The message id of the fixed envelope.
pub const MESSAGE_ID: &str = "0b7e2f4c-3d1a-4c5e-9f60-7a8b9c0d1e2f";

fn node(s: &str) -> NodeId {
    NodeId::new(s).unwrap_or_else(|e| panic!("fixture node id: {e}"))
}

fn key_id(s: &str) -> KeyId {
    KeyId::new(s).unwrap_or_else(|e| panic!("fixture key id: {e}"))
}

/// The sender node.
pub fn sender() -> NodeId {
    node(SENDER)
}

/// The receiver node.
pub fn receiver() -> NodeId {
    node(RECEIVER)
}

/// The sender's signing key, from a fixed seed.
pub fn sender_key() -> NodeSigningKey {
    NodeSigningKey::new(key_id(SENDER_KEY), SigningKey::from_bytes(&[7; 32]))
}

/// The receiver's signing key, from a fixed seed.
pub fn receiver_key() -> NodeSigningKey {
    NodeSigningKey::new(key_id(RECEIVER_KEY), SigningKey::from_bytes(&[9; 32]))
}

/// The keyring a node holds for `key`'s owner: that key, valid at all times.
pub fn keyring(key: &NodeSigningKey) -> Keyring {
    let peer = PeerKey::new(key.id().clone(), key.verifying_key(), None, None)
        .unwrap_or_else(|e| panic!("fixture peer key: {e}"));
    Keyring::new(vec![peer])
}

/// The receiver's verification policy.
pub fn policy() -> VerificationPolicy {
    VerificationPolicy {
        local_node: receiver(),
        max_clock_skew_ms: 60_000,
    }
}

/// A referral payload of one data category.
pub fn referral_payload() -> pb::ReferralPayload {
    pb::ReferralPayload {
        case_reference: "case-1".into(),
        protection_concerns: Some(pb::ProtectionConcerns {
            migratory_status: pb::MigratoryStatus::Unaccompanied as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The draft of a valid `kind` envelope from the sender to the receiver, declaring
/// `categories`.
pub fn draft(kind: pb::MessageKind, categories: Vec<pb::DataCategory>) -> EnvelopeDraft {
    EnvelopeDraft {
        message_id: MessageId::new(MESSAGE_ID)
            .unwrap_or_else(|e| panic!("fixture message id: {e}")),
        kind,
        sender: sender(),
        recipient: receiver(),
        created_at: NOW,
        expires_at: NOW.plus_ms(3_600_000),
        purpose: pb::Purpose::ServiceReferral,
        consent_id: "consent-1".into(),
        correlation_id: "corr-1".into(),
        data_categories: categories,
        consent: None,
        custody: vec![],
        recipient_unit: None,
    }
}

/// A valid referral envelope, sealed by the sender's key under a fixed payload salt (sealing
/// draws a random one; it is replaced so the envelope is the same on every call).
pub fn valid_envelope() -> SealedEnvelope {
    let payload = referral_payload().encode_to_vec();
    let sealed = seal_unchecked(
        &draft(
            pb::MessageKind::Referral,
            vec![pb::DataCategory::ProtectionConcerns],
        ),
        payload.clone(),
        &sender_key(),
    );
    let salt = PayloadSalt([5; SALT_BYTES]);
    let mut header = pb::EnvelopeHeader::decode(sealed.header.as_slice())
        .unwrap_or_else(|e| panic!("fixture header: {e}"));
    header.payload_digest = PayloadCommitment::compute(&salt, &payload).0.to_vec();
    let sealed = SealedEnvelope {
        payload_salt: salt.0.to_vec(),
        ..sealed
    };
    resign(&sealed, header.encode_to_vec(), &sender_key())
}

/// `sealed` with its header replaced by `header` and signed again by `key`: the signature
/// valid, so verification goes on to what the header says.
pub fn resign(sealed: &SealedEnvelope, header: Vec<u8>, key: &NodeSigningKey) -> SealedEnvelope {
    use kinbridge_core::pae::{ENVELOPE_HEADER_TYPE, pae};
    let signature = key
        .sign(&pae(ENVELOPE_HEADER_TYPE, &header))
        .to_bytes()
        .to_vec();
    SealedEnvelope {
        header,
        signature,
        ..sealed.clone()
    }
}
