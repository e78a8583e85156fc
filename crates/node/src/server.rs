//! Starting and running a node: load and check everything the config names, open the store,
//! then serve the peer and local listeners and run the delivery worker until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kinbridge_audit::AuditLog;
use kinbridge_core::{NodeId, NodeSigningKey, VerificationPolicy};
use kinbridge_grpc::peer_client::PeerClient;
use kinbridge_grpc::tls::{
    TlsError, client_verifier, load_certs, load_private_key, root_store, server_config,
};
use kinbridge_grpc::{GrpcError, Port};
use kinbridge_service::Node;
use kinbridge_service::audit::{Auditor, note_keys, run_checkpointer};
use kinbridge_service::delivery;
use kinbridge_service::family_tracing::{HeldKey, Tracing};
use kinbridge_service::identity::{is_development, node_id_of};
use kinbridge_service::keys::{KeyBook, KeyBookError};
use kinbridge_service::ratelimit::RateLimiter;
use kinbridge_service::registry::PeerRegistry;
use kinbridge_service::reporting::Reporting;
use kinbridge_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};
use tonic::transport::Identity;

use crate::config::NodeConfig;
use crate::devpki::DEV_KEY_WARNING;
use crate::peers::RegistryError;

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The peer registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log.
    #[error("audit log: {0}")]
    Audit(#[from] kinbridge_audit::LogError),
    /// The signing key.
    #[error("{path}: {reason}")]
    SigningKey {
        /// The key file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Development material in a node that is not a development node.
    #[error(
        "{file}: refusing development material {material}: this node's config does not say `development = true`; use certificates and keys from the authority's own PKI"
    )]
    DevelopmentMaterial {
        /// The config file.
        file: String,
        /// The offending file.
        material: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The key book.
    #[error("signing keys: {0}")]
    Keys(#[from] KeyBookError),
    /// A linkage key file.
    #[error("{path}: {reason}")]
    LinkageKey {
        /// The key file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The node certificate does not name this node.
    #[error("{path}: {reason}")]
    Identity {
        /// The certificate file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Group or others can read, write or enter the data directory or something in it.
    #[error(
        "{path} is open to other users (mode {mode:03o}), but the data directory holds children's data and must be readable by the node's own user only: run `chmod -R go-rwx {data_dir}` and start the node again (and set UMask=0077 in its service unit)"
    )]
    ExposedDataDir {
        /// The directory or file.
        path: String,
        /// Its permission bits.
        mode: u32,
        /// The data directory.
        data_dir: String,
    },
    /// The data directory could not be created or its permissions read or set.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory or file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A webhook subscription's secret or CA.
    #[error("webhook {path}: {reason}")]
    Webhook {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The gRPC face failed.
    #[error(transparent)]
    Grpc(#[from] GrpcError),
}

/// The two bound listeners of a node.
pub struct Listeners {
    /// Peer port: other countries' nodes.
    pub peer: TcpListener,
    /// Local port: the authority's own systems.
    pub local: TcpListener,
    /// Prometheus metrics (HTTPS with a local-client certificate), if configured.
    pub metrics: Option<TcpListener>,
    /// The HTTP/JSON face (HTTPS with a local-client certificate), if configured.
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &NodeConfig) -> Result<Self, NodeError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })
        };
        Ok(Self {
            peer: bind(config.peer_listen).await?,
            local: bind(config.local_listen).await?,
            metrics: match config.metrics_listen {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
            http: match config.http_listen {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
        })
    }
}

/// A node checked and loaded, ready to serve.
pub struct PreparedNode {
    state: Arc<Node>,
    peer_tls: Arc<rustls::ServerConfig>,
    local_tls: Arc<rustls::ServerConfig>,
    local_verifier_roots: usize,
    /// Every certificate the node uses or trusts: what, whose, and when it expires.
    certificates: Vec<(String, String, i64)>,
    /// The data directory, restricted again at the end (sled may have made files meanwhile).
    data_dir: std::path::PathBuf,
    /// How the metrics listener speaks.
    metrics_transport: crate::metrics::MetricsTransport,
    /// The TLS configuration of the HTTP/JSON face: the local clients' roots, HTTP/1.1.
    http_tls: Arc<rustls::ServerConfig>,
    /// How long a console session lasts without a request.
    console_idle: std::time::Duration,
    /// The webhook subscriptions and the client that sends their events.
    webhooks: (
        Vec<kinbridge_service::webhooks::Subscription>,
        Arc<kinbridge_http::webhook_client::WebhookClient>,
    ),
}

