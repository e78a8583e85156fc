//! The web console in a real browser: Debian's chromium, headless, driven by Playwright
//! (`tests/browser/`), against real nodes over mutual TLS, each user presenting a client
//! certificate of their authority's local CA. Every flow runs with JavaScript off; every page
//! the flows see is checked by axe-core (no serious or critical violation), weighed (first
//! load under 150 KB), and searched for the child's data where the user may not see it.
//!
//! The story is `tests/browser/console.mjs`; this test starts the federation, issues the
//! certificates, runs the story with a bound, and checks its report. It needs chromium
//! (`/usr/bin/chromium`, Debian's package), Node.js and the story's npm packages
//! (`npm ci --prefix tests/browser`); without them it says so and passes, unless
//! `KINBRIDGE_REQUIRE_BROWSER=1` (CI) makes it fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use kinbridge_node::devpki::DEV_CASEWORKER_UNIT;

/// The password of the development PKCS#12 files `kinbridge dev-certs` writes.
const DEV_P12_PASSWORD: &str = "kinbridge-dev";
use serde_json::{Value, json};

/// The browser the tests drive: Debian's chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The heaviest a page's first load may be (the page and its stylesheet).
const MAX_PAGE_BYTES: u64 = 150 * 1024;
/// The bound on the whole story.
const STORY_BOUND: Duration = Duration::from_secs(420);

