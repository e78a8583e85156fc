//! Webhooks: a node pushes its inbox events to a receiver, signed as Standard Webhooks says
//! (checked here by the formula and by the reference library from PyPI), in order; a receiver
//! away for a while gets every event once it is back; a node killed with SIGKILL while events
//! are pending loses none of them.
//!
//! The receiver is a minimal HTTP/1.1 server of the test's own on a loopback port, which the
//! test stops (the port refuses connections) and starts again on the same port.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The secret of the test's subscription (Standard Webhooks' own example).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver got it.
#[derive(Clone, Debug)]
struct Hook {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// The test's receiver: records every POST and answers 200.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Hook>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let got: Arc<Mutex<Vec<Hook>>> = Arc::default();
        let task = tokio::spawn(serve(listener, Arc::clone(&got)));
        Self {
            addr,
            got,
            task: Some(task),
        }
    }

    /// Stops accepting: the port refuses connections until [`Receiver::restart`].
    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    async fn restart(&mut self) {
        let got = Arc::clone(&self.got);
        let again = Self::start(self.addr.port()).await;
        *again.got.lock().expect("lock") = std::mem::take(&mut *got.lock().expect("lock"));
        self.stop();
        *self = again;
    }

    fn hooks(&self) -> Vec<Hook> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits (bounded) until the events of `n` distinct ids arrived; returns them, first
    /// arrival of each id, in arrival order.
    async fn wait_for(&self, n: usize) -> Vec<Hook> {
        eventually(&format!("{n} webhook events"), || {
            let distinct = distinct(&self.hooks()).len();
            async move { distinct >= n }
        })
        .await;
        distinct(&self.hooks())
    }
}

fn distinct(hooks: &[Hook]) -> Vec<Hook> {
    let mut seen = std::collections::HashSet::new();
    hooks
        .iter()
        .filter(|h| seen.insert(h.id.clone()))
        .cloned()
        .collect()
}

async fn serve(listener: TcpListener, got: Arc<Mutex<Vec<Hook>>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let got = Arc::clone(&got);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The head, then as many body bytes as it announces.
            let head_end = loop {
                let Ok(n) = stream.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let length: usize = header("content-length").parse().unwrap_or(0);
            while buf.len() < head_end + length {
                let Ok(n) = stream.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
            got.lock().expect("lock").push(Hook {
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
                body,
            });
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        });
    }
}

/// Checks `hook`'s signature by the Standard Webhooks formula, independently of the node's code.
fn signature_holds(hook: &Hook) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("secret");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("key");
    mac.update(format!("{}.{}.{}", hook.id, hook.timestamp, hook.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    hook.signature
        .split(' ')
        .any(|s| s == format!("v1,{expected}"))
}

/// The `[[webhooks]]` table of a subscription to `receiver`, its secret written beside.
fn webhook_toml(dir: &Path, receiver: SocketAddr) -> String {
    let secret = dir.join("webhook.secret");
    std::fs::write(&secret, SECRET).expect("write secret");
    format!(
        "\n[[webhooks]]\nname = \"case-system\"\nurl = \"http://{receiver}/kinbridge/events\"\ninsecure_plain_http = true\nsecret_file = \"{}\"\nevents = [\"inbox.referral\", \"referral.status\"]\nretry_max_seconds = 1\n",
        secret.display()
    )
}

/// Verifies the received events with the Standard Webhooks reference library, where the
/// interop Python has it (required under `KINBRIDGE_REQUIRE_INTEROP=1`).
async fn verified_by_the_reference_library(dir: &Path, hooks: &[Hook]) {
    let python = interop_python();
    let has_it = std::process::Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_it {
        assert!(
            !interop_required(),
            "{} lacks standardwebhooks",
            python.display()
        );
        eprintln!(
            "SKIPPED the reference library's check: pip install -r tests/interop/requirements.txt"
        );
        return;
    }
    let events = dir.join("events.jsonl");
    let lines: Vec<String> = hooks
        .iter()
        .map(|h| {
            serde_json::json!({
                "headers": {"webhook-id": h.id, "webhook-timestamp": h.timestamp, "webhook-signature": h.signature},
                "body": h.body,
            })
            .to_string()
        })
        .collect();
    std::fs::write(&events, lines.join("\n") + "\n").expect("write events");
    let secret = dir.join("secret.txt");
    std::fs::write(&secret, SECRET).expect("write secret");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_webhooks.py");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(script).arg(&events).arg(&secret);
    let out = tokio::task::block_in_place(|| run_bounded(cmd));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(&format!("OK: {} events verified", hooks.len())));
}

