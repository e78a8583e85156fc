//! The auditor's console pages, driven by curl with client certificates as a browser with
//! JavaScript off would use them: after referrals cross from Zambia to Malawi, Malawi's
//! auditor lists the log (filtered by event and by refusals), sees the signed checkpoint,
//! downloads the export and has it verified by upload (valid; with one byte changed inside an
//! entry, the page names that entry), reconciles both nodes' exports (agreement; a mismatch
//! when one side's file is cut short), checks the peers, and reads the statistics (tables, a
//! chart, CSV with small cells withheld). A caseworker gets the role's refusal, an
//! enforcement-tagged client the firewall's and no data, an upload without its CSRF token is
//! refused.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use kinbridge_proto::v1 as pb;

/// Submits a referral from Zambia to Malawi and waits for its delivery; its message id.
async fn referral(fed: &Federation) -> String {
    let mut zm = fed.local("ZM-DSW", "caseworker");
    let id = zm
        .submit_referral(submit_request("MW-DSW"))
        .await
        .expect("submit")
        .into_inner()
        .message_id;
    let delivery = wait_delivery(&mut zm, &id).await;
    assert_eq!(delivery.state, pb::DeliveryState::Delivered as i32);
    id
}

/// A `GET` by `who`.
fn get(who: &Https, path: &str) -> HttpsAnswer {
    tokio::task::block_in_place(|| who.request("GET", path, None, &[]))
}

/// A form `POST` (`application/x-www-form-urlencoded`) by `who`.
fn post(who: &Https, path: &str, form: &str) -> HttpsAnswer {
    tokio::task::block_in_place(|| {
        who.request(
            "POST",
            path,
            Some(("application/x-www-form-urlencoded", form)),
            &[],
        )
    })
}

/// A `multipart/form-data` `POST` by `who`, as a browser sends a form with files: text
/// `fields` and files `(field, path)`.
fn upload(
    who: &Https,
    path: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &PathBuf)],
) -> HttpsAnswer {
    // In a console session, as a browser uploads: opening the console starts one.
    let home = tokio::task::block_in_place(|| who.request("GET", "/console/", None, &[]));
    assert_eq!(home.status, 200, "{}", home.body);
    let dir = tempfile::tempdir().expect("tempdir");
    let (head, out) = (dir.path().join("head"), dir.path().join("body"));
    let mut cmd = Command::new("curl");
    if let Some(cookie) = who.session.lock().expect("session lock").clone() {
        cmd.arg("-H").arg(format!("Cookie: {cookie}"));
    }
    cmd.args(["-sS", "--max-time", "30"])
        .arg("--cacert")
        .arg(&who.ca)
        .arg("--cert")
        .arg(&who.cert)
        .arg("--key")
        .arg(&who.key)
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&out);
    for (name, value) in fields {
        cmd.arg("--form-string").arg(format!("{name}={value}"));
    }
    for (name, file) in files {
        cmd.arg("-F").arg(format!("{name}=@{}", file.display()));
    }
    cmd.arg(format!("{}{path}", who.base));
    let result = tokio::task::block_in_place(|| run_bounded(cmd));
    assert!(result.status.success(), "curl: {}", text(&result.stderr));
    let head = std::fs::read_to_string(&head).expect("headers");
    // The last status line: curl may have been told `100 Continue` first.
    let status = head
        .lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    HttpsAnswer {
        status,
        headers: Vec::new(),
        body: std::fs::read_to_string(&out).unwrap_or_default(),
    }
}

/// The value of the page's first hidden field `name`.
fn field(page: &HttpsAnswer, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.body.find(&marker).expect("the field") + marker.len();
    let end = page.body[at..].find('"').expect("its end");
    page.body[at..at + end].to_owned()
}

/// The events of the listed entries.
fn events(page: &HttpsAnswer) -> Vec<String> {
    let marker = "<td class=\"event\">";
    page.body
        .match_indices(marker)
        .map(|(at, _)| {
            let rest = &page.body[at + marker.len()..];
            rest[..rest.find('<').unwrap_or(0)].to_owned()
        })
        .collect()
}

