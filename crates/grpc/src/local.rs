//! `LocalService` on the local port: each call decodes, says who the caller is (from its
//! certificate) and calls one use case of [`LocalCases`].

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_server::LocalService;
use kinbridge_service::Node;
use kinbridge_service::local::{LocalAuth, LocalCases};
use tonic::{Request, Response, Status};

use crate::status::to_status;
use crate::tls::ConnInfo;

/// Metadata key of a submission's idempotency key: a retry under it gets the first answer.
pub const IDEMPOTENCY_METADATA: &str = "idempotency-key";

/// The local client the request's connection proved, as far as it proved one.
pub fn local_auth<T>(request: &Request<T>) -> Option<LocalAuth> {
    request
        .extensions()
        .get::<ConnInfo<LocalAuth>>()
        .map(|info| info.auth.clone())
}

/// A use case's answer as a gRPC response.
pub(crate) fn answer<T>(
    result: Result<T, kinbridge_service::ServiceError>,
) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_status)
}

/// The `LocalService` face.
pub struct LocalApi {
    cases: LocalCases,
}

impl LocalApi {
    /// The face over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            cases: LocalCases::new(node),
        }
    }
}

type InboxStream = Pin<Box<dyn Stream<Item = Result<pb::InboxItem, Status>> + Send>>;

#[tonic::async_trait]
impl LocalService for LocalApi {
    async fn submit_referral(
        &self,
        request: Request<pb::SubmitReferralRequest>,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        let auth = local_auth(&request);
        let key = request
            .metadata()
            .get(IDEMPOTENCY_METADATA)
            .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
        let req = request.into_inner();
        answer(
            self.cases
                .submit_referral(auth.as_ref(), req, key.as_deref())
                .await,
        )
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.get_delivery(auth.as_ref(), req).await)
    }

    async fn list_inbox(
        &self,
        request: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.list_inbox(auth.as_ref(), req).await)
    }

    async fn get_inbox_item(
        &self,
        request: Request<pb::GetInboxItemRequest>,
    ) -> Result<Response<pb::InboxItem>, Status> {
        let auth = local_auth(&request);
        let sequence = request.into_inner().sequence;
        answer(self.cases.show_inbox_item(auth.as_ref(), sequence).await)
    }

    type WatchInboxStream = InboxStream;

    async fn watch_inbox(
        &self,
        request: Request<pb::WatchInboxRequest>,
    ) -> Result<Response<InboxStream>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        let items = self.cases.watch_inbox(auth.as_ref(), req).await;
        let items = items.map_err(to_status)?;
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(items).map(|item| item.map_err(to_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn acknowledge_inbox_item(
        &self,
        request: Request<pb::AcknowledgeInboxItemRequest>,
    ) -> Result<Response<pb::AcknowledgeInboxItemResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.acknowledge_inbox_item(auth.as_ref(), req).await)
    }

    async fn forward_referral(
        &self,
        request: Request<pb::ForwardReferralRequest>,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.forward_referral(auth.as_ref(), req).await)
    }

    async fn withdraw_consent(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> Result<Response<pb::WithdrawConsentResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.withdraw_consent(auth.as_ref(), req).await)
    }

    async fn update_referral_status(
        &self,
        request: Request<pb::UpdateReferralStatusRequest>,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.update_referral_status(auth.as_ref(), req).await)
    }

    async fn get_referral_status(
        &self,
        request: Request<pb::GetReferralStatusRequest>,
    ) -> Result<Response<pb::GetReferralStatusResponse>, Status> {
        let auth = local_auth(&request);
        let req = request.into_inner();
        answer(self.cases.get_referral_status(auth.as_ref(), req).await)
    }
}
