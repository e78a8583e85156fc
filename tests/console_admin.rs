//! The console's administration pages and its idle sessions, driven by curl with client
//! certificates over real mutual TLS to real nodes. An administrator sees the node's health,
//! its peers and its keys (a key near its end flagged); an auditor sees the keys only; other
//! roles and an enforcement-tagged administrator are refused, in the audit log. A browser's
//! first visit is asked to start a session; a session ends after the node's idle limit; a
//! session cookie of another client, or a tampered one, opens nothing.

mod common;

use common::*;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::admin_service_client::AdminServiceClient;

const FORM: &str = "application/x-www-form-urlencoded";

/// The value of the first field `name` of a page's forms.
fn field(page: &HttpsAnswer, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.body.find(&marker)? + marker.len();
    let end = page.body[at..].find('"')?;
    Some(page.body[at..at + end].to_owned())
}

/// The `name=value` of the session cookie an answer sets, and the whole header.
fn session_cookie(page: &HttpsAnswer) -> Option<(String, String)> {
    page.headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .find(|(_, v)| v.starts_with("kinbridge-session="))
        .map(|(_, v)| {
            (
                v.split(';').next().unwrap_or_default().to_owned(),
                v.clone(),
            )
        })
}

/// Starts a session as `browser` by the session page's button; answers the cookie.
fn start_session(browser: &Https, path: &str) -> String {
    let first = browser.request_raw("GET", path, None, &[]);
    assert_eq!(first.status, 401, "{}", first.body);
    let csrf = field(&first, "csrf").expect("the session page's CSRF token");
    let to = field(&first, "to").expect("where to go back to");
    assert_eq!(to, path);
    let started = browser.request_raw(
        "POST",
        "/console/session",
        Some((FORM, &format!("csrf={csrf}&to={to}"))),
        &[],
    );
    assert_eq!(started.status, 303, "{}", started.body);
    assert_eq!(started.header("location"), Some(path));
    let (cookie, header) = session_cookie(&started).expect("a session cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(header.contains(attribute), "{header} lacks {attribute}");
    }
    cookie
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_sees_health_peers_and_keys_and_others_only_what_they_may() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut grpc_admin = AdminServiceClient::new(fed.channel("MW-DSW", "admin"));
    let keys = grpc_admin
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("keys")
        .into_inner();

    let admin = Https::role(&fed, "MW-DSW", "admin");
    let page = tokio::task::block_in_place(|| admin.request("GET", "/console/admin", None, &[]));
    assert_eq!(page.status, 200, "{}", page.body);
    for text in [
        "<h2 id=\"health\">Node health</h2>",
        "MW-DSW",
        "Audit log entries",
        "Messages waiting for delivery",
        "answering",
        "<h2 id=\"peers\">Peers</h2>",
        "<th scope=\"row\">ZM-DSW</th>",
        "This node&#39;s keys",
        "Peers&#39; keys",
        "In use",
    ] {
        assert!(
            page.body.contains(text),
            "the admin page shows {text}: {}",
            page.body
        );
    }
    for key in keys.own.iter().chain(&keys.peers) {
        assert!(
            page.body.contains(&key.fingerprint),
            "the admin page shows {}'s fingerprint",
            key.key_id
        );
    }
    let own = keys.own[0].fingerprint.clone();
    assert!(
        page.body.contains("aria-current=\"page\""),
        "the nav marks the page"
    );

    // In French.
    let french =
        tokio::task::block_in_place(|| admin.request("GET", "/console/admin?lang=fr", None, &[]));
    assert!(french.body.contains("État du nœud"), "{}", french.body);
    assert!(french.body.contains("sans limite"), "{}", french.body);

    // An auditor reads the keys, not the node's operations.
    let auditor = Https::role(&fed, "MW-DSW", "auditor");
    let keys_page =
        tokio::task::block_in_place(|| auditor.request("GET", "/console/admin/keys", None, &[]));
    assert_eq!(keys_page.status, 200, "{}", keys_page.body);
    assert!(keys_page.body.contains(&own));
    assert!(!keys_page.body.contains("Node health"));
    let refused =
        tokio::task::block_in_place(|| auditor.request("GET", "/console/admin", None, &[]));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("role-denied"), "{}", refused.body);
    assert!(!refused.body.contains(&own));
    assert!(!refused.body.contains("Node health"));
    assert!(
        !auditor_home_links_admin(&auditor),
        "the auditor's navigation has no administration link"
    );

    // A caseworker reads neither; an enforcement-tagged administrator is stopped by the firewall.
    let caseworker = Https::role(&fed, "MW-DSW", "caseworker");
    let (cert, key) = fed.issue_client(
        "MW-DSW",
        "mw-enforcement-admin",
        "admin",
        None,
        &["immigration-enforcement"],
    );
    let enforcement = Https::new(&fed, "MW-DSW", cert, key);
    for (who, browser, reason) in [
        ("caseworker", &caseworker, "role-denied"),
        ("enforcement", &enforcement, "firewall"),
    ] {
        for path in ["/console/admin", "/console/admin/keys"] {
            let page = tokio::task::block_in_place(|| browser.request("GET", path, None, &[]));
            assert_eq!(page.status, 403, "{who} {path}: {}", page.body);
            assert!(page.body.contains(reason), "{who} {path}: {}", page.body);
            assert!(!page.body.contains(&own), "{who} {path}");
        }
    }

    // The refusals are in the audit log, each with its client.
    let dir = tempfile::tempdir().expect("tempdir");
    let verified = export_and_verify(
        &fed.pki,
        "MW-DSW",
        fed.node("MW-DSW").local_addr,
        &dir.path().join("log"),
    )
    .await;
    let refused_for = |actor: &str, reason: &str| {
        entries(&verified)
            .iter()
            .filter(|e| {
                e.event == pb::AuditEvent::Refused as i32 && e.actor == actor && e.reason == reason
            })
            .count()
    };
    assert_eq!(refused_for("auditor-1", "role-denied"), 1);
    assert_eq!(refused_for("caseworker-1", "role-denied"), 2);
    assert_eq!(refused_for("mw-enforcement-admin", "firewall"), 2);

    // A new key that lives ten days: the page flags it (and the old one, ending in an hour).
    let rotated = grpc_admin
        .rotate_key(pb::RotateKeyRequest {
            key_id: "MW-DSW-short".into(),
            overlap_seconds: 3600,
            lifetime_seconds: 10 * 24 * 3600,
        })
        .await
        .expect("rotate")
        .into_inner();
    let short = rotated.key.expect("the new key");
    let page = tokio::task::block_in_place(|| admin.request("GET", "/console/admin", None, &[]));
    assert_eq!(page.status, 200, "{}", page.body);
    for text in [
        "<code>MW-DSW-short</code>",
        short.fingerprint.as_str(),
        "expires in 9 days Make a new key now.",
        "expires in 0 days Make a new key now.",
    ] {
        assert!(
            page.body.contains(text),
            "the admin page shows {text}: {}",
            page.body
        );
    }
    fed.shutdown().await;
}

