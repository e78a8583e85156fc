//! Consent at both ends, the firewall from both sides, onward transfer along a route, and
//! withdrawal that deletes the payload from every node of the route.

mod common;

use common::*;
use kinbridge_core::envelope::danger::seal_unchecked;
use kinbridge_core::{EnvelopeDigest, Keyring, MessageId, PeerKey, UnixMillis, verify_receipt};
use kinbridge_proto::v1 as pb;
use tonic::Code;

const DAY: i64 = 86_400_000;
/// Thailand's immigration police: an enforcement authority in the federation.
const ENFORCEMENT: &str = "TH-IMM";

/// Every node knows TH-IMM as immigration enforcement, and TH-IMM knows itself as such.
fn tag_enforcement(config: &mut kinbridge_node::NodeConfig) {
    for peer in &mut config.peers {
        if peer.node_id.as_str() == ENFORCEMENT {
            peer.tags = vec![kinbridge_core::firewall::Tag::ImmigrationEnforcement];
        }
    }
    if config.node_id.as_str() == ENFORCEMENT {
        config.tags = vec![kinbridge_core::firewall::Tag::ImmigrationEnforcement];
    }
}

fn with_scope(to: &str, f: impl Fn(&mut pb::ConsentScope)) -> pb::SubmitReferralRequest {
    let mut request = submit_request(to);
    if let Some(scope) = request.consent.as_mut() {
        f(scope);
    }
    request
}

fn receiver_keyring(fed: &Federation, node: &str) -> Keyring {
    let files = fed.files(node);
    let pem = std::fs::read_to_string(files.signing_pub()).expect("pub");
    Keyring::new(vec![
        PeerKey::from_public_key_pem(files.signing_key_id(), &pem).expect("key"),
    ])
}

