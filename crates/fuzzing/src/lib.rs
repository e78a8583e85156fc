//! The fuzz targets of kinbridge, as plain functions over bytes: each decodes input from outside
//! the node and asserts the properties the decoder must keep. `fuzz/` runs them under libFuzzer;
//! the tests replay every committed corpus file through them on the stable toolchain.
//!
//! A property that does not hold is a panic (an `assert!`), which libFuzzer reports as a crash
//! with the input that caused it. A refusal of bad input is not a failure: it must only be an
//! error value with a message. The targets and what each asserts are listed in docs/fuzzing.md.
//!
//! Targets that need a signature to reach deep code build their keys from fixed seeds
//! ([`fixture`]) and treat the fuzz bytes as one part of an otherwise valid input, chosen by
//! the first byte, so the fuzzer reaches verification and not only the first decode error.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod envelope;
pub mod export;
pub mod fixture;
pub mod identity;
pub mod json;
pub mod receipt;
pub mod seeds;

pub use batch::deliver_batch;
pub use checkpoint::checkpoint;
pub use config::node_config;
pub use envelope::{envelope, tracing};
pub use export::audit_export;
pub use identity::certificate_identity;
pub use json::json_request;
pub use receipt::receipt;

/// A fuzz target: bytes in, a panic if a property does not hold.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/NAME.rs` and `fuzz/corpus/NAME/` name it.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("tracing", tracing),
    ("receipt", receipt),
    ("deliver_batch", deliver_batch),
    ("checkpoint", checkpoint),
    ("audit_export", audit_export),
    ("node_config", node_config),
    ("json_request", json_request),
    ("certificate_identity", certificate_identity),
];

/// Asserts that an error's message says something and stays short and printable: a refusal
/// names what was wrong without echoing the input back (it may be large, or hold a child's
/// data) and without control characters that would forge lines in a log.
pub fn assert_error_message(message: &str, bound: usize) {
    assert!(!message.trim().is_empty(), "an error without a message");
    assert!(
        message.len() <= bound,
        "an error message of {} bytes (bound {bound}): {:?}",
        message.len(),
        message.chars().take(200).collect::<String>()
    );
    assert!(
        !message.chars().any(char::is_control),
        "an error message with a control character: {message:?}"
    );
}
