//! End-to-end benchmark: what a pair of nodes sustains, against a plain gRPC baseline measured
//! in the same run.
//!
//! Two `kinbridge node` processes from the release build (Zambia sends, Malawi receives) run on
//! loopback with a fresh development PKI, real mutual TLS and real stores on disk. Referrals of
//! about 2 KiB are driven at Zambia's local port at fixed concurrency (closed loop) and at
//! fixed offered rates (open loop, latency counted from the scheduled send, so a stall is not
//! hidden). Each referral counts from `SubmitReferral` until Zambia holds Malawi's verified
//! signed receipt: durable at both ends, in both audit logs. The baseline is a third process
//! serving a plain tonic unary echo of the same payload size over the same kind of mutual TLS
//! (the node's own client channel settings), driven the same way.
//!
//! Each phase alternates slices of referrals and of echoes, so that the machine's drift weighs
//! on both sides of the ratio.
//!
//! Run: `cargo bench --bench e2e` (`KINBRIDGE_BENCH_SECS` per phase, default 10;
//! `KINBRIDGE_BENCH_RATES` the offered rates, default `250,1000,2500`).

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinbridge_core::NodeId;
use kinbridge_node::devpki::{self, DevNodeFiles};
use kinbridge_proto::bench::v1::EchoMessage;
use kinbridge_proto::bench::v1::echo_client::EchoClient;
use kinbridge_proto::bench::v1::echo_server::{Echo, EchoServer};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use prost::Message;
use tonic::transport::{Certificate, Channel, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

mod common;
#[path = "common/process.rs"]
mod process;
use common::{machine, pct, request};
use process::{Process, ticks_per_second};

const COMMAND: &str = "cargo bench --bench e2e";
/// Set in the environment of the echo-server process this benchmark starts (its PKI folder).
const ECHO_ENV: &str = "KINBRIDGE_BENCH_ECHO_PKI";
/// Most referrals (or echo calls) in flight in an open-loop phase; offers beyond are shed and
/// counted.
const MAX_IN_FLIGHT: usize = 2048;
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Each phase runs as this many alternating slices of referrals and echoes, so that the
/// machine's drift (these machines are shared and noisy) weighs on both sides of the ratio.
const ROUNDS: u32 = 4;

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match std::env::var_os(ECHO_ENV) {
        Some(pki) => runtime.block_on(echo_server(PathBuf::from(pki))),
        None => runtime.block_on(run()),
    }
}

// ---------------------------------------------------------------------------------------------
// The baseline: a plain tonic echo over mutual TLS, in a process of its own.

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// Serves the echo with Malawi's node certificate, trusting Zambia's node CA, until stdin
/// closes (the benchmark ended or died).
async fn echo_server(pki: PathBuf) {
    let malawi = DevNodeFiles::new(&pki, &node("MW-DSW"));
    let zambia = DevNodeFiles::new(&pki, &node("ZM-DSW"));
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(malawi.node_cert()),
            read(malawi.node_key()),
        ))
        .client_ca_root(Certificate::from_pem(read(zambia.ca_cert())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("echo ready: addr={}", listener.local_addr().expect("addr"));
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await;
    };
    Server::builder()
        .tls_config(tls)
        .expect("tls")
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming_shutdown(
            // As the node's own accept loop does: no Nagle delay on small responses.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stdin_closed,
        )
        .await
        .expect("echo server");
}

// ---------------------------------------------------------------------------------------------
// Load.

/// What one phase measured.
#[derive(Default)]
struct Phase {
    /// Latencies of the completed operations, sorted.
    latencies: Vec<Duration>,
    /// Operations that failed (an error, or not delivered within the wait).
    failed: usize,
    /// Offers shed because `MAX_IN_FLIGHT` were already in flight (open loop only).
    shed: usize,
    /// Wall time from the first offer to the last completion.
    elapsed: Duration,
}

impl Phase {
    /// Adds what another slice of the same phase measured.
    fn merge(&mut self, other: Phase) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        self.shed += other.shed;
        self.elapsed += other.elapsed;
        self.latencies.sort();
    }
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn p(&self, q: f64) -> f64 {
        pct(&self.latencies, q)
    }
}

