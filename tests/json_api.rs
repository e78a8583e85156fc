//! The HTTP/JSON face, driven by a client that is not ours: curl, with client certificates
//! and hand-written JSON in the protobuf JSON mapping, as an integrator of a case-management
//! system would. A referral runs end to end (submit, delivery, the receiver's inbox and item,
//! accept, close, the status back at the sender), and the JSON face refuses what the gRPC
//! face refuses, with problem+json, the same reason codes and an audit entry.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

/// A client of one node's JSON face.
struct Curl(Https);

/// An answer: the HTTP status, the content type and the body as JSON (`Null` if not JSON).
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

impl Curl {
    fn new(fed: &Federation, node: &str, cert: PathBuf, key: PathBuf) -> Self {
        Self(Https::new(fed, node, cert, key))
    }

    fn role(fed: &Federation, node: &str, role: &str) -> Self {
        Self(Https::role(fed, node, role))
    }

    /// `method` on `path` with a JSON `body` (if any) and `headers`.
    fn call(&self, method: &str, path: &str, body: Option<&str>, headers: &[&str]) -> Answer {
        let body = body.map(|b| ("application/json", b));
        let answer = self.0.request(method, path, body, headers);
        Answer {
            status: answer.status,
            content_type: answer.header("content-type").unwrap_or_default().to_owned(),
            body: serde_json::from_str(&answer.body).unwrap_or(Value::Null),
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None, &[])
    }

    fn post(&self, path: &str, body: &str) -> Answer {
        self.call("POST", path, Some(body), &[])
    }
}

/// A referral as an integrator writes it: the protobuf JSON mapping by hand.
fn referral_json(to: &str, case: &str) -> String {
    let now = kinbridge_core::UnixMillis::now().0;
    json!({
        "recipient": to,
        "purpose": "PURPOSE_SERVICE_REFERRAL",
        "correlationId": case,
        "ttlSeconds": 3600,
        "consent": {
            "consentId": "CONSENT-JSON-1",
            "givenBy": "CONSENT_GIVER_GUARDIAN",
            "childViewsRecorded": true,
            "purposes": ["PURPOSE_SERVICE_REFERRAL"],
            "categories": ["DATA_CATEGORY_IDENTITY", "DATA_CATEGORY_PROTECTION_CONCERNS"],
            "recipients": [to],
            "validFromMs": (now - 86_400_000).to_string(),
            "expiresAtMs": (now + 86_400_000).to_string()
        },
        "referral": {
            "caseReference": case,
            "requestedServices": ["interim-care"],
            "identity": {"givenNames": ["Test"], "familyNames": ["Child"], "estimatedBirthYear": 2014},
            "protectionConcerns": {"migratoryStatus": "MIGRATORY_STATUS_UNACCOMPANIED"}
        }
    })
    .to_string()
}

