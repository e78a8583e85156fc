//! The web console's family tracing pages, driven by curl with client certificates as a
//! browser with JavaScript off would use them, over real mutual TLS against real nodes: a
//! Zambian caseworker registers a child, a Malawian caseworker the family's request, both
//! through the console's form; the match shows on both consoles with its band, each side
//! confirms it with the console's form, and only then do the agreed details show side by
//! side. A match ruled out shows ruled out on both sides; refused forms come back filled in;
//! forged forms, an enforcement-tagged client and an auditor are refused and see no tracing
//! data.

mod common;

use std::path::PathBuf;

use common::*;
use kinbridge_core::UnixMillis;
use kinbridge_node::devpki;
use kinbridge_proto::v1 as pb;

const ZM: &str = "ZM-DSW";
const MW: &str = "MW-DSW";

/// What only Zambia's case holds: none of it may show at Malawi before both confirm.
const ZAMBIA_ONLY: [&str; 4] = ["Ameena", "Yusuf", "border post", "ZM-LSK-2026-0193"];
/// What only Malawi's case holds: none of it may show at Zambia before both confirm.
const MALAWI_ONLY: [&str; 3] = ["Aminah", "Yussuf", "MW-MCH-2026-0077"];

/// A browser with a client certificate, without JavaScript and without a cookie jar.
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

    fn post(&self, path: &str, form: &str) -> HttpsAnswer {
        let body = Some(("application/x-www-form-urlencoded", form));
        tokio::task::block_in_place(|| self.0.request("POST", path, body, &[]))
    }

    /// The CSRF token of the caller's forms, from the tracing page.
    fn token(&self) -> String {
        let page = self.get("/console/tracing");
        assert_eq!(page.status, 200, "{}", page.body);
        hidden(&page, "csrf").expect("the form carries a CSRF token")
    }
}

/// The value of the first field `name` of `page`.
fn hidden(page: &HttpsAnswer, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.body.find(&marker)? + marker.len();
    let end = page.body[at..].find('"')?;
    Some(page.body[at..at + end].to_owned())
}

/// The first link of `page` under `prefix`.
fn link(page: &HttpsAnswer, prefix: &str) -> Option<String> {
    let marker = format!("href=\"{prefix}");
    let at = page.body.find(&marker)? + "href=\"".len();
    let end = page.body[at..].find('"')?;
    Some(page.body[at..at + end].to_owned())
}

