//! The one mapping from the service layer's [`ServiceError`] to an HTTP answer: RFC 9457
//! `application/problem+json`, whose `reason` is the same reason code gRPC carries in
//! `kinbridge-refusal`, whose `detail` says what was wrong and what to do, with `Retry-After`
//! when the node says when to retry. The status follows the canonical mapping of the error
//! kinds to HTTP (Google's API design guide, `google.rpc.Code`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kinbridge_service::{ErrorKind, ServiceError};

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The HTTP status of an error of `kind`.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    use ErrorKind as K;
    match kind {
        K::InvalidArgument | K::FailedPrecondition | K::OutOfRange => StatusCode::BAD_REQUEST,
        K::Unauthenticated => StatusCode::UNAUTHORIZED,
        K::PermissionDenied => StatusCode::FORBIDDEN,
        K::NotFound => StatusCode::NOT_FOUND,
        K::AlreadyExists | K::Aborted => StatusCode::CONFLICT,
        K::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        K::Cancelled => StatusCode::REQUEST_TIMEOUT,
        K::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        K::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        K::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        K::Unknown | K::Internal | K::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The HTTP status `error` is answered with: its kind's, except a full disk, which is
/// 507 Insufficient Storage (RFC 4918), still with `Retry-After`.
pub fn status_of_error(error: &ServiceError) -> StatusCode {
    if error.reason() == Some(kinbridge_service::error::DISK_FULL) {
        return StatusCode::INSUFFICIENT_STORAGE;
    }
    status_of(error.kind())
}

/// The problem document of `error`.
pub fn problem(error: &ServiceError) -> serde_json::Value {
    let status = status_of_error(error);
    let reason = error.reason().unwrap_or("error");
    serde_json::json!({
        "type": format!("urn:kinbridge:problem:{reason}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": error.message(),
        "reason": reason,
    })
}

/// The HTTP answer to `error`.
pub fn answer(error: &ServiceError) -> Response {
    let status = status_of_error(error);
    let body = problem(error).to_string();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if let Some(wait) = error.retry_after_hint()
        && let Ok(value) = HeaderValue::try_from(wait.as_secs().max(1).to_string())
    {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_refusal_is_a_problem_with_its_reason_and_wait() {
        let error = ServiceError::rate_limited("caseworker-1", Duration::from_millis(1500));
        let response = answer(&error);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let doc = problem(&error);
        assert_eq!(doc["reason"], "rate-limited");
        assert_eq!(doc["type"], "urn:kinbridge:problem:rate-limited");
        assert_eq!(doc["status"], 429);
        assert!(
            doc["detail"]
                .as_str()
                .is_some_and(|d| d.contains("retry after"))
        );
    }

    #[test]
    fn a_full_disk_is_insufficient_storage_with_a_wait() {
        let error = ServiceError::from(kinbridge_store::StoreError::DiskFull {
            dir: "/var/lib/kinbridge/store".into(),
            free: 1024,
            reserve: 256 * 1024 * 1024,
        });
        let response = answer(&error);
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "10");
        let doc = problem(&error);
        assert_eq!(doc["reason"], "disk-full");
        assert_eq!(doc["status"], 507);
        let detail = doc["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("less than 256 MiB free")
                && detail.contains("/var/lib/kinbridge/store")
                && detail.contains("resumes by itself"),
            "{detail}"
        );
    }

    #[test]
    fn every_kind_has_a_client_or_server_status() {
        for code in 1..=16 {
            let status = status_of(ErrorKind::from_code(code));
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code}"
            );
        }
    }
}
