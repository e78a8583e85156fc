//! `AdminService` on the local port: each call says who the caller is and calls one use case
//! of [`Administration`].

use std::sync::Arc;

use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::admin_service_server::AdminService;
use kinbridge_service::Node;
use kinbridge_service::admin::Administration;
use tonic::{Request, Response, Status};

use crate::local::{answer, local_auth};

/// The `AdminService` face.
pub struct AdminApi {
    admin: Administration,
}

impl AdminApi {
    /// The face over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            admin: Administration::new(node),
        }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let auth = local_auth(&request);
        answer(
            self.admin
                .list_peers(auth.as_ref(), request.into_inner())
                .await,
        )
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let auth = local_auth(&request);
        answer(
            self.admin
                .list_keys(auth.as_ref(), request.into_inner())
                .await,
        )
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let auth = local_auth(&request);
        answer(
            self.admin
                .rotate_key(auth.as_ref(), request.into_inner())
                .await,
        )
    }

    async fn revoke_key(
        &self,
        request: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::RevokeKeyResponse>, Status> {
        let auth = local_auth(&request);
        answer(
            self.admin
                .revoke_key(auth.as_ref(), request.into_inner())
                .await,
        )
    }
}
