//! How the use cases reach peer nodes: the small [`PeerLink`] trait the delivery worker and
//! the peer-log check call, implemented over mutual-TLS gRPC by `kinbridge-grpc`'s peer
//! client. The service layer knows a peer by its registry entry, never by a channel.

use std::future::Future;
use std::pin::Pin;

use kinbridge_proto::v1 as pb;

use crate::error::ServiceError;
use crate::registry::Peer;

/// A future a [`PeerLink`] answers with.
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a call to a peer could not be made or was not answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The peer cannot be reached as registered (no endpoint, an endpoint that is not a URL,
    /// TLS settings that do not load): retrying will not help until the registry changes.
    #[error("{0}")]
    NoRoute(String),
    /// The call failed on the way or the peer refused it.
    #[error("{kind:?}: {message}", kind = .0.kind(), message = .0.message())]
    Call(ServiceError),
}

/// Calls to peer nodes. Every call is bounded in time by the implementation.
pub trait PeerLink: Send + Sync {
    /// Checks that `peer` can be called as registered (making what a call needs); the error
    /// says why not.
    fn route(&self, peer: &Peer) -> Result<(), String>;

    /// Whether `peer` takes several envelopes in one call (a peer of an earlier release may
    /// take one at a time).
    fn takes_batches(&self, peer: &str) -> bool;

    /// Delivers `envelopes` to `peer` in one call (or one at a time to a peer that takes no
    /// batches). `results[i]` answers `envelopes[i]`; the results may stop short (the rest
    /// were not looked at). A failure of the whole call answers the first envelope.
    fn deliver<'a>(
        &'a self,
        peer: &'a Peer,
        envelopes: Vec<pb::Envelope>,
    ) -> LinkFuture<'a, Result<Vec<Result<pb::Receipt, ServiceError>>, LinkError>>;

    /// The latest checkpoint note `peer` serves (not yet verified).
    fn checkpoint<'a>(&'a self, peer: &'a Peer) -> LinkFuture<'a, Result<String, LinkError>>;

    /// `peer`'s proof that its log of `second_size` entries extends the one of `first_size`.
    fn consistency_proof<'a>(
        &'a self,
        peer: &'a Peer,
        first_size: u64,
        second_size: u64,
    ) -> LinkFuture<'a, Result<Vec<Vec<u8>>, LinkError>>;
}
