//! The node's configuration: read once from TOML into a typed [`NodeConfig`], failing fast with
//! the file, the key and what was expected. Relative paths are taken relative to the config
//! file's directory. Tests build a `NodeConfig` in code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kinbridge_core::limits::{DEFAULT_MAX_CLOCK_SKEW_MS, MAX_MESSAGE_LIFETIME_MS};
use kinbridge_core::{KeyId, NodeId, UnixMillis};
use serde::Deserialize;

/// Default lifetime of a submitted message: a week, time enough for a border post's link to
/// come back.
pub const DEFAULT_MESSAGE_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The unit referrals addressed to no unit arrive in, unless the config names another.
pub const DEFAULT_INTAKE_UNIT: &str = "intake";

/// The unit named [`DEFAULT_INTAKE_UNIT`].
pub fn default_intake_unit() -> kinbridge_core::UnitName {
    kinbridge_core::UnitName::new(DEFAULT_INTAKE_UNIT)
        .unwrap_or_else(|_| unreachable!("the default intake unit is a valid unit name"))
}

/// Default interval between audit checkpoints while the log grows.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 2000;

/// A configuration error: which file, which key, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {expected}")]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The key, as a TOML path (e.g. `peers[0].endpoint`).
    pub key: String,
    /// What was expected, or what is wrong.
    pub expected: String,
}

/// A node's whole configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The file it was read from, for messages; empty when built in code.
    pub source: PathBuf,
    /// This node's id.
    pub node_id: NodeId,
    /// Whether this is a development node, allowed to use development certificates.
    pub development: bool,
    /// Where the node keeps its sled store.
    pub data_dir: PathBuf,
    /// Address of the peer listener (other countries' nodes).
    pub peer_listen: SocketAddr,
    /// Address of the local listener (the authority's own systems).
    pub local_listen: SocketAddr,
    /// Address of the Prometheus `/metrics` listener (HTTPS with a client certificate from
    /// the local clients' CA); `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve `/metrics` over plain HTTP to anyone who reaches the listener (`[metrics]
    /// insecure_plain_http = true`); `false`, the default, requires mutual TLS.
    pub metrics_insecure_plain_http: bool,
    /// Webhook subscriptions (`[[webhooks]]`).
    pub webhooks: Vec<WebhookConfig>,
    /// Address of the HTTP/JSON face (HTTPS with a client certificate from the local CA, like
    /// the local gRPC port), if the node serves one.
    pub http_listen: Option<SocketAddr>,
    /// The node's TLS certificate chain (PEM), presented on both listeners and to peers.
    pub tls_certificate: PathBuf,
    /// The node's TLS private key (PEM).
    pub tls_private_key: PathBuf,
    /// The CA that issued the node's certificate; local clients trust it to reach the node.
    pub tls_ca_certificate: PathBuf,
    /// The node's Ed25519 signing key (PKCS#8 PEM).
    pub signing_key: PathBuf,
    /// Its id.
    pub signing_key_id: KeyId,
    /// The CA whose certificates local clients present.
    pub local_client_ca: PathBuf,
    /// The unit that receives referrals addressed to no unit.
    pub intake_unit: kinbridge_core::UnitName,
    /// The units referrals may be addressed to (besides the intake unit); a referral to
    /// another unit is refused with a signed receipt. Empty: every unit name is taken.
    pub units: Vec<kinbridge_core::UnitName>,
    /// Lifetime given to submitted messages when the client does not choose one.
    pub message_ttl_ms: i64,
    /// Tolerated difference between a peer's clock and ours.
    pub max_clock_skew_ms: i64,
    /// The peer registry.
    pub peers: Vec<PeerConfig>,
    /// A local-client identity for the `kinbridge` CLI on this host; the node ignores it.
    pub cli_client: Option<ClientIdentity>,
    /// How often the node signs a checkpoint of its audit log while the log grows.
    pub checkpoint_interval_ms: u64,
    /// This node's own tags, normalised (e.g. `child-protection`, or `immigration-enforcement`
    /// for an enforcement authority's node, which then receives no child-protection data).
    pub tags: Vec<kinbridge_core::firewall::Tag>,
    /// Purposes this node accepts messages for; `None` accepts every purpose.
    pub accepted_purposes: Option<Vec<kinbridge_proto::v1::Purpose>>,
    /// How long payloads are kept after they were received or sent; `None` keeps them until
    /// their consent is withdrawn.
    pub payload_retention: Option<std::time::Duration>,
    /// Requests per second (and burst) each peer may make.
    pub peer_rate: kinbridge_service::ratelimit::Rate,
    /// Requests per second (and burst) each local client may make.
    pub client_rate: kinbridge_service::ratelimit::Rate,
    /// Most messages the outbox holds queued; submissions beyond are refused with
    /// RESOURCE_EXHAUSTED until deliveries drain it.
    pub max_queued: u64,
    /// The delivery worker's retry backoff, batch size and call bound (`[delivery]
    /// retry_base_ms`, `retry_max_ms`, `batch`, `call_timeout_ms`).
    pub delivery: kinbridge_service::delivery::Tuning,
    /// The federation's linkage keys for family tracing, one per epoch; empty: this node
    /// takes no part in family tracing.
    pub linkage_keys: Vec<LinkageKeyConfig>,
    /// Counts from 1 to this minus one are withheld from reports (default 5).
    pub suppression_threshold: u64,
    /// How long a console session lasts without a request, in seconds (`[console]
    /// idle_timeout_secs`, default [`DEFAULT_CONSOLE_IDLE_SECS`]).
    pub console_idle_timeout_secs: u64,
    /// Writes that grow the store are refused while less than this many bytes are free on
    /// the data directory's volume (`[storage] min_free_bytes`, default
    /// [`kinbridge_store::room::DEFAULT_MIN_FREE_BYTES`]; 0 turns the guard off).
    pub min_free_bytes: u64,
}

