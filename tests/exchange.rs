//! A referral submitted at one node lands in another's inbox, and the sender holds the
//! recipient's signed receipt, which verifies.

mod common;

use common::*;
use futures::StreamExt;
use kinbridge_core::{EnvelopeDigest, Keyring, MessageId, PeerKey, verify_receipt};
use kinbridge_proto::v1 as pb;

#[tokio::test]
async fn referral_crosses_the_border_with_a_verifiable_receipt() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let mut malawi = fed.local("MW-DSW", "system");

    let mut watch = malawi
        .watch_inbox(pb::WatchInboxRequest { after_sequence: 0 })
        .await
        .expect("watch")
        .into_inner();

    let submitted = zambia
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(submitted.state, pb::DeliveryState::Queued as i32);

    let delivery = wait_delivery(&mut zambia, &submitted.message_id).await;
    assert_eq!(
        delivery.state,
        pb::DeliveryState::Delivered as i32,
        "{}",
        delivery.last_error
    );
    let receipt = delivery.receipt.expect("receipt");
    let envelope = delivery.envelope.expect("envelope");

    // The receipt verifies independently, from Malawi's public key alone.
    let files = fed.files("MW-DSW");
    let pem = std::fs::read_to_string(files.signing_pub()).expect("pub");
    let ring = Keyring::new(vec![
        PeerKey::from_public_key_pem(files.signing_key_id(), &pem).expect("key"),
    ]);
    let verified = verify_receipt(
        &receipt.into(),
        &node_id("ZM-DSW"),
        MessageId::new(&submitted.message_id).expect("id"),
        EnvelopeDigest::compute(&envelope.header, &envelope.signature),
        &node_id("MW-DSW"),
        &ring,
    )
    .expect("receipt verifies");
    assert_eq!(verified.status, pb::ReceiptStatus::Accepted);

    // It arrives on the watch stream, whole.
    let item = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("in time")
        .expect("item")
        .expect("ok");
    assert_eq!(item.message_id, submitted.message_id);
    assert_eq!(item.sender, "ZM-DSW");
    assert_eq!(item.referral, Some(sample_referral()));
    assert_eq!(
        item.data_categories,
        vec![
            pb::DataCategory::Identity as i32,
            pb::DataCategory::ProtectionConcerns as i32
        ]
    );

    // Acknowledged items leave the unacknowledged list but stay in the inbox.
    malawi
        .acknowledge_inbox_item(pb::AcknowledgeInboxItemRequest {
            sequence: item.sequence,
        })
        .await
        .expect("ack");
    let open = malawi
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(open.is_empty());
    let all = whole_inbox(&mut malawi).await;
    assert_eq!(all.len(), 1);
    assert!(all[0].acknowledged);
    // A new stream from the start brings unacknowledged items again, never acknowledged ones.
    let second = zambia
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect("submit")
        .into_inner();
    wait_delivery(&mut zambia, &second.message_id).await;
    let mut again = malawi
        .watch_inbox(pb::WatchInboxRequest { after_sequence: 0 })
        .await
        .expect("watch")
        .into_inner();
    let next = tokio::time::timeout(WAIT, again.next())
        .await
        .expect("in time")
        .expect("item")
        .expect("ok");
    assert_eq!(
        next.message_id, second.message_id,
        "the acknowledged item does not come again"
    );
    // Graceful shutdown ends the open inbox streams instead of waiting for their clients.
    tokio::time::timeout(WAIT, fed.shutdown())
        .await
        .expect("shutdown is not held up by open inbox streams");
    drop((watch, again));
}

#[tokio::test]
async fn local_requests_are_checked() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let cases = [
        (
            pb::SubmitReferralRequest {
                recipient: "ZW-DSD".into(),
                ..submit_request("MW-DSW")
            },
            "unknown-recipient",
        ),
        (
            pb::SubmitReferralRequest {
                recipient: "malawi".into(),
                ..submit_request("MW-DSW")
            },
            "bad-recipient",
        ),
        (
            pb::SubmitReferralRequest {
                consent: None,
                ..submit_request("MW-DSW")
            },
            "consent-missing",
        ),
        (
            pb::SubmitReferralRequest {
                purpose: 0,
                ..submit_request("MW-DSW")
            },
            "bad-purpose",
        ),
        (
            pb::SubmitReferralRequest {
                referral: None,
                ..submit_request("MW-DSW")
            },
            "no-referral",
        ),
    ];
    for (request, reason) in cases {
        let status = zambia.submit_referral(request).await.expect_err("refused");
        assert_eq!(refusal(&status).1, reason, "{status:?}");
        assert!(!status.message().is_empty());
    }
    // An auditor may not submit referrals.
    let mut auditor = fed.local("ZM-DSW", "auditor");
    let status = auditor
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect_err("refused");
    assert_eq!(
        refusal(&status),
        (tonic::Code::PermissionDenied, "role-denied".into())
    );
    // And the node still serves.
    let ok = zambia
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect("submit")
        .into_inner();
    let delivery = wait_delivery(&mut zambia, &ok.message_id).await;
    assert_eq!(delivery.state, pb::DeliveryState::Delivered as i32);
    fed.shutdown().await;
}
