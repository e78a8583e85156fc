//! Test harness: a federation of real nodes on 127.0.0.1:0 with a freshly made development
//! PKI, real mutual TLS and real sled stores in a temporary directory; and helpers to run
//! the `kinbridge` binary as a real process.

#![allow(dead_code)]

pub mod proxy;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kinbridge_core::envelope::EnvelopeDraft;
use kinbridge_core::{KeyId, MessageId, NodeId, NodeSigningKey, UnixMillis};
use kinbridge_node::devpki::{self, DevNodeFiles};
use kinbridge_node::server::{Listeners, RunningNode, spawn};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use kinbridge_proto::v1::peer_service_client::PeerServiceClient;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Identity};

/// The Python interpreter with the packages of tests/interop/requirements.txt (clients that
/// are not ours): `KINBRIDGE_PYTHON`, else `.venv-interop/` at the repository root, else
/// `python3`.
pub fn interop_python() -> PathBuf {
    if let Some(p) = std::env::var_os("KINBRIDGE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-interop/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Whether a test that needs a tool that is not ours (Python's grpcio or cryptography,
/// openssl) must fail rather than skip when the tool is missing: `KINBRIDGE_REQUIRE_INTEROP=1`,
/// as CI sets.
pub fn interop_required() -> bool {
    std::env::var("KINBRIDGE_REQUIRE_INTEROP").is_ok_and(|v| v == "1")
}

/// Bound on any wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn node_id(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

/// A federation of in-process nodes, every node registering every other.
pub struct Federation {
    pub dir: tempfile::TempDir,
    pub pki: PathBuf,
    pub nodes: Vec<RunningNode>,
}

impl Federation {
    pub async fn start(names: &[&str]) -> Self {
        Self::start_with(names, |_| {}).await
    }

    /// A federation whose node configs `tweak` adjusts before the nodes start (tags, policy).
    pub async fn start_with(
        names: &[&str],
        tweak: impl Fn(&mut kinbridge_node::NodeConfig),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("certs-dev");
        let ids: Vec<NodeId> = names.iter().map(|n| node_id(n)).collect();
        devpki::ensure(&pki, &ids).expect("dev pki");
        let mut bound = Vec::new();
        for id in &ids {
            let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let local = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            bound.push((id.clone(), peer, local));
        }
        let endpoints: Vec<(NodeId, SocketAddr)> = bound
            .iter()
            .map(|(n, p, _)| (n.clone(), p.local_addr().expect("addr")))
            .collect();
        let mut nodes = Vec::new();
        for (id, peer, local) in bound {
            let peers: Vec<_> = endpoints
                .iter()
                .filter(|(n, _)| n != &id)
                .map(|(n, a)| (n.clone(), Some(format!("https://{a}"))))
                .collect();
            let config = devpki::node_config(
                &pki,
                &id,
                &peers,
                &dir.path().join("data").join(id.as_str()),
                peer.local_addr().expect("addr"),
                local.local_addr().expect("addr"),
            );
            let mut config = config;
            tweak(&mut config);
            let metrics = Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind metrics"),
            );
            let http = Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind http"),
            );
            let listeners = Listeners {
                peer,
                local,
                metrics,
                http,
            };
            nodes.push(spawn(&config, listeners).expect("node starts"));
        }
        Self { dir, pki, nodes }
    }

    pub fn node(&self, name: &str) -> &RunningNode {
        self.nodes
            .iter()
            .find(|n| n.node_id.as_str() == name)
            .expect("node in federation")
    }

    /// A new certificate of `node`'s local CA for client `client` with `role`, `unit` and
    /// `tags`; answers its certificate and key files.
    pub fn issue_client(
        &self,
        node: &str,
        client: &str,
        role: &str,
        unit: Option<&str>,
        tags: &[&str],
    ) -> (PathBuf, PathBuf) {
        let dir = self.dir.path().join("issued-clients").join(node);
        std::fs::create_dir_all(&dir).expect("client dir");
        let (cert, key) = (
            dir.join(format!("{client}.crt")),
            dir.join(format!("{client}.key")),
        );
        devpki::issue_local_client(
            &self.pki,
            &node_id(node),
            client,
            role,
            unit,
            tags,
            &cert,
            &key,
        )
        .expect("issue a client certificate");
        (cert, key)
    }

    pub fn files(&self, name: &str) -> DevNodeFiles {
        DevNodeFiles::new(&self.pki, &node_id(name))
    }

    /// A local-service client of `name` with the development certificate of `role`.
    pub fn local(&self, name: &str, role: &str) -> LocalServiceClient<Channel> {
        let files = self.files(name);
        kinbridge_grpc::client::local_client(
            &self.node(name).local_addr.to_string(),
            &files.ca_cert(),
            &files.client_cert(role),
            &files.client_key(role),
        )
        .expect("local client")
    }

    /// A channel to `name`'s local port with the development certificate of `role`.
    pub fn channel(&self, name: &str, role: &str) -> Channel {
        let files = self.files(name);
        kinbridge_grpc::client::local_channel(
            &self.node(name).local_addr.to_string(),
            &files.ca_cert(),
            &files.client_cert(role),
            &files.client_key(role),
        )
        .expect("local channel")
    }

    /// A channel to `name`'s local port with a new certificate from its local CA, for client
    /// `client` with `role` in `unit`.
    pub fn channel_as(&self, name: &str, client: &str, role: &str, unit: Option<&str>) -> Channel {
        let dir = self.dir.path().join("clients").join(name);
        std::fs::create_dir_all(&dir).expect("client dir");
        let (cert, key) = (
            dir.join(format!("{client}.crt")),
            dir.join(format!("{client}.key")),
        );
        devpki::issue_local_client(
            &self.pki,
            &node_id(name),
            client,
            role,
            unit,
            &[],
            &cert,
            &key,
        )
        .expect("issue client certificate");
        kinbridge_grpc::client::local_channel(
            &self.node(name).local_addr.to_string(),
            &self.files(name).ca_cert(),
            &cert,
            &key,
        )
        .expect("local channel")
    }

    /// A peer-service client of `target` presenting the certificate `cert`/`key`.
    pub fn peer_client_with(
        &self,
        target: &str,
        cert: &Path,
        key: &Path,
    ) -> PeerServiceClient<Channel> {
        let identity = Identity::from_pem(
            std::fs::read(cert).expect("cert"),
            std::fs::read(key).expect("key"),
        );
        let ca = std::fs::read(self.files(target).ca_cert()).expect("ca");
        let channel = kinbridge_grpc::peer_client::peer_channel(
            &format!("https://{}", self.node(target).peer_addr),
            Some("localhost"),
            &ca,
            &identity,
        )
        .expect("channel");
        PeerServiceClient::new(channel)
    }

    /// A peer-service client of `target` presenting `sender`'s own node certificate.
    pub fn peer_client_as(&self, target: &str, sender: &str) -> PeerServiceClient<Channel> {
        let files = self.files(sender);
        self.peer_client_with(target, &files.node_cert(), &files.node_key())
    }

    /// `name`'s development signing key.
    pub fn signing_key(&self, name: &str) -> NodeSigningKey {
        let files = self.files(name);
        let pem = std::fs::read_to_string(files.signing_key()).expect("key file");
        NodeSigningKey::from_pkcs8_pem(files.signing_key_id(), &pem).expect("key")
    }

    /// `GET path` on `name`'s metrics listener over mutual TLS with the development
    /// certificate of `role`, as Prometheus scrapes: the status code and body.
    pub async fn scrape(
        &self,
        name: &str,
        role: &str,
        path: &str,
    ) -> Result<(u16, String), String> {
        let files = self.files(name);
        let addr = self.node(name).metrics_addr.expect("metrics listener");
        kinbridge_node::metrics::scrape(
            addr,
            &files.ca_cert(),
            &files.client_cert(role),
            &files.client_key(role),
            path,
        )
        .await
    }

    /// `kinbridge_refusals_total{side, reason}` at `name`'s metrics listener (0 if the series
    /// is absent), scraped over mutual TLS as an auditor.
    pub async fn refusals_metric(&self, name: &str, side: &str, reason: &str) -> f64 {
        let (code, body) = tokio::time::timeout(WAIT, self.scrape(name, "auditor", "/metrics"))
            .await
            .expect("metrics in time")
            .expect("scrape");
        assert_eq!(code, 200, "{body}");
        let series = format!("kinbridge_refusals_total{{side=\"{side}\",reason=\"{reason}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0.0, |v| v.trim().parse().expect("a number"))
    }

    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A fictional referral holding two categories.
pub fn sample_referral() -> pb::ReferralPayload {
    pb::ReferralPayload {
        case_reference: "TEST-CASE-1".into(),
        requested_services: vec!["interim-care".into()],
        identity: Some(pb::IdentityData {
            given_names: vec!["Test".into()],
            family_names: vec!["Child".into()],
            estimated_birth_year: 2014,
            ..Default::default()
        }),
        protection_concerns: Some(pb::ProtectionConcerns {
            migratory_status: pb::MigratoryStatus::Unaccompanied as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A guardian's consent to a service referral to `to` (and onward to `onward`), of the
/// identity and protection-concerns categories, valid for a day either side of now.
pub fn consent_scope(to: &str, onward: &[&str]) -> pb::ConsentScope {
    let now = UnixMillis::now();
    pb::ConsentScope {
        consent_id: "CONSENT-1".into(),
        given_by: pb::ConsentGiver::Guardian as i32,
        child_views_recorded: true,
        purposes: vec![pb::Purpose::ServiceReferral as i32],
        categories: vec![
            pb::DataCategory::Identity as i32,
            pb::DataCategory::ProtectionConcerns as i32,
        ],
        recipients: vec![to.into()],
        onward_recipients: onward.iter().map(|n| (*n).to_owned()).collect(),
        valid_from_ms: now.plus_ms(-86_400_000).0,
        expires_at_ms: now.plus_ms(86_400_000).0,
        ..Default::default()
    }
}

pub fn submit_request(to: &str) -> pb::SubmitReferralRequest {
    pb::SubmitReferralRequest {
        kind: pb::MessageKind::Referral as i32,
        recipient: to.into(),
        purpose: pb::Purpose::ServiceReferral as i32,
        consent: Some(consent_scope(to, &[])),
        correlation_id: "TEST-CASE-1".into(),
        ttl_seconds: 3600,
        referral: Some(sample_referral()),
        recipient_unit: String::new(),
    }
}

/// A draft of a referral envelope from `from` to `to`, created now, valid an hour.
pub fn draft(from: &str, to: &str) -> EnvelopeDraft {
    let now = UnixMillis::now();
    EnvelopeDraft {
        message_id: MessageId::random(),
        kind: pb::MessageKind::Referral,
        sender: node_id(from),
        recipient: node_id(to),
        created_at: now,
        expires_at: now.plus_ms(3_600_000),
        purpose: pb::Purpose::ServiceReferral,
        consent_id: "CONSENT-1".into(),
        correlation_id: "corr-0001".into(),
        data_categories: vec![
            pb::DataCategory::Identity,
            pb::DataCategory::ProtectionConcerns,
        ],
        consent: Some(consent_scope(to, &[])),
        custody: vec![],
        recipient_unit: None,
    }
}

pub fn payload() -> Vec<u8> {
    prost::Message::encode_to_vec(&sample_referral())
}

pub fn key_id(s: &str) -> KeyId {
    KeyId::new(s).expect("key id")
}

/// Waits (bounded) for a submitted message to leave the queued state.
pub async fn wait_delivery(
    client: &mut LocalServiceClient<Channel>,
    id: &str,
) -> pb::GetDeliveryResponse {
    client
        .get_delivery(pb::GetDeliveryRequest {
            message_id: id.into(),
            wait_ms: WAIT.as_millis() as u32,
        })
        .await
        .expect("get delivery")
        .into_inner()
}

/// The status code and kinbridge reason code of a refusal.
pub fn refusal(status: &tonic::Status) -> (tonic::Code, String) {
    (
        status.code(),
        kinbridge_grpc::status::refusal_code(status)
            .unwrap_or("")
            .to_owned(),
    )
}

/// A `kinbridge` command.
/// Runs a command to completion with its output captured, bounded by `WAIT` (killed and the
/// test failed past it).
pub fn run_bounded(mut cmd: Command) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(output) => output.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            panic!("command did not finish within {WAIT:?}");
        }
    }
}

/// A command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn kinbridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kinbridge"))
}

/// A `kinbridge node` process, killed when dropped.
pub struct NodeProcess {
    pub child: Option<Child>,
    pub peer_addr: SocketAddr,
    pub local_addr: SocketAddr,
    /// `https://host:port/metrics` (`http://` under `insecure_plain_http`), if the config has
    /// a metrics listener.
    pub metrics_url: Option<String>,
    /// The rest of what the node printed on stdout after its ready line.
    pub stdout: Option<mpsc::Receiver<String>>,
}

impl NodeProcess {
    /// Stands for no process, while one is being replaced.
    pub fn placeholder() -> Self {
        let none: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        Self {
            child: None,
            peer_addr: none,
            local_addr: none,
            metrics_url: None,
            stdout: None,
        }
    }

    /// Starts `kinbridge node --config config` and waits (bounded) for its ready line. The
    /// node's log is appended to the config's path with the extension `log`.
    pub fn start(config: &Path) -> Self {
        Self::start_args(config, &[])
    }

    /// [`Self::start`] with global `args` before the command (e.g. `--log-json`).
    pub fn start_args(config: &Path, args: &[&str]) -> Self {
        Self::start_full(config, args, "info", None)
    }

    /// [`Self::start_args`] with `RUST_LOG=rust_log`, and run by `sh` with `umask` first if
    /// given (as a service manager that does not set one would start it).
    pub fn start_full(config: &Path, args: &[&str], rust_log: &str, umask: Option<&str>) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_extension("log"))
            .expect("node log file");
        let mut command = match umask {
            Some(mask) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {mask} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_kinbridge"));
                sh
            }
            None => kinbridge(),
        };
        let mut child = command
            .args(args)
            .args(["node", "--config"])
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn kinbridge node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(WAIT)
            .expect("node printed its ready line in time");
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in '{line}'"))
                .parse()
                .expect("address")
        };
        let (peer_addr, local_addr) = (addr("peer="), addr("local="));
        let metrics_url = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("metrics="))
            .map(str::to_owned);
        Self {
            child: Some(child),
            peer_addr,
            local_addr,
            metrics_url,
            stdout: Some(rx),
        }
    }

    /// SIGTERM, and wait (bounded) for the process to exit; returns its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running node");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                panic!("the node did not exit within {WAIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TOML config for development node `me` of the PKI at `pki`, on 127.0.0.1:0, with
