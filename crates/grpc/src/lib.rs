//! kinbridge's gRPC face: the tonic edge of a node.
//!
//! Each service is a thin adapter over the service layer (`kinbridge-service`): decode, say
//! who the caller is (from the certificate the accept loop verified), call one use case,
//! encode. [`status`] is the one mapping from the service error to `tonic::Status` with its
//! `kinbridge-refusal` reason; [`tls`] is the mutual-TLS accept loop; [`peer_client`] is how
//! the node calls its peers (the service layer's `PeerLink`); [`serve`] serves both ports.
//! The peer port's guard ([`peer_guard`]) and the local port's firewall gate
//! ([`local_firewall`]) refuse, audited, what never reaches a use case.

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod client;
pub mod local;
pub mod local_firewall;
pub mod peer;
pub mod peer_client;
pub mod peer_guard;
pub mod reporting;
pub mod serve;
pub mod status;
pub mod tls;
pub mod tracing;

pub use peer_guard::MAX_GRPC_MESSAGE_BYTES;
pub use serve::{GrpcError, LOCAL_SERVICES, Port, serve};
