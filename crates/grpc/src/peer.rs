//! `PeerService` on the peer port: each call decodes, says which peer calls (from its
//! certificate) and hands the envelopes to [`Intake`].

use std::sync::Arc;

use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::peer_service_server::PeerService;
use kinbridge_service::Node;
use kinbridge_service::intake::Intake;
use kinbridge_service::registry::PeerAuth;
use tonic::{Request, Response, Status};

use crate::local::answer;
use crate::tls::ConnInfo;

/// The peer the request's connection proved, as far as it proved one.
pub fn peer_auth<T>(request: &Request<T>) -> Option<PeerAuth> {
    request
        .extensions()
        .get::<ConnInfo<PeerAuth>>()
        .map(|info| info.auth.clone())
}

/// The `PeerService` face.
pub struct PeerApi {
    intake: Intake,
}

impl PeerApi {
    /// The face over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            intake: Intake::new(node),
        }
    }
}

#[tonic::async_trait]
impl PeerService for PeerApi {
    async fn deliver(
        &self,
        request: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        let auth = peer_auth(&request);
        let req = request.into_inner();
        answer(self.intake.deliver(auth.as_ref(), req).await)
    }

    async fn deliver_batch(
        &self,
        request: Request<pb::DeliverBatchRequest>,
    ) -> Result<Response<pb::DeliverBatchResponse>, Status> {
        let auth = peer_auth(&request);
        let req = request.into_inner();
        answer(self.intake.deliver_batch(auth.as_ref(), req).await)
    }
}