#[tokio::test]
async fn the_sender_refuses_what_the_consent_does_not_cover() {
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW", ENFORCEMENT], tag_enforcement).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let now = UnixMillis::now().0;
    let cases: Vec<(pb::SubmitReferralRequest, Code, &str, &str)> = vec![
        (
            with_scope("MW-DSW", |s| s.expires_at_ms = now - 1),
            Code::FailedPrecondition,
            "consent-expired",
            "expired",
        ),
        (
            with_scope("MW-DSW", |s| s.valid_from_ms = now + DAY),
            Code::FailedPrecondition,
            "consent-not-yet-valid",
            "not valid yet",
        ),
        (
            with_scope("MW-DSW", |s| {
                s.purposes = vec![pb::Purpose::FamilyTracing as i32]
            }),
            Code::FailedPrecondition,
            "purpose-not-covered",
            "PURPOSE_SERVICE_REFERRAL",
        ),
        (
            with_scope("MW-DSW", |s| {
                s.categories = vec![pb::DataCategory::Identity as i32]
            }),
            Code::FailedPrecondition,
            "category-not-covered",
            "DATA_CATEGORY_PROTECTION_CONCERNS",
        ),
        (
            with_scope("MW-DSW", |s| s.recipients = vec!["ZW-DSD".into()]),
            Code::FailedPrecondition,
            "recipient-not-permitted",
            "MW-DSW",
        ),
        (
            with_scope("MW-DSW", |s| {
                s.given_by = pb::ConsentGiver::BestInterestsDetermination as i32
            }),
            Code::FailedPrecondition,
            "best-interests-without-authority",
            "determining_authority",
        ),
        // The firewall: whatever the consent says, nothing goes to immigration enforcement.
        (
            with_scope(ENFORCEMENT, |_| {}),
            Code::PermissionDenied,
            "firewall",
            ENFORCEMENT,
        ),
    ];
    for (request, code, reason, names) in cases {
        let status = zambia
            .submit_referral(request)
            .await
            .expect_err("must be refused");
        assert_eq!(refusal(&status), (code, reason.to_owned()), "{status:?}");
        assert!(
            status.message().contains(names),
            "'{}' does not name {names}",
            status.message()
        );
    }
    // A best-interests determination with its authority and legal basis goes through.
    let bid = with_scope("MW-DSW", |s| {
        s.given_by = pb::ConsentGiver::BestInterestsDetermination as i32;
        s.determining_authority = "Chipata District BID Committee".into();
        s.legal_basis = "Children's Code Act 2022".into();
    });
    let ok = zambia
        .submit_referral(bid)
        .await
        .expect("covered")
        .into_inner();
    assert_eq!(
        wait_delivery(&mut zambia, &ok.message_id).await.state,
        pb::DeliveryState::Delivered as i32
    );

    // Every refusal is in Zambia's audit log.
    let export = export_and_verify(
        &fed.pki,
        "ZM-DSW",
        fed.node("ZM-DSW").local_addr,
        &fed.dir.path().join("zm.jsonl"),
    )
    .await;
    let refused: Vec<String> = entries(&export)
        .into_iter()
        .filter(|e| e.event == pb::AuditEvent::Refused as i32)
        .map(|e| e.reason)
        .collect();
    for reason in [
        "consent-expired",
        "purpose-not-covered",
        "category-not-covered",
        "firewall",
        "best-interests-without-authority",
    ] {
        assert!(
            refused.iter().any(|r| r == reason),
            "{reason} not logged: {refused:?}"
        );
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn the_receiver_refuses_with_a_signed_negative_receipt() {
    let fed = Federation::start_with(
        &["ZM-DSW", "MW-DSW", "ZW-DSD", ENFORCEMENT],
        tag_enforcement,
    )
    .await;
    let zm_key = fed.signing_key("ZM-DSW");
    let now = UnixMillis::now().0;
    let scoped = |to: &str,
                  f: &dyn Fn(&mut pb::ConsentScope),
                  g: &dyn Fn(&mut kinbridge_core::EnvelopeDraft)| {
        let mut d = draft("ZM-DSW", to);
        if let Some(s) = d.consent.as_mut() {
            f(s);
        }
        g(&mut d);
        d
    };
    let none = |_: &mut kinbridge_core::EnvelopeDraft| {};
    let cases: Vec<(&str, kinbridge_core::EnvelopeDraft, &str)> = vec![
        (
            "MW-DSW",
            scoped("MW-DSW", &|s| s.expires_at_ms = now - 1, &none),
            "consent-expired",
        ),
        (
            "MW-DSW",
            scoped("MW-DSW", &|s| s.valid_from_ms = now + DAY, &none),
            "consent-not-yet-valid",
        ),
        (
            "MW-DSW",
            scoped(
                "MW-DSW",
                &|s| s.purposes = vec![pb::Purpose::AlternativeCare as i32],
                &none,
            ),
            "purpose-not-covered",
        ),
        (
            "MW-DSW",
            scoped(
                "MW-DSW",
                &|s| s.categories = vec![pb::DataCategory::Identity as i32],
                &none,
            ),
            "category-not-covered",
        ),
        (
            "MW-DSW",
            scoped("MW-DSW", &|s| s.recipients = vec!["ZW-DSD".into()], &none),
            "recipient-not-permitted",
        ),
        (
            "MW-DSW",
            scoped(
                "MW-DSW",
                &|s| s.given_by = pb::ConsentGiver::BestInterestsDetermination as i32,
                &none,
            ),
            "best-interests-without-authority",
        ),
        // Passed on from Zimbabwe without the scope naming Malawi for onward transfer.
        (
            "MW-DSW",
            scoped("MW-DSW", &|s| s.recipients.push("ZM-DSW".into()), &|d| {
                d.custody = vec![node_id("ZW-DSD")]
            }),
            "onward-transfer-not-permitted",
        ),
        (
            ENFORCEMENT,
            scoped(
                ENFORCEMENT,
                &|s| s.recipients = vec![ENFORCEMENT.into()],
                &none,
            ),
            "firewall",
        ),
    ];
    for (to, d, reason) in cases {
        let envelope = seal_unchecked(&d, payload(), &zm_key);
        let digest = envelope.digest();
        let receipt = fed
            .peer_client_as(to, "ZM-DSW")
            .deliver(pb::DeliverRequest {
                envelope: Some(envelope.into()),
            })
            .await
            .unwrap_or_else(|s| {
                panic!("{reason}: a negative receipt is an answer, not an error: {s:?}")
            })
            .into_inner()
            .receipt
            .expect("receipt");
        let verified = verify_receipt(
            &receipt.into(),
            &node_id("ZM-DSW"),
            d.message_id,
            digest,
            &node_id(to),
            &receiver_keyring(&fed, to),
        )
        .expect("the negative receipt is signed by the receiver");
        assert_eq!(verified.status, pb::ReceiptStatus::Refused, "{reason}");
        assert_eq!(verified.refusal_reason, reason);
        assert!(!verified.refusal_detail.is_empty());
    }
    // Nothing refused was kept, and every refusal is in the receivers' logs.
    assert!(
        open_inbox(&mut fed.local("MW-DSW", "caseworker"))
            .await
            .is_empty()
    );
    let export = export_and_verify(
        &fed.pki,
        "MW-DSW",
        fed.node("MW-DSW").local_addr,
        &fed.dir.path().join("mw.jsonl"),
    )
    .await;
    let refused = entries(&export)
        .into_iter()
        .filter(|e| e.event == pb::AuditEvent::Refused as i32)
        .count();
    assert_eq!(refused, 7);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_receiver_policy_refusal_comes_back_to_the_submitter() {
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], |c| {
        if c.node_id.as_str() == "MW-DSW" {
            c.accepted_purposes = Some(vec![pb::Purpose::FamilyTracing]);
        }
    })
    .await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let id = zambia
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect("the consent covers it")
        .into_inner()
        .message_id;
    let d = wait_delivery(&mut zambia, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Refused as i32);
    assert!(
        d.last_error.contains("purpose-not-accepted"),
        "{}",
        d.last_error
    );
    let envelope = d.envelope.expect("envelope");
    let verified = verify_receipt(
        &d.receipt.expect("negative receipt").into(),
        &node_id("ZM-DSW"),
        MessageId::new(&id).expect("id"),
        EnvelopeDigest::compute(&envelope.header, &envelope.signature),
        &node_id("MW-DSW"),
        &receiver_keyring(&fed, "MW-DSW"),
    )
    .expect("signed");
    assert_eq!(verified.status, pb::ReceiptStatus::Refused);
    let export = export_and_verify(
        &fed.pki,
        "ZM-DSW",
        fed.node("ZM-DSW").local_addr,
        &fed.dir.path().join("zm.jsonl"),
    )
    .await;
    assert!(
        entries(&export)
            .iter()
            .any(|e| e.event == pb::AuditEvent::DeliveryFailed as i32
                && e.reason == "purpose-not-accepted")
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn an_enforcement_client_may_refer_a_child_but_never_read() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 1).await;
    // A border police terminal linked to Malawi's node.
    let dir = fed.dir.path().join("police");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("police.crt"), dir.join("police.key"));
    kinbridge_node::devpki::issue_local_client(
        &fed.pki,
        &node_id("MW-DSW"),
        "border-police-1",
        "system",
        None,
        &["immigration-enforcement"],
        &cert,
        &key,
    )
    .expect("issue");
    let files = fed.files("MW-DSW");
    let mut police = kinbridge_grpc::client::local_client(
        &fed.node("MW-DSW").local_addr.to_string(),
        &files.ca_cert(),
        &cert,
        &key,
    )
    .expect("client");
    let status = police
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(
        refusal(&status),
        (Code::PermissionDenied, "firewall".into())
    );
    let status = police
        .watch_inbox(pb::WatchInboxRequest::default())
        .await
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(refusal(&status).1, "firewall");
    // One-way: it may refer a child to child protection in Zambia.
    let referred = police
        .submit_referral(submit_request("ZM-DSW"))
        .await
        .expect("may refer")
        .into_inner();
    assert_eq!(referred.state, pb::DeliveryState::Queued as i32);
    let status = police
        .get_delivery(pb::GetDeliveryRequest {
            message_id: referred.message_id,
            wait_ms: 0,
        })
        .await
        .expect_err("but not read back");
    assert_eq!(refusal(&status).1, "firewall");
    fed.shutdown().await;
}

