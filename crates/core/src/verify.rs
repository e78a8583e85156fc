//! Verifying a received envelope, and every reason one is refused.
//!
//! The order of checks matters: the sender binding (principle 2) is checked on the decoded
//! but not yet trusted header before any key is looked up; the signature is checked over the
//! exact received bytes (never a re-encoding, principle 1) with `verify_strict`; only then are
//! the signed times and the payload trusted.

use ed25519_dalek::Signature;
use kinbridge_proto::v1 as pb;
use prost::Message;

use crate::digest::{EnvelopeDigest, PayloadCommitment, PayloadSalt};
use crate::envelope::{HEADER_VERSION, SealedEnvelope};
use crate::family_tracing;
use crate::ids::{KeyId, MessageId, NodeId, UnitName};
use crate::keys::{KeyError, Keyring, PeerKey};
use crate::limits::{
    MAX_HEADER_BYTES, MAX_MESSAGE_LIFETIME_MS, MAX_PAYLOAD_BYTES, MAX_REFERENCE_BYTES, SALT_BYTES,
    SIGNATURE_BYTES,
};
use crate::pae::{ENVELOPE_HEADER_TYPE, pae};
use crate::referral::categories_present;
use crate::time::UnixMillis;

/// Why an envelope is refused. Messages name ids, sizes and times only: never payload content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The caller's TLS certificate names a node that is not in the peer registry.
    #[error(
        "unknown peer '{0}': it is not in this node's peer registry; ask the operator to register it"
    )]
    UnknownPeer(String),
    /// The envelope's sender is not the node the TLS certificate names.
    #[error(
        "impersonation refused: the TLS certificate names '{tls}' but the envelope's sender is '{claimed}'"
    )]
    Impersonation {
        /// Node id proven by the TLS certificate.
        tls: NodeId,
        /// Sender named in the envelope header.
        claimed: String,
    },
    /// A part of the envelope could not be decoded or holds an invalid value.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// A part of the envelope is larger than this node accepts.
    #[error("oversized envelope: the {what} is {size} bytes; the limit is {limit} bytes")]
    Oversized {
        /// Which part.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The header is of a protocol version this node does not speak.
    #[error("unsupported envelope header version {0}; this node speaks version {HEADER_VERSION}")]
    UnsupportedVersion(u32),
    /// The envelope is of a kind this node does not accept yet.
    #[error("unsupported message kind {0}")]
    UnsupportedKind(String),
    /// The envelope is addressed to another node.
    #[error("misdirected envelope: it is addressed to '{recipient}', this node is '{local}'")]
    Misdirected {
        /// The header's recipient.
        recipient: String,
        /// This node.
        local: NodeId,
    },
    /// The signing key is unknown or was not valid when the envelope was created.
    #[error("signing key refused: {0}")]
    Key(KeyError),
    /// The signature does not verify under the sender's registered key.
    #[error(
        "bad signature: the header signature does not verify under {sender}'s key '{key}'; the header was altered or signed with another key"
    )]
    BadSignature {
        /// The sender.
        sender: NodeId,
        /// The key id the header names.
        key: KeyId,
    },
    /// The payload does not match the signed commitment.
    #[error(
        "payload digest mismatch: the payload does not match the signed payload digest; it was altered in transit"
    )]
    PayloadDigestMismatch,
    /// The categories declared in the header are not those present in the payload.
    #[error(
        "data categories mismatch: the header declares {declared:?} but the payload holds {present:?}"
    )]
    CategoryMismatch {
        /// Declared in the signed header.
        declared: Vec<String>,
        /// Found in the payload.
        present: Vec<String>,
    },
    /// The envelope's expiry has passed.
    #[error("expired message: it expired at {expires_at_ms} ms, now is {now_ms} ms since epoch")]
    Expired {
        /// The signed expiry.
        expires_at_ms: i64,
        /// This node's clock.
        now_ms: i64,
    },
    /// The envelope claims to be created further in the future than the skew allows.
    #[error(
        "clock skew: the message was created {ahead_ms} ms ahead of this node's clock; at most {max_skew_ms} ms is tolerated; check the sender's clock"
    )]
    ClockSkew {
        /// How far ahead.
        ahead_ms: i64,
        /// Tolerated skew.
        max_skew_ms: i64,
    },
    /// The message id was already used by this sender for another envelope.
    #[error(
        "replayed message id {message_id} from {sender}: a different envelope with this id was already received"
    )]
    Replay {
        /// The sender.
        sender: NodeId,
        /// The reused id.
        message_id: MessageId,
    },
}

