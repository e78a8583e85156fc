//! The bugs fuzzing found, one test each on the input that found it (`fuzz/regressions/`),
//! asserting the fixed behaviour itself; `corpora.rs` replays the same inputs through the
//! targets.

use std::path::Path;

use rustls::pki_types::CertificateDer;

fn regression(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A client certificate whose unit URI held NUL bytes was refused with an error quoting them:
/// the error is logged and audited, so a certificate could write control characters there.
#[test]
fn a_certificate_identity_error_quotes_no_control_characters() {
    let der = regression("certificate_identity", "unit-with-control-characters");
    let err = kinbridge_service::identity::local_client_of(&CertificateDer::from(der.as_slice()))
        .expect_err("an invalid unit");
    let text = err.to_string();
    assert!(text.contains("invalid unit: ????????istRict"), "{text}");
}

/// A checkpoint note whose origin line held control characters was refused with an error
/// quoting them (WrongOrigin), which an auditor's terminal or a log would print as is.
#[test]
fn a_checkpoint_error_quotes_no_control_characters() {
    use kinbridge_audit::checkpoint::verify_note;
    let data = regression("checkpoint", "origin-with-control-characters");
    let body = std::str::from_utf8(&data[1..]).expect("UTF-8 note body");
    let key = kinbridge_fuzzing::checkpoint::note_key(&kinbridge_fuzzing::fixture::sender_key());
    let note = kinbridge_fuzzing::checkpoint::sign_body(
        body,
        &key.name,
        &kinbridge_fuzzing::fixture::sender_key(),
    );
    let text = verify_note(&note, &key)
        .expect_err("wrong origin")
        .to_string();
    assert!(text.contains("origin is 'kinbri??dM-DSW'"), "{text}");
}

/// A config whose comment held a NUL byte was refused as "line 6: " with nothing after it:
/// toml gives no message for that error, and the refusal passed the empty one on.
#[test]
fn a_config_syntax_error_always_says_what_is_wrong() {
    let data = regression("node_config", "nul-in-a-comment");
    let text = std::str::from_utf8(&data).expect("UTF-8 config");
    let dir = tempfile::tempdir().expect("temp dir");
    let err = kinbridge_node::NodeConfig::parse(&dir.path().join("node.toml"), text)
        .expect_err("a NUL byte is not TOML");
    assert_eq!(err.key, "line 6");
    assert!(err.expected.contains("U+0000"), "{err}");
}