fn problem_reason(answer: &Answer) -> &str {
    assert_eq!(
        answer.content_type, "application/problem+json",
        "{}",
        answer.body
    );
    assert!(
        answer.body["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    answer.body["reason"].as_str().unwrap_or_default()
}

async fn refused_count(fed: &Federation, node: &str, reason: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let export = dir.path().join("log");
    let verified = export_and_verify(&fed.pki, node, fed.node(node).local_addr, &export).await;
    entries(&verified)
        .iter()
        .filter(|e| {
            e.event == kinbridge_proto::v1::AuditEvent::Refused as i32 && e.reason == reason
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_runs_a_referral_from_submission_to_closure() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let zm = Curl::role(&fed, "ZM-DSW", "caseworker");
    let mw = Curl::role(&fed, "MW-DSW", "caseworker");

    let submitted = tokio::task::block_in_place(|| {
        zm.post("/v1/referrals", &referral_json("MW-DSW", "CASE-JSON-1"))
    });
    assert_eq!(submitted.status, 201, "{}", submitted.body);
    assert_eq!(submitted.body["state"], "DELIVERY_STATE_QUEUED");
    let id = submitted.body["messageId"]
        .as_str()
        .expect("message id")
        .to_owned();

    let delivery = tokio::task::block_in_place(|| {
        zm.get(&format!("/v1/referrals/{id}/delivery?waitMs=20000"))
    });
    assert_eq!(delivery.status, 200, "{}", delivery.body);
    assert_eq!(
        delivery.body["state"], "DELIVERY_STATE_DELIVERED",
        "{}",
        delivery.body
    );

    let inbox = tokio::task::block_in_place(|| mw.get("/v1/inbox?limit=10"));
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    let item = &inbox.body["items"][0];
    assert_eq!(item["messageId"], id.as_str());
    let sequence = item["sequence"]
        .as_str()
        .expect("sequence as a string")
        .to_owned();

    let shown = tokio::task::block_in_place(|| mw.get(&format!("/v1/inbox/{sequence}")));
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(
        shown.body["referral"]["requestedServices"][0],
        "interim-care"
    );
    assert_eq!(
        shown.body["referral"]["identity"]["familyNames"][0],
        "Child"
    );

    for (state, code) in [
        ("REFERRAL_STATE_ACCEPTED", ""),
        ("REFERRAL_STATE_IN_PROGRESS", ""),
        ("REFERRAL_STATE_CLOSED", "services-delivered"),
    ] {
        let body = json!({"state": state, "code": code}).to_string();
        let moved =
            tokio::task::block_in_place(|| mw.post(&format!("/v1/inbox/{sequence}/status"), &body));
        assert_eq!(moved.status, 200, "{state}: {}", moved.body);
    }
    let acknowledged =
        tokio::task::block_in_place(|| mw.post(&format!("/v1/inbox/{sequence}/acknowledge"), ""));
    assert_eq!(acknowledged.status, 200, "{}", acknowledged.body);

    // The sender learns each step from the receiver's signed status updates.
    let status_path = format!("/v1/referrals/{id}/status");
    eventually("the closure reaches the sender", || {
        let answer = tokio::task::block_in_place(|| zm.get(&status_path));
        let states: Vec<String> = answer.body["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(|c| c["state"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        async move { states.iter().any(|s| s == "REFERRAL_STATE_CLOSED") }
    })
    .await;
    let status = tokio::task::block_in_place(|| zm.get(&status_path));
    let history = status.body["history"].as_array().expect("history");
    assert!(
        history
            .iter()
            .any(|c| c["state"] == "REFERRAL_STATE_ACCEPTED"),
        "{}",
        status.body
    );
    assert!(
        history.iter().any(|c| c["code"] == "services-delivered"),
        "{}",
        status.body
    );

    // The document the node serves describes every operation it just answered.
    let doc = tokio::task::block_in_place(|| zm.get("/v1/openapi.json"));
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    assert_eq!(
        doc.body["paths"]["/v1/referrals"]["post"]["operationId"],
        "submitReferral"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_face_refuses_as_the_grpc_face_does_and_logs_it() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let zm = Curl::role(&fed, "ZM-DSW", "caseworker");

    // Not JSON: a 400 that names no input, recorded.
    let bad = tokio::task::block_in_place(|| {
        zm.post(
            "/v1/referrals",
            "{\"recipient\": \"MW-DSW\", \"referral\": {\"identity\": {\"givenNames\": \"Ana\"}}}",
        )
    });
    assert_eq!(bad.status, 400);
    assert_eq!(problem_reason(&bad), "malformed");
    assert!(
        !bad.body.to_string().contains("Ana"),
        "the refusal echoes no input: {}",
        bad.body
    );

    // A consent that does not name the recipient: the service layer's refusal, as on gRPC.
    let elsewhere = referral_json("MW-DSW", "CASE-JSON-2")
        .replace("\"recipients\":[\"MW-DSW\"]", "\"recipients\":[\"ZW-DSD\"]");
    let refused = tokio::task::block_in_place(|| zm.post("/v1/referrals", &elsewhere));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(problem_reason(&refused), "recipient-not-permitted");

    // The role: an auditor may not submit.
    let auditor = Curl::role(&fed, "ZM-DSW", "auditor");
    let denied = tokio::task::block_in_place(|| {
        auditor.post("/v1/referrals", &referral_json("MW-DSW", "CASE-JSON-3"))
    });
    assert_eq!(denied.status, 403);
    assert_eq!(problem_reason(&denied), "role-denied");

    // The firewall: an enforcement-tagged client may submit but never read.
    let (cert, key) = fed.issue_client(
        "ZM-DSW",
        "border-police",
        "system",
        None,
        &["immigration-enforcement"],
    );
    let enforcement = Curl::new(&fed, "ZM-DSW", cert, key);
    let blocked = tokio::task::block_in_place(|| enforcement.get("/v1/inbox"));
    assert_eq!(blocked.status, 403);
    assert_eq!(problem_reason(&blocked), "firewall");

    // A unit: a caseworker of another unit does not see the intake's item.
    let mw = Curl::role(&fed, "MW-DSW", "caseworker");
    let id = {
        let a = tokio::task::block_in_place(|| {
            zm.post("/v1/referrals", &referral_json("MW-DSW", "CASE-JSON-4"))
        });
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["messageId"].as_str().expect("id").to_owned()
    };
    let delivered = tokio::task::block_in_place(|| {
        zm.get(&format!("/v1/referrals/{id}/delivery?waitMs=20000"))
    });
    assert_eq!(delivered.body["state"], "DELIVERY_STATE_DELIVERED");
    let items = tokio::task::block_in_place(|| mw.get("/v1/inbox"));
    let sequence = items.body["items"][0]["sequence"]
        .as_str()
        .expect("sequence")
        .to_owned();
    let (cert, key) = fed.issue_client(
        "MW-DSW",
        "caseworker-lilongwe",
        "caseworker",
        Some("lilongwe"),
        &[],
    );
    let other_unit = Curl::new(&fed, "MW-DSW", cert, key);
    let hidden = tokio::task::block_in_place(|| other_unit.get(&format!("/v1/inbox/{sequence}")));
    assert_eq!(hidden.status, 403);
    assert_eq!(problem_reason(&hidden), "other-unit");

    // What names no operation, or no field.
    let nowhere = tokio::task::block_in_place(|| zm.get("/v1/nothing-here"));
    assert_eq!(nowhere.status, 404);
    assert_eq!(problem_reason(&nowhere), "unknown-operation");
    let unknown = tokio::task::block_in_place(|| zm.get("/v1/inbox?childName=Ana"));
    assert_eq!(unknown.status, 400);
    assert_eq!(problem_reason(&unknown), "unknown-parameter");
    assert!(!unknown.body.to_string().contains("Ana"));

    // Every refusal of content is in the audit log, under the client's name.
    assert!(refused_count(&fed, "ZM-DSW", "malformed").await >= 1);
    assert!(refused_count(&fed, "ZM-DSW", "firewall").await >= 1);
    assert!(refused_count(&fed, "ZM-DSW", "role-denied").await >= 1);
    assert!(refused_count(&fed, "MW-DSW", "other-unit").await >= 1);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_submission_under_its_idempotency_key_is_queued_once() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let zm = Curl::role(&fed, "ZM-DSW", "caseworker");
    let body = referral_json("MW-DSW", "CASE-JSON-5");
    let key = "idempotency-key: 6f1c2a8e-5b0d-4e8a-9a57-1d2c3b4a5f60";
    let first =
        tokio::task::block_in_place(|| zm.call("POST", "/v1/referrals", Some(&body), &[key]));
    assert_eq!(first.status, 201, "{}", first.body);
    let again =
        tokio::task::block_in_place(|| zm.call("POST", "/v1/referrals", Some(&body), &[key]));
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(
        again.body["messageId"], first.body["messageId"],
        "the first answer, again"
    );
    let other = referral_json("MW-DSW", "CASE-JSON-6");
    let reused =
        tokio::task::block_in_place(|| zm.call("POST", "/v1/referrals", Some(&other), &[key]));
    assert_eq!(reused.status, 409);
    assert_eq!(problem_reason(&reused), "idempotency-key-reused");
    let bad_key = tokio::task::block_in_place(|| {
        zm.call(
            "POST",
            "/v1/referrals",
            Some(&body),
            &["idempotency-key: two words"],
        )
    });
    assert_eq!(bad_key.status, 400);
    assert_eq!(problem_reason(&bad_key), "bad-idempotency-key");

    // One message reached the receiver.
    let id = first.body["messageId"].as_str().expect("id").to_owned();
    let delivered = tokio::task::block_in_place(|| {
        zm.get(&format!("/v1/referrals/{id}/delivery?waitMs=20000"))
    });
    assert_eq!(delivered.body["state"], "DELIVERY_STATE_DELIVERED");
    let mw = Curl::role(&fed, "MW-DSW", "caseworker");
    let inbox = tokio::task::block_in_place(|| mw.get("/v1/inbox"));
    let items = inbox.body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        items
            .iter()
            .filter(|i| i["correlationId"] == "CASE-JSON-5")
            .count(),
        1
    );
    fed.shutdown().await;
}

#[test]
fn the_committed_openapi_document_is_the_one_the_code_makes() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let made =
        serde_json::to_string_pretty(&kinbridge_http::openapi::document()).expect("json") + "\n";
    if std::env::var_os("KINBRIDGE_WRITE_OPENAPI").is_some() {
        std::fs::write(&committed, &made).expect("write docs/openapi.json");
    }
    let on_disk = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        on_disk == made,
        "docs/openapi.json is not the document the code makes: run `KINBRIDGE_WRITE_OPENAPI=1 cargo test --test json_api` and commit it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_submission_gets_the_same_reason_on_both_faces() {
    if skip_without_curl() {
        return;
    }
    use kinbridge_proto::v1 as pb;
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut grpc = fed.local("ZM-DSW", "caseworker");
    let json = Curl::role(&fed, "ZM-DSW", "caseworker");
    let good = || common::submit_request("MW-DSW");
    let mut expired = good();
    if let Some(c) = expired.consent.as_mut() {
        c.expires_at_ms = kinbridge_core::UnixMillis::now().plus_ms(-1000).0;
    }
    let mut uncovered = good();
    if let Some(r) = uncovered.referral.as_mut() {
        r.health = Some(pb::HealthData {
            needs: "medical care".into(),
            ..Default::default()
        });
    }
    let mut oversized = good();
    if let Some(r) = oversized.referral.as_mut() {
        r.requested_services = vec!["x".repeat(1000); 300];
    }
    let cases: Vec<(pb::SubmitReferralRequest, &str)> = vec![
        (
            pb::SubmitReferralRequest {
                recipient: "ZW-DSD".into(),
                ..good()
            },
            "unknown-recipient",
        ),
        (
            pb::SubmitReferralRequest {
                recipient: "malawi".into(),
                ..good()
            },
            "bad-recipient",
        ),
        (
            pb::SubmitReferralRequest {
                consent: None,
                ..good()
            },
            "consent-missing",
        ),
        (
            pb::SubmitReferralRequest {
                purpose: 0,
                ..good()
            },
            "bad-purpose",
        ),
        (
            pb::SubmitReferralRequest {
                referral: None,
                ..good()
            },
            "no-referral",
        ),
        (
            pb::SubmitReferralRequest {
                ttl_seconds: 90 * 86_400,
                ..good()
            },
            "bad-ttl",
        ),
        (
            pb::SubmitReferralRequest {
                recipient_unit: "Not A Unit".into(),
                ..good()
            },
            "bad-unit",
        ),
        (
            pb::SubmitReferralRequest {
                kind: pb::MessageKind::KeyUpdate as i32,
                ..good()
            },
            "bad-kind",
        ),
        (expired, "consent-expired"),
        (uncovered, "category-not-covered"),
        (oversized, "oversized"),
    ];
    for (request, reason) in cases {
        let status = grpc
            .submit_referral(request.clone())
            .await
            .expect_err("refused on gRPC");
        assert_eq!(refusal(&status).1, reason, "gRPC: {status:?}");
        let body = serde_json::to_string(&request).expect("the JSON mapping");
        let answer = tokio::task::block_in_place(|| json.post("/v1/referrals", &body));
        assert_eq!(problem_reason(&answer), reason, "JSON: {}", answer.body);
        let expected = kinbridge_http::problem::status_of(kinbridge_service::ErrorKind::from_code(
            status.code() as i32,
        ));
        assert_eq!(
            answer.status,
            expected.as_u16(),
            "{reason}: the kind maps to the same code"
        );
    }
    // Both faces still serve.
    let ok = tokio::task::block_in_place(|| {
        json.post(
            "/v1/referrals",
            &serde_json::to_string(&good()).expect("json"),
        )
    });
    assert_eq!(ok.status, 201, "{}", ok.body);
    fed.shutdown().await;
}