impl Refusal {
    /// A stable, machine-readable reason code, used in gRPC metadata and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownPeer(_) => "unknown-peer",
            Refusal::Impersonation { .. } => "impersonation",
            Refusal::Malformed(_) => "malformed",
            Refusal::Oversized { .. } => "oversized",
            Refusal::UnsupportedVersion(_) => "unsupported-version",
            Refusal::UnsupportedKind(_) => "unsupported-kind",
            Refusal::Misdirected { .. } => "misdirected",
            Refusal::Key(KeyError::OutsideValidity { .. }) => "key-not-valid",
            Refusal::Key(KeyError::Revoked { .. }) => "key-revoked",
            Refusal::Key(_) => "unknown-key",
            Refusal::BadSignature { .. } => "bad-signature",
            Refusal::PayloadDigestMismatch => "payload-digest-mismatch",
            Refusal::CategoryMismatch { .. } => "category-mismatch",
            Refusal::Expired { .. } => "expired",
            Refusal::ClockSkew { .. } => "clock-skew",
            Refusal::Replay { .. } => "replay",
        }
    }
}

/// What a receiver requires beyond the signature.
#[derive(Debug, Clone)]
pub struct VerificationPolicy {
    /// This node: the only recipient accepted.
    pub local_node: NodeId,
    /// Tolerated clock difference, in milliseconds.
    pub max_clock_skew_ms: i64,
}

/// The decoded, validated header of an envelope.
#[derive(Debug, Clone)]
pub struct EnvelopeHeader {
    /// Sender-chosen id.
    pub message_id: MessageId,
    /// What the envelope carries.
    pub kind: pb::MessageKind,
    /// Sender node.
    pub sender: NodeId,
    /// Recipient node.
    pub recipient: NodeId,
    /// Creation instant.
    pub created_at: UnixMillis,
    /// Expiry instant.
    pub expires_at: UnixMillis,
    /// Why the data is sent.
    pub purpose: pb::Purpose,
    /// Consent reference.
    pub consent_id: String,
    /// Commitment to the payload.
    pub payload_digest: PayloadCommitment,
    /// Key that signed the header.
    pub signing_key_id: KeyId,
    /// Case or conversation link.
    pub correlation_id: String,
    /// Categories present in the payload.
    pub data_categories: Vec<pb::DataCategory>,
    /// The consent scope the sender relied on.
    pub consent: Option<pb::ConsentScope>,
    /// The nodes that held the data before the sender, originator first.
    pub custody: Vec<NodeId>,
    /// The recipient's unit the data is addressed to; `None` for its intake.
    pub recipient_unit: Option<UnitName>,
}

/// An envelope whose sender binding, signature, payload commitment and time window have all
/// been checked. Only [`verify_envelope`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedEnvelope {
    header: EnvelopeHeader,
    sealed: SealedEnvelope,
    digest: EnvelopeDigest,
    payload: VerifiedPayload,
}

/// The decoded payload of a verified envelope, by kind.
#[derive(Debug, Clone)]
pub enum VerifiedPayload {
    /// A referral.
    Referral(Box<pb::ReferralPayload>),
    /// A consent withdrawal (no personal data).
    Withdrawal(pb::ConsentWithdrawal),
    /// A referral status update (no personal data).
    Status(pb::StatusUpdate),
    /// The sender publishes or revokes one of its own signing keys (no personal data).
    Key(KeyChange),
    /// A tracing query: a keyed encoding under a one-time handle.
    TracingQuery(pb::TracingQuery),
    /// Handles and bands answering a tracing query (no personal data).
    TracingNotice(pb::TracingMatchNotice),
    /// A caseworker's review of a tracing match (no personal data).
    TracingConfirmation(pb::TracingConfirmation),
    /// The agreed fields of a case after a confirmed match.
    TracingDisclosure(Box<pb::TracingDisclosure>),
}

/// What a verified key update asks of the receiver.
#[derive(Debug, Clone)]
pub enum KeyChange {
    /// Accept signatures by this new key of the sender, within its window.
    Announce(Box<PeerKey>),
    /// Refuse signatures by this key of the sender made at or after `at`.
    Revoke {
        /// The key.
        key_id: KeyId,
        /// From when.
        at: UnixMillis,
        /// A short reason code.
        reason: String,
    },
}

