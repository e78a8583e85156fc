//! The referral workflow on the local service: the node a referral was sent to moves it along
//! (and tells the sender with a signed status update; to an enforcement-tagged sender, the
//! state only); either end reads where it stands.

use kinbridge_core::envelope::EnvelopeDraft;
use kinbridge_core::workflow::check_change;
use kinbridge_core::{MessageId, NodeId, UnixMillis};
use kinbridge_proto::v1 as pb;
use prost::Message;

use super::{CASE_ROLES, LocalAuth, LocalCases, invalid};
use crate::error::{ErrorKind, ServiceError};
use crate::intake::status_reason;
use crate::outbox;

impl LocalCases {
    /// Moves a received referral along its workflow (checked against the states it may move
    /// to), logs the change, and tells the sender with a signed status update.
    pub async fn update_referral_status(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::UpdateReferralStatusRequest,
    ) -> Result<pb::SubmitReferralResponse, ServiceError> {
        let client = self
            .authorized(auth, "update referral status", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let state = &self.node;
        let item = state.store.inbox_get(req.sequence)?;
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
            let status = ServiceError::refused(
                ErrorKind::NotFound,
                "unknown-referral",
                format!("inbox item {} is not a referral", req.sequence),
            );
            return Err(self.refuse(&client.name, status).await);
        };
        let to = pb::ReferralState::try_from(req.state).unwrap_or(pb::ReferralState::Unspecified);
        let history = state.store.workflow(&header.sender, &header.message_id)?;
        let current = history
            .iter()
            .max_by_key(|c| c.at_ms)
            .and_then(|c| pb::ReferralState::try_from(c.state).ok())
            .unwrap_or(pb::ReferralState::Received);
        if let Err(e) = check_change(current, to, &req.code) {
            let status =
                ServiceError::refused(ErrorKind::FailedPrecondition, e.code(), e.to_string());
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
        let (message_id, record) = outbox::seal(&self.node, draft, payload, 0, |d, _| {
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
            .await?;
        self.queue(&client, message_id, record, None).await
    }

    /// Where a referral stands: its workflow as this node knows it.
    pub async fn get_referral_status(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::GetReferralStatusRequest,
    ) -> Result<pb::GetReferralStatusResponse, ServiceError> {
        let client = self
            .authorized(auth, "read referral status", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let referral_id = MessageId::new(&req.referral_id)
            .map_err(|e| invalid("bad-message-id", e.to_string()))?
            .to_string();
        let state = &self.node;
        let me = state.node_id.to_string();
        // Sent from here: received once the recipient's receipt is held.
        let (sender, mut history) = if let Some(record) = state.store.outbox_get(&referral_id)? {
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
        } else if let Some((_, item)) = state.store.inbox_find(&referral_id)? {
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
            let status = ServiceError::refused(
                ErrorKind::NotFound,
                "unknown-referral",
                format!("no referral {referral_id} was sent or received here"),
            );
            return Err(self.refuse(&client.name, status).await);
        };
        history.extend(state.store.workflow(&sender, &referral_id)?);
        // Updates may arrive out of order; the time each change was made orders them.
        history.sort_by_key(|c| c.at_ms);
        let current = history
            .last()
            .map_or(pb::ReferralState::Unspecified as i32, |c| c.state);
        Ok(pb::GetReferralStatusResponse {
            referral_id,
            state: current,
            history,
        })
    }
}
