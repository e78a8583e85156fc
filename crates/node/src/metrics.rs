//! The metrics listener: the node's metrics as OpenMetrics text on `GET /metrics` of
//! `listen.metrics` (HTTPS requiring a client certificate from the local clients' CA with a
//! role in [`SCRAPER_ROLES`]; plain HTTP only under `[metrics] insecure_plain_http = true`),
//! and the expiry watch that warns ahead of certificate and key expiry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kinbridge_core::UnixMillis;
use kinbridge_grpc::tls;
use kinbridge_service::Node;
use kinbridge_service::identity::{Role, local_client_of};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Warn this long before a certificate or key expires.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How often the expiry watch looks again.
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 60 * 60);

/// The `not_after` of the first certificate in a PEM file, Unix seconds.
pub fn certificate_not_after(path: &std::path::Path) -> Option<i64> {
    use x509_parser::prelude::FromDer;
    let certs = tls::load_certs(path).ok()?;
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
    state: Arc<Node>,
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
            match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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
async fn serve_connection<S>(state: Arc<Node>, stream: S, access: Result<(), String>)
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
    let roots = tls::root_store(&tls::load_certs(ca).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let chain = tls::load_certs(cert).map_err(|e| e.to_string())?;
    let key = tls::load_private_key(key).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
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

fn answer(state: &Node, req: &Request<Incoming>) -> Response<String> {
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
            state.render_metrics(),
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
    state: Arc<Node>,
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