/// `peers` as (node id, endpoint).
pub fn dev_config_toml(
    pki: &Path,
    me: &str,
    data_dir: &Path,
    peers: &[(&str, Option<String>)],
) -> String {
    let peers: Vec<_> = peers
        .iter()
        .map(|(peer, endpoint)| (node_id(peer), endpoint.clone()))
        .collect();
    devpki::config_toml(pki, &node_id(me), data_dir, &peers)
}

/// `toml` with its listeners on fixed ports (for restarting a node where its peers expect it).
pub fn with_ports(toml: &str, peer: u16, local: u16) -> String {
    toml.replacen(
        "peer = \"127.0.0.1:0\"",
        &format!("peer = \"127.0.0.1:{peer}\""),
        1,
    )
    .replacen(
        "local = \"127.0.0.1:0\"",
        &format!("local = \"127.0.0.1:{local}\""),
        1,
    )
}

/// Exports the audit log of the node at `local_addr` as its auditor, and verifies it offline
/// with the node's public key. Returns the verified export with its entries.
pub async fn export_and_verify(
    pki: &Path,
    node: &str,
    local_addr: SocketAddr,
    out: &Path,
) -> kinbridge_audit::export::VerifiedExport {
    export_log_to(pki, node, local_addr, out).await;
    let files = DevNodeFiles::new(pki, &node_id(node));
    let pem = std::fs::read_to_string(files.signing_pub()).expect("pub");
    let key =
        kinbridge_core::PeerKey::from_public_key_pem(files.signing_key_id(), &pem).expect("key");
    verify_export_file(node, out, &[*key.verifying_key()])
}