impl VerifiedEnvelope {
    /// The verified header.
    pub fn header(&self) -> &EnvelopeHeader {
        &self.header
    }
    /// The envelope exactly as received.
    pub fn sealed(&self) -> &SealedEnvelope {
        &self.sealed
    }
    /// The envelope exactly as received, without the rest.
    pub fn into_sealed(self) -> SealedEnvelope {
        self.sealed
    }
    /// Its digest.
    pub fn digest(&self) -> EnvelopeDigest {
        self.digest
    }
    /// The decoded payload.
    pub fn payload(&self) -> &VerifiedPayload {
        &self.payload
    }
    /// The decoded referral payload, if this is a referral.
    pub fn referral(&self) -> Option<&pb::ReferralPayload> {
        match &self.payload {
            VerifiedPayload::Referral(r) => Some(r),
            _ => None,
        }
    }
}

/// Verifies `sealed`, received over a TLS connection whose certificate proved `tls_node`.
/// `sender_keys` is the keyring the peer registry holds for `tls_node`, `None` if that node
/// is not registered.
pub fn verify_envelope(
    sealed: SealedEnvelope,
    tls_node: &NodeId,
    sender_keys: Option<&Keyring>,
    policy: &VerificationPolicy,
    now: UnixMillis,
) -> Result<VerifiedEnvelope, Refusal> {
    let keys = sender_keys.ok_or_else(|| Refusal::UnknownPeer(tls_node.to_string()))?;
    check_sizes(&sealed)?;
    let raw = pb::EnvelopeHeader::decode(sealed.header.as_slice())
        .map_err(|e| Refusal::Malformed(format!("header is not a valid EnvelopeHeader: {e}")))?;
    if raw.version != HEADER_VERSION {
        return Err(Refusal::UnsupportedVersion(raw.version));
    }
    // Principle 2: the TLS identity is bound to the signer, checked before any key is used.
    if raw.sender != tls_node.as_str() {
        return Err(Refusal::Impersonation {
            tls: tls_node.clone(),
            claimed: printable(&raw.sender),
        });
    }
    let header = parse_header(raw)?;
    if header.recipient != policy.local_node {
        return Err(Refusal::Misdirected {
            recipient: header.recipient.to_string(),
            local: policy.local_node.clone(),
        });
    }
    let key = keys
        .find(&header.signing_key_id, header.created_at)
        .map_err(Refusal::Key)?;
    let signature = Signature::from_slice(&sealed.signature)
        .map_err(|_| Refusal::Malformed("signature is not an Ed25519 signature".into()))?;
    key.verify_strict(&pae(ENVELOPE_HEADER_TYPE, &sealed.header), &signature)
        .map_err(|_| Refusal::BadSignature {
            sender: header.sender.clone(),
            key: header.signing_key_id.clone(),
        })?;
    // From here on the header is authentic.
    check_times(&header, policy, now)?;
    let salt = PayloadSalt::from_slice(&sealed.payload_salt)
        .ok_or_else(|| Refusal::Malformed(format!("payload salt must be {SALT_BYTES} bytes")))?;
    if PayloadCommitment::compute(&salt, &sealed.payload) != header.payload_digest {
        return Err(Refusal::PayloadDigestMismatch);
    }
    let (payload, present) = match header.kind {
        // A case transfer (return and reintegration) carries the same structured payload.
        pb::MessageKind::Referral | pb::MessageKind::CaseTransfer => {
            let referral = pb::ReferralPayload::decode(sealed.payload.as_slice()).map_err(|e| {
                Refusal::Malformed(format!("payload is not a valid ReferralPayload: {e}"))
            })?;
            let present = categories_present(&referral);
            (VerifiedPayload::Referral(Box::new(referral)), present)
        }
        pb::MessageKind::ConsentWithdrawal => {
            let withdrawal =
                pb::ConsentWithdrawal::decode(sealed.payload.as_slice()).map_err(|e| {
                    Refusal::Malformed(format!("payload is not a valid ConsentWithdrawal: {e}"))
                })?;
            if withdrawal.consent_id != header.consent_id {
                return Err(Refusal::Malformed(
                    "the withdrawal names another consent than its header".into(),
                ));
            }
            (VerifiedPayload::Withdrawal(withdrawal), Vec::new())
        }
        pb::MessageKind::StatusUpdate => {
            let update = pb::StatusUpdate::decode(sealed.payload.as_slice()).map_err(|e| {
                Refusal::Malformed(format!("payload is not a valid StatusUpdate: {e}"))
            })?;
            MessageId::new(&update.referral_id)
                .map_err(|e| Refusal::Malformed(format!("status update: {e}")))?;
            (VerifiedPayload::Status(update), Vec::new())
        }
        pb::MessageKind::KeyUpdate => {
            let update = pb::KeyUpdate::decode(sealed.payload.as_slice()).map_err(|e| {
                Refusal::Malformed(format!("payload is not a valid KeyUpdate: {e}"))
            })?;
            (VerifiedPayload::Key(key_change(update)?), Vec::new())
        }
        pb::MessageKind::TracingRequest => {
            let query = decode_tracing::<pb::TracingQuery>(&sealed.payload, "TracingQuery")?;
            family_tracing::check_query(&query, &header.data_categories)
                .map_err(tracing_malformed)?;
            let declared = header.data_categories.clone();
            (VerifiedPayload::TracingQuery(query), declared)
        }
        pb::MessageKind::TracingMatchNotice => {
            let notice =
                decode_tracing::<pb::TracingMatchNotice>(&sealed.payload, "TracingMatchNotice")?;
            family_tracing::check_notice(&notice).map_err(tracing_malformed)?;
            (VerifiedPayload::TracingNotice(notice), Vec::new())
        }
        pb::MessageKind::TracingConfirmation => {
            let confirmation =
                decode_tracing::<pb::TracingConfirmation>(&sealed.payload, "TracingConfirmation")?;
            family_tracing::check_confirmation(&confirmation).map_err(tracing_malformed)?;
            (
                VerifiedPayload::TracingConfirmation(confirmation),
                Vec::new(),
            )
        }
        pb::MessageKind::TracingDisclosure => {
            let disclosure =
                decode_tracing::<pb::TracingDisclosure>(&sealed.payload, "TracingDisclosure")?;
            let present =
                family_tracing::check_disclosure(&disclosure).map_err(tracing_malformed)?;
            (
                VerifiedPayload::TracingDisclosure(Box::new(disclosure)),
                present,
            )
        }
        other => return Err(Refusal::UnsupportedKind(other.as_str_name().to_owned())),
    };
    if present != header.data_categories {
        return Err(Refusal::CategoryMismatch {
            declared: header
                .data_categories
                .iter()
                .map(|c| c.as_str_name().to_owned())
                .collect(),
            present: present.iter().map(|c| c.as_str_name().to_owned()).collect(),
        });
    }
    let digest = sealed.digest();
    Ok(VerifiedEnvelope {
        header,
        sealed,
        digest,
        payload,
    })
}

