//! Prometheus metrics, served as OpenMetrics text on `GET /metrics` of the listener
//! `listen.metrics` (HTTPS requiring a client certificate from the local clients' CA with a
//! role in [`SCRAPER_ROLES`]; plain HTTP only under `[metrics] insecure_plain_http = true`),
//! and the expiry watch that warns ahead of certificate and key expiry.
//!
//! Labels carry node ids, message kinds, outcomes, reason codes and key ids: never a child's
//! data, never a consent or case reference.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kinbridge_core::UnixMillis;
use kinbridge_proto::v1 as pb;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::identity::{Role, local_client_of};
use crate::server::NodeState;
use rustls::pki_types::CertificateDer;

/// Warn this long before a certificate or key expires.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How often the expiry watch looks again.
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 60 * 60);

/// A message's direction, kind, outcome and peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// "sent" or "received".
    pub direction: &'static str,
    /// The message kind, e.g. "referral".
    pub kind: String,
    /// "delivered", "refused", "expired" (sent); "accepted", "refused", "duplicate" (received).
    pub outcome: &'static str,
    /// The peer node.
    pub peer: String,
}

/// A refusal's reason code and where it happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// "peer" or "local"; "tracing" for a tracing record not reported to a peer because its
    /// consent no longer holds.
    pub side: &'static str,
    /// The reason code, as in the `kinbridge-refusal` metadata.
    pub reason: String,
}

/// One peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer node.
    pub peer: String,
}

/// One certificate file.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// "node", "node-ca", "local-client-ca" or "peer-ca".
    pub certificate: String,
    /// The node it belongs to.
    pub node: String,
}

/// One signing key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// The node it belongs to.
    pub node: String,
    /// Its id.
    pub key_id: String,
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    submitted: Family<PeerLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    delivery_latency: Family<PeerLabels, Histogram>,
    attempt_latency: Family<PeerLabels, Histogram>,
    outbox_depth: Gauge,
    audit_entries: Gauge,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    key_expiry: Family<KeyLabels, Gauge>,
    key_active: Family<KeyLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s, doubling; longer waits (a peer away) land in +Inf.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// The lower-case name of a message kind, as metrics label it.
