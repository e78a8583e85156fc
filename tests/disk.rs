//! What a node leaves on its machine: its data directory is its user's alone (0700
//! directories, 0600 files) whatever umask it was started with, a data directory open to
//! others is refused with the fix, and no log level prints a child's data or a consent or
//! case reference, in any encoding.

mod common;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::admin_service_client::AdminServiceClient;

/// Every directory and file under `root` (itself included) with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        out.push((
            path.clone(),
            meta.is_dir(),
            meta.permissions().mode() & 0o777,
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                stack.push(entry.expect("entry").path());
            }
        }
    }
    out
}

/// Asserts every directory under `root` is 0700 and every file 0600, and that the tree holds
/// what a node that sent or received a referral and rotated a key holds.
fn assert_private(root: &Path, expect: &[&str]) {
    let all = modes(root);
    for (path, is_dir, mode) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:03o}", path.display());
    }
    for part in expect {
        assert!(
            all.iter().any(|(p, _, _)| p
                .strip_prefix(root)
                .is_ok_and(|r| r.to_string_lossy().starts_with(part))),
            "{} holds no {part}",
            root.display()
        );
    }
}

/// SIGTERM to `node`, waited for off the runtime (its connections to the node close
/// meanwhile, so the node's graceful shutdown is not held up).
async fn stop(node: NodeProcess) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || node.terminate())
        .await
        .expect("terminate")
}

/// Rotates `node`'s signing key through its admin API (writing `keys/<id>.key` and `.pub`).
async fn rotate(pki: &Path, node: &str, addr: std::net::SocketAddr) {
    let files = kinbridge_node::devpki::DevNodeFiles::new(pki, &node_id(node));
    let channel = kinbridge_grpc::client::local_channel(
        &addr.to_string(),
        &files.ca_cert(),
        &files.client_cert("admin"),
        &files.client_key("admin"),
    )
    .expect("admin channel");
    AdminServiceClient::new(channel)
        .rotate_key(pb::RotateKeyRequest {
            key_id: format!("{node}-next"),
            overlap_seconds: 3600,
            lifetime_seconds: 30 * 86_400,
        })
        .await
        .expect("rotate");
}

/// Two node processes, Zambia sending to Malawi, started by `sh` under `umask` with
/// `RUST_LOG=rust_log`, in `root`.
fn two_processes(
    root: &Path,
    rust_log: &str,
    umask: Option<&str>,
) -> (PathBuf, NodeProcess, NodeProcess) {
    let pki = root.join("certs-dev");
    kinbridge_node::devpki::ensure(&pki, &[node_id("ZM-DSW"), node_id("MW-DSW")]).expect("pki");
    let mw_config = root.join("malawi.toml");
    std::fs::write(
        &mw_config,
        dev_config_toml(&pki, "MW-DSW", &root.join("mw"), &[("ZM-DSW", None)]),
    )
    .expect("config");
    let malawi = NodeProcess::start_full(&mw_config, &[], rust_log, umask);
    let zm_config = root.join("zambia.toml");
    std::fs::write(
        &zm_config,
        dev_config_toml(
            &pki,
            "ZM-DSW",
            &root.join("zm"),
            &[("MW-DSW", Some(format!("https://{}", malawi.peer_addr)))],
        ),
    )
    .expect("config");
    let zambia = NodeProcess::start_full(&zm_config, &[], rust_log, umask);
    (pki, zambia, malawi)
}

#[tokio::test]
async fn a_node_started_with_umask_022_keeps_its_data_directory_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let (pki, zambia, malawi) = two_processes(root, "info", Some("022"));
    let mut client = client_for(&pki, "ZM-DSW", "caseworker", zambia.local_addr);
    deliver_referrals(&mut client, "MW-DSW", 2).await;
    rotate(&pki, "ZM-DSW", zambia.local_addr).await;
    drop(client);
    let expect_zm = [
        "store/db",
        "store/conf",
        "store/payloads/segment-",
        "audit/entries.log",
        "keys/ZM-DSW-next.key",
        "keys/ZM-DSW-next.pub",
    ];
    let expect_mw = ["store/db", "store/payloads/segment-", "audit/entries.log"];
    // While the nodes run, and after they stop.
    assert_private(&root.join("zm"), &expect_zm);
    assert_private(&root.join("mw"), &expect_mw);
    assert!(stop(zambia).await.success());
    assert!(stop(malawi).await.success());
    assert_private(&root.join("zm"), &expect_zm);
    assert_private(&root.join("mw"), &expect_mw);
}

