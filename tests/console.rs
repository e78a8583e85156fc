//! The web console, driven by a client that is not ours: curl with client certificates, as
//! a browser with JavaScript off would use it (links and plain form posts). A Zambian
//! referral reaches Malawi; the Malawian caseworker reads it in the console and moves it
//! along with the console's forms; Zambia sees it closed. Forged and foreign forms are
//! refused; an enforcement-tagged client and a role that may not read cases see no case
//! data; every page carries the security headers, stays small, and links to no child's data;
//! the words come from each language's catalogue, Arabic right to left.

mod common;

use std::path::PathBuf;

use common::*;
use kinbridge_node::devpki;
use kinbridge_proto::v1 as pb;

/// What the test referral names: none of it may appear in a link, a form's target, or a page
/// shown to a client who may not see it.
const GIVEN: &str = "Chipo";
const FAMILY: &str = "Mwansa-Banda";
const CASE: &str = "ZM-CASE-7731";
const CONSENT: &str = "CONSENT-CONSOLE-7";

/// A browser with a client certificate, without JavaScript and without a cookie jar (the
/// test sends the cookies it means to).
struct Browser(Https);

/// One answer: the status, the headers (names in lower case) and the body.
type Page = HttpsAnswer;

/// What the tests read of a console page.
trait PageExt {
    /// Every `href` and form `action` of the page.
    fn targets(&self) -> Vec<String>;
    fn field(&self, name: &str) -> Option<String>;
}

impl PageExt for Page {
    fn targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for attribute in ["href=\"", "action=\""] {
            let mut rest = self.body.as_str();
            while let Some(at) = rest.find(attribute) {
                rest = &rest[at + attribute.len()..];
                let end = rest.find('"').unwrap_or(rest.len());
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
        out
    }

    /// The value of the first hidden field `name`.
    fn field(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let at = self.body.find(&marker)? + marker.len();
        let end = self.body[at..].find('"')?;
        Some(self.body[at..at + end].to_owned())
    }
}

impl Browser {
    fn new(fed: &Federation, node: &str, cert: PathBuf, key: PathBuf) -> Self {
        Self(Https::new(fed, node, cert, key))
    }

    fn role(fed: &Federation, node: &str, role: &str) -> Self {
        Self(Https::role(fed, node, role))
    }

    /// `method` on `path`, with a form body (if any) and `headers`; redirects not followed.
    fn request(&self, method: &str, path: &str, form: Option<&str>, headers: &[&str]) -> Page {
        let form = form.map(|f| ("application/x-www-form-urlencoded", f));
        self.0.request(method, path, form, headers)
    }

    fn get(&self, path: &str) -> Page {
        self.request("GET", path, None, &[])
    }

    fn get_with(&self, path: &str, headers: &[&str]) -> Page {
        self.request("GET", path, None, headers)
    }