/// Exports and verifies offline the logs of `sender` and `receiver` (each `(node, local
/// address)`) into `dir` as `zm.jsonl`-style files (the node id's first part, lower case), and
/// reconciles them. The one difference allowed is a delivery the receiver's log lacks for a
/// message the sender never acknowledged (queued by a sender killed mid-submission and not yet
/// delivered); every message in `acknowledged` must match. `context` (a seed to replay) is
/// added to a failure.
pub async fn verify_and_reconcile(
    pki: &Path,
    dir: &Path,
    sender: (&str, SocketAddr),
    receiver: (&str, SocketAddr),
    acknowledged: &[String],
    context: &str,
) {
    use kinbridge_audit::reconcile::{Mismatch, reconcile};
    let file = |node: &str| {
        let short = node.split('-').next().unwrap_or(node).to_lowercase();
        dir.join(format!("{short}.jsonl"))
    };
    let ours = export_and_verify(pki, sender.0, sender.1, &file(sender.0)).await;
    let theirs = export_and_verify(pki, receiver.0, receiver.1, &file(receiver.0)).await;
    let report = reconcile(sender.0, &ours.entries, receiver.0, &theirs.entries);
    for m in &report.mismatches {
        match m {
            Mismatch::MissingDelivery { message_id, .. } if !acknowledged.contains(message_id) => {}
            other => panic!("the logs do not reconcile: {other} {context}"),
        }
    }
    assert!(
        report.matched >= acknowledged.len(),
        "{} of {} acknowledged messages matched in both logs {context}",
        report.matched,
        acknowledged.len()
    );
}

