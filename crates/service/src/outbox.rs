//! The outbox's front door: sealing a message this node sends (checked against the registry,
//! its consent scope and the firewall, signed with the node's key) and queueing it for the
//! delivery worker, logged as submitted. Every message the node sends passes here: a
//! referral, a forward, a withdrawal notice, a status update, a key update, a tracing query,
//! notice, confirmation or disclosure.

use std::time::Duration;

use kinbridge_core::envelope::EnvelopeDraft;
use kinbridge_core::limits::{MAX_MESSAGE_LIFETIME_MS, MAX_PAYLOAD_BYTES};
use kinbridge_core::{TransferContext, UnixMillis, seal_envelope};
use kinbridge_proto::v1 as pb;
use kinbridge_store::{OutboxRecord, SubmissionKey};

use crate::error::{ErrorKind, ServiceError};
use crate::node::Node;

/// How long a submitter is told to wait when the outbox is full.
pub const OUTBOX_FULL_RETRY: Duration = Duration::from_secs(1);

/// Checks `draft` against the registry and `permit` (the consent check and the firewall, or
/// the permit of a message that carries no personal data), and seals it with `payload`. The
/// message lives `ttl_seconds` (0: the node's default), never past its consent's expiry.
/// Returns the message id and the outbox record to queue.
pub fn seal(
    state: &Node,
    mut draft: EnvelopeDraft,
    payload: Vec<u8>,
    ttl_seconds: u32,
    permit: impl FnOnce(
        EnvelopeDraft,
        &TransferContext<'_>,
    )
        -> Result<kinbridge_core::PermittedTransfer, kinbridge_core::ConsentViolation>,
) -> Result<(String, OutboxRecord), ServiceError> {
    let recipient = draft.recipient.clone();
    let peer = state.registry.get(&recipient).ok_or_else(|| {
        ServiceError::refused(
            ErrorKind::FailedPrecondition,
            "unknown-recipient",
            format!("recipient '{recipient}' is not in this node's peer registry"),
        )
    })?;
    if peer.endpoint.is_none() {
        return Err(ServiceError::refused(
            ErrorKind::FailedPrecondition,
            "recipient-unreachable",
            format!(
                "peer '{recipient}' has no endpoint in this node's registry: messages cannot be delivered to it"
            ),
        ));
    }
    let ttl_ms = match ttl_seconds {
        0 => state.message_ttl_ms,
        s => i64::from(s) * 1000,
    };
    if ttl_ms > MAX_MESSAGE_LIFETIME_MS {
        return Err(ServiceError::invalid(
            "bad-ttl",
            format!("ttl_seconds is at most {}", MAX_MESSAGE_LIFETIME_MS / 1000),
        ));
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(ServiceError::invalid(
            "oversized",
            format!(
                "the referral is {} bytes encoded; the limit is {MAX_PAYLOAD_BYTES} bytes",
                payload.len()
            ),
        ));
    }
    let now = UnixMillis::now();
    let consent_expiry = draft.consent.as_ref().map_or(i64::MAX, |c| c.expires_at_ms);
    draft.created_at = now;
    draft.expires_at = UnixMillis(now.plus_ms(ttl_ms).0.min(consent_expiry));
    let ctx = TransferContext {
        recipient_tags: &peer.tags,
        accepted_purposes: None,
        now,
    };
    let permit = permit(draft, &ctx).map_err(|v| ServiceError::from(&v))?;
    let sealed = seal_envelope(&permit, payload, &state.keys.signer());
    let draft = permit.draft();
    let record = OutboxRecord {
        envelope: Some(sealed.into()),
        recipient: recipient.to_string(),
        state: pb::DeliveryState::Queued as i32,
        submitted_at_ms: now.0,
        next_attempt_at_ms: now.0,
        expires_at_ms: draft.expires_at.0,
        ..Default::default()
    };
    Ok((draft.message_id.to_string(), record))
}

/// Logs a sealed message as submitted by `actor` (a local client's name, or the node itself
/// answering a peer) on behalf of `unit`, puts it in the outbox (with `once`, the key it was
/// submitted under, in the same transaction) and wakes the delivery worker. A full outbox
/// refuses with RESOURCE_EXHAUSTED and a retry hint.
pub async fn queue(
    state: &Node,
    actor: &str,
    unit: &str,
    message_id: String,
    mut record: OutboxRecord,
    once: Option<&SubmissionKey>,
) -> Result<pb::SubmitReferralResponse, ServiceError> {
    record.unit = unit.to_owned();
    if state.store.queued() >= state.max_queued {
        return Err(ServiceError::refused(
            ErrorKind::ResourceExhausted,
            "outbox-full",
            format!(
                "{} messages are waiting for delivery, the most this node holds; retry later",
                state.max_queued
            ),
        )
        .retry_after(OUTBOX_FULL_RETRY));
    }
    // Before anything is logged: a full disk or a failed store refuses the submission.
    crate::room::ensure(state, "local", actor).await?;
    if let Some(e) = record.envelope.as_ref() {
        let digest = kinbridge_core::EnvelopeDigest::compute(&e.header, &e.signature);
        let mut entry = crate::audit::with_header(
            state.auditor.entry(pb::AuditEvent::Submitted),
            &e.header,
            &digest.0,
        );
        entry.actor = actor.to_owned();
        state.auditor.record(&entry).await?;
    }
    let recipient = record.recipient.clone();
    // Its reporting dimensions, made durable by the queue's own commit.
    let noted = state.reporting.note_sent(&record)?;
    if let Err(e) = state.store.enqueue_once(&message_id, record, once).await {
        if let Some(key) = noted {
            let _ = state.reporting.forget(&key);
        }
        return Err(e.into());
    }
    state.delivery_wake.notify_one();
    state.metrics.queued(&recipient);
    tracing::info!(%message_id, %recipient, "message queued");
    Ok(pb::SubmitReferralResponse {
        message_id,
        state: pb::DeliveryState::Queued as i32,
    })
}
