//! The referral workflow across two nodes: received → accepted → in progress → closed, and
//! received → declined, moved by the receiving node, followed by the sender with its history.

mod common;

use common::*;
use kinbridge_core::envelope::danger::seal_unchecked;
use kinbridge_core::{MessageId, UnixMillis};
use kinbridge_proto::v1 as pb;
use tonic::Code;

fn update(sequence: u64, state: pb::ReferralState, code: &str) -> pb::UpdateReferralStatusRequest {
    pb::UpdateReferralStatusRequest {
        sequence,
        state: state as i32,
        code: code.into(),
    }
}

#[tokio::test]
async fn a_referral_from_submission_to_closed_with_its_history_at_the_sender() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let mut malawi = fed.local("MW-DSW", "caseworker");
    let sent = deliver_referrals(&mut zambia, "MW-DSW", 2).await;
    let (referral, other) = (sent[0].0.clone(), sent[1].0.clone());
    let items = open_inbox(&mut malawi).await;
    let seq = |id: &str| {
        items
            .iter()
            .find(|i| i.message_id == id)
            .map(|i| i.sequence)
            .expect("in Malawi's inbox")
    };

    // Malawi moves the first referral along; each step is a signed message back to Zambia.
    let mut status_messages = Vec::new();
    for (state, code) in [
        (pb::ReferralState::Accepted, ""),
        (pb::ReferralState::InProgress, ""),
    ] {
        status_messages.push(
            malawi
                .update_referral_status(update(seq(&referral), state, code))
                .await
                .expect("allowed")
                .into_inner()
                .message_id,
        );
    }
    let skipped = malawi
        .update_referral_status(update(seq(&referral), pb::ReferralState::Accepted, ""))
        .await
        .expect_err("cannot go back");
    assert_eq!(
        refusal(&skipped),
        (Code::FailedPrecondition, "workflow-not-allowed".into())
    );
    let no_outcome = malawi
        .update_referral_status(update(seq(&referral), pb::ReferralState::Closed, ""))
        .await
        .expect_err("closing needs an outcome");
    assert_eq!(refusal(&no_outcome).1, "workflow-bad-code");
    status_messages.push(
        malawi
            .update_referral_status(update(
                seq(&referral),
                pb::ReferralState::Closed,
                "reunified",
            ))
            .await
            .expect("closed")
            .into_inner()
            .message_id,
    );
    // The other is declined.
    status_messages.push(
        malawi
            .update_referral_status(update(
                seq(&other),
                pb::ReferralState::Declined,
                "no-capacity",
            ))
            .await
            .expect("declined")
            .into_inner()
            .message_id,
    );
    for id in &status_messages {
        assert_eq!(
            wait_delivery(&mut malawi, id).await.state,
            pb::DeliveryState::Delivered as i32
        );
    }

    // Zambia, the sender, sees where each stands and how it got there.
    let status = zambia
        .get_referral_status(pb::GetReferralStatusRequest {
            referral_id: referral.clone(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state, pb::ReferralState::Closed as i32);
    let steps: Vec<(i32, String, String)> = status
        .history
        .iter()
        .map(|c| (c.state, c.code.clone(), c.by.clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (
                pb::ReferralState::Received as i32,
                String::new(),
                "MW-DSW".into()
            ),
            (
                pb::ReferralState::Accepted as i32,
                String::new(),
                "MW-DSW".into()
            ),
            (
                pb::ReferralState::InProgress as i32,
                String::new(),
                "MW-DSW".into()
            ),
            (
                pb::ReferralState::Closed as i32,
                "reunified".into(),
                "MW-DSW".into()
            ),
        ]
    );
    let declined = zambia
        .get_referral_status(pb::GetReferralStatusRequest { referral_id: other })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(declined.state, pb::ReferralState::Declined as i32);
    assert_eq!(
        declined.history.last().map(|c| c.code.as_str()),
        Some("no-capacity")
    );
    // Malawi sees the same.
    let at_malawi = malawi
        .get_referral_status(pb::GetReferralStatusRequest {
            referral_id: referral.clone(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(at_malawi.state, pb::ReferralState::Closed as i32);

    // Both logs record every step, verify, and reconcile.
    let zm = export_and_verify(
        &fed.pki,
        "ZM-DSW",
        fed.node("ZM-DSW").local_addr,
        &fed.dir.path().join("zm.jsonl"),
    )
    .await;
    let mw = export_and_verify(
        &fed.pki,
        "MW-DSW",
        fed.node("MW-DSW").local_addr,
        &fed.dir.path().join("mw.jsonl"),
    )
    .await;
    let at_zm: Vec<String> = entries(&zm)
        .into_iter()
        .filter(|e| e.event == pb::AuditEvent::ReferralStatus as i32 && e.message_id == referral)
        .map(|e| e.reason)
        .collect();
    assert_eq!(at_zm, ["accepted", "in_progress", "closed:reunified"]);
    assert_eq!(count(&entries(&mw), pb::AuditEvent::ReferralStatus), 4);
    let report =
        kinbridge_audit::reconcile::reconcile("ZM-DSW", &zm.entries, "MW-DSW", &mw.entries);
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
    assert_eq!(report.matched, 6);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_status_update_about_someone_elses_referral_is_refused() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut d = draft("MW-DSW", "ZM-DSW");
    d.kind = pb::MessageKind::StatusUpdate;
    d.data_categories = vec![];
    d.consent = None;
    let payload = prost::Message::encode_to_vec(&pb::StatusUpdate {
        referral_id: MessageId::random().to_string(),
        state: pb::ReferralState::Closed as i32,
        code: "reunified".into(),
        at_ms: UnixMillis::now().0,
    });
    let envelope = seal_unchecked(&d, payload, &fed.signing_key("MW-DSW"));
    let receipt = fed
        .peer_client_as("ZM-DSW", "MW-DSW")
        .deliver(pb::DeliverRequest {
            envelope: Some(envelope.into()),
        })
        .await
        .expect("answered")
        .into_inner()
        .receipt
        .expect("receipt");
    let body: pb::ReceiptBody = prost::Message::decode(receipt.body.as_slice()).expect("body");
    assert_eq!(body.status, pb::ReceiptStatus::Refused as i32);
    assert_eq!(body.refusal_reason, "unknown-referral");
    fed.shutdown().await;
}

#[tokio::test]
async fn a_case_transfer_for_return_rides_the_same_machinery() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let mut request = submit_request("MW-DSW");
    request.kind = pb::MessageKind::CaseTransfer as i32;
    request.purpose = pb::Purpose::ReturnAndReintegration as i32;
    if let Some(scope) = request.consent.as_mut() {
        scope.purposes = vec![pb::Purpose::ReturnAndReintegration as i32];
    }
    let id = submit_delivered(&mut zambia, request).await;
    let mut malawi = fed.local("MW-DSW", "caseworker");
    let item = open_inbox(&mut malawi).await.remove(0);
    assert_eq!(item.kind, pb::MessageKind::CaseTransfer as i32);
    assert_eq!(item.referral, Some(sample_referral()));
    let accepted = malawi
        .update_referral_status(update(item.sequence, pb::ReferralState::Accepted, ""))
        .await
        .expect("accept")
        .into_inner();
    wait_delivery(&mut malawi, &accepted.message_id).await;
    let status = zambia
        .get_referral_status(pb::GetReferralStatusRequest { referral_id: id })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state, pb::ReferralState::Accepted as i32);
    fed.shutdown().await;
}
