//! Every refusal class of the peer service, each sent for real over mutual TLS: the node
//! answers with its specific status and reason code, and still serves the next good request.

mod common;

use common::*;
use kinbridge_core::envelope::danger::seal_unchecked as seal_envelope;
use kinbridge_core::{NodeSigningKey, SealedEnvelope, UnixMillis};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::peer_service_client::PeerServiceClient;
use tonic::Code;
use tonic::transport::Channel;

async fn deliver(
    client: &mut PeerServiceClient<Channel>,
    envelope: SealedEnvelope,
) -> Result<pb::Receipt, tonic::Status> {
    client
        .deliver(pb::DeliverRequest {
            envelope: Some(envelope.into()),
        })
        .await
        .map(|r| r.into_inner().receipt.expect("receipt"))
}

/// Sends `bad`, expects the refusal, then shows a good envelope still gets a receipt.
async fn refused_then_serves(
    fed: &Federation,
    client: &mut PeerServiceClient<Channel>,
    bad: SealedEnvelope,
    code: Code,
    reason: &str,
) {
    let status = deliver(client, bad).await.expect_err("must be refused");
    assert_eq!(refusal(&status), (code, reason.to_owned()), "{status:?}");
    assert!(!status.message().is_empty());
    let mut good = fed.peer_client_as("MW-DSW", "ZM-DSW");
    let envelope = seal_envelope(
        &draft("ZM-DSW", "MW-DSW"),
        payload(),
        &fed.signing_key("ZM-DSW"),
    );
    deliver(&mut good, envelope)
        .await
        .expect("the node still serves");
}

#[tokio::test]
async fn each_refusal_class_has_its_status() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW", "ZW-DSD"]).await;
    let zm_key = fed.signing_key("ZM-DSW");
    let mut as_zambia = fed.peer_client_as("MW-DSW", "ZM-DSW");

    // Impersonation: Zimbabwe's node sends an envelope claiming to come from Zambia.
    let mut as_zimbabwe = fed.peer_client_as("MW-DSW", "ZW-DSD");
    let forged = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    refused_then_serves(
        &fed,
        &mut as_zimbabwe,
        forged,
        Code::PermissionDenied,
        "impersonation",
    )
    .await;

    // Wrong key: signed by a key that is not Zambia's, under Zambia's key id.
    let impostor = NodeSigningKey::generate(fed.files("ZM-DSW").signing_key_id());
    let bad = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &impostor);
    refused_then_serves(
        &fed,
        &mut as_zambia,
        bad,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await;

    // Unknown key id.
    let unknown = NodeSigningKey::generate(key_id("ZM-DSW-other"));
    let bad = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &unknown);
    refused_then_serves(
        &fed,
        &mut as_zambia,
        bad,
        Code::Unauthenticated,
        "unknown-key",
    )
    .await;

    // Tampered header: one byte of the correlation id changed after signing.
    let mut bad = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    let at = bad
        .header
        .windows(9)
        .position(|w| w == b"corr-0001")
        .expect("correlation id");
    bad.header[at + 8] = b'2';
    refused_then_serves(
        &fed,
        &mut as_zambia,
        bad,
        Code::Unauthenticated,
        "bad-signature",
    )
    .await;

    // Tampered payload.
    let mut bad = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    let last = bad.payload.len() - 1;
    bad.payload[last] ^= 0x01;
    refused_then_serves(
        &fed,
        &mut as_zambia,
        bad,
        Code::InvalidArgument,
        "payload-digest-mismatch",
    )
    .await;

    // Expired.
    let mut d = draft("ZM-DSW", "MW-DSW");
    d.created_at = UnixMillis::now().plus_ms(-7_200_000);
    d.expires_at = UnixMillis::now().plus_ms(-3_600_000);
    let bad = seal_envelope(&d, payload(), &zm_key);
    refused_then_serves(
        &fed,
        &mut as_zambia,
        bad,
        Code::FailedPrecondition,
        "expired",
    )
    .await;

    // Clock outside the skew window: created ten minutes in the future.
    let mut d = draft("ZM-DSW", "MW-DSW");
    d.created_at = UnixMillis::now().plus_ms(600_000);
    d.expires_at = d.created_at.plus_ms(3_600_000);
    let bad = seal_envelope(&d, payload(), &zm_key);
    refused_then_serves(&fed, &mut as_zambia, bad, Code::OutOfRange, "clock-skew").await;

    // Malformed: header bytes that are not an EnvelopeHeader; a short signature.
    let mut bad = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    bad.header = vec![0xff, 0xff, 0xff];
    refused_then_serves(
        &fed,
        &mut as_zambia,
        bad,
        Code::InvalidArgument,
        "malformed",
    )
    .await;
    let mut bad = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    bad.signature.truncate(10);
    refused_then_serves(
        &fed,
        &mut as_zambia,
        bad,
        Code::InvalidArgument,
        "malformed",
    )
    .await;

    // Misdirected: addressed to Zimbabwe, delivered to Malawi.
    let bad = seal_envelope(&draft("ZM-DSW", "ZW-DSD"), payload(), &zm_key);
    refused_then_serves(
        &fed,
        &mut as_zambia,
        bad,
        Code::InvalidArgument,
        "misdirected",
    )
    .await;

    // Oversized payload: above kinbridge's limit but within gRPC's.
    let big = vec![b'x'; kinbridge_core::limits::MAX_PAYLOAD_BYTES + 1];
    let bad = seal_envelope(&draft("ZM-DSW", "MW-DSW"), big, &zm_key);
    refused_then_serves(
        &fed,
        &mut as_zambia,
        bad,
        Code::InvalidArgument,
        "oversized",
    )
    .await;

    // A request with no envelope at all.
    let status = as_zambia
        .deliver(pb::DeliverRequest { envelope: None })
        .await
        .expect_err("refused");
    assert_eq!(
        refusal(&status),
        (Code::InvalidArgument, "malformed".into())
    );

    // A message far above the gRPC limit is refused by the transport; the node goes on.
    let huge = vec![0u8; 2 * 1024 * 1024];
    let bad = seal_envelope(&draft("ZM-DSW", "MW-DSW"), huge, &zm_key);
    let status = deliver(&mut as_zambia, bad).await.expect_err("refused");
    assert_ne!(status.code(), Code::Ok);
    let ok = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    deliver(&mut fed.peer_client_as("MW-DSW", "ZM-DSW"), ok)
        .await
        .expect("still serves");

    fed.shutdown().await;
}

