//! Soak: a pair of nodes at a steady offered rate for a long time, the receiving peer restarted
//! every few minutes, and what the nodes use over time.
//!
//! Two `kinbridge node` processes from the release build (Zambia sends, Malawi receives) run on
//! loopback with a fresh development PKI, real mutual TLS and real stores on disk. Referrals of
//! about 2 KiB are offered at Zambia's local port at a fixed rate (open loop). Malawi is killed
//! (SIGKILL) and started again on the same store and ports every `KINBRIDGE_SOAK_RESTART_SECS`;
//! Zambia queues meanwhile and catches up. Every `KINBRIDGE_SOAK_SAMPLE_SECS` a row is written
//! to a CSV file: for each node its resident memory, open file descriptors, CPU seconds and disk
//! use; the referrals acknowledged, refused and shed; Zambia's outbox depth; and the latencies of
//! the interval (acknowledgement of every submission, and end to end, until Malawi's verified
//! receipt, for one submission in `E2E_SAMPLE_EVERY`). At the end it waits (bounded) for the
//! outbox to drain, prints the figures by quarter of the run, and says for memory, descriptors
//! and CPU per referral whether they level off.
//!
//! Run: `cargo bench --bench soak` (one hour at 300 referrals/s). Settings, from the
//! environment: `KINBRIDGE_SOAK_SECS` (default 3600), `KINBRIDGE_SOAK_RATE` (300),
//! `KINBRIDGE_SOAK_RESTART_SECS` (240), `KINBRIDGE_SOAK_SAMPLE_SECS` (10), `KINBRIDGE_SOAK_CSV`
//! (`bench-out/soak.csv`). Plot: `python3 benches/soak_plot.py bench-out/soak.csv docs/soak.png`
//! (matplotlib, `benches/requirements-plot.txt`). CI runs a short slice in a debug build.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinbridge_core::NodeId;
use kinbridge_node::devpki::{self, DevNodeFiles};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tonic::transport::Channel;

mod common;
#[path = "common/process.rs"]
mod process;
use common::{machine, pct, request};
use process::{Process, ticks_per_second};

const COMMAND: &str = "cargo bench --bench soak";
/// One submission in this many is also followed until its receipt (end-to-end latency).
const E2E_SAMPLE_EVERY: u64 = 30;
/// Most submissions in flight; offers beyond are shed and counted.
const MAX_IN_FLIGHT: usize = 4096;
/// Longest the end of the run waits for Zambia's outbox to drain.
const DRAIN_WAIT: Duration = Duration::from_secs(600);
/// Longest one end-to-end sample waits for its receipt.
const RECEIPT_WAIT: Duration = Duration::from_secs(300);

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// What the load records between two samples.
#[derive(Default)]
struct Interval {
    acknowledged: u64,
    refused: u64,
    shed: u64,
    submit: Vec<Duration>,
    end_to_end: Vec<Duration>,
    e2e_failed: u64,
}

/// The receiving node: restarted on the same store and ports; its CPU seconds add up over its
/// lives.
struct Receiver {
    process: Option<Process>,
    config: PathBuf,
    cpu_before: f64,
    restarts: u64,
}

impl Receiver {
    fn start(config: &Path) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kinbridge"));
        cmd.args(["node", "--config"]).arg(config);
        Process::start(cmd, &config.with_extension("log"))
    }

    /// Kills the process and starts it again; returns how long it was away.
    fn restart(&mut self, tick: f64) -> Duration {
        let t = Instant::now();
        if let Some(p) = self.process.take() {
            self.cpu_before += p.cpu_seconds(tick);
            drop(p); // SIGKILL and wait.
        }
        self.process = Some(Self::start(&self.config));
        self.restarts += 1;
        t.elapsed()
    }

    fn cpu(&self, tick: f64) -> f64 {
        self.cpu_before + self.process.as_ref().map_or(0.0, |p| p.cpu_seconds(tick))
    }
}

