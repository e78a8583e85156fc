//! The signing key files kinbridge writes (the development PKI's, and a key made by rotation)
//! are read by other tools: the auditor's guide's OpenSSL commands run as written on them,
//! and Python's `cryptography` loads them. Each check is skipped, saying why, where its tool
//! is not installed, unless `KINBRIDGE_REQUIRE_INTEROP=1` (as in CI), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::admin_service_client::AdminServiceClient;

/// The commands of the guide's "Checking a key with OpenSSL" block, one per entry.
fn guide_commands() -> Vec<String> {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/auditors-guide.md"),
    )
    .expect("the auditor's guide");
    let section = guide
        .split_once("### Checking a key with OpenSSL")
        .expect("the section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("its code block")
        .1
        .split_once("```")
        .expect("the block's end")
        .0;
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn have(tool: &str, probe: &[&str]) -> bool {
    Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the guide's commands in a directory holding `private` as `signing.key` and `public`
/// as `MW-DSW-signing.pub`, and checks what they print.
fn run_guide(private: &Path, public: &Path, fingerprint: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(private, dir.path().join("signing.key")).expect("copy");
    std::fs::copy(public, dir.path().join("MW-DSW-signing.pub")).expect("copy");
    let commands = guide_commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let outputs: Vec<String> = commands
        .iter()
        .map(|command| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(dir.path())
                .output()
                .expect("sh");
            assert!(
                out.status.success(),
                "`{command}` failed on {}: {}",
                private.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect();
    assert_eq!(outputs[0].trim(), "same key");
    assert_eq!(
        outputs[1].split_whitespace().next(),
        Some(fingerprint),
        "the fingerprint `kinbridge keys list` shows"
    );
}

/// Loads `private` with Python's `cryptography` and prints its public key as SPKI PEM.
fn python_public_key(private: &Path) -> String {
    let script = "import sys\n\
        from cryptography.hazmat.primitives import serialization as s\n\
        k = s.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)\n\
        sys.stdout.write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode())\n";
    let out = Command::new(interop_python())
        .args(["-c", script])
        .arg(private)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "cryptography cannot load {}: {}",
        private.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fingerprint of the SPKI PEM public key at `path`, as kinbridge shows it.
fn fingerprint(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).expect("public key");
    kinbridge_core::PeerKey::from_public_key_pem(key_id("k"), &pem)
        .expect("an SPKI Ed25519 key")
        .fingerprint()
}

/// The development PKI's signing key and a key made by rotation at a running node, each as
/// (private key file, public key file).
async fn written_keys() -> (Federation, Vec<(PathBuf, PathBuf)>) {
    let fed = Federation::start(&["ZM-DSW"]).await;
    let mut admin = AdminServiceClient::new(fed.channel("ZM-DSW", "admin"));
    admin
        .rotate_key(pb::RotateKeyRequest {
            key_id: "ZM-DSW-2027".into(),
            overlap_seconds: 3600,
            lifetime_seconds: 30 * 86_400,
        })
        .await
        .expect("rotate");
    let files = fed.files("ZM-DSW");
    let keys_dir = fed.dir.path().join("data/ZM-DSW/keys");
    let keys = vec![
        (files.signing_key(), files.signing_pub()),
        (
            keys_dir.join("ZM-DSW-2027.key"),
            keys_dir.join("ZM-DSW-2027.pub"),
        ),
    ];
    (fed, keys)
}

#[tokio::test]
async fn the_guides_openssl_commands_work_on_the_keys_kinbridge_writes() {
    if !have("openssl", &["version"]) {
        let message = "openssl is not installed (the auditor's guide's commands need it)";
        assert!(!interop_required(), "{message}");
        println!("skipped: {message}");
        return;
    }
    let (fed, keys) = written_keys().await;
    for (private, public) in &keys {
        run_guide(private, public, &fingerprint(public));
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn pythons_cryptography_loads_the_keys_kinbridge_writes() {
    let python = interop_python();
    if !have(&python.to_string_lossy(), &["-c", "import cryptography"]) {
        let message = format!(
            "{} lacks the `cryptography` package: pip install -r tests/interop/requirements.txt",
            python.display()
        );
        assert!(!interop_required(), "{message}");
        println!("skipped: {message}");
        return;
    }
    let (fed, keys) = written_keys().await;
    for (private, public) in &keys {
        let expected = std::fs::read_to_string(public).expect("public key");
        assert_eq!(python_public_key(private).trim(), expected.trim());
    }
    fed.shutdown().await;
}