/// Exports the audit log of the node at `local_addr` as its auditor to `out`.
pub async fn export_log_to(pki: &Path, node: &str, local_addr: SocketAddr, out: &Path) {
    let files = DevNodeFiles::new(pki, &node_id(node));
    let mut client = kinbridge_grpc::client::audit_client(
        &local_addr.to_string(),
        &files.ca_cert(),
        &files.client_cert("auditor"),
        &files.client_key("auditor"),
    )
    .expect("audit client");
    let file = std::io::BufWriter::new(std::fs::File::create(out).expect("create export"));
    kinbridge_grpc::client::export_log(&mut client, node, file)
        .await
        .expect("export");
}

/// Verifies the export of `node`'s log at `out` offline with `keys`.
pub fn verify_export_file(
    node: &str,
    out: &Path,
    keys: &[ed25519_dalek::VerifyingKey],
) -> kinbridge_audit::export::VerifiedExport {
    let note_keys: Vec<_> = keys
        .iter()
        .map(|key| kinbridge_audit::NoteKey {
            name: kinbridge_audit::checkpoint::origin_of(&node_id(node)),
            key: *key,
        })
        .collect();
    let reader = std::io::BufReader::new(std::fs::File::open(out).expect("open export"));
    kinbridge_audit::export::verify_export(reader, &note_keys, true)
        .unwrap_or_else(|e| panic!("{node}'s export does not verify: {e}"))
}