/// Whether the auditor's home page links to the administration page.
fn auditor_home_links_admin(auditor: &Https) -> bool {
    let home = auditor.request("GET", "/console/", None, &[]);
    assert_eq!(home.status, 200, "{}", home.body);
    home.body.contains("href=\"/console/admin\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_starts_with_a_button_and_opens_only_for_its_own_client() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let caseworker = Https::role(&fed, "MW-DSW", "caseworker");
    let auditor = Https::role(&fed, "MW-DSW", "auditor");
    tokio::task::block_in_place(|| {
        // The stylesheet needs no session.
        let style = caseworker.request_raw("GET", "/console/style.css", None, &[]);
        assert_eq!(style.status, 200);

        // A first visit: no case data, a button to start.
        let first = caseworker.request_raw("GET", "/console/inbox", None, &[]);
        assert_eq!(first.status, 401, "{}", first.body);
        assert!(first.body.contains("Start your session"), "{}", first.body);
        assert!(
            first.body.contains("Continue as caseworker-1"),
            "{}",
            first.body
        );
        assert!(first.body.contains("action=\"/console/session\""));
        assert!(
            !first.body.contains("<table"),
            "no inbox on the session page"
        );
        assert_eq!(first.header("cache-control"), Some("no-store"));
        let arabic = caseworker.request_raw("GET", "/console/inbox?lang=ar", None, &[]);
        assert!(arabic.body.contains("dir=\"rtl\""));
        assert!(
            arabic.body.contains("المتابعة باسم caseworker-1"),
            "{}",
            arabic.body
        );

        // Continuing shows the inbox, and each request refreshes the session.
        let cookie = start_session(&caseworker, "/console/inbox");
        let inbox = caseworker.request_raw(
            "GET",
            "/console/inbox",
            None,
            &[&format!("Cookie: {cookie}")],
        );
        assert_eq!(inbox.status, 200, "{}", inbox.body);
        assert!(inbox.body.contains("<h1>Inbox</h1>"), "{}", inbox.body);
        assert!(session_cookie(&inbox).is_some(), "the session is refreshed");

        // Another client's cookie opens nothing.
        let theirs = start_session(&auditor, "/console/");
        let borrowed = caseworker.request_raw(
            "GET",
            "/console/inbox",
            None,
            &[&format!("Cookie: {theirs}")],
        );
        assert_eq!(borrowed.status, 401, "{}", borrowed.body);
        assert!(!borrowed.body.contains("<h1>Inbox</h1>"));

        // Nor does a tampered one: a later time, or a changed signature.
        let (name, value) = cookie.split_once('=').expect("name=value");
        let mut parts: Vec<String> = value.split('.').map(str::to_owned).collect();
        let at: u64 = parts[0].parse().expect("a time");
        let mut later = parts.clone();
        later[0] = (at + 3_600_000).to_string();
        let last = parts[2].pop().expect("a signature");
        parts[2].push(if last == '0' { '1' } else { '0' });
        for forged in [later.join("."), parts.join("."), String::new()] {
            let page = caseworker.request_raw(
                "GET",
                "/console/inbox",
                None,
                &[&format!("Cookie: {name}={forged}")],
            );
            assert_eq!(page.status, 401, "{forged}: {}", page.body);
            assert!(page.body.contains("Start your session"));
        }

        // A form sent without a session is not carried out; it is kept, hidden, for the
        // button to send again once the session starts.
        let page = caseworker.request_raw("GET", "/console/", None, &[]);
        let token = field(&page, "csrf").expect("a token");
        let late = caseworker.request_raw(
            "POST",
            "/console/inbox/1/status",
            Some((FORM, &format!("csrf={token}&action=accept"))),
            &[],
        );
        assert_eq!(late.status, 401, "{}", late.body);
        assert_eq!(
            field(&late, "to").as_deref(),
            Some("/console/inbox/1/status")
        );
        assert!(
            late.body.contains("What you typed is kept"),
            "{}",
            late.body
        );

        // A start without the client's CSRF token is refused; a start goes back only into
        // the console.
        let forged = caseworker.request_raw(
            "POST",
            "/console/session",
            Some((FORM, &format!("csrf={}&to=/console/inbox", "00".repeat(32)))),
            &[],
        );
        assert_eq!(forged.status, 403, "{}", forged.body);
        assert!(forged.body.contains("csrf-token"));
        assert!(session_cookie(&forged).is_none());
        let page = caseworker.request_raw("GET", "/console/", None, &[]);
        let csrf = field(&page, "csrf").expect("a token");
        let away = caseworker.request_raw(
            "POST",
            "/console/session",
            Some((
                FORM,
                &format!("csrf={csrf}&to=https%3A%2F%2Fevil.example%2F"),
            )),
            &[],
        );
        assert_eq!(away.status, 303);
        assert_eq!(away.header("location"), Some("/console/"));
    });
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_after_the_idle_limit() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], |config| {
        config.console_idle_timeout_secs = 1;
    })
    .await;
    let caseworker = Https::role(&fed, "MW-DSW", "caseworker");
    let cookie = tokio::task::block_in_place(|| start_session(&caseworker, "/console/inbox"));
    let with_cookie = format!("Cookie: {cookie}");
    // The same cookie, never refreshed: the page changes once a second has passed unused.
    let mut pages = 0;
    eventually("the session ends", || {
        pages += 1;
        let page = tokio::task::block_in_place(|| {
            caseworker.request_raw("GET", "/console/inbox", None, &[&with_cookie])
        });
        async move {
            if page.status == 200 {
                assert!(page.body.contains("<h1>Inbox</h1>"), "{}", page.body);
                return false;
            }
            assert_eq!(page.status, 401, "{}", page.body);
            assert!(
                page.body
                    .contains("Your session ended after 1 minutes without use"),
                "{}",
                page.body
            );
            assert!(!page.body.contains("<h1>Inbox</h1>"));
            assert!(page.body.contains("Continue as caseworker-1"));
            true
        }
    })
    .await;
    assert!(pages >= 1);
    // Continuing starts a fresh session.
    let fresh = tokio::task::block_in_place(|| start_session(&caseworker, "/console/inbox"));
    let inbox = tokio::task::block_in_place(|| {
        caseworker.request_raw(
            "GET",
            "/console/inbox",
            None,
            &[&format!("Cookie: {fresh}")],
        )
    });
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    fed.shutdown().await;
}

