//! `ReportingService` on the local port: the caller, then [`Statistics`].

use std::sync::Arc;

use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::reporting_service_server::ReportingService;
use kinbridge_service::Node;
use kinbridge_service::statistics::Statistics;
use tonic::{Request, Response, Status};

use crate::local::{answer, local_auth};

/// The `ReportingService` face.
pub struct ReportingApi {
    statistics: Statistics,
}

impl ReportingApi {
    /// The face over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            statistics: Statistics::new(node),
        }
    }
}

#[tonic::async_trait]
impl ReportingService for ReportingApi {
    async fn get_statistics(
        &self,
        request: Request<pb::GetStatisticsRequest>,
    ) -> Result<Response<pb::GetStatisticsResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.statistics.get_statistics(auth.as_ref(), req).await)
    }
}
