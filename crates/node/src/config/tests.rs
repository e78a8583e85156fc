//! Config errors name the file, the key and what was expected.

use super::*;

fn write_config(dir: &Path, body: &str) -> PathBuf {
    for f in [
        "node.crt",
        "node.key",
        "ca.crt",
        "signing.key",
        "local-ca.crt",
        "peer-ca.crt",
        "peer.pub",
    ] {
        std::fs::write(dir.join(f), "x").expect("write");
    }
    let path = dir.join("node.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

const GOOD: &str = r#"
node_id = "ZM-DSW"
data_dir = "data"
[listen]
peer = "127.0.0.1:0"
local = "127.0.0.1:0"
[identity]
certificate = "node.crt"
private_key = "node.key"
ca_certificate = "ca.crt"
signing_key = "signing.key"
signing_key_id = "ZM-DSW-k1"
[local_clients]
ca_certificate = "local-ca.crt"
[[peers]]
node_id = "MW-DSW"
endpoint = "https://127.0.0.1:7102"
ca_certificate = "peer-ca.crt"
[[peers.signing_keys]]
key_id = "MW-DSW-k1"
public_key = "peer.pub"
not_after = "2030-01-01T00:00:00Z"
"#;

#[test]
fn good_config_loads_with_paths_relative_to_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), GOOD);
    let config = NodeConfig::load(&path).expect("loads");
    assert_eq!(config.node_id.as_str(), "ZM-DSW");
    assert_eq!(config.data_dir, dir.path().join("data"));
    assert_eq!(
        config.peers[0].signing_keys[0].not_after,
        Some(UnixMillis(1_893_456_000_000))
    );
}

#[test]
fn errors_name_the_key_and_the_expectation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            GOOD.replace("\"ZM-DSW\"", "\"zambia\""),
            "node_id",
            "not a node id",
        ),
        (
            GOOD.replace("127.0.0.1:7102", "127.0.0.1:7102\"\nbogus = \"1"),
            "line",
            "unknown field `bogus`",
        ),
        (
            GOOD.replace("https://127", "http://127"),
            "peers[0].endpoint",
            "https://",
        ),
        (
            GOOD.replace("peer.pub", "missing.pub"),
            "peers[0].signing_keys[0].public_key",
            "does not exist",
        ),
        (
            GOOD.replace("peer = \"127.0.0.1:0\"", "peer = \"localhost\""),
            "listen.peer",
            "IP address and port",
        ),
        (
            GOOD.replace("2030-01-01T00:00:00Z", "soon"),
            "peers[0].signing_keys[0].not_after",
            "RFC 3339",
        ),
    ];
    for (body, key, expected) in cases {
        let path = write_config(dir.path(), &body);
        let err = NodeConfig::load(&path).expect_err("must fail");
        assert!(err.key.starts_with(key), "key {} for {key}", err.key);
        assert!(err.expected.contains(expected), "{err}");
        assert!(err.to_string().contains("node.toml"), "{err}");
    }
}

#[test]
fn tags_are_normalised_and_an_unknown_one_is_refused_by_name() {
    use kinbridge_core::firewall::Tag;
    let dir = tempfile::tempdir().expect("tempdir");
    let tagged = GOOD
        .replace(
            "[listen]",
            "tags = [\" Child_Protection \"]\n[listen]",
        )
        .replace(
            "ca_certificate = \"peer-ca.crt\"",
            "ca_certificate = \"peer-ca.crt\"\ntags = [\"Immigration-Enforcement\", \"IMMIGRATION-ENFORCEMENT\"]",
        );
    let config = NodeConfig::load(&write_config(dir.path(), &tagged)).expect("loads");
    assert_eq!(config.tags, vec![Tag::ChildProtection]);
    assert_eq!(config.peers[0].tags, vec![Tag::ImmigrationEnforcement]);

    let typo = GOOD.replace(
        "ca_certificate = \"peer-ca.crt\"",
        "ca_certificate = \"peer-ca.crt\"\ntags = [\"child-protection\", \"immigration-enforcment\"]",
    );
    let path = write_config(dir.path(), &typo);
    let err = NodeConfig::load(&path).expect_err("an unknown tag");
    let message = err.to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    assert!(message.contains("peers[0].tags[1]"), "{message}");
    assert!(message.contains("'immigration-enforcment'"), "{message}");
    assert!(message.contains("immigration-enforcement"), "{message}");
}

