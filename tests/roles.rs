//! Every local RPC checks the role the client's certificate names, and a caseworker sees only
//! its own unit's cases. Each denial answers PERMISSION_DENIED with the reason `role-denied`
//! or `other-unit` and is recorded in the audit log; nothing is changed.

mod common;

use common::*;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::admin_service_client::AdminServiceClient;
use kinbridge_proto::v1::audit_service_client::AuditServiceClient;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tonic::Code;

fn denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>, reason: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(
        refusal(&status),
        (Code::PermissionDenied, reason.to_owned()),
        "{what}: {}",
        status.message()
    );
}

#[tokio::test]
async fn each_role_is_refused_what_it_may_not_do() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut caseworker = fed.local("ZM-DSW", "caseworker");
    let delivered = deliver_referrals(&mut caseworker, "MW-DSW", 1).await;
    let message_id = delivered[0].0.clone();

    // An auditor reads the log and never a payload: no submission, inbox or delivery.
    let mut auditor = LocalServiceClient::new(fed.channel("ZM-DSW", "auditor"));
    denied(
        auditor.submit_referral(submit_request("MW-DSW")).await,
        "role-denied",
        "auditor submits",
    );
    denied(
        auditor.list_inbox(pb::ListInboxRequest::default()).await,
        "role-denied",
        "auditor lists the inbox",
    );
    denied(
        auditor
            .get_delivery(pb::GetDeliveryRequest {
                message_id: message_id.clone(),
                wait_ms: 0,
            })
            .await,
        "role-denied",
        "auditor reads a delivery (its envelope holds the payload)",
    );
    denied(
        AdminServiceClient::new(fed.channel("ZM-DSW", "auditor"))
            .rotate_key(pb::RotateKeyRequest::default())
            .await,
        "role-denied",
        "auditor rotates the key",
    );
    // ... but it reads the log and the keys.
    AuditServiceClient::new(fed.channel("ZM-DSW", "auditor"))
        .get_checkpoint(pb::GetCheckpointRequest::default())
        .await
        .expect("an auditor reads checkpoints");
    AdminServiceClient::new(fed.channel("ZM-DSW", "auditor"))
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("an auditor lists the public keys");

    // An admin manages keys, and reads no case.
    let mut admin = LocalServiceClient::new(fed.channel("ZM-DSW", "admin"));
    denied(
        admin.submit_referral(submit_request("MW-DSW")).await,
        "role-denied",
        "admin submits",
    );
    denied(
        admin.list_inbox(pb::ListInboxRequest::default()).await,
        "role-denied",
        "admin lists the inbox",
    );

    // A caseworker and a linked system do cases, not keys or the log.
    for role in ["caseworker", "system"] {
        denied(
            AdminServiceClient::new(fed.channel("ZM-DSW", role))
                .rotate_key(pb::RotateKeyRequest::default())
                .await,
            "role-denied",
            &format!("{role} rotates the key"),
        );
        denied(
            AdminServiceClient::new(fed.channel("ZM-DSW", role))
                .revoke_key(pb::RevokeKeyRequest {
                    key_id: "ZM-DSW-dev1".into(),
                    reason: "compromised".into(),
                    ..Default::default()
                })
                .await,
            "role-denied",
            &format!("{role} revokes a key"),
        );
        denied(
            AdminServiceClient::new(fed.channel("ZM-DSW", role))
                .list_keys(pb::ListKeysRequest {})
                .await,
            "role-denied",
            &format!("{role} lists keys"),
        );
        denied(
            AdminServiceClient::new(fed.channel("ZM-DSW", role))
                .list_peers(pb::ListPeersRequest {})
                .await,
            "role-denied",
            &format!("{role} lists peers"),
        );
        denied(
            AuditServiceClient::new(fed.channel("ZM-DSW", role))
                .export_log(pb::ExportLogRequest::default())
                .await,
            "role-denied",
            &format!("{role} exports the audit log"),
        );
    }

    // A caseworker of another unit sees neither the delivery nor its status.
    let mut other = LocalServiceClient::new(fed.channel_as(
        "ZM-DSW",
        "lusaka-caseworker",
        "caseworker",
        Some("lusaka-district"),
    ));
    denied(
        other
            .get_delivery(pb::GetDeliveryRequest {
                message_id: message_id.clone(),
                wait_ms: 0,
            })
            .await,
        "other-unit",
        "a caseworker reads another unit's delivery",
    );
    denied(
        other
            .get_referral_status(pb::GetReferralStatusRequest {
                referral_id: message_id.clone(),
            })
            .await,
        "other-unit",
        "a caseworker reads another unit's referral status",
    );
    // The linked case-management system sees every unit's.
    let mut system = LocalServiceClient::new(fed.channel("ZM-DSW", "system"));
    system
        .get_delivery(pb::GetDeliveryRequest {
            message_id: message_id.clone(),
            wait_ms: 0,
        })
        .await
        .expect("the system reads every unit's deliveries");

    // A caseworker certificate without a unit is not a valid local-client certificate.
    let mut unitless =
        LocalServiceClient::new(fed.channel_as("ZM-DSW", "nowhere", "caseworker", None));
    let status = unitless
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .expect_err("unitless caseworker");
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    assert!(status.message().contains("unit"), "{}", status.message());

    // Every denial is in the audit log, naming who was refused and why.
    let export = export_and_verify(
        &fed.pki,
        "ZM-DSW",
        fed.node("ZM-DSW").local_addr,
        &fed.dir.path().join("zm-roles.jsonl"),
    )
    .await;
    let refused: Vec<_> = entries(&export)
        .into_iter()
        .filter(|e| e.event == pb::AuditEvent::Refused as i32)
        .collect();
    let by = |actor: &str, reason: &str| {
        refused
            .iter()
            .filter(|e| e.actor == actor && e.reason == reason)
            .count()
    };
    assert_eq!(by("auditor-1", "role-denied"), 4);
    assert_eq!(by("admin-1", "role-denied"), 2);
    assert_eq!(by("caseworker-1", "role-denied"), 5);
    assert_eq!(by("system-1", "role-denied"), 5);
    assert_eq!(by("lusaka-caseworker", "other-unit"), 2);
    fed.shutdown().await;
}

