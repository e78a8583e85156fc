//! kinbridge node runtime: loads and checks the config and everything it names, builds the
//! service layer's [`kinbridge_service::Node`] over the store and audit log, wires it to its
//! gRPC face (`kinbridge-grpc`), and runs the background tasks (delivery, checkpoints,
//! retention, certificate expiry) and the metrics listener until shutdown. Also the
//! development PKI for the demo and tests.

#![forbid(unsafe_code)]

pub mod config;
pub mod devpki;
pub mod linkage_keys;
pub mod metrics;
pub mod peers;
pub mod server;

pub use config::{ConfigError, NodeConfig};
pub use server::{Listeners, NodeError, RunningNode, run, spawn};
