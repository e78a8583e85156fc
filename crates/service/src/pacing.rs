//! How the delivery worker paces itself: its retry backoff, its batch size and the bound on
//! one call, with their defaults. Apart from the worker (`delivery`), so that the node's state
//! (`node`) can hold them without the two modules naming each other.

use std::time::Duration;

use rand::Rng;

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest retry delay: a border post's link may be down for hours, but it should be tried
/// again soon after it is back.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Bound on one delivery call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages sent to one recipient in one call.
pub const BATCH: usize = 256;

/// How the delivery worker paces itself: its retry backoff and its batch size (the config's
/// `[delivery]` section; by default [`BACKOFF_BASE`], [`BACKOFF_MAX`], [`BATCH`] and
/// [`CALL_TIMEOUT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Most messages sent to one recipient in one call (at least 1).
    pub batch: usize,
    /// Bound on one delivery call (the peer link applies it): a call with no answer by then
    /// is retried after the backoff.
    pub call_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            retry_base: BACKOFF_BASE,
            retry_max: BACKOFF_MAX,
            batch: BATCH,
            call_timeout: CALL_TIMEOUT,
        }
    }
}

impl Tuning {
    /// Delay before attempt `attempts + 1`: exponential, capped, with jitter in [50%, 100%]
    /// so that many queued messages do not retry in lockstep.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(1u32 << attempts.min(16))
            .min(self.retry_max);
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        exp.mul_f64(jitter)
    }
}