/// The decoded entries of a verified export.
pub fn entries(export: &kinbridge_audit::export::VerifiedExport) -> Vec<pb::AuditEntry> {
    export
        .entries
        .iter()
        .map(|e| kinbridge_audit::entry::decode(e).expect("entry"))
        .collect()
}

/// How many entries have `event`.
pub fn count(entries: &[pb::AuditEntry], event: pb::AuditEvent) -> usize {
    entries.iter().filter(|e| e.event == event as i32).count()
}

/// A local-service client of the node `node` at `addr`, with the development certificate of
/// `role` from the PKI at `pki`.
pub fn client_for(
    pki: &Path,
    node: &str,
    role: &str,
    addr: SocketAddr,
) -> LocalServiceClient<Channel> {
    let files = DevNodeFiles::new(pki, &node_id(node));
    kinbridge_grpc::client::local_client(
        &addr.to_string(),
        &files.ca_cert(),
        &files.client_cert(role),
        &files.client_key(role),
    )
    .expect("local client")
}

/// Zambia sending to Malawi, both as real `kinbridge node` processes with a fresh development
/// PKI under `root`. Ports are chosen by the OS at first start and then pinned in the configs,
/// so either node can be killed and restarted where the other expects it.
pub struct TwoNodes {
    pub pki: PathBuf,
    pub zm_config: PathBuf,
    pub mw_config: PathBuf,
    pub zambia: NodeProcess,
    pub malawi: NodeProcess,
}

