//! The JSON face beside the gRPC face: referral submissions per second through each, in the
//! same run, alternating slices so that the machine's drift weighs on both. Two nodes run in
//! this process on loopback with a fresh development PKI, real mutual TLS and real stores;
//! a submission is answered once it is sealed, logged and durably queued, and the delivery to
//! the second node runs behind both alike. The JSON client is a plain HTTP/1.1 keep-alive
//! connection per worker over TLS with a client certificate, writing the protobuf JSON mapping.
//! Run: `cargo bench --bench json` (KINBRIDGE_BENCH_SECS sets each slice, default 2).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinbridge_core::NodeId;
use kinbridge_node::devpki::{self, DevNodeFiles};
use kinbridge_node::server::{Listeners, RunningNode, spawn};
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use kinbridge_service::ratelimit::Rate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

mod common;
use common::{pct, request};

const COMMAND: &str = "cargo bench --bench json";
const SLICES: usize = 4;

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

async fn start(
    pki: &Path,
    data: &Path,
    me: &str,
    peer: &str,
    peer_addr: Option<SocketAddr>,
) -> RunningNode {
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind") };
    let (p, l, h) = (bind().await, bind().await, bind().await);
    let addrs = (p.local_addr().expect("addr"), l.local_addr().expect("addr"));
    let peers = vec![(node(peer), peer_addr.map(|a| format!("https://{a}")))];
    let mut config = devpki::node_config(pki, &node(me), &peers, &data.join(me), addrs.0, addrs.1);
    let unlimited = Rate {
        per_second: 1e9,
        burst: 1e9,
    };
    config.client_rate = unlimited;
    config.peer_rate = unlimited;
    let listeners = Listeners {
        peer: p,
        local: l,
        metrics: None,
        http: Some(h),
    };
    spawn(&config, listeners).expect("node")
}

fn grpc_client(pki: &Path, me: &str, addr: SocketAddr) -> LocalServiceClient<Channel> {
    let f = DevNodeFiles::new(pki, &node(me));
    kinbridge_grpc::client::local_client(
        &addr.to_string(),
        &f.ca_cert(),
        &f.client_cert("caseworker"),
        &f.client_key("caseworker"),
    )
    .expect("client")
}

/// The TLS configuration of a JSON client: the node's CA, the caseworker's certificate.
fn json_tls(pki: &Path, me: &str) -> Arc<rustls::ClientConfig> {
    let f = DevNodeFiles::new(pki, &node(me));
    let mut roots = rustls::RootCertStore::empty();
    for cert in kinbridge_grpc::tls::load_certs(&f.ca_cert()).expect("ca") {
        roots.add(cert).expect("root");
    }
    let chain = kinbridge_grpc::tls::load_certs(&f.client_cert("caseworker")).expect("cert");
    let key = kinbridge_grpc::tls::load_private_key(&f.client_key("caseworker")).expect("key");
    let mut config = rustls::ClientConfig::builder_with_provider(kinbridge_grpc::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One JSON submission on a kept-alive connection; the answer's status.
async fn json_submit<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    body: &str,
    buf: &mut Vec<u8>,
) -> u16 {
    let head = format!(
        "POST /v1/referrals HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body.as_bytes()).await.expect("write");
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the node closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the node closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq)]
enum Face {
    Grpc,
    Json,
}

/// Submissions through `face` by `clients` workers for `run`; their latencies.
async fn slice(
    face: Face,
    clients: usize,
    run: Duration,
    grpc: &LocalServiceClient<Channel>,
    http: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
) -> Vec<Duration> {
    let start = Instant::now();
    let body = serde_json::to_string(&request("MW-DSW")).expect("json");
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut grpc = grpc.clone();
        let tls = Arc::clone(tls);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            match face {
                Face::Grpc => {
                    while start.elapsed() < run {
                        let t = Instant::now();
                        grpc.submit_referral(request("MW-DSW"))
                            .await
                            .expect("submit");
                        out.push(t.elapsed());
                    }
                }
                Face::Json => {
                    let tcp = TcpStream::connect(http).await.expect("connect");
                    tcp.set_nodelay(true).expect("nodelay");
                    let name = rustls::pki_types::ServerName::IpAddress(http.ip().into());
                    let mut stream = tokio_rustls::TlsConnector::from(tls)
                        .connect(name, tcp)
                        .await
                        .expect("TLS");
                    let host = http.to_string();
                    let mut buf = Vec::new();
                    while start.elapsed() < run {
                        let t = Instant::now();
                        let status = json_submit(&mut stream, &host, &body, &mut buf).await;
                        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&buf));
                        out.push(t.elapsed());
                    }
                }
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    all
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs: u64 = std::env::var("KINBRIDGE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    devpki::ensure(&pki, &[node("ZM-DSW"), node("MW-DSW")]).expect("pki");
    let mw = start(&pki, dir.path(), "MW-DSW", "ZM-DSW", None).await;
    let zm = start(&pki, dir.path(), "ZM-DSW", "MW-DSW", Some(mw.peer_addr)).await;
    let grpc = grpc_client(&pki, "ZM-DSW", zm.local_addr);
    let http = zm.http_addr.expect("JSON face");
    let tls = json_tls(&pki, "ZM-DSW");
    // Warm both faces up (connections, caches).
    slice(Face::Grpc, 4, Duration::from_millis(500), &grpc, http, &tls).await;
    slice(Face::Json, 4, Duration::from_millis(500), &grpc, http, &tls).await;

    println!("# JSON face beside gRPC face: referral submissions (sealed, logged, durably queued)");
    println!(
        "command: {COMMAND} (KINBRIDGE_BENCH_SECS={secs}; {SLICES} alternating slices per face)"
    );
    println!("machine: {}", common::machine());
    println!();
    println!(
        "| clients | gRPC submissions/s | gRPC p50 ms | gRPC p99 ms | JSON submissions/s | JSON p50 ms | JSON p99 ms | JSON ÷ gRPC |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for clients in [1usize, 16] {
        let (mut g, mut j) = (Vec::new(), Vec::new());
        let run = Duration::from_secs(secs);
        for _ in 0..SLICES {
            g.extend(slice(Face::Grpc, clients, run, &grpc, http, &tls).await);
            j.extend(slice(Face::Json, clients, run, &grpc, http, &tls).await);
        }
        let total = (SLICES as u64 * secs) as f64;
        let (grate, jrate) = (g.len() as f64 / total, j.len() as f64 / total);
        g.sort();
        j.sort();
        println!(
            "| {clients} | {grate:.0} | {:.2} | {:.2} | {jrate:.0} | {:.2} | {:.2} | {:.3} |",
            pct(&g, 0.5),
            pct(&g, 0.99),
            pct(&j, 0.5),
            pct(&j, 0.99),
            jrate / grate
        );
    }
    zm.shutdown().await.expect("stop");
    mw.shutdown().await.expect("stop");
}