#[tokio::test]
async fn referrals_reach_the_unit_they_are_addressed_to() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let mut to_mangochi = submit_request("MW-DSW");
    to_mangochi.recipient_unit = "mangochi-district".into();
    let addressed = submit_delivered(&mut zambia, to_mangochi).await;
    let intake = submit_delivered(&mut zambia, submit_request("MW-DSW")).await;

    // Malawi's intake caseworker sees the referral addressed to no unit only.
    let mut intake_worker = fed.local("MW-DSW", "caseworker");
    let seen: Vec<_> = whole_inbox(&mut intake_worker)
        .await
        .into_iter()
        .map(|i| (i.message_id, i.unit))
        .collect();
    assert_eq!(seen, vec![(intake.clone(), "intake".to_owned())]);
    // Mangochi's caseworker sees its own, and is refused the intake's.
    let mut mangochi = LocalServiceClient::new(fed.channel_as(
        "MW-DSW",
        "mangochi-1",
        "caseworker",
        Some("mangochi-district"),
    ));
    let items = whole_inbox(&mut mangochi).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].message_id, addressed);
    assert_eq!(items[0].unit, "mangochi-district");
    let intake_seq = whole_inbox(&mut fed.local("MW-DSW", "system"))
        .await
        .into_iter()
        .find(|i| i.message_id == intake)
        .expect("the system sees every unit's items")
        .sequence;
    denied(
        mangochi
            .acknowledge_inbox_item(pb::AcknowledgeInboxItemRequest {
                sequence: intake_seq,
            })
            .await,
        "other-unit",
        "a caseworker acknowledges another unit's item",
    );
    denied(
        mangochi
            .update_referral_status(pb::UpdateReferralStatusRequest {
                sequence: intake_seq,
                state: pb::ReferralState::Accepted as i32,
                code: String::new(),
            })
            .await,
        "other-unit",
        "a caseworker accepts another unit's referral",
    );
    // A bad unit name is refused before anything is sealed.
    let mut bad = submit_request("MW-DSW");
    bad.recipient_unit = "Mangochi District".into();
    let status = zambia.submit_referral(bad).await.expect_err("bad unit");
    assert_eq!(
        refusal(&status),
        (Code::InvalidArgument, "bad-unit".to_owned())
    );
    fed.shutdown().await;
}