#[tokio::test]
async fn redelivery_gets_the_original_receipt_and_a_reused_id_is_a_replay() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let zm_key = fed.signing_key("ZM-DSW");
    let mut as_zambia = fed.peer_client_as("MW-DSW", "ZM-DSW");
    let d = draft("ZM-DSW", "MW-DSW");
    let envelope = seal_envelope(&d, payload(), &zm_key);
    let first = deliver(&mut as_zambia, envelope.clone())
        .await
        .expect("delivered");
    let again = deliver(&mut as_zambia, envelope)
        .await
        .expect("re-delivered");
    // The signed receipt is the original; the checkpoint beside it is the receiver's latest
    // (a checkpoint signed between the two calls is not a different receipt).
    assert_eq!(
        (&first.body, &first.signature),
        (&again.body, &again.signature),
        "a re-delivery gets the original receipt"
    );

    // The same message id on a different envelope is a replay.
    let mut reused = d.clone();
    reused.correlation_id = "corr-0002".into();
    let replay = seal_envelope(&reused, payload(), &zm_key);
    refused_then_serves(&fed, &mut as_zambia, replay, Code::AlreadyExists, "replay").await;

    // The inbox holds the message once (plus the good one sent after the refusal).
    let mut malawi = fed.local("MW-DSW", "caseworker");
    let items = open_inbox(&mut malawi).await;
    let id = d.message_id.to_string();
    assert_eq!(items.iter().filter(|i| i.message_id == id).count(), 1);
    assert_eq!(items.len(), 2);
    fed.shutdown().await;
}

