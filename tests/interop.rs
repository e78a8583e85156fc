//! A gRPC client that is not ours — Python grpcio (tests/interop/grpc_client.py) — lists a
//! running node's services by server reflection and calls grpc.health.v1 over mutual TLS.
//!
//! It needs Python with the packages of tests/interop/requirements.txt: in `.venv-interop/`
//! at the repository root, or the interpreter `KINBRIDGE_PYTHON` names, or `python3`. Where
//! none has them the test says so and passes, unless `KINBRIDGE_REQUIRE_INTEROP=1` (as in CI),
//! where it fails.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_lists_services_by_reflection_and_calls_health() {
    let python = interop_python();
    let has_packages = std::process::Command::new(&python)
        .args(["-c", "import grpc, grpc_reflection, grpc_health"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_packages {
        let required = interop_required();
        let message = format!(
            "{} lacks grpcio: pip install -r tests/interop/requirements.txt (or set KINBRIDGE_PYTHON)",
            python.display()
        );
        assert!(!required, "{message}");
        eprintln!("SKIPPED the interop test: {message}");
        return;
    }
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let files = fed.files("ZM-DSW");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grpc_client.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg("--addr")
        .arg(fed.node("ZM-DSW").local_addr.to_string())
        .arg("--ca")
        .arg(files.ca_cert())
        .arg("--cert")
        .arg(files.client_cert("auditor"))
        .arg("--key")
        .arg(files.client_key("auditor"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start python");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut text).await;
        text
    };
    let (out, err) = (
        tokio::spawn(read(Box::new(stdout))),
        tokio::spawn(read(Box::new(stderr))),
    );
    let status = tokio::time::timeout(2 * WAIT, child.wait())
        .await
        .expect("the Python client finished in time")
        .expect("wait");
    let (out, err) = (out.await.expect("stdout"), err.await.expect("stderr"));
    println!("{out}");
    assert!(status.success(), "python client failed:\n{out}\n{err}");
    assert!(out.contains("OK: reflection and health"), "{out}");
    assert!(
        out.contains("kinbridge.v1.LocalService methods: SubmitReferral"),
        "{out}"
    );
    fed.shutdown().await;
}