/// Every hidden field of `page`'s forms, in order, as a form body (values unescaped, then
/// URL-encoded).
fn hidden_fields(page: &HttpsAnswer) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut out: Vec<String> = Vec::new();
    let mut rest = page.body.as_str();
    while let Some(at) = rest.find("<input type=\"hidden\" name=\"") {
        rest = &rest[at + "<input type=\"hidden\" name=\"".len()..];
        let name_end = rest.find('"').expect("name's end");
        let name = &rest[..name_end];
        let value_at = rest.find("value=\"").expect("value") + "value=\"".len();
        let value_end = value_at + rest[value_at..].find('"').expect("value's end");
        let value = rest[value_at..value_end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        out.push(format!("{}={}", encode(name), encode(&value)));
        rest = &rest[value_end..];
    }
    out.join("&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_sent_after_the_session_ended_is_kept_and_sent_again_as_typed() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], |config| {
        config.console_idle_timeout_secs = 1;
    })
    .await;
    let mut zm = fed.local("ZM-DSW", "caseworker");
    let id = zm
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect("submit")
        .into_inner()
        .message_id;
    wait_delivery(&mut zm, &id).await;
    let caseworker = Https::role(&fed, "MW-DSW", "caseworker");
    let cookie = tokio::task::block_in_place(|| start_session(&caseworker, "/console/inbox"));
    let with_cookie = format!("Cookie: {cookie}");
    let inbox = tokio::task::block_in_place(|| {
        caseworker.request_raw("GET", "/console/inbox", None, &[&with_cookie])
    });
    let at = inbox
        .body
        .find("href=\"/console/inbox/")
        .expect("the item's link")
        + "href=\"".len();
    let item = inbox.body[at..at + inbox.body[at..].find('"').expect("end")].to_owned();
    let page =
        tokio::task::block_in_place(|| caseworker.request_raw("GET", &item, None, &[&with_cookie]));
    let csrf = field(&page, "csrf").expect("the item's form token");

    // The caseworker presses Accept only after the session ended (the cookie is the one
    // from before: a page answered meanwhile would have refreshed it in a browser).
    eventually("the session ends", || {
        let answer = tokio::task::block_in_place(|| {
            caseworker.request_raw("GET", "/console/", None, &[&with_cookie])
        });
        async move { answer.status == 401 }
    })
    .await;
    let typed = format!("csrf={csrf}&action=accept");
    let status_path = format!("{item}/status");
    let ended = tokio::task::block_in_place(|| {
        caseworker.request_raw("POST", &status_path, Some((FORM, &typed)), &[&with_cookie])
    });
    assert_eq!(ended.status, 401, "{}", ended.body);
    assert!(
        ended.body.contains("What you typed is kept"),
        "{}",
        ended.body
    );
    assert!(
        ended.body.contains("name=\"action\" value=\"accept\""),
        "{}",
        ended.body
    );
    let status = fed
        .local("MW-DSW", "caseworker")
        .get_referral_status(pb::GetReferralStatusRequest {
            referral_id: id.clone(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        status.state,
        pb::ReferralState::Received as i32,
        "nothing done yet"
    );

    // Continuing starts a session and sends the form again where it went, as typed.
    let resend = hidden_fields(&ended);
    let started = tokio::task::block_in_place(|| {
        caseworker.request_raw("POST", "/console/session", Some((FORM, &resend)), &[])
    });
    assert_eq!(started.status, 307, "{}", started.body);
    assert_eq!(started.header("location"), Some(status_path.as_str()));
    let (fresh, _) = session_cookie(&started).expect("a session cookie");
    let again = tokio::task::block_in_place(|| {
        caseworker.request_raw(
            "POST",
            &status_path,
            Some((FORM, &resend)),
            &[&format!("Cookie: {fresh}")],
        )
    });
    assert_eq!(again.status, 303, "{}", again.body);
    assert_eq!(
        again.header("location"),
        Some(format!("{item}?done=accept").as_str())
    );
    let status = fed
        .local("MW-DSW", "caseworker")
        .get_referral_status(pb::GetReferralStatusRequest { referral_id: id })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state, pb::ReferralState::Accepted as i32);

    // A form whose token is not this client's is not kept: the button goes home.
    let foreign = tokio::task::block_in_place(|| {
        caseworker.request_raw(
            "POST",
            &status_path,
            Some((FORM, "csrf=00&action=close&code=reunified")),
            &[],
        )
    });
    assert_eq!(foreign.status, 401, "{}", foreign.body);
    assert!(!foreign.body.contains("What you typed is kept"));
    assert!(!foreign.body.contains("reunified"));
    assert_eq!(field(&foreign, "to").as_deref(), Some("/console/"));
    fed.shutdown().await;
}

