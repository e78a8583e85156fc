//! The one error every use case returns: what kind of failure it is, the stable reason code a
//! refusal is logged, counted and answered under, and a message for a person saying what was
//! wrong and what to do.
//!
//! The kinds are the canonical status codes of the gRPC and Google API error model, which
//! every face maps in one place: gRPC to its status codes (`kinbridge-grpc`'s `status`), an
//! HTTP face to HTTP statuses. Their numbers are the protocol's too: a `DeliverBatch` result
//! carries a refused envelope's kind as `DeliverError.code`.

use std::borrow::Cow;
use std::time::Duration;

use kinbridge_core::{ConsentViolation, Refusal};
use kinbridge_proto::v1 as pb;
use kinbridge_store::StoreError;

use crate::keys::KeyBookError;
use crate::registry::PeerAuthError;

/// What kind of failure a [`ServiceError`] is. The variants are named as the canonical codes
/// they are, and numbered as them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// An error with no better kind; a peer's answer that says nothing more.
    Unknown = 2,
    /// The request is malformed: a field is missing, out of range or not what it names.
    InvalidArgument = 3,
    /// No answer within the time allowed.
    DeadlineExceeded = 4,
    /// What the request names (a message, an inbox item, a consent) is not on this node.
    NotFound = 5,
    /// What the request would create exists already (a replayed envelope).
    AlreadyExists = 6,
    /// The caller is known but may not do this: its role, unit or tags forbid it.
    PermissionDenied = 7,
    /// The node is over a limit (a caller's rate, the outbox): retry after a while.
    ResourceExhausted = 8,
    /// The request is well formed, but the node's state or policy does not allow it now.
    FailedPrecondition = 9,
    /// The operation was aborted.
    Aborted = 10,
    /// A value is outside what the node holds (a proof beyond the log, a clock too far off).
    OutOfRange = 11,
    /// The node does not do this (an unknown message kind).
    Unimplemented = 12,
    /// A broken invariant inside the node: see its log.
    Internal = 13,
    /// The node cannot do it now (its store or audit log failed, a peer is unreachable):
    /// nothing was acknowledged; retry later.
    Unavailable = 14,
    /// Data was lost or corrupted.
    DataLoss = 15,
    /// The caller's certificate proves no identity this node accepts.
    Unauthenticated = 16,
}

impl ErrorKind {
    /// The kind numbered `code` (a canonical code, as a peer's `DeliverError` carries it);
    /// [`ErrorKind::Unknown`] for any other number.
    pub fn from_code(code: i32) -> Self {
        use ErrorKind as K;
        match code {
            1 => K::Cancelled,
            3 => K::InvalidArgument,
            4 => K::DeadlineExceeded,
            5 => K::NotFound,
            6 => K::AlreadyExists,
            7 => K::PermissionDenied,
            8 => K::ResourceExhausted,
            9 => K::FailedPrecondition,
            10 => K::Aborted,
            11 => K::OutOfRange,
            12 => K::Unimplemented,
            13 => K::Internal,
            14 => K::Unavailable,
            15 => K::DataLoss,
            16 => K::Unauthenticated,
            _ => K::Unknown,
        }
    }

    /// Its canonical number.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Why a use case failed or was refused. See the module documentation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    kind: ErrorKind,
    reason: Option<Cow<'static, str>>,
    message: String,
    retry_after: Option<Duration>,
}

impl ServiceError {
    /// A refusal of `kind` with the reason code `reason` and `message`.
    pub fn refused(kind: ErrorKind, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            reason: Some(Cow::Borrowed(reason)),
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failure of `kind` with no reason code.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            reason: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A malformed request: INVALID_ARGUMENT with `reason`.
    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Self::refused(ErrorKind::InvalidArgument, reason, message)
    }

    /// A broken invariant inside the node, with no reason code.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// A caller with no verified certificate on its connection.
    pub fn no_certificate() -> Self {
        Self::new(
            ErrorKind::Unauthenticated,
            "no verified TLS client certificate on this connection",
        )
    }

