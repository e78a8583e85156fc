//! Target `node_config`: a node's TOML config file through `NodeConfig::parse`, the
//! validation `kinbridge node` and `kinbridge config check` run before anything starts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kinbridge_core::NodeId;
use kinbridge_core::limits::MAX_MESSAGE_LIFETIME_MS;
use kinbridge_node::NodeConfig;

/// The example configs of `config/`, the valid inputs the seeds start from.
pub const EXAMPLES: [&str; 3] = [
    include_str!("../../../config/zambia.toml"),
    include_str!("../../../config/malawi.toml"),
    include_str!("../../../config/zimbabwe.toml"),
];

/// A directory holding an empty file at every path the example configs name (relative to
/// `config/`), so a parse reaches the checks after the files exist; made once per process.
fn config_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("kinbridge-fuzz-config-{}", std::process::id()));
        let config = root.join("config");
        for text in EXAMPLES {
            for quoted in text.split('"').skip(1).step_by(2) {
                if quoted.starts_with("../") && !quoted.starts_with("../data") {
                    let path = config.join(quoted);
                    if let Some(parent) = path.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    let _ = std::fs::write(&path, b"");
                }
            }
        }
        let _ = std::fs::create_dir_all(&config);
        config
    })
}

/// The fuzz bytes (as UTF-8: the file is read as a string) as `config/node.toml` in a
/// directory holding the files the examples name.
///
/// Asserts: a refusal is a `ConfigError` naming the file, a key (a line number for a TOML
/// syntax error, within the text) and what was expected; an accepted config names a valid
/// node id that is not among its peers, peers each listed once, a message lifetime within
/// `MAX_MESSAGE_LIFETIME_MS`, a clock skew of at most an hour; and a parse of the same text
/// gives the same answer.
pub fn node_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = config_dir().join("node.toml");
    let result = NodeConfig::parse(&path, text);
    match &result {
        Ok(config) => {
            assert_eq!(
                NodeId::new(config.node_id.as_str()).as_ref(),
                Ok(&config.node_id)
            );
            assert!(config.peers.iter().all(|p| p.node_id != config.node_id));
            for (i, p) in config.peers.iter().enumerate() {
                assert!(config.peers[..i].iter().all(|q| q.node_id != p.node_id));
            }
            assert!(config.message_ttl_ms > 0 && config.message_ttl_ms <= MAX_MESSAGE_LIFETIME_MS);
            assert!(config.max_clock_skew_ms >= 0 && config.max_clock_skew_ms <= 3_600_000);
        }
        Err(e) => {
            assert_eq!(e.file, path);
            assert!(
                !e.key.is_empty() && !e.expected.is_empty(),
                "an empty config error: {e}"
            );
            if let Some(line) = e.key.strip_prefix("line ") {
                let line: usize = line
                    .parse()
                    .unwrap_or_else(|_| panic!("a config error at line '{line}'"));
                assert!(line >= 1 && line <= text.lines().count() + 1);
            }
        }
    }
    let again = NodeConfig::parse(&path, text);
    assert_eq!(
        format!("{result:?}"),
        format!("{again:?}"),
        "the same config text parsed twice gives two answers"
    );
}
