//! Levels that no `RUST_LOG` can raise: dependencies whose debug or trace lines can carry what
//! the node stores or sends (sled dumps raw store records at trace; h2, hyper and rustls log
//! frames, headers and handshake messages) are capped, whatever the filter says.
//!
//! The caps are a second filter beside the `RUST_LOG` one, and an event must pass both. A
//! directive added to the `EnvFilter` itself would not do: a more specific one from
//! `RUST_LOG` (`sled::pagecache=trace`) or one naming a span (`[rpc]=trace`) would still win.

use tracing_subscriber::filter::{LevelFilter, Targets};

/// Each capped dependency and the most it may log. Log targets start with the crate name;
/// `log` records (sled and rustls use the `log` crate) carry their module path as target.
pub const CAPS: [(&str, LevelFilter); 10] = [
    ("sled", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("tonic", LevelFilter::DEBUG),
    ("tower", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("tokio_rustls", LevelFilter::INFO),
    ("prost", LevelFilter::INFO),
    ("tracing_subscriber", LevelFilter::INFO),
];

/// The cap filter: every target in [`CAPS`] at most its level, everything else unrestricted
/// (the `RUST_LOG` filter decides).
pub fn caps() -> Targets {
    CAPS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, (target, level)| t.with_target(*target, *level),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn caps_hold_for_submodules_and_leave_others_alone() {
        let caps = caps();
        assert!(!caps.would_enable("sled::pagecache::logger", &Level::DEBUG));
        assert!(!caps.would_enable("sled", &Level::TRACE));
        assert!(caps.would_enable("sled::db", &Level::INFO));
        assert!(!caps.would_enable("h2::codec::framed_write", &Level::DEBUG));
        assert!(!caps.would_enable("rustls::conn", &Level::DEBUG));
        assert!(caps.would_enable("tonic::transport", &Level::DEBUG));
        assert!(!caps.would_enable("tonic::codec", &Level::TRACE));
        assert!(caps.would_enable("kinbridge_service::delivery", &Level::TRACE));
    }
}