impl TwoNodes {
    pub fn start(root: &Path) -> Self {
        let pki = root.join("certs-dev");
        devpki::ensure(&pki, &[node_id("ZM-DSW"), node_id("MW-DSW")]).expect("pki");
        // Malawi only receives here, so Zambia needs no endpoint in its registry.
        let mw_toml = dev_config_toml(&pki, "MW-DSW", &root.join("mw"), &[("ZM-DSW", None)]);
        let mw_config = root.join("malawi.toml");
        std::fs::write(&mw_config, &mw_toml).expect("write");
        let malawi = NodeProcess::start(&mw_config);
        std::fs::write(
            &mw_config,
            with_ports(&mw_toml, malawi.peer_addr.port(), malawi.local_addr.port()),
        )
        .expect("pin");
        let endpoint = format!("https://{}", malawi.peer_addr);
        let zm_toml = dev_config_toml(
            &pki,
            "ZM-DSW",
            &root.join("zm"),
            &[("MW-DSW", Some(endpoint))],
        );
        let zm_config = root.join("zambia.toml");
        std::fs::write(&zm_config, &zm_toml).expect("write");
        let zambia = NodeProcess::start(&zm_config);
        std::fs::write(
            &zm_config,
            with_ports(&zm_toml, zambia.peer_addr.port(), zambia.local_addr.port()),
        )
        .expect("pin");
        Self {
            pki,
            zm_config,
            mw_config,
            zambia,
            malawi,
        }
    }

    /// SIGKILLs Malawi and starts it again on the same store and ports.
    pub fn restart_malawi(&mut self) {
        self.kill_malawi();
        self.start_malawi();
    }

    /// SIGKILLs Malawi and waits for it to be gone.
    pub fn kill_malawi(&mut self) {
        std::mem::replace(&mut self.malawi, NodeProcess::placeholder()).kill();
    }

    /// Starts Malawi on its pinned ports.
    pub fn start_malawi(&mut self) {
        self.malawi = NodeProcess::start(&self.mw_config);
    }

    /// SIGKILLs Zambia and starts it again on the same store and ports.
    pub fn restart_zambia(&mut self) {
        let old = std::mem::replace(&mut self.zambia, NodeProcess::placeholder());
        old.kill();
        self.zambia = NodeProcess::start(&self.zm_config);
    }