#[tokio::test]
async fn onward_transfer_and_withdrawal_along_a_three_node_route() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW", "ZW-DSD"]).await;
    let marker = b"MARKER-CHILD-7f3a9c";
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let mut request = with_scope("MW-DSW", |s| s.onward_recipients = vec!["ZW-DSD".into()]);
    if let Some(r) = request.referral.as_mut() {
        r.case_reference = String::from_utf8(marker.to_vec()).expect("utf8");
    }
    let sent = submit_delivered(&mut zambia, request).await;
    // The sender reads back the envelope as sent, payload included.
    let payload = |d: pb::GetDeliveryResponse| d.envelope.expect("envelope").payload;
    let before = payload(wait_delivery(&mut zambia, &sent).await);
    assert!(before.windows(marker.len()).any(|w| w == marker));

    // Malawi, a transit country, passes it on to Zimbabwe; not to anyone else.
    let mut malawi = fed.local("MW-DSW", "caseworker");
    let item = open_inbox(&mut malawi).await.remove(0);
    let refused = malawi
        .forward_referral(pb::ForwardReferralRequest {
            sequence: item.sequence,
            recipient: "ZM-DSW".into(),
            ttl_seconds: 0,
            recipient_unit: String::new(),
        })
        .await
        .expect_err("not named for onward transfer");
    assert_eq!(refusal(&refused).1, "onward-transfer-not-permitted");
    let forwarded = malawi
        .forward_referral(pb::ForwardReferralRequest {
            sequence: item.sequence,
            recipient: "ZW-DSD".into(),
            ttl_seconds: 0,
            recipient_unit: String::new(),
        })
        .await
        .expect("onward transfer permitted")
        .into_inner();
    assert_eq!(
        wait_delivery(&mut malawi, &forwarded.message_id)
            .await
            .state,
        pb::DeliveryState::Delivered as i32
    );
    let mut zimbabwe = fed.local("ZW-DSD", "caseworker");
    let arrived = open_inbox(&mut zimbabwe).await.remove(0);
    assert_eq!(arrived.sender, "MW-DSW");
    assert_eq!(
        arrived.custody,
        vec!["ZM-DSW".to_owned()],
        "the chain of custody travels with the data"
    );
    assert_eq!(
        arrived
            .referral
            .as_ref()
            .map(|r| r.case_reference.as_bytes()),
        Some(&marker[..])
    );

    let data = fed.dir.path().join("data");
    for node in ["ZM-DSW", "MW-DSW", "ZW-DSD"] {
        assert!(
            !files_containing(&data.join(node), marker).is_empty(),
            "{node} holds the payload before the withdrawal"
        );
    }

    // The guardian withdraws consent at Zambia.
    let withdrawn = zambia
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: "CONSENT-1".into(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    assert_eq!(withdrawn.purged_here, 1);
    let mut notified: Vec<&str> = withdrawn
        .notices
        .iter()
        .map(|n| n.recipient.as_str())
        .collect();
    notified.sort();
    assert_eq!(notified, ["MW-DSW", "ZW-DSD"]);
    // Zambia holds a signed receipt from each node of the route.
    for notice in &withdrawn.notices {
        let d = wait_delivery(&mut zambia, &notice.message_id).await;
        assert_eq!(
            d.state,
            pb::DeliveryState::Delivered as i32,
            "{}",
            d.last_error
        );
        let envelope = d.envelope.expect("envelope");
        let receipt = verify_receipt(
            &d.receipt.expect("receipt").into(),
            &node_id("ZM-DSW"),
            MessageId::new(&notice.message_id).expect("id"),
            EnvelopeDigest::compute(&envelope.header, &envelope.signature),
            &node_id(&notice.recipient),
            &receiver_keyring(&fed, &notice.recipient),
        )
        .expect("signed by the recipient");
        assert_eq!(receipt.status, pb::ReceiptStatus::Accepted);
    }
    // Read back after the withdrawal, the envelope has no payload.
    assert!(payload(wait_delivery(&mut zambia, &sent).await).is_empty());
    // The bytes are gone from every node's store, not just hidden.
    for node in ["ZM-DSW", "MW-DSW", "ZW-DSD"] {
        let left = files_containing(&data.join(node), marker);
        assert!(
            left.is_empty(),
            "{node} still holds the payload in {left:?}"
        );
    }
    // Local systems see the item purged and the withdrawal notice.
    let items = whole_inbox(&mut malawi).await;
    assert!(
        items
            .iter()
            .any(|i| i.sequence == item.sequence && i.purged && i.referral.is_none())
    );
    assert!(items.iter().any(
        |i| i.kind == pb::MessageKind::ConsentWithdrawal as i32 && i.consent_id == "CONSENT-1"
    ));
    // Every log still verifies and records the purge.
    for node in ["ZM-DSW", "MW-DSW", "ZW-DSD"] {
        let out = fed.dir.path().join(format!("{node}.jsonl"));
        let log =
            entries(&export_and_verify(&fed.pki, node, fed.node(node).local_addr, &out).await);
        assert!(
            log.iter().any(
                |e| e.event == pb::AuditEvent::Purged as i32 && e.reason == "consent-withdrawn"
            ),
            "{node}"
        );
    }
    fed.shutdown().await;
}
