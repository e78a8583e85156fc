//! `TracingService` on the local port: each call says who the caller is and calls one use
//! case of [`TracingCases`].

use std::sync::Arc;

use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::tracing_service_server::TracingService;
use kinbridge_service::Node;
use kinbridge_service::tracing_cases::TracingCases;
use tonic::{Request, Response, Status};

use crate::local::{answer, local_auth};

/// The `TracingService` face.
pub struct TracingApi {
    cases: TracingCases,
}

impl TracingApi {
    /// The face over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            cases: TracingCases::new(node),
        }
    }
}

#[tonic::async_trait]
impl TracingService for TracingApi {
    async fn register_tracing_case(
        &self,
        request: Request<pb::RegisterTracingCaseRequest>,
    ) -> Result<Response<pb::RegisterTracingCaseResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.register_tracing_case(auth.as_ref(), req).await)
    }

    async fn list_tracing_matches(
        &self,
        request: Request<pb::ListTracingMatchesRequest>,
    ) -> Result<Response<pb::ListTracingMatchesResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.list_tracing_matches(auth.as_ref(), req).await)
    }

    async fn confirm_tracing_match(
        &self,
        request: Request<pb::ConfirmTracingMatchRequest>,
    ) -> Result<Response<pb::TracingMatch>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.confirm_tracing_match(auth.as_ref(), req).await)
    }
}
