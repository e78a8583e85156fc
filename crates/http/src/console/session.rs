//! The console's idle session: a console session ends after a time without a request.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::Console;

/// Lets a request through to the console.
pub(super) async fn idle(
    State(_console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    next.run(request).await
}