    /// A local-service client of `node` (`ZM-DSW` or `MW-DSW`) as `role`.
    pub fn client(&self, node: &str, role: &str) -> LocalServiceClient<Channel> {
        let addr = if node == "ZM-DSW" {
            self.zambia.local_addr
        } else {
            self.malawi.local_addr
        };
        client_for(&self.pki, node, role, addr)
    }
}

/// Submits `n` referrals for `to` one after the other, waiting for each to be delivered.
/// Returns each message id with its delivery (holding the recipient's receipt).
pub async fn deliver_referrals(
    client: &mut LocalServiceClient<Channel>,
    to: &str,
    n: usize,
) -> Vec<(String, pb::GetDeliveryResponse)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(submit_until_delivered(client, submit_request(to)).await);
    }
    out
}

/// The unacknowledged items of an inbox (first page).
pub async fn open_inbox(client: &mut LocalServiceClient<Channel>) -> Vec<pb::InboxItem> {
    client
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .expect("list inbox")
        .into_inner()
        .items
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}

/// Submits `request` and waits (bounded) until it is delivered; returns its message id.
pub async fn submit_delivered(
    client: &mut LocalServiceClient<Channel>,
    request: pb::SubmitReferralRequest,
) -> String {
    submit_until_delivered(client, request).await.0
}

/// Submits `request`, waits (bounded) until it is delivered, and returns its message id and
/// delivery (holding the recipient's receipt).
async fn submit_until_delivered(
    client: &mut LocalServiceClient<Channel>,
    request: pb::SubmitReferralRequest,
) -> (String, pb::GetDeliveryResponse) {
    let id = client
        .submit_referral(request)
        .await
        .expect("submit")
        .into_inner()
        .message_id;
    let d = wait_delivery(client, &id).await;
    assert_eq!(
        d.state,
        pb::DeliveryState::Delivered as i32,
        "{id}: {}",
        d.last_error
    );
    (id, d)
}

/// Every item of an inbox, acknowledged or not (first page).
pub async fn whole_inbox(client: &mut LocalServiceClient<Channel>) -> Vec<pb::InboxItem> {
    client
        .list_inbox(pb::ListInboxRequest {
            include_acknowledged: true,
            ..Default::default()
        })
        .await
        .expect("list inbox")
        .into_inner()
        .items
}

