//! The development PKI: a CA per node, node TLS certificates, local-client certificates and
//! Ed25519 signing keys for a small federation on loopback. Every certificate carries
//! [`DEV_MARKER`]; a node refuses this material unless its config says `development = true`.
//!
//! Layout under the output directory, per node id (`ZM-DSW/`):
//! `ca.crt ca.key` (issues the node's TLS certificate), `node.crt node.key` (server and client
//! authentication; SANs `urn:kinbridge:node:ZM-DSW`, `localhost`, `127.0.0.1`),
//! `signing.key signing.pub` (Ed25519, key id `ZM-DSW-dev1`), `local-ca.crt local-ca.key` (issues
//! local-client certificates), and `clients/<role>.crt <role>.key` for each role.
//! Generation is idempotent: existing files are kept, missing ones are made.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use kinbridge_core::{KeyId, NodeId, NodeSigningKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use kinbridge_service::identity::{
    CLIENT_URI_PREFIX, DEV_MARKER, NODE_URI_PREFIX, ROLE_URI_PREFIX, TAG_URI_PREFIX,
    UNIT_URI_PREFIX,
};

/// Roles that get a development client certificate.
pub const DEV_ROLES: [&str; 4] = ["caseworker", "system", "auditor", "admin"];
/// The units of a development node (`local_clients.units`): the district offices the
/// examples and tests address referrals to.
pub const DEV_UNITS: [&str; 6] = [
    "chipata-district",
    "lusaka-district",
    "mangochi-district",
    "mchinji-district",
    "beitbridge-district",
    "harare-district",
];

/// The unit of the development caseworker: the node's intake, where referrals addressed to
/// no unit arrive.
pub const DEV_CASEWORKER_UNIT: &str = crate::config::DEFAULT_INTAKE_UNIT;

/// Text written before the PEM block of a development signing key.
pub const DEV_KEY_WARNING: &str = "# kinbridge development signing key: never use in production (made by `kinbridge dev-certs`)\n";

/// The first line of a development linkage key file; a node that is not a development node
/// refuses a key file holding it.
pub const DEV_LINKAGE_MARKER: &str =
    "# kinbridge development linkage key: never use in production (made by `kinbridge dev-certs`)";

/// The development federation's linkage key of epoch 1, shared by every development node.
pub fn dev_linkage_key(root: &Path) -> PathBuf {
    root.join("federation").join("linkage-epoch-1.key")
}

/// Why the development PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed for {what}: {source}")]
    Rcgen {
        /// What was being made.
        what: String,
        /// The error.
        source: rcgen::Error,
    },
    /// Key encoding failed.
    #[error("signing key for {0}: {1}")]
    Key(NodeId, kinbridge_core::KeyError),
}

/// Paths of one node's development material.
#[derive(Debug, Clone)]
pub struct DevNodeFiles {
    /// The node.
    pub node_id: NodeId,
    /// The node's directory.
    pub dir: PathBuf,
}

impl DevNodeFiles {
    /// Files for `node_id` under `root`.
    pub fn new(root: &Path, node_id: &NodeId) -> Self {
        Self {
            node_id: node_id.clone(),
            dir: root.join(node_id.as_str()),
        }
    }
    /// CA that issues the node's TLS certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The node's TLS certificate.
    pub fn node_cert(&self) -> PathBuf {
        self.dir.join("node.crt")
    }
    /// The node's TLS private key.
    pub fn node_key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    /// The node's Ed25519 signing key.
    pub fn signing_key(&self) -> PathBuf {
        self.dir.join("signing.key")
    }
    /// The node's Ed25519 public key.
    pub fn signing_pub(&self) -> PathBuf {
        self.dir.join("signing.pub")
    }
    /// The id of the signing key.
    pub fn signing_key_id(&self) -> KeyId {
        dev_key_id(&self.node_id)
    }
    /// CA that issues the authority's local-client certificates.
    pub fn local_ca_cert(&self) -> PathBuf {
        self.dir.join("local-ca.crt")
    }
    /// A local client's certificate.
    pub fn client_cert(&self, role: &str) -> PathBuf {
        self.dir.join("clients").join(format!("{role}.crt"))
    }
    /// A local client's private key.
    pub fn client_key(&self, role: &str) -> PathBuf {
        self.dir.join("clients").join(format!("{role}.key"))
    }
}