    /// `who` is over its rate: RESOURCE_EXHAUSTED, to retry after `retry_after`.
    pub fn rate_limited(who: &str, retry_after: Duration) -> Self {
        let wait = retry_after.max(Duration::from_millis(1));
        Self::refused(
            ErrorKind::ResourceExhausted,
            "rate-limited",
            format!(
                "{who} is sending faster than this node accepts; retry after {} ms",
                wait.as_millis()
            ),
        )
        .retry_after(wait)
    }

    /// The same error, telling the caller to retry after `wait`.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Its reason code, if it carries one.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The reason a refusal is logged and counted under: its reason code, or "refused".
    pub fn refusal_reason(&self) -> String {
        self.reason().unwrap_or("refused").to_owned()
    }

    /// The message for a person.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How long the caller should wait before retrying, if the node says.
    pub fn retry_after_hint(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether an operation that failed with this error may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        use ErrorKind as K;
        matches!(
            self.kind,
            K::Unavailable
                | K::DeadlineExceeded
                | K::Unknown
                | K::Internal
                | K::ResourceExhausted
                | K::Aborted
                | K::Cancelled
                | K::OutOfRange
        )
    }

    /// A peer's answer: its canonical `code`, `message` and reason code. The reason is the
    /// peer's text: it is kept only if it looks like a reason code (lower-case letters, digits
    /// and dashes, at most 64 characters), so that a peer's bytes cannot reach the audit log
    /// or the metrics as anything else.
    pub fn from_peer(code: i32, message: impl Into<String>, reason: &str) -> Self {
        let plausible = !reason.is_empty()
            && reason.len() <= 64
            && reason
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        Self {
            kind: ErrorKind::from_code(code),
            reason: plausible.then(|| Cow::Owned(reason.to_owned())),
            message: message.into(),
            retry_after: None,
        }
    }

    /// This error as one result of a `DeliverBatch` call.
    pub fn to_deliver_error(&self) -> pb::DeliverError {
        pb::DeliverError {
            code: self.kind.code(),
            message: self.message.clone(),
            reason: self.reason().unwrap_or_default().to_owned(),
        }
    }

    /// The error a peer's `DeliverBatch` result stands for; see [`ServiceError::from_peer`].
    pub fn from_deliver_error(error: &pb::DeliverError) -> Self {
        Self::from_peer(error.code, error.message.clone(), &error.reason)
    }
}

impl From<&Refusal> for ServiceError {
    /// An envelope refusal.
    fn from(refusal: &Refusal) -> Self {
        use ErrorKind as K;
        let kind = match refusal {
            Refusal::UnknownPeer(_) | Refusal::Impersonation { .. } => K::PermissionDenied,
            Refusal::Key(_) | Refusal::BadSignature { .. } => K::Unauthenticated,
            Refusal::Malformed(_)
            | Refusal::Oversized { .. }
            | Refusal::UnsupportedVersion(_)
            | Refusal::Misdirected { .. }
            | Refusal::PayloadDigestMismatch
            | Refusal::CategoryMismatch { .. } => K::InvalidArgument,
            Refusal::UnsupportedKind(_) => K::Unimplemented,
            Refusal::Expired { .. } => K::FailedPrecondition,
            Refusal::ClockSkew { .. } => K::OutOfRange,
            Refusal::Replay { .. } => K::AlreadyExists,
        };
        Self::refused(kind, refusal.code(), refusal.to_string())
    }
}

impl From<&ConsentViolation> for ServiceError {
    /// A transfer its consent, the firewall or the receiver's policy does not cover.
    fn from(violation: &ConsentViolation) -> Self {
        use ConsentViolation as V;
        let kind = match violation {
            V::Firewall(_) => ErrorKind::PermissionDenied,
            V::Malformed(_) => ErrorKind::InvalidArgument,
            _ => ErrorKind::FailedPrecondition,
        };
        Self::refused(kind, violation.code(), violation.to_string())
    }
}

impl From<&PeerAuthError> for ServiceError {
    /// A peer whose certificate proves no registered node.
    fn from(error: &PeerAuthError) -> Self {
        Self::refused(ErrorKind::PermissionDenied, error.code(), error.to_string())
    }
}

/// The reason code of a write refused because the node's disk is nearly full
/// (RESOURCE_EXHAUSTED; retry once space is freed: the node resumes by itself).
pub const DISK_FULL: &str = "disk-full";

