//! Signed receipts: the receiver's statement that it durably stored an envelope.

use ed25519_dalek::Signature;
use kinbridge_proto::v1 as pb;
use prost::Message;

use crate::digest::EnvelopeDigest;
use crate::ids::{KeyId, MessageId, NodeId};
use crate::keys::{KeyError, Keyring, NodeSigningKey};
use crate::limits::MAX_HEADER_BYTES;
use crate::pae::{RECEIPT_BODY_TYPE, pae};
use crate::time::UnixMillis;
use crate::verify::VerifiedEnvelope;

/// Version of the receipt body this crate writes and accepts.
pub const RECEIPT_VERSION: u32 = 1;

/// A receipt as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// Serialized `ReceiptBody`, exactly as signed.
    pub body: Vec<u8>,
    /// Ed25519 signature over `PAE(RECEIPT_BODY_TYPE, body)`.
    pub signature: Vec<u8>,
}

impl From<pb::Receipt> for SignedReceipt {
    fn from(r: pb::Receipt) -> Self {
        Self {
            body: r.body,
            signature: r.signature,
        }
    }
}

impl From<SignedReceipt> for pb::Receipt {
    fn from(r: SignedReceipt) -> Self {
        Self {
            body: r.body,
            signature: r.signature,
            checkpoint: String::new(),
        }
    }
}

impl SignedReceipt {
    /// The digest that names this receipt in audit logs.
    pub fn digest(&self) -> crate::digest::ReceiptDigest {
        crate::digest::ReceiptDigest::compute(&self.body, &self.signature)
    }
}

/// Why a receipt is not accepted by the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The body could not be decoded or holds invalid values.
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// The receipt's key is unknown or not valid.
    #[error("receipt signing key refused: {0}")]
    Key(KeyError),
    /// The signature does not verify.
    #[error("receipt signature does not verify under {receiver}'s key '{key}'")]
    BadSignature {
        /// The receiver.
        receiver: NodeId,
        /// The key the body names.
        key: KeyId,
    },
    /// The receipt answers another envelope, or comes from another node.
    #[error("receipt does not match the envelope sent: {0}")]
    Mismatch(String),
}

/// A checked receipt.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    /// The message it answers.
    pub message_id: MessageId,
    /// The node that signed it.
    pub receiver: NodeId,
    /// When the receiver stored the envelope.
    pub received_at: UnixMillis,
    /// What the receiver states.
    pub status: pb::ReceiptStatus,
    /// For a refusal: the receiver's reason code.
    pub refusal_reason: String,
    /// For a refusal: what exactly was missing.
    pub refusal_detail: String,
    /// The receipt as received.
    pub signed: SignedReceipt,
}

/// Signs a receipt for `envelope`, stored by `receiver` at `received_at`.
pub fn issue_receipt(
    envelope: &VerifiedEnvelope,
    receiver: &NodeId,
    received_at: UnixMillis,
    key: &NodeSigningKey,
) -> SignedReceipt {
    sign_receipt(
        envelope,
        receiver,
        received_at,
        key,
        pb::ReceiptStatus::Accepted,
        "",
        "",
    )
}

/// Signs a negative receipt: `receiver` verified `envelope` but refused it for `reason`
/// (a reason code) because of `detail`, and keeps none of its payload.
pub fn issue_refusal_receipt(
    envelope: &VerifiedEnvelope,
    receiver: &NodeId,
    at: UnixMillis,
    key: &NodeSigningKey,
    reason: &str,
    detail: &str,
) -> SignedReceipt {
    sign_receipt(
        envelope,
        receiver,
        at,
        key,
        pb::ReceiptStatus::Refused,
        reason,
        detail,
    )
}

fn sign_receipt(
    envelope: &VerifiedEnvelope,
    receiver: &NodeId,
    received_at: UnixMillis,
    key: &NodeSigningKey,
    status: pb::ReceiptStatus,
    reason: &str,
    detail: &str,
) -> SignedReceipt {
    let header = envelope.header();
    let body = pb::ReceiptBody {
        version: RECEIPT_VERSION,
        message_id: header.message_id.to_string(),
        sender: header.sender.to_string(),
        receiver: receiver.to_string(),
        envelope_digest: envelope.digest().0.to_vec(),
        received_at_ms: received_at.0,
        signing_key_id: key.id().to_string(),
        status: status as i32,
        refusal_reason: reason.to_owned(),
        refusal_detail: detail.to_owned(),
    }
    .encode_to_vec();
    let signature = key.sign(&pae(RECEIPT_BODY_TYPE, &body)).to_bytes().to_vec();
    SignedReceipt { body, signature }
}

/// Checks that `receipt` is `receiver`'s signed statement about the envelope with
/// `envelope_digest` and `message_id` sent by `sender`.
pub fn verify_receipt(
    receipt: &SignedReceipt,
    sender: &NodeId,
    message_id: MessageId,
    envelope_digest: EnvelopeDigest,
    receiver: &NodeId,
    receiver_keys: &Keyring,
) -> Result<VerifiedReceipt, ReceiptError> {
    if receipt.body.len() > MAX_HEADER_BYTES {
        return Err(ReceiptError::Malformed(format!(
            "body is {} bytes",
            receipt.body.len()
        )));
    }
    let body = pb::ReceiptBody::decode(receipt.body.as_slice())
        .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    if body.version != RECEIPT_VERSION {
        return Err(ReceiptError::Malformed(format!(
            "unsupported receipt version {}",
            body.version
        )));
    }
    let key_id =
        KeyId::new(&body.signing_key_id).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    let received_at = UnixMillis(body.received_at_ms);
    let key = receiver_keys
        .find(&key_id, received_at)
        .map_err(ReceiptError::Key)?;
    let signature = Signature::from_slice(&receipt.signature)
        .map_err(|_| ReceiptError::Malformed("signature is not an Ed25519 signature".into()))?;
    key.verify_strict(&pae(RECEIPT_BODY_TYPE, &receipt.body), &signature)
        .map_err(|_| ReceiptError::BadSignature {
            receiver: receiver.clone(),
            key: key_id,
        })?;
    let mismatch = |what: &str| Err(ReceiptError::Mismatch(what.to_owned()));
    if body.receiver != receiver.as_str() {
        return mismatch("receiver");
    }
    if body.sender != sender.as_str() {
        return mismatch("sender");
    }
    if body.message_id != message_id.to_string() {
        return mismatch("message id");
    }
    if body.envelope_digest != envelope_digest.0 {
        return mismatch("envelope digest");
    }
    let status = pb::ReceiptStatus::try_from(body.status)
        .ok()
        .filter(|s| *s != pb::ReceiptStatus::Unspecified)
        .ok_or_else(|| {
            ReceiptError::Malformed(format!("unknown receipt status {}", body.status))
        })?;
    Ok(VerifiedReceipt {
        message_id,
        receiver: receiver.clone(),
        received_at,
        status,
        refusal_reason: body.refusal_reason.chars().take(64).collect(),
        refusal_detail: body.refusal_detail.chars().take(512).collect(),
        signed: receipt.clone(),
    })
}
