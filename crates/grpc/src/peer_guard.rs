//! The peer port's guard: a tower layer around the peer server that turns tonic's own
//! refusals of a peer's bytes (a request that does not decode, one above the size limit),
//! which tonic answers before any handler runs as `INTERNAL` or `OUT_OF_RANGE` (codes a
//! sender retries), into final `INVALID_ARGUMENT` refusals with a `kinbridge-refusal` reason
//! (`malformed`, `too-large`), counted in the refusal metric and audited with the peer's
//! authenticated identity. Audit entries are rate-limited per peer and reason
//! ([`RefusalWindows`]), so a flood of garbage cannot grow the log without bound.
//! The local port has the same guard ([`PeerGuardLayer::local`]): a local system's bytes
//! refused by tonic get the same final refusals, counted on the `local` side and audited
//! under the client's certificate name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use kinbridge_proto::v1 as pb;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};
use tower::{Layer, Service};

use kinbridge_service::Node;
use kinbridge_service::local::LocalAuth;
use kinbridge_service::registry::PeerAuth;

use crate::status::{refusal_code, refused, to_status};
use crate::tls::ConnInfo;

/// Largest gRPC message the node decodes: well above the payload limit, so an oversized
/// payload gets kinbridge's own clear refusal (`too-large`) rather than a transport error.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 1024 * 1024;

/// How long a window of audited refusals lasts, per peer and reason.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Refusals of one peer and reason audited one by one in a window; the rest are counted
/// and audited as one summary entry when the window ends.
pub const REFUSALS_PER_WINDOW: u32 = 10;

/// What a refusal's audit entry is: written now, or counted into the window's summary.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Log it. `summary` is the number of refusals counted (not logged) in the previous
    /// window of the same peer and reason, still to be logged as a summary entry.
    Log {
        /// The previous window's unlogged count, if any is left to log.
        summary: Option<u32>,
    },
    /// Counted only. `first` is true for the first one counted in this window: the caller
    /// arranges for the summary to be logged when the window ends (at `window_start`).
    Counted {
        /// The first refusal counted in this window.
        first: bool,
        /// When the window began.
        window_start: Instant,
    },
}

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    counted: u32,
}

/// Per peer and reason: how many refusals this window has logged and counted.
#[derive(Debug)]
pub struct RefusalWindows {
    window: Duration,
    per_window: u32,
    windows: Mutex<HashMap<(String, &'static str), Window>>,
}

impl RefusalWindows {
    /// Windows of `window`, logging at most `per_window` refusals one by one in each.
    pub fn new(window: Duration, per_window: u32) -> Self {
        Self {
            window,
            per_window,
            windows: Mutex::default(),
        }
    }

    /// Takes one refusal of `peer` for `reason` at `now`.
    pub fn admit(&self, peer: &str, reason: &'static str, now: Instant) -> Admission {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry((peer.to_owned(), reason)).or_insert(Window {
            start: now,
            logged: 0,
            counted: 0,
        });
        let mut summary = None;
        if now.duration_since(w.start) >= self.window {
            summary = (w.counted > 0).then_some(w.counted);
            *w = Window {
                start: now,
                logged: 0,
                counted: 0,
            };
        }
        if w.logged < self.per_window {
            w.logged += 1;
            Admission::Log { summary }
        } else {
            w.counted += 1;
            Admission::Counted {
                first: w.counted == 1,
                window_start: w.start,
            }
        }
    }

    /// The count of the window of `peer` and `reason` that began at `window_start`, taken
    /// (so it is logged once), if that window is still the current one and counted any.
    pub fn take_counted(
        &self,
        peer: &str,
        reason: &'static str,
        window_start: Instant,
    ) -> Option<u32> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.get_mut(&(peer.to_owned(), reason))?;
        if w.start != window_start || w.counted == 0 {
            return None;
        }
        Some(std::mem::take(&mut w.counted))
    }

    /// How long a window lasts.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// Which listener a guard stands in front of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The peer port: callers are peer nodes, audited as `authenticated_peer`.
    Peer,
    /// The local port: callers are the authority's own systems, audited as `actor`.
    Local,
}

impl Side {
    /// The `side` label of the refusal metric.
    pub fn label(self) -> &'static str {
        match self {
            Side::Peer => "peer",
            Side::Local => "local",
        }
    }
}

/// The layer: wraps the peer port's router (or the local port's, [`Self::local`]).
#[derive(Clone)]
pub struct PeerGuardLayer {
    state: Arc<Node>,
    windows: Arc<RefusalWindows>,
    side: Side,
}

impl PeerGuardLayer {
    /// A guard of the peer port over the node's state, with the default windows.
    pub fn new(state: Arc<Node>) -> Self {
        Self {
            state,
            windows: Arc::new(RefusalWindows::new(REFUSAL_WINDOW, REFUSALS_PER_WINDOW)),
            side: Side::Peer,
        }
    }

    /// The same guard for the local port: windows per client certificate name.
    pub fn local(state: Arc<Node>) -> Self {
        Self {
            side: Side::Local,
            ..Self::new(state)
        }
    }
}

