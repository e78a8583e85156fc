//! The peer service: other nodes deliver envelopes here and get a signed receipt back once
//! the envelope is verified and durably in the inbox.

use std::sync::Arc;

use kinbridge_core::{Refusal, UnixMillis, issue_receipt, verify_envelope};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::peer_service_server::PeerService;
use tonic::{Request, Response, Status};

use crate::registry::PeerAuth;
use crate::server::NodeState;
use crate::status::{peer_auth_status, refusal_status, store_status};
use crate::store::{InboxRecord, ReceiveOutcome};
use crate::tls::ConnInfo;

/// The `PeerService` implementation.
pub struct PeerApi {
    state: Arc<NodeState>,
}

impl PeerApi {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl PeerService for PeerApi {
    #[tracing::instrument(skip_all, fields(peer))]
    async fn deliver(
        &self,
        request: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        let auth = request
            .extensions()
            .get::<ConnInfo<PeerAuth>>()
            .map(|info| info.auth.clone())
            .ok_or_else(|| {
                Status::unauthenticated("no verified TLS client certificate on this connection")
            })?;
        let tls_node = auth.map_err(|e| {
            tracing::warn!(reason = e.code(), error = %e, "peer refused");
            peer_auth_status(&e)
        })?;
        tracing::Span::current().record("peer", tls_node.as_str());
        let envelope = request.into_inner().envelope.ok_or_else(|| {
            refusal_status(&Refusal::Malformed("the request holds no envelope".into()))
        })?;
        let state = &self.state;
        let now = UnixMillis::now();
        let keys = state.registry.get(&tls_node).map(|p| &p.keyring);
        let verified = verify_envelope(envelope.into(), &tls_node, keys, &state.policy, now)
            .map_err(|r| {
                tracing::warn!(reason = r.code(), error = %r, "envelope refused");
                refusal_status(&r)
            })?;
        let header = verified.header();
        let receipt = issue_receipt(&verified, &state.node_id, now, &state.signing_key);
        let record = InboxRecord {
            envelope: Some(verified.sealed().clone().into()),
            sender: header.sender.to_string(),
            message_id: header.message_id.to_string(),
            received_at_ms: now.0,
            receipt: Some(receipt.into()),
            acknowledged: false,
            envelope_digest: verified.digest().0.to_vec(),
        };
        let outcome = state
            .store
            .receive(&record)
            .await
            .map_err(|e| store_status(&e))?;
        let receipt = match outcome {
            ReceiveOutcome::Stored(sequence) => {
                tracing::info!(message_id = %header.message_id, kind = header.kind.as_str_name(), sequence, "envelope received");
                record.receipt
            }
            ReceiveOutcome::Duplicate(original) => {
                tracing::info!(message_id = %header.message_id, "re-delivery answered with the original receipt");
                original.receipt
            }
            ReceiveOutcome::Replay => {
                let refusal = Refusal::Replay {
                    sender: header.sender.clone(),
                    message_id: header.message_id,
                };
                tracing::warn!(reason = refusal.code(), error = %refusal, "envelope refused");
                return Err(refusal_status(&refusal));
            }
        };
        Ok(Response::new(pb::DeliverResponse { receipt }))
    }
}
