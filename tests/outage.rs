//! A border post's link goes down: the receiving node is away for minutes while referrals are
//! submitted. When it returns, every one is delivered, in submission order, none twice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kinbridge_proto::v1 as pb;

/// How long the receiving node stays down (KINBRIDGE_OUTAGE_SECS, default 180).
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("KINBRIDGE_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180),
    )
}

/// Referrals submitted during the outage.
const SUBMISSIONS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_down_for_minutes_gets_everything_in_order_once_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = TwoNodes::start(dir.path());
    let mut zambia = nodes.client("ZM-DSW", "caseworker");
    nodes.kill_malawi();

    // Referrals keep coming at the border post while Malawi is unreachable.
    let pace = outage() / SUBMISSIONS as u32;
    let mut submitted = Vec::with_capacity(SUBMISSIONS);
    for _ in 0..SUBMISSIONS {
        let id = zambia
            .submit_referral(submit_request("MW-DSW"))
            .await
            .expect("accepted for delivery")
            .into_inner()
            .message_id;
        submitted.push(id);
        tokio::time::sleep(pace).await;
    }
    let queued = zambia
        .get_delivery(pb::GetDeliveryRequest {
            message_id: submitted[0].clone(),
            wait_ms: 0,
        })
        .await
        .expect("state")
        .into_inner();
    assert_eq!(queued.state, pb::DeliveryState::Queued as i32);
    assert!(
        queued.attempts > 1,
        "Zambia kept retrying: {} attempts",
        queued.attempts
    );

    nodes.start_malawi();
    let back = Instant::now();
    for id in &submitted {
        let d = wait_delivery(&mut zambia, id).await;
        assert_eq!(
            d.state,
            pb::DeliveryState::Delivered as i32,
            "{id}: {}",
            d.last_error
        );
    }
    println!(
        "catch-up: {SUBMISSIONS} referrals delivered {:?} after the peer returned",
        back.elapsed()
    );

    let mut malawi = nodes.client("MW-DSW", "caseworker");
    let received: Vec<String> = open_inbox(&mut malawi)
        .await
        .into_iter()
        .map(|i| i.message_id)
        .collect();
    assert_eq!(
        received, submitted,
        "every referral once, in the order submitted"
    );
}
