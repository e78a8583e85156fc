//! Family tracing: records and requests, their matches by band, confirmation and the agreed fields.

use std::sync::Arc;

use axum::Router;

use super::Console;

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
}
