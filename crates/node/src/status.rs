//! Refusals and failures as gRPC statuses. Each status carries a human message saying what
//! was wrong and what to do, and the stable reason code in the `kinbridge-refusal` metadata
//! entry, so clients and tests can tell refusals apart without parsing prose.

use kinbridge_core::Refusal;
use kinbridge_proto::v1 as pb;
use kinbridge_store::StoreError;
use tonic::{Code, Status};

use crate::registry::PeerAuthError;

/// Metadata key carrying the refusal's reason code.
pub const REFUSAL_METADATA: &str = "kinbridge-refusal";

/// A status with `code`, `message` and the reason code `reason` in metadata.
pub fn refused(code: Code, reason: &'static str, message: impl Into<String>) -> Status {
    let mut status = Status::new(code, message);
    status.metadata_mut().insert(
        REFUSAL_METADATA,
        tonic::metadata::MetadataValue::from_static(reason),
    );
    status
}

/// The reason code of a status, if it carries one.
pub fn refusal_code(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(REFUSAL_METADATA)
        .and_then(|v| v.to_str().ok())
}

/// The reason a refusal answered with `status` is logged and counted under: its reason code,
/// or "refused" if it carries none.
pub fn refusal_reason(status: &Status) -> String {
    refusal_code(status).unwrap_or("refused").to_owned()
}

/// The status for an envelope refusal.
pub fn refusal_status(refusal: &Refusal) -> Status {
    let code = match refusal {
        Refusal::UnknownPeer(_) | Refusal::Impersonation { .. } => Code::PermissionDenied,
        Refusal::Key(_) | Refusal::BadSignature { .. } => Code::Unauthenticated,
        Refusal::Malformed(_)
        | Refusal::Oversized { .. }
        | Refusal::UnsupportedVersion(_)
        | Refusal::Misdirected { .. }
        | Refusal::PayloadDigestMismatch
        | Refusal::CategoryMismatch { .. } => Code::InvalidArgument,
        Refusal::UnsupportedKind(_) => Code::Unimplemented,
        Refusal::Expired { .. } => Code::FailedPrecondition,
        Refusal::ClockSkew { .. } => Code::OutOfRange,
        Refusal::Replay { .. } => Code::AlreadyExists,
    };
    refused(code, refusal.code(), refusal.to_string())
}

/// The status for a transfer its consent, the firewall or the receiver's policy does not cover.
pub fn consent_status(violation: &kinbridge_core::ConsentViolation) -> Status {
    use kinbridge_core::ConsentViolation as V;
    let code = match violation {
        V::Firewall(_) => Code::PermissionDenied,
        V::Malformed(_) => Code::InvalidArgument,
        _ => Code::FailedPrecondition,
    };
    refused(code, violation.code(), violation.to_string())
}

/// The status for a peer whose certificate proves no registered node.
pub fn peer_auth_status(error: &PeerAuthError) -> Status {
    refused(Code::PermissionDenied, error.code(), error.to_string())
}

/// The status for a storage failure: nothing was acknowledged, the caller may retry.
pub fn store_status(error: &StoreError) -> Status {
    tracing::error!(error = %error, "storage failure");
    refused(
        Code::Unavailable,
        "storage-failure",
        "the node could not store the message durably; nothing was acknowledged; retry later",
    )
}

/// Whether a delivery that failed with `status` may succeed if tried again.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::OutOfRange
    )
}

/// The status for a failed key operation.
pub fn key_status(e: &crate::keys::KeyBookError) -> Status {
    use crate::keys::KeyBookError;
    match e {
        KeyBookError::Store(e) => store_status(e),
        KeyBookError::Refused(why) => refused(Code::FailedPrecondition, "key-refused", why.clone()),
        KeyBookError::Stored(_) | KeyBookError::File { .. } => {
            tracing::error!(error = %e, "key store failure");
            refused(
                Code::Internal,
                "key-store-failure",
                "the node could not read or write its key store; see its log",
            )
        }
    }
}

/// A status as one result of a `DeliverBatch` call.
pub fn to_deliver_error(status: &Status) -> pb::DeliverError {
    pb::DeliverError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        reason: refusal_code(status).unwrap_or_default().to_owned(),
    }
}

/// The status a peer's `DeliverBatch` result stands for. The reason code is the peer's text:
/// it is kept only if it looks like a reason code (lower-case letters, digits and dashes, at
/// most 64 characters), so a peer's bytes cannot reach the audit log or the metrics as
/// anything else.
pub fn from_deliver_error(error: &pb::DeliverError) -> Status {
    let mut status = Status::new(Code::from_i32(error.code), error.message.clone());
    let reason = &error.reason;
    let plausible = !reason.is_empty()
        && reason.len() <= 64
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plausible && let Ok(value) = tonic::metadata::MetadataValue::try_from(reason.as_str()) {
        status.metadata_mut().insert(REFUSAL_METADATA, value);
    }
    status
}