/// The indices of the listed entries, in order.
fn indices(page: &HttpsAnswer) -> Vec<u64> {
    let marker = "<tr><th scope=\"row\">";
    page.body
        .match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = &page.body[at + marker.len()..];
            rest[..rest.find('<').unwrap_or(0)].parse().ok()
        })
        .collect()
}

/// `export` with one character of entry `index`'s encoded bytes changed.
fn with_one_byte_changed(export: &str, index: u64) -> String {
    let marker = format!("{{\"type\":\"entry\",\"index\":{index},");
    let mut lines: Vec<String> = export.lines().map(str::to_owned).collect();
    let line = lines
        .iter_mut()
        .find(|l| l.starts_with(&marker))
        .expect("the entry's line");
    let at = line.find("\"entry\":\"").expect("its bytes") + "\"entry\":\"".len() + 8;
    let old = line.as_bytes()[at];
    let new = if old == b'A' { "B" } else { "A" };
    line.replace_range(at..at + 1, new);
    lines.join("\n") + "\n"
}

/// `export` cut short at its checkpoint of `size` entries: the entries before it and the
/// checkpoints up to it, as an export made then would hold.
fn cut_at_checkpoint(export: &str, size: u64) -> String {
    let mut out = String::new();
    for line in export.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let keep = match value["type"].as_str() {
            Some("entry") => value["index"].as_u64().expect("index") < size,
            Some("checkpoint") => checkpoint_size(value["note"].as_str().expect("note")) <= size,
            _ => true,
        };
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The size a checkpoint note signs.
fn checkpoint_size(note: &str) -> u64 {
    note.lines()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a checkpoint's size")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_checks_the_log_exports_and_statistics_in_the_console() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let first = referral(&fed).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = fed.issue_client("MW-DSW", "mw-oversight-1", "auditor", None, &[]);
    let auditor = Https::new(&fed, "MW-DSW", cert, key);
    let zm_auditor = Https::role(&fed, "ZM-DSW", "auditor");

    // A refusal caused here: a caseworker may not read the log.
    let caseworker = Https::role(&fed, "MW-DSW", "caseworker");
    for path in [
        "/console/audit",
        "/console/audit/export",
        "/console/audit/verify",
        "/console/audit/reconcile",
        "/console/statistics",
        "/console/statistics.csv",
    ] {
        let page = get(&caseworker, path);
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(page.body.contains("role-denied"), "{path}: {}", page.body);
        assert!(!page.body.contains(&first), "{path}");
    }
    // An upload by a caseworker is refused for its role (before its body is read), not for
    // its missing token.
    let scratch = tempfile::tempdir().expect("tempdir");
    let some_file = scratch.path().join("export.jsonl");
    std::fs::write(&some_file, "{}\n").expect("write");
    for path in ["/console/audit/verify", "/console/audit/reconcile"] {
        let refused = upload(&caseworker, path, &[], &[("export", &some_file)]);
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
        assert!(
            refused.body.contains("role-denied"),
            "{path}: {}",
            refused.body
        );
    }

    // The log, newest first: the referral's reception is there, with its message id.
    let log = get(&auditor, "/console/audit");
    assert_eq!(log.status, 200, "{}", log.body);
    assert!(log.body.contains(&first), "{}", log.body);
    let all = events(&log);
    assert!(all.iter().any(|e| e == "received"), "{all:?}");
    assert!(all.iter().any(|e| e == "refused"), "{all:?}");
    // The checkpoint: its size, root hash and signed note.
    assert!(
        log.body
            .contains("<pre class=\"note\">kinbridge.audit/MW-DSW\n"),
        "{}",
        log.body
    );
    // Paged: the entries before an index, newest first.
    let newest = indices(&log);
    assert!(newest.windows(2).all(|w| w[0] > w[1]), "{newest:?}");
    let before = newest[newest.len() / 2];
    let older = indices(&get(&auditor, &format!("/console/audit?before={before}")));
    assert_eq!(older.first(), Some(&(before - 1)), "{older:?}");
    assert!(older.windows(2).all(|w| w[0] > w[1]), "{older:?}");
    // Filtered by event: that event only.
    let received = get(&auditor, "/console/audit?kind=received");
    assert_eq!(received.status, 200, "{}", received.body);
    let shown = events(&received);
    assert!(
        !shown.is_empty() && shown.iter().all(|e| e == "received"),
        "{shown:?}"
    );
    assert!(received.body.contains(&first));
    assert!(
        received.body.contains("<td>ZM-DSW</td>"),
        "the sender is the peer"
    );
    // Refusals only: the caseworker's refusals, by reason and client.
    let refusals = get(&auditor, "/console/audit?refusals=1&peer=&from=&to=");
    let shown = events(&refusals);
    assert!(
        !shown.is_empty() && shown.iter().all(|e| e == "refused"),
        "{shown:?}"
    );
    assert!(refusals.body.contains("role-denied"), "{}", refusals.body);
    // A filter that is not one is refused, without echoing what was typed.
    let bad = get(&auditor, "/console/audit?kind=Chipo&peer=Mwansa");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("bad-filter"), "{}", bad.body);
    assert!(!bad.body.contains("Chipo") && !bad.body.contains("Mwansa"));

    // The export, downloaded from the console, is what `kinbridge audit verify` reads.
    let export = get(&auditor, "/console/audit/export");
    assert_eq!(export.status, 200, "{}", export.body);
    assert!(
        export
            .header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment; filename=\"MW-DSW-audit-")),
        "{:?}",
        export.headers
    );
    let mw_file = dir.path().join("mw.jsonl");
    std::fs::write(&mw_file, &export.body).expect("write");
    let files = fed.files("MW-DSW");
    let pub_file = files.signing_pub();
    let pem = std::fs::read_to_string(&pub_file).expect("pub");
    let mw_key =
        kinbridge_core::PeerKey::from_public_key_pem(files.signing_key_id(), &pem).expect("key");
    let offline = verify_export_file("MW-DSW", &mw_file, &[*mw_key.verifying_key()]);

    // Uploaded to the console, it verifies against this node's own keys.
    let form = get(&auditor, "/console/audit/verify");
    assert_eq!(form.status, 200, "{}", form.body);
    let token = field(&form, "csrf");
    let valid = upload(
        &auditor,
        "/console/audit/verify",
        &[("csrf", &token)],
        &[("export", &mw_file)],
    );
    assert_eq!(valid.status, 200, "{}", valid.body);
    assert!(valid.body.contains("The export is valid"), "{}", valid.body);
    assert!(
        valid.body.contains(&format!("<dd>{}</dd>", offline.size)),
        "{}",
        valid.body
    );
    assert!(
        valid.body.contains("this node&#39;s own signing keys"),
        "{}",
        valid.body
    );
    // With the public key uploaded, as `kinbridge audit verify --key` takes it.
    let with_key = upload(
        &auditor,
        "/console/audit/verify",
        &[("csrf", &token)],
        &[("export", &mw_file), ("key", &pub_file)],
    );
    assert!(
        with_key.body.contains("The export is valid"),
        "{}",
        with_key.body
    );
    assert!(
        with_key.body.contains("the public keys you uploaded"),
        "{}",
        with_key.body
    );

    // One byte changed inside an entry: the page names that entry.
    let altered_index = offline.size / 2;
    let altered = dir.path().join("altered.jsonl");
    std::fs::write(&altered, with_one_byte_changed(&export.body, altered_index)).expect("write");
    let failed = upload(
        &auditor,
        "/console/audit/verify",
        &[("csrf", &token)],
        &[("export", &altered)],
    );
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert!(failed.body.contains("does NOT verify"), "{}", failed.body);
    assert!(
        failed.body.contains(&format!(
            "<strong class=\"bad-entry\">{altered_index}</strong>"
        )),
        "{}",
        failed.body
    );

    // Uploads without the CSRF token, or with another's, are refused and logged.
    for fields in [vec![], vec![("csrf", "00")]] {
        let refused = upload(
            &auditor,
            "/console/audit/verify",
            &fields,
            &[("export", &mw_file)],
        );
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(refused.body.contains("csrf-token"), "{}", refused.body);
        assert!(!refused.body.contains("The export is valid"));
    }
    let refused = upload(
        &auditor,
        "/console/audit/reconcile",
        &[],
        &[("first", &mw_file), ("second", &mw_file)],
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    let refused = post(&auditor, "/console/audit/check-peers", "");
    assert_eq!(refused.status, 403, "{}", refused.body);
    let logged = get(&auditor, "/console/audit?kind=refused");
    assert!(logged.body.contains("csrf-token"), "{}", logged.body);

    // A second referral, then both nodes' exports: they reconcile.
    let second = referral(&fed).await;
    let mw_export = get(&auditor, "/console/audit/export").body;
    let zm_export = get(&zm_auditor, "/console/audit/export").body;
    let (mw_all, zm_all) = (dir.path().join("mw-all.jsonl"), dir.path().join("zm.jsonl"));
    std::fs::write(&mw_all, &mw_export).expect("write");
    std::fs::write(&zm_all, &zm_export).expect("write");
    let reconcile_form = get(&auditor, "/console/audit/reconcile");
    assert_eq!(reconcile_form.status, 200, "{}", reconcile_form.body);
    let token = field(&reconcile_form, "csrf");
    let agree = upload(
        &auditor,
        "/console/audit/reconcile",
        &[("csrf", &token)],
        &[("first", &mw_all), ("second", &zm_all)],
    );
    assert_eq!(agree.status, 200, "{}", agree.body);
    assert!(agree.body.contains("The logs agree: "), "{}", agree.body);
    assert!(
        agree
            .body
            .contains("the keys this node holds for that registered peer"),
        "{}",
        agree.body
    );
    // Zambia's export against Malawi's key, uploaded by mistake: it does not verify, and the
    // page says which key it tried. A file that is no key is refused.
    let wrong_key = upload(
        &auditor,
        "/console/audit/verify",
        &[("csrf", &token)],
        &[("export", &zm_all), ("key", &pub_file)],
    );
    assert!(
        wrong_key.body.contains("does NOT verify"),
        "{}",
        wrong_key.body
    );
    assert!(
        wrong_key
            .body
            .contains("uploaded-1: kinbridge.audit/ZM-DSW+"),
        "{}",
        wrong_key.body
    );
    let not_a_key = upload(
        &auditor,
        "/console/audit/verify",
        &[("csrf", &token)],
        &[("export", &zm_all), ("key", &zm_all)],
    );
    assert_eq!(not_a_key.status, 400, "{}", not_a_key.body);
    assert!(not_a_key.body.contains("bad-key"), "{}", not_a_key.body);
    // Malawi's file cut short at the checkpoint of the first export: the second referral's
    // receipt is missing from it.
    let cut = dir.path().join("mw-cut.jsonl");
    std::fs::write(&cut, cut_at_checkpoint(&mw_export, offline.size)).expect("write");
    let disagree = upload(
        &auditor,
        "/console/audit/reconcile",
        &[("csrf", &token)],
        &[("first", &cut), ("second", &zm_all)],
    );
    assert_eq!(disagree.status, 200, "{}", disagree.body);
    assert!(disagree.body.contains("do NOT agree"), "{}", disagree.body);
    assert!(
        disagree.body.contains("receipt missing"),
        "{}",
        disagree.body
    );
    assert!(disagree.body.contains(&second), "{}", disagree.body);
    assert!(!disagree.body.contains(&format!("<code>{first}</code>")));
    // Cut anywhere else, it does not verify, and nothing is reconciled.
    let torn = dir.path().join("mw-torn.jsonl");
    let lines: Vec<&str> = mw_export.lines().collect();
    std::fs::write(&torn, lines[..lines.len() / 2].join("\n") + "\n").expect("write");
    let unverified = upload(
        &auditor,
        "/console/audit/reconcile",
        &[("csrf", &token)],
        &[("first", &torn), ("second", &zm_all)],
    );
    assert!(
        unverified.body.contains("Not reconciled"),
        "{}",
        unverified.body
    );
    assert!(
        unverified.body.contains("does NOT verify"),
        "{}",
        unverified.body
    );

    // Check-peers: Zambia's log is consistent.
    let log = get(&auditor, "/console/audit");
    let token = field(&log, "csrf");
    for _ in 0..2 {
        let checked = post(
            &auditor,
            "/console/audit/check-peers",
            &format!("csrf={token}"),
        );
        assert_eq!(checked.status, 200, "{}", checked.body);
        assert!(
            checked
                .body
                .contains("<th scope=\"row\">ZM-DSW</th><td><span class=\"consistent\">yes</span>"),
            "{}",
            checked.body
        );
    }

    // Statistics: tables and charts; the CSV withholds the small counts.
    let stats = get(&auditor, "/console/statistics");
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert!(
        stats.body.contains("<table class=\"statistics\">"),
        "{}",
        stats.body
    );
    assert!(
        stats.body.contains("<svg class=\"chart\" role=\"img\""),
        "{}",
        stats.body
    );
    assert!(
        stats.body.contains("<title id=\"chart-0\">"),
        "{}",
        stats.body
    );
    assert!(
        !stats.body.contains(" style="),
        "no style attribute: the CSP forbids them"
    );
    let csv = get(&auditor, "/console/statistics.csv?by=route");
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(
        csv.header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment;")),
        "{:?}",
        csv.headers
    );
    let rows: Vec<&str> = csv.body.lines().collect();
    assert_eq!(rows.first(), Some(&"route,count,withheld"), "{}", csv.body);
    assert!(
        rows.contains(&"ZM-DSW → MW-DSW,,true"),
        "two referrals are under the threshold of 5: {}",
        csv.body
    );
    let bad = get(&auditor, "/console/statistics?from=1st%20May");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("bad-period") && !bad.body.contains("1st May"));

    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforcement_tagged_client_sees_no_audit_page_nor_statistics() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let id = referral(&fed).await;
    let (cert, key) = fed.issue_client(
        "MW-DSW",
        "mw-border-police",
        "auditor",
        None,
        &["immigration-enforcement"],
    );
    let police = Https::new(&fed, "MW-DSW", cert, key);
    for path in [
        "/console/audit",
        "/console/audit?refusals=1",
        "/console/audit/export",
        "/console/audit/verify",
        "/console/audit/reconcile",
        "/console/statistics",
        "/console/statistics.csv?by=route",
    ] {
        let page = get(&police, path);
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(page.body.contains("firewall"), "{path}: {}", page.body);
        for data in [
            id.as_str(),
            "kinbridge.audit/",
            "<svg",
            "<table",
            "route,count",
        ] {
            assert!(!page.body.contains(data), "{path} shows {data}");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("any.jsonl");
    std::fs::write(&file, "{}\n").expect("write");
    for path in ["/console/audit/verify", "/console/audit/reconcile"] {
        let posted = upload(
            &police,
            path,
            &[("csrf", "00")],
            &[("export", &file), ("first", &file), ("second", &file)],
        );
        assert_eq!(posted.status, 403, "{path}: {}", posted.body);
        assert!(posted.body.contains("firewall"), "{path}: {}", posted.body);
    }
    let posted = post(&police, "/console/audit/check-peers", "csrf=00");
    assert_eq!(posted.status, 403, "{}", posted.body);
    assert!(!posted.body.contains("ZM-DSW"), "{}", posted.body);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_is_refused_with_what_to_do() {
    if skip_without_curl() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let auditor = Https::role(&fed, "MW-DSW", "auditor");
    let form = get(&auditor, "/console/audit/verify");
    let token = field(&form, "csrf");
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.jsonl");
    let file = std::fs::File::create(&big).expect("create");
    file.set_len(65 * 1024 * 1024).expect("size");
    let refused = upload(
        &auditor,
        "/console/audit/verify",
        &[("csrf", &token)],
        &[("export", &big)],
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("too-large"), "{}", refused.body);
    assert!(refused.body.contains("64 MiB"), "{}", refused.body);
    // The node serves on.
    assert_eq!(get(&auditor, "/console/audit").status, 200);
    fed.shutdown().await;
}
