//! The auditor's pages: the log with filters, the checkpoint, verification and reconciliation of exports, check-peers, statistics.

use std::sync::Arc;

use axum::Router;

use super::Console;

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
}