/// Bytes a directory tree occupies on disk (allocated blocks, so sparse files count as held).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// `kinbridge_outbox_depth` at Zambia's metrics listener, summed over its series.
async fn outbox_depth(files: &DevNodeFiles, addr: std::net::SocketAddr) -> Option<f64> {
    let (code, body) = tokio::time::timeout(
        Duration::from_secs(10),
        kinbridge_node::metrics::scrape(
            addr,
            &files.ca_cert(),
            &files.client_cert("auditor"),
            &files.client_key("auditor"),
            "/metrics",
        ),
    )
    .await
    .ok()?
    .ok()?;
    (code == 200).then(|| {
        body.lines()
            .filter(|l| l.starts_with("kinbridge_outbox_depth"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    })
}

/// One offer: submit at Zambia; for a sampled one, wait for Malawi's verified receipt too.
async fn offer(
    mut zambia: LocalServiceClient<Channel>,
    follow: bool,
    interval: Arc<Mutex<Interval>>,
) {
    let t = Instant::now();
    let submitted = zambia.submit_referral(request("MW-DSW")).await;
    let acked = t.elapsed();
    let id = match submitted {
        Ok(r) => r.into_inner().message_id,
        Err(_) => {
            interval.lock().expect("interval").refused += 1;
            return;
        }
    };
    {
        let mut i = interval.lock().expect("interval");
        i.acknowledged += 1;
        i.submit.push(acked);
    }
    if !follow {
        return;
    }
    // The node answers a wait of at most 30 s: ask again until the receipt or the bound.
    let mut delivered = false;
    while !delivered && t.elapsed() < RECEIPT_WAIT {
        match zambia
            .get_delivery(pb::GetDeliveryRequest {
                message_id: id.clone(),
                wait_ms: 30_000,
            })
            .await
        {
            Ok(d) => delivered = d.get_ref().state == pb::DeliveryState::Delivered as i32,
            // Not a tight loop if the node refuses: the next question a second later.
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    let mut i = interval.lock().expect("interval");
    if delivered {
        i.end_to_end.push(t.elapsed());
    } else {
        i.e2e_failed += 1;
    }
}

/// One CSV row's worth, kept for the summary too.
struct Row {
    t: f64,
    acknowledged_total: u64,
    rate: f64,
    refused: u64,
    shed: u64,
    submit_p50: f64,
    submit_p99: f64,
    e2e_p50: f64,
    e2e_p99: f64,
    e2e_failed: u64,
    outbox_depth: f64,
    zm_rss: u64,
    mw_rss: u64,
    zm_fds: usize,
    mw_fds: usize,
    cpu_ms_per_referral: f64,
    zm_disk: u64,
    mw_disk: u64,
    mw_restarts: u64,
}

const CSV_HEADER: &str = "t_s,acknowledged_total,acknowledged_per_s,refused,shed,submit_p50_ms,submit_p99_ms,e2e_p50_ms,e2e_p99_ms,e2e_failed,outbox_depth,zm_rss_bytes,mw_rss_bytes,zm_fds,mw_fds,cpu_ms_per_referral,zm_disk_bytes,mw_disk_bytes,mw_restarts";

impl Row {
    fn csv(&self) -> String {
        format!(
            "{:.1},{},{:.1},{},{},{:.2},{:.2},{:.1},{:.1},{},{:.0},{},{},{},{},{:.3},{},{},{}",
            self.t,
            self.acknowledged_total,
            self.rate,
            self.refused,
            self.shed,
            self.submit_p50,
            self.submit_p99,
            self.e2e_p50,
            self.e2e_p99,
            self.e2e_failed,
            self.outbox_depth,
            self.zm_rss,
            self.mw_rss,
            self.zm_fds,
            self.mw_fds,
            self.cpu_ms_per_referral,
            self.zm_disk,
            self.mw_disk,
            self.mw_restarts
        )
    }
}

async fn run() {
    let secs = setting("KINBRIDGE_SOAK_SECS", 3600);
    let rate = setting("KINBRIDGE_SOAK_RATE", 300) as f64;
    let restart_every = Duration::from_secs(setting("KINBRIDGE_SOAK_RESTART_SECS", 240));
    let sample_every = Duration::from_secs(setting("KINBRIDGE_SOAK_SAMPLE_SECS", 10));
    let csv_path = PathBuf::from(
        std::env::var("KINBRIDGE_SOAK_CSV").unwrap_or_else(|_| "bench-out/soak.csv".into()),
    );
    println!("# kinbridge soak");
    println!("command: {COMMAND}");
    println!("machine: {}", machine());
    println!(
        "{secs} s at {rate:.0} referrals/s offered; Malawi killed and restarted every {} s; a sample every {} s to {}",
        restart_every.as_secs(),
        sample_every.as_secs(),
        csv_path.display()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("certs-dev");
    devpki::ensure(&pki, &[node("ZM-DSW"), node("MW-DSW")]).expect("pki");
    let config_for = |name: &str, peers: &[(NodeId, Option<String>)]| {
        // Rate limits lifted, as in the end-to-end benchmark, so they do not shape the load.
        format!(
            "{}\n[limits]\npeer_requests_per_second = 1000000\nclient_requests_per_second = 1000000\n",
            devpki::config_toml(&pki, &node(name), &dir.path().join(name), peers)
        )
    };
    // Malawi first on any free ports, then pinned to them for its restarts.
    let mw_config = dir.path().join("MW-DSW.toml");
    let mw_toml = config_for("MW-DSW", &[(node("ZM-DSW"), None)]);
    std::fs::write(&mw_config, &mw_toml).expect("config");
    let first = Receiver::start(&mw_config);
    let (mw_peer, mw_local) = (first.addr("peer="), first.addr("local="));
    let pinned = mw_toml
        .replacen(
            "peer = \"127.0.0.1:0\"",
            &format!("peer = \"{mw_peer}\""),
            1,
        )
        .replacen(
            "local = \"127.0.0.1:0\"",
            &format!("local = \"{mw_local}\""),
            1,
        );
    std::fs::write(&mw_config, pinned).expect("config");
    let receiver = Arc::new(Mutex::new(Receiver {
        process: Some(first),
        config: mw_config,
        cpu_before: 0.0,
        restarts: 0,
    }));

    let zm_config = dir.path().join("ZM-DSW.toml");
    std::fs::write(
        &zm_config,
        config_for(
            "ZM-DSW",
            &[(node("MW-DSW"), Some(format!("https://{mw_peer}")))],
        ),
    )
    .expect("config");
    let zambia = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kinbridge"));
        cmd.args(["node", "--config"]).arg(&zm_config);
        Process::start(cmd, &zm_config.with_extension("log"))
    };
    let zm_files = DevNodeFiles::new(&pki, &node("ZM-DSW"));
    let zm_metrics: std::net::SocketAddr = zambia
        .ready_word("metrics=")
        .and_then(|u| u.split("://").nth(1)?.split('/').next()?.parse().ok())
        .expect("Zambia's metrics address in its ready line");
    let local = kinbridge_grpc::client::local_client(
        &zambia.addr("local=").to_string(),
        &zm_files.ca_cert(),
        &zm_files.client_cert("caseworker"),
        &zm_files.client_key("caseworker"),
    )
    .expect("client");

    let tick = ticks_per_second();
    let interval = Arc::new(Mutex::new(Interval::default()));
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let offered = Arc::new(AtomicU64::new(0));
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(secs);

    // The load: one offer every 1/rate seconds, each from its scheduled instant.
    let load = {
        let (interval, permits, offered, local) = (
            Arc::clone(&interval),
            Arc::clone(&permits),
            Arc::clone(&offered),
            local.clone(),
        );
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let gap = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = tokio::task::JoinSet::new();
            for n in 0u64.. {
                let due = start + gap.mul_f64(n as f64);
                if due >= stop_at {
                    break;
                }
                tokio::time::sleep_until(due).await;
                offered.fetch_add(1, Ordering::Relaxed);
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    interval.lock().expect("interval").shed += 1;
                    continue;
                };
                let (client, interval) = (local.clone(), Arc::clone(&interval));
                tasks.spawn(async move {
                    offer(client, n % E2E_SAMPLE_EVERY == 0, interval).await;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    // The restarts.
    let restarts = {
        let receiver = Arc::clone(&receiver);
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + restart_every;
            while next < stop_at {
                tokio::time::sleep_until(next).await;
                let receiver = Arc::clone(&receiver);
                let away = tokio::task::spawn_blocking(move || {
                    receiver.lock().expect("receiver").restart(tick)
                })
                .await
                .expect("restart");
                println!("Malawi restarted (away {:.1} s)", away.as_secs_f64());
                next += restart_every;
            }
        })
    };

    // The samples.
    if let Some(parent) = csv_path.parent() {
        std::fs::create_dir_all(parent).expect("CSV folder");
    }
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();
    let (mut acknowledged_total, mut cpu_last) = (0u64, 0.0f64);
    let zm_dir = dir.path().join("ZM-DSW");
    let mw_dir = dir.path().join("MW-DSW");
    let mut last = Instant::now();
    // Samples cover the offered load; the drain after it is reported on its own.
    while tokio::time::Instant::now() < stop_at {
        tokio::time::sleep(sample_every.min(stop_at - tokio::time::Instant::now())).await;
        let taken = std::mem::take(&mut *interval.lock().expect("interval"));
        let elapsed = last.elapsed().as_secs_f64();
        last = Instant::now();
        let (mw_rss, mw_fds, cpu, restarts_so_far) = {
            let r = receiver.lock().expect("receiver");
            let p = r.process.as_ref();
            (
                p.map_or(0, Process::rss_bytes),
                p.map_or(0, Process::open_fds),
                r.cpu(tick) + zambia.cpu_seconds(tick),
                r.restarts,
            )
        };
        let (mut submit, mut e2e) = (taken.submit, taken.end_to_end);
        submit.sort();
        e2e.sort();
        acknowledged_total += taken.acknowledged;
        let row = Row {
            t: started.elapsed().as_secs_f64(),
            acknowledged_total,
            rate: taken.acknowledged as f64 / elapsed.max(1e-9),
            refused: taken.refused,
            shed: taken.shed,
            submit_p50: pct(&submit, 0.50),
            submit_p99: pct(&submit, 0.99),
            e2e_p50: pct(&e2e, 0.50),
            e2e_p99: pct(&e2e, 0.99),
            e2e_failed: taken.e2e_failed,
            outbox_depth: outbox_depth(&zm_files, zm_metrics)
                .await
                .unwrap_or(f64::NAN),
            zm_rss: zambia.rss_bytes(),
            mw_rss,
            zm_fds: zambia.open_fds(),
            mw_fds,
            cpu_ms_per_referral: (cpu - cpu_last) * 1000.0 / (taken.acknowledged.max(1) as f64),
            zm_disk: disk_bytes(&zm_dir),
            mw_disk: disk_bytes(&mw_dir),
            mw_restarts: restarts_so_far,
        };
        cpu_last = cpu;
        csv.push_str(&row.csv());
        csv.push('\n');
        std::fs::write(&csv_path, &csv).expect("CSV");
        rows.push(row);
    }
    load.await.expect("load");
    restarts.await.expect("restarts");

    // Drain: everything acknowledged reaches Malawi.
    let drain_start = Instant::now();
    let mut depth = f64::NAN;
    while drain_start.elapsed() < DRAIN_WAIT {
        depth = outbox_depth(&zm_files, zm_metrics)
            .await
            .unwrap_or(f64::NAN);
        if depth == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let r = receiver.lock().expect("receiver");
    summary(
        &rows,
        secs,
        r.restarts,
        offered.load(Ordering::Relaxed),
        depth,
        drain_start.elapsed(),
    );
    println!(
        "CSV: {} (plot: python3 benches/soak_plot.py {} docs/soak.png)",
        csv_path.display(),
        csv_path.display()
    );
    assert!(
        depth == 0.0,
        "Zambia's outbox did not drain within {} s after the load (depth {depth})",
        DRAIN_WAIT.as_secs()
    );
}

/// Prints the figures by quarter of the run, and whether each resource levels off.
fn summary(rows: &[Row], secs: u64, restarts: u64, offered: u64, depth: f64, drain: Duration) {
    let total: u64 = rows.last().map_or(0, |r| r.acknowledged_total);
    let refused: u64 = rows.iter().map(|r| r.refused).sum();
    let shed: u64 = rows.iter().map(|r| r.shed).sum();
    let e2e_failed: u64 = rows.iter().map(|r| r.e2e_failed).sum();
    println!();
    println!(
        "offered {offered}, acknowledged {total}, refused {refused}, shed {shed}; end-to-end samples not delivered in time: {e2e_failed}; Malawi restarts: {restarts}; outbox depth after the load: {depth} (drained in {:.1} s)",
        drain.as_secs_f64()
    );
    let quarters = rows.len().clamp(1, 4);
    let per = rows.len().div_ceil(quarters).max(1);
    println!();
    println!(
        "| quarter | acknowledged/s | submit p99 ms | end-to-end p50 ms | end-to-end p99 ms | CPU ms/referral | Zambia RSS MiB | Malawi RSS MiB | Zambia fds | Malawi fds | Zambia disk MiB | Malawi disk MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut means = Vec::new();
    for (q, chunk) in rows.chunks(per).enumerate() {
        let n = chunk.len() as f64;
        let mean = |f: &dyn Fn(&Row) -> f64| chunk.iter().map(f).sum::<f64>() / n;
        let mib = |b: u64| b as f64 / 1_048_576.0;
        let m = [
            mean(&|r| r.rate),
            mean(&|r| r.submit_p99),
            mean(&|r| r.e2e_p50),
            mean(&|r| r.e2e_p99),
            mean(&|r| r.cpu_ms_per_referral),
            mean(&|r| mib(r.zm_rss)),
            mean(&|r| mib(r.mw_rss)),
            mean(&|r| r.zm_fds as f64),
            mean(&|r| r.mw_fds as f64),
            chunk.last().map_or(0.0, |r| mib(r.zm_disk)),
            chunk.last().map_or(0.0, |r| mib(r.mw_disk)),
        ];
        let mut line = format!("| {} |", q + 1);
        for v in m {
            let _ = write!(line, " {v:.1} |");
        }
        println!("{line}");
        means.push(m);
    }
    // Levels off: the last quarter's mean is within 25% of the second quarter's (the first
    // quarter holds the warm-up).
    if means.len() >= 3 {
        let (second, last) = (&means[1], &means[means.len() - 1]);
        println!();
        for (i, what) in [
            (4, "CPU ms per referral"),
            (5, "Zambia's memory"),
            (6, "Malawi's memory"),
            (7, "Zambia's descriptors"),
            (8, "Malawi's descriptors"),
        ] {
            let ratio = last[i] / second[i].max(1e-9);
            println!(
                "{what}: last quarter / second quarter = {ratio:.2} ({})",
                if ratio <= 1.25 { "levels off" } else { "GROWS" }
            );
        }
    }
    println!(
        "\n({secs} s; quarters are means of the samples in each; disk is the last sample of each quarter)"
    );
}
