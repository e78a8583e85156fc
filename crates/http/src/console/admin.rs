//! The administrator's pages: peers and their reachability, keys and their expiry, the node's health.

use std::sync::Arc;

use axum::Router;

use super::Console;

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
}
