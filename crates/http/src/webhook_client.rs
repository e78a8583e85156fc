//! How the node POSTs webhook events ([`kinbridge_service::webhooks`]): one HTTP/1.1 request
//! per attempt, over TLS trusting only the CA the subscription names (or over plain HTTP where
//! the subscription says `insecure_plain_http`), bounded in time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use kinbridge_service::link::LinkFuture;
use kinbridge_service::webhooks::{HookSender, Subscription};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Bound on one attempt: connecting, the handshake, the request and the answer's head.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook client of a node: the TLS configuration of each subscription that uses TLS.
pub struct WebhookClient {
    tls: HashMap<String, Arc<rustls::ClientConfig>>,
}

impl WebhookClient {
    /// A client for subscriptions named with the CA file each trusts (`None`: plain HTTP).
    pub fn new<'a>(
        subscriptions: impl IntoIterator<Item = (&'a str, Option<&'a Path>)>,
    ) -> Result<Self, String> {
        let mut tls = HashMap::new();
        for (name, ca) in subscriptions {
            let Some(ca) = ca else { continue };
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate in the file", ca.display()));
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            tls.insert(name.to_owned(), Arc::new(config));
        }
        Ok(Self { tls })
    }

    async fn attempt(
        &self,
        subscription: &Subscription,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Result<u16, String> {
        let uri: Uri = subscription
            .url
            .parse()
            .map_err(|_| format!("'{}' is not a URL", subscription.url))?;
        let host = uri.host().ok_or("the URL names no host")?.to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map_or_else(|| host.clone(), |a| a.as_str().to_owned());
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut request = Request::post(path).header(header::HOST, authority);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Body::from(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if https {
            let config = self
                .tls
                .get(&subscription.name)
                .ok_or("an https URL needs the subscription's ca_certificate")?;
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| format!("server name: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(stream, request).await
        } else {
            send(tcp, request).await
        }
    }
}

async fn send<S>(stream: S, request: Request<Body>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let connection = tokio::spawn(connection);
    let answer = sender.send_request(request).await;
    connection.abort();
    answer
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("HTTP: {e}"))
}

impl HookSender for WebhookClient {
    fn post<'a>(
        &'a self,
        subscription: &'a Subscription,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> LinkFuture<'a, Result<u16, String>> {
        Box::pin(async move {
            tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt(subscription, headers, body))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")))
        })
    }
}
