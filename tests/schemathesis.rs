//! Schemathesis (from PyPI), a test generator that is not ours, runs against a real node's
//! served OpenAPI document: every operation, requests made from the schemas and broken on
//! purpose, over HTTPS with a caseworker's client certificate. No answer may be a 5xx, and
//! every answer must match the document (status, content type, body schema).
//!
//! It needs Python with the packages of tests/interop/requirements.txt (see tests/interop.rs);
//! without them the test says so and passes, unless `KINBRIDGE_REQUIRE_INTEROP=1` (as in CI).
//! `KINBRIDGE_SCHEMATHESIS_EXAMPLES` sets the examples per operation (default 25: the bounded
//! slice CI runs; a longer campaign raises it) and `KINBRIDGE_SCHEMATHESIS_SEED` the seed
//! (default 1, so that a run is repeatable; a campaign varies it).

mod common;

use std::process::Stdio;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_and_no_answer_off_the_document() {
    let python = interop_python();
    let schemathesis = python.with_file_name("schemathesis");
    let has_it = std::process::Command::new(&schemathesis)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_it {
        let message = format!(
            "{} not found: pip install -r tests/interop/requirements.txt (or set KINBRIDGE_PYTHON)",
            schemathesis.display()
        );
        assert!(!interop_required(), "{message}");
        eprintln!("SKIPPED the Schemathesis test: {message}");
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let files = fed.files("ZM-DSW");
    let addr = fed.node("ZM-DSW").http_addr.expect("JSON face");
    let examples = std::env::var("KINBRIDGE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let seed = std::env::var("KINBRIDGE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let mut child = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(format!("https://{addr}/v1/openapi.json"))
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--workers", "1", "--no-color"])
        .arg("--tls-verify")
        .arg(files.ca_cert())
        .arg("--request-cert")
        .arg(files.client_cert("caseworker"))
        .arg("--request-cert-key")
        .arg(files.client_key("caseworker"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start schemathesis");
    let output = tokio::time::timeout(std::time::Duration::from_secs(600), async {
        let mut out = String::new();
        let mut err = String::new();
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (a, b) = tokio::join!(
            tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out),
            tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err)
        );
        let _ = (a, b);
        let status = child.wait().await.expect("wait");
        (status, out, err)
    })
    .await
    .expect("Schemathesis finished within its bound");
    let (status, out, err) = output;
    println!("{out}");
    assert!(
        status.success(),
        "Schemathesis found failures:\n{out}\n{err}"
    );
    fed.shutdown().await;
}