/// `fields` as an `application/x-www-form-urlencoded` body.
fn encode(fields: &[(&str, &str)]) -> String {
    let part = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", part(k), part(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The civil date (YYYY-MM-DD, UTC) `days` from now (H. Hinnant's days-to-civil).
fn date_in(days: i64) -> String {
    let z = UnixMillis::now().0 / 86_400_000 + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The child, as Zambia's caseworker types her into the form.
fn zambia_record(until: &str) -> Vec<(&'static str, String)> {
    [
        ("kind", "record"),
        ("case_reference", "ZM-LSK-2026-0193"),
        ("given_names", "Amina"),
        ("family_names", "Yusuf, Hassan"),
        ("other_names", "Ameena"),
        ("sex", "female"),
        ("birth_date", "2014-03-02"),
        ("languages", "sw"),
        ("place_of_separation", "Mwami border post"),
        ("date_of_separation", "2026-04-11"),
        ("relative1_relationship", "mother"),
        ("relative1_names", "Halima Hassan"),
        ("consent_id", "ZM-CONSENT-TRACE-1"),
        ("given_by", "parent"),
        ("child_views", "yes"),
        ("covers_tracing", "yes"),
        ("category", "identity"),
        ("category", "family"),
        ("category", "location"),
        ("recipients", MW),
        ("consent_until", until),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

/// The family's request, as Malawi's caseworker types it: the child as her mother spells her.
fn malawi_request(until: &str) -> Vec<(&'static str, String)> {
    [
        ("kind", "request"),
        ("case_reference", "MW-MCH-2026-0077"),
        ("given_names", "Aminah"),
        ("family_names", "Yussuf, Hassan"),
        ("sex", "female"),
        ("birth_date", "2014-03-02"),
        ("place_of_separation", "Mwami border"),
        ("date_of_separation", "2026-04-11"),
        ("relative1_relationship", "mother"),
        ("relative1_names", "Halima Hassan"),
        ("consent_id", "MW-CONSENT-TRACE-4"),
        ("given_by", "parent"),
        ("covers_tracing", "yes"),
        ("category", "identity"),
        ("category", "family"),
        ("category", "location"),
        ("recipients", ZM),
        ("consent_until", until),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

/// Posts the registration form with `fields` and the caller's token: answers the result.
fn register(browser: &Browser, fields: &[(&str, String)], token: Option<&str>) -> HttpsAnswer {
    let mut all: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Some(token) = token {
        all.push(("csrf", token));
    }
    browser.post("/console/tracing/register", &encode(&all))
}

/// Registers `fields` through the console's form, expecting the `303` and the notice.
fn register_ok(browser: &Browser, fields: &[(&str, String)]) {
    let token = browser.token();
    let posted = register(browser, fields, Some(&token));
    assert_eq!(posted.status, 303, "{}", posted.body);
    let to = posted.header("location").expect("location").to_owned();
    assert_eq!(to, "/console/tracing?done=registered");
    let back = browser.get(&to);
    assert_eq!(back.status, 200, "{}", back.body);
    assert!(back.body.contains("Registered."), "{}", back.body);
}

/// The link to the first match on `browser`'s tracing page, once there is one.
async fn match_link(browser: &Browser, what: &str) -> String {
    eventually(what, || {
        let found = link(
            &browser.get("/console/tracing"),
            "/console/tracing/matches/",
        );
        async move { found.is_some() }
    })
    .await;
    link(
        &browser.get("/console/tracing"),
        "/console/tracing/matches/",
    )
    .expect("a match link")
}

/// Reviews the match at `link` with the console's form: `action` with the box ticked.
fn review(browser: &Browser, link: &str, action: &str) -> HttpsAnswer {
    let page = browser.get(link);
    let token = hidden(&page, "csrf").expect("the review forms carry a token");
    let form = encode(&[("csrf", &token), ("action", action), ("sure", "yes")]);
    browser.post(&format!("{link}/review"), &form)
}

/// Waits until `browser`'s page at `path` contains `text`.
async fn until_shown(browser: &Browser, path: &str, text: &str) {
    eventually(&format!("{path} shows '{text}'"), || {
        let page = browser.get(path);
        async move { page.body.contains(text) }
    })
    .await;
}

fn assert_none_of(page: &HttpsAnswer, needles: &[&str], what: &str) {
    for needle in needles {
        assert!(
            !page.body.contains(needle),
            "{what} shows '{needle}': {}",
            page.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_found_across_borders_is_confirmed_on_both_consoles_and_shown_side_by_side() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&[ZM, MW]).await;
    let until = date_in(60);
    let zm = Browser::role(&fed, ZM, "caseworker");
    let mw = Browser::role(&fed, MW, "caseworker");

    // The form itself: every field labelled, the kinds a group, a CSRF token.
    let empty = zm.get("/console/tracing");
    assert_eq!(empty.status, 200, "{}", empty.body);
    for shown in [
        "No matches yet.",
        "Your unit has registered no tracing case.",
        "action=\"/console/tracing/register\"",
        "<legend>What you register</legend>",
        "<label for=\"given_names\">Given names</label>",
        "<label for=\"consent_until\">",
    ] {
        assert!(empty.body.contains(shown), "{shown}: {}", empty.body);
    }

    // Zambia registers the child, Malawi the family's request: both with the console's form.
    register_ok(&zm, &zambia_record(&until));
    register_ok(&mw, &malawi_request(&until));
    let cases = mw.get("/console/tracing");
    assert!(
        cases.body.contains("MW-MCH-2026-0077")
            && cases.body.contains("request (a family looking)"),
        "{}",
        cases.body
    );

    // The match appears on both consoles, with its band, awaiting each side.
    let at_mw = match_link(&mw, "Malawi's console lists the match").await;
    let at_zm = match_link(&zm, "Zambia's console lists the match").await;
    for (browser, name) in [(&mw, "Malawi"), (&zm, "Zambia")] {
        let overview = browser.get("/console/tracing");
        assert!(
            overview.body.contains("<h3>Likely matches</h3>")
                || overview.body.contains("<h3>Possible matches</h3>"),
            "{name}: {}",
            overview.body
        );
        assert!(
            overview.body.contains("Awaiting your confirmation"),
            "{name}: {}",
            overview.body
        );
    }
    let before = mw.get(&at_mw);
    assert_eq!(before.status, 200, "{}", before.body);
    assert!(
        before.body.contains("Likely") || before.body.contains("Possible"),
        "{}",
        before.body
    );
    assert!(before.body.contains(">Confirm</button>"), "{}", before.body);
    assert!(
        before.body.contains(">Rule out</button>"),
        "{}",
        before.body
    );
    assert!(
        before.body.contains("Aminah"),
        "Malawi's own case: {}",
        before.body
    );
    assert_none_of(
        &before,
        &ZAMBIA_ONLY,
        "Malawi's match page before any confirmation",
    );
    assert_none_of(
        &zm.get(&at_zm),
        &MALAWI_ONLY,
        "Zambia's match page before any confirmation",
    );

    // Malawi confirms with the console's form.
    let confirmed = review(&mw, &at_mw, "confirm");
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    let to = confirmed.header("location").expect("location").to_owned();
    assert_eq!(to, format!("{at_mw}?done=confirmed"));
    let back = mw.get(&to);
    assert!(
        back.body.contains("Confirmed. The other side is told."),
        "{}",
        back.body
    );
    assert!(
        back.body.contains("Awaiting the other side"),
        "{}",
        back.body
    );
    assert!(
        !back.body.contains(">Confirm</button>"),
        "reviewed once: {}",
        back.body
    );

    // Zambia learns it; still nothing of the other case on either side.
    until_shown(&zm, &at_zm, "Confirmed by the other side</dt><dd>yes").await;
    let waiting = zm.get(&at_zm);
    assert!(
        waiting.body.contains("Awaiting your confirmation"),
        "{}",
        waiting.body
    );
    assert_none_of(
        &waiting,
        &MALAWI_ONLY,
        "Zambia's match page after Malawi confirmed",
    );
    assert_none_of(
        &mw.get(&at_mw),
        &ZAMBIA_ONLY,
        "Malawi's match page after it confirmed",
    );

    // Zambia confirms: the agreed details are exchanged and shown side by side.
    let confirmed = review(&zm, &at_zm, "confirm");
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    for (browser, link) in [(&mw, &at_mw), (&zm, &at_zm)] {
        until_shown(browser, link, "Confirmed by both; details shown").await;
    }
    let shown = mw.get(&at_mw);
    for detail in [
        "The agreed details, side by side",
        "Ameena",
        "Yusuf",
        "Mwami border post",
        "Aminah",
        "Yussuf",
        "Halima Hassan",
    ] {
        assert!(
            shown.body.contains(detail),
            "Malawi shows {detail}: {}",
            shown.body
        );
    }
    assert!(
        !shown.body.contains("ZM-LSK-2026-0193"),
        "Zambia's case reference is no agreed detail"
    );
    let shown = zm.get(&at_zm);
    for detail in [
        "Aminah",
        "Yussuf",
        "Ameena",
        "<th scope=\"row\">Given names</th>",
    ] {
        assert!(
            shown.body.contains(detail),
            "Zambia shows {detail}: {}",
            shown.body
        );
    }
    assert!(!shown.body.contains("MW-MCH-2026-0077"));
    let overview = zm.get("/console/tracing");
    assert!(
        overview.body.contains("Confirmed by both; details shown"),
        "{}",
        overview.body
    );

    // Both pages in every language: complete, small, no script, no child's data in a link.
    for path in ["/console/tracing", at_zm.as_str()] {
        for lang in ["en", "fr", "pt", "es", "ar"] {
            let page = zm.get(&format!("{path}?lang={lang}"));
            let what = format!("{path} in {lang}");
            assert_eq!(page.status, 200, "{what}: {}", page.body);
            assert!(
                page.body.contains(&format!("<html lang=\"{lang}\"")),
                "{what}"
            );
            assert!(!page.body.contains(">?<"), "{what} lacks a message");
            assert!(
                page.body.len() < 150 * 1024,
                "{what} weighs {}",
                page.body.len()
            );
            assert!(!page.body.contains("<script"), "{what}");
            for target in page
                .body
                .split("href=\"")
                .skip(1)
                .chain(page.body.split("action=\"").skip(1))
            {
                let target = target.split('"').next().unwrap_or_default();
                for secret in ["Amina", "Yusuf", "Hassan", "ZM-LSK", "MW-MCH", "CONSENT"] {
                    assert!(
                        !target.contains(secret),
                        "{what}: the link {target} names {secret}"
                    );
                }
            }
        }
    }
    let arabic = zm.get(&format!("{at_zm}?lang=ar"));
    assert!(arabic.body.contains("dir=\"rtl\""), "{}", arabic.body);
    assert!(
        arabic.body.contains("التفاصيل المتفق عليها"),
        "{}",
        arabic.body
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_forms_ruled_out_matches_and_clients_that_may_not_see_tracing() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&[ZM, MW]).await;
    let until = date_in(60);
    let zm = Browser::role(&fed, ZM, "caseworker");
    let mw = Browser::role(&fed, MW, "caseworker");

    // A consent that does not cover tracing: the use case refuses, the form comes back filled.
    let token = mw.token();
    let uncovered: Vec<(&str, String)> = malawi_request(&until)
        .into_iter()
        .filter(|(k, _)| *k != "covers_tracing")
        .collect();
    let refused = register(&mw, &uncovered, Some(&token));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("purpose-not-covered"),
        "{}",
        refused.body
    );
    for typed in [
        "value=\"Aminah\"",
        "value=\"Yussuf, Hassan\"",
        "value=\"Halima Hassan\"",
        "value=\"MW-CONSENT-TRACE-4\"",
        "value=\"request\" required checked",
        "value=\"parent\" selected",
    ] {
        assert!(
            refused.body.contains(typed),
            "kept {typed}: {}",
            refused.body
        );
    }
    // Without the token: refused, filled in again with a fresh token.
    let forged = register(&mw, &malawi_request(&until), None);
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("csrf-token"), "{}", forged.body);
    assert!(forged.body.contains("value=\"Aminah\""), "{}", forged.body);
    assert!(hidden(&forged, "csrf").is_some_and(|t| !t.is_empty()));
    let none = mw.get("/console/tracing");
    assert!(
        none.body
            .contains("Your unit has registered no tracing case."),
        "nothing was registered: {}",
        none.body
    );

    // Registered properly, the match appears; Zambia rules it out.
    register_ok(&zm, &zambia_record(&until));
    register_ok(&mw, &malawi_request(&until));
    let at_zm = match_link(&zm, "Zambia's console lists the match").await;
    let at_mw = match_link(&mw, "Malawi's console lists the match").await;
    let page = zm.get(&at_zm);
    let token = hidden(&page, "csrf").expect("token");
    let unticked = zm.post(
        &format!("{at_zm}/review"),
        &encode(&[("csrf", &token), ("action", "rule-out")]),
    );
    assert_eq!(unticked.status, 400, "{}", unticked.body);
    assert!(
        unticked.body.contains("review-not-ticked"),
        "{}",
        unticked.body
    );
    assert!(
        unticked.body.contains(">Rule out</button>"),
        "{}",
        unticked.body
    );
    let no_token = zm.post(
        &format!("{at_zm}/review"),
        &encode(&[("action", "rule-out"), ("sure", "yes")]),
    );
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    assert!(no_token.body.contains("csrf-token"), "{}", no_token.body);
    assert!(
        zm.get(&at_zm).body.contains("Awaiting your confirmation"),
        "the refused forms changed nothing"
    );
    let ruled = review(&zm, &at_zm, "rule-out");
    assert_eq!(ruled.status, 303, "{}", ruled.body);
    assert_eq!(
        ruled.header("location"),
        Some(format!("{at_zm}?done=ruled-out").as_str())
    );
    let page = zm.get(&at_zm);
    assert!(
        page.body.contains("This match was ruled out."),
        "{}",
        page.body
    );
    assert!(!page.body.contains(">Confirm</button>"), "{}", page.body);
    let again = zm.post(
        &format!("{at_zm}/review"),
        &encode(&[
            ("csrf", &zm.token()),
            ("action", "confirm"),
            ("sure", "yes"),
        ]),
    );
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.body.contains("already-reviewed"), "{}", again.body);
    until_shown(&mw, &at_mw, "This match was ruled out.").await;

    // A caseworker of another unit neither lists nor opens the match.
    let (cert, key) = fed.issue_client(
        MW,
        "mw-mangochi-caseworker",
        "caseworker",
        Some("mangochi-district"),
        &[],
    );
    let other = Browser::new(&fed, MW, cert, key);
    let listed = other.get("/console/tracing");
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.body.contains("No matches yet."), "{}", listed.body);
    assert_none_of(&listed, &MALAWI_ONLY, "another unit's tracing page");
    let opened = other.get(&at_mw);
    assert_eq!(opened.status, 403, "{}", opened.body);
    assert!(opened.body.contains("other-unit"), "{}", opened.body);
    assert_none_of(&opened, &MALAWI_ONLY, "another unit's match page");
    until_shown(&mw, "/console/tracing", "Ruled out").await;
    assert_none_of(&mw.get(&at_mw), &ZAMBIA_ONLY, "Malawi's ruled-out match");

    // An enforcement-tagged client and an auditor: refused on every tracing page, shown nothing.
    let (cert, key) = fed.issue_client(
        MW,
        "mw-immigration-police",
        "caseworker",
        Some(devpki::DEV_CASEWORKER_UNIT),
        &["immigration-enforcement"],
    );
    let police = Browser::new(&fed, MW, cert, key);
    let auditor = Browser::role(&fed, MW, "auditor");
    let secrets: Vec<&str> = MALAWI_ONLY
        .iter()
        .chain(&ZAMBIA_ONLY)
        .copied()
        .chain([ZM, "Halima", "Ruled out", "MW-CONSENT-TRACE-4"])
        .collect();
    let any_token = "00".repeat(32);
    for (who, browser, reason) in [
        ("enforcement", &police, "firewall"),
        ("auditor", &auditor, "role-denied"),
    ] {
        for path in ["/console/tracing", at_mw.as_str()] {
            let page = browser.get(path);
            assert_eq!(page.status, 403, "{who} {path}: {}", page.body);
            assert!(page.body.contains(reason), "{who} {path}: {}", page.body);
            if path == "/console/tracing" {
                assert!(!page.body.contains("/console/tracing/matches/"), "{who}");
            }
            assert_none_of(&page, &secrets, &format!("{who} on {path}"));
        }
        let posted = register(browser, &malawi_request(&until), Some(&any_token));
        assert_eq!(posted.status, 403, "{who}: {}", posted.body);
        assert!(
            !posted.body.contains("value=\"Aminah\""),
            "{who}: {}",
            posted.body
        );
        let reviewed = browser.post(
            &format!("{at_mw}/review"),
            &encode(&[("csrf", &any_token), ("action", "confirm"), ("sure", "yes")]),
        );
        assert_eq!(reviewed.status, 403, "{who}: {}", reviewed.body);
        assert_none_of(&reviewed, &secrets, &format!("{who} reviewing"));
    }

    // Each refusal is in the audit log of the node that refused it.
    let dir = tempfile::tempdir().expect("tempdir");
    for (node, expected) in [
        (
            MW,
            &[
                ("purpose-not-covered", 1),
                ("csrf-token", 3),
                ("firewall", 4),
            ][..],
        ),
        (ZM, &[("review-not-ticked", 1), ("csrf-token", 1)][..]),
    ] {
        let verified = export_and_verify(
            &fed.pki,
            node,
            fed.node(node).local_addr,
            &dir.path().join(node),
        )
        .await;
        let entries = entries(&verified);
        for (reason, count) in expected {
            let found = entries
                .iter()
                .filter(|e| e.event == pb::AuditEvent::Refused as i32 && e.reason == *reason)
                .count();
            assert_eq!(found, *count, "{node}: refusals for {reason}");
        }
        let role_denied = entries
            .iter()
            .any(|e| e.event == pb::AuditEvent::Refused as i32 && e.reason == "role-denied");
        assert_eq!(role_denied, node == MW, "{node}: the auditor's refusals");
    }
    fed.shutdown().await;
}
