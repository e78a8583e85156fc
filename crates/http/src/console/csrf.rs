//! Cross-site request forgery protection for the console's forms: a token bound to the
//! client certificate's name and a time window, an HMAC-SHA-256 under a key drawn at random
//! when the node starts (so a restart or another node's token is refused), carried in a
//! hidden field and checked on every `POST`; and a `POST`'s `Origin`, when the browser sends
//! one, must be the node's own.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// How long one token window lasts; a token is accepted in its window and the next, so a
/// form stays valid for one to two windows after it was rendered.
pub const WINDOW_SECONDS: u64 = 3600;

/// The key tokens are made with.
pub struct CsrfKey(hmac::Key);

impl CsrfKey {
    /// A fresh random key, or `None` if the system has no randomness to give.
    pub fn random() -> Option<Self> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).ok()?;
        Some(Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// The token for `client` now.
    pub fn token(&self, client: &str) -> String {
        self.token_in(client, window_now())
    }

    /// Whether `token` is `client`'s, of this window or the one before.
    pub fn check(&self, client: &str, token: &str) -> bool {
        let Ok(tag) = hex::decode(token) else {
            return false;
        };
        let now = window_now();
        [now, now.saturating_sub(1)]
            .into_iter()
            .any(|window| hmac::verify(&self.0, &message(client, window), &tag).is_ok())
    }

    fn token_in(&self, client: &str, window: u64) -> String {
        hex::encode(hmac::sign(&self.0, &message(client, window)).as_ref())
    }
}

/// What a token signs: a label, the window and the client name, unambiguous.
fn message(client: &str, window: u64) -> Vec<u8> {
    let mut m = b"kinbridge-console-csrf\0".to_vec();
    m.extend_from_slice(&window.to_be_bytes());
    m.extend_from_slice(client.as_bytes());
    m
}

fn window_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / WINDOW_SECONDS)
}

/// Whether a request's `origin` (its `Origin` header, if any) is the console's own, served
/// at `host` (the `Host` header or the request's authority) over HTTPS.
pub fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.eq_ignore_ascii_case(&format!("https://{host}")),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_the_clients_own_and_this_keys_own() {
        let key = CsrfKey::random().expect("randomness");
        let other = CsrfKey::random().expect("randomness");
        let token = key.token("mw-caseworker");
        assert!(key.check("mw-caseworker", &token));
        assert!(!key.check("mw-system", &token));
        assert!(!other.check("mw-caseworker", &token));
        assert!(!key.check("mw-caseworker", ""));
        assert!(!key.check("mw-caseworker", "not hex"));
        let previous = key.token_in("mw-caseworker", window_now() - 1);
        assert!(key.check("mw-caseworker", &previous));
        let stale = key.token_in("mw-caseworker", window_now() - 2);
        assert!(!key.check("mw-caseworker", &stale));
    }

    #[test]
    fn only_the_nodes_own_origin_may_post() {
        assert!(same_origin(None, Some("127.0.0.1:8443")));
        assert!(same_origin(
            Some("https://127.0.0.1:8443"),
            Some("127.0.0.1:8443")
        ));
        assert!(!same_origin(
            Some("https://evil.example"),
            Some("127.0.0.1:8443")
        ));
        assert!(!same_origin(
            Some("http://127.0.0.1:8443"),
            Some("127.0.0.1:8443")
        ));
        assert!(!same_origin(Some("null"), Some("127.0.0.1:8443")));
        assert!(!same_origin(Some("https://x"), None));
    }
}
