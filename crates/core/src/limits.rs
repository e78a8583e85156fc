//! Limits on what a node accepts from a peer. Each is a named constant whose doc says why.

/// Largest serialized envelope header. A header holds ids, times and digests only; anything
/// larger is not a header this protocol produces.
pub const MAX_HEADER_BYTES: usize = 4 * 1024;

/// Largest payload. Referrals are structured text, not document scans; the bound keeps one
/// message from filling a store and keeps every stored value far below sled's blob threshold.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Longest correlation id and consent id, in bytes.
pub const MAX_REFERENCE_BYTES: usize = 128;

/// Longest a message may live: it bounds how long a receiver must remember message ids to
/// refuse replays.
pub const MAX_MESSAGE_LIFETIME_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// Default tolerated difference between the sender's and receiver's clocks.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Length of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// Length of a payload salt.
pub const SALT_BYTES: usize = 32;