fn decode_tracing<M: Message + Default>(payload: &[u8], what: &str) -> Result<M, Refusal> {
    M::decode(payload)
        .map_err(|e| Refusal::Malformed(format!("payload is not a valid {what}: {e}")))
}

fn tracing_malformed(what: String) -> Refusal {
    Refusal::Malformed(format!("tracing: {what}"))
}

/// Longest reason code of a key revocation.
pub const MAX_REASON_CODE_LEN: usize = 64;

fn key_change(update: pb::KeyUpdate) -> Result<KeyChange, Refusal> {
    let bad = |what: String| Refusal::Malformed(format!("key update: {what}"));
    let bound = |ms: i64| (ms != 0).then_some(UnixMillis(ms));
    match update.update {
        Some(pb::key_update::Update::Announce(a)) => {
            let id = KeyId::new(&a.key_id).map_err(|e| bad(e.to_string()))?;
            let (not_before, not_after) = (bound(a.not_before_ms), bound(a.not_after_ms));
            if let (Some(nb), Some(na)) = (not_before, not_after)
                && na <= nb
            {
                return Err(bad("the key's window ends before it begins".into()));
            }
            let key = PeerKey::from_bytes(id, &a.public_key, not_before, not_after)
                .map_err(|e| bad(e.to_string()))?;
            Ok(KeyChange::Announce(Box::new(key)))
        }
        Some(pb::key_update::Update::Revoke(r)) => {
            let key_id = KeyId::new(&r.key_id).map_err(|e| bad(e.to_string()))?;
            let code_ok = !r.reason.is_empty()
                && r.reason.len() <= MAX_REASON_CODE_LEN
                && r.reason
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !code_ok {
                return Err(bad(format!(
                    "the reason must be a code of 1-{MAX_REASON_CODE_LEN} characters from a-z 0-9 -"
                )));
            }
            if r.revoked_at_ms <= 0 {
                return Err(bad("the revocation time must be positive".into()));
            }
            Ok(KeyChange::Revoke {
                key_id,
                at: UnixMillis(r.revoked_at_ms),
                reason: r.reason,
            })
        }
        None => Err(bad("it neither announces nor revokes a key".into())),
    }
}

