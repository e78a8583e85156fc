//! The console's new referral form, sent items and consent withdrawal, driven by curl as a
//! browser with JavaScript off would (plain form posts, redirects not followed) over real
//! Zambian and Malawian nodes. The consent pre-check names every gap and sends nothing; a
//! covered referral sent from the form reaches Malawi once, however often it is posted; its
//! sent item shows the delivery, the signed receipt and Malawi's acceptance; withdrawing its
//! consent from the console sends a notice that purges Malawi's copy. An enforcement-tagged
//! client may send but not read what was sent; a form without its CSRF token is refused.

mod common;

use std::path::PathBuf;

use common::*;
use kinbridge_node::devpki;
use kinbridge_proto::v1 as pb;

const GIVEN: &str = "Chipo";
const FAMILY: &str = "Mwansa-Banda";
const CASE: &str = "ZM-CASE-8812";
const CONSENT: &str = "CONSENT-COMPOSE-3";
const NARRATIVE: &str = "Found alone at the Chirundu border post";

/// A browser with a client certificate and no JavaScript.
struct Browser(Https);

impl Browser {
    fn role(fed: &Federation, node: &str, role: &str) -> Self {
        Self(Https::role(fed, node, role))
    }

    fn new(fed: &Federation, node: &str, cert: PathBuf, key: PathBuf) -> Self {
        Self(Https::new(fed, node, cert, key))
    }

    fn get(&self, path: &str) -> HttpsAnswer {
        tokio::task::block_in_place(|| self.0.request("GET", path, None, &[]))
    }

    fn post(&self, path: &str, fields: &[(&str, &str)]) -> HttpsAnswer {
        let body = encode(fields);
        tokio::task::block_in_place(|| {
            self.0.request(
                "POST",
                path,
                Some(("application/x-www-form-urlencoded", &body)),
                &[],
            )
        })
    }
}

/// `application/x-www-form-urlencoded` of `fields`.
fn encode(fields: &[(&str, &str)]) -> String {
    let escape = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of the first field `name` of a page.
fn field(page: &HttpsAnswer, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.body.find(&marker).expect(name) + marker.len();
    let end = page.body[at..].find('"').expect("quote");
    page.body[at..at + end].to_owned()
}

/// The form's fields for a referral to Malawi filling identity and protection concerns, under
/// a consent from the guardian to a service referral of those two categories (naming no
/// recipient: the caller adds `consent_recipient`), with the button `action`.
fn referral_fields<'a>(token: &'a str, key: &'a str, action: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", token),
        ("idempotency_key", key),
        ("recipient", "MW-DSW"),
        ("recipient_unit", ""),
        ("kind", "referral"),
        ("purpose", "service-referral"),
        ("case_reference", CASE),
        ("requested_services", "interim-care, family-tracing"),
        ("given_names", GIVEN),
        ("family_names", FAMILY),
        ("estimated_birth_year", "2014"),
        ("migratory_status", "unaccompanied"),
        ("urgency", "high"),
        ("narrative", NARRATIVE),
        ("consent_id", CONSENT),
        ("given_by", "guardian"),
        ("child_views_recorded", "yes"),
        ("consent_purpose", "service-referral"),
        ("consent_category", "identity"),
        ("consent_category", "protection-concerns"),
        ("consent_expires", "2099-12-31"),
        ("action", action),
    ]
}