#[tokio::test]
async fn unknown_peers_and_foreign_cas_are_refused() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW", "ZW-DSD"]).await;
    let zm_key = fed.signing_key("ZM-DSW");
    let forged_dir = fed.dir.path().join("forged");
    std::fs::create_dir_all(&forged_dir).expect("dir");

    // A certificate from Zambia's CA naming a node Malawi never registered.
    let (cert, key) = (forged_dir.join("rogue.crt"), forged_dir.join("rogue.key"));
    kinbridge_node::devpki::issue_node_certificate(
        &fed.pki,
        &node_id("ZM-DSW"),
        "ZM-ROGUE",
        &cert,
        &key,
    )
    .expect("issue");
    let mut rogue = fed.peer_client_with("MW-DSW", &cert, &key);
    let envelope = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    refused_then_serves(
        &fed,
        &mut rogue,
        envelope,
        Code::PermissionDenied,
        "unknown-peer",
    )
    .await;

    // Zimbabwe's CA (trusted by Malawi for Zimbabwe only) issuing a certificate naming Zambia.
    let (cert, key) = (
        forged_dir.join("fake-zm.crt"),
        forged_dir.join("fake-zm.key"),
    );
    kinbridge_node::devpki::issue_node_certificate(
        &fed.pki,
        &node_id("ZW-DSD"),
        "ZM-DSW",
        &cert,
        &key,
    )
    .expect("issue");
    let mut fake = fed.peer_client_with("MW-DSW", &cert, &key);
    let envelope = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    refused_then_serves(
        &fed,
        &mut fake,
        envelope,
        Code::PermissionDenied,
        "impersonation",
    )
    .await;
    fed.shutdown().await;
}

fn batch_error(result: &pb::DeliverResult) -> Option<(Code, String)> {
    match &result.outcome {
        Some(pb::deliver_result::Outcome::Error(e)) => {
            Some((Code::from_i32(e.code), e.reason.clone()))
        }
        _ => None,
    }
}

fn batch_receipt(result: &pb::DeliverResult) -> Option<&pb::Receipt> {
    match &result.outcome {
        Some(pb::deliver_result::Outcome::Receipt(r)) => Some(r),
        _ => None,
    }
}

