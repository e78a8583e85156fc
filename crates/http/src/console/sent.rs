//! Sent items: each referral's delivery state, its signed receipt and the status history from the other side.

use std::sync::Arc;

use axum::Router;

use super::Console;

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
}
