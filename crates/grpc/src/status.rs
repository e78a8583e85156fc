//! The one mapping between the service layer's [`ServiceError`] and gRPC statuses, as rustls
//! maps its errors to alerts in one place. Each status carries the human message saying what
//! was wrong and what to do, the stable reason code in the `kinbridge-refusal` metadata entry
//! (so clients and tests tell refusals apart without parsing prose) and, when the node says
//! when to retry, the wait in `retry-after-ms`.

use kinbridge_service::{ErrorKind, ServiceError};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key carrying the refusal's reason code.
pub const REFUSAL_METADATA: &str = "kinbridge-refusal";

/// Metadata key carrying how long to wait before retrying, in milliseconds.
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";

/// The gRPC status a service error is answered with.
pub fn to_status(error: ServiceError) -> Status {
    let mut status = Status::new(Code::from_i32(error.kind().code()), error.message());
    if let Some(reason) = error.reason()
        && let Ok(value) = MetadataValue::try_from(reason)
    {
        status.metadata_mut().insert(REFUSAL_METADATA, value);
    }
    if let Some(wait) = error.retry_after_hint()
        && let Ok(value) = MetadataValue::try_from(wait.as_millis().max(1).to_string())
    {
        status.metadata_mut().insert(RETRY_AFTER_METADATA, value);
    }
    status
}

/// The service error a peer's gRPC status stands for (its reason code kept only if it reads
/// as one; see [`ServiceError::from_peer`]).
pub fn from_status(status: &Status) -> ServiceError {
    ServiceError::from_peer(
        status.code() as i32,
        status.message(),
        refusal_code(status).unwrap_or_default(),
    )
}

/// A status with `code`, `message` and the reason code `reason` in metadata, for the refusals
/// the gRPC face makes itself (bytes that never reach a use case).
pub fn refused(code: Code, reason: &'static str, message: impl Into<String>) -> Status {
    let kind = ErrorKind::from_code(code as i32);
    to_status(ServiceError::refused(kind, reason, message))
}

/// The reason code of a status, if it carries one.
pub fn refusal_code(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(REFUSAL_METADATA)
        .and_then(|v| v.to_str().ok())
}

/// Whether a call that failed with `status` may succeed if tried again.
pub fn is_transient(status: &Status) -> bool {
    from_status(status).is_transient()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_refusal_keeps_its_code_reason_message_and_wait() {
        let status = to_status(ServiceError::rate_limited(
            "ZM-DSW",
            Duration::from_millis(40),
        ));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(refusal_code(&status), Some("rate-limited"));
        assert_eq!(
            status
                .metadata()
                .get(RETRY_AFTER_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("40")
        );
        assert!(status.message().contains("ZM-DSW"));
        let back = from_status(&status);
        assert_eq!(back.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(back.reason(), Some("rate-limited"));
    }

    #[test]
    fn every_kind_maps_to_the_code_of_the_same_number() {
        for code in 1..=16 {
            let status = to_status(ServiceError::new(ErrorKind::from_code(code), "x"));
            assert_eq!(status.code() as i32, code);
            assert_eq!(refusal_code(&status), None);
        }
    }
}
