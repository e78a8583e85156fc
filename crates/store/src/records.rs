//! What the store keeps, as protobuf records (prost derives, no .proto file: they never cross
//! the wire). Every record holds the signed envelope exactly as it was sealed or received,
//! but without its payload and salt, which live in the payload store.

use kinbridge_proto::v1 as pb;

/// One message this node submitted, from queueing to its final state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutboxRecord {
    /// The signed envelope, as sealed.
    #[prost(message, optional, tag = "1")]
    pub envelope: Option<pb::Envelope>,
    /// The recipient node id.
    #[prost(string, tag = "2")]
    pub recipient: String,
    /// A `pb::DeliveryState`.
    #[prost(int32, tag = "3")]
    pub state: i32,
    /// Delivery attempts made so far.
    #[prost(uint32, tag = "4")]
    pub attempts: u32,
    /// When the local client submitted it.
    #[prost(int64, tag = "5")]
    pub submitted_at_ms: i64,
    /// Not before this instant is the next attempt made.
    #[prost(int64, tag = "6")]
    pub next_attempt_at_ms: i64,
    /// The envelope's expiry, copied from its header.
    #[prost(int64, tag = "7")]
    pub expires_at_ms: i64,
    /// Why the last attempt failed, or why the message was refused.
    #[prost(string, tag = "8")]
    pub last_error: String,
    /// The recipient's verified receipt.
    #[prost(message, optional, tag = "9")]
    pub receipt: Option<pb::Receipt>,
    /// When the receipt arrived.
    #[prost(int64, tag = "10")]
    pub delivered_at_ms: i64,
    /// Key of this message in the pending queue while it is queued.
    #[prost(uint64, tag = "11")]
    pub queue_sequence: u64,
    /// When its payload was purged (consent withdrawn, retention); 0 if it was not.
    #[prost(int64, tag = "12")]
    pub purged_at_ms: i64,
    /// The unit of the local client that submitted it; empty for none.
    #[prost(string, tag = "13")]
    pub unit: String,
}

/// One envelope this node received and verified.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InboxRecord {
    /// The signed envelope, as received.
    #[prost(message, optional, tag = "1")]
    pub envelope: Option<pb::Envelope>,
    /// The sender node id.
    #[prost(string, tag = "2")]
    pub sender: String,
    /// The sender's message id.
    #[prost(string, tag = "3")]
    pub message_id: String,
    /// When this node stored it.
    #[prost(int64, tag = "4")]
    pub received_at_ms: i64,
    /// The receipt this node returned; a re-delivery gets the same one.
    #[prost(message, optional, tag = "5")]
    pub receipt: Option<pb::Receipt>,
    /// Whether a local system has taken it over.
    #[prost(bool, tag = "6")]
    pub acknowledged: bool,
    /// Digest of the envelope, to tell a re-delivery from a replayed id.
    #[prost(bytes = "vec", tag = "7")]
    pub envelope_digest: Vec<u8>,
    /// When its payload was purged (consent withdrawn, retention); 0 if it was not.
    #[prost(int64, tag = "8")]
    pub purged_at_ms: i64,
    /// The unit of this node the item belongs to; empty for every unit.
    #[prost(string, tag = "9")]
    pub unit: String,
}

/// The workflow history of one referral, at either end.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkflowRecord {
    /// Every change, in the order recorded.
    #[prost(message, repeated, tag = "1")]
    pub history: Vec<pb::StatusChange>,
}

/// One key as the store keeps it: the node's own or a peer's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyRecord {
    /// The node the key belongs to.
    #[prost(string, tag = "1")]
    pub owner: String,
    /// Its id.
    #[prost(string, tag = "2")]
    pub key_id: String,
    /// The 32-byte Ed25519 public key.
    #[prost(bytes = "vec", tag = "3")]
    pub public_key: Vec<u8>,
    /// Start of its window (0: none).
    #[prost(int64, tag = "4")]
    pub not_before_ms: i64,
    /// End of its window (0: none).
    #[prost(int64, tag = "5")]
    pub not_after_ms: i64,
    /// When it was revoked (0: it was not).
    #[prost(int64, tag = "6")]
    pub revoked_at_ms: i64,
    /// Why it was revoked.
    #[prost(string, tag = "7")]
    pub reason: String,
    /// "config", "rotated" (made here) or "announced" (learned from the peer).
    #[prost(string, tag = "8")]
    pub source: String,
    /// For an own key: the announcements sent for it, `peer 0x00 message id`.
    #[prost(string, repeated, tag = "9")]
    pub announcements: Vec<String>,
    /// When the record was made.
    #[prost(int64, tag = "10")]
    pub created_at_ms: i64,
}

impl KeyRecord {
    /// Its key in the store's `keys` tree: `owner 0x00 key id`.
    pub(crate) fn store_key(&self) -> Vec<u8> {
        format!("{}\0{}", self.owner, self.key_id).into_bytes()
    }
}
