//! kinbridge node: serves the peer and local gRPC services over mutual TLS, keeps the peer
//! registry, stores envelopes durably in sled and delivers the outbox to peers.
//!
//! This is the only crate that knows tonic. It translates between the wire (protobuf, gRPC
//! status codes) and the domain core (`kinbridge-core`) at its edges.

#![forbid(unsafe_code)]

pub mod admin_service;
pub mod audit;
pub mod audit_service;
pub mod client;
pub mod config;
pub mod delivery;
pub mod devpki;
pub mod family_tracing;
pub mod identity;
pub mod keys;
pub mod local_firewall;
pub mod local_service;
pub mod metrics;
pub mod peer_guard;
pub mod peer_service;
pub mod purge;
pub mod ratelimit;
pub mod registry;
pub mod reporting;
pub mod reporting_service;
pub mod server;
pub mod status;
pub mod tls;
pub mod tracing_service;

pub use config::{ConfigError, NodeConfig};
pub use server::{Listeners, NodeError, RunningNode, run, spawn};
