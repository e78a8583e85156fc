//! Running a node: Prometheus metrics scraped and parsed, grpc.health.v1 on both ports, and
//! SIGTERM under load (the node drains, exits 0, and loses nothing it acknowledged).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kinbridge_proto::v1 as pb;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// One sample of an exposition: its metric name and labels.
type Series = (String, BTreeMap<String, String>);

/// `GET path` on `addr` over plain HTTP/1.1; returns the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response");
        response
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the metrics listener answered in time");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Parses the OpenMetrics text format: `name{label="value",...} number` lines.
fn parse(text: &str) -> BTreeMap<Series, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in '{line}'"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("closing brace");
                let labels = inner
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label pair");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.insert((name, labels), value);
    }
    out
}

fn sample(metrics: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    *metrics
        .get(&(name.to_owned(), labels.clone()))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

#[tokio::test]
async fn metrics_are_scraped_and_parsed() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 3).await;
    let mut bad = submit_request("MW-DSW");
    bad.recipient_unit = "Not A Unit".into();
    zambia.submit_referral(bad).await.expect_err("refused");

    let (status, body) = fed
        .scrape("ZM-DSW", "system", "/metrics")
        .await
        .expect("scraped over mutual TLS");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    let zm = parse(&body);
    let sent = [
        ("direction", "sent"),
        ("kind", "referral"),
        ("outcome", "delivered"),
        ("peer", "MW-DSW"),
    ];
    assert_eq!(sample(&zm, "kinbridge_messages_total", &sent), 3.0);
    assert_eq!(
        sample(&zm, "kinbridge_submitted_total", &[("peer", "MW-DSW")]),
        3.0
    );
    assert_eq!(
        sample(
            &zm,
            "kinbridge_delivery_latency_seconds_count",
            &[("peer", "MW-DSW")]
        ),
        3.0
    );
    assert!(
        sample(
            &zm,
            "kinbridge_delivery_attempt_seconds_count",
            &[("peer", "MW-DSW")]
        ) >= 3.0
    );
    assert_eq!(sample(&zm, "kinbridge_outbox_depth", &[]), 0.0);
    assert!(sample(&zm, "kinbridge_audit_log_entries", &[]) >= 9.0);
    assert_eq!(
        sample(
            &zm,
            "kinbridge_refusals_total",
            &[("side", "local"), ("reason", "bad-unit")]
        ),
        1.0
    );
    let now = kinbridge_core::UnixMillis::now().0 as f64 / 1000.0;
    let node_cert = sample(
        &zm,
        "kinbridge_certificate_expiry_timestamp_seconds",
        &[("certificate", "node"), ("node", "ZM-DSW")],
    );
    assert!(node_cert > now, "the node certificate is valid");
    assert!(
        sample(
            &zm,
            "kinbridge_certificate_expiry_timestamp_seconds",
            &[("certificate", "peer-ca"), ("node", "MW-DSW")]
        ) > now
    );
    assert_eq!(
        sample(
            &zm,
            "kinbridge_signing_key_active",
            &[("node", "ZM-DSW"), ("key_id", "ZM-DSW-dev1")]
        ),
        1.0
    );
    // Labels name nodes, kinds and codes: never a child.
    assert!(!body.contains("Test") && !body.contains("Child") && !body.contains("CONSENT-1"));

    let (_, mw) = fed
        .scrape("MW-DSW", "auditor", "/metrics")
        .await
        .expect("scraped");
    let mw = parse(&mw);
    let received = [
        ("direction", "received"),
        ("kind", "referral"),
        ("outcome", "accepted"),
        ("peer", "ZM-DSW"),
    ];
    assert_eq!(sample(&mw, "kinbridge_messages_total", &received), 3.0);
    let (status, _) = fed
        .scrape("MW-DSW", "admin", "/elsewhere")
        .await
        .expect("answered");
    assert_eq!(status, 404);
    fed.shutdown().await;
}

/// Sends `GET /metrics` in plain text to `addr` and returns whatever comes back (nothing, a
/// TLS alert, or an HTTP response), bounded.
async fn plain_attempt(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(request.as_bytes()).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the metrics listener answered or closed in time")
}