/// The message ids the events name, in their order.
fn message_ids(hooks: &[Hook]) -> Vec<String> {
    hooks
        .iter()
        .map(|h| {
            body(h)["data"]["messageId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The message ids of referrals `deliver_referrals` sent.
fn ids_of(sent: &[(String, kinbridge_proto::v1::GetDeliveryResponse)]) -> Vec<String> {
    sent.iter().map(|(id, _)| id.clone()).collect()
}

fn body(hook: &Hook) -> serde_json::Value {
    serde_json::from_str(&hook.body).expect("a JSON event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_in_order_and_after_the_receiver_was_away() {
    let mut receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("webhook.secret");
    std::fs::write(&secret_file, SECRET).expect("write secret");
    let webhooks = vec![kinbridge_node::config::WebhookConfig {
        name: "case-system".into(),
        url: format!("http://{}/kinbridge/events", receiver.addr),
        secret_file,
        ca_certificate: None,
        events: vec![
            kinbridge_service::webhooks::EventType::Referral,
            kinbridge_service::webhooks::EventType::Status,
        ],
        units: Vec::new(),
        max_age: std::time::Duration::from_secs(3600),
        retry_max: std::time::Duration::from_secs(1),
    }];
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], move |config| {
        if config.node_id.as_str() == "MW-DSW" {
            config.webhooks = webhooks.clone();
        }
    })
    .await;
    let mut zm = fed.local("ZM-DSW", "caseworker");
    let sent = deliver_referrals(&mut zm, "MW-DSW", 3).await;
    let hooks = receiver.wait_for(3).await;
    assert_eq!(
        message_ids(&hooks),
        ids_of(&sent),
        "in the order they arrived in the inbox"
    );
    for hook in &hooks {
        assert!(signature_holds(hook), "{hook:?}");
        let event = body(hook);
        assert_eq!(event["type"], "inbox.referral");
        assert!(hook.id.starts_with("MW-DSW:"), "{}", hook.id);
        assert!(
            !hook.body.contains("Child"),
            "no child's data in an event: {}",
            hook.body
        );
    }
    verified_by_the_reference_library(dir.path(), &hooks).await;

    // Away: the events wait, retried; back: every one arrives, in order.
    receiver.stop();
    let more = deliver_referrals(&mut zm, "MW-DSW", 2).await;
    receiver.restart().await;
    let hooks = receiver.wait_for(5).await;
    assert_eq!(message_ids(&hooks[3..]), ids_of(&more));
    assert!(hooks.iter().all(signature_holds));

    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_events_pending_loses_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::start(0).await;
    receiver.stop();
    let mut nodes = TwoNodes::start(dir.path());
    // Malawi subscribes (a restart takes the new config; its ports stay).
    let mut toml = std::fs::read_to_string(&nodes.mw_config).expect("read");
    toml.push_str(&webhook_toml(dir.path(), receiver.addr));
    std::fs::write(&nodes.mw_config, toml).expect("write");
    nodes.restart_malawi();
    let mut zm = nodes.client("ZM-DSW", "caseworker");
    let sent = deliver_referrals(&mut zm, "MW-DSW", 4).await;
    // The receiver is away: the four events are pending when Malawi is killed.
    nodes.restart_malawi();
    receiver.restart().await;
    let hooks = receiver.wait_for(4).await;
    assert_eq!(message_ids(&hooks), ids_of(&sent));
    assert!(hooks.iter().all(signature_holds));
}