/// The reason code of a write refused because the node's storage failed (UNAVAILABLE; the
/// node takes no writes until it is restarted).
pub const STORAGE_FAILED: &str = "storage-failed";

/// How long a caller refused for a full disk is told to wait.
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(10);

impl ServiceError {
    /// A write refused because the store failed earlier: `detail` says what failed.
    pub fn storage_failed(detail: &str) -> Self {
        Self::refused(
            ErrorKind::Unavailable,
            STORAGE_FAILED,
            format!(
                "the node's storage failed ({detail}); restart the node after checking its disk; nothing unacknowledged was kept"
            ),
        )
    }
}

impl From<StoreError> for ServiceError {
    /// A storage failure: nothing was acknowledged, the caller may retry. A full disk is
    /// RESOURCE_EXHAUSTED `disk-full` with a wait; a failed store UNAVAILABLE
    /// `storage-failed` (both logged by the store once, not per request); any other failure
    /// goes to the node's log, not to the caller.
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::DiskFull { .. } => {
                return Self::refused(ErrorKind::ResourceExhausted, DISK_FULL, error.to_string())
                    .retry_after(DISK_FULL_RETRY);
            }
            StoreError::Failed(message) => {
                return Self::refused(ErrorKind::Unavailable, STORAGE_FAILED, message.clone());
            }
            _ => {}
        }
        tracing::error!(error = %error, "storage failure");
        Self::refused(
            ErrorKind::Unavailable,
            "storage-failure",
            "the node could not store the message durably; nothing was acknowledged; retry later",
        )
    }
}

impl From<KeyBookError> for ServiceError {
    /// A failed key operation.
    fn from(error: KeyBookError) -> Self {
        match error {
            KeyBookError::Store(e) => e.into(),
            KeyBookError::Refused(why) => {
                Self::refused(ErrorKind::FailedPrecondition, "key-refused", why)
            }
            e @ (KeyBookError::Stored(_) | KeyBookError::File { .. }) => {
                tracing::error!(error = %e, "key store failure");
                Self::refused(
                    ErrorKind::Internal,
                    "key-store-failure",
                    "the node could not read or write its key store; see its log",
                )
            }
        }
    }
}

/// An authentic envelope from a peer that this node declines to take (its consent does not
/// cover it here, a unit it does not have, a status update about a referral it never sent, a
/// tracing message it cannot answer…). Not an error of the call: the peer gets a signed
/// negative receipt naming `reason`, final, and the refusal is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declined {
    /// The reason code the receipt and the audit entry carry.
    pub reason: &'static str,
    /// What was wrong, for the sender's operators.
    pub detail: String,
}

impl Declined {
    /// Declined for `reason`, with `detail`.
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// The error of an audit log that cannot record an event: the event is not acknowledged.
pub fn audit_failure(reason: &str) -> ServiceError {
    tracing::error!(reason, "audit log failure");
    ServiceError::refused(
        ErrorKind::Unavailable,
        "audit-failure",
        "the node could not record this event in its audit log; nothing was acknowledged; retry later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_reason_that_is_not_a_reason_code_is_dropped() {
        let kept = ServiceError::from_peer(7, "no", "consent-expired");
        assert_eq!(kept.kind(), ErrorKind::PermissionDenied);
        assert_eq!(kept.reason(), Some("consent-expired"));
        for bad in ["", "Has Capitals", "child name: Ana", &"x".repeat(65)] {
            assert_eq!(
                ServiceError::from_peer(9, "no", bad).reason(),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(
            ServiceError::from_peer(99, "?", "").kind(),
            ErrorKind::Unknown
        );
    }

    #[test]
    fn kinds_round_trip_through_their_numbers() {
        for code in 1..=16 {
            assert_eq!(ErrorKind::from_code(code).code(), code);
        }
    }

    #[test]
    fn rate_limits_carry_their_wait() {
        let e = ServiceError::rate_limited("ZM-DSW", Duration::from_millis(250));
        assert_eq!(e.reason(), Some("rate-limited"));
        assert_eq!(e.retry_after_hint(), Some(Duration::from_millis(250)));
        assert!(e.is_transient());
        assert!(e.message().contains("retry after 250 ms"));
    }
}