#[tokio::test]
async fn metrics_need_a_local_client_certificate_of_a_monitoring_role() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let addr = fed.node("ZM-DSW").metrics_addr.expect("metrics listener");
    // Plain HTTP gets no metrics: the listener speaks TLS only.
    let plain = plain_attempt(addr).await;
    assert!(!plain.contains("kinbridge_"), "{plain}");
    assert!(!plain.contains("200 OK"), "{plain}");
    // A caseworker's certificate completes the handshake and is refused, saying why.
    let (status, body) = fed
        .scrape("ZM-DSW", "caseworker", "/metrics")
        .await
        .expect("answered");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("role 'caseworker' may not read metrics"),
        "{body}"
    );
    assert!(body.contains("system, auditor or admin"), "{body}");
    // A peer node's certificate is not from this authority's local CA: refused at handshake.
    let zm = fed.files("ZM-DSW");
    let mw = fed.files("MW-DSW");
    let peer = kinbridge_node::metrics::scrape(
        addr,
        &zm.ca_cert(),
        &mw.node_cert(),
        &mw.node_key(),
        "/metrics",
    )
    .await;
    let refused = peer.expect_err("a peer certificate is refused at the handshake");
    assert!(
        refused.contains("UnknownCA") || refused.contains("unknown"),
        "{refused}"
    );
    // Every monitoring role reads them.
    for role in ["system", "auditor", "admin"] {
        let (status, body) = fed
            .scrape("ZM-DSW", role, "/metrics")
            .await
            .expect("scraped");
        assert_eq!(status, 200, "{role}: {body}");
        assert!(body.contains("kinbridge_outbox_depth"), "{role}");
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn plain_http_metrics_only_under_the_insecure_setting() {
    let fed = Federation::start_with(&["ZM-DSW"], |config| {
        config.metrics_insecure_plain_http = true;
    })
    .await;
    let addr = fed.node("ZM-DSW").metrics_addr.expect("metrics listener");
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("kinbridge_outbox_depth"));
    fed.shutdown().await;
}

#[tokio::test]
async fn health_is_served_on_both_ports() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let check = |channel, service: &str| {
        let service = service.to_owned();
        async move {
            HealthClient::new(channel)
                .check(HealthCheckRequest { service })
                .await
                .expect("health check")
                .into_inner()
                .status
        }
    };
    for service in ["", "kinbridge.v1.LocalService", "kinbridge.v1.AdminService"] {
        assert_eq!(
            check(fed.channel("ZM-DSW", "auditor"), service).await,
            ServingStatus::Serving as i32,
            "local port: {service}"
        );
    }
    // A peer checks the peer port with its node certificate.
    let files = fed.files("MW-DSW");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(files.node_cert()).expect("cert"),
        std::fs::read(files.node_key()).expect("key"),
    );
    let peer_port = kinbridge_grpc::peer_client::peer_channel(
        &format!("https://{}", fed.node("ZM-DSW").peer_addr),
        Some("localhost"),
        &std::fs::read(fed.files("ZM-DSW").ca_cert()).expect("ca"),
        &identity,
    )
    .expect("channel");
    assert_eq!(
        check(peer_port, "kinbridge.v1.PeerService").await,
        ServingStatus::Serving as i32
    );
    fed.shutdown().await;
}