impl<S> Layer<S> for PeerGuardLayer {
    type Service = PeerGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerGuard {
            inner,
            state: Arc::clone(&self.state),
            windows: Arc::clone(&self.windows),
            side: self.side,
        }
    }
}

/// The service the layer makes.
#[derive(Clone)]
pub struct PeerGuard<S> {
    inner: S,
    state: Arc<Node>,
    windows: Arc<RefusalWindows>,
    side: Side,
}

impl<S> Service<http::Request<Body>> for PeerGuard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone is the one that is ready (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = Arc::clone(&self.state);
        let windows = Arc::clone(&self.windows);
        let side = self.side;
        let (authenticated, claimed) = match side {
            Side::Peer => match request
                .extensions()
                .get::<ConnInfo<PeerAuth>>()
                .map(|info| &info.auth)
            {
                Some(Ok(node)) => (node.to_string(), String::new()),
                Some(Err(e)) => e.identities(),
                None => (String::new(), String::new()),
            },
            Side::Local => {
                let auth = request
                    .extensions()
                    .get::<ConnInfo<LocalAuth>>()
                    .map(|info| &info.auth);
                (kinbridge_service::local::actor_of(auth), String::new())
            }
        };
        let path: String = request.uri().path().chars().take(128).collect();
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .take(64)
            .collect::<String>();
        Box::pin(async move {
            let response = inner.call(request).await?;
            let Some((reason, message)) = response
                .extensions()
                .get::<Status>()
                .and_then(|s| classify(s, &method, side))
            else {
                return Ok(response);
            };
            let status = refused(Code::InvalidArgument, reason, message);
            let refusal = Refusal {
                authenticated,
                claimed,
                reason,
                side,
                path,
            };
            let answer = refusal.record(&state, &windows, status).await;
            Ok(answer.into_http())
        })
    }
}

/// Which of tonic's own statuses are refusals of the peer's bytes, as a reason code and the
/// message to answer with; `None` for any other status (a handler's, which says its own).
fn classify(status: &Status, method: &str, side: Side) -> Option<(&'static str, String)> {
    if refusal_code(status).is_some() {
        return None;
    }
    let said = status.message();
    let said: String = said.chars().take(200).collect();
    match status.code() {
        Code::Internal
            if said.starts_with("failed to decode Protobuf message")
                || said.starts_with("protocol error")
                || said.starts_with("Missing request message")
                || said.starts_with("Unexpected EOF decoding stream") =>
        {
            Some((
                "malformed",
                format!(
                    "the {method} request does not decode as kinbridge protocol v1 ({said}); nothing was taken; sending the same bytes again will be refused again"
                ),
            ))
        }
        Code::OutOfRange | Code::ResourceExhausted
            if (said.contains("message length too large") || said.contains("size limit"))
                && side == Side::Local =>
        {
            Some((
                "too-large",
                format!(
                    "the {method} request is above this node's limit of {} bytes per message ({said}); nothing was taken; send a smaller request (a referral's payload is at most {} bytes)",
                    MAX_GRPC_MESSAGE_BYTES,
                    kinbridge_core::limits::MAX_PAYLOAD_BYTES
                ),
            ))
        }
        Code::OutOfRange | Code::ResourceExhausted
            if said.contains("message length too large") || said.contains("size limit") =>
        {
            Some((
                "too-large",
                format!(
                    "the {method} request is above this node's limit of {} bytes per message ({said}); nothing was taken; send smaller batches (an envelope's payload is at most {} bytes)",
                    MAX_GRPC_MESSAGE_BYTES,
                    kinbridge_core::limits::MAX_PAYLOAD_BYTES
                ),
            ))
        }
        _ => None,
    }
}

/// One refusal of a peer's (or local client's) bytes, to count, audit (within the window)
/// and log.
struct Refusal {
    /// The peer's authenticated node, or the local client's certificate name.
    authenticated: String,
    claimed: String,
    reason: &'static str,
    side: Side,
    /// The gRPC method refused.
    path: String,
}

impl Refusal {
    fn entry(&self, state: &Node) -> pb::AuditEntry {
        let mut entry = state.auditor.entry(pb::AuditEvent::Refused);
        match self.side {
            Side::Peer => {
                entry.peer = self.authenticated.clone();
                entry.authenticated_peer = self.authenticated.clone();
                entry.claimed_sender = self.claimed.clone();
            }
            Side::Local => entry.actor = self.authenticated.clone(),
        }
        entry.reason = self.reason.to_owned();
        entry.method = self.path.clone();
        entry
    }