#[test]
fn metrics_need_mutual_tls_unless_a_setting_says_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), GOOD);
    assert!(
        !NodeConfig::load(&path)
            .expect("loads")
            .metrics_insecure_plain_http
    );
    let path = write_config(
        dir.path(),
        &format!("{GOOD}[metrics]\ninsecure_plain_http = true\n"),
    );
    assert!(
        NodeConfig::load(&path)
            .expect("loads")
            .metrics_insecure_plain_http
    );
    let path = write_config(dir.path(), &format!("{GOOD}[metrics]\nplain_http = true\n"));
    let err = NodeConfig::load(&path).expect_err("an unknown metrics key is refused");
    assert!(err.to_string().contains("plain_http"), "{err}");
}

#[test]
fn a_console_session_lasts_fifteen_minutes_unless_the_config_says_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig::load(&write_config(dir.path(), GOOD)).expect("loads");
    assert_eq!(config.console_idle_timeout_secs, 900);
    let short = format!("{GOOD}[console]\nidle_timeout_secs = 60\n");
    let config = NodeConfig::load(&write_config(dir.path(), &short)).expect("loads");
    assert_eq!(config.console_idle_timeout_secs, 60);
    for bad in ["0", "43201"] {
        let body = format!("{GOOD}[console]\nidle_timeout_secs = {bad}\n");
        let err = NodeConfig::load(&write_config(dir.path(), &body)).expect_err("refused");
        assert_eq!(err.key, "console.idle_timeout_secs", "{err}");
        assert!(err.expected.contains("900"), "{err}");
    }
}

#[test]
fn the_free_space_reserve_has_a_default_and_can_be_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig::load(&write_config(dir.path(), GOOD)).expect("loads");
    assert_eq!(config.min_free_bytes, 256 * 1024 * 1024);
    let set = format!("{GOOD}[storage]\nmin_free_bytes = 1048576\n");
    let config = NodeConfig::load(&write_config(dir.path(), &set)).expect("loads");
    assert_eq!(config.min_free_bytes, 1024 * 1024);
    let typo = format!("{GOOD}[storage]\nmin_free = 1\n");
    let err = NodeConfig::load(&write_config(dir.path(), &typo)).expect_err("refused");
    assert!(err.expected.contains("min_free_bytes"), "{err}");
}

#[test]
fn the_delivery_backoff_and_batch_are_the_defaults_unless_the_config_says_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig::load(&write_config(dir.path(), GOOD)).expect("loads");
    assert_eq!(
        config.delivery,
        kinbridge_service::delivery::Tuning::default()
    );
    let tuned = format!(
        "{GOOD}[delivery]\nretry_base_ms = 20\nretry_max_ms = 400\nbatch = 4\ncall_timeout_ms = 2000\n"
    );
    let config = NodeConfig::load(&write_config(dir.path(), &tuned)).expect("loads");
    assert_eq!(
        config.delivery,
        kinbridge_service::delivery::Tuning {
            retry_base: std::time::Duration::from_millis(20),
            retry_max: std::time::Duration::from_millis(400),
            batch: 4,
            call_timeout: std::time::Duration::from_millis(2000),
        }
    );
    for (bad, key) in [
        ("retry_base_ms = 0", "delivery.retry_base_ms"),
        (
            "retry_base_ms = 500\nretry_max_ms = 100",
            "delivery.retry_max_ms",
        ),
        ("batch = 0", "delivery.batch"),
        ("batch = 100000", "delivery.batch"),
        ("call_timeout_ms = 5", "delivery.call_timeout_ms"),
    ] {
        let body = format!("{GOOD}[delivery]\n{bad}\n");
        let err = NodeConfig::load(&write_config(dir.path(), &body)).expect_err("refused");
        assert_eq!(err.key, key, "{err}");
    }
}

/// Found by fuzzing (fuzz/regressions/node_config): a control character in a comment made
/// toml report an error with an empty message, so the refusal said "line 6: " and nothing
/// about what was wrong.
#[test]
fn a_toml_syntax_error_always_says_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    for body in [
        format!("# a comment\n#k\0llows\n{GOOD}"),
        format!("{GOOD}\n# \u{7}\n"),
        "node_id = \"ZM-DSW\"\n\0".to_owned(),
    ] {
        let err = NodeConfig::load(&write_config(dir.path(), &body)).expect_err("refused");
        eprintln!("{err}");
        assert!(err.key.starts_with("line "), "{err}");
        assert!(!err.expected.trim().is_empty(), "{err:?}");
    }
}