/// Loads and checks everything `config` names and opens the store. Fails fast, naming the
/// file at fault.
pub fn prepare(config: &NodeConfig) -> Result<PreparedNode, NodeError> {
    let Material {
        chain,
        key,
        local_ca,
        registry,
        signing_key,
        linkage_keys,
        webhooks,
    } = check_material(config)?;
    let webhook_client = kinbridge_http::webhook_client::WebhookClient::new(
        config
            .webhooks
            .iter()
            .map(|w| (w.name.as_str(), w.ca_certificate.as_deref())),
    )
    .map_err(|reason| NodeError::Webhook {
        path: "ca_certificate".into(),
        reason,
    })?;
    let cert_pem = std::fs::read(&config.tls_certificate).map_err(|e| TlsError::Pem {
        path: config.tls_certificate.clone(),
        reason: e.to_string(),
    })?;
    let key_pem = std::fs::read(&config.tls_private_key).map_err(|e| TlsError::Pem {
        path: config.tls_private_key.clone(),
        reason: e.to_string(),
    })?;
    let ListenerTls {
        peer: peer_tls,
        local: local_tls,
        metrics: metrics_transport,
        http: http_tls,
    } = listener_tls(config, chain, key, &registry, &local_ca)?;
    let data_dir_err = |e: std::io::Error| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        reason: e.to_string(),
    };
    kinbridge_store::private_files::create_dir(&config.data_dir).map_err(data_dir_err)?;
    let store =
        Store::open(&config.data_dir.join("store"))?.with_min_free_bytes(config.min_free_bytes);
    let keys = KeyBook::load(
        &config.node_id,
        signing_key,
        &registry,
        &store,
        &config.data_dir.join("keys"),
    )?;
    let audit_log = AuditLog::open(
        &config.data_dir.join("audit"),
        &config.node_id,
        &note_keys(&config.node_id, &keys.own_keyring()),
    )?;
    // One failure latch for the store and the audit log: either failing stops the writes.
    let auditor = Arc::new(
        Auditor::new(audit_log, config.node_id.clone()).with_failure(store.failure().clone()),
    );
    let tracing = Tracing::open(&store, linkage_keys)?;
    let reporting = Reporting::open(&store)?;
    // sled makes its files with the process's umask: take them back to 0600.
    kinbridge_store::private_files::restrict(&config.data_dir).map_err(data_dir_err)?;
    let state = Arc::new(Node {
        node_id: config.node_id.clone(),
        keys: Arc::new(keys),
        registry,
        link: Arc::new(PeerClient::with_delivery_timeout(
            Identity::from_pem(cert_pem, key_pem),
            config.delivery.call_timeout,
        )),
        store,
        policy: VerificationPolicy {
            local_node: config.node_id.clone(),
            max_clock_skew_ms: config.max_clock_skew_ms,
        },
        message_ttl_ms: config.message_ttl_ms,
        delivery_wake: Notify::new(),
        stopping: watch::Sender::new(false),
        auditor,
        checkpoint_interval: Duration::from_millis(config.checkpoint_interval_ms),
        tags: config.tags.clone(),
        accepted_purposes: config.accepted_purposes.clone(),
        payload_retention: config.payload_retention,
        peer_limiter: RateLimiter::new(config.peer_rate),
        client_limiter: RateLimiter::new(config.client_rate),
        max_queued: config.max_queued,
        delivery: config.delivery,
        intake_unit: config.intake_unit.clone(),
        units: config.units.clone(),
        metrics: Arc::new(kinbridge_service::metrics::Metrics::new()),
        tracing,
        reporting,
        suppression_threshold: config.suppression_threshold,
        submitting: kinbridge_service::once::InFlight::default(),
        receiving: kinbridge_service::once::InFlight::default(),
    });
    let certificates = certificate_expiries(config, &state.metrics);
    Ok(PreparedNode {
        state,
        peer_tls,
        local_tls,
        local_verifier_roots: local_ca.len(),
        certificates,
        data_dir: config.data_dir.clone(),
        metrics_transport,
        http_tls,
        console_idle: std::time::Duration::from_secs(config.console_idle_timeout_secs),
        webhooks: (webhooks, Arc::new(webhook_client)),
    })
}