    /// Counts the refusal, audits it if its window allows (else counts it into the window's
    /// summary), and returns the status to answer with: `status`, or the audit failure if
    /// the log cannot record (the sender then retries instead of taking it as final).
    async fn record(
        self,
        state: &Arc<Node>,
        windows: &Arc<RefusalWindows>,
        status: Status,
    ) -> Status {
        let (peer, reason) = (self.authenticated.as_str(), self.reason);
        state.metrics.refused(self.side.label(), reason);
        match windows.admit(peer, reason, Instant::now()) {
            Admission::Log { summary } => {
                tracing::warn!(side = self.side.label(), peer, claimed = %self.claimed, reason, error = %status.message(), "request refused before decoding");
                let mut entries = Vec::new();
                if let Some(count) = summary {
                    let mut entry = self.entry(state);
                    entry.refused_count = count;
                    entries.push(entry);
                }
                entries.push(self.entry(state));
                match state.auditor.record_all(&entries).await {
                    Ok(()) => status,
                    Err(audit) => to_status(audit),
                }
            }
            Admission::Counted {
                first,
                window_start,
            } => {
                tracing::debug!(
                    peer,
                    reason,
                    "peer request refused before decoding; counted for the window's summary"
                );
                if first {
                    let entry = self.entry(state);
                    let who = self.authenticated.clone();
                    let (state, windows) = (Arc::clone(state), Arc::clone(windows));
                    tokio::spawn(async move {
                        // At the window's end, or sooner if the node stops: the count is
                        // logged either way.
                        let ends = window_start + windows.window();
                        let mut stopping = state.stopping.subscribe();
                        tokio::select! {
                            () = tokio::time::sleep_until(ends.into()) => {}
                            _ = stopping.wait_for(|stop| *stop) => {}
                        }
                        log_summary(&state, &windows, entry, &who, reason, window_start).await;
                    });
                }
                status
            }
        }
    }
}

/// Logs the summary of the window of `entry`'s peer and reason that began at `window_start`,
/// unless a later refusal already did.
async fn log_summary(
    state: &Node,
    windows: &RefusalWindows,
    mut entry: pb::AuditEntry,
    who: &str,
    reason: &'static str,
    window_start: Instant,
) {
    let Some(count) = windows.take_counted(who, reason, window_start) else {
        return;
    };
    entry.time_ms = kinbridge_core::UnixMillis::now().0;
    entry.refused_count = count;
    tracing::warn!(peer = %who, reason, count, "more requests refused in the last window than audited one by one");
    if let Err(e) = state.auditor.record(&entry).await {
        tracing::error!(error = %e.message(), count, "cannot audit the summary of refused peer requests");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_logs_its_first_refusals_and_counts_the_rest_once() {
        let windows = RefusalWindows::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let log = |summary| Admission::Log { summary };
        assert_eq!(windows.admit("ZM-DSW", "malformed", t0), log(None));
        assert_eq!(windows.admit("ZM-DSW", "malformed", t0), log(None));
        assert_eq!(
            windows.admit("ZM-DSW", "malformed", t0),
            Admission::Counted {
                first: true,
                window_start: t0
            }
        );
        assert_eq!(
            windows.admit("ZM-DSW", "malformed", t0 + Duration::from_secs(1)),
            Admission::Counted {
                first: false,
                window_start: t0
            }
        );
        // Another peer or reason has its own window.
        assert_eq!(windows.admit("MW-DSW", "malformed", t0), log(None));
        assert_eq!(windows.admit("ZM-DSW", "too-large", t0), log(None));
        // The window's end: its count is taken once.
        assert_eq!(windows.take_counted("ZM-DSW", "malformed", t0), Some(2));
        assert_eq!(windows.take_counted("ZM-DSW", "malformed", t0), None);
        // A refusal after the window begins a new one.
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(windows.admit("ZM-DSW", "malformed", t1), log(None));
    }

    #[test]
    fn only_tonics_own_refusals_of_the_bytes_are_rewritten() {
        let decode = Status::internal("failed to decode Protobuf message: invalid varint");
        assert_eq!(
            classify(&decode, "Deliver", Side::Peer).map(|(r, _)| r),
            Some("malformed")
        );
        let large = Status::out_of_range(
            "Error, decoded message length too large: found 20971520 bytes, the limit is: 1048576 bytes",
        );
        let (reason, message) = classify(&large, "Deliver", Side::Peer).expect("too large");
        assert_eq!(reason, "too-large");
        assert!(message.contains("1048576"), "{message}");
        // A handler's own statuses say what they mean already.
        let audit = refused(Code::Unavailable, "audit-failure", "retry later");
        assert_eq!(classify(&audit, "Deliver", Side::Peer), None);
        let skew = refused(Code::OutOfRange, "clock-skew", "ahead");
        assert_eq!(classify(&skew, "Deliver", Side::Peer), None);
        assert_eq!(
            classify(&Status::internal("a bug"), "Deliver", Side::Peer),
            None
        );
    }

    #[test]
    fn a_new_window_carries_an_untaken_count_as_its_summary() {
        let windows = RefusalWindows::new(Duration::from_secs(60), 1);
        let t0 = Instant::now();
        assert_eq!(
            windows.admit("ZW-DSD", "too-large", t0),
            Admission::Log { summary: None }
        );
        for _ in 0..3 {
            assert!(matches!(
                windows.admit("ZW-DSD", "too-large", t0),
                Admission::Counted { .. }
            ));
        }
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(
            windows.admit("ZW-DSD", "too-large", t1),
            Admission::Log { summary: Some(3) }
        );
        // The old window's timer then finds nothing left to log.
        assert_eq!(windows.take_counted("ZW-DSD", "too-large", t0), None);
    }
}
