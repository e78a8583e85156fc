//! Bad networks between two nodes: Zambia's registry entry for Malawi points at a TCP proxy
//! of our own (tests/common/proxy.rs) that forwards to Malawi's peer port, mutual TLS end to
//! end through it, while the test adds latency, black-holes the traffic, resets connections
//! in the middle of a `DeliverBatch`, and partitions the two nodes for longer than the
//! sender's retry backoff. After each fault is healed, every referral arrives in Malawi's
//! inbox exactly once and in submission order, every outbox entry at Zambia holds exactly
//! Malawi's receipt for it, and both audit logs verify and reconcile.
//!
//! `KINBRIDGE_PARTITION_SECS` (default 3) sets how long each partition lasts; the figures of
//! a run at full length are in docs/durability.md, "Bad networks".

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::proxy::{Direction, Proxy};
use common::*;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tonic::transport::Channel;

/// Messages per `DeliverBatch` call: low, so that a few referrals make several calls.
const BATCH: usize = 4;
/// The sender's retry backoff here: short, so the file runs in well under two minutes.
const RETRY_BASE: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(300);
/// The bound on one delivery call here: a call into a black hole is given up after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long each partition lasts (`KINBRIDGE_PARTITION_SECS`, default 3: ten times the
/// longest retry delay).
fn partition_length() -> Duration {
    Duration::from_secs(
        std::env::var("KINBRIDGE_PARTITION_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    )
}

/// Zambia and Malawi, Zambia reaching Malawi through the proxy; the referrals submitted so
/// far, in order.
struct Link {
    fed: Federation,
    proxy: Proxy,
    zambia: LocalServiceClient<Channel>,
    submitted: Vec<String>,
}

impl Link {
    async fn start() -> Self {
        let proxy = Proxy::start().await;
        let forward = proxy.target_setter();
        let via = proxy.addr;
        let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], move |config| {
            config.delivery = kinbridge_service::delivery::Tuning {
                retry_base: RETRY_BASE,
                retry_max: RETRY_MAX,
                batch: BATCH,
                call_timeout: CALL_TIMEOUT,
            };
            if config.node_id.as_str() != "ZM-DSW" {
                return;
            }
            for peer in &mut config.peers {
                let Some(endpoint) = peer.endpoint.as_mut() else {
                    continue;
                };
                let malawi = endpoint
                    .strip_prefix("https://")
                    .and_then(|a| a.parse().ok())
                    .expect("Malawi's peer address");
                forward(malawi);
                *endpoint = format!("https://{via}");
            }
        })
        .await;
        let zambia = fed.local("ZM-DSW", "caseworker");
        Self {
            fed,
            proxy,
            zambia,
            submitted: Vec::new(),
        }
    }

    /// Submits `n` referrals to Zambia for Malawi, one after the other (each acknowledged as
    /// queued, none waited for).
    async fn submit(&mut self, n: usize) {
        for _ in 0..n {
            let id = self
                .zambia
                .submit_referral(submit_request("MW-DSW"))
                .await
                .expect("accepted for delivery")
                .into_inner()
                .message_id;
            self.submitted.push(id);
        }
    }

    /// Zambia's delivery of `id` as it stands.
    async fn delivery(&mut self, id: &str) -> pb::GetDeliveryResponse {
        self.zambia
            .get_delivery(pb::GetDeliveryRequest {
                message_id: id.into(),
                wait_ms: 0,
            })
            .await
            .expect("get delivery")
            .into_inner()
    }

    /// Waits (bounded) until every referral submitted so far is delivered.
    async fn all_delivered(&mut self) {
        for id in self.submitted.clone() {
            let d = wait_delivery(&mut self.zambia, &id).await;
            assert_eq!(
                d.state,
                pb::DeliveryState::Delivered as i32,
                "{id}: {} after {} attempts",
                d.last_error,
                d.attempts
            );
        }
    }

    /// Waits (bounded) until the oldest undelivered referral has been tried `attempts` times.
    async fn tried(&mut self, attempts: u32) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut head = None;
            for id in self.submitted.clone() {
                let d = self.delivery(&id).await;
                if d.state == pb::DeliveryState::Queued as i32 {
                    head = Some(d);
                    break;
                }
            }
            let head = head.expect("a referral is still queued");
            if head.attempts >= attempts {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} tried {} times, not {attempts}, within {WAIT:?}",
                head.message_id,
                head.attempts
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every item of Malawi's inbox, page after page.
    async fn malawi_inbox(&self) -> Vec<pb::InboxItem> {
        let mut malawi = self.fed.local("MW-DSW", "caseworker");
        let mut items: Vec<pb::InboxItem> = Vec::new();
        for _ in 0..1000 {
            let page = malawi
                .list_inbox(pb::ListInboxRequest {
                    after_sequence: items.last().map_or(0, |i| i.sequence),
                    include_acknowledged: true,
                    ..Default::default()
                })
                .await
                .expect("list inbox")
                .into_inner()
                .items;
            if page.is_empty() {
                return items;
            }
            items.extend(page);
        }
        panic!("Malawi's inbox does not end");
    }

    /// The end state after the faults are healed: each referral in Malawi's inbox once, in
    /// submission order; each outbox entry at Zambia delivered with exactly the receipt
    /// Malawi returned for it; both audit logs verify and reconcile, with one send, one
    /// receipt and one receive per referral.
    async fn check(&mut self) {
        self.proxy.heal();
        self.all_delivered().await;
        let n = self.submitted.len();
        let inbox = self.malawi_inbox().await;
        let received: Vec<&str> = inbox.iter().map(|i| i.message_id.as_str()).collect();
        let all = self.submitted.clone();
        let submitted: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_eq!(
            received, submitted,
            "every referral once, in the order submitted"
        );
        for item in &inbox {
            let d = self.delivery(&item.message_id).await;
            let given = item
                .receipt
                .as_ref()
                .expect("Malawi's receipt in its inbox");
            let held = d.receipt.as_ref().expect("a receipt at Zambia");
            assert_eq!(
                held, given,
                "{}: Zambia holds Malawi's receipt",
                d.message_id
            );
            let body: pb::ReceiptBody =
                prost::Message::decode(given.body.as_slice()).expect("receipt body");
            assert_eq!(
                (body.message_id.as_str(), body.receiver.as_str()),
                (item.message_id.as_str(), "MW-DSW"),
                "the receipt is Malawi's, for it"
            );
        }

        let dir = self.fed.dir.path();
        let (zm_file, mw_file) = (dir.join("zm.jsonl"), dir.join("mw.jsonl"));
        let zm = export_and_verify(
            &self.fed.pki,
            "ZM-DSW",
            self.fed.node("ZM-DSW").local_addr,
            &zm_file,
        )
        .await;
        let mw = export_and_verify(
            &self.fed.pki,
            "MW-DSW",
            self.fed.node("MW-DSW").local_addr,
            &mw_file,
        )
        .await;
        let (zm_entries, mw_entries) = (entries(&zm), entries(&mw));
        for (entries, event, side) in [
            (
                &zm_entries,
                pb::AuditEvent::Submitted,
                "Zambia's submissions",
            ),
            (&zm_entries, pb::AuditEvent::Sent, "Zambia's sends"),
            (&zm_entries, pb::AuditEvent::Delivered, "Zambia's receipts"),
            (&mw_entries, pb::AuditEvent::Received, "Malawi's receptions"),
        ] {
            let mut per_message: HashMap<&str, usize> = HashMap::new();
            for e in entries.iter().filter(|e| e.event == event as i32) {
                *per_message.entry(e.message_id.as_str()).or_default() += 1;
            }
            for id in &submitted {
                assert_eq!(per_message.get(id), Some(&1), "{side}: {id} once");
            }
            assert_eq!(per_message.len(), n, "{side}: nothing else");
        }
        for e in zm_entries
            .iter()
            .filter(|e| e.event == pb::AuditEvent::Delivered as i32)
        {
            let item = inbox
                .iter()
                .find(|i| i.message_id == e.message_id)
                .expect("delivered and received");
            let receipt = kinbridge_core::SignedReceipt::from(
                item.receipt.clone().expect("Malawi's receipt"),
            );
            assert_eq!(
                e.receipt_digest,
                receipt.digest().0.to_vec(),
                "Zambia logged Malawi's receipt for {}",
                e.message_id
            );
        }
        let report =
            kinbridge_audit::reconcile::reconcile("ZM-DSW", &zm.entries, "MW-DSW", &mw.entries);
        assert_eq!(
            (report.matched, report.mismatches.len()),
            (n, 0),
            "{:?}",
            report.mismatches
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_each_way_delays_but_loses_and_reorders_nothing() {
    let mut link = Link::start().await;
    link.proxy.delay(Duration::from_millis(100));
    let started = Instant::now();
    link.submit(4 * BATCH + 1).await;
    link.all_delivered().await;
    let took = started.elapsed();
    let stats = link.proxy.stats();
    println!("latency 100 ms each way: 17 referrals delivered in {took:?}; {stats:?}");
    // A connection's handshake alone crosses the proxy several times.
    assert!(took >= Duration::from_millis(400), "the delay was in force");
    link.check().await;
    link.fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_in_the_middle_of_deliveries_loses_and_doubles_nothing() {
    let mut link = Link::start().await;
    link.submit(1).await;
    link.all_delivered().await;
    for round in 0..2 {
        // Traffic stops while referrals are on their way; the connection stays open.
        link.proxy.drop_traffic();
        let before = link.proxy.stats().discarded;
        link.submit(2 * BATCH + 1).await;
        eventually("bytes fall into the black hole", || {
            let now = link.proxy.stats().discarded;
            async move { now > before }
        })
        .await;
        link.proxy.heal();
        link.all_delivered().await;
        println!("black hole {round}: {:?}", link.proxy.stats());
    }
    link.check().await;
    link.fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_in_the_middle_of_batches_lose_and_double_nothing() {
    let mut link = Link::start().await;
    link.submit(1).await;
    link.all_delivered().await;
    // A round: the queue builds up behind a partition, then the link is healed and the
    // backlog goes out in batches of BATCH. The first round measures the bytes a round
    // takes each way; each later round cuts the connection 10 % to 70 % that far into its
    // requests (the batch going out, cut before Malawi has read it whole) or its answers
    // (the receipts coming back, cut after Malawi has stored the batch).
    let round = async |link: &mut Link, cut: Option<(Direction, u64)>| {
        let before = link.proxy.stats();
        link.proxy.partition();
        link.proxy.sever();
        link.submit(2 * BATCH).await;
        link.tried(1).await;
        if let Some((direction, bytes)) = cut {
            link.proxy.reset_after(direction, bytes);
        }
        link.proxy.heal();
        link.all_delivered().await;
        // A round's traffic varies (how the backlog splits into calls): if it ended before
        // the cut, more referrals carry the traffic on until the cut falls.
        for _ in 0..20 {
            if !link.proxy.reset_armed() {
                break;
            }
            link.submit(BATCH).await;
            link.all_delivered().await;
        }
        let after = link.proxy.stats();
        println!("reset round {cut:?}: {after:?}");
        if let Some((direction, bytes)) = cut {
            assert!(!link.proxy.reset_armed(), "the cut fell");
            assert_eq!(
                after.resets,
                before.resets + 1,
                "the connection was cut {bytes} bytes into the {direction:?} traffic"
            );
        }
        (
            after.to_node - before.to_node,
            after.from_node - before.from_node,
        )
    };
    let (to_node, from_node) = round(&mut link, None).await;
    for tenths in [1, 2, 3, 4, 5, 7] {
        round(&mut link, Some((Direction::ToNode, to_node * tenths / 10))).await;
        round(
            &mut link,
            Some((Direction::FromNode, from_node * tenths / 10)),
        )
        .await;
    }
    link.check().await;
    link.fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_far_longer_than_the_retry_backoff_end_in_delivery() {
    let mut link = Link::start().await;
    link.submit(1).await;
    link.all_delivered().await;
    let length = partition_length();
    for round in 0..3 {
        link.proxy.partition();
        let refused = link.proxy.stats().refused;
        let started = Instant::now();
        // Referrals keep coming during the partition.
        let pace = length / (2 * BATCH as u32 + 1);
        for _ in 0..2 * BATCH + 1 {
            link.submit(1).await;
            tokio::time::sleep(pace).await;
        }
        tokio::time::sleep(length.saturating_sub(started.elapsed())).await;
        let tried = link.proxy.stats().refused - refused;
        link.proxy.heal();
        let healed = Instant::now();
        link.all_delivered().await;
        println!(
            "partition {round} of {length:?}: {tried} connections refused; delivered {:?} after healing",
            healed.elapsed()
        );
        assert!(
            tried >= 2,
            "Zambia kept trying during the partition ({tried} connections refused)"
        );
    }
    link.check().await;
    link.fed.shutdown().await;
}
