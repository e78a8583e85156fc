//! Mutual TLS: loading PEM material, building rustls configs, and the accept loop that turns a
//! TCP listener into a stream of authenticated TLS connections for tonic.
//!
//! The server always requires a client certificate from the configured roots; there is no
//! switch to turn that off. Handshake failures are logged at WARN with their reason (tonic
//! would log them only at DEBUG), since operators need to see a peer with an expired or
//! unknown certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake is done and which wait for tonic to take them.
const ACCEPTED_BACKLOG: usize = 128;

/// Why TLS material could not be loaded or a config built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider used everywhere: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// All certificates in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| pem_err(e.to_string()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err("holds no certificate".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| pem_err(e.to_string()))?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| pem_err(format!("not a PEM private key: {e}")))?
        .ok_or_else(|| pem_err("holds no private key".into()))
}

/// A root store holding `certs`.
pub fn root_store(certs: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|e| TlsError::Config(format!("CA certificate refused: {e}")))?;
    }
    Ok(roots)
}

/// A client-certificate verifier that accepts only certificates chaining to `roots`. With no
/// roots at all (the peer port of a node without peers) it refuses every certificate: a
/// listener never falls back to another listener's roots.
pub fn client_verifier(
    roots: RootCertStore,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    if roots.is_empty() {
        return Ok(Arc::new(RefuseEveryClient));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// Requires a client certificate and refuses every one, as unknown CA: the verifier of a
/// listener that trusts no root.
#[derive(Debug)]
pub struct RefuseEveryClient;

impl rustls::server::danger::ClientCertVerifier for RefuseEveryClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A server config presenting `chain` and requiring a client certificate that `verifier`
/// accepts. Speaks HTTP/2 only (gRPC).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config`] for an HTTP/1.1 listener (the Prometheus `/metrics` one): the same
/// mandatory client certificate, ALPN `http/1.1`.
pub fn http1_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = Arc::unwrap_or_clone(server_config(chain, key, verifier)?);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What tonic learns about a connection: the remote address and what the listener's
/// authenticator concluded from the client certificate. Handlers read it from the request's
/// extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo<A> {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The authenticator's verdict on the client certificate.
    pub auth: A,
}

/// A TLS connection that completed its handshake with a verified client certificate.
pub struct TlsConn<A> {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo<A>,
}

impl<A: Clone + Send + Sync + 'static> Connected for TlsConn<A> {
    type ConnectInfo = ConnInfo<A>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl<A: Unpin> AsyncRead for TlsConn<A> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<A: Unpin> AsyncWrite for TlsConn<A> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener`, completes each TLS handshake in its own task with
/// a bound, runs `authenticate` on the verified client chain, and yields the connections.
/// The loop ends when the returned stream is dropped (tonic drops it on shutdown).
pub fn accept_loop<A, F>(
    name: &'static str,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    authenticate: F,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn<A>, std::io::Error>>
where
    A: Clone + Send + Sync + Unpin + 'static,
    F: Fn(&[CertificateDer<'static>]) -> A + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
    let acceptor = TlsAcceptor::from(config);
    let authenticate = Arc::new(authenticate);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(listener = name, error = %e, "accept failed");
                        continue;
                    }
                },
                () = tx.closed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let authenticate = Arc::clone(&authenticate);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certs = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .unwrap_or_default()
                            .to_vec();
                        let auth = authenticate(&certs);
                        let info = ConnInfo {
                            remote: Some(remote),
                            auth,
                        };
                        let _ = tx.send(Ok(TlsConn { stream, info })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(listener = name, %remote, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::warn!(listener = name, %remote, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