#[tokio::test]
async fn an_in_process_node_keeps_its_data_directory_private() {
    // Whatever umask the test process has: the node sets the modes itself.
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 2).await;
    rotate(&fed.pki, "ZM-DSW", fed.node("ZM-DSW").local_addr).await;
    drop(zambia);
    // Stop the nodes but keep their directory.
    let Federation { dir, nodes, .. } = fed;
    for node in nodes {
        node.shutdown().await.expect("clean shutdown");
    }
    let data = dir.path().join("data");
    assert_private(
        &data.join("ZM-DSW"),
        &[
            "store/db",
            "store/payloads/segment-",
            "audit/entries.log",
            "keys/ZM-DSW-next.key",
            "keys/ZM-DSW-next.pub",
        ],
    );
    assert_private(
        &data.join("MW-DSW"),
        &["store/payloads/segment-", "audit/entries.log"],
    );
}

/// Runs `kinbridge args…` to its end (bounded); returns whether it succeeded and its stderr.
fn run_to_end(args: &[&str], config: &Path) -> (bool, String) {
    let mut child = kinbridge()
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("kinbridge {args:?} did not end within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    (status.success(), stderr)
}

#[test]
fn a_data_directory_open_to_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("certs-dev");
    kinbridge_node::devpki::ensure(&pki, &[node_id("ZM-DSW")]).expect("pki");
    let data = dir.path().join("zm");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&data)
        .expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = dir.path().join("zambia.toml");
    std::fs::write(&config, dev_config_toml(&pki, "ZM-DSW", &data, &[])).expect("config");
    let fix = format!("chmod -R go-rwx {}", data.display());

    // The directory itself.
    for command in [&["node"][..], &["config", "check"][..]] {
        let (ok, stderr) = run_to_end(command, &config);
        assert!(!ok, "{command:?} accepted a 0755 data directory");
        assert!(
            stderr.contains(&format!(
                "{} is open to other users (mode 755)",
                data.display()
            )),
            "{stderr}"
        );
        assert!(stderr.contains(&fix), "{stderr}");
    }

    // A file in it, the directory being private.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let file = data.join("notes.txt");
    std::fs::write(&file, b"x").expect("file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let (ok, stderr) = run_to_end(&["node"], &config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "{} is open to other users (mode 640)",
            file.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&fix), "{stderr}");

    // The fix as the message gives it; then the node starts.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&fix)
        .status()
        .expect("chmod");
    assert!(status.success());
    NodeProcess::start(&config).kill();
}

/// The forms in which `canary`'s bytes could show in a log: as text, as Rust's debug list of
/// bytes (`[90, 81, …]`, with or without spaces), and as hex in either case.
fn encodings(canary: &str) -> Vec<String> {
    let bytes = canary.as_bytes();
    let decimal: Vec<String> = bytes.iter().map(u8::to_string).collect();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        canary.to_owned(),
        decimal.join(", "),
        decimal.join(","),
        hex.clone(),
        hex.to_uppercase(),
    ]
}

#[tokio::test]
async fn no_log_level_prints_a_childs_data_or_a_reference() {
    const CASE: &str = "CASE-QZXW-4417";
    const CONSENT: &str = "CONSENT-QZXW-5521";
    const CORRELATION: &str = "CORR-QZXW-6633";
    const NAME: &str = "Qzxwilbertine";
    for level in ["trace", "debug", "info"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let (pki, zambia, malawi) = two_processes(root, level, None);
        let mut client = client_for(&pki, "ZM-DSW", "caseworker", zambia.local_addr);
        let mut request = submit_request("MW-DSW");
        request.correlation_id = CORRELATION.into();
        if let Some(consent) = request.consent.as_mut() {
            consent.consent_id = CONSENT.into();
        }
        if let Some(referral) = request.referral.as_mut() {
            referral.case_reference = CASE.into();
            if let Some(identity) = referral.identity.as_mut() {
                identity.given_names = vec![NAME.into()];
            }
        }
        submit_delivered(&mut client, request).await;
        // Malawi's system reads it back, payload included.
        let mut receiver = client_for(&pki, "MW-DSW", "system", malawi.local_addr);
        let inbox = open_inbox(&mut receiver).await;
        assert_eq!(inbox.len(), 1, "{level}");
        drop((client, receiver));
        assert!(stop(zambia).await.success());
        assert!(stop(malawi).await.success());
        for log in [root.join("zambia.log"), root.join("malawi.log")] {
            let text = std::fs::read_to_string(&log).expect("node log");
            // The level took effect: below info, the node's own debug lines are there.
            if level != "info" {
                assert!(
                    text.contains("DEBUG"),
                    "{level}: {} has no debug line",
                    log.display()
                );
            }
            for canary in [CASE, CONSENT, CORRELATION, NAME] {
                for form in encodings(canary) {
                    assert!(
                        !text.contains(&form),
                        "RUST_LOG={level}: {} holds {canary} as '{form}'",
                        log.display()
                    );
                }
            }
        }
    }
}
