//! `AuditService` on both ports: each call says who calls (a peer on the peer port, a local
//! client on the local port) and calls one use case of [`AuditTrail`].

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::audit_service_server::AuditService;
use kinbridge_service::Node;
use kinbridge_service::audit_trail::{AuditCaller, AuditTrail};
use tonic::{Request, Response, Status};

use crate::local::{answer, local_auth};
use crate::peer::peer_auth;
use crate::status::to_status;

/// Which listener the service is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The peer port: callers are peer nodes.
    Peer,
    /// The local port: callers are the authority's clients.
    Local,
}

/// The `AuditService` face for one listener.
pub struct AuditApi {
    trail: AuditTrail,
    side: Side,
}

impl AuditApi {
    /// The face over `node` for `side`.
    pub fn new(node: Arc<Node>, side: Side) -> Self {
        Self {
            trail: AuditTrail::new(node),
            side,
        }
    }
}

/// What the request's connection proved of the caller, on one side.
enum Proven {
    Peer(Option<kinbridge_service::registry::PeerAuth>),
    Local(Option<kinbridge_service::local::LocalAuth>),
}

impl Proven {
    fn of<T>(side: Side, request: &Request<T>) -> Self {
        match side {
            Side::Peer => Self::Peer(peer_auth(request)),
            Side::Local => Self::Local(local_auth(request)),
        }
    }

    fn caller(&self) -> AuditCaller<'_> {
        match self {
            Self::Peer(auth) => AuditCaller::Peer(auth.as_ref()),
            Self::Local(auth) => AuditCaller::Local(auth.as_ref()),
        }
    }
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportLogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        let proven = Proven::of(self.side, &request);
        let caller = proven.caller();
        answer(
            self.trail
                .get_checkpoint(caller, request.into_inner())
                .await,
        )
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        let proven = Proven::of(self.side, &request);
        let caller = proven.caller();
        answer(
            self.trail
                .get_inclusion_proof(caller, request.into_inner())
                .await,
        )
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        let proven = Proven::of(self.side, &request);
        let caller = proven.caller();
        answer(
            self.trail
                .get_consistency_proof(caller, request.into_inner())
                .await,
        )
    }

    type ExportLogStream = ExportStream;

    async fn export_log(
        &self,
        request: Request<pb::ExportLogRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let proven = Proven::of(self.side, &request);
        let caller = proven.caller();
        let chunks = self.trail.export_log(caller, request.into_inner()).await;
        let chunks = chunks.map_err(to_status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(chunks)
            .map(|chunk| chunk.map_err(to_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn check_peers(
        &self,
        request: Request<pb::CheckPeersRequest>,
    ) -> Result<Response<pb::CheckPeersResponse>, Status> {
        let proven = Proven::of(self.side, &request);
        let caller = proven.caller();
        answer(self.trail.check_peers(caller, request.into_inner()).await)
    }
}