/// A console session ends after this many seconds without a request unless the config says
/// otherwise: 15 minutes.
pub const DEFAULT_CONSOLE_IDLE_SECS: u64 = 900;
/// The longest idle limit a config may give a console session: 12 hours.
pub const MAX_CONSOLE_IDLE_SECS: u64 = 12 * 60 * 60;

/// Counts from 1 to this minus one are withheld from reports unless the config says otherwise.
pub const DEFAULT_SUPPRESSION_THRESHOLD: u64 = 5;

/// One webhook subscription: where the node pushes its inbox events.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Its name (lower-case letters, digits, `-`), unique: logs, metrics and its cursor.
    pub name: String,
    /// Where events are POSTed: `https://…`, or `http://…` under `insecure_plain_http`.
    pub url: String,
    /// The file holding its `whsec_` secret (Standard Webhooks).
    pub secret_file: PathBuf,
    /// The CA the receiver's certificate must chain to (an `https` URL needs one).
    pub ca_certificate: Option<PathBuf>,
    /// The event types it takes; empty: all.
    pub events: Vec<kinbridge_service::webhooks::EventType>,
    /// The units whose items it is told of; empty: all.
    pub units: Vec<String>,
    /// An event not answered within this long is given up (default 72 hours).
    pub max_age: std::time::Duration,
    /// Longest delay between two attempts of an event (default 30 s).
    pub retry_max: std::time::Duration,
}

/// One epoch's linkage key: a secret the federation shares among its nodes only.
#[derive(Debug, Clone)]
pub struct LinkageKeyConfig {
    /// Its epoch.
    pub epoch: u32,
    /// The file holding it: 32 bytes in hexadecimal.
    pub file: PathBuf,
    /// From when this node's queries use it (a rotation: every node holds the new key
    /// before this instant); `None`: at once. Queries use the newest epoch in use.
    pub queries_from: Option<UnixMillis>,
}

