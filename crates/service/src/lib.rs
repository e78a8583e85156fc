//! kinbridge's service layer: the node's use cases as plain Rust, over [`Node`].
//!
//! Every use case returns [`ServiceError`]. This crate knows no wire: no tonic, hyper or axum
//! (CI fails if one appears in `cargo tree -p kinbridge-service -e normal`). The faces
//! (`kinbridge-grpc` today) decode a request, say who the caller is, call one use case and
//! encode its answer; peers are reached through [`link::PeerLink`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod audit_trail;
pub mod delivery;
pub mod error;
pub mod family_tracing;
pub mod identity;
pub mod intake;
pub mod keys;
pub mod link;
pub mod local;
pub mod metrics;
pub mod node;
pub mod once;
pub mod outbox;
pub mod pacing;
pub mod purge;
pub mod ratelimit;
pub mod registry;
pub mod reporting;
pub mod room;
pub mod statistics;
pub mod tracing_cases;
pub mod tracing_records;
pub mod webhooks;

pub use error::{ErrorKind, ServiceError};
pub use node::Node;
