//! A full disk and a failed fsync, on real `kinbridge node` processes whose data directory is
//! on the fault file system (crates/faultfs), over real mutual TLS: a node whose disk is
//! nearly full refuses what would grow its store with RESOURCE_EXHAUSTED `disk-full`, keeps
//! delivering what it had accepted, and resumes by itself once space is freed; a node whose
//! fsync failed acknowledges nothing more, reports NOT_SERVING, and recovers on a restart
//! with every acknowledged referral and an audit log that verifies. docs/durability.md.
//!
//! Both tests need FUSE: they fail under `KINBRIDGE_REQUIRE_FUSE=1` (CI) if it is missing,
//! and otherwise skip saying why.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use kinbridge_faultfs::{FaultFs, Faults, Mounted};
use kinbridge_node::devpki::{self, DevNodeFiles};
use kinbridge_proto::v1 as pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The reserve the node under test keeps free.
const RESERVE: u64 = 16 * 1024 * 1024;
/// The room left under the budget when the disk is "filled": less than the reserve, enough
/// for what the node still writes (refusals, delivery outcomes).
const HEADROOM: u64 = 6 * 1024 * 1024;
/// Bound on waiting for a peer's retry: its backoff reaches 30 s.
const RETRY_WAIT: Duration = Duration::from_secs(120);

/// A port free now on 127.0.0.1, for a node whose peer must know its endpoint in advance.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Two development nodes that know each other's endpoints: Zambia, whose data directory is
/// on a fault file system, and Malawi, on the plain disk.
struct Pair {
    root: tempfile::TempDir,
    pki: PathBuf,
    zm_config: PathBuf,
    mw_config: PathBuf,
    zm_mount: PathBuf,
    faults: Faults,
    mount: Option<Mounted>,
}

impl Pair {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let pki = root.path().join("certs-dev");
        devpki::ensure(&pki, &[node_id("ZM-DSW"), node_id("MW-DSW")]).expect("pki");
        let backing = root.path().join("zm-backing");
        let zm_mount = root.path().join("zm-mnt");
        std::fs::create_dir(&backing).expect("backing dir");
        std::fs::create_dir(&zm_mount).expect("mountpoint");
        let mount = FaultFs::mount(&backing, &zm_mount).expect("mount the fault file system");
        let faults = mount.faults();
        let (zm_peer, zm_local, mw_peer, mw_local) =
            (free_port(), free_port(), free_port(), free_port());
        let zm = with_ports(
            &dev_config_toml(
                &pki,
                "ZM-DSW",
                &zm_mount.join("data"),
                &[("MW-DSW", Some(format!("https://127.0.0.1:{mw_peer}")))],
            ),
            zm_peer,
            zm_local,
        ) + &format!("\n[storage]\nmin_free_bytes = {RESERVE}\n");
        let mw = with_ports(
            &dev_config_toml(
                &pki,
                "MW-DSW",
                &root.path().join("mw"),
                &[("ZM-DSW", Some(format!("https://127.0.0.1:{zm_peer}")))],
            ),
            mw_peer,
            mw_local,
        );
        let zm_config = root.path().join("zambia.toml");
        let mw_config = root.path().join("malawi.toml");
        std::fs::write(&zm_config, zm).expect("write");
        std::fs::write(&mw_config, mw).expect("write");
        Self {
            root,
            pki,
            zm_config,
            mw_config,
            zm_mount,
            faults,
            mount: Some(mount),
        }
    }

    fn client(
        &self,
        node: &str,
        role: &str,
        at: &NodeProcess,
    ) -> pb::local_service_client::LocalServiceClient<tonic::transport::Channel> {
        client_for(&self.pki, node, role, at.local_addr)
    }

    /// What Zambia wrote to its log (stderr) so far.
    fn zambia_log(&self) -> String {
        std::fs::read_to_string(self.zm_config.with_extension("log")).unwrap_or_default()
    }

    /// Bytes of the regular files under Zambia's mount: what the budget counts.
    fn used(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .expect("read dir")
                .map(|e| {
                    let e = e.expect("entry");
                    let meta = e.metadata().expect("metadata");
                    if meta.is_dir() {
                        walk(&e.path())
                    } else {
                        meta.len()
                    }
                })
                .sum()
        }
        walk(&self.zm_mount)
    }

    /// `name{labels}` on `node`'s metrics listener, scraped as its auditor; `None` if absent.
    async fn metric(&self, node: &str, at: &NodeProcess, series: &str) -> Option<f64> {
        let url = at.metrics_url.as_deref().expect("a metrics listener");
        let addr: SocketAddr = url
            .trim_start_matches("https://")
            .trim_end_matches("/metrics")
            .parse()
            .expect("metrics address");
        let files = DevNodeFiles::new(&self.pki, &node_id(node));
        let (code, body) = tokio::time::timeout(
            WAIT,
            kinbridge_node::metrics::scrape(
                addr,
                &files.ca_cert(),
                &files.client_cert("auditor"),
                &files.client_key("auditor"),
                "/metrics",
            ),
        )
        .await
        .expect("metrics in time")
        .expect("scrape");
        assert_eq!(code, 200, "{body}");
        let prefix = format!("{series} ");
        body.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.trim().parse().expect("a number"))
    }

    /// The grpc.health.v1 status of `node`'s local port (all services).
    async fn health(&self, node: &str, at: &NodeProcess) -> i32 {
        let files = DevNodeFiles::new(&self.pki, &node_id(node));
        let channel = kinbridge_grpc::client::local_channel(
            &at.local_addr.to_string(),
            &files.ca_cert(),
            &files.client_cert("auditor"),
            &files.client_key("auditor"),
        )
        .expect("channel");
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for config in [&self.zm_config, &self.mw_config] {
                let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
                eprintln!("--- {} ---\n{log}", config.display());
            }
        }
        // Lifted, so a node still running is not left failing; then unmounted.
        let _ = self.faults.set_space_limit(None);
        drop(self.mount.take());
        let _ = &self.root;
    }
}

