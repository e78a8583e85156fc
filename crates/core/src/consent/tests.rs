//! Every refusal class of the consent check, and the firewall coming first.

use super::*;
use crate::ids::MessageId;

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);
const DAY: i64 = 86_400_000;

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

fn scope() -> pb::ConsentScope {
    pb::ConsentScope {
        consent_id: "C-1".into(),
        given_by: ConsentGiver::Guardian as i32,
        child_views_recorded: true,
        purposes: vec![Purpose::ServiceReferral as i32],
        categories: vec![
            DataCategory::Identity as i32,
            DataCategory::ProtectionConcerns as i32,
        ],
        recipients: vec!["MW-DSW".into()],
        onward_recipients: vec!["ZA-DSD".into()],
        valid_from_ms: NOW.0 - DAY,
        expires_at_ms: NOW.0 + DAY,
        ..Default::default()
    }
}

fn draft() -> EnvelopeDraft {
    EnvelopeDraft {
        message_id: MessageId::random(),
        kind: pb::MessageKind::Referral,
        sender: node("ZM-DSW"),
        recipient: node("MW-DSW"),
        created_at: NOW,
        expires_at: NOW.plus_ms(DAY),
        purpose: Purpose::ServiceReferral,
        consent_id: "C-1".into(),
        correlation_id: String::new(),
        data_categories: vec![DataCategory::Identity],
        consent: Some(scope()),
        custody: vec![],
        recipient_unit: None,
    }
}

fn ctx(tags: &[crate::firewall::Tag]) -> TransferContext<'_> {
    TransferContext {
        recipient_tags: tags,
        accepted_purposes: None,
        now: NOW,
    }
}

fn code(d: EnvelopeDraft) -> &'static str {
    check_transfer(d, &ctx(&[]))
        .map(|_| ())
        .expect_err("must be refused")
        .code()
}

#[test]
fn a_covered_transfer_is_permitted() {
    assert!(check_transfer(draft(), &ctx(&[])).is_ok());
}

#[test]
fn each_refusal_class_names_what_is_missing() {
    let with_scope = |f: &dyn Fn(&mut pb::ConsentScope)| {
        let mut d = draft();
        f(d.consent.as_mut().expect("scope"));
        d
    };
    assert_eq!(
        code(EnvelopeDraft {
            consent: None,
            ..draft()
        }),
        "consent-missing"
    );
    assert_eq!(
        code(with_scope(&|s| s.expires_at_ms = NOW.0)),
        "consent-expired"
    );
    assert_eq!(
        code(with_scope(&|s| s.valid_from_ms = NOW.0 + 1)),
        "consent-not-yet-valid"
    );
    assert_eq!(
        code(with_scope(
            &|s| s.purposes = vec![Purpose::FamilyTracing as i32]
        )),
        "purpose-not-covered"
    );
    assert_eq!(
        code(with_scope(&|s| s.recipients = vec!["ZW-DSD".into()])),
        "recipient-not-permitted"
    );
    assert_eq!(
        code(with_scope(&|s| s.given_by = 0)),
        "consent-giver-missing"
    );
    assert_eq!(
        code(with_scope(&|s| s.consent_id = "C-2".into())),
        "consent-id-mismatch"
    );
    let bid =
        |s: &mut pb::ConsentScope| s.given_by = ConsentGiver::BestInterestsDetermination as i32;
    assert_eq!(
        code(with_scope(&|s| bid(s))),
        "best-interests-without-authority"
    );
    assert_eq!(
        code(with_scope(&|s| {
            bid(s);
            s.determining_authority = "Chipata BID committee".into();
        })),
        "best-interests-without-legal-basis"
    );
    let ok_bid = with_scope(&|s| {
        bid(s);
        s.determining_authority = "Chipata BID committee".into();
        s.legal_basis = "Children's Code Act 2022, s. 12".into();
    });
    assert!(check_transfer(ok_bid, &ctx(&[])).is_ok());

    let mut d = draft();
    d.data_categories = vec![
        DataCategory::Identity,
        DataCategory::Health,
        DataCategory::LegalStatus,
    ];
    let err = check_transfer(d, &ctx(&[]))
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(err.code(), "category-not-covered");
    assert!(
        err.to_string()
            .contains("DATA_CATEGORY_HEALTH, DATA_CATEGORY_LEGAL_STATUS"),
        "{err}"
    );
}

