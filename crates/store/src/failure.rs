//! The store's failed state: once a commit could not be made durable (a sled flush, an
//! `fdatasync`, a payload segment's sync or write, the audit journal's append), nothing
//! written since can be trusted to reach the disk. After a failed `fsync` the kernel may have
//! dropped the dirty pages and cleared the error, so a retry that succeeds would be a lie; and
//! sled 0.34 keeps its global error until the database is opened again. So the first failure
//! latches: every write waiting on that commit is told it failed, every later write is
//! refused at once, health turns NOT_SERVING, and only a restart (sled's recovery, the payload
//! store's torn-tail cut, the journal's) brings the node back. See docs/durability.md.

use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

/// The latch. Clones share it.
#[derive(Clone)]
pub struct Failure {
    inner: Arc<Inner>,
}

struct Inner {
    /// What failed first.
    reason: OnceLock<String>,
    /// Turns true once.
    failed: watch::Sender<bool>,
}

impl Default for Failure {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                reason: OnceLock::new(),
                failed: watch::Sender::new(false),
            }),
        }
    }
}

impl Failure {
    /// Latches the failure `reason` (what failed); only the first is kept and logged.
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.inner.reason.set(reason.clone()).is_ok() {
            tracing::error!(
                error = %reason,
                "storage failed: the node takes no more writes and reports NOT_SERVING; restart it after checking its disk (nothing unacknowledged was kept)"
            );
            self.inner.failed.send_replace(true);
        }
    }

    /// What failed, if anything did.
    pub fn reason(&self) -> Option<&str> {
        self.inner.reason.get().map(String::as_str)
    }

    /// Whether the store has failed.
    pub fn is_failed(&self) -> bool {
        self.inner.reason.get().is_some()
    }

    /// Watches the latch: the value turns true once, when it fails.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.failed.subscribe()
    }
}