    fn post(&self, path: &str, form: &str) -> Page {
        self.request("POST", path, Some(form), &[])
    }
}

/// The test referral received at Malawi: its caseworker's browser and the item's link from
/// the console's inbox.
async fn received_item(fed: &Federation) -> (Browser, String) {
    zambian_referral(fed).await;
    let mw = Browser::role(fed, "MW-DSW", "caseworker");
    let inbox = tokio::task::block_in_place(|| mw.get("/console/inbox"));
    let item_link = inbox
        .targets()
        .into_iter()
        .find(|t| t.starts_with("/console/inbox/"))
        .expect("a link to the item");
    (mw, item_link)
}

/// Submits the test referral from Zambia to Malawi by gRPC and waits for its delivery;
/// answers its message id.
async fn zambian_referral(fed: &Federation) -> String {
    let mut zm = fed.local("ZM-DSW", "caseworker");
    let mut req = submit_request("MW-DSW");
    req.correlation_id = CASE.into();
    if let Some(consent) = req.consent.as_mut() {
        consent.consent_id = CONSENT.into();
    }
    if let Some(referral) = req.referral.as_mut() {
        referral.case_reference = CASE.into();
        if let Some(identity) = referral.identity.as_mut() {
            identity.given_names = vec![GIVEN.into()];
            identity.family_names = vec![FAMILY.into()];
        }
    }
    let id = zm
        .submit_referral(req)
        .await
        .expect("submit")
        .into_inner()
        .message_id;
    let delivery = wait_delivery(&mut zm, &id).await;
    assert_eq!(delivery.state, pb::DeliveryState::Delivered as i32);
    id
}

/// The security headers every console response carries.
fn assert_secure(page: &Page, what: &str) {
    assert_eq!(
        page.header("content-security-policy"),
        Some(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "{what}"
    );
    assert_eq!(page.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(
        page.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        page.header("referrer-policy"),
        Some("same-origin"),
        "{what}"
    );
}

/// No link or form target of `page` names the child, the case or the consent.
fn assert_no_case_data_in_targets(page: &Page, what: &str) {
    let targets = page.targets();
    assert!(!targets.is_empty(), "{what} links somewhere");
    for target in targets {
        for secret in [GIVEN, FAMILY, CASE, CONSENT] {
            assert!(
                !target.contains(secret),
                "{what}: the link {target} names {secret}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caseworker_works_a_referral_in_the_console_without_javascript() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let id = zambian_referral(&fed).await;
    let mw = Browser::role(&fed, "MW-DSW", "caseworker");

    let home = tokio::task::block_in_place(|| mw.get("/console/"));
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("MW-DSW"), "{}", home.body);
    assert!(home.body.contains("caseworker"), "{}", home.body);
    assert!(!home.body.contains("<script"), "no JavaScript");

    let inbox = tokio::task::block_in_place(|| mw.get("/console/inbox"));
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    assert!(inbox.body.contains("ZM-DSW"), "{}", inbox.body);
    let item_link = inbox
        .targets()
        .into_iter()
        .find(|t| t.starts_with("/console/inbox/"))
        .expect("a link to the item");

    let item = tokio::task::block_in_place(|| mw.get(&item_link));
    assert_eq!(item.status, 200, "{}", item.body);
    for shown in [
        GIVEN,
        FAMILY,
        CASE,
        CONSENT,
        "interim-care",
        "unaccompanied",
    ] {
        assert!(
            item.body.contains(shown),
            "the item shows {shown}: {}",
            item.body
        );
    }
    assert!(item.body.contains("received"), "its history: {}", item.body);
    let token = item.field("csrf").expect("the forms carry a CSRF token");
    let action = format!("{item_link}/status");
    assert!(item.body.contains(&format!("action=\"{action}\"")));

    // Accept, start, close: each a plain form post, answered 303 back to the item.
    for (step, code, notice) in [
        ("accept", "", "Accepted."),
        ("start", "", "Work started."),
        ("close", "reunified", "Closed."),
    ] {
        let form = format!("csrf={token}&action={step}&code={code}");
        let posted = tokio::task::block_in_place(|| mw.post(&action, &form));
        assert_eq!(posted.status, 303, "{step}: {}", posted.body);
        assert_secure(&posted, step);
        let location = posted.header("location").expect("location").to_owned();
        assert_eq!(location, format!("{item_link}?done={step}"));
        let back = tokio::task::block_in_place(|| mw.get(&location));
        assert_eq!(back.status, 200);
        assert!(back.body.contains(notice), "{step}: {}", back.body);
    }
    let closed = tokio::task::block_in_place(|| mw.get(&item_link));
    assert!(
        closed.body.contains("<code>reunified</code>"),
        "{}",
        closed.body
    );
    assert!(
        closed.body.contains("This referral is final"),
        "no forms once closed: {}",
        closed.body
    );

    // A step the workflow does not allow: the service's refusal on the page, with its status.
    let again = tokio::task::block_in_place(|| {
        mw.post(&action, &format!("csrf={token}&action=accept&code="))
    });
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(
        again.body.contains("workflow-not-allowed"),
        "{}",
        again.body
    );

    // Zambia's own status shows the referral closed.
    let mut zm = fed.local("ZM-DSW", "caseworker");
    eventually("the closure reaches Zambia", || {
        let mut zm = zm.clone();
        let id = id.clone();
        async move {
            zm.get_referral_status(pb::GetReferralStatusRequest { referral_id: id })
                .await
                .is_ok_and(|s| s.into_inner().state == pb::ReferralState::Closed as i32)
        }
    })
    .await;
    let status = zm
        .get_referral_status(pb::GetReferralStatusRequest { referral_id: id })
        .await
        .expect("status")
        .into_inner();
    assert!(status.history.iter().any(|c| c.code == "reunified"));
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_foreign_forms_are_refused_and_change_nothing() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let id = zambian_referral(&fed).await;
    let mw = Browser::role(&fed, "MW-DSW", "caseworker");
    let system = Browser::role(&fed, "MW-DSW", "system");
    let inbox = tokio::task::block_in_place(|| mw.get("/console/inbox"));
    let item_link = inbox
        .targets()
        .into_iter()
        .find(|t| t.starts_with("/console/inbox/"))
        .expect("a link to the item");
    let action = format!("{item_link}/status");
    let token = tokio::task::block_in_place(|| mw.get(&item_link))
        .field("csrf")
        .expect("token");
    let system_token = tokio::task::block_in_place(|| system.get(&item_link))
        .field("csrf")
        .expect("token");

    for (what, form) in [
        ("no token", "action=accept".to_owned()),
        (
            "a wrong token",
            format!("csrf={}&action=accept", "ab".repeat(32)),
        ),
        (
            "another client's token",
            format!("csrf={system_token}&action=accept"),
        ),
    ] {
        let refused = tokio::task::block_in_place(|| mw.post(&action, &form));
        assert_eq!(refused.status, 403, "{what}: {}", refused.body);
        assert!(
            refused.body.contains("csrf-token"),
            "{what}: {}",
            refused.body
        );
        assert!(refused.body.contains("security token"), "{what}");
        assert_secure(&refused, what);
    }
    let foreign = tokio::task::block_in_place(|| {
        mw.request(
            "POST",
            &action,
            Some(&format!("csrf={token}&action=accept")),
            &["Origin: https://evil.example"],
        )
    });
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    assert!(foreign.body.contains("cross-origin"), "{}", foreign.body);

    // Nothing moved: the referral is still only received, at Malawi and at Zambia.
    let mut local = fed.local("MW-DSW", "caseworker");
    let status = local
        .get_referral_status(pb::GetReferralStatusRequest {
            referral_id: id.clone(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state, pb::ReferralState::Received as i32);
    let page = tokio::task::block_in_place(|| mw.get(&item_link));
    assert!(page.body.contains("action=\"accept\"") || page.body.contains("value=\"accept\""));

    // Each refusal is in Malawi's audit log.
    let dir = tempfile::tempdir().expect("tempdir");
    let verified = export_and_verify(
        &fed.pki,
        "MW-DSW",
        fed.node("MW-DSW").local_addr,
        &dir.path().join("log"),
    )
    .await;
    let refusals = |reason: &str| {
        entries(&verified)
            .iter()
            .filter(|e| e.event == pb::AuditEvent::Refused as i32 && e.reason == reason)
            .count()
    };
    assert_eq!(refusals("csrf-token"), 3);
    assert_eq!(refusals("cross-origin"), 1);

    // The same token in the same origin works.
    let same = tokio::task::block_in_place(|| {
        mw.request(
            "POST",
            &action,
            Some(&format!("csrf={token}&action=accept")),
            &[&format!("Origin: {}", mw.0.base)],
        )
    });
    assert_eq!(same.status, 303, "{}", same.body);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_may_not_read_cases_see_no_case_data() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let (_caseworker, item_link) = received_item(&fed).await;

    let (cert, key) = fed.issue_client(
        "MW-DSW",
        "mw-immigration-police",
        "caseworker",
        Some(devpki::DEV_CASEWORKER_UNIT),
        &["immigration-enforcement"],
    );
    let police = Browser::new(&fed, "MW-DSW", cert, key);
    let auditor = Browser::role(&fed, "MW-DSW", "auditor");

    for (who, browser, reason) in [
        ("enforcement", &police, "firewall"),
        ("auditor", &auditor, "role-denied"),
    ] {
        for path in ["/console/inbox", item_link.as_str()] {
            let page = tokio::task::block_in_place(|| browser.get(path));
            assert_eq!(page.status, 403, "{who} {path}: {}", page.body);
            assert!(page.body.contains(reason), "{who} {path}: {}", page.body);
            assert_secure(&page, path);
            for secret in [GIVEN, FAMILY, CASE, CONSENT, "ZM-DSW", "interim-care"] {
                assert!(!page.body.contains(secret), "{who} {path} shows {secret}");
            }
        }
        let token = format!("csrf={}&action=accept", "00".repeat(32));
        let post =
            tokio::task::block_in_place(|| browser.post(&format!("{item_link}/status"), &token));
        assert_eq!(post.status, 403, "{who}: {}", post.body);
    }
    let home = tokio::task::block_in_place(|| police.get("/console/"));
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(
        home.body.contains("immigration-enforcement"),
        "{}",
        home.body
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_secure_small_linked_without_case_data_and_in_each_language() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let (mw, item_link) = received_item(&fed).await;

    let style = tokio::task::block_in_place(|| mw.get("/console/style.css"));
    assert_eq!(style.status, 200);
    assert!(
        style
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/css"))
    );
    assert!(
        style.body.contains("[dir=\"rtl\"]"),
        "the stylesheet handles right to left"
    );
    assert!(
        !style.body.contains("@import") && !style.body.contains("url("),
        "no external fonts"
    );
    assert_secure(&style, "the stylesheet");

    for path in [
        "/console/",
        "/console/inbox",
        item_link.as_str(),
        "/console/nowhere",
    ] {
        for lang in ["en", "fr", "pt", "es", "ar"] {
            let page = tokio::task::block_in_place(|| mw.get(&format!("{path}?lang={lang}")));
            let what = format!("{path} in {lang}");
            let expected = if path == "/console/nowhere" { 404 } else { 200 };
            assert_eq!(page.status, expected, "{what}: {}", page.body);
            assert_secure(&page, &what);
            assert!(
                page.header("content-type")
                    .is_some_and(|c| c.starts_with("text/html")),
                "{what}"
            );
            assert!(
                page.body.contains(&format!("<html lang=\"{lang}\"")),
                "{what}"
            );
            let weight = page.body.len() + style.body.len();
            assert!(weight < 150 * 1024, "{what} weighs {weight} bytes");
            assert!(!page.body.contains("<script"), "{what} has no script");
            assert!(
                !page.body.contains("http://") && !page.body.contains("https://"),
                "{what} loads nothing from elsewhere"
            );
            assert_no_case_data_in_targets(&page, &what);
            assert!(
                page.header("set-cookie")
                    .is_some_and(|c| c.starts_with(&format!("kinbridge-lang={lang};"))
                        && c.contains("Secure")
                        && c.contains("HttpOnly")),
                "{what} keeps the chosen language"
            );
        }
    }

    // Arabic: right to left, in Arabic; kept by the cookie; French from the browser's choice.
    let arabic = tokio::task::block_in_place(|| mw.get("/console/inbox?lang=ar"));
    assert!(
        arabic.body.contains("<html lang=\"ar\" dir=\"rtl\">"),
        "{}",
        arabic.body
    );
    assert!(arabic.body.contains("صندوق الوارد"), "{}", arabic.body);
    let kept = tokio::task::block_in_place(|| {
        mw.get_with(
            "/console/inbox",
            &["Cookie: kinbridge-lang=ar", "Accept-Language: fr"],
        )
    });
    assert!(kept.body.contains("dir=\"rtl\""), "{}", kept.body);
    let french = tokio::task::block_in_place(|| {
        mw.get_with("/console/inbox", &["Accept-Language: de, fr;q=0.8"])
    });
    assert!(
        french.body.contains("<html lang=\"fr\" dir=\"ltr\">"),
        "{}",
        french.body
    );
    assert!(
        french.body.contains("Boîte de réception"),
        "{}",
        french.body
    );
    let english = tokio::task::block_in_place(|| mw.get("/console/inbox"));
    assert!(english.body.contains("<html lang=\"en\" dir=\"ltr\">"));
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_item_is_shown_purged_and_another_units_item_not_at_all() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let (mw, item_link) = received_item(&fed).await;

    // A caseworker of another district: the item is neither listed nor shown.
    let (cert, key) = fed.issue_client(
        "MW-DSW",
        "mw-mangochi-caseworker",
        "caseworker",
        Some("mangochi-district"),
        &[],
    );
    let other = Browser::new(&fed, "MW-DSW", cert, key);
    let listed = tokio::task::block_in_place(|| other.get("/console/inbox"));
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(
        !listed.body.contains(&format!("href=\"{item_link}\"")),
        "{}",
        listed.body
    );
    let shown = tokio::task::block_in_place(|| other.get(&item_link));
    assert_eq!(shown.status, 403, "{}", shown.body);
    assert!(shown.body.contains("other-unit"), "{}", shown.body);
    for secret in [GIVEN, FAMILY, CASE] {
        assert!(!shown.body.contains(secret), "another unit sees {secret}");
    }

    // The guardian withdraws consent at Zambia: Malawi purges, the console says so.
    let mut zm = fed.local("ZM-DSW", "caseworker");
    let withdrawn = zm
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: CONSENT.into(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    for notice in &withdrawn.notices {
        let d = wait_delivery(&mut zm, &notice.message_id).await;
        assert_eq!(
            d.state,
            pb::DeliveryState::Delivered as i32,
            "{}",
            d.last_error
        );
    }
    let purged = tokio::task::block_in_place(|| mw.get(&item_link));
    assert_eq!(purged.status, 200, "{}", purged.body);
    assert!(purged.body.contains("was purged"), "{}", purged.body);
    for secret in [GIVEN, FAMILY, CASE, "interim-care"] {
        assert!(
            !purged.body.contains(secret),
            "the purged item shows {secret}"
        );
    }
    let inbox = tokio::task::block_in_place(|| mw.get("/console/inbox"));
    assert!(inbox.body.contains(">purged<"), "{}", inbox.body);
    assert!(inbox.body.contains("consent withdrawal"), "{}", inbox.body);
    fed.shutdown().await;
}
