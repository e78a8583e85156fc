//! The `json` feature speaks the protobuf JSON mapping: lowerCamelCase names, enums by name,
//! 64-bit integers as strings, bytes as base64, and it reads back what it writes.
#![cfg(feature = "json")]
#![allow(missing_docs)]

use kinbridge_proto::v1 as pb;

#[test]
fn a_submission_in_the_json_mapping_and_back() {
    let request = pb::SubmitReferralRequest {
        recipient: "MW-DSW".into(),
        purpose: pb::Purpose::ServiceReferral as i32,
        consent: Some(pb::ConsentScope {
            consent_id: "ZM-CONSENT-1".into(),
            purposes: vec![pb::Purpose::ServiceReferral as i32],
            categories: vec![pb::DataCategory::Identity as i32],
            recipients: vec!["MW-DSW".into()],
            expires_at_ms: 1_900_000_000_000,
            ..Default::default()
        }),
        ttl_seconds: 3600,
        recipient_unit: "border-post".into(),
        ..Default::default()
    };
    let json = serde_json::to_value(&request).expect("serialises");
    assert_eq!(json["recipient"], "MW-DSW");
    assert_eq!(json["purpose"], "PURPOSE_SERVICE_REFERRAL");
    assert_eq!(json["recipientUnit"], "border-post");
    assert_eq!(json["ttlSeconds"], 3600);
    assert_eq!(json["consent"]["expiresAtMs"], "1900000000000");
    assert_eq!(json["consent"]["categories"][0], "DATA_CATEGORY_IDENTITY");
    let back: pb::SubmitReferralRequest = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, request);
    // Field names as written in the .proto are read too, as the mapping requires.
    let snake: pb::SubmitReferralRequest =
        serde_json::from_str(r#"{"recipient": "MW-DSW", "recipient_unit": "a", "ttl_seconds": 5}"#)
            .expect("proto names");
    assert_eq!(snake.recipient_unit, "a");
    assert_eq!(snake.ttl_seconds, 5);
}

#[test]
fn bytes_are_base64_and_an_unknown_enum_name_is_refused() {
    let envelope = pb::Envelope {
        header: vec![0, 1, 2, 250],
        ..Default::default()
    };
    let json = serde_json::to_value(&envelope).expect("serialises");
    assert_eq!(json["header"], "AAEC+g==");
    let bad = serde_json::from_str::<pb::SubmitReferralRequest>(r#"{"purpose": "PURPOSE_NONE"}"#);
    assert!(bad.is_err());
}
