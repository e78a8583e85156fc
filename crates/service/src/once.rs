//! Submissions made once: a client that retries a submission under the same idempotency key
//! (the JSON face's `Idempotency-Key` header, gRPC's `idempotency-key` metadata) gets the
//! first answer again, never a second referral. The key is stored with the message id and
//! the request's digest in the transaction that queues the message
//! ([`kinbridge_store::Store::enqueue_once`]), so a retry after a crash finds it exactly when
//! the message was queued; a request under the same key while the first is still being
//! handled waits its turn.

use std::collections::HashSet;
use std::sync::Mutex;

use kinbridge_core::sync::lock;
use kinbridge_store::SubmissionKey;
use sha2::{Digest, Sha256};

use crate::error::ServiceError;

/// Longest idempotency key taken.
pub const MAX_KEY_BYTES: usize = 255;

/// The submission key of `client`'s request `request` (its encoded bytes) under `key`, or the
/// refusal of a key that is empty, too long or not printable ASCII.
pub fn submission_key(
    client: &str,
    key: &str,
    request: &[u8],
) -> Result<SubmissionKey, ServiceError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ServiceError::invalid(
            "bad-idempotency-key",
            format!(
                "an idempotency key is 1 to {MAX_KEY_BYTES} printable ASCII characters without spaces (a UUID does); send the request again with such a key, or without one"
            ),
        ));
    }
    Ok(SubmissionKey {
        key: [client.as_bytes(), &[0], key.as_bytes()].concat(),
        request_digest: Sha256::digest(request).into(),
    })
}

/// Longest a request waits while another request under its key is handled.
pub const HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The keys whose submission is being handled now.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashSet<Vec<u8>>>,
    /// Woken whenever a key is released.
    released: tokio::sync::Notify,
}

/// A key held while its submission is handled; released when dropped.
pub struct Held<'a> {
    keys: &'a InFlight,
    key: Vec<u8>,
}

impl InFlight {
    /// Holds `key`, waiting (at most [`HOLD_WAIT`]) while another request under it is
    /// handled; `None` if it is still held after the wait.
    pub async fn hold(&self, key: &[u8]) -> Option<Held<'_>> {
        let deadline = tokio::time::Instant::now() + HOLD_WAIT;
        loop {
            // Registered before the check, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if lock(&self.keys).insert(key.to_vec()) {
                return Some(Held {
                    keys: self,
                    key: key.to_vec(),
                });
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        lock(&self.keys.keys).remove(&self.key);
        self.keys.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_client_and_bounded() {
        let a = submission_key("caseworker-a", "k-1", b"request").expect("valid");
        let b = submission_key("caseworker-b", "k-1", b"request").expect("valid");
        assert_ne!(a.key, b.key, "two clients' keys never meet");
        assert_eq!(a.request_digest, b.request_digest);
        for bad in ["", "has space", "é", &"x".repeat(256)] {
            let e = submission_key("c", bad, b"r").expect_err("refused");
            assert_eq!(e.reason(), Some("bad-idempotency-key"));
        }
    }

    #[tokio::test]
    async fn a_key_is_held_by_one_request_at_a_time() {
        let keys = InFlight::default();
        let first = keys.hold(b"k").await.expect("free");
        assert!(lock(&keys.keys).contains(b"k".as_slice()));
        drop(first);
        assert!(keys.hold(b"k").await.is_some(), "released on drop");
    }

    #[tokio::test]
    async fn a_second_request_under_a_key_waits_for_the_first() {
        let keys = std::sync::Arc::new(InFlight::default());
        let first = keys.hold(b"k").await.expect("free");
        let waiting = {
            let keys = std::sync::Arc::clone(&keys);
            tokio::spawn(async move { keys.hold(b"k").await.is_some() })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "the second waits while the first holds the key"
        );
        drop(first);
        assert!(waiting.await.expect("task"), "and gets it once released");
    }
}