/// What the story's referral names: shown to the caseworkers who may see it, never to
/// anyone else.
const GIVEN: &str = "Chisomo";
const FAMILY: &str = "Phiri-Tembo";
const CASE: &str = "ZM-BRD-2291";
const CONSENT: &str = "ZM-CONSENT-5510";
/// The border committee's unit at Chipata, and the receiving unit across the border.
const ZM_UNIT: &str = "chipata-district";
const MW_UNIT: &str = "mchinji-district";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether chromium, Node.js and the story's packages are here; if not, says so, and fails
/// under `KINBRIDGE_REQUIRE_BROWSER=1`.
fn skip_without_browser() -> bool {
    let required = std::env::var("KINBRIDGE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = [
        (!Path::new(CHROMIUM).exists()).then_some("chromium (apt-get install chromium)"),
        (!node).then_some("Node.js"),
        (!browser_dir().join("node_modules/playwright-core").exists())
            .then_some("the npm packages (npm ci --prefix tests/browser)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return false;
    }
    assert!(!required, "the browser tests need {}", missing.join(", "));
    eprintln!("SKIPPED: the browser tests need {}", missing.join(", "));
    true
}

/// Runs `story` (a file of tests/browser) with `config`; answers its report.
async fn run_story(story: &str, config: &Value, dir: &Path) -> Value {
    let config_file = dir.join("config.json");
    std::fs::write(&config_file, config.to_string()).expect("write the story's config");
    let child = tokio::process::Command::new("node")
        .arg(browser_dir().join(story))
        .arg(&config_file)
        .current_dir(browser_dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(STORY_BOUND, child)
        .await
        .unwrap_or_else(|_| panic!("the story {story} ended within {STORY_BOUND:?}"))
        .expect("node runs");
    let report: Value = std::fs::read_to_string(dir.join("report.json"))
        .ok()
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or(Value::Null);
    assert!(
        output.status.success(),
        "the story {story} failed: {}\n{}\nsteps: {:#}",
        text(&output.stderr),
        text(&output.stdout),
        report["steps"]
    );
    report
}

/// Checks every page of `report`: axe-core found no serious or critical violation, the first
/// load is under [`MAX_PAGE_BYTES`], no script, no Content-Security-Policy violation, never
/// cached; answers how many pages it checked.
fn check_pages(report: &Value) -> usize {
    let pages = report["pages"].as_array().expect("the report lists pages");
    for page in pages {
        let what = format!(
            "{} ({}) at {} [{}]",
            page["client"], page["lang"], page["path"], page["status"]
        );
        let violations = page["violations"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: axe-core did not run"));
        let grave: Vec<&Value> = violations
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(
            grave.is_empty(),
            "{what}: accessibility violations {grave:#?}"
        );
        assert!(
            page["rules_passed"].as_u64().unwrap_or(0) >= 10,
            "{what}: axe-core checked too little: {}",
            page["rules_passed"]
        );
        let bytes = page["bytes"].as_u64().expect("bytes");
        assert!(bytes > 0, "{what}: nothing loaded");
        assert!(
            bytes < MAX_PAGE_BYTES,
            "{what}: the first load is {bytes} bytes"
        );
        assert_eq!(page["javascript"], json!(false), "{what}: a script");
        assert_eq!(
            page["csp_violations"],
            json!([]),
            "{what}: the page asked for something its policy refuses"
        );
        assert_eq!(page["cache_control"], json!("no-store"), "{what}");
    }
    pages.len()
}

/// Prints the figures the story measured: pages, and the heaviest first load.
fn print_figures(report: &Value) {
    let pages = report["pages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let heaviest = pages
        .iter()
        .max_by_key(|p| p["bytes"].as_u64().unwrap_or(0));
    if let Some(p) = heaviest {
        println!(
            "browser: {} pages seen with JavaScript off and checked by axe-core; heaviest first load {} bytes ({} {}); measured by `cargo test --test browser -- --nocapture`",
            pages.len(),
            p["bytes"],
            p["lang"],
            p["path"]
        );
    }
    let mut lesser: Vec<String> = pages
        .iter()
        .flat_map(|p| p["violations"].as_array().cloned().unwrap_or_default())
        .map(|v| format!("{} ({})", v["id"], v["impact"]))
        .collect();
    lesser.sort();
    lesser.dedup();
    println!("browser: axe-core's lesser findings: {lesser:?}");
}

/// A user's certificate, issued as a browser takes it: `kinbridge dev-certs client` writes a
/// PKCS#12 file (key, certificate, the local CA) under the development password; answers the
/// user's entry in the story's config.
fn client(
    fed: &Federation,
    dir: &Path,
    node: &str,
    name: &str,
    role: &str,
    unit: Option<&str>,
    tags: &[&str],
) -> Value {
    let mut cmd = kinbridge();
    cmd.args([
        "dev-certs",
        "client",
        "--node",
        node,
        "--name",
        name,
        "--role",
        role,
    ])
    .arg("--pki")
    .arg(&fed.pki)
    .arg("--out")
    .arg(dir);
    if let Some(unit) = unit {
        cmd.args(["--unit", unit]);
    }
    for tag in tags {
        cmd.args(["--tag", tag]);
    }
    let out = run_bounded(cmd);
    assert!(
        out.status.success(),
        "dev-certs client: {}",
        text(&out.stderr)
    );
    let pfx = dir.join(format!("{name}.p12"));
    assert!(pfx.exists(), "dev-certs wrote {}", pfx.display());
    json!({ "node": node, "pfx": pfx, "passphrase": DEV_P12_PASSWORD })
}

/// A tracing registration's fields as a caseworker types them: a child in care (`record`)
/// or a family's request, as each side spells the child (the story adds the consent's last
/// day, two months ahead).
fn tracing_fields(kind: &str, case: &str, given: &str, family: &str, recipient: &str) -> Value {
    json!([
        ["kind", kind],
        ["case_reference", case],
        ["given_names", given],
        ["family_names", family],
        ["sex", "female"],
        ["birth_date", "2014-03-02"],
        ["place_of_separation", "Mwami border post"],
        ["date_of_separation", "2026-04-11"],
        ["relative1_relationship", "mother"],
        ["relative1_names", "Halima Hassan"],
        ["consent_id", format!("{case}-CONSENT")],
        ["given_by", "parent"],
        ["covers_tracing", "yes"],
        ["recipients", recipient],
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_crosses_the_border_in_the_console_in_a_real_browser() {
    if skip_without_browser() {
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let url = |node: &str| format!("https://{}", fed.node(node).http_addr.expect("https"));

    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certificates");
    std::fs::create_dir_all(&certs).expect("certificates dir");
    let screenshots = std::env::var("KINBRIDGE_WRITE_SCREENSHOTS")
        .is_ok_and(|v| v == "1")
        .then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console"));
    let config = json!({
        "chromium": CHROMIUM,
        "report": dir.path().join("report.json"),
        "workdir": dir.path(),
        "screenshots": screenshots,
        "nodes": { "ZM-DSW": url("ZM-DSW"), "MW-DSW": url("MW-DSW") },
        "clients": {
            "zm-committee": client(&fed, &certs, "ZM-DSW", "zm-chipata-committee", "caseworker", Some(ZM_UNIT), &[]),
            "mw-caseworker": client(&fed, &certs, "MW-DSW", "mw-mchinji-caseworker", "caseworker", Some(MW_UNIT), &[]),
            "zm-caseworker": client(&fed, &certs, "ZM-DSW", "zm-caseworker", "caseworker", Some(DEV_CASEWORKER_UNIT), &[]),
            "mw-auditor": client(&fed, &certs, "MW-DSW", "mw-auditor", "auditor", None, &[]),
            "mw-admin": client(&fed, &certs, "MW-DSW", "mw-admin", "admin", None, &[]),
            "zm-immigration": client(&fed, &certs, "ZM-DSW", "zm-immigration", "caseworker", Some(DEV_CASEWORKER_UNIT), &["immigration-enforcement"]),
        },
        "referral": { "given": GIVEN, "family": FAMILY, "case": CASE, "consent": CONSENT, "unit": MW_UNIT },
        "tracing": {
            "record": tracing_fields("record", "ZM-LSK-2026-0193", "Amina", "Yusuf, Hassan", "MW-DSW"),
            "request": tracing_fields("request", "MW-MCH-2026-0077", "Aminah", "Yussuf, Hassan", "ZM-DSW"),
            "record_name": "Amina",
            "request_name": "Aminah",
        },
        "secrets": [GIVEN, FAMILY, CASE, CONSENT, "Amina", "Yusuf"],
    });
    let report = run_story("console.mjs", &config, dir.path()).await;
    print_figures(&report);
    let pages = check_pages(&report);
    assert!(pages >= 8, "the story saw {pages} pages");
    let enforcement: Vec<&Value> = report["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .filter(|p| p["client"] == "zm-immigration")
        .collect();
    assert!(enforcement.len() >= 8, "the enforcement client's pages");
    for page in enforcement {
        assert_eq!(
            page["case_data_shown"],
            json!([]),
            "the enforcement-tagged client saw case data at {}",
            page["path"]
        );
    }

    // The referral the committee sent in the browser is closed at both ends, as the service
    // layer (not a page) says.
    let id = report["facts"]["referral_id"]
        .as_str()
        .expect("the story's referral id")
        .to_owned();
    let mut zm = fed.local("ZM-DSW", "system");
    let status = zm
        .get_referral_status(kinbridge_proto::v1::GetReferralStatusRequest { referral_id: id })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        status.state,
        kinbridge_proto::v1::ReferralState::Closed as i32
    );
}