/// Makes whatever is missing of the development PKI for `nodes` under `root`. Returns the
/// paths of files it created.
pub fn ensure(root: &Path, nodes: &[NodeId]) -> Result<Vec<PathBuf>, DevPkiError> {
    let mut created = Vec::new();
    for node in nodes {
        ensure_node(&DevNodeFiles::new(root, node), &mut created)?;
    }
    let linkage = dev_linkage_key(root);
    if !linkage.exists() {
        if let Some(dir) = linkage.parent() {
            mkdir(dir)?;
        }
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        write_secret(
            &linkage,
            &format!("{DEV_LINKAGE_MARKER}\n{}\n", hex::encode(secret)),
        )?;
        created.push(linkage);
    }
    Ok(created)
}

fn ensure_node(files: &DevNodeFiles, created: &mut Vec<PathBuf>) -> Result<(), DevPkiError> {
    let node = &files.node_id;
    mkdir(&files.dir.join("clients"))?;
    let (ca, ca_new) = ensure_ca(&files.dir, "ca", &format!("{node} node CA"), created)?;
    if ca_new || !files.node_cert().exists() || !files.node_key().exists() {
        let mut params = leaf_params(&format!("{node} node"))?;
        params.subject_alt_names = vec![
            san_uri(&format!("{NODE_URI_PREFIX}{node}"))?,
            SanType::DnsName(
                "localhost"
                    .try_into()
                    .map_err(|e| rcgen_err("dns name", e))?,
            ),
            SanType::IpAddress(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        issue(&params, &ca, &files.node_cert(), &files.node_key(), created)?;
    }
    if !files.signing_key().exists() || !files.signing_pub().exists() {
        let key = NodeSigningKey::generate(files.signing_key_id());
        let private = key
            .to_pkcs8_pem()
            .map_err(|e| DevPkiError::Key(node.clone(), e))?;
        let public = key
            .public_key_pem()
            .map_err(|e| DevPkiError::Key(node.clone(), e))?;
        write_secret(&files.signing_key(), &format!("{DEV_KEY_WARNING}{private}"))?;
        write(&files.signing_pub(), &public)?;
        created.extend([files.signing_key(), files.signing_pub()]);
    }
    let (local_ca, local_new) = ensure_ca(
        &files.dir,
        "local-ca",
        &format!("{node} local clients CA"),
        created,
    )?;
    for role in DEV_ROLES {
        // A certificate from an older release that this one no longer reads as a local client
        // (a caseworker's without a unit) is made again.
        let outdated = || {
            kinbridge_grpc::tls::load_certs(&files.client_cert(role))
                .ok()
                .and_then(|certs| certs.into_iter().next())
                .is_none_or(|leaf| kinbridge_service::identity::local_client_of(&leaf).is_err())
        };
        if local_new
            || !files.client_cert(role).exists()
            || !files.client_key(role).exists()
            || outdated()
        {
            let mut params = leaf_params(&format!("{node} {role}"))?;
            params.subject_alt_names = vec![
                san_uri(&format!("{CLIENT_URI_PREFIX}{role}-1"))?,
                san_uri(&format!("{ROLE_URI_PREFIX}{role}"))?,
            ];
            if role == "caseworker" {
                params
                    .subject_alt_names
                    .push(san_uri(&format!("{UNIT_URI_PREFIX}{DEV_CASEWORKER_UNIT}"))?);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            issue(
                &params,
                &local_ca,
                &files.client_cert(role),
                &files.client_key(role),
                created,
            )?;
        }
    }
    Ok(())
}

/// Loads the CA `name` from `dir`, or makes it. Returns it as an issuer, and whether it is new.
fn ensure_ca(
    dir: &Path,
    name: &str,
    common_name: &str,
    created: &mut Vec<PathBuf>,
) -> Result<(Issuer<'static, KeyPair>, bool), DevPkiError> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    if cert_path.exists() && key_path.exists() {
        let key_pem = read(&key_path)?;
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| rcgen_err(common_name, e))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| rcgen_err(common_name, e))?;
        return Ok((issuer, false));
    }
    let key = KeyPair::generate().map_err(|e| rcgen_err(common_name, e))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, 3650);
    let cert = params
        .self_signed(&key)
        .map_err(|e| rcgen_err(common_name, e))?;
    write(&cert_path, &cert.pem())?;
    write_secret(&key_path, &key.serialize_pem())?;
    created.extend([cert_path, key_path]);
    Ok((Issuer::new(params, key), true))
}

