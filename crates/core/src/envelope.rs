//! Building and sealing envelopes: the header is serialized once, signed over its DSSE
//! pre-authentication encoding, and from then on travels as those exact bytes.

use kinbridge_proto::v1 as pb;
use prost::Message;

use crate::digest::{EnvelopeDigest, PayloadCommitment, PayloadSalt};
use crate::ids::{MessageId, NodeId};
use crate::keys::NodeSigningKey;
use crate::pae::{ENVELOPE_HEADER_TYPE, pae};
use crate::time::UnixMillis;

/// Version of the envelope header this crate writes and accepts.
pub const HEADER_VERSION: u32 = 1;

/// What a sender states about a message before it is sealed.
#[derive(Debug, Clone)]
pub struct EnvelopeDraft {
    /// Sender-chosen id, unique per sender.
    pub message_id: MessageId,
    /// What the envelope carries.
    pub kind: pb::MessageKind,
    /// This node.
    pub sender: NodeId,
    /// The peer it goes to.
    pub recipient: NodeId,
    /// Creation instant.
    pub created_at: UnixMillis,
    /// Instant after which it must not be delivered.
    pub expires_at: UnixMillis,
    /// Why the data is sent.
    pub purpose: pb::Purpose,
    /// The consent the transfer relies on.
    pub consent_id: String,
    /// Links the messages of one case.
    pub correlation_id: String,
    /// Categories present in the payload, sorted ascending.
    pub data_categories: Vec<pb::DataCategory>,
    /// The consent scope the transfer relies on.
    pub consent: Option<pb::ConsentScope>,
    /// The nodes that held the data before the sender, originator first.
    pub custody: Vec<NodeId>,
    /// The recipient's unit the data is addressed to; `None` for its intake.
    pub recipient_unit: Option<crate::ids::UnitName>,
}

impl EnvelopeDraft {
    /// A draft of a `kind` message from `sender` to `recipient` for `purpose`: a fresh random
    /// message id, created now and expiring now (sealing sets the expiry from the message's
    /// time to live), no consent, data category, custody, correlation or unit. What varies
    /// is set by struct update: `EnvelopeDraft { consent_id, ..EnvelopeDraft::new(…) }`.
    pub fn new(
        kind: pb::MessageKind,
        sender: NodeId,
        recipient: NodeId,
        purpose: pb::Purpose,
    ) -> Self {
        let now = UnixMillis::now();
        Self {
            message_id: MessageId::random(),
            kind,
            sender,
            recipient,
            created_at: now,
            expires_at: now,
            purpose,
            consent_id: String::new(),
            correlation_id: String::new(),
            data_categories: Vec::new(),
            consent: None,
            custody: Vec::new(),
            recipient_unit: None,
        }
    }
}

/// An envelope as it crosses the wire: signed header bytes, signature, payload and salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEnvelope {
    /// Serialized `EnvelopeHeader`, exactly as signed.
    pub header: Vec<u8>,
    /// Ed25519 signature over `PAE(ENVELOPE_HEADER_TYPE, header)`.
    pub signature: Vec<u8>,
    /// Serialized payload.
    pub payload: Vec<u8>,
    /// Salt of the payload commitment.
    pub payload_salt: Vec<u8>,
}

impl SealedEnvelope {
    /// The digest that names this exact envelope in receipts and logs.
    pub fn digest(&self) -> EnvelopeDigest {
        EnvelopeDigest::compute(&self.header, &self.signature)
    }
}

impl From<pb::Envelope> for SealedEnvelope {
    fn from(e: pb::Envelope) -> Self {
        Self {
            header: e.header,
            signature: e.signature,
            payload: e.payload,
            payload_salt: e.payload_salt,
        }
    }
}

impl From<SealedEnvelope> for pb::Envelope {
    fn from(e: SealedEnvelope) -> Self {
        Self {
            header: e.header,
            signature: e.signature,
            payload: e.payload,
            payload_salt: e.payload_salt,
        }
    }
}

/// A transfer that its consent scope, the firewall and the receiver's policy all cover (or,
/// for a message that carries no personal data, that no scope needs to cover). Only the
/// checks of [`crate::consent`] make one: [`crate::consent::check_transfer`] and the permits
/// of messages without personal data. [`seal_envelope`] seals nothing else.
#[derive(Debug, Clone)]
pub struct PermittedTransfer {
    draft: EnvelopeDraft,
}

impl PermittedTransfer {
    /// The permit for `draft`, which the consent checks have passed.
    pub(crate) fn new(draft: EnvelopeDraft) -> Self {
        Self { draft }
    }

    /// The checked draft.
    pub fn draft(&self) -> &EnvelopeDraft {
        &self.draft
    }
}

/// Seals `payload` under a transfer its consent covers: commits to the payload with a fresh
/// salt, serializes the header once, and signs its pre-authentication encoding with `key`.
pub fn seal_envelope(
    permit: &PermittedTransfer,
    payload: Vec<u8>,
    key: &NodeSigningKey,
) -> SealedEnvelope {
    seal(permit.draft(), payload, key)
}

/// Sealing without the consent check, for tests that play a misbehaving peer.
pub mod danger {
    use super::*;

    /// Seals `draft` whether or not its consent covers it. A node never calls this: receivers
    /// must see what a peer that skips the sender's checks would send.
    pub fn seal_unchecked(
        draft: &EnvelopeDraft,
        payload: Vec<u8>,
        key: &NodeSigningKey,
    ) -> SealedEnvelope {
        seal(draft, payload, key)
    }
}

fn seal(draft: &EnvelopeDraft, payload: Vec<u8>, key: &NodeSigningKey) -> SealedEnvelope {
    let salt = PayloadSalt::random();
    let commitment = PayloadCommitment::compute(&salt, &payload);
    let header = pb::EnvelopeHeader {
        version: HEADER_VERSION,
        message_id: draft.message_id.to_string(),
        kind: draft.kind as i32,
        sender: draft.sender.to_string(),
        recipient: draft.recipient.to_string(),
        created_at_ms: draft.created_at.0,
        expires_at_ms: draft.expires_at.0,
        purpose: draft.purpose as i32,
        consent_id: draft.consent_id.clone(),
        payload_digest: commitment.0.to_vec(),
        signing_key_id: key.id().to_string(),
        correlation_id: draft.correlation_id.clone(),
        data_categories: draft.data_categories.iter().map(|c| *c as i32).collect(),
        consent: draft.consent.clone(),
        custody: draft.custody.iter().map(ToString::to_string).collect(),
        recipient_unit: draft
            .recipient_unit
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
    .encode_to_vec();
    let signature = key
        .sign(&pae(ENVELOPE_HEADER_TYPE, &header))
        .to_bytes()
        .to_vec();
    SealedEnvelope {
        header,
        signature,
        payload,
        payload_salt: salt.0.to_vec(),
    }
}