/// The audit log of `node`, verified.
async fn refusals(fed: &Federation, node: &str, reason: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let verified = export_and_verify(
        &fed.pki,
        node,
        fed.node(node).local_addr,
        &dir.path().join("log"),
    )
    .await;
    entries(&verified)
        .iter()
        .filter(|e| e.event == pb::AuditEvent::Refused as i32 && e.reason == reason)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_check_names_every_gap_and_sends_nothing() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let zm = Browser::role(&fed, "ZM-DSW", "caseworker");
    let form = zm.get("/console/referrals/new");
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(
        form.body
            .contains("<option value=\"MW-DSW\">MW-DSW</option>"),
        "{}",
        form.body
    );
    assert!(
        !form.body.contains("<option value=\"ZM-DSW\""),
        "not to itself"
    );
    for category in [
        "Identity",
        "Contact",
        "Family",
        "Location",
        "Protection concerns",
        "Health",
        "Education",
        "Legal status",
    ] {
        assert!(
            form.body.contains(&format!("<legend>{category}</legend>")),
            "a fieldset for {category}"
        );
    }
    let token = field(&form, "csrf");
    let key = field(&form, "idempotency_key");
    assert_eq!(key.len(), 32, "a random idempotency key");

    // Health is filled in but not consented to; Malawi is not named as a recipient.
    let mut fields = referral_fields(&token, &key, "check");
    fields.push(("conditions", "asthma"));
    let checked = zm.post("/console/referrals/new", &fields);
    assert_eq!(checked.status, 200, "{}", checked.body);
    assert!(
        checked.body.contains("does not cover this referral"),
        "{}",
        checked.body
    );
    assert!(
        checked
            .body
            .contains("The category Health is filled in, but the consent does not cover it."),
        "{}",
        checked.body
    );
    assert!(!checked.body.contains("The category Identity is filled in"));
    assert!(
        checked
            .body
            .contains("The consent does not name MW-DSW as a recipient."),
        "{}",
        checked.body
    );
    assert!(!checked.body.contains("does not cover the purpose"));
    // Nothing typed is lost.
    for kept in [
        format!("value=\"{GIVEN}\""),
        format!("value=\"{CASE}\""),
        format!(">{NARRATIVE}</textarea>"),
        "value=\"asthma\"".to_owned(),
        "value=\"guardian\" checked".to_owned(),
        "value=\"protection-concerns\" checked".to_owned(),
        format!("name=\"idempotency_key\" value=\"{key}\""),
    ] {
        assert!(
            checked.body.contains(&kept),
            "keeps {kept}: {}",
            checked.body
        );
    }

    // A best-interests determination without its legal basis, expired, for another purpose:
    // every gap at once.
    let mut fields: Vec<(&str, &str)> = referral_fields(&token, &key, "check")
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "given_by" | "consent_expires" | "consent_purpose"))
        .collect();
    fields.extend([
        ("given_by", "best-interests-determination"),
        ("determining_authority", "Chirundu district welfare office"),
        ("consent_expires", "2020-01-31"),
        ("consent_purpose", "family-tracing"),
        ("consent_recipient", "MW-DSW"),
    ]);
    let checked = zm.post("/console/referrals/new", &fields);
    assert_eq!(checked.status, 200, "{}", checked.body);
    for code in [
        "best-interests-without-legal-basis",
        "consent-expired",
        "purpose-not-covered",
    ] {
        assert!(
            checked.body.contains(&format!("<code>{code}</code>")),
            "{code}: {}",
            checked.body
        );
    }
    assert!(!checked.body.contains("recipient-not-permitted"));
    assert!(!checked.body.contains("best-interests-without-authority"));

    // A covered referral: the check says so, and still sends nothing.
    let checked = zm.post("/console/referrals/new", &{
        let mut f = referral_fields(&token, &key, "check");
        f.push(("consent_recipient", "MW-DSW"));
        f
    });
    assert_eq!(checked.status, 200, "{}", checked.body);
    assert!(
        checked.body.contains("The consent covers this referral"),
        "{}",
        checked.body
    );

    // Sent anyway without checking: the submission refuses it, and the form comes back with
    // everything typed and the refusal.
    let mut fields = referral_fields(&token, &key, "send");
    fields.push(("conditions", "asthma"));
    fields.push(("consent_recipient", "MW-DSW"));
    let refused = zm.post("/console/referrals/new", &fields);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("category-not-covered"),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("DATA_CATEGORY_HEALTH"),
        "{}",
        refused.body
    );
    for kept in [
        format!("value=\"{GIVEN}\""),
        format!(">{NARRATIVE}</textarea>"),
        "value=\"asthma\"".to_owned(),
        "value=\"MW-DSW\" checked".to_owned(),
    ] {
        assert!(
            refused.body.contains(&kept),
            "keeps {kept}: {}",
            refused.body
        );
    }
    assert_eq!(refusals(&fed, "ZM-DSW", "category-not-covered").await, 1);

    // Without the CSRF token, or from another site: refused, audited, nothing sent.
    let forged: Vec<(&str, &str)> = referral_fields(&token, &key, "send")
        .into_iter()
        .filter(|(k, _)| *k != "csrf")
        .chain([("consent_recipient", "MW-DSW")])
        .collect();
    let refused = zm.post("/console/referrals/new", &forged);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("csrf-token"), "{}", refused.body);
    // What was typed comes back (an expired token must not lose it), with a valid token.
    assert!(
        refused.body.contains(&format!("value=\"{GIVEN}\"")),
        "{}",
        refused.body
    );
    let fresh = field(&refused, "csrf");
    let mut retried = referral_fields(&fresh, &key, "check");
    retried.push(("consent_recipient", "MW-DSW"));
    let retried = zm.post("/console/referrals/new", &retried);
    assert_eq!(
        retried.status, 200,
        "the fresh token works: {}",
        retried.body
    );
    let foreign = tokio::task::block_in_place(|| {
        zm.0.request(
            "POST",
            "/console/referrals/new",
            Some(("application/x-www-form-urlencoded", &encode(&forged))),
            &["Origin: https://evil.example"],
        )
    });
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    assert!(foreign.body.contains("cross-origin"), "{}", foreign.body);
    assert!(
        !foreign.body.contains(GIVEN),
        "another site's post is not echoed"
    );
    assert_eq!(refusals(&fed, "ZM-DSW", "csrf-token").await, 1);
    assert_eq!(refusals(&fed, "ZM-DSW", "cross-origin").await, 1);

    // Nothing left Zambia: no sent item, nothing in Malawi's inbox.
    let sent = zm.get("/console/sent");
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.body.contains("Nothing sent yet."), "{}", sent.body);
    let mut mw = fed.local("MW-DSW", "caseworker");
    assert!(whole_inbox(&mut mw).await.is_empty());
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_sent_from_the_form_arrives_once_is_followed_and_its_consent_withdrawn() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let zm = Browser::role(&fed, "ZM-DSW", "caseworker");
    let form = zm.get("/console/referrals/new");
    let token = field(&form, "csrf");
    let key = field(&form, "idempotency_key");
    let mut fields = referral_fields(&token, &key, "send");
    fields.push(("consent_recipient", "MW-DSW"));

    let sent = zm.post("/console/referrals/new", &fields);
    assert_eq!(sent.status, 303, "{}", sent.body);
    let location = sent.header("location").expect("location").to_owned();
    assert!(location.starts_with("/console/sent/"), "{location}");
    assert!(location.ends_with("?done=sent"), "{location}");
    for secret in [GIVEN, FAMILY, CASE, CONSENT] {
        assert!(!location.contains(secret));
    }
    // The same form posted again (a double click on a slow link): the same referral.
    let again = zm.post("/console/referrals/new", &fields);
    assert_eq!(again.status, 303, "{}", again.body);
    assert_eq!(again.header("location"), Some(location.as_str()));
    let item_path = location.trim_end_matches("?done=sent").to_owned();
    let message_id = item_path.trim_start_matches("/console/sent/").to_owned();

    // It arrives in Malawi's inbox, once.
    let mut mw = fed.local("MW-DSW", "caseworker");
    eventually("the referral reaches Malawi", || {
        let mut mw = mw.clone();
        async move { !whole_inbox(&mut mw).await.is_empty() }
    })
    .await;
    let inbox = whole_inbox(&mut mw).await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].message_id, message_id);
    let identity = inbox[0]
        .referral
        .as_ref()
        .and_then(|r| r.identity.as_ref())
        .expect("identity");
    assert_eq!(identity.given_names, [GIVEN]);

    let first = zm.get(&location);
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(
        first.body.contains("Sent. Its delivery is shown below."),
        "{}",
        first.body
    );

    // The sent list shows it, once; its item shows the delivery and the verified receipt.
    let list = zm.get("/console/sent");
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(
        list.body.matches(&format!("href=\"{item_path}\"")).count(),
        1,
        "{}",
        list.body
    );
    assert!(list.body.contains("MW-DSW") && list.body.contains("referral"));
    assert!(list.body.contains("service referral"), "{}", list.body);
    eventually("the sent item shows its delivery", || {
        let page = zm.get(&item_path);
        async move { page.body.contains(">delivered<") }
    })
    .await;
    let item = zm.get(&item_path);
    assert!(item.body.contains("Signed by MW-DSW."), "{}", item.body);
    assert!(
        item.body.contains("stored in the receiver&#39;s inbox"),
        "{}",
        item.body
    );
    assert!(item.body.contains(CONSENT), "the consent id: {}", item.body);
    assert!(
        !item.body.contains(GIVEN),
        "the sent item shows no child's data"
    );

    // Malawi accepts; Zambia's sent item shows it in the history.
    mw.update_referral_status(pb::UpdateReferralStatusRequest {
        sequence: inbox[0].sequence,
        state: pb::ReferralState::Accepted as i32,
        code: String::new(),
    })
    .await
    .expect("accept");
    eventually("the acceptance reaches Zambia's sent item", || {
        let page = zm.get(&item_path);
        async move { page.body.contains("Current state: accepted") }
    })
    .await;

    // Withdrawal: the confirmation is required.
    let item = zm.get(&item_path);
    let withdraw = format!("{item_path}/withdraw");
    assert!(
        item.body.contains(&format!("action=\"{withdraw}\"")),
        "{}",
        item.body
    );
    let token = field(&item, "csrf");
    let unconfirmed = zm.post(&withdraw, &[("csrf", &token), ("consent_id", CONSENT)]);
    assert_eq!(unconfirmed.status, 400, "{}", unconfirmed.body);
    assert!(
        unconfirmed.body.contains("confirmation-missing"),
        "{}",
        unconfirmed.body
    );
    let no_token = zm.post(&withdraw, &[("consent_id", CONSENT), ("confirm", "yes")]);
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    assert!(no_token.body.contains("csrf-token"));
    assert!(
        !whole_inbox(&mut mw).await[0].purged,
        "nothing withdrawn yet"
    );

    let withdrawn = zm.post(
        &withdraw,
        &[
            ("csrf", &token),
            ("consent_id", CONSENT),
            ("confirm", "yes"),
        ],
    );
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.body);
    assert!(
        withdrawn.body.contains("Consent withdrawn."),
        "{}",
        withdrawn.body
    );
    assert!(
        withdrawn.body.contains("Payloads deleted on this node: 1."),
        "{}",
        withdrawn.body
    );
    let at = withdrawn
        .body
        .find("<td>MW-DSW</td><td><a href=\"/console/sent/")
        .expect("a notice to Malawi")
        + "<td>MW-DSW</td><td><a href=\"".len();
    let end = withdrawn.body[at..].find('"').expect("quote");
    let notice_path = withdrawn.body[at..at + end].to_owned();
    assert_ne!(notice_path, item_path);
    eventually("the notice's receipt comes back", || {
        let page = zm.get(&notice_path);
        async move { page.body.contains("Signed by MW-DSW.") }
    })
    .await;
    let notice = zm.get(&notice_path);
    assert!(
        notice.body.contains("consent withdrawal"),
        "{}",
        notice.body
    );
    eventually("Malawi's copy is purged", || {
        let mut mw = mw.clone();
        async move {
            whole_inbox(&mut mw)
                .await
                .iter()
                .any(|i| i.purged && i.referral.is_none())
        }
    })
    .await;
    assert_eq!(refusals(&fed, "ZM-DSW", "confirmation-missing").await, 1);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforcement_client_may_send_from_the_form_but_not_read_sent_items() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let (cert, key) = fed.issue_client(
        "ZM-DSW",
        "zm-immigration-police",
        "caseworker",
        Some(devpki::DEV_CASEWORKER_UNIT),
        &["immigration-enforcement"],
    );
    let police = Browser::new(&fed, "ZM-DSW", cert, key);
    let form = police.get("/console/referrals/new");
    assert_eq!(form.status, 200, "{}", form.body);
    let token = field(&form, "csrf");
    let key = field(&form, "idempotency_key");
    let mut fields = referral_fields(&token, &key, "send");
    fields.push(("consent_recipient", "MW-DSW"));
    let sent = police.post("/console/referrals/new", &fields);
    assert_eq!(sent.status, 303, "{}", sent.body);
    let location = sent.header("location").expect("location").to_owned();
    assert!(
        location.starts_with("/console/referrals/new?done=sent&id="),
        "{location}"
    );
    let message_id = location.rsplit('=').next().expect("id").to_owned();
    let confirmed = police.get(&location);
    assert!(confirmed.body.contains(&message_id), "{}", confirmed.body);

    let mut mw = fed.local("MW-DSW", "caseworker");
    eventually("the referral reaches Malawi", || {
        let mut mw = mw.clone();
        async move { !whole_inbox(&mut mw).await.is_empty() }
    })
    .await;
    assert_eq!(whole_inbox(&mut mw).await.len(), 1);

    for path in [
        "/console/sent".to_owned(),
        format!("/console/sent/{message_id}"),
    ] {
        let page = police.get(&path);
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(page.body.contains("firewall"), "{path}: {}", page.body);
        for secret in [GIVEN, FAMILY, CASE, CONSENT, "delivered"] {
            assert!(!page.body.contains(secret), "{path} shows {secret}");
        }
    }
    assert!(
        !form.body.contains("href=\"/console/sent\""),
        "no link to what it may not read"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sent_list_pages_newest_first_and_lists_only_referrals() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut grpc = fed.local("ZM-DSW", "caseworker");
    let mut ids = Vec::new();
    for _ in 0..27 {
        let id = grpc
            .submit_referral(submit_request("MW-DSW"))
            .await
            .expect("submit")
            .into_inner()
            .message_id;
        ids.push(id);
    }
    // A withdrawal notice is sent too, but it is no referral: not listed.
    let withdrawn = grpc
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: "CONSENT-1".into(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    assert_eq!(withdrawn.notices.len(), 1);

    let zm = Browser::role(&fed, "ZM-DSW", "caseworker");
    let first = zm.get("/console/sent");
    assert_eq!(first.status, 200, "{}", first.body);
    let listed = |page: &HttpsAnswer| -> Vec<String> {
        ids.iter()
            .filter(|id| page.body.contains(&format!("href=\"/console/sent/{id}\"")))
            .cloned()
            .collect()
    };
    assert_eq!(listed(&first).len(), 25, "{}", first.body);
    assert!(!first.body.contains(&withdrawn.notices[0].message_id));
    let at = first
        .body
        .find("href=\"/console/sent?after_ms=")
        .expect("a next page")
        + 6;
    let end = first.body[at..].find('"').expect("quote");
    let next = first.body[at..at + end].replace("&amp;", "&");
    let second = zm.get(&next);
    assert_eq!(second.status, 200, "{}", second.body);
    let rest = listed(&second);
    assert_eq!(rest.len(), 2, "{}", second.body);
    assert!(
        listed(&first).iter().all(|id| !rest.contains(id)),
        "no item twice"
    );
    assert!(
        second.body.contains("href=\"/console/sent\""),
        "back to the newest"
    );
    assert!(!second.body.contains("after_ms="), "no page after the last");
    // Newest first: the last one submitted is on the first page (the items submitted in the
    // same millisecond are ordered by message id; 27 submissions, each committed to disk,
    // never share one).
    assert!(listed(&first).contains(&ids[26]));
    fed.shutdown().await;
}
