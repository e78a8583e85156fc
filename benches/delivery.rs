//! Delivery benchmark: referral latency from submission to the recipient's verified receipt,
//! unloaded and under load, and catch-up time after the recipient was away. Two nodes run in
//! this process on loopback with a fresh development PKI, real mutual TLS and real stores.
//! Run: `cargo bench --bench delivery` (KINBRIDGE_BENCH_SECS sets each load phase, default 10).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use kinbridge_core::NodeId;
use kinbridge_node::devpki::{self, DevNodeFiles};
use kinbridge_node::server::{Listeners, RunningNode, spawn};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tokio::net::TcpListener;
use tonic::transport::Channel;

mod common;
use common::{pct, request};

const COMMAND: &str = "cargo bench --bench delivery";
const CATCH_UP_MESSAGES: usize = 500;

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

async fn start(
    pki: &Path,
    data: &Path,
    me: &str,
    peer: &str,
    peer_addr: Option<SocketAddr>,
    addrs: (SocketAddr, SocketAddr),
) -> RunningNode {
    let peers = vec![(node(peer), peer_addr.map(|a| format!("https://{a}")))];
    let config = devpki::node_config(pki, &node(me), &peers, &data.join(me), addrs.0, addrs.1);
    let listeners = Listeners {
        peer: TcpListener::bind(addrs.0).await.expect("bind"),
        local: TcpListener::bind(addrs.1).await.expect("bind"),
        metrics: None,
        http: None,
    };
    spawn(&config, listeners).expect("node")
}

fn client(pki: &Path, me: &str, addr: SocketAddr) -> LocalServiceClient<Channel> {
    let f = DevNodeFiles::new(pki, &node(me));
    kinbridge_grpc::client::local_client(
        &addr.to_string(),
        &f.ca_cert(),
        &f.client_cert("caseworker"),
        &f.client_key("caseworker"),
    )
    .expect("client")
}

/// Submits and waits for the verified receipt, `concurrency` at a time, for `run`; returns
/// the latencies.
async fn load(
    mut c: LocalServiceClient<Channel>,
    concurrency: usize,
    run: Duration,
) -> Vec<Duration> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while start.elapsed() < run {
                let t = Instant::now();
                let id = c
                    .submit_referral(request("MW-DSW"))
                    .await
                    .expect("submit")
                    .into_inner()
                    .message_id;
                let d = c
                    .get_delivery(pb::GetDeliveryRequest {
                        message_id: id,
                        wait_ms: 30_000,
                    })
                    .await
                    .expect("delivery")
                    .into_inner();
                assert_eq!(
                    d.state,
                    pb::DeliveryState::Delivered as i32,
                    "{}",
                    d.last_error
                );
                out.push(t.elapsed());
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let _ = &mut c;
    all
}

#[tokio::main]
async fn main() {
    let secs = std::env::var("KINBRIDGE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let run = Duration::from_secs(secs);
    println!("# kinbridge delivery benchmark");
    println!("command: {COMMAND}");
    println!("machine: {}", common::machine());
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("certs-dev");
    devpki::ensure(&pki, &[node("ZM-DSW"), node("MW-DSW")]).expect("pki");
    let free = || async {
        TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
    };
    let zm_addrs = (free().await, free().await);
    let mw_addrs = (free().await, free().await);
    let data = dir.path().join("data");
    let mut malawi = start(&pki, &data, "MW-DSW", "ZM-DSW", None, mw_addrs).await;
    let zambia = start(&pki, &data, "ZM-DSW", "MW-DSW", Some(mw_addrs.0), zm_addrs).await;
    let c = client(&pki, "ZM-DSW", zm_addrs.1);

    println!();
    println!(
        "## latency: submit at ZM-DSW until MW-DSW's signed receipt is verified at ZM-DSW ({secs} s per row)"
    );
    println!("| clients | referrals/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    let mut baseline_p50 = 0.0;
    for concurrency in [1usize, 16, 64] {
        let mut lat = load(c.clone(), concurrency, run).await;
        lat.sort();
        let rate = lat.len() as f64 / run.as_secs_f64();
        let p50 = pct(&lat, 0.5);
        if concurrency == 1 {
            baseline_p50 = p50;
        }
        println!(
            "| {concurrency} | {rate:.0} | {p50:.1} | {:.1} | {:.1} |{}",
            pct(&lat, 0.99),
            pct(&lat, 1.0),
            if concurrency == 1 {
                " (baseline: unloaded)".to_owned()
            } else {
                format!(" p50 {:.1}x the unloaded", p50 / baseline_p50)
            }
        );
    }

    println!();
    println!("## catch-up: {CATCH_UP_MESSAGES} referrals queued while MW-DSW was away");
    malawi.shutdown().await.expect("stop");
    let mut queued = Vec::new();
    let mut sub = c.clone();
    for _ in 0..CATCH_UP_MESSAGES {
        queued.push(
            sub.submit_referral(request("MW-DSW"))
                .await
                .expect("submit")
                .into_inner()
                .message_id,
        );
    }
    // Let the head of the queue back off as it would during a real outage.
    tokio::time::sleep(Duration::from_secs(5)).await;
    malawi = start(&pki, &data, "MW-DSW", "ZM-DSW", None, mw_addrs).await;
    let back = Instant::now();
    let first = sub
        .get_delivery(pb::GetDeliveryRequest {
            message_id: queued[0].clone(),
            wait_ms: 60_000,
        })
        .await
        .expect("d")
        .into_inner();
    assert_eq!(first.state, pb::DeliveryState::Delivered as i32);
    let first_at = back.elapsed();
    let last = queued.last().cloned().expect("queued");
    let d = sub
        .get_delivery(pb::GetDeliveryRequest {
            message_id: last,
            wait_ms: 60_000,
        })
        .await
        .expect("d")
        .into_inner();
    assert_eq!(d.state, pb::DeliveryState::Delivered as i32);
    let all_at = back.elapsed();
    let drain = (CATCH_UP_MESSAGES - 1) as f64 / (all_at - first_at).as_secs_f64().max(1e-9);
    println!(
        "| first delivered after the peer returned | all {CATCH_UP_MESSAGES} delivered | drain rate |"
    );
    println!("|---|---|---|");
    println!(
        "| {:.2} s (the retry backoff) | {:.2} s | {drain:.0} referrals/s |",
        first_at.as_secs_f64(),
        all_at.as_secs_f64()
    );
    zambia.shutdown().await.expect("stop");
    malawi.shutdown().await.expect("stop");
}
