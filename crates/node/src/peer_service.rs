//! The peer service: other nodes deliver envelopes here and get a signed receipt back once
//! the envelope is verified, its receipt is in the audit log, and it is durably in the inbox.
//! Every refusal is answered with a clear status and recorded in the audit log.

use std::sync::Arc;

use kinbridge_core::KeyChange;
use kinbridge_core::consent::{self, TransferContext};
use kinbridge_core::verify::VerifiedPayload;
use kinbridge_core::{
    EnvelopeDigest, Refusal, SealedEnvelope, SignedReceipt, UnixMillis, issue_receipt,
    issue_refusal_receipt, verify_envelope,
};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::peer_service_server::PeerService;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::audit::with_header;
use crate::registry::PeerAuth;
use crate::server::NodeState;
use crate::status::{key_status, peer_auth_status, refusal_code, refusal_status, store_status};
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

    /// Records a refusal of what `peer` sent (if anything could be read of it) and returns
    /// the status to answer with. If even the refusal cannot be logged, the audit failure is
    /// answered instead, so the peer retries rather than take the refusal as final.
    async fn refuse(
        &self,
        peer: &str,
        envelope: Option<&SealedEnvelope>,
        status: Status,
    ) -> Status {
        let mut entry = self.state.auditor.entry(pb::AuditEvent::Refused);
        if let Some(e) = envelope {
            entry.envelope_digest = EnvelopeDigest::compute(&e.header, &e.signature).0.to_vec();
            // The header is not verified: keep only the message id it claims, bounded.
            if let Ok(h) = pb::EnvelopeHeader::decode(e.header.as_slice()) {
                entry.message_id = h.message_id.chars().take(64).collect();
            }
        }
        entry.peer = peer.to_owned();
        entry.reason = refusal_code(&status).unwrap_or("refused").to_owned();
        self.state.metrics.refused("peer", &entry.reason);
        tracing::warn!(peer, reason = %entry.reason, error = %status.message(), "peer request refused");
        match self.state.auditor.record(&entry).await {
            Ok(_) => status,
            Err(audit) => audit,
        }
    }

    /// Answers an authentic envelope this node will not take with a signed negative receipt,
    /// logging `entry` (a `refused` entry about it) with the reason and the receipt's digest.
    async fn refuse_signed(
        &self,
        verified: &kinbridge_core::VerifiedEnvelope,
        reason: &str,
        detail: &str,
        mut entry: pb::AuditEntry,
        sender: &str,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        let state = &self.state;
        let negative = issue_refusal_receipt(
            verified,
            &state.node_id,
            UnixMillis::now(),
            &state.keys.signer(),
            reason,
            detail,
        );
        entry.peer = sender.to_owned();
        entry.reason = reason.to_owned();
        entry.receipt_digest = negative.digest().0.to_vec();
        state.auditor.record(&entry).await?;
        state.metrics.refused("peer", reason);
        state.metrics.received(entry.kind, "refused", sender);
        tracing::warn!(message_id = %entry.message_id, reason, error = %detail, "envelope refused; negative receipt returned");
        Ok(Response::new(pb::DeliverResponse {
            receipt: self.receipt_with_checkpoint(Some(negative.into())),
        }))
    }

    /// The original receipt with this node's latest checkpoint attached.
    fn receipt_with_checkpoint(&self, receipt: Option<pb::Receipt>) -> Option<pb::Receipt> {
        receipt.map(|mut r| {
            r.checkpoint = self.state.auditor.latest_note();
            r
        })
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
        let tls_node = match auth {
            Ok(node) => node,
            Err(e) => {
                let claimed = match &e {
                    crate::registry::PeerAuthError::UnknownPeer(n)
                    | crate::registry::PeerAuthError::WrongCa { node: n, .. } => n.to_string(),
                    crate::registry::PeerAuthError::NotANode(_) => {
                        "(not a node certificate)".to_owned()
                    }
                };
                return Err(self.refuse(&claimed, None, peer_auth_status(&e)).await);
            }
        };
        tracing::Span::current().record("peer", tls_node.as_str());
        // Overload is not a refusal of content: answered with a retry hint, not audited, so a
        // flood cannot grow the log.
        if let Err(wait) = self.state.peer_limiter.check(tls_node.as_str()) {
            tracing::warn!(peer = %tls_node, retry_after_ms = wait.as_millis() as u64, "peer over its rate limit");
            self.state.metrics.refused("peer", "rate-limited");
            return Err(crate::ratelimit::overloaded(tls_node.as_str(), wait));
        }
        let Some(envelope) = request.into_inner().envelope else {
            let status =
                refusal_status(&Refusal::Malformed("the request holds no envelope".into()));
            return Err(self.refuse(tls_node.as_str(), None, status).await);
        };
        let sealed = SealedEnvelope::from(envelope);
        let state = &self.state;
        let now = UnixMillis::now();
        let keys = state.keys.peer_keyring(&tls_node);
        let verified = match verify_envelope(
            sealed.clone(),
            &tls_node,
            keys.as_deref(),
            &state.policy,
            now,
        ) {
            Ok(v) => v,
            Err(r) => {
                return Err(self
                    .refuse(tls_node.as_str(), Some(&sealed), refusal_status(&r))
                    .await);
            }
        };
        let header = verified.header();
        let (sender, message_id) = (header.sender.to_string(), header.message_id.to_string());
        let digest = verified.digest();
        let logged = |event| {
            with_header(
                state.auditor.entry(event),
                &verified.sealed().header,
                &digest.0,
            )
        };

        // Already here? A re-delivery gets the original receipt; another envelope is a replay.
        if let Some(original) = state
            .store
            .inbox_lookup(&sender, &message_id)
            .map_err(|e| store_status(&e))?
        {
            return if original.envelope_digest == digest.0 {
                let mut entry = logged(pb::AuditEvent::Redelivered);
                entry.peer = sender.clone();
                entry.receipt_digest = receipt_digest(original.receipt.as_ref());
                state.auditor.record(&entry).await?;
                tracing::info!(%message_id, "re-delivery answered with the original receipt");
                state
                    .metrics
                    .received(header.kind as i32, "duplicate", &sender);
                Ok(Response::new(pb::DeliverResponse {
                    receipt: self.receipt_with_checkpoint(original.receipt),
                }))
            } else {
                let refusal = Refusal::Replay {
                    sender: header.sender.clone(),
                    message_id: header.message_id,
                };
                Err(self
                    .refuse(
                        tls_node.as_str(),
                        Some(verified.sealed()),
                        refusal_status(&refusal),
                    )
                    .await)
            };
        }

        // The consent checks again at this end, the firewall, and this node's own policy. A
        // refusal is answered with a signed negative receipt; nothing of the payload is kept.
        let ctx = TransferContext {
            recipient_tags: &state.tags,
            accepted_purposes: state.accepted_purposes.as_deref(),
            now,
        };
        // A withdrawal holds no personal data: no consent scope covers it.
        let checked = match verified.payload() {
            VerifiedPayload::Referral(_) => consent::check_parts(
                header.consent.as_ref(),
                &header.consent_id,
                header.purpose,
                &header.sender,
                &header.recipient,
                &header.data_categories,
                &header.custody,
                &ctx,
            ),
            VerifiedPayload::Withdrawal(_)
            | VerifiedPayload::Status(_)
            | VerifiedPayload::Key(_) => Ok(()),
        };
        if let Err(violation) = checked {
            let detail = violation.to_string();
            return self
                .refuse_signed(
                    &verified,
                    violation.code(),
                    &detail,
                    logged(pb::AuditEvent::Refused),
                    &sender,
                )
                .await;
        }

        // The unit the item belongs to here: a referral's addressee (or the intake), a status
        // update's referral's sender; a withdrawal notice is every unit's.
        let mut unit = match verified.payload() {
            VerifiedPayload::Referral(_) => header
                .recipient_unit
                .as_ref()
                .unwrap_or(&state.intake_unit)
                .to_string(),
            _ => String::new(),
        };
        match verified.payload() {
            // A consent withdrawal: delete what its sender originated under that consent
            // before the receipt says so. Only the originator's own data is touched.
            VerifiedPayload::Withdrawal(withdrawal) => {
                let purged = crate::purge::purge_consent(
                    state,
                    &withdrawal.consent_id,
                    &sender,
                    "consent-withdrawn",
                )
                .await?;
                tracing::info!(%message_id, purged, "consent withdrawn by its originator; payloads deleted");
            }
            // A status update about a referral this node sent to the update's sender.
            VerifiedPayload::Status(update) => {
                let ours = state
                    .store
                    .outbox_get(&update.referral_id)
                    .map_err(|e| store_status(&e))?
                    .filter(|r| r.recipient == sender);
                let Some(ours) = ours else {
                    let detail = format!(
                        "this node sent no referral {} to {sender}",
                        update.referral_id
                    );
                    return self
                        .refuse_signed(
                            &verified,
                            "unknown-referral",
                            &detail,
                            logged(pb::AuditEvent::Refused),
                            &sender,
                        )
                        .await;
                };
                unit = ours.unit;
                let change = pb::StatusChange {
                    state: update.state,
                    code: update.code.clone(),
                    at_ms: update.at_ms,
                    by: sender.clone(),
                };
                let mut entry = state.auditor.entry(pb::AuditEvent::ReferralStatus);
                entry.message_id = update.referral_id.clone();
                entry.consent_id = header.consent_id.clone();
                entry.peer = sender.clone();
                entry.reason = status_reason(&change);
                state.auditor.record(&entry).await?;
                let me = state.node_id.to_string();
                state
                    .store
                    .record_workflow(&me, &update.referral_id, change)
                    .await
                    .map_err(|e| store_status(&e))?;
            }
            // The sender publishes a new key of its own, or revokes one.
            VerifiedPayload::Key(change) => {
                let edit = state.keys.edit().await;
                let owner = header.sender.clone();
                let (event, reason, checked) = match change {
                    KeyChange::Announce(key) => (
                        pb::AuditEvent::KeyAdded,
                        key.id.to_string(),
                        edit.check_peer_key(&owner, key).map(|_| ()),
                    ),
                    KeyChange::Revoke { key_id, reason, .. } => (
                        pb::AuditEvent::KeyRevoked,
                        format!("{key_id}:{reason}"),
                        edit.check_peer_revocation(&owner, key_id),
                    ),
                };
                if let Err(e) = checked {
                    drop(edit);
                    return self
                        .refuse_signed(
                            &verified,
                            "key-update-refused",
                            &e.to_string(),
                            logged(pb::AuditEvent::Refused),
                            &sender,
                        )
                        .await;
                }
                let mut entry = logged(event);
                entry.peer = sender.clone();
                entry.reason = reason;
                state.auditor.record(&entry).await?;
                let applied = match change {
                    KeyChange::Announce(key) => {
                        edit.add_peer_key(&state.store, &owner, (**key).clone())
                            .await
                    }
                    KeyChange::Revoke {
                        key_id, at, reason, ..
                    } => edit
                        .revoke_peer_key(&state.store, &owner, key_id, *at, reason)
                        .await
                        .map(|_| ()),
                };
                applied.map_err(|e| key_status(&e))?;
                tracing::info!(%message_id, peer = %owner, "peer's signing key update applied");
            }
            VerifiedPayload::Referral(_) => {}
        }

        let receipt = issue_receipt(&verified, &state.node_id, now, &state.keys.signer());
        // The audit entry is durable before the inbox write, so no receipted message can be
        // missing from the log; a crash in between leaves only an entry whose receipt the
        // sender never got, and its retry is logged again.
        let mut entry = logged(pb::AuditEvent::Received);
        entry.peer = sender.clone();
        entry.receipt_digest = receipt.digest().0.to_vec();
        state.auditor.record(&entry).await?;
        let record = InboxRecord {
            envelope: Some(verified.sealed().clone().into()),
            sender: sender.clone(),
            message_id: message_id.clone(),
            received_at_ms: now.0,
            receipt: Some(receipt.into()),
            acknowledged: false,
            envelope_digest: digest.0.to_vec(),
            purged_at_ms: 0,
            unit,
        };
        let receipt = match state
            .store
            .receive(&record)
            .await
            .map_err(|e| store_status(&e))?
        {
            ReceiveOutcome::Stored(sequence) => {
                tracing::info!(%message_id, kind = header.kind.as_str_name(), sequence, "envelope received");
                state
                    .metrics
                    .received(header.kind as i32, "accepted", &sender);
                record.receipt
            }
            ReceiveOutcome::Duplicate(original) => {
                state
                    .metrics
                    .received(header.kind as i32, "duplicate", &sender);
                original.receipt
            }
            ReceiveOutcome::Replay => {
                let refusal = Refusal::Replay {
                    sender: header.sender.clone(),
                    message_id: header.message_id,
                };
                return Err(self
                    .refuse(
                        tls_node.as_str(),
                        Some(verified.sealed()),
                        refusal_status(&refusal),
                    )
                    .await);
            }
        };
        Ok(Response::new(pb::DeliverResponse {
            receipt: self.receipt_with_checkpoint(receipt),
        }))
    }
}

fn receipt_digest(receipt: Option<&pb::Receipt>) -> Vec<u8> {
    receipt
        .map(|r| {
            SignedReceipt {
                body: r.body.clone(),
                signature: r.signature.clone(),
            }
            .digest()
            .0
            .to_vec()
        })
        .unwrap_or_default()
}

/// How a workflow change is written in the audit log: the state, and its code if any.
pub fn status_reason(change: &pb::StatusChange) -> String {
    let state = pb::ReferralState::try_from(change.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("REFERRAL_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into());
    if change.code.is_empty() {
        state
    } else {
        format!("{state}:{}", change.code)
    }
}
