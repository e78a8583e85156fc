//! kinbridge domain core: what a node id, an envelope, a signature and a receipt are, and how
//! they are checked. No I/O and no gRPC: the node crate translates between this and the wire.
//!
//! The types follow "parse, don't validate": a [`VerifiedEnvelope`] can only be obtained from
//! [`verify_envelope`], which checks the sender binding, the signature, the payload commitment
//! and the time window; code that acts on a received envelope takes that type.

#![forbid(unsafe_code)]

pub mod consent;
pub mod digest;
pub mod envelope;
pub mod family_tracing;
pub mod firewall;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod pae;
pub mod receipt;
pub mod referral;
pub mod reporting;
pub mod sync;
pub mod time;
pub mod verify;
pub mod workflow;

pub use consent::{ConsentViolation, TransferContext, check_transfer};
pub use digest::{EnvelopeDigest, PayloadCommitment, PayloadSalt, ReceiptDigest};
pub use envelope::PermittedTransfer;
pub use envelope::{EnvelopeDraft, SealedEnvelope, seal_envelope};
pub use ids::{IdError, KeyId, MessageId, NodeId, UnitName};
pub use keys::{KeyError, Keyring, NodeSigningKey, PeerKey};
pub use receipt::{
    ReceiptError, SignedReceipt, VerifiedReceipt, issue_receipt, issue_refusal_receipt,
    verify_receipt,
};
pub use time::UnixMillis;
pub use verify::{KeyChange, Refusal, VerificationPolicy, VerifiedEnvelope, verify_envelope};