/// The delivery of `id`, once it left the queued state or `bound` passed.
async fn settled(
    client: &mut pb::local_service_client::LocalServiceClient<tonic::transport::Channel>,
    id: &str,
    bound: Duration,
) -> pb::GetDeliveryResponse {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let d = wait_delivery(client, id).await;
        if d.state != pb::DeliveryState::Queued as i32 || tokio::time::Instant::now() >= deadline {
            return d;
        }
    }
}

async fn submit(
    client: &mut pb::local_service_client::LocalServiceClient<tonic::transport::Channel>,
    to: &str,
) -> Result<String, tonic::Status> {
    client
        .submit_referral(submit_request(to))
        .await
        .map(|r| r.into_inner().message_id)
}

/// `SIGTERM` to `node`, off the runtime.
async fn stop(node: NodeProcess) {
    tokio::task::spawn_blocking(move || node.terminate())
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_growth_keeps_delivering_and_resumes_by_itself() {
    if !kinbridge_faultfs::fuse_available_or_skip(
        "a_full_disk_refuses_growth_keeps_delivering_and_resumes_by_itself",
    ) {
        return;
    }
    let pair = Pair::new();
    let zambia = NodeProcess::start(&pair.zm_config);
    let mut zm = pair.client("ZM-DSW", "caseworker", &zambia);
    // Accepted while Malawi is away: queued, to be delivered later.
    let mut accepted = Vec::new();
    for _ in 0..2 {
        accepted.push(submit(&mut zm, "MW-DSW").await.expect("accepted"));
    }

    // The disk fills: less than the reserve is left.
    let budget = pair.used() + HEADROOM;
    pair.faults.set_space_limit(Some(budget)).expect("budget");
    // The node reads the free space at most once a second: the first refusal may take that.
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(id) = submit(&mut zm, "MW-DSW").await {
        accepted.push(id);
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..3 {
        let refused = submit(&mut zm, "MW-DSW").await.expect_err("refused");
        assert_eq!(
            refusal(&refused),
            (Code::ResourceExhausted, "disk-full".to_owned()),
            "{refused:?}"
        );
        let message = refused.message();
        assert!(
            message.contains("less than 16 MiB free")
                && message.contains(&pair.zm_mount.join("data").display().to_string())
                && message.contains("the node resumes by itself"),
            "{message}"
        );
        assert!(refused.metadata().get("retry-after-ms").is_some());
    }
    let free = pair
        .metric("ZM-DSW", &zambia, "kinbridge_disk_free_bytes")
        .await
        .expect("the free-space gauge");
    assert!(free < RESERVE as f64, "{free}");
    assert!(
        pair.metric(
            "ZM-DSW",
            &zambia,
            "kinbridge_refusals_total{side=\"local\",reason=\"disk-full\"}"
        )
        .await
        .unwrap_or(0.0)
            >= 3.0
    );
    assert_eq!(
        pair.metric("ZM-DSW", &zambia, "kinbridge_store_failed")
            .await,
        Some(0.0)
    );
    let log = pair.zambia_log();
    assert_eq!(
        log.matches("the node's disk is nearly full").count(),
        1,
        "one error line per episode: {log}"
    );

    // What was accepted before still goes out.
    let malawi = NodeProcess::start(&pair.mw_config);
    for id in &accepted {
        let d = settled(&mut zm, id, RETRY_WAIT).await;
        assert_eq!(
            d.state,
            pb::DeliveryState::Delivered as i32,
            "{id}: {}",
            d.last_error
        );
    }

    // A peer delivering to the full node is told to come back later, and does.
    let mut mw = pair.client("MW-DSW", "caseworker", &malawi);
    let incoming = submit(&mut mw, "ZM-DSW").await.expect("Malawi accepts it");
    let deadline = tokio::time::Instant::now() + RETRY_WAIT;
    loop {
        let d = wait_delivery(&mut mw, &incoming).await;
        assert_eq!(
            d.state,
            pb::DeliveryState::Queued as i32,
            "{}",
            d.last_error
        );
        if d.last_error.contains("ResourceExhausted") && d.last_error.contains("disk") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Malawi was not told of the full disk: {}",
            d.last_error
        );
    }
    assert!(
        pair.metric(
            "ZM-DSW",
            &zambia,
            "kinbridge_refusals_total{side=\"peer\",reason=\"disk-full\"}"
        )
        .await
        .unwrap_or(0.0)
            >= 1.0
    );

    // Space freed: it resumes without a restart.
    pair.faults.set_space_limit(None).expect("lift");
    let deadline = tokio::time::Instant::now() + WAIT;
    let resumed = loop {
        match submit(&mut zm, "MW-DSW").await {
            Ok(id) => break id,
            Err(e) => {
                assert_eq!(refusal(&e).1, "disk-full", "{e:?}");
                assert!(tokio::time::Instant::now() < deadline, "not resumed: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let d = settled(&mut zm, &resumed, RETRY_WAIT).await;
    assert_eq!(
        d.state,
        pb::DeliveryState::Delivered as i32,
        "{}",
        d.last_error
    );
    let d = settled(&mut mw, &incoming, RETRY_WAIT).await;
    assert_eq!(
        d.state,
        pb::DeliveryState::Delivered as i32,
        "{}",
        d.last_error
    );
    let inbox = whole_inbox(&mut pair.client("ZM-DSW", "caseworker", &zambia)).await;
    assert!(
        inbox.iter().any(|i| i.message_id == incoming),
        "in Zambia's inbox"
    );
    let log = pair.zambia_log();
    assert!(log.contains("disk space freed"), "{log}");
    assert_eq!(log.matches("storage failed").count(), 0, "{log}");
    // Each refusal is in the audit log, which verifies.
    let export = export_and_verify(
        &pair.pki,
        "ZM-DSW",
        zambia.local_addr,
        &pair.root.path().join("zm-export"),
    )
    .await;
    let refused: Vec<_> = entries(&export)
        .into_iter()
        .filter(|e| e.event == pb::AuditEvent::Refused as i32 && e.reason == "disk-full")
        .collect();
    assert!(
        refused.iter().filter(|e| e.actor == "caseworker-1").count() >= 3,
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|e| e.authenticated_peer == "MW-DSW"),
        "{refused:?}"
    );
    stop(malawi).await;
    stop(zambia).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_the_node_until_a_restart_recovers_it() {
    if !kinbridge_faultfs::fuse_available_or_skip(
        "a_failed_fsync_fails_the_node_until_a_restart_recovers_it",
    ) {
        return;
    }
    let pair = Pair::new();
    let malawi = NodeProcess::start(&pair.mw_config);
    let zambia = NodeProcess::start(&pair.zm_config);
    let mut zm = pair.client("ZM-DSW", "caseworker", &zambia);
    let mut acknowledged = Vec::new();
    for _ in 0..3 {
        acknowledged.push(submit_delivered(&mut zm, submit_request("MW-DSW")).await);
    }
    // The next fsync fails. Whichever descriptor it comes through (the submission's own
    // commit, or sled's periodic flusher, which ignores a failure), the committer's own
    // descriptor on sled's file sees the error at its next fdatasync, as on Linux: the
    // submission is not acknowledged.
    pair.faults.fail_next_fsync();
    let failed = submit(&mut zm, "MW-DSW")
        .await
        .expect_err("the submission under a failed fsync was not acknowledged");
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");

    // From now on nothing is taken, at once, and the node says so.
    for _ in 0..2 {
        let later = submit(&mut zm, "MW-DSW").await.expect_err("refused");
        assert_eq!(
            refusal(&later),
            (Code::Unavailable, "storage-failed".to_owned()),
            "{later:?}"
        );
        assert!(
            later
                .message()
                .contains("restart the node after checking its disk")
                && later.message().contains("nothing unacknowledged was kept"),
            "{}",
            later.message()
        );
    }
    eventually("health NOT_SERVING", || async {
        pair.health("ZM-DSW", &zambia).await == ServingStatus::NotServing as i32
    })
    .await;
    assert_eq!(
        pair.metric("ZM-DSW", &zambia, "kinbridge_store_failed")
            .await,
        Some(1.0)
    );
    let log = pair.zambia_log();
    assert_eq!(
        log.matches("storage failed: the node takes no more writes")
            .count(),
        1,
        "{log}"
    );

    // SIGKILL, and a restart on the same directory recovers it.
    zambia.kill();
    let zambia = NodeProcess::start(&pair.zm_config);
    assert_eq!(
        pair.health("ZM-DSW", &zambia).await,
        ServingStatus::Serving as i32
    );
    let mut zm = pair.client("ZM-DSW", "caseworker", &zambia);
    let export = export_and_verify(
        &pair.pki,
        "ZM-DSW",
        zambia.local_addr,
        &pair.root.path().join("zm-export"),
    )
    .await;
    let entries = entries(&export);
    for id in &acknowledged {
        assert!(
            entries
                .iter()
                .any(|e| e.message_id == *id && e.event == pb::AuditEvent::Submitted as i32),
            "{id} is in the audit log"
        );
        let d = settled(&mut zm, id, RETRY_WAIT).await;
        assert_eq!(
            d.state,
            pb::DeliveryState::Delivered as i32,
            "{id}: {}",
            d.last_error
        );
    }
    let after = submit(&mut zm, "MW-DSW").await.expect("takes writes again");
    let d = settled(&mut zm, &after, RETRY_WAIT).await;
    assert_eq!(
        d.state,
        pb::DeliveryState::Delivered as i32,
        "{}",
        d.last_error
    );
    stop(zambia).await;
    stop(malawi).await;
}