fn check_sizes(sealed: &SealedEnvelope) -> Result<(), Refusal> {
    let checks = [
        ("header", sealed.header.len(), MAX_HEADER_BYTES),
        ("payload", sealed.payload.len(), MAX_PAYLOAD_BYTES),
    ];
    for (what, size, limit) in checks {
        if size > limit {
            return Err(Refusal::Oversized { what, size, limit });
        }
    }
    if sealed.signature.len() != SIGNATURE_BYTES {
        return Err(Refusal::Malformed(format!(
            "signature is {} bytes; an Ed25519 signature is {SIGNATURE_BYTES}",
            sealed.signature.len()
        )));
    }
    Ok(())
}

fn parse_header(raw: pb::EnvelopeHeader) -> Result<EnvelopeHeader, Refusal> {
    let malformed = |what: String| Refusal::Malformed(what);
    let kind = pb::MessageKind::try_from(raw.kind)
        .ok()
        .filter(|k| *k != pb::MessageKind::Unspecified)
        .ok_or_else(|| malformed(format!("unknown message kind {}", raw.kind)))?;
    let purpose = pb::Purpose::try_from(raw.purpose)
        .ok()
        .filter(|p| *p != pb::Purpose::Unspecified)
        .ok_or_else(|| malformed(format!("unknown purpose {}", raw.purpose)))?;
    let mut data_categories = Vec::with_capacity(raw.data_categories.len());
    for c in &raw.data_categories {
        let category = pb::DataCategory::try_from(*c)
            .ok()
            .filter(|c| *c != pb::DataCategory::Unspecified)
            .ok_or_else(|| malformed(format!("unknown data category {c}")))?;
        data_categories.push(category);
    }
    if !data_categories.windows(2).all(|w| w[0] < w[1]) {
        return Err(malformed(
            "data categories must be sorted ascending without repeats".into(),
        ));
    }
    let payload_digest = <[u8; 32]>::try_from(raw.payload_digest.as_slice())
        .map(PayloadCommitment)
        .map_err(|_| malformed("payload digest must be 32 bytes".into()))?;
    if raw.custody.len() > crate::consent::MAX_SCOPE_NODES {
        return Err(malformed(format!(
            "the chain of custody names more than {} nodes",
            crate::consent::MAX_SCOPE_NODES
        )));
    }
    let mut custody = Vec::with_capacity(raw.custody.len());
    for node in &raw.custody {
        custody.push(NodeId::new(node).map_err(|e| malformed(format!("chain of custody: {e}")))?);
    }
    for (what, value) in [
        ("consent id", &raw.consent_id),
        ("correlation id", &raw.correlation_id),
    ] {
        if value.len() > MAX_REFERENCE_BYTES {
            return Err(Refusal::Oversized {
                what,
                size: value.len(),
                limit: MAX_REFERENCE_BYTES,
            });
        }
    }
    Ok(EnvelopeHeader {
        message_id: MessageId::new(&raw.message_id).map_err(|e| malformed(e.to_string()))?,
        kind,
        sender: NodeId::new(&raw.sender).map_err(|e| malformed(e.to_string()))?,
        recipient: NodeId::new(&raw.recipient).map_err(|e| malformed(e.to_string()))?,
        created_at: UnixMillis(raw.created_at_ms),
        expires_at: UnixMillis(raw.expires_at_ms),
        purpose,
        consent_id: raw.consent_id,
        payload_digest,
        signing_key_id: KeyId::new(&raw.signing_key_id).map_err(|e| malformed(e.to_string()))?,
        correlation_id: raw.correlation_id,
        data_categories,
        consent: raw.consent,
        custody,
        recipient_unit: UnitName::optional(&raw.recipient_unit)
            .map_err(|e| malformed(format!("recipient unit: {e}")))?,
    })
}

fn check_times(
    header: &EnvelopeHeader,
    policy: &VerificationPolicy,
    now: UnixMillis,
) -> Result<(), Refusal> {
    let lifetime = header.expires_at.0.saturating_sub(header.created_at.0);
    if lifetime <= 0 || lifetime > MAX_MESSAGE_LIFETIME_MS {
        return Err(Refusal::Malformed(format!(
            "message lifetime is {lifetime} ms; it must be positive and at most {MAX_MESSAGE_LIFETIME_MS} ms"
        )));
    }
    let ahead = header.created_at.0.saturating_sub(now.0);
    if ahead > policy.max_clock_skew_ms {
        return Err(Refusal::ClockSkew {
            ahead_ms: ahead,
            max_skew_ms: policy.max_clock_skew_ms,
        });
    }
    if header.expires_at <= now {
        return Err(Refusal::Expired {
            expires_at_ms: header.expires_at.0,
            now_ms: now.0,
        });
    }
    Ok(())
}

/// A peer-supplied string quoted in an error: short and without control characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