#[tokio::test]
async fn a_batch_is_taken_in_order_with_a_result_for_each_envelope() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let zm_key = fed.signing_key("ZM-DSW");
    let mut as_zambia = fed.peer_client_as("MW-DSW", "ZM-DSW");
    let seal = |d: &kinbridge_core::EnvelopeDraft| seal_envelope(d, payload(), &zm_key);
    let (d1, d2, d3) = (
        draft("ZM-DSW", "MW-DSW"),
        draft("ZM-DSW", "MW-DSW"),
        draft("ZM-DSW", "MW-DSW"),
    );
    let impostor = NodeSigningKey::generate(fed.files("ZM-DSW").signing_key_id());
    let forged = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &impostor);
    let mut reused = d2.clone();
    reused.correlation_id = "corr-0002".into();
    let (e1, e2, e3) = (seal(&d1), seal(&d2), seal(&d3));
    let batch: Vec<pb::Envelope> = vec![
        e1.clone().into(),
        forged.into(),
        e2.clone().into(),
        // The first again, in the same call: a re-delivery.
        e1.clone().into(),
        // The second's id on another envelope: a replay.
        seal(&reused).into(),
        e3.clone().into(),
    ];
    let results = as_zambia
        .deliver_batch(pb::DeliverBatchRequest { envelopes: batch })
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert_eq!(results.len(), 6, "a result for each envelope: {results:?}");
    let first = batch_receipt(&results[0]).expect("the first is receipted");
    assert_eq!(
        batch_error(&results[1]),
        Some((Code::Unauthenticated, "bad-signature".into()))
    );
    assert!(batch_receipt(&results[2]).is_some());
    assert_eq!(
        batch_receipt(&results[3]).map(|r| &r.body),
        Some(&first.body),
        "a re-delivery in the same batch gets the original receipt"
    );
    assert_eq!(
        batch_error(&results[4]),
        Some((Code::AlreadyExists, "replay".into()))
    );
    assert!(batch_receipt(&results[5]).is_some());
    // Each receipt is Malawi's, signed, about the envelope it answers.
    let files = fed.files("MW-DSW");
    let pem = std::fs::read_to_string(files.signing_pub()).expect("pub");
    let malawi_keys = kinbridge_core::Keyring::new(vec![
        kinbridge_core::PeerKey::from_public_key_pem(files.signing_key_id(), &pem).expect("key"),
    ]);
    for (at, d, e) in [(0, &d1, &e1), (2, &d2, &e2), (5, &d3, &e3)] {
        let receipt = batch_receipt(&results[at]).expect("receipt").clone();
        kinbridge_core::verify_receipt(
            &receipt.into(),
            &node_id("ZM-DSW"),
            d.message_id,
            e.digest(),
            &node_id("MW-DSW"),
            &malawi_keys,
        )
        .unwrap_or_else(|e| panic!("receipt {at}: {e}"));
    }

    // A failure that may pass on a retry ends the batch: what follows is not looked at.
    let mut skewed = draft("ZM-DSW", "MW-DSW");
    skewed.created_at = UnixMillis::now().plus_ms(600_000);
    skewed.expires_at = skewed.created_at.plus_ms(3_600_000);
    let (d4, d5) = (draft("ZM-DSW", "MW-DSW"), draft("ZM-DSW", "MW-DSW"));
    let results = as_zambia
        .deliver_batch(pb::DeliverBatchRequest {
            envelopes: vec![seal(&d4).into(), seal(&skewed).into(), seal(&d5).into()],
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(batch_receipt(&results[0]).is_some());
    assert_eq!(
        batch_error(&results[1]),
        Some((Code::OutOfRange, "clock-skew".into()))
    );

    // An empty batch is refused, and the node still serves.
    let status = as_zambia
        .deliver_batch(pb::DeliverBatchRequest { envelopes: vec![] })
        .await
        .expect_err("empty");
    assert_eq!(
        refusal(&status),
        (Code::InvalidArgument, "malformed".into())
    );

    // The inbox holds the accepted ones once each, in the order sent.
    let mut malawi = fed.local("MW-DSW", "caseworker");
    let ids: Vec<String> = open_inbox(&mut malawi)
        .await
        .into_iter()
        .map(|i| i.message_id)
        .collect();
    let want: Vec<String> = [&d1, &d2, &d3, &d4]
        .iter()
        .map(|d| d.message_id.to_string())
        .collect();
    assert_eq!(ids, want);

    // And the audit log says the same: three received and one re-delivery in the first call,
    // one received in the second; the forgery, the replay, the skew and the empty batch refused.
    let out = fed.dir.path().join("mw-export.jsonl");
    let export = export_and_verify(&fed.pki, "MW-DSW", fed.node("MW-DSW").local_addr, &out).await;
    let log = entries(&export);
    assert_eq!(count(&log, pb::AuditEvent::Received), 4);
    assert_eq!(count(&log, pb::AuditEvent::Redelivered), 1);
    assert_eq!(count(&log, pb::AuditEvent::Refused), 4);
    fed.shutdown().await;
}

/// Every node knows TH-IMM as immigration enforcement.
fn tag_enforcement(config: &mut kinbridge_node::NodeConfig) {
    for peer in &mut config.peers {
        if peer.node_id.as_str() == "TH-IMM" {
            peer.tags = vec![kinbridge_core::firewall::Tag::ImmigrationEnforcement];
        }
    }
    if config.node_id.as_str() == "TH-IMM" {
        config.tags = vec![kinbridge_core::firewall::Tag::ImmigrationEnforcement];
    }
}

/// The refused entries of `node`'s log, read through its `AuditService` (and verified).
async fn refused_entries(fed: &Federation, node: &str) -> Vec<pb::AuditEntry> {
    let out = fed.dir.path().join(format!("{node}-refusals.jsonl"));
    let export = export_and_verify(&fed.pki, node, fed.node(node).local_addr, &out).await;
    entries(&export)
        .into_iter()
        .filter(|e| e.event == pb::AuditEvent::Refused as i32)
        .collect()
}

/// A refusal's entry names what was refused: the identity the TLS certificate proved apart
/// from the one the refused bytes claimed, and, at the sender, the recipient, purpose and
/// consent of the refused submission.
#[tokio::test]
async fn refusal_entries_name_what_was_refused_and_who_proved_what() {
    let fed =
        Federation::start_with(&["ZM-DSW", "MW-DSW", "ZW-DSD", "TH-IMM"], tag_enforcement).await;
    let zm_key = fed.signing_key("ZM-DSW");

    // Zimbabwe's node sends an envelope claiming to come from Zambia.
    let forged = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    let forged_digest = forged.digest().0.to_vec();
    let status = deliver(&mut fed.peer_client_as("MW-DSW", "ZW-DSD"), forged)
        .await
        .expect_err("impersonation");
    assert_eq!(refusal(&status).1, "impersonation");

    // Zimbabwe's CA issues a certificate naming Zambia.
    let dir = fed.dir.path().join("forged");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("fake-zm.crt"), dir.join("fake-zm.key"));
    kinbridge_node::devpki::issue_node_certificate(
        &fed.pki,
        &node_id("ZW-DSD"),
        "ZM-DSW",
        &cert,
        &key,
    )
    .expect("issue");
    let envelope = seal_envelope(&draft("ZM-DSW", "MW-DSW"), payload(), &zm_key);
    let status = deliver(&mut fed.peer_client_with("MW-DSW", &cert, &key), envelope)
        .await
        .expect_err("foreign CA");
    assert_eq!(refusal(&status).1, "impersonation");
    assert!(status.message().contains("ZW-DSD"), "{}", status.message());

    let at_malawi = refused_entries(&fed, "MW-DSW").await;
    let by_envelope = at_malawi
        .iter()
        .find(|e| e.envelope_digest == forged_digest)
        .expect("the forged envelope's refusal");
    assert_eq!(by_envelope.reason, "impersonation");
    assert_eq!(by_envelope.peer, "ZW-DSD");
    assert_eq!(by_envelope.authenticated_peer, "ZW-DSD");
    assert_eq!(by_envelope.claimed_sender, "ZM-DSW");
    let by_certificate = at_malawi
        .iter()
        .find(|e| e.reason == "impersonation" && e.envelope_digest.is_empty())
        .expect("the foreign certificate's refusal");
    assert_eq!(
        (
            by_certificate.peer.as_str(),
            by_certificate.authenticated_peer.as_str(),
            by_certificate.claimed_sender.as_str()
        ),
        ("ZW-DSD", "ZW-DSD", "ZM-DSW"),
        "logged under the country whose CA issued it, the named node only claimed"
    );

    // The sender's firewall refusal names the recipient, purpose and consent refused.
    let request = submit_request("TH-IMM");
    let consent_id = request
        .consent
        .as_ref()
        .expect("consent")
        .consent_id
        .clone();
    let status = fed
        .local("ZM-DSW", "caseworker")
        .submit_referral(request)
        .await
        .expect_err("firewall");
    assert_eq!(
        refusal(&status),
        (Code::PermissionDenied, "firewall".into())
    );
    let at_zambia = refused_entries(&fed, "ZM-DSW").await;
    let firewall = at_zambia
        .iter()
        .find(|e| e.reason == "firewall")
        .expect("the firewall refusal");
    assert_eq!(firewall.recipient, "TH-IMM");
    assert_eq!(firewall.purpose, pb::Purpose::ServiceReferral as i32);
    assert_eq!(firewall.consent_id, consent_id);
    assert!(!firewall.actor.is_empty());

    // Malawi passing a referral it received on to TH-IMM: the same, at Malawi.
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let sent = zambia
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect("queued")
        .into_inner()
        .message_id;
    let delivery = zambia
        .get_delivery(pb::GetDeliveryRequest {
            message_id: sent.clone(),
            wait_ms: 20_000,
        })
        .await
        .expect("delivery")
        .into_inner();
    assert_eq!(delivery.state, pb::DeliveryState::Delivered as i32);
    let mut malawi = fed.local("MW-DSW", "caseworker");
    let item = open_inbox(&mut malawi)
        .await
        .into_iter()
        .find(|i| i.message_id == sent)
        .expect("in Malawi's inbox");
    let status = malawi
        .forward_referral(pb::ForwardReferralRequest {
            sequence: item.sequence,
            recipient: "TH-IMM".into(),
            ttl_seconds: 0,
            recipient_unit: String::new(),
        })
        .await
        .expect_err("firewall");
    assert_eq!(refusal(&status).1, "firewall");
    let at_malawi = refused_entries(&fed, "MW-DSW").await;
    let onward = at_malawi
        .iter()
        .find(|e| e.reason == "firewall")
        .expect("the onward firewall refusal");
    assert_eq!(onward.recipient, "TH-IMM");
    assert_eq!(onward.purpose, pb::Purpose::ServiceReferral as i32);
    assert_eq!(onward.consent_id, consent_id);
    fed.shutdown().await;
}