/// One peer of the registry.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The peer's node id.
    pub node_id: NodeId,
    /// Where to deliver to it (`https://host:port`); `None` for a peer that only sends to us.
    pub endpoint: Option<String>,
    /// Name to check in its TLS server certificate; defaults to the endpoint's host.
    pub tls_server_name: Option<String>,
    /// The CA that issues the peer's TLS certificates (PEM).
    pub ca_certificate: PathBuf,
    /// Tags such as `child-protection` or `immigration-enforcement`, normalised.
    pub tags: Vec<kinbridge_core::firewall::Tag>,
    /// The peer's Ed25519 public keys.
    pub signing_keys: Vec<PeerKeyConfig>,
}

/// One Ed25519 public key of a peer.
#[derive(Debug, Clone)]
pub struct PeerKeyConfig {
    /// Its id.
    pub key_id: KeyId,
    /// SPKI PEM file.
    pub public_key: PathBuf,
    /// Signatures before this instant are refused.
    pub not_before: Option<UnixMillis>,
    /// Signatures from this instant on are refused.
    pub not_after: Option<UnixMillis>,
}

/// A local client's certificate and key.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// Certificate (PEM).
    pub certificate: PathBuf,
    /// Private key (PEM).
    pub private_key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: String,
    #[serde(default)]
    development: bool,
    data_dir: PathBuf,
    listen: RawListen,
    identity: RawIdentity,
    local_clients: RawLocalClients,
    #[serde(default)]
    delivery: RawDelivery,
    client: Option<RawClient>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    peers: Vec<RawPeer>,
    #[serde(default)]
    tracing: RawTracing,
    #[serde(default)]
    reporting: RawReporting,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    #[serde(default)]
    console: RawConsole,
    #[serde(default)]
    storage: RawStorage,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    min_free_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    idle_timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: String,
    url: String,
    secret_file: PathBuf,
    ca_certificate: Option<PathBuf>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    units: Vec<String>,
    max_age_hours: Option<u64>,
    retry_max_seconds: Option<u64>,
    #[serde(default)]
    insecure_plain_http: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    insecure_plain_http: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReporting {
    suppression_threshold: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTracing {
    #[serde(default)]
    linkage_keys: Vec<RawLinkageKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLinkageKey {
    epoch: u32,
    file: PathBuf,
    queries_from: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_interval_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    peer_requests_per_second: Option<f64>,
    peer_burst: Option<f64>,
    client_requests_per_second: Option<f64>,
    client_burst: Option<f64>,
    max_queued: Option<u64>,
}

/// Default per-peer and per-client rates: far above what one authority's traffic needs, low
/// enough that one misbehaving caller cannot take the node.
pub const DEFAULT_PEER_RATE: kinbridge_service::ratelimit::Rate =
    kinbridge_service::ratelimit::Rate {
        per_second: 2000.0,
        burst: 4000.0,
    };
/// Default per-client rate.
pub const DEFAULT_CLIENT_RATE: kinbridge_service::ratelimit::Rate =
    kinbridge_service::ratelimit::Rate {
        per_second: 2000.0,
        burst: 4000.0,
    };
/// Default bound on queued messages.
pub const DEFAULT_MAX_QUEUED: u64 = 100_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    payload_days: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    accepted_purposes: Option<Vec<String>>,
}

/// Parses a purpose as written in config and on the command line (`service-referral`).
pub fn parse_purpose(name: &str) -> Option<kinbridge_proto::v1::Purpose> {
    let upper = format!("PURPOSE_{}", name.replace('-', "_").to_uppercase());
    kinbridge_proto::v1::Purpose::from_str_name(&upper)
        .filter(|p| *p != kinbridge_proto::v1::Purpose::Unspecified)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    peer: String,
    local: String,
    metrics: Option<String>,
    http: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    certificate: PathBuf,
    private_key: PathBuf,
    ca_certificate: PathBuf,
    signing_key: PathBuf,
    signing_key_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalClients {
    ca_certificate: PathBuf,
    intake_unit: Option<String>,
    units: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    message_ttl_seconds: Option<u64>,
    max_clock_skew_seconds: Option<u64>,
    retry_base_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    batch: Option<usize>,
    call_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    certificate: PathBuf,
    private_key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    node_id: String,
    endpoint: Option<String>,
    tls_server_name: Option<String>,
    ca_certificate: PathBuf,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    signing_keys: Vec<RawPeerKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeerKey {
    key_id: String,
    public_key: PathBuf,
    not_before: Option<String>,
    not_after: Option<String>,
}

impl NodeConfig {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: "(file)".into(),
            expected: format!("a readable TOML file ({e})"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates config `text` read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: toml_error_location(text, &e),
            expected: toml_error_expected(text, &e),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Checker {
            file: path,
            base: &base,
        }
        .check(raw)
    }
}

fn toml_error_location(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        }
        None => "(document)".into(),
    }
}

/// What a TOML syntax error says was expected. For some errors (a control character in a
/// comment) the parser gives no message: then the offending character is named.
fn toml_error_expected(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    if !message.is_empty() {
        return message.to_owned();
    }
    let found = e
        .span()
        .and_then(|span| text.get(span.start..))
        .and_then(|rest| rest.chars().next());
    match found {
        Some(c) if c.is_control() => format!(
            "valid TOML: the control character U+{:04X} is not allowed here, not even in a comment",
            u32::from(c)
        ),
        _ => "valid TOML: the parser stopped here".to_owned(),
    }
}

struct Checker<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Checker<'_> {
    fn err(&self, key: &str, expected: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            expected: expected.into(),
        }
    }

    fn node_id(&self, key: &str, value: &str) -> Result<NodeId, ConfigError> {
        NodeId::new(value).map_err(|e| self.err(key, e.to_string()))
    }

    /// `local_clients.units`: valid unit names, each once.
    fn units(&self, values: &[String]) -> Result<Vec<kinbridge_core::UnitName>, ConfigError> {
        let key = "local_clients.units";
        let mut units: Vec<kinbridge_core::UnitName> = Vec::new();
        for value in values {
            let unit = kinbridge_core::UnitName::new(value)
                .map_err(|e| self.err(key, format!("'{value}': {e}")))?;
            if units.contains(&unit) {
                return Err(self.err(key, format!("each unit once; '{value}' is listed twice")));
            }
            units.push(unit);
        }
        Ok(units)
    }

    fn key_id(&self, key: &str, value: &str) -> Result<KeyId, ConfigError> {
        KeyId::new(value).map_err(|e| self.err(key, e.to_string()))
    }

    fn addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value.parse().map_err(|_| {
            self.err(
                key,
                format!("an IP address and port such as 127.0.0.1:7101, not '{value}'"),
            )
        })
    }

    /// A path relative to the config file, which must name an existing file.
    fn file(&self, key: &str, value: &Path) -> Result<PathBuf, ConfigError> {
        let path = self.base.join(value);
        if path.is_file() {
            Ok(path)
        } else {
            Err(self.err(key, format!("an existing file; '{}' does not exist (for development material run `kinbridge dev-certs`)", path.display())))
        }
    }

    /// Tags from the closed vocabulary, in any case and with `_` for `-`; an unknown one is
    /// refused by name, so a typo never leaves a peer outside the firewall.
    fn tags(
        &self,
        key: &str,
        values: &[String],
    ) -> Result<Vec<kinbridge_core::firewall::Tag>, ConfigError> {
        let mut tags = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let tag = kinbridge_core::firewall::Tag::parse(value)
                .map_err(|e| self.err(&format!("{key}[{i}]"), e.to_string()))?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        tags.sort();
        Ok(tags)
    }

    fn seconds(
        &self,
        key: &str,
        value: Option<u64>,
        default_ms: i64,
        max_ms: i64,
    ) -> Result<i64, ConfigError> {
        let Some(seconds) = value else {
            return Ok(default_ms);
        };
        let ms = i64::try_from(seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        if seconds == 0 || ms > max_ms {
            return Err(self.err(
                key,
                format!("a number of seconds from 1 to {}", max_ms / 1000),
            ));
        }
        Ok(ms)
    }

    fn rate(
        &self,
        key: &str,
        per_second: Option<f64>,
        burst: Option<f64>,
        default: kinbridge_service::ratelimit::Rate,
    ) -> Result<kinbridge_service::ratelimit::Rate, ConfigError> {
        let per_second = per_second.unwrap_or(default.per_second);
        let burst = burst.unwrap_or(per_second.max(default.burst.min(per_second * 2.0)));
        if !(per_second.is_finite() && per_second > 0.0 && burst.is_finite() && burst >= 1.0) {
            return Err(self.err(
                key,
                "a positive number of requests per second, and a burst of at least 1",
            ));
        }
        Ok(kinbridge_service::ratelimit::Rate { per_second, burst })
    }

    fn instant(&self, key: &str, value: Option<&str>) -> Result<Option<UnixMillis>, ConfigError> {
        let Some(value) = value else { return Ok(None) };
        let parsed =
            time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    self.err(
                        key,
                        format!("an RFC 3339 time such as 2027-01-01T00:00:00Z, not '{value}'"),
                    )
                })?;
        Ok(Some(UnixMillis(
            i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
        )))
    }

    fn check(&self, raw: RawConfig) -> Result<NodeConfig, ConfigError> {
        let node_id = self.node_id("node_id", &raw.node_id)?;
        let peers = self.peers(&node_id, raw.peers)?;
        let linkage_keys = self.linkage_keys(&raw.tracing.linkage_keys)?;
        let cli_client = raw.client.map(|c| self.cli_client(c)).transpose()?;
        Ok(NodeConfig {
            source: self.file.to_path_buf(),
            node_id,
            development: raw.development,
            data_dir: self.base.join(raw.data_dir),
            peer_listen: self.addr("listen.peer", &raw.listen.peer)?,
            local_listen: self.addr("listen.local", &raw.listen.local)?,
            metrics_listen: raw
                .listen
                .metrics
                .as_deref()
                .map(|m| self.addr("listen.metrics", m))
                .transpose()?,
            metrics_insecure_plain_http: raw.metrics.insecure_plain_http,
            webhooks: self.webhooks(&raw.webhooks)?,
            http_listen: raw
                .listen
                .http
                .as_deref()
                .map(|h| self.addr("listen.http", h))
                .transpose()?,
            tls_certificate: self.file("identity.certificate", &raw.identity.certificate)?,
            tls_private_key: self.file("identity.private_key", &raw.identity.private_key)?,
            tls_ca_certificate: self
                .file("identity.ca_certificate", &raw.identity.ca_certificate)?,
            signing_key: self.file("identity.signing_key", &raw.identity.signing_key)?,
            signing_key_id: self.key_id("identity.signing_key_id", &raw.identity.signing_key_id)?,
            local_client_ca: self.file(
                "local_clients.ca_certificate",
                &raw.local_clients.ca_certificate,
            )?,
            intake_unit: kinbridge_core::UnitName::new(
                raw.local_clients
                    .intake_unit
                    .as_deref()
                    .unwrap_or(DEFAULT_INTAKE_UNIT),
            )
            .map_err(|e| self.err("local_clients.intake_unit", e.to_string()))?,
            units: self.units(raw.local_clients.units.as_deref().unwrap_or_default())?,
            message_ttl_ms: self.seconds(
                "delivery.message_ttl_seconds",
                raw.delivery.message_ttl_seconds,
                DEFAULT_MESSAGE_TTL_MS,
                MAX_MESSAGE_LIFETIME_MS,
            )?,
            max_clock_skew_ms: self.seconds(
                "delivery.max_clock_skew_seconds",
                raw.delivery.max_clock_skew_seconds,
                DEFAULT_MAX_CLOCK_SKEW_MS,
                60 * 60 * 1000,
            )?,
            peers,
            cli_client,
            checkpoint_interval_ms: self.checkpoint_interval(raw.audit.checkpoint_interval_ms)?,
            tags: self.tags("tags", &raw.tags)?,
            linkage_keys,
            suppression_threshold: self
                .suppression_threshold(raw.reporting.suppression_threshold)?,
            console_idle_timeout_secs: self.console_idle(raw.console.idle_timeout_secs)?,
            min_free_bytes: raw
                .storage
                .min_free_bytes
                .unwrap_or(kinbridge_store::room::DEFAULT_MIN_FREE_BYTES),
            peer_rate: self.rate(
                "limits.peer_requests_per_second",
                raw.limits.peer_requests_per_second,
                raw.limits.peer_burst,
                DEFAULT_PEER_RATE,
            )?,
            client_rate: self.rate(
                "limits.client_requests_per_second",
                raw.limits.client_requests_per_second,
                raw.limits.client_burst,
                DEFAULT_CLIENT_RATE,
            )?,
            max_queued: self.max_queued(raw.limits.max_queued)?,
            delivery: self.delivery_tuning(&raw.delivery)?,
            payload_retention: self.payload_retention(raw.retention.payload_days)?,
            accepted_purposes: self.accepted_purposes(raw.policy.accepted_purposes.as_deref())?,
        })
    }

    /// `audit.checkpoint_interval_ms`: from 10 to 60000 ms, by default
    /// [`DEFAULT_CHECKPOINT_INTERVAL_MS`].
    fn checkpoint_interval(&self, given: Option<u64>) -> Result<u64, ConfigError> {
        match given {
            None => Ok(DEFAULT_CHECKPOINT_INTERVAL_MS),
            Some(ms @ 10..=60_000) => Ok(ms),
            Some(_) => Err(self.err(
                "audit.checkpoint_interval_ms",
                "a number of milliseconds from 10 to 60000",
            )),
        }
    }

    /// `console.idle_timeout_secs`: from 1 to [`MAX_CONSOLE_IDLE_SECS`], by default
    /// [`DEFAULT_CONSOLE_IDLE_SECS`].
    fn console_idle(&self, given: Option<u64>) -> Result<u64, ConfigError> {
        match given {
            None => Ok(DEFAULT_CONSOLE_IDLE_SECS),
            Some(secs @ 1..=MAX_CONSOLE_IDLE_SECS) => Ok(secs),
            Some(_) => Err(self.err(
                "console.idle_timeout_secs",
                format!("seconds from 1 to {MAX_CONSOLE_IDLE_SECS}, e.g. 900 for 15 minutes"),
            )),
        }
    }

    /// `reporting.suppression_threshold`: a count from 2 to 1000, by default
    /// [`DEFAULT_SUPPRESSION_THRESHOLD`].
    fn suppression_threshold(&self, given: Option<u64>) -> Result<u64, ConfigError> {
        match given {
            None => Ok(DEFAULT_SUPPRESSION_THRESHOLD),
            Some(n @ 2..=1000) => Ok(n),
            Some(_) => Err(self.err("reporting.suppression_threshold", "a count from 2 to 1000")),
        }
    }

    /// `delivery.retry_base_ms` (10 to 60000), `delivery.retry_max_ms` (from the base to
    /// 3600000), `delivery.batch` (1 to the default, [`kinbridge_service::delivery::BATCH`])
    /// and `delivery.call_timeout_ms` (100 to 600000).
    fn delivery_tuning(
        &self,
        raw: &RawDelivery,
    ) -> Result<kinbridge_service::delivery::Tuning, ConfigError> {
        use std::time::Duration;
        let default = kinbridge_service::delivery::Tuning::default();
        let retry_base = match raw.retry_base_ms {
            None => default.retry_base,
            Some(ms @ 10..=60_000) => Duration::from_millis(ms),
            Some(_) => {
                return Err(self.err(
                    "delivery.retry_base_ms",
                    "a number of milliseconds from 10 to 60000",
                ));
            }
        };
        let retry_max = match raw.retry_max_ms {
            None => default.retry_max.max(retry_base),
            Some(ms) if ms <= 3_600_000 && Duration::from_millis(ms) >= retry_base => {
                Duration::from_millis(ms)
            }
            Some(_) => {
                return Err(self.err(
                    "delivery.retry_max_ms",
                    "a number of milliseconds from delivery.retry_base_ms to 3600000",
                ));
            }
        };
        let batch = match raw.batch {
            None => default.batch,
            Some(n @ 1..=kinbridge_service::delivery::BATCH) => n,
            Some(_) => {
                return Err(self.err(
                    "delivery.batch",
                    format!(
                        "a number of messages from 1 to {}",
                        kinbridge_service::delivery::BATCH
                    ),
                ));
            }
        };
        let call_timeout = match raw.call_timeout_ms {
            None => default.call_timeout,
            Some(ms @ 100..=600_000) => Duration::from_millis(ms),
            Some(_) => {
                return Err(self.err(
                    "delivery.call_timeout_ms",
                    "a number of milliseconds from 100 to 600000",
                ));
            }
        };
        Ok(kinbridge_service::delivery::Tuning {
            retry_base,
            retry_max,
            batch,
            call_timeout,
        })
    }

    /// `limits.max_queued`: at least 1, by default [`DEFAULT_MAX_QUEUED`].
    fn max_queued(&self, given: Option<u64>) -> Result<u64, ConfigError> {
        match given {
            None => Ok(DEFAULT_MAX_QUEUED),
            Some(0) => Err(self.err("limits.max_queued", "a number of messages of at least 1")),
            Some(n) => Ok(n),
        }
    }

    /// `retention.payload_days`: at least 1 day; none keeps payloads until withdrawal.
    fn payload_retention(
        &self,
        given: Option<u32>,
    ) -> Result<Option<std::time::Duration>, ConfigError> {
        match given {
            None => Ok(None),
            Some(0) => Err(self.err("retention.payload_days", "a number of days of at least 1")),
            Some(days) => Ok(Some(std::time::Duration::from_secs(
                u64::from(days) * 86_400,
            ))),
        }
    }

    /// The `[[peers]]` tables: each another node, listed once, with an https endpoint (if any)
    /// and at least one signing key.
    fn peers(&self, node_id: &NodeId, raw: Vec<RawPeer>) -> Result<Vec<PeerConfig>, ConfigError> {
        let mut peers = Vec::with_capacity(raw.len());
        for (i, p) in raw.into_iter().enumerate() {
            let at = |k: &str| format!("peers[{i}].{k}");
            let peer_id = self.node_id(&at("node_id"), &p.node_id)?;
            if peer_id == *node_id {
                return Err(self.err(&at("node_id"), "a node other than this one"));
            }
            if peers.iter().any(|q: &PeerConfig| q.node_id == peer_id) {
                return Err(self.err(
                    &at("node_id"),
                    format!("a node id not already registered; '{peer_id}' appears twice"),
                ));
            }
            if let Some(endpoint) = p.endpoint.as_ref().filter(|e| !e.starts_with("https://")) {
                return Err(self.err(
                    &at("endpoint"),
                    format!("an https:// URL, not '{endpoint}'"),
                ));
            }
            if p.signing_keys.is_empty() {
                return Err(self.err(&at("signing_keys"), "at least one signing key of the peer"));
            }
            let mut signing_keys = Vec::with_capacity(p.signing_keys.len());
            for (j, k) in p.signing_keys.into_iter().enumerate() {
                let at_key = |name: &str| format!("peers[{i}].signing_keys[{j}].{name}");
                signing_keys.push(PeerKeyConfig {
                    key_id: self.key_id(&at_key("key_id"), &k.key_id)?,
                    public_key: self.file(&at_key("public_key"), &k.public_key)?,
                    not_before: self.instant(&at_key("not_before"), k.not_before.as_deref())?,
                    not_after: self.instant(&at_key("not_after"), k.not_after.as_deref())?,
                });
            }
            peers.push(PeerConfig {
                node_id: peer_id,
                endpoint: p.endpoint,
                tls_server_name: p.tls_server_name,
                ca_certificate: self.file(&at("ca_certificate"), &p.ca_certificate)?,
                tags: self.tags(&at("tags"), &p.tags)?,
                signing_keys,
            });
        }
        Ok(peers)
    }

    /// The `[[tracing.linkage_keys]]` tables: epochs from 1 up, each listed once.
    fn linkage_keys(&self, raw: &[RawLinkageKey]) -> Result<Vec<LinkageKeyConfig>, ConfigError> {
        let mut linkage_keys: Vec<LinkageKeyConfig> = Vec::new();
        for (i, k) in raw.iter().enumerate() {
            let at = |name: &str| format!("tracing.linkage_keys[{i}].{name}");
            if k.epoch == 0 || linkage_keys.iter().any(|l| l.epoch == k.epoch) {
                return Err(self.err(
                    &at("epoch"),
                    format!("an epoch from 1 up, each listed once; {} is not", k.epoch),
                ));
            }
            linkage_keys.push(LinkageKeyConfig {
                epoch: k.epoch,
                file: self.file(&at("file"), &k.file)?,
                queries_from: self.instant(&at("queries_from"), k.queries_from.as_deref())?,
            });
        }
        Ok(linkage_keys)
    }

    /// The `[[webhooks]]` tables: each named once, with a URL whose scheme its settings allow,
    /// an existing secret file, known event types and units.
    fn webhooks(&self, raw: &[RawWebhook]) -> Result<Vec<WebhookConfig>, ConfigError> {
        use kinbridge_service::webhooks::EventType;
        let mut out: Vec<WebhookConfig> = Vec::new();
        for (i, w) in raw.iter().enumerate() {
            let at = |name: &str| format!("webhooks[{i}].{name}");
            let name_ok = !w.name.is_empty()
                && w.name.len() <= 64
                && w.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok || out.iter().any(|o| o.name == w.name) {
                return Err(self.err(
                    &at("name"),
                    "a name of lower-case letters, digits and `-`, each subscription's its own",
                ));
            }
            let https = w.url.starts_with("https://");
            if !(https || (w.url.starts_with("http://") && w.insecure_plain_http)) {
                return Err(self.err(
                    &at("url"),
                    "an https:// URL (http:// only with insecure_plain_http = true, where nothing else can read the network)",
                ));
            }
            let ca_certificate = match &w.ca_certificate {
                Some(ca) => Some(self.file(&at("ca_certificate"), ca)?),
                None if https => {
                    return Err(self.err(
                        &at("ca_certificate"),
                        "the CA the receiver's certificate chains to: an https URL needs one",
                    ));
                }
                None => None,
            };
            let mut events = Vec::new();
            for e in &w.events {
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
                events.push(EventType::parse(e).ok_or_else(|| {
                    self.err(
                        &at("events"),
                        format!("event types from: {}", known.join(", ")),
                    )
                })?);
            }
            for u in &w.units {
                kinbridge_core::UnitName::new(u)
                    .map_err(|e| self.err(&at("units"), e.to_string()))?;
            }
            out.push(WebhookConfig {
                name: w.name.clone(),
                url: w.url.clone(),
                secret_file: self.file(&at("secret_file"), &w.secret_file)?,
                ca_certificate,
                events,
                units: w.units.clone(),
                max_age: std::time::Duration::from_secs(
                    w.max_age_hours.unwrap_or(72).clamp(1, 24 * 30) * 3600,
                ),
                retry_max: std::time::Duration::from_secs(
                    w.retry_max_seconds.unwrap_or(30).clamp(1, 3600),
                ),
            });
        }
        Ok(out)
    }

    /// The `[client]` table: the certificate and key the CLI presents on the local port.
    fn cli_client(&self, raw: RawClient) -> Result<ClientIdentity, ConfigError> {
        Ok(ClientIdentity {
            certificate: self.file("client.certificate", &raw.certificate)?,
            private_key: self.file("client.private_key", &raw.private_key)?,
        })
    }

    /// `policy.accepted_purposes`: purpose names; `None` if the key is absent (every purpose).
    fn accepted_purposes(
        &self,
        names: Option<&[String]>,
    ) -> Result<Option<Vec<kinbridge_proto::v1::Purpose>>, ConfigError> {
        names
            .map(|names| {
                names
                    .iter()
                    .map(|n| {
                        parse_purpose(n).ok_or_else(|| {
                            self.err(
                                "policy.accepted_purposes",
                                format!("purposes such as \"service-referral\", \"family-tracing\"; '{n}' is not one"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests;
