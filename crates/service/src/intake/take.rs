//! Taking in one verified envelope: the checks a delivery runs again at this end and the
//! effects a withdrawal, status update, key update or tracing message has, in that order,
//! before the envelope is made durable with its group.

use kinbridge_core::consent::{self, TransferContext};
use kinbridge_core::verify::VerifiedPayload;
use kinbridge_core::{KeyChange, Refusal, UnixMillis, VerifiedEnvelope, issue_receipt};
use kinbridge_proto::v1 as pb;
use kinbridge_store::InboxRecord;

use super::{Intake, Step, Taken, receipt_digest, status_reason};
use crate::audit::with_header;
use crate::error::Declined;
use crate::error::ServiceError;
use crate::family_tracing;

impl Intake {
    /// Everything a delivery of a verified envelope checks and does before the envelope is
    /// made durable: a re-delivery gets its original receipt, a replay is refused, the consent
    /// checks run again, and a withdrawal, status update or key update takes effect.
    pub(super) async fn take(
        &self,
        verified: VerifiedEnvelope,
        now: UnixMillis,
    ) -> Result<Step, ServiceError> {
        let state = &self.node;
        let header = verified.header();
        let (sender, message_id) = (header.sender.to_string(), header.message_id.to_string());

        // Already here? A re-delivery gets the original receipt; another envelope is a replay.
        if let Some(original) = state.store.inbox_lookup(&sender, &message_id)? {
            return self.answer_known(&verified, original).await;
        }

        // The consent checks again at this end, the firewall, and this node's own policy. A
        // refusal is answered with a signed negative receipt; nothing of the payload is kept.
        if let Some(declined) = self.intake_refusal(&verified, now) {
            return self.refuse_signed(&verified, declined).await;
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
        let acted = match verified.payload() {
            VerifiedPayload::Withdrawal(withdrawal) => self
                .take_withdrawal(&verified, &withdrawal.consent_id)
                .await
                .map(|()| Ok(None))?,
            VerifiedPayload::Status(update) => self.take_status(&verified, update).await?.map(Some),
            VerifiedPayload::Key(change) => self.take_key(&verified, change).await?.map(|()| None),
            VerifiedPayload::Referral(_)
            | VerifiedPayload::TracingQuery(_)
            | VerifiedPayload::TracingNotice(_)
            | VerifiedPayload::TracingConfirmation(_)
            | VerifiedPayload::TracingDisclosure(_) => Ok(None),
        };
        match acted {
            Ok(Some(referral_unit)) => unit = referral_unit,
            Ok(None) => {}
            Err(declined) => return self.refuse_signed(&verified, declined).await,
        }
        // A tracing message: answered, noted or refused by the tracing state.
        match self.take_tracing(&verified).await? {
            Some(Ok(tracing_unit)) => unit = tracing_unit,
            Some(Err(declined)) => return self.refuse_signed(&verified, declined).await,
            None => {}
        }
        Ok(Step::Taken(Box::new(self.taken(verified, now, unit))))
    }

    /// An audit entry of `event` about `verified`: its header's fields and its digest.
    pub(super) fn entry_about(
        &self,
        verified: &VerifiedEnvelope,
        event: pb::AuditEvent,
    ) -> pb::AuditEntry {
        with_header(
            self.node.auditor.entry(event),
            &verified.sealed().header,
            &verified.digest().0,
        )
    }

    /// The answer to an envelope whose (sender, message id) is in the inbox already: a
    /// re-delivery of the same envelope gets the original receipt, another is a replay.
    async fn answer_known(
        &self,
        verified: &VerifiedEnvelope,
        original: InboxRecord,
    ) -> Result<Step, ServiceError> {
        let state = &self.node;
        let header = verified.header();
        let sender = header.sender.to_string();
        if original.envelope_digest == verified.digest().0 {
            let mut entry = self.entry_about(verified, pb::AuditEvent::Redelivered);
            entry.peer = sender.clone();
            entry.receipt_digest = receipt_digest(original.receipt.as_ref());
            state.auditor.record(&entry).await?;
            tracing::info!(message_id = %header.message_id, "re-delivery answered with the original receipt");
            state
                .metrics
                .received(header.kind as i32, "duplicate", &sender);
            Ok(Step::Answered(
                self.with_checkpoint(original.receipt.unwrap_or_default()),
            ))
        } else {
            let refusal = Refusal::Replay {
                sender: header.sender.clone(),
                message_id: header.message_id,
            };
            Err(self
                .refuse(
                    &sender,
                    Some(verified.sealed()),
                    ServiceError::from(&refusal),
                )
                .await)
        }
    }

    /// Why this node will not take `verified`, if it will not: a tracing message sent for
    /// another purpose, a consent scope that does not cover it here, or a referral to a unit
    /// this node does not have. Checks only; nothing is logged or stored.
    fn intake_refusal(&self, verified: &VerifiedEnvelope, now: UnixMillis) -> Option<Declined> {
        let state = &self.node;
        let header = verified.header();
        let ctx = TransferContext {
            recipient_tags: &state.tags,
            accepted_purposes: state.accepted_purposes.as_deref(),
            now,
        };
        // A withdrawal holds no personal data: no consent scope covers it.
        let tracing_purpose = match verified.payload() {
            VerifiedPayload::TracingQuery(_)
            | VerifiedPayload::TracingNotice(_)
            | VerifiedPayload::TracingConfirmation(_)
            | VerifiedPayload::TracingDisclosure(_) => header.purpose == pb::Purpose::FamilyTracing,
            _ => true,
        };
        if !tracing_purpose {
            let detail = "family tracing messages are sent for PURPOSE_FAMILY_TRACING only";
            return Some(Declined::new("purpose-not-tracing", detail.to_owned()));
        }
        let checked = match verified.payload() {
            VerifiedPayload::Referral(_)
            | VerifiedPayload::TracingQuery(_)
            | VerifiedPayload::TracingDisclosure(_) => consent::check_parts(
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
            | VerifiedPayload::Key(_)
            | VerifiedPayload::TracingNotice(_)
            | VerifiedPayload::TracingConfirmation(_) => Ok(()),
        };
        if let Err(violation) = checked {
            return Some(Declined::new(violation.code(), violation.to_string()));
        }

        // A referral to a unit this node does not have would be receipted and then seen by no
        // caseworker: it is refused with a signed receipt naming the unit and the known ones.
        if let (VerifiedPayload::Referral(_), Some(addressed)) =
            (verified.payload(), header.recipient_unit.as_ref())
            && !state.units.is_empty()
            && *addressed != state.intake_unit
            && !state.units.contains(addressed)
        {
            let known: Vec<String> = std::iter::once(&state.intake_unit)
                .chain(&state.units)
                .map(ToString::to_string)
                .collect();
            let detail = format!(
                "{} has no unit '{addressed}'; its units are: {}; send it again to one of them, or to no unit for its intake ({})",
                state.node_id,
                known.join(", "),
                state.intake_unit
            );
            return Some(Declined::new("unknown-unit", detail));
        }
        None
    }

    /// A consent withdrawal: deletes what its sender originated under that consent before
    /// the receipt says so. Only the originator's own data is touched.
    async fn take_withdrawal(
        &self,
        verified: &VerifiedEnvelope,
        consent_id: &str,
    ) -> Result<(), ServiceError> {
        let state = &self.node;
        let header = verified.header();
        let sender = header.sender.to_string();
        let purged =
            crate::purge::purge_consent(state, consent_id, &sender, "consent-withdrawn").await?;
        family_tracing::forget_consent(state, consent_id, &sender).await?;
        tracing::info!(message_id = %header.message_id, purged, "consent withdrawn by its originator; payloads deleted");
        Ok(())
    }

    /// A status update about a referral this node sent to the update's sender: logged, then
    /// recorded in the referral's workflow. Answers the unit the referral came from, or the
    /// refusal of an update about a referral this node did not send to that sender.
    async fn take_status(
        &self,
        verified: &VerifiedEnvelope,
        update: &pb::StatusUpdate,
    ) -> Result<Result<String, Declined>, ServiceError> {
        let state = &self.node;
        let header = verified.header();
        let sender = header.sender.to_string();
        let ours = state
            .store
            .outbox_get(&update.referral_id)?
            .filter(|r| r.recipient == sender);
        let Some(ours) = ours else {
            let detail = format!(
                "this node sent no referral {} to {sender}",
                update.referral_id
            );
            return Ok(Err(Declined::new("unknown-referral", detail)));
        };
        let change = pb::StatusChange {
            state: update.state,
            code: update.code.clone(),
            at_ms: update.at_ms,
            by: sender.clone(),
        };
        let mut entry = state.auditor.entry(pb::AuditEvent::ReferralStatus);
        entry.message_id = update.referral_id.clone();
        entry.consent_id = header.consent_id.clone();
        entry.peer = sender;
        entry.reason = status_reason(&change);
        state.auditor.record(&entry).await?;
        let me = state.node_id.to_string();
        state
            .store
            .record_workflow(&me, &update.referral_id, change)
            .await?;
        Ok(Ok(ours.unit))
    }

    /// The sender publishes a new key of its own, or revokes one: checked, logged, then
    /// applied to the key book. Answers the refusal of a change the key book will not take.
    async fn take_key(
        &self,
        verified: &VerifiedEnvelope,
        change: &KeyChange,
    ) -> Result<Result<(), Declined>, ServiceError> {
        let state = &self.node;
        let header = verified.header();
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
            return Ok(Err(Declined::new("key-update-refused", e.to_string())));
        }
        let mut entry = self.entry_about(verified, event);
        entry.peer = owner.to_string();
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
        applied?;
        tracing::info!(message_id = %header.message_id, peer = %owner, "peer's signing key update applied");
        Ok(Ok(()))
    }

    /// A tracing message, handed to the tracing state: the unit it belongs to here, or its
    /// refusal. `None` for any other kind of message.
    async fn take_tracing(
        &self,
        verified: &VerifiedEnvelope,
    ) -> Result<Option<Result<String, Declined>>, ServiceError> {
        let state = &self.node;
        let header = verified.header();
        let peer = &header.sender;
        let taken = match verified.payload() {
            VerifiedPayload::TracingQuery(query) => {
                family_tracing::take_query(state, peer, header, query).await?
            }
            VerifiedPayload::TracingNotice(notice) => {
                family_tracing::take_notice(state, peer, notice).await?
            }
            VerifiedPayload::TracingConfirmation(confirmation) => {
                family_tracing::take_confirmation(state, peer, confirmation).await?
            }
            VerifiedPayload::TracingDisclosure(disclosure) => {
                let message_id = header.message_id.to_string();
                family_tracing::take_disclosure(state, peer, &message_id, disclosure).await?
            }
            VerifiedPayload::Referral(_)
            | VerifiedPayload::Withdrawal(_)
            | VerifiedPayload::Status(_)
            | VerifiedPayload::Key(_) => return Ok(None),
        };
        Ok(Some(taken))
    }

    /// `verified` receipted and ready to be made durable in `unit`: its signed receipt, its
    /// `received` entry and its inbox record.
    fn taken(&self, verified: VerifiedEnvelope, now: UnixMillis, unit: String) -> Taken {
        let state = &self.node;
        let header = verified.header();
        let (sender, message_id) = (header.sender.to_string(), header.message_id.to_string());
        let digest = verified.digest();
        let receipt = issue_receipt(&verified, &state.node_id, now, &state.keys.signer());
        let mut entry = self.entry_about(&verified, pb::AuditEvent::Received);
        entry.peer = sender.clone();
        entry.receipt_digest = receipt.digest().0.to_vec();
        let kind = header.kind as i32;
        let replay = Refusal::Replay {
            sender: header.sender.clone(),
            message_id: header.message_id,
        };
        let record = InboxRecord {
            envelope: Some(verified.into_sealed().into()),
            sender,
            message_id,
            received_at_ms: now.0,
            receipt: Some(receipt.into()),
            acknowledged: false,
            envelope_digest: digest.0.to_vec(),
            purged_at_ms: 0,
            unit,
        };
        Taken {
            entry,
            record,
            kind,
            replay,
        }
    }
}