/// Polls `check` until it holds, for at most [`WAIT`]; panics naming `what` if it never does.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Completes a TLS handshake with the listener at `addr` (trusting the node CA `ca`,
/// presenting `cert` and `key`, offering ALPN `h2`) and reads its first bytes. `Ok` when the
/// listener accepted the client certificate (an HTTP/2 server answers the preface with its
/// settings); `Err` with the reason (the alert) when it refused it at the handshake.
pub async fn tls_handshake(
    addr: SocketAddr,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = kinbridge_grpc::tls::load_certs;
    let roots = kinbridge_grpc::tls::root_store(&tls(ca).expect("ca")).expect("roots");
    let chain = tls(cert).expect("cert");
    let key = kinbridge_grpc::tls::load_private_key(key).expect("key");
    let mut config = rustls::ClientConfig::builder_with_provider(kinbridge_grpc::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        // The HTTP/2 preface and an empty SETTINGS frame.
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        stream.write_all(&hello).await.map_err(|e| e.to_string())?;
        let mut first = [0u8; 9];
        match stream.read(&mut first).await {
            Ok(0) => Err("the listener closed the connection".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(WAIT, attempt)
        .await
        .expect("the handshake ended in time")
}

/// A client of a node's HTTPS listener (the JSON face and the console) that is not ours:
/// curl, presenting a client certificate and trusting the node's CA.
pub struct Https {
    pub base: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The console session cookie this client holds (`name=value`), as a browser keeps it.
    pub session: std::sync::Mutex<Option<String>>,
}

/// One HTTPS answer: the status, the headers (names in lower case) and the body.
pub struct HttpsAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpsAnswer {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Https {
    /// A client of `node`'s HTTPS listener presenting `cert` and `key`.
    pub fn new(fed: &Federation, node: &str, cert: PathBuf, key: PathBuf) -> Self {
        let addr = fed.node(node).http_addr.expect("the node serves HTTPS");
        Self {
            base: format!("https://{addr}"),
            ca: fed.files(node).ca_cert(),
            cert,
            key,
            session: std::sync::Mutex::new(None),
        }
    }

    /// A client of `node` with its development certificate of `role`.
    pub fn role(fed: &Federation, node: &str, role: &str) -> Self {
        let files = fed.files(node);
        Self::new(fed, node, files.client_cert(role), files.client_key(role))
    }

    /// As [`Https::request_raw`], in a console session as a person at a browser keeps one:
    /// the session cookie is sent and kept, and a console page that asks to start (or
    /// continue) a session is answered by pressing its button, then `method` is sent again.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        headers: &[&str],
    ) -> HttpsAnswer {
        let send = |s: &Self| {
            let mut all: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
            if let Some(cookie) = s.session.lock().expect("session lock").clone() {
                match all.iter_mut().find(|h| h.starts_with("Cookie:")) {
                    Some(given) => given.push_str(&format!("; {cookie}")),
                    None => all.push(format!("Cookie: {cookie}")),
                }
            }
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            let answer = s.request_raw(method, path, body, &all);
            s.keep_session(&answer);
            answer
        };
        let answer = send(self);
        if answer.status != 401 || !answer.body.contains("action=\"/console/session\"") {
            return answer;
        }
        let marker = "name=\"csrf\" value=\"";
        let csrf = answer
            .body
            .find(marker)
            .map(|at| &answer.body[at + marker.len()..])
            .and_then(|rest| rest.split('"').next())
            .expect("the session page's CSRF token");
        let form = format!("csrf={csrf}&to=%2Fconsole%2F");
        let started = self.request_raw(
            "POST",
            "/console/session",
            Some(("application/x-www-form-urlencoded", &form)),
            &[],
        );
        assert_eq!(
            started.status, 303,
            "a console session starts: {}",
            started.body
        );
        self.keep_session(&started);
        send(self)
    }

    /// Keeps the console session cookie an answer sets.
    fn keep_session(&self, answer: &HttpsAnswer) {
        let set = answer
            .headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .filter_map(|(_, v)| v.split(';').next())
            .find(|c| c.starts_with("kinbridge-session="));
        if let Some(cookie) = set {
            *self.session.lock().expect("session lock") = Some(cookie.to_owned());
        }
    }

    /// `method` on `path` with a body of `content_type` (if any, sent from a file, as large as
    /// it may be) and `headers`, and nothing else (no cookie); redirects are not followed.
    pub fn request_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        headers: &[&str],
    ) -> HttpsAnswer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (head, out) = (dir.path().join("head"), dir.path().join("body"));
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-X", method])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .arg("-D")
            .arg(&head)
            .arg("-o")
            .arg(&out);
        for h in headers {
            cmd.args(["-H", h]);
        }
        if let Some((content_type, body)) = body {
            let file = dir.path().join("request");
            std::fs::write(&file, body).expect("request body");
            cmd.arg("-H")
                .arg(format!("content-type: {content_type}"))
                .arg("--data-binary")
                .arg(format!("@{}", file.display()));
        }
        cmd.arg(format!("{}{path}", self.base));
        let result = run_bounded(cmd);
        assert!(
            result.status.success(),
            "curl failed: {}",
            text(&result.stderr)
        );
        let head = std::fs::read_to_string(&head).expect("headers");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        HttpsAnswer {
            status,
            headers,
            body: std::fs::read_to_string(&out).unwrap_or_default(),
        }
    }
}

/// Whether curl is here; if not, says so, and fails under `KINBRIDGE_REQUIRE_INTEROP=1`.
pub fn skip_without_curl() -> bool {
    let present = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return false;
    }
    assert!(!interop_required(), "curl is needed for the HTTPS tests");
    eprintln!("SKIPPED: curl is not installed");
    true
}
