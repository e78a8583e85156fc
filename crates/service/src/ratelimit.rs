//! Backpressure: token-bucket rate limits per peer and per local client, answered with
//! [`ServiceError::rate_limited`](crate::ServiceError::rate_limited) (RESOURCE_EXHAUSTED and a
//! retry hint) rather than falling over. A peer's delivery worker treats that as transient
//! and retries with backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most distinct keys a limiter tracks; beyond it, idle buckets are forgotten.
const MAX_KEYS: usize = 10_000;

/// A rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after an idle period.
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets, one per key (a peer's node id, a local client's name).
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter allowing `rate` per key.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_n(key, 1)
    }

    /// Takes `n` tokens for `key` at once (a batch of `n` items), or says how long until
    /// they are available. A batch larger than the burst waits for a full bucket and then
    /// takes it all.
    pub fn check_n(&self, key: &str, n: usize) -> Result<(), Duration> {
        let n = (n.max(1) as f64).min(self.rate.burst.max(1.0));
        let now = Instant::now();
        let mut buckets = kinbridge_core::sync::lock(&self.buckets);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let burst = self.rate.burst;
            buckets.retain(|_, b| b.tokens < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.rate.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        bucket.updated = now;
        if bucket.tokens >= n {
            bucket.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (n - bucket.tokens) / self.rate.per_second.max(f64::MIN_POSITIVE),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(Rate {
            per_second: 1.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert!(limiter.check("ZM-DSW").is_ok());
        }
        let wait = limiter.check("ZM-DSW").expect_err("over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(limiter.check("MW-DSW").is_ok(), "keys are independent");
    }

    #[test]
    fn a_batch_takes_a_token_per_item() {
        let limiter = RateLimiter::new(Rate {
            per_second: 1.0,
            burst: 10.0,
        });
        assert!(limiter.check_n("ZM-DSW", 8).is_ok());
        let wait = limiter.check_n("ZM-DSW", 4).expect_err("only 2 left");
        assert!(wait > Duration::from_millis(1500) && wait <= Duration::from_secs(2));
        assert!(limiter.check_n("ZM-DSW", 2).is_ok());
        // A batch larger than the burst needs a full bucket.
        let big = RateLimiter::new(Rate {
            per_second: 1.0,
            burst: 10.0,
        });
        assert!(big.check_n("ZM-DSW", 50).is_ok());
        assert!(big.check("ZM-DSW").is_err());
    }
}