/// A referral addressed to a unit the receiver does not have is refused with a signed
/// receipt naming the unit and the receiver's units, not receipted into an inbox no
/// caseworker sees; a known unit is delivered.
#[tokio::test]
async fn a_referral_to_an_unknown_unit_is_refused_naming_the_units() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let mut typo = submit_request("MW-DSW");
    typo.recipient_unit = "mangochi-distict".into();
    let refused_id = zambia
        .submit_referral(typo)
        .await
        .expect("queued")
        .into_inner()
        .message_id;
    let delivery = zambia
        .get_delivery(pb::GetDeliveryRequest {
            message_id: refused_id.clone(),
            wait_ms: 20_000,
        })
        .await
        .expect("delivery")
        .into_inner();
    assert_eq!(
        delivery.state,
        pb::DeliveryState::Refused as i32,
        "{delivery:?}"
    );
    for needle in [
        "unknown-unit",
        "'mangochi-distict'",
        "mangochi-district",
        "intake",
    ] {
        assert!(
            delivery.last_error.contains(needle),
            "{needle}: {}",
            delivery.last_error
        );
    }
    // The refusal is Malawi's signed negative receipt.
    let receipt = delivery.receipt.expect("signed negative receipt");
    let files = fed.files("MW-DSW");
    let pem = std::fs::read_to_string(files.signing_pub()).expect("pub");
    let malawi_keys = kinbridge_core::Keyring::new(vec![
        kinbridge_core::PeerKey::from_public_key_pem(files.signing_key_id(), &pem).expect("key"),
    ]);
    let envelope: SealedEnvelope = delivery.envelope.expect("envelope").into();
    let verified = kinbridge_core::verify_receipt(
        &receipt.into(),
        &node_id("ZM-DSW"),
        kinbridge_core::MessageId::new(&refused_id).expect("message id"),
        envelope.digest(),
        &node_id("MW-DSW"),
        &malawi_keys,
    )
    .expect("receipt verifies");
    assert_eq!(verified.status, pb::ReceiptStatus::Refused);
    assert_eq!(verified.refusal_reason, "unknown-unit");

    // A known unit is delivered; Malawi's inbox holds it and not the refused one.
    let mut known = submit_request("MW-DSW");
    known.recipient_unit = "mangochi-district".into();
    let delivered_id = zambia
        .submit_referral(known)
        .await
        .expect("queued")
        .into_inner()
        .message_id;
    let delivery = zambia
        .get_delivery(pb::GetDeliveryRequest {
            message_id: delivered_id.clone(),
            wait_ms: 20_000,
        })
        .await
        .expect("delivery")
        .into_inner();
    assert_eq!(delivery.state, pb::DeliveryState::Delivered as i32);
    let items = open_inbox(&mut fed.local("MW-DSW", "system")).await;
    let ids: Vec<&str> = items.iter().map(|i| i.message_id.as_str()).collect();
    assert_eq!(ids, [delivered_id.as_str()]);
    let at_malawi = refused_entries(&fed, "MW-DSW").await;
    let entry = at_malawi
        .iter()
        .find(|e| e.reason == "unknown-unit")
        .expect("audited at Malawi");
    assert_eq!(entry.message_id, refused_id);
    assert!(!entry.receipt_digest.is_empty());
    fed.shutdown().await;
}