#[test]
fn onward_transfer_needs_the_next_recipient_named() {
    // Malawi (a permitted recipient) passes the data on along the route.
    let mut d = draft();
    d.sender = node("MW-DSW");
    d.custody = vec![node("ZM-DSW")];
    d.recipient = node("ZA-DSD");
    assert!(check_transfer(d.clone(), &ctx(&[])).is_ok());
    d.recipient = node("BW-DSS");
    assert_eq!(code(d.clone()), "onward-transfer-not-permitted");
    // A node that never was a permitted recipient cannot pass it on.
    d.sender = node("ZW-DSD");
    d.recipient = node("ZA-DSD");
    assert_eq!(code(d), "onward-transfer-not-permitted");
}

#[test]
fn the_firewall_comes_before_any_consent() {
    let enforcement = vec![crate::firewall::Tag::ImmigrationEnforcement];
    let err = check_transfer(draft(), &ctx(&enforcement))
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(err.code(), "firewall");
    // The reason code is shown before the message; the message does not repeat it.
    assert!(!err.to_string().starts_with("firewall"), "{err}");
    // Even with no consent at all, the firewall is what refuses.
    let err = check_transfer(
        EnvelopeDraft {
            consent: None,
            ..draft()
        },
        &ctx(&enforcement),
    )
    .map(|_| ())
    .expect_err("refused");
    assert_eq!(err.code(), "firewall");
}

#[test]
fn a_receiver_policy_can_refuse_a_purpose() {
    let accepted = [Purpose::FamilyTracing];
    let c = TransferContext {
        recipient_tags: &[],
        accepted_purposes: Some(&accepted),
        now: NOW,
    };
    let err = check_transfer(draft(), &c)
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(err.code(), "purpose-not-accepted");
}

#[test]
fn every_gap_is_listed_and_the_check_refuses_with_the_first() {
    let mut s = scope();
    s.given_by = ConsentGiver::BestInterestsDetermination as i32;
    s.expires_at_ms = NOW.0 - 1;
    s.recipients = vec!["ZA-DSD".into()];
    let categories = [DataCategory::Identity, DataCategory::Health];
    let all = violations(
        Some(&s),
        "C-1",
        Purpose::FamilyTracing,
        &node("ZM-DSW"),
        &node("MW-DSW"),
        &categories,
        &[],
        &ctx(&[]),
    );
    let codes: Vec<_> = all.iter().map(ConsentViolation::code).collect();
    assert_eq!(
        codes,
        [
            "best-interests-without-authority",
            "best-interests-without-legal-basis",
            "consent-expired",
            "purpose-not-covered",
            "category-not-covered",
            "recipient-not-permitted",
        ]
    );
    assert!(all[4].to_string().contains("DATA_CATEGORY_HEALTH"));
    assert!(!all[4].to_string().contains("DATA_CATEGORY_IDENTITY"));
    let first = check_parts(
        Some(&s),
        "C-1",
        Purpose::FamilyTracing,
        &node("ZM-DSW"),
        &node("MW-DSW"),
        &categories,
        &[],
        &ctx(&[]),
    );
    assert_eq!(first, Err(all[0].clone()));
    assert!(
        violations(
            Some(&scope()),
            "C-1",
            Purpose::ServiceReferral,
            &node("ZM-DSW"),
            &node("MW-DSW"),
            &[DataCategory::Identity],
            &[],
            &ctx(&[]),
        )
        .is_empty()
    );
}