/// `concurrency` workers each run `op` back to back for `run`.
async fn closed_loop<F, Fut>(concurrency: usize, run: Duration, op: F) -> Phase
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (Vec::new(), 0);
                while start.elapsed() < run {
                    let t = Instant::now();
                    if op().await {
                        ok.push(t.elapsed());
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let mut phase = Phase::default();
    for w in workers {
        let (ok, failed) = w.await.expect("worker");
        phase.latencies.extend(ok);
        phase.failed += failed;
    }
    phase.elapsed = start.elapsed();
    phase.latencies.sort();
    phase
}

/// Offers `op` at `rate` per second for `run`, each from its scheduled instant; latency counts
/// from that instant.
async fn open_loop<F, Fut>(rate: f64, run: Duration, op: F) -> Phase
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let offers = (run.as_secs_f64() * rate) as u64;
    let mut tasks = Vec::with_capacity(offers as usize);
    let mut phase = Phase::default();
    for n in 0..offers {
        let due = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            phase.shed += 1;
            continue;
        };
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let ok = op().await;
            drop(permit);
            ok.then(|| due.elapsed())
        }));
    }
    for t in tasks {
        match t.await.expect("task") {
            Some(latency) => phase.latencies.push(latency),
            None => phase.failed += 1,
        }
    }
    phase.elapsed = start.elapsed();
    phase.latencies.sort();
    phase
}

/// One referral: submit at Zambia, then wait (bounded) for Malawi's verified receipt.
async fn referral(mut zambia: LocalServiceClient<Channel>) -> bool {
    let Ok(submitted) = zambia.submit_referral(request("MW-DSW")).await else {
        return false;
    };
    let id = submitted.into_inner().message_id;
    matches!(
        zambia
            .get_delivery(pb::GetDeliveryRequest {
                message_id: id,
                wait_ms: 30_000,
            })
            .await,
        Ok(d) if d.get_ref().state == pb::DeliveryState::Delivered as i32
    )
}

/// One echo of `payload`.
async fn echo(mut client: EchoClient<Channel>, payload: Arc<Vec<u8>>) -> bool {
    client
        .echo(EchoMessage {
            payload: payload.to_vec(),
        })
        .await
        .is_ok_and(|r| r.get_ref().payload.len() == payload.len())
}

// ---------------------------------------------------------------------------------------------