pub fn kind_label(kind: i32) -> String {
    pb::MessageKind::try_from(kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("MESSAGE_KIND_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kinbridge");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages sent to and received from peers, by direction, kind, outcome and peer",
            messages.clone(),
        );
        let submitted = Family::<PeerLabels, Counter>::default();
        registry.register(
            "submitted",
            "Messages sealed and queued for a peer (submitted, forwarded, withdrawals, status and key updates)",
            submitted.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused, by side (peer or local) and reason code",
            refusals.clone(),
        );
        let delivery_latency = Family::<PeerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "delivery_latency_seconds",
            "From submission to the recipient's verified receipt, by peer",
            delivery_latency.clone(),
        );
        let attempt_latency = Family::<PeerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "delivery_attempt_seconds",
            "One delivery call to a peer, answered or not, by peer",
            attempt_latency.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Messages queued for delivery",
            outbox_depth.clone(),
        );
        let audit_entries = Gauge::default();
        registry.register(
            "audit_log_entries",
            "Entries in the node's audit log",
            audit_entries.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each certificate the node uses or trusts expires (Unix seconds)",
            certificate_expiry.clone(),
        );
        let key_expiry = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "signing_key_expiry_timestamp_seconds",
            "When each of the node's own signing keys stops being valid (Unix seconds); keys without an end are not listed",
            key_expiry.clone(),
        );
        let key_active = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "signing_key_active",
            "1 for the own key the node signs with now, 0 for its other keys",
            key_active.clone(),
        );
        Self {
            registry,
            messages,
            submitted,
            refusals,
            delivery_latency,
            attempt_latency,
            outbox_depth,
            audit_entries,
            certificate_expiry,
            key_expiry,
            key_active,
        }
    }

    /// A message to `peer` reached a final state.
    pub fn sent(&self, kind: i32, outcome: &'static str, peer: &str, submitted_at_ms: i64) {
        self.messages
            .get_or_create(&MessageLabels {
                direction: "sent",
                kind: kind_label(kind),
                outcome,
                peer: peer.to_owned(),
            })
            .inc();
        if outcome == "delivered" {
            let seconds = (UnixMillis::now().0 - submitted_at_ms).max(0) as f64 / 1000.0;
            self.delivery_latency
                .get_or_create(&PeerLabels {
                    peer: peer.to_owned(),
                })
                .observe(seconds);
        }
    }

    /// A message for `peer` was sealed and queued.
    pub fn queued(&self, peer: &str) {
        self.submitted
            .get_or_create(&PeerLabels {
                peer: peer.to_owned(),
            })
            .inc();
    }

    /// One delivery call to `peer` took `elapsed`.
    pub fn attempt(&self, peer: &str, elapsed: Duration) {
        self.attempt_latency
            .get_or_create(&PeerLabels {
                peer: peer.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A message from `peer` was answered.
    pub fn received(&self, kind: i32, outcome: &'static str, peer: &str) {
        self.messages
            .get_or_create(&MessageLabels {
                direction: "received",
                kind: kind_label(kind),
                outcome,
                peer: peer.to_owned(),
            })
            .inc();
    }

    /// A request was refused.
    pub fn refused(&self, side: &'static str, reason: &str) {
        self.refusals
            .get_or_create(&RefusalLabels {
                side,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records when a certificate expires.
    pub fn certificate(&self, certificate: &str, node: &str, not_after_unix: i64) {
        self.certificate_expiry
            .get_or_create(&CertificateLabels {
                certificate: certificate.to_owned(),
                node: node.to_owned(),
            })
            .set(not_after_unix);
    }

    /// The exposition text, with gauges read from `state` now.
    pub fn render(&self, state: &NodeState) -> String {
        self.outbox_depth
            .set(i64::try_from(state.store.queued()).unwrap_or(i64::MAX));
        self.audit_entries
            .set(i64::try_from(state.auditor.log().size()).unwrap_or(i64::MAX));
        let active = state.keys.signer();
        for (key_id, not_after, _) in state.keys.own_expiries() {
            let labels = KeyLabels {
                node: state.node_id.to_string(),
                key_id: key_id.to_string(),
            };
            if let Some(end) = not_after {
                self.key_expiry.get_or_create(&labels).set(end.0 / 1000);
            }
            self.key_active
                .get_or_create(&labels)
                .set(i64::from(key_id == *active.id()));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out = "# the metrics could not be encoded\n".into();
        }
        out
    }
}

/// The `not_after` of the first certificate in a PEM file, Unix seconds.
pub fn certificate_not_after(path: &std::path::Path) -> Option<i64> {
    use x509_parser::prelude::FromDer;
    let certs = crate::tls::load_certs(path).ok()?;
    let first = certs.first()?;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(first.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// The roles whose local-client certificates may read `/metrics`: a monitoring system
/// (`system`), an auditor and an admin. A caseworker's may not.
pub const SCRAPER_ROLES: [Role; 3] = [Role::System, Role::Auditor, Role::Admin];

/// How long a metrics connection may last.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// How the metrics listener speaks.
#[derive(Clone)]
pub enum MetricsTransport {
    /// HTTPS with this config, which requires a client certificate from the local CA.
    MutualTls(Arc<rustls::ServerConfig>),
    /// Plain HTTP to anyone who reaches the listener: `[metrics] insecure_plain_http = true`.
    InsecurePlainHttp,
}

/// Whether a verified local-client certificate chain may read the metrics; the refusal says
/// what to do.
fn scraper_allowed(chain: &[CertificateDer<'static>]) -> Result<(), String> {
    let leaf = chain
        .first()
        .ok_or_else(|| "no client certificate was presented".to_owned())?;
    let client = local_client_of(leaf).map_err(|e| {
        format!("the client certificate is not a kinbridge local-client certificate: {e}")
    })?;
    if !SCRAPER_ROLES.contains(&client.role) {
        return Err(format!(
            "role '{}' may not read metrics: scrape with a certificate of role system, auditor or admin from the local clients' CA",
            client.role.as_str()
        ));
    }
    // The metrics are counts drawn from child-protection work by peer and kind, like
    // ReportingService.GetStatistics: closed to an enforcement-tagged client (docs/consent.md).
    if !kinbridge_core::firewall::local_client_may(
        kinbridge_core::firewall::LocalAccess::Aggregate,
        &client.tags,
    ) {
        return Err(format!(
            "client '{}' is tagged immigration-enforcement: the metrics count child-protection work by peer and kind, and nothing sent for child protection flows back to enforcement; scrape with a certificate without that tag",
            client.name
        ));
    }
    Ok(())
}

/// Serves `GET /metrics` on `listener` over `transport` until the node stops.
pub async fn serve(
    state: Arc<NodeState>,
    listener: TcpListener,
    transport: MetricsTransport,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = match &transport {
        MetricsTransport::MutualTls(config) => {
            Some(tokio_rustls::TlsAcceptor::from(Arc::clone(config)))
        }
        MetricsTransport::InsecurePlainHttp => {
            tracing::warn!(
                "metrics are served over plain HTTP ([metrics] insecure_plain_http = true): anyone who reaches the listener reads per-peer traffic and refusal counts"
            );
            None
        }
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, remote)) = accepted else {
            continue;
        };
        let state = Arc::clone(&state);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                serve_connection(state, stream, Ok(())).await;
                return;
            };
            match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => {
                    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
                    let access = scraper_allowed(chain);
                    if let Err(reason) = &access {
                        tracing::warn!(listener = "metrics", %remote, %reason, "metrics request refused");
                    }
                    serve_connection(state, tls, access).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(listener = "metrics", %remote, error = %e, "TLS handshake refused");
                }
                Err(_) => {
                    tracing::warn!(listener = "metrics", %remote, "TLS handshake timed out");
                }
            }
        });
    }
}

/// Serves one HTTP/1.1 connection; every request is refused with 403 and `access`'s reason
/// when the client may not read the metrics.
async fn serve_connection<S>(state: Arc<NodeState>, stream: S, access: Result<(), String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let access = Arc::new(access);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        let access = Arc::clone(&access);
        async move {
            Ok::<_, Infallible>(match access.as_ref() {
                Ok(()) => answer(&state, &req),
                Err(reason) => {
                    let mut response = Response::new(format!("{reason}\n"));
                    *response.status_mut() = StatusCode::FORBIDDEN;
                    response
                }
            })
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    if let Err(e) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        tracing::debug!(error = %e, "metrics connection timed out");
    }
}

/// `GET path` over HTTPS on the metrics listener at `addr`, presenting the client
/// certificate `cert` with its key `key` and trusting the node CA `ca`: what Prometheus does.
/// Returns the status code and the body. For tests and troubleshooting.
pub async fn scrape(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    path: &str,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let roots = crate::tls::root_store(&crate::tls::load_certs(ca).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let chain = crate::tls::load_certs(cert).map_err(|e| e.to_string())?;
    let key = crate::tls::load_private_key(key).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(CONNECTION_TIMEOUT, exchange)
        .await
        .map_err(|_| "the metrics listener did not answer in time".to_owned())??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP response".to_owned())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in '{}'", head.lines().next().unwrap_or("")))?;
    Ok((status, body.to_owned()))
}

fn answer(state: &NodeState, req: &Request<Incoming>) -> Response<String> {
    let reply = |code: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(body);
        *response.status_mut() = code;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render(state),
        ),
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "kinbridge serves its metrics at /metrics\n".into(),
        ),
    }
}

/// Warns (at start, then every [`EXPIRY_CHECK_INTERVAL`]) of certificates and signing keys
/// that expire within [`EXPIRY_WARNING`].
pub async fn run_expiry_watch(
    state: Arc<NodeState>,
    certificates: Vec<(String, String, i64)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let now = UnixMillis::now().0 / 1000;
        let horizon = now + EXPIRY_WARNING.as_secs() as i64;
        for (what, node, not_after) in &certificates {
            if *not_after <= now {
                tracing::error!(certificate = %what, %node, not_after, "certificate has expired: replace it now");
            } else if *not_after <= horizon {
                let days = (not_after - now) / 86_400;
                tracing::warn!(certificate = %what, %node, days_left = days, "certificate expires soon: renew it");
            }
        }
        // Only the key the node signs with matters: a superseded key ends by design.
        let active = state.keys.signer();
        for (key_id, not_after, usable) in state.keys.own_expiries() {
            let Some(end) = not_after.map(|t| t.0 / 1000) else {
                continue;
            };
            if usable && key_id == *active.id() && end <= horizon {
                let days = (end - now) / 86_400;
                tracing::warn!(key = %key_id, days_left = days, "signing key expires soon: run `kinbridge keys rotate`");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_CHECK_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