/// The TLS configuration of each listener.
struct ListenerTls {
    peer: Arc<rustls::ServerConfig>,
    local: Arc<rustls::ServerConfig>,
    metrics: crate::metrics::MetricsTransport,
    http: Arc<rustls::ServerConfig>,
}

/// The TLS configurations of the peer port, the local port, the metrics listener and the
/// HTTP/JSON face. Each listener trusts its own roots only: the peers' CAs on the peer port
/// (none: every handshake is refused), the local clients' CA on the local port, the metrics
/// listener and the JSON face.
fn listener_tls(
    config: &NodeConfig,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    registry: &PeerRegistry,
    local_ca: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<ListenerTls, NodeError> {
    let peer_tls = server_config(
        chain.clone(),
        key.clone_key(),
        client_verifier(root_store(&registry.all_ca_certs())?)?,
    )?;
    let metrics_transport = if config.metrics_insecure_plain_http {
        crate::metrics::MetricsTransport::InsecurePlainHttp
    } else {
        // The same roots as the local port: the authority's own clients, never a peer.
        crate::metrics::MetricsTransport::MutualTls(kinbridge_grpc::tls::http1_server_config(
            chain.clone(),
            key.clone_key(),
            client_verifier(root_store(local_ca)?)?,
        )?)
    };
    let http_tls = kinbridge_grpc::tls::http1_server_config(
        chain.clone(),
        key.clone_key(),
        client_verifier(root_store(local_ca)?)?,
    )?;
    let local_tls = server_config(chain, key, client_verifier(root_store(local_ca)?)?)?;
    Ok(ListenerTls {
        peer: peer_tls,
        local: local_tls,
        metrics: metrics_transport,
        http: http_tls,
    })
}

/// Every certificate `config` names that the node uses or trusts, as (what, whose, expiry),
/// each expiry also set in `metrics`. A certificate whose expiry cannot be read is left out.
fn certificate_expiries(
    config: &NodeConfig,
    metrics: &kinbridge_service::metrics::Metrics,
) -> Vec<(String, String, i64)> {
    let mut certificates = vec![
        ("node", &config.node_id, &config.tls_certificate),
        ("node-ca", &config.node_id, &config.tls_ca_certificate),
        ("local-client-ca", &config.node_id, &config.local_client_ca),
    ];
    for peer in &config.peers {
        certificates.push(("peer-ca", &peer.node_id, &peer.ca_certificate));
    }
    certificates
        .into_iter()
        .filter_map(|(what, node, path)| {
            let not_after = crate::metrics::certificate_not_after(path)?;
            metrics.certificate(what, node.as_str(), not_after);
            Some((what.to_owned(), node.to_string(), not_after))
        })
        .collect()
}

/// What [`check_material`] loaded.
pub struct Material {
    /// The node's certificate chain.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Its TLS private key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
    /// The local clients' CA.
    pub local_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The peer registry.
    pub registry: PeerRegistry,
    /// The signing key the config names.
    pub signing_key: NodeSigningKey,
    /// The federation's linkage keys for family tracing.
    pub linkage_keys: Vec<HeldKey>,
    /// The webhook subscriptions, their secrets read.
    pub webhooks: Vec<kinbridge_service::webhooks::Subscription>,
}

/// Loads and checks every file `config` names, without opening the store or binding: what
/// `kinbridge config check` runs, and the first half of starting a node. Each error names the
/// file at fault and what is wrong with it.
pub fn check_material(config: &NodeConfig) -> Result<Material, NodeError> {
    let file = config.source.display().to_string();
    check_data_dir(&config.data_dir)?;
    let chain = load_certs(&config.tls_certificate)?;
    let key = load_private_key(&config.tls_private_key)?;
    let local_ca = load_certs(&config.local_client_ca)?;
    let registry = crate::peers::load_registry(&config.peers)?;
    let signing_pem =
        std::fs::read_to_string(&config.signing_key).map_err(|e| NodeError::SigningKey {
            path: config.signing_key.display().to_string(),
            reason: e.to_string(),
        })?;
    if !config.development {
        let dev = |material: &std::path::Path| NodeError::DevelopmentMaterial {
            file: file.clone(),
            material: material.display().to_string(),
        };
        if chain.iter().any(is_development) {
            return Err(dev(&config.tls_certificate));
        }
        if local_ca.iter().any(is_development) {
            return Err(dev(&config.local_client_ca));
        }
        if signing_pem.contains(DEV_KEY_WARNING.trim()) {
            return Err(dev(&config.signing_key));
        }
        for peer in &config.peers {
            if registry
                .get(&peer.node_id)
                .is_some_and(|p| p.ca_certs.iter().any(is_development))
            {
                return Err(dev(&peer.ca_certificate));
            }
        }
    }
    let signing_key = NodeSigningKey::from_pkcs8_pem(config.signing_key_id.clone(), &signing_pem)
        .map_err(|e| NodeError::SigningKey {
        path: config.signing_key.display().to_string(),
        reason: e.to_string(),
    })?;
    match chain.first().map(node_id_of) {
        Some(Ok(named)) if named == config.node_id => {}
        Some(Ok(named)) => {
            return Err(NodeError::Identity {
                path: config.tls_certificate.display().to_string(),
                reason: format!(
                    "the certificate names node '{named}', but node_id is '{}'",
                    config.node_id
                ),
            });
        }
        Some(Err(e)) => {
            return Err(NodeError::Identity {
                path: config.tls_certificate.display().to_string(),
                reason: format!(
                    "{e}: a node certificate carries the URI urn:kinbridge:node:<NODE-ID>"
                ),
            });
        }
        None => {
            return Err(NodeError::Identity {
                path: config.tls_certificate.display().to_string(),
                reason: "no certificate in the file".into(),
            });
        }
    }
    let linkage_keys = crate::linkage_keys::load_keys(&config.linkage_keys, config.development)
        .map_err(|(path, reason)| NodeError::LinkageKey {
            path: path.display().to_string(),
            reason,
        })?;
    let webhooks = webhook_subscriptions(config)?;
    Ok(Material {
        chain,
        key,
        local_ca,
        registry,
        signing_key,
        linkage_keys,
        webhooks,
    })
}

/// The webhook subscriptions of `config`, each with its secret read from its file.
fn webhook_subscriptions(
    config: &NodeConfig,
) -> Result<Vec<kinbridge_service::webhooks::Subscription>, NodeError> {
    config
        .webhooks
        .iter()
        .map(|w| {
            let path = w.secret_file.display().to_string();
            let text = std::fs::read_to_string(&w.secret_file).map_err(|e| NodeError::Webhook {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let secret = kinbridge_service::webhooks::decode_secret(&text)
                .map_err(|reason| NodeError::Webhook { path, reason })?;
            Ok(kinbridge_service::webhooks::Subscription {
                name: w.name.clone(),
                url: w.url.clone(),
                secret,
                events: w.events.clone(),
                units: w.units.clone(),
                max_age: w.max_age,
                retry_max: w.retry_max,
            })
        })
        .collect()
}

/// Refuses a data directory that group or others can read, write or enter, or that holds
/// anything they can. One that does not exist yet is fine: the node creates it 0700.
pub fn check_data_dir(data_dir: &std::path::Path) -> Result<(), NodeError> {
    match kinbridge_store::private_files::find_exposed(data_dir) {
        Ok(None) => Ok(()),
        Ok(Some(exposed)) => Err(NodeError::ExposedDataDir {
            path: exposed.path.display().to_string(),
            mode: exposed.mode,
            data_dir: data_dir.display().to_string(),
        }),
        Err(e) => Err(NodeError::DataDir {
            path: data_dir.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

impl PreparedNode {
    /// The node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.state.node_id
    }

    /// Serves `listeners` until `shutdown` completes, then stops accepting, lets in-flight
    /// calls finish and returns.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), NodeError> {
        let state = self.state;
        tracing::info!(node = %state.node_id, local_roots = self.local_verifier_roots, "node started");
        let stop_rx = state.stopping.subscribe();
        let worker = tokio::spawn(delivery::run(Arc::clone(&state), stop_rx.clone()));
        // A first checkpoint before serving, so receipts always carry one.
        if let Err(e) = state.auditor.checkpoint(&state.keys.signer()).await {
            tracing::error!(error = %e.message(), "cannot sign the first audit checkpoint");
        }
        let checkpointer = tokio::spawn(run_checkpointer(
            Arc::clone(&state.auditor),
            Arc::clone(&state.keys),
            state.checkpoint_interval,
            stop_rx.clone(),
        ));
        let metrics = listeners
            .metrics
            .map(|listener| (listener, self.metrics_transport.clone()));
        let mut watchers = spawn_watchers(&state, metrics, self.certificates, &stop_rx);
        let (subscriptions, webhook_client) = self.webhooks;
        if !subscriptions.is_empty() {
            watchers.push(tokio::spawn(kinbridge_service::webhooks::run(
                Arc::clone(&state),
                subscriptions,
                webhook_client,
                stop_rx.clone(),
            )));
        }
        if let Some(listener) = listeners.http {
            watchers.push(tokio::spawn(kinbridge_http::serve(
                Arc::clone(&state),
                listener,
                self.http_tls,
                self.console_idle,
                stop_rx.clone(),
            )));
        }
        let peer = Port {
            listener: listeners.peer,
            tls: self.peer_tls,
        };
        let local = Port {
            listener: listeners.local,
            tls: self.local_tls,
        };
        let result = kinbridge_grpc::serve(Arc::clone(&state), peer, local, shutdown).await;
        // The face turned `stopping` true on shutdown; on a failure, the tasks stop too.
        state.stopping.send_replace(true);
        let _ = worker.await;
        let _ = checkpointer.await;
        for task in watchers {
            let _ = task.await;
        }
        close(&state, &self.data_dir).await?;
        result.map_err(NodeError::from)
    }
}

/// Starts the tasks that watch the node while it serves, each stopping on `stop`: the metrics
/// listener (if any), the certificate expiry watch, and the payload retention (if configured).
fn spawn_watchers(
    state: &Arc<Node>,
    metrics: Option<(TcpListener, crate::metrics::MetricsTransport)>,
    certificates: Vec<(String, String, i64)>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some((listener, transport)) = metrics {
        tasks.push(tokio::spawn(crate::metrics::serve(
            Arc::clone(state),
            listener,
            transport,
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::metrics::run_expiry_watch(
        Arc::clone(state),
        certificates,
        stop.clone(),
    )));
    if let Some(keep) = state.payload_retention {
        tasks.push(tokio::spawn(kinbridge_service::purge::run_retention(
            Arc::clone(state),
            keep,
            stop.clone(),
        )));
    }
    tasks
}

/// Closes a node that stopped serving: everything acknowledged was committed already; this
/// makes the rest durable too, then takes back to the node's user the files sled made while
/// serving (in a process whose umask may let others read them).
async fn close(state: &Node, data_dir: &std::path::Path) -> Result<(), NodeError> {
    state.store.commit().await?;
    if let Err(e) = kinbridge_store::private_files::restrict(data_dir) {
        tracing::error!(error = %e, "cannot restrict the data directory to the node's user");
    }
    Ok(())
}

/// Runs a node from `config` on `listeners` until `shutdown` completes.
pub async fn run(
    config: &NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    prepare(config)?.serve(listeners, shutdown).await
}

/// A node running in this process, for the demo and tests.
pub struct RunningNode {
    /// The node's id.
    pub node_id: NodeId,
    /// Where its peer listener is bound.
    pub peer_addr: SocketAddr,
    /// Where its local listener is bound.
    pub local_addr: SocketAddr,
    /// Where its metrics listener is bound, if it has one.
    pub metrics_addr: Option<SocketAddr>,
    /// Where its HTTP/JSON face is bound, if it has one.
    pub http_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    /// Stops the node gracefully and waits for it.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(NodeError::Store(StoreError::Commit(format!(
                "node task failed: {e}"
            )))),
        }
    }
}

/// Starts a node from `config` on already bound `listeners` in this process.
pub fn spawn(config: &NodeConfig, listeners: Listeners) -> Result<RunningNode, NodeError> {
    let prepared = prepare(config)?;
    let peer_addr = listeners
        .peer
        .local_addr()
        .map_err(|source| NodeError::Bind {
            addr: config.peer_listen,
            source,
        })?;
    let local_addr = listeners
        .local
        .local_addr()
        .map_err(|source| NodeError::Bind {
            addr: config.local_listen,
            source,
        })?;
    let metrics_addr = listeners.metrics.as_ref().and_then(|l| l.local_addr().ok());
    let http_addr = listeners.http.as_ref().and_then(|l| l.local_addr().ok());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(prepared.serve(listeners, async move {
        let _ = stopped.await;
    }));
    Ok(RunningNode {
        node_id: config.node_id.clone(),
        peer_addr,
        local_addr,
        metrics_addr,
        http_addr,
        stop: Some(stop),
        task,
    })
}