async fn run() {
    let secs: u64 = std::env::var("KINBRIDGE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rates: Vec<f64> = std::env::var("KINBRIDGE_BENCH_RATES")
        .unwrap_or_else(|_| "250,1000,2500".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .filter(|r: &f64| *r > 0.0)
        .collect();
    let run = Duration::from_secs(secs);
    let payload_bytes = request("MW-DSW").encoded_len();
    println!("# kinbridge end-to-end benchmark");
    println!("command: {COMMAND}");
    println!("machine: {}", machine());
    println!(
        "each phase {secs} s of referrals and {secs} s of echoes, in {ROUNDS} alternating slices; two `kinbridge node` processes and an echo process, release build, loopback, mutual TLS, rate limits lifted; \
         a referral is {payload_bytes} bytes encoded, and so is each echo"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("certs-dev");
    devpki::ensure(&pki, &[node("ZM-DSW"), node("MW-DSW")]).expect("pki");
    let kinbridge = env!("CARGO_BIN_EXE_kinbridge");
    let start_node = |name: &str, peers: &[(NodeId, Option<String>)]| {
        let config = dir.path().join(format!("{name}.toml"));
        // The per-peer and per-client rate limits (2,000/s by default) are lifted, so that
        // they do not cap what is measured.
        let toml = format!(
            "{}\n[limits]\npeer_requests_per_second = 1000000\nclient_requests_per_second = 1000000\n",
            devpki::config_toml(&pki, &node(name), &dir.path().join(name), peers)
        );
        std::fs::write(&config, toml).expect("config");
        let mut cmd = Command::new(kinbridge);
        cmd.args(["node", "--config"]).arg(&config);
        Process::start(cmd, &config.with_extension("log"))
    };
    let malawi = start_node("MW-DSW", &[(node("ZM-DSW"), None)]);
    let zambia = start_node(
        "ZM-DSW",
        &[(
            node("MW-DSW"),
            Some(format!("https://{}", malawi.addr("peer="))),
        )],
    );
    let mut echo_cmd = Command::new(std::env::current_exe().expect("this benchmark"));
    echo_cmd.env(ECHO_ENV, &pki);
    let echo_process = Process::start(echo_cmd, &dir.path().join("echo.log"));

    let files = DevNodeFiles::new(&pki, &node("ZM-DSW"));
    let local = kinbridge_grpc::client::local_client(
        &zambia.addr("local=").to_string(),
        &files.ca_cert(),
        &files.client_cert("caseworker"),
        &files.client_key("caseworker"),
    )
    .expect("client");
    let identity = Identity::from_pem(
        std::fs::read(files.node_cert()).expect("cert"),
        std::fs::read(files.node_key()).expect("key"),
    );
    let echo_channel = kinbridge_grpc::peer_client::peer_channel(
        &format!("https://{}", echo_process.addr("addr=")),
        Some("localhost"),
        &std::fs::read(DevNodeFiles::new(&pki, &node("MW-DSW")).ca_cert()).expect("ca"),
        &identity,
    )
    .expect("echo channel");
    let echo_client = EchoClient::new(echo_channel);
    let payload = Arc::new(vec![0x5a_u8; payload_bytes]);
    let tick = ticks_per_second();
    let nodes_cpu = || zambia.cpu_seconds(tick) + malawi.cpu_seconds(tick);

    let e2e = {
        let local = local.clone();
        move || referral(local.clone())
    };
    let baseline = {
        let (client, payload) = (echo_client.clone(), Arc::clone(&payload));
        move || echo(client.clone(), Arc::clone(&payload))
    };
    // Warm up both: connections, caches, the stores' first files.
    closed_loop(16, Duration::from_secs(2), e2e.clone()).await;
    closed_loop(16, Duration::from_secs(2), baseline.clone()).await;

    println!();
    println!("## fixed concurrency (closed loop)");
    println!(
        "| clients | referrals/s | p50 ms | p99 ms | p999 ms | node CPU ms/referral | echo calls/s | echo p50 ms | echo p99 ms | echo CPU ms/call | referrals/s ÷ echo calls/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let slice = run / ROUNDS;
    let mut headline = (0.0, 0.0);
    for c in CONCURRENCY {
        let (mut r, mut b) = (Phase::default(), Phase::default());
        let (mut cpu, mut echo_cpu) = (0.0, 0.0);
        for _ in 0..ROUNDS {
            let before = nodes_cpu();
            r.merge(closed_loop(c, slice, e2e.clone()).await);
            cpu += nodes_cpu() - before;
            let before = echo_process.cpu_seconds(tick);
            b.merge(closed_loop(c, slice, baseline.clone()).await);
            echo_cpu += echo_process.cpu_seconds(tick) - before;
        }
        let cpu_per = cpu * 1000.0 / r.latencies.len().max(1) as f64;
        let echo_cpu_per = echo_cpu * 1000.0 / b.latencies.len().max(1) as f64;
        headline = (r.rate(), b.rate());
        println!(
            "| {c} | {:.0} | {:.1} | {:.1} | {:.1} | {cpu_per:.2} | {:.0} | {:.2} | {:.2} | {echo_cpu_per:.3} | {:.4} |{}",
            r.rate(),
            r.p(0.50),
            r.p(0.99),
            r.p(0.999),
            b.rate(),
            b.p(0.50),
            b.p(0.99),
            r.rate() / b.rate().max(1e-9),
            failures(&r, &b),
        );
    }

    println!();
    println!(
        "## fixed offered rate (open loop; latency from each scheduled send; at most {MAX_IN_FLIGHT} in flight, the rest shed)"
    );
    println!(
        "| offered/s | referrals/s | shed | p50 ms | p99 ms | p999 ms | node CPU ms/referral | echo calls/s | echo p50 ms | echo p99 ms | referrals/s ÷ echo calls/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for rate in rates {
        let (mut r, mut b) = (Phase::default(), Phase::default());
        let mut cpu = 0.0;
        for _ in 0..ROUNDS {
            let before = nodes_cpu();
            r.merge(open_loop(rate, slice, e2e.clone()).await);
            cpu += nodes_cpu() - before;
            b.merge(open_loop(rate, slice, baseline.clone()).await);
        }
        let cpu_per = cpu * 1000.0 / r.latencies.len().max(1) as f64;
        println!(
            "| {rate:.0} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {cpu_per:.2} | {:.0} | {:.2} | {:.2} | {:.4} |{}",
            r.rate(),
            r.shed,
            r.p(0.50),
            r.p(0.99),
            r.p(0.999),
            b.rate(),
            b.p(0.50),
            b.p(0.99),
            r.rate() / b.rate().max(1e-9),
            failures(&r, &b),
        );
    }
    println!();
    println!(
        "sustained (closed loop, {} clients): {:.0} referrals/s end to end; the echo baseline {:.0} calls/s; ratio {:.4}",
        CONCURRENCY[CONCURRENCY.len() - 1],
        headline.0,
        headline.1,
        headline.0 / headline.1.max(1e-9)
    );
    println!();
    println!(
        "(each phase: {ROUNDS} alternating slices of {:.1} s of referrals and of echoes; node CPU: user + system seconds of both node processes over the referral slices, per completed referral)",
        slice.as_secs_f64()
    );
}

fn failures(r: &Phase, b: &Phase) -> String {
    if r.failed + b.failed == 0 {
        String::new()
    } else {
        format!(" failed: {} referrals, {} echoes", r.failed, b.failed)
    }
}