/// The password `kinbridge dev-certs` gives its PKCS#12 files (docs/console.md).
const P12_PASSWORD: &str = "kinbridge-dev";

/// Reads `p12` back and checks it holds the certificate `cert`, then the CA `ca`, and the key
/// `key`; and that another password opens nothing.
fn assert_p12_holds(
    p12: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) {
    use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
    let bytes = std::fs::read(p12).expect("the .p12 file");
    let store = KeyStore::from_pkcs12(&bytes, P12_PASSWORD, Pkcs12ImportPolicy::Strict)
        .expect("the .p12 parses with its password");
    let (_, chain) = store.private_key_chain().expect("a key and its chain");
    let leaf = kinbridge_grpc::tls::load_certs(cert).expect("cert");
    let issuer = kinbridge_grpc::tls::load_certs(ca).expect("ca");
    let certs: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
    assert_eq!(
        certs,
        [leaf[0].as_ref(), issuer[0].as_ref()],
        "{}",
        p12.display()
    );
    let private = kinbridge_grpc::tls::load_private_key(key).expect("key");
    assert_eq!(
        chain.key().as_der(),
        private.secret_der(),
        "{}",
        p12.display()
    );
    assert!(
        KeyStore::from_pkcs12(&bytes, "wrong", Pkcs12ImportPolicy::Strict).is_err(),
        "another password opens nothing"
    );
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(p12).expect("meta").permissions()
        ) & 0o077,
        0,
        "the .p12 is its owner's alone"
    );
    // OpenSSL, the tool an administrator has, reads it too.
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok()
    {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["pkcs12", "-info", "-nokeys", "-passin"])
            .arg(format!("pass:{P12_PASSWORD}"))
            .arg("-in")
            .arg(p12);
        let out = run_bounded(cmd);
        assert!(out.status.success(), "openssl: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        let pem = std::fs::read_to_string(cert).expect("cert pem");
        assert!(
            shown.contains(pem.trim()),
            "openssl shows the certificate: {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_certs_writes_each_client_as_a_pkcs12_file_a_browser_presents() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    // Completing the federation's development PKI writes the clients' .p12 files.
    let mut cmd = kinbridge();
    cmd.args(["dev-certs", "--nodes", "ZM-DSW,MW-DSW", "--out"])
        .arg(&fed.pki);
    let out = run_bounded(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(P12_PASSWORD),
        "{}",
        text(&out.stdout)
    );
    let files = fed.files("MW-DSW");
    for role in ["caseworker", "system", "auditor", "admin"] {
        let p12 = files.client_cert(role).with_extension("p12");
        assert_p12_holds(
            &p12,
            &files.client_cert(role),
            &files.client_key(role),
            &files.local_ca_cert(),
        );
    }

    // One more client, issued on its own, gets its .p12 too.
    let issued = fed.dir.path().join("issued");
    let mut cmd = kinbridge();
    cmd.args([
        "dev-certs",
        "client",
        "--node",
        "MW-DSW",
        "--name",
        "mw-admin-2",
        "--role",
        "admin",
        "--pki",
    ])
    .arg(&fed.pki)
    .arg("--out")
    .arg(&issued);
    let out = run_bounded(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let p12 = issued.join("mw-admin-2.p12");
    assert!(
        text(&out.stdout).contains("mw-admin-2.p12"),
        "{}",
        text(&out.stdout)
    );
    assert_p12_holds(
        &p12,
        &issued.join("mw-admin-2.crt"),
        &issued.join("mw-admin-2.key"),
        &files.local_ca_cert(),
    );

    // A TLS client given only the .p12 (as a browser is) reaches the console as that client.
    let addr = fed.node("MW-DSW").http_addr.expect("https");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "--cert-type", "P12", "--cert"])
        .arg(format!("{}:{P12_PASSWORD}", p12.display()))
        .arg("--cacert")
        .arg(files.ca_cert())
        .arg(format!("https://{addr}/console/admin"));
    let out = tokio::task::block_in_place(|| run_bounded(cmd));
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(page.contains("Continue as mw-admin-2"), "{page}");
    fed.shutdown().await;
}