/// A gRPC codec that sends bytes as they are: garbage and over-size requests at the byte
/// level, as a broken or hostile peer would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `bytes` as the request of `method` of Malawi's `PeerService`, over mutual TLS as
/// Zambia's node.
async fn raw_call(fed: &Federation, method: &'static str, bytes: Vec<u8>) -> tonic::Status {
    let files = fed.files("ZM-DSW");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(files.node_cert()).expect("cert"),
        std::fs::read(files.node_key()).expect("key"),
    );
    let ca = std::fs::read(fed.files("MW-DSW").ca_cert()).expect("ca");
    let channel = kinbridge_grpc::peer_client::peer_channel(
        &format!("https://{}", fed.node("MW-DSW").peer_addr),
        Some("localhost"),
        &ca,
        &identity,
    )
    .expect("channel");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    let answer = tokio::time::timeout(WAIT, grpc.unary(tonic::Request::new(bytes), path, RawCodec))
        .await
        .expect("answered in time");
    answer.expect_err("must be refused")
}

/// `kinbridge_refusals_total{side="peer",reason=…}` at `node`'s metrics listener.
async fn peer_refusals(fed: &Federation, node: &str, reason: &str) -> f64 {
    fed.refusals_metric(node, "peer", reason).await
}

/// Bytes that are not a request and a request far above the limit are final refusals with a
/// reason (not INTERNAL or OUT_OF_RANGE, which a sender retries), counted, audited under the
/// authenticated peer with a bound per minute, and the node keeps serving.
#[tokio::test]
async fn garbage_and_oversized_requests_are_final_audited_refusals() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let deliver_path = "/kinbridge.v1.PeerService/Deliver";

    let status = raw_call(&fed, deliver_path, vec![0xff; 32]).await;
    assert_eq!(
        refusal(&status),
        (Code::InvalidArgument, "malformed".into()),
        "{status:?}"
    );
    assert!(
        status.message().contains("does not decode"),
        "{}",
        status.message()
    );
    assert!(!kinbridge_grpc::status::is_transient(&status));

    let status = raw_call(&fed, deliver_path, vec![0u8; 20 * 1024 * 1024]).await;
    assert_eq!(
        refusal(&status),
        (Code::InvalidArgument, "too-large".into()),
        "{status:?}"
    );
    assert!(status.message().contains("limit"), "{}", status.message());
    assert!(!kinbridge_grpc::status::is_transient(&status));

    // A flood: the metric counts every refusal, the log holds at most the window's quota.
    let flood = kinbridge_grpc::peer_guard::REFUSALS_PER_WINDOW as usize + 3;
    for _ in 0..flood {
        let status = raw_call(
            &fed,
            "/kinbridge.v1.PeerService/DeliverBatch",
            vec![0xff; 8],
        )
        .await;
        assert_eq!(refusal(&status).1, "malformed");
    }
    assert_eq!(
        peer_refusals(&fed, "MW-DSW", "malformed").await,
        (flood + 1) as f64
    );
    assert_eq!(peer_refusals(&fed, "MW-DSW", "too-large").await, 1.0);

    // The node keeps serving: a normal delivery after.
    let ok = seal_envelope(
        &draft("ZM-DSW", "MW-DSW"),
        payload(),
        &fed.signing_key("ZM-DSW"),
    );
    deliver(&mut fed.peer_client_as("MW-DSW", "ZM-DSW"), ok)
        .await
        .expect("still serves");

    let at_malawi = refused_entries(&fed, "MW-DSW").await;
    let of = |reason: &str| -> Vec<&pb::AuditEntry> {
        at_malawi.iter().filter(|e| e.reason == reason).collect()
    };
    assert_eq!(
        of("malformed").len(),
        kinbridge_grpc::peer_guard::REFUSALS_PER_WINDOW as usize,
        "one by one up to the window's quota"
    );
    assert_eq!(of("too-large").len(), 1);
    for e in of("malformed").into_iter().chain(of("too-large")) {
        assert!(
            e.method.starts_with("/kinbridge.v1.PeerService/Deliver"),
            "{e:?}"
        );
        assert_eq!(e.peer, "ZM-DSW");
        assert_eq!(e.authenticated_peer, "ZM-DSW");
        assert_eq!(e.refused_count, 0);
    }
    fed.shutdown().await;
}