fn leaf_params(common_name: &str) -> Result<CertificateParams, DevPkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, 825);
    Ok(params)
}

fn issue(
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    cert_path: &Path,
    key_path: &Path,
    created: &mut Vec<PathBuf>,
) -> Result<(), DevPkiError> {
    let what = cert_path.display().to_string();
    let key = KeyPair::generate().map_err(|e| rcgen_err(&what, e))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| rcgen_err(&what, e))?;
    write(cert_path, &cert.pem())?;
    write_secret(key_path, &key.serialize_pem())?;
    created.extend([cert_path.to_path_buf(), key_path.to_path_buf()]);
    Ok(())
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, DEV_MARKER);
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

fn san_uri(uri: &str) -> Result<SanType, DevPkiError> {
    Ok(SanType::URI(uri.try_into().map_err(|e| rcgen_err(uri, e))?))
}

fn rcgen_err(what: &str, source: rcgen::Error) -> DevPkiError {
    DevPkiError::Rcgen {
        what: what.to_owned(),
        source,
    }
}

fn mkdir(path: &Path) -> Result<(), DevPkiError> {
    fs::create_dir_all(path).map_err(|source| DevPkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String, DevPkiError> {
    fs::read_to_string(path).map_err(|source| DevPkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, contents: &str) -> Result<(), DevPkiError> {
    fs::write(path, contents).map_err(|source| DevPkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a private key readable by its owner only.
fn write_secret(path: &Path, contents: &str) -> Result<(), DevPkiError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| DevPkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // A file that existed keeps its mode through `truncate`: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

/// The development federation: Zambia, Malawi and Zimbabwe's social-welfare authorities.
pub const DEV_FEDERATION: [&str; 3] = ["ZM-DSW", "MW-DSW", "ZW-DSD"];

/// The development federation's node ids.
pub fn dev_federation() -> Vec<NodeId> {
    DEV_FEDERATION
        .iter()
        .filter_map(|n| NodeId::new(n).ok())
        .collect()
}

/// A development node's config built in code from the PKI under `root`: `me` on the given
/// addresses, storing in `data_dir`, with each of `peers` registered at its endpoint (if any).
/// The demo and the end-to-end tests use it; operators write TOML (see `config/`).
pub fn node_config(
    root: &Path,
    me: &NodeId,
    peers: &[(NodeId, Option<String>)],
    data_dir: &Path,
    peer_listen: std::net::SocketAddr,
    local_listen: std::net::SocketAddr,
) -> crate::config::NodeConfig {
    use crate::config::{
        ClientIdentity, DEFAULT_MESSAGE_TTL_MS, NodeConfig, PeerConfig, PeerKeyConfig,
    };
    let own = DevNodeFiles::new(root, me);
    let peers = peers
        .iter()
        .map(|(node, endpoint)| {
            let files = DevNodeFiles::new(root, node);
            PeerConfig {
                node_id: node.clone(),
                endpoint: endpoint.clone(),
                tls_server_name: Some("localhost".into()),
                ca_certificate: files.ca_cert(),
                tags: vec![kinbridge_core::firewall::Tag::ChildProtection],
                signing_keys: vec![PeerKeyConfig {
                    key_id: dev_key_id(node),
                    public_key: files.signing_pub(),
                    not_before: None,
                    not_after: None,
                }],
            }
        })
        .collect();
    NodeConfig {
        source: PathBuf::from(format!("(development config of {me})")),
        node_id: me.clone(),
        development: true,
        data_dir: data_dir.to_path_buf(),
        peer_listen,
        local_listen,
        tls_certificate: own.node_cert(),
        tls_private_key: own.node_key(),
        tls_ca_certificate: own.ca_cert(),
        signing_key: own.signing_key(),
        signing_key_id: dev_key_id(me),
        local_client_ca: own.local_ca_cert(),
        intake_unit: crate::config::default_intake_unit(),
        units: DEV_UNITS
            .iter()
            .filter_map(|u| kinbridge_core::UnitName::new(u).ok())
            .collect(),
        metrics_listen: Some(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            0,
        ))),
        metrics_insecure_plain_http: false,
        webhooks: Vec::new(),
        http_listen: Some(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            0,
        ))),
        message_ttl_ms: DEFAULT_MESSAGE_TTL_MS,
        max_clock_skew_ms: kinbridge_core::limits::DEFAULT_MAX_CLOCK_SKEW_MS,
        peers,
        cli_client: Some(ClientIdentity {
            certificate: own.client_cert("caseworker"),
            private_key: own.client_key("caseworker"),
        }),
        checkpoint_interval_ms: crate::config::DEFAULT_CHECKPOINT_INTERVAL_MS,
        tags: vec![kinbridge_core::firewall::Tag::ChildProtection],
        accepted_purposes: None,
        payload_retention: None,
        peer_rate: crate::config::DEFAULT_PEER_RATE,
        client_rate: crate::config::DEFAULT_CLIENT_RATE,
        max_queued: crate::config::DEFAULT_MAX_QUEUED,
        delivery: kinbridge_service::delivery::Tuning::default(),
        linkage_keys: vec![crate::config::LinkageKeyConfig {
            epoch: 1,
            file: dev_linkage_key(root),
            queries_from: None,
        }],
        suppression_threshold: crate::config::DEFAULT_SUPPRESSION_THRESHOLD,
        console_idle_timeout_secs: crate::config::DEFAULT_CONSOLE_IDLE_SECS,
        min_free_bytes: kinbridge_store::room::DEFAULT_MIN_FREE_BYTES,
    }
}

/// The TOML config of development node `me` of the PKI at `pki`, listening on 127.0.0.1:0
/// (peer, local and metrics ports), with `peers` as (node id, endpoint), and the node's
/// caseworker certificate as the CLI's `[client]`: what tests and benchmarks give a
/// `kinbridge node` process.
pub fn config_toml(
    pki: &Path,
    me: &NodeId,
    data_dir: &Path,
    peers: &[(NodeId, Option<String>)],
) -> String {
    let f = DevNodeFiles::new(pki, me);
    let mut toml = format!(
        "node_id = \"{me}\"\ndevelopment = true\ndata_dir = \"{}\"\n\n[listen]\npeer = \"127.0.0.1:0\"\nlocal = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\n\
         [identity]\ncertificate = \"{}\"\nprivate_key = \"{}\"\nca_certificate = \"{}\"\nsigning_key = \"{}\"\nsigning_key_id = \"{}\"\n\n\
         [local_clients]\nca_certificate = \"{}\"\n\n[client]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        data_dir.display(),
        f.node_cert().display(),
        f.node_key().display(),
        f.ca_cert().display(),
        f.signing_key().display(),
        f.signing_key_id(),
        f.local_ca_cert().display(),
        f.client_cert("caseworker").display(),
        f.client_key("caseworker").display(),
    );
    toml.push_str(&format!(
        "\n[tracing]\nlinkage_keys = [{{ epoch = 1, file = \"{}\" }}]\n",
        dev_linkage_key(pki).display()
    ));
    for (peer, endpoint) in peers {
        let p = DevNodeFiles::new(pki, peer);
        toml.push_str(&format!("\n[[peers]]\nnode_id = \"{peer}\"\n"));
        if let Some(e) = endpoint {
            toml.push_str(&format!(
                "endpoint = \"{e}\"\ntls_server_name = \"localhost\"\n"
            ));
        }
        toml.push_str(&format!(
            "ca_certificate = \"{}\"\ntags = [\"child-protection\"]\n\n[[peers.signing_keys]]\nkey_id = \"{}\"\npublic_key = \"{}\"\n",
            p.ca_cert().display(),
            p.signing_key_id(),
            p.signing_pub().display()
        ));
    }
    toml
}

/// The id of a development node's signing key.
pub fn dev_key_id(node: &NodeId) -> KeyId {
    // A node id followed by "-dev1" is always a valid key id.
    KeyId::new(&format!("{node}-dev1"))
        .unwrap_or_else(|_| unreachable!("node ids make valid key ids"))
}

/// Issues, from the local CA of `node` under `root`, a local-client certificate for `name`
/// with `role`, `unit` and `tags` (e.g. `immigration-enforcement`), written to `cert_path`
/// and `key_path`. Tests use it for clients the standard development set does not have.
#[allow(clippy::too_many_arguments)]
pub fn issue_local_client(
    root: &Path,
    node: &NodeId,
    name: &str,
    role: &str,
    unit: Option<&str>,
    tags: &[&str],
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), DevPkiError> {
    let files = DevNodeFiles::new(root, node);
    let mut created = Vec::new();
    let (ca, _) = ensure_ca(
        &files.dir,
        "local-ca",
        &format!("{node} local clients CA"),
        &mut created,
    )?;
    let mut params = leaf_params(&format!("{node} {name}"))?;
    params.subject_alt_names = vec![
        san_uri(&format!("{CLIENT_URI_PREFIX}{name}"))?,
        san_uri(&format!("{ROLE_URI_PREFIX}{role}"))?,
    ];
    for tag in tags {
        params
            .subject_alt_names
            .push(san_uri(&format!("{TAG_URI_PREFIX}{tag}"))?);
    }
    if let Some(unit) = unit {
        params
            .subject_alt_names
            .push(san_uri(&format!("{UNIT_URI_PREFIX}{unit}"))?);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(&params, &ca, cert_path, key_path, &mut created)
}

/// Issues, from the node CA of `issuer_node` under `root`, a node certificate naming `named`,
/// written to `cert_path` and `key_path`. Tests use it to forge identities: a certificate
/// naming an unregistered node, or one country's CA naming another country's node.
pub fn issue_node_certificate(
    root: &Path,
    issuer_node: &NodeId,
    named: &str,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), DevPkiError> {
    let files = DevNodeFiles::new(root, issuer_node);
    let mut created = Vec::new();
    let (ca, _) = ensure_ca(
        &files.dir,
        "ca",
        &format!("{issuer_node} node CA"),
        &mut created,
    )?;
    let mut params = leaf_params(&format!("{named} node"))?;
    params.subject_alt_names = vec![
        san_uri(&format!("{NODE_URI_PREFIX}{named}"))?,
        SanType::DnsName(
            "localhost"
                .try_into()
                .map_err(|e| rcgen_err("dns name", e))?,
        ),
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    issue(&params, &ca, cert_path, key_path, &mut created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outdated_client_certificate_is_made_again() {
        let dir = tempfile::tempdir().expect("dir");
        let node = NodeId::new("ZM-DSW").expect("node");
        ensure(dir.path(), std::slice::from_ref(&node)).expect("pki");
        let files = DevNodeFiles::new(dir.path(), &node);
        // A caseworker certificate as an older release made it: no unit.
        issue_local_client(
            dir.path(),
            &node,
            "caseworker-1",
            "caseworker",
            None,
            &[],
            &files.client_cert("caseworker"),
            &files.client_key("caseworker"),
        )
        .expect("issue");
        let read = || {
            let certs =
                kinbridge_grpc::tls::load_certs(&files.client_cert("caseworker")).expect("cert");
            kinbridge_service::identity::local_client_of(&certs[0])
        };
        assert!(read().is_err());
        let made = ensure(dir.path(), std::slice::from_ref(&node)).expect("pki");
        assert_eq!(made.len(), 2, "{made:?}");
        let client = read().expect("a valid caseworker certificate");
        assert_eq!(client.unit_str(), DEV_CASEWORKER_UNIT);
        assert!(ensure(dir.path(), &[node]).expect("pki").is_empty());
    }
}
