//! The new referral or case transfer form, with its consent pre-check, and consent withdrawal.

use std::sync::Arc;

use axum::Router;

use super::Console;

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
}