/// Submits at `addr` from `clients` tasks until `stop` or the node goes away; returns the
/// acknowledged message ids.
fn load(
    pki: &std::path::Path,
    addr: std::net::SocketAddr,
    clients: usize,
    acknowledged: &Arc<Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let mut zm = client_for(pki, "ZM-DSW", "caseworker", addr);
            let acknowledged = Arc::clone(acknowledged);
            tokio::spawn(async move {
                for _ in 0..5_000 {
                    let mut request = tonic::Request::new(submit_request("MW-DSW"));
                    request.set_timeout(Duration::from_secs(5));
                    match zm.submit_referral(request).await {
                        Ok(r) => acknowledged
                            .lock()
                            .expect("lock")
                            .push(r.into_inner().message_id),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect()
}

async fn acknowledged_at_least(acknowledged: &Arc<Mutex<Vec<String>>>, n: usize) {
    eventually(&format!("{n} submissions acknowledged"), || {
        let len = acknowledged.lock().expect("lock").len();
        async move { len >= n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_nothing_acknowledged() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = TwoNodes::start(root.path());
    let pki = nodes.pki.clone();
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();

    // The sender is told to stop while four clients submit and its worker delivers.
    let tasks = load(&pki, nodes.zambia.local_addr, 4, &acknowledged);
    acknowledged_at_least(&acknowledged, 40).await;
    let zambia = std::mem::replace(&mut nodes.zambia, NodeProcess::placeholder());
    let status = tokio::task::spawn_blocking(move || zambia.terminate())
        .await
        .expect("terminate");
    assert!(status.success(), "Zambia exited {status:?} on SIGTERM");
    for t in tasks {
        t.await.expect("load task");
    }
    nodes.zambia = NodeProcess::start(&nodes.zm_config);

    // The receiver is told to stop while the sender delivers to it.
    let tasks = load(&pki, nodes.zambia.local_addr, 4, &acknowledged);
    let seen = acknowledged.lock().expect("lock").len();
    acknowledged_at_least(&acknowledged, seen + 40).await;
    let malawi = std::mem::replace(&mut nodes.malawi, NodeProcess::placeholder());
    let status = tokio::task::spawn_blocking(move || malawi.terminate())
        .await
        .expect("terminate");
    assert!(status.success(), "Malawi exited {status:?} on SIGTERM");
    let seen = acknowledged.lock().expect("lock").len();
    acknowledged_at_least(&acknowledged, seen + 20).await;
    let zambia = std::mem::replace(&mut nodes.zambia, NodeProcess::placeholder());
    assert!(
        tokio::task::spawn_blocking(move || zambia.terminate())
            .await
            .expect("terminate")
            .success()
    );
    for t in tasks {
        t.await.expect("load task");
    }
    nodes.zambia = NodeProcess::start(&nodes.zm_config);
    // Malawi comes back logging JSON lines, as an operator's log shipper wants.
    nodes.malawi = NodeProcess::start_args(&nodes.mw_config, &["--log-json"]);

    // Every acknowledged submission is delivered, and in Malawi's inbox exactly once.
    let ids = acknowledged.lock().expect("lock").clone();
    let mut zm = client_for(&pki, "ZM-DSW", "caseworker", nodes.zambia.local_addr);
    for id in &ids {
        let d = wait_delivery(&mut zm, id).await;
        assert_eq!(
            d.state,
            pb::DeliveryState::Delivered as i32,
            "{id}: {}",
            d.last_error
        );
    }
    let mut mw = client_for(&pki, "MW-DSW", "system", nodes.malawi.local_addr);
    let mut inbox = Vec::new();
    let mut after = 0;
    loop {
        let page = mw
            .list_inbox(pb::ListInboxRequest {
                after_sequence: after,
                limit: 1000,
                include_acknowledged: true,
            })
            .await
            .expect("inbox")
            .into_inner()
            .items;
        let Some(last) = page.last() else { break };
        after = last.sequence;
        inbox.extend(page.into_iter().map(|i| i.message_id));
    }
    let mut sorted = inbox.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), inbox.len(), "a message was stored twice");
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        sorted, expected,
        "the inbox holds exactly the acknowledged submissions"
    );

    // The logs carry request ids and the shutdown, and nothing of the referrals.
    let zm_log = std::fs::read_to_string(nodes.zm_config.with_extension("log")).expect("log");
    assert!(zm_log.contains("request_id="), "request ids in text logs");
    assert!(zm_log.contains("shutting down"));
    let mw_log = std::fs::read_to_string(nodes.mw_config.with_extension("log")).expect("log");
    let json_line = mw_log
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"request_id\""))
        .expect("a JSON log line with a request id");
    assert!(
        json_line.contains("\"method\":\"/kinbridge.v1."),
        "{json_line}"
    );
    for log in [&zm_log, &mw_log] {
        for secret in ["TEST-CASE-1", "interim-care", "CONSENT-1"] {
            assert!(!log.contains(secret), "'{secret}' in a node log");
        }
    }
}