/// Sends `bytes` as the request of `method` on `node`'s local port, as its development
/// client of `role`.
async fn raw_local_call(
    fed: &Federation,
    node: &str,
    role: &str,
    method: &'static str,
    bytes: Vec<u8>,
) -> tonic::Status {
    let files = fed.files(node);
    let channel = kinbridge_grpc::client::local_channel(
        &fed.node(node).local_addr.to_string(),
        &files.ca_cert(),
        &files.client_cert(role),
        &files.client_key(role),
    )
    .expect("channel");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    let answer = tokio::time::timeout(WAIT, grpc.unary(tonic::Request::new(bytes), path, RawCodec))
        .await
        .expect("answered in time");
    answer.expect_err("must be refused")
}

/// The local port refuses a local system's undecodable or oversized bytes as the peer port
/// does: final INVALID_ARGUMENT with a reason (never INTERNAL or OUT_OF_RANGE, which a client
/// retries), counted on the `local` side, audited under the client's name; it keeps serving.
#[tokio::test]
async fn a_local_systems_garbage_and_oversized_requests_are_final_audited_refusals() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let status = raw_local_call(
        &fed,
        "ZM-DSW",
        "system",
        "/kinbridge.v1.LocalService/SubmitReferral",
        vec![0xff; 32],
    )
    .await;
    assert_eq!(
        refusal(&status),
        (Code::InvalidArgument, "malformed".into()),
        "{status:?}"
    );
    assert!(
        status
            .message()
            .contains("SubmitReferral request does not decode"),
        "{}",
        status.message()
    );
    assert!(!kinbridge_grpc::status::is_transient(&status));

    let status = raw_local_call(
        &fed,
        "ZM-DSW",
        "caseworker",
        "/kinbridge.v1.TracingService/RegisterTracingCase",
        vec![0u8; 3 * 1024 * 1024],
    )
    .await;
    assert_eq!(
        refusal(&status),
        (Code::InvalidArgument, "too-large".into()),
        "{status:?}"
    );
    assert!(
        status.message().contains("smaller request"),
        "{}",
        status.message()
    );
    assert!(!kinbridge_grpc::status::is_transient(&status));
    assert_eq!(
        fed.refusals_metric("ZM-DSW", "local", "malformed").await,
        1.0
    );
    assert_eq!(
        fed.refusals_metric("ZM-DSW", "local", "too-large").await,
        1.0
    );
    assert_eq!(
        fed.refusals_metric("ZM-DSW", "peer", "malformed").await,
        0.0
    );

    // It keeps serving.
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 1).await;

    let at_zambia = refused_entries(&fed, "ZM-DSW").await;
    let malformed: Vec<_> = at_zambia
        .iter()
        .filter(|e| e.reason == "malformed")
        .collect();
    let too_large: Vec<_> = at_zambia
        .iter()
        .filter(|e| e.reason == "too-large")
        .collect();
    assert_eq!(malformed.len(), 1, "{at_zambia:?}");
    assert_eq!(too_large.len(), 1, "{at_zambia:?}");
    assert!(malformed[0].actor.starts_with("system"), "{malformed:?}");
    assert!(
        too_large[0].actor.starts_with("caseworker"),
        "{too_large:?}"
    );
    assert!(malformed[0].peer.is_empty() && malformed[0].authenticated_peer.is_empty());
    assert_eq!(
        malformed[0].method,
        "/kinbridge.v1.LocalService/SubmitReferral"
    );
    assert_eq!(
        too_large[0].method,
        "/kinbridge.v1.TracingService/RegisterTracingCase"
    );
    fed.shutdown().await;
}
