//! Backpressure: a caller over its rate and a full outbox get RESOURCE_EXHAUSTED with a retry
//! hint; the node keeps serving, and a rate-limited sender's deliveries still all arrive.

mod common;

use common::*;
use kinbridge_grpc::status::RETRY_AFTER_METADATA;
use kinbridge_proto::v1 as pb;
use kinbridge_service::ratelimit::Rate;
use tonic::Code;

fn retry_hint(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_client_over_its_rate_is_told_when_to_retry() {
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], |c| {
        if c.node_id.as_str() == "ZM-DSW" {
            c.client_rate = Rate {
                per_second: 0.5,
                burst: 2.0,
            };
        }
    })
    .await;
    let mut caseworker = fed.local("ZM-DSW", "caseworker");
    for _ in 0..2 {
        caseworker
            .submit_referral(submit_request("MW-DSW"))
            .await
            .expect("within the burst");
    }
    let status = caseworker
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect_err("over the rate");
    assert_eq!(
        refusal(&status),
        (Code::ResourceExhausted, "rate-limited".into())
    );
    assert!(
        retry_hint(&status).is_some_and(|ms| ms > 0 && ms <= 2000),
        "{status:?}"
    );
    // Another client is not held back: the node keeps serving.
    let mut system = fed.local("ZM-DSW", "system");
    system
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .expect("still serving");
    fed.shutdown().await;
}

#[tokio::test]
async fn a_rate_limited_sender_still_delivers_everything_in_order() {
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], |c| {
        if c.node_id.as_str() == "MW-DSW" {
            c.peer_rate = Rate {
                per_second: 5.0,
                burst: 1.0,
            };
        }
    })
    .await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            zambia
                .submit_referral(submit_request("MW-DSW"))
                .await
                .expect("submit")
                .into_inner()
                .message_id,
        );
    }
    for id in &ids {
        assert_eq!(
            wait_delivery(&mut zambia, id).await.state,
            pb::DeliveryState::Delivered as i32
        );
    }
    let received: Vec<String> = open_inbox(&mut fed.local("MW-DSW", "caseworker"))
        .await
        .into_iter()
        .map(|i| i.message_id)
        .collect();
    assert_eq!(received, ids);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_full_outbox_refuses_new_submissions_until_it_drains() {
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], |c| {
        if c.node_id.as_str() == "ZM-DSW" {
            c.max_queued = 2;
            // Malawi unreachable: nothing leaves the outbox.
            for peer in &mut c.peers {
                peer.endpoint = Some("https://127.0.0.1:1".into());
            }
        }
    })
    .await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    for _ in 0..2 {
        zambia
            .submit_referral(submit_request("MW-DSW"))
            .await
            .expect("room in the outbox");
    }
    let status = zambia
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect_err("outbox full");
    assert_eq!(
        refusal(&status),
        (Code::ResourceExhausted, "outbox-full".into())
    );
    assert!(retry_hint(&status).is_some());
    fed.shutdown().await;
}
