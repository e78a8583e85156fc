//! The referral workflow on the local service: the node a referral was sent to moves it along
//! (and tells the sender with a signed status update; to an enforcement-tagged sender, the
//! state only); either end reads where it stands.

use kinbridge_core::envelope::EnvelopeDraft;
use kinbridge_core::workflow::check_change;
use kinbridge_core::{MessageId, NodeId, UnixMillis};
use kinbridge_proto::v1 as pb;
use prost::Message;
use tonic::{Code, Request, Response, Status};

use super::{CASE_ROLES, LocalApi, invalid};
use crate::peer_service::status_reason;
use crate::status::{refused, store_status};

impl LocalApi {
    pub(super) async fn update_status_inner(
        &self,
        request: Request<pb::UpdateReferralStatusRequest>,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        let client = self
            .authorized(&request, "update referral status", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let req = request.into_inner();
        let state = &self.state;
        let item = state
            .store
            .inbox_get(req.sequence)
            .map_err(|e| store_status(&e))?;
        if let Some(item) = &item {
            self.in_unit(&client, &item.unit, &format!("inbox item {}", req.sequence))
                .await?;
        }
        let header = item
            .as_ref()
            .and_then(|i| i.envelope.as_ref())
            .and_then(|e| pb::EnvelopeHeader::decode(e.header.as_slice()).ok())
            .filter(|h| super::carries_case_data(h.kind));
        let Some(header) = header else {
            let status = refused(
                Code::NotFound,
                "unknown-referral",
                format!("inbox item {} is not a referral", req.sequence),
            );
            return Err(self.refuse(&client.name, status).await);
        };
        let to = pb::ReferralState::try_from(req.state).unwrap_or(pb::ReferralState::Unspecified);
        let history = state
            .store
            .workflow(&header.sender, &header.message_id)
            .map_err(|e| store_status(&e))?;
        let current = history
            .iter()
            .max_by_key(|c| c.at_ms)
            .and_then(|c| pb::ReferralState::try_from(c.state).ok())
            .unwrap_or(pb::ReferralState::Received);
        if let Err(e) = check_change(current, to, &req.code) {
            let status = refused(Code::FailedPrecondition, e.code(), e.to_string());
            return Err(self.refuse(&client.name, status).await);
        }
        let now = UnixMillis::now();
        let change = pb::StatusChange {
            state: to as i32,
            code: req.code.clone(),
            at_ms: now.0,
            by: state.node_id.to_string(),
        };
        let sender =
            NodeId::new(&header.sender).map_err(|e| invalid("bad-sender", e.to_string()))?;
        // To an enforcement-tagged sender the update carries the state only: never the reason
        // a referral was declined nor how the case ended.
        let code_allowed = state
            .registry
            .get(&sender)
            .is_some_and(|peer| kinbridge_core::firewall::status_code_allowed(&peer.tags));
        let payload = pb::StatusUpdate {
            referral_id: header.message_id.clone(),
            state: to as i32,
            code: if code_allowed {
                req.code.clone()
            } else {
                String::new()
            },
            at_ms: now.0,
        }
        .encode_to_vec();
        let draft = EnvelopeDraft {
            consent_id: header.consent_id.clone(),
            correlation_id: header.message_id.clone(),
            ..EnvelopeDraft::new(
                pb::MessageKind::StatusUpdate,
                state.node_id.clone(),
                sender.clone(),
                pb::Purpose::try_from(header.purpose).unwrap_or(pb::Purpose::ServiceReferral),
            )
        };
        let (message_id, record) = self.seal_with(draft, payload, 0, |d, _| {
            kinbridge_core::consent::permit_without_personal_data(d)
        })?;
        let mut entry = state.auditor.entry(pb::AuditEvent::ReferralStatus);
        entry.message_id = header.message_id.clone();
        entry.consent_id = header.consent_id.clone();
        entry.peer = header.sender.clone();
        entry.actor = client.name.clone();
        entry.reason = status_reason(&change);
        state.auditor.record(&entry).await?;
        state
            .store
            .record_workflow(&header.sender, &header.message_id, change)
            .await
            .map_err(|e| store_status(&e))?;
        self.queue(&client, message_id, record).await
    }

    pub(super) async fn get_status_inner(
        &self,
        request: Request<pb::GetReferralStatusRequest>,
    ) -> Result<Response<pb::GetReferralStatusResponse>, Status> {
        let client = self
            .authorized(&request, "read referral status", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let referral_id = MessageId::new(&request.into_inner().referral_id)
            .map_err(|e| invalid("bad-message-id", e.to_string()))?
            .to_string();
        let state = &self.state;
        let me = state.node_id.to_string();
        // Sent from here: received once the recipient's receipt is held.
        let (sender, mut history) = if let Some(record) = state
            .store
            .outbox_get(&referral_id)
            .map_err(|e| store_status(&e))?
        {
            self.in_unit(&client, &record.unit, &format!("referral {referral_id}"))
                .await?;
            let mut base = Vec::new();
            if record.state == pb::DeliveryState::Delivered as i32 {
                base.push(pb::StatusChange {
                    state: pb::ReferralState::Received as i32,
                    code: String::new(),
                    at_ms: record.delivered_at_ms,
                    by: record.recipient.clone(),
                });
            }
            (me.clone(), base)
        } else if let Some((_, item)) = state
            .store
            .inbox_find(&referral_id)
            .map_err(|e| store_status(&e))?
        {
            self.in_unit(&client, &item.unit, &format!("referral {referral_id}"))
                .await?;
            let base = vec![pb::StatusChange {
                state: pb::ReferralState::Received as i32,
                code: String::new(),
                at_ms: item.received_at_ms,
                by: me.clone(),
            }];
            (item.sender, base)
        } else {
            let status = refused(
                Code::NotFound,
                "unknown-referral",
                format!("no referral {referral_id} was sent or received here"),
            );
            return Err(self.refuse(&client.name, status).await);
        };
        history.extend(
            state
                .store
                .workflow(&sender, &referral_id)
                .map_err(|e| store_status(&e))?,
        );
        // Updates may arrive out of order; the time each change was made orders them.
        history.sort_by_key(|c| c.at_ms);
        let current = history
            .last()
            .map_or(pb::ReferralState::Unspecified as i32, |c| c.state);
        Ok(Response::new(pb::GetReferralStatusResponse {
            referral_id,
            state: current,
            history,
        }))
    }
}
