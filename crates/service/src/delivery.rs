//! The delivery worker: sends queued outbox entries to their peers, retrying with exponential
//! backoff and jitter while a peer is unreachable, until a signed receipt arrives, the peer
//! refuses the message for good, or the message expires.
//!
//! Each recipient's queue is a lane: the head of the lane and the messages queued behind it
//! go together in one `DeliverBatch` call, in order, and their outcomes are logged and stored
//! together (one audit commit, one store commit), so a lane's throughput is not bounded by
//! one chain of durable writes per message.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinbridge_core::sync::lock;
use kinbridge_core::{MessageId, NodeId, UnixMillis, verify_receipt};
use kinbridge_proto::v1 as pb;
use kinbridge_store::OutboxRecord;
use prost::Message;
use tokio::sync::watch;

use crate::audit::{verify_peer_note, with_header};
use crate::error::ServiceError;
use crate::link::LinkError;
use crate::node::Node;
pub use crate::pacing::{BACKOFF_BASE, BACKOFF_MAX, BATCH, CALL_TIMEOUT, Tuning};

/// Recipients delivered to at once (one call each).
pub const MAX_IN_FLIGHT: usize = 64;
/// Most envelope bytes sent in one call: under the 1 MiB a peer decodes, with room for
/// framing. A single envelope always goes, whatever its size.
pub const BATCH_BYTES: usize = 768 * 1024;
/// How many recipients one scan looks at.
const SCAN_LIMIT: usize = 1024;

/// Delay before attempt `attempts + 1` with the default [`Tuning`].
pub fn backoff(attempts: u32) -> Duration {
    Tuning::default().backoff(attempts)
}

/// Sends the outbox to the peers until `shutdown` turns true.
///
/// Messages to one recipient go in the order they were queued, a batch at a time: the
/// recipient's inbox receives them in submission order, and a message waiting for its retry
/// holds back the ones queued after it for the same recipient. Different recipients proceed
/// independently.
pub async fn run(state: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    // Recipients with a delivery in flight.
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    loop {
        let now = UnixMillis::now();
        let mut next_due: Option<i64> = None;
        // Only the head of each recipient's queue is considered.
        match state.store.pending_heads(SCAN_LIMIT) {
            Ok(heads) => {
                for (_, head) in heads {
                    if head.next_attempt_at_ms > now.0 {
                        next_due =
                            Some(next_due.map_or(head.next_attempt_at_ms, |d| {
                                d.min(head.next_attempt_at_ms)
                            }));
                        continue;
                    }
                    let recipient = head.recipient;
                    {
                        let mut flying = lock(&in_flight);
                        if flying.len() >= MAX_IN_FLIGHT || !flying.insert(recipient.clone()) {
                            continue;
                        }
                    }
                    let state = Arc::clone(&state);
                    let in_flight = Arc::clone(&in_flight);
                    tokio::spawn(async move {
                        attempt(&state, &recipient).await;
                        lock(&in_flight).remove(&recipient);
                        state.delivery_wake.notify_one();
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the outbox"),
        }
        let sleep_ms = next_due.map_or(1000, |due| (due - now.0).clamp(1, 1000));
        tokio::select! {
            () = state.delivery_wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// An audit entry about the outbox message in `record`.
fn outbox_entry(state: &Node, event: pb::AuditEvent, record: &OutboxRecord) -> pb::AuditEntry {
    let empty = pb::Envelope::default();
    let envelope = record.envelope.as_ref().unwrap_or(&empty);
    let digest = kinbridge_core::EnvelopeDigest::compute(&envelope.header, &envelope.signature);
    let mut entry = with_header(state.auditor.entry(event), &envelope.header, &digest.0);
    entry.peer = record.recipient.clone();
    entry.attempts = record.attempts;
    entry
}

/// One queued message in a delivery attempt, and what became of it.
struct Item {
    id: String,
    record: OutboxRecord,
    /// The audit entry of its outcome, if it reached one; logged before the record is stored.
    entry: Option<pb::AuditEntry>,
}

impl Item {
    /// Leaves the message queued, to be tried again after a backoff.
    fn retry(&mut self, tuning: &Tuning, error: String) {
        retry(tuning, &self.id, &mut self.record, error);
    }

    /// Ends the message as refused for good, for `reason`.
    fn refuse(&mut self, state: &Node, reason: &str, error: String) {
        tracing::warn!(message_id = %self.id, reason, error = %error, "delivery refused for good");
        self.record.state = pb::DeliveryState::Refused as i32;
        self.record.last_error = error;
        let mut entry = outbox_entry(state, pb::AuditEvent::DeliveryFailed, &self.record);
        entry.reason = reason.to_owned();
        self.entry = Some(entry);
    }
}

/// One delivery attempt to `recipient`: the head of its queue and the due messages behind it,
/// in one call. Every outcome is logged in the audit log, then stored. The caller holds
/// `recipient` in the in-flight set, so the records read here are current: an attempt that
/// finished just before cannot be overwritten by a stale snapshot of the queue.
async fn attempt(state: &Node, recipient: &str) {
    let now = UnixMillis::now();
    let limit = if state.link.takes_batches(recipient) {
        state.delivery.batch.max(1)
    } else {
        1
    };
    let queued = match state.store.pending_for(recipient, limit) {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(%recipient, error = %e, "cannot read the outbox");
            return;
        }
    };
    let mut items: Vec<Item> = Vec::new();
    // Messages to send, as indexes into `items`, with their envelopes.
    let mut sending: Vec<(usize, pb::Envelope)> = Vec::new();
    let mut bytes = 0;
    let mut settled = Vec::new();
    for (id, record) in queued {
        if record.state != pb::DeliveryState::Queued as i32 {
            // Settled, yet still in the queue (never so in a store this release wrote): it
            // leaves the queue rather than hold the lane.
            settled.push((id, record));
            continue;
        }
        if record.next_attempt_at_ms > now.0 {
            break;
        }
        let mut item = Item {
            id,
            record,
            entry: None,
        };
        if now.0 >= item.record.expires_at_ms {
            item.record.state = pb::DeliveryState::Expired as i32;
            item.record.last_error = format!(
                "expired after {} attempts without a receipt",
                item.record.attempts
            );
            tracing::warn!(message_id = %item.id, attempts = item.record.attempts, "message expired undelivered");
            let mut entry = outbox_entry(state, pb::AuditEvent::DeliveryFailed, &item.record);
            entry.reason = "expired".into();
            item.entry = Some(entry);
            items.push(item);
            continue;
        }
        let stored = match item
            .record
            .envelope
            .clone()
            .map(|e| state.store.with_payload(e))
            .transpose()
        {
            Ok(envelope) => envelope.flatten(),
            Err(e) => {
                tracing::error!(message_id = %item.id, error = %e, "cannot read the payload; will retry");
                item.retry(&state.delivery, format!("cannot read the payload: {e}"));
                items.push(item);
                break;
            }
        };
        let Some(envelope) = stored else {
            let why =
                "its payload was purged before delivery (consent withdrawn or retention passed)";
            item.refuse(state, "payload-purged", why.into());
            items.push(item);
            continue;
        };
        let size = envelope.encoded_len();
        if !sending.is_empty() && bytes + size > BATCH_BYTES {
            break;
        }
        bytes += size;
        sending.push((items.len(), envelope));
        items.push(item);
    }
    if !settled.is_empty() {
        let settled: Vec<(&str, &OutboxRecord)> =
            settled.iter().map(|(id, r)| (id.as_str(), r)).collect();
        if let Err(e) = state.store.unqueue(&settled).await {
            tracing::error!(%recipient, error = %e, "cannot take settled messages out of the queue");
        }
    }
    if !sending.is_empty() {
        send(state, recipient, &mut items, sending).await;
    }
    conclude(state, recipient, items).await;
}

/// Sends `sending` (indexes into `items` and their envelopes) to `recipient` and records each
/// outcome in its item.
async fn send(
    state: &Node,
    recipient_name: &str,
    items: &mut [Item],
    sending: Vec<(usize, pb::Envelope)>,
) {
    let refuse_all = |items: &mut [Item], reason: &str, why: String| {
        for (at, _) in &sending {
            items[*at].refuse(state, reason, why.clone());
        }
    };
    let recipient = match NodeId::new(recipient_name) {
        Ok(node) => node,
        Err(e) => return refuse_all(items, "bad-recipient", e.to_string()),
    };
    let Some(peer) = state.registry.get(&recipient) else {
        let why = format!("peer '{recipient}' is no longer in the registry");
        return refuse_all(items, "unknown-recipient", why);
    };
    if let Err(e) = state.link.route(peer) {
        return refuse_all(items, "recipient-unreachable", e);
    }
    let keyring = state.keys.peer_keyring(&recipient).unwrap_or_default();

    // A message's first attempt is logged as the message being sent; if that cannot be
    // logged, nothing is sent now and the attempt is retried.
    let first: Vec<pb::AuditEntry> = sending
        .iter()
        .filter(|(at, _)| items[*at].record.attempts == 0)
        .map(|(at, _)| outbox_entry(state, pb::AuditEvent::Sent, &items[*at].record))
        .collect();
    if state.auditor.record_all(&first).await.is_err() {
        let (head, _) = sending[0];
        items[head].retry(
            &state.delivery,
            "the audit log could not record the send".into(),
        );
        return;
    }
    for (at, _) in &sending {
        items[*at].record.attempts += 1;
    }

    let digests: Vec<_> = sending
        .iter()
        .map(|(_, e)| kinbridge_core::EnvelopeDigest::compute(&e.header, &e.signature))
        .collect();
    let positions: Vec<usize> = sending.iter().map(|(at, _)| *at).collect();
    let envelopes: Vec<pb::Envelope> = sending.into_iter().map(|(_, e)| e).collect();
    let started = std::time::Instant::now();
    let results = match state.link.deliver(peer, envelopes).await {
        Ok(results) => results,
        Err(LinkError::NoRoute(e)) => {
            for at in &positions {
                items[*at].refuse(state, "recipient-unreachable", e.clone());
            }
            return;
        }
        Err(LinkError::Call(e)) => vec![Err(e)],
    };
    state.metrics.attempt(recipient.as_str(), started.elapsed());

    // One verification of each distinct checkpoint note the receipts carry.
    let mut witnessed: HashMap<String, String> = HashMap::new();
    let mut delivered = 0usize;
    for (n, (at, digest)) in positions.iter().zip(digests).enumerate() {
        let item = &mut items[*at];
        let Some(answer) = results.get(n) else {
            // Not looked at: an earlier message of the call failed. It stays queued behind
            // that one.
            break;
        };
        match answer {
            Ok(receipt) => {
                let seen = &mut witnessed;
                if take_receipt(state, &recipient, &keyring, item, receipt, digest, seen).await {
                    delivered += 1;
                }
            }
            Err(status) => take_failure(state, &recipient, item, status),
        }
    }
    if delivered > 0 {
        tracing::info!(%recipient, delivered, sent = positions.len(), "delivered; receipts verified");
    }
}

/// Takes `recipient`'s receipt for `item` (sent as `digest`): verified against `keyring`, its checkpoint witnessed once per distinct note (`witnessed`), the item
/// delivered or, for a signed negative receipt, refused. A receipt that does not verify leaves
/// the item to be retried. Returns whether the item was delivered.
async fn take_receipt(
    state: &Node,
    recipient: &NodeId,
    keyring: &kinbridge_core::Keyring,
    item: &mut Item,
    receipt: &pb::Receipt,
    digest: kinbridge_core::EnvelopeDigest,
    witnessed: &mut HashMap<String, String>,
) -> bool {
    let note = receipt.checkpoint.clone();
    let signed = kinbridge_core::SignedReceipt::from(receipt.clone());
    let checked = MessageId::new(&item.id)
        .map_err(|e| e.to_string())
        .and_then(|message_id| {
            verify_receipt(
                &signed,
                &state.node_id,
                message_id,
                digest,
                recipient,
                keyring,
            )
            .map_err(|e| e.to_string())
        });
    let verified = match checked {
        Ok(v) => v,
        Err(e) => {
            item.retry(
                &state.delivery,
                format!("the receipt from {recipient} does not verify: {e}"),
            );
            return false;
        }
    };
    let checkpoint = match witnessed.get(&note) {
        Some(c) => c.clone(),
        None => {
            let c = witness(state, recipient, keyring, &note).await;
            witnessed.insert(note, c.clone());
            c
        }
    };
    let refused = verified.status == pb::ReceiptStatus::Refused;
    let event = if refused {
        pb::AuditEvent::DeliveryFailed
    } else {
        pb::AuditEvent::Delivered
    };
    let mut entry = outbox_entry(state, event, &item.record);
    entry.receipt_digest = verified.signed.digest().0.to_vec();
    entry.peer_checkpoint = checkpoint;
    if refused {
        // A signed negative receipt: the recipient refused it under its consent
        // checks or policy. Final; the submitter sees why.
        entry.reason = verified.refusal_reason.clone();
        item.record.state = pb::DeliveryState::Refused as i32;
        item.record.last_error = format!(
            "{recipient} refused it with a signed receipt: {}: {}",
            verified.refusal_reason, verified.refusal_detail
        );
        tracing::warn!(message_id = %item.id, %recipient, reason = %entry.reason, "refused by the recipient's consent checks or policy");
    } else {
        item.record.state = pb::DeliveryState::Delivered as i32;
        item.record.delivered_at_ms = UnixMillis::now().0;
        item.record.last_error.clear();
        tracing::debug!(message_id = %item.id, %recipient, attempts = item.record.attempts, "delivered; receipt verified");
    }
    item.record.receipt = Some(verified.signed.into());
    item.entry = Some(entry);
    !refused
}

/// Takes a failed call for `item`: a failure that may pass is retried, any other is
/// `recipient`'s final refusal.
fn take_failure(state: &Node, recipient: &NodeId, item: &mut Item, status: &ServiceError) {
    if status.is_transient() {
        item.retry(
            &state.delivery,
            format!("{:?}: {}", status.kind(), status.message()),
        );
        return;
    }
    let reason = status.reason().unwrap_or("refused-by-peer").to_owned();
    let why = format!(
        "{recipient} refused it: {:?}: {}",
        status.kind(),
        status.message()
    );
    item.refuse(state, &reason, why);
}

/// Checks the checkpoint a receipt carried: it must be signed by the peer. The first one is
/// held as evidence of the peer's log; later ones are logged and checked against the held
/// one by `CheckPeers`, which alone advances it after verifying a consistency proof.
/// Returns the note to log, or nothing if it does not verify.
async fn witness(
    state: &Node,
    peer: &NodeId,
    keyring: &kinbridge_core::Keyring,
    note: &str,
) -> String {
    if note.is_empty() {
        return String::new();
    }
    match verify_peer_note(note, peer, keyring) {
        Ok(cp) => {
            match state.store.held_checkpoint(peer.as_str()) {
                Ok(None) => {
                    if let Err(e) = state.store.hold_checkpoint(peer.as_str(), note).await {
                        tracing::error!(%peer, error = %e, "cannot hold the peer's checkpoint");
                    }
                }
                Ok(Some(held)) => {
                    if let Ok(h) = verify_peer_note(&held, peer, keyring)
                        && (cp.size < h.size || (cp.size == h.size && cp.root != h.root))
                    {
                        tracing::error!(%peer, held = h.size, got = cp.size, "peer's checkpoint is inconsistent with the one held: its log may have been rewritten");
                    }
                }
                Err(e) => tracing::error!(%peer, error = %e, "cannot read the held checkpoint"),
            }
            note.to_owned()
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "the checkpoint carried by the receipt does not verify");
            String::new()
        }
    }
}

fn retry(tuning: &Tuning, id: &str, record: &mut OutboxRecord, error: String) {
    let delay = tuning.backoff(record.attempts.saturating_sub(1));
    record.next_attempt_at_ms = UnixMillis::now().plus_ms(delay.as_millis() as i64).0;
    tracing::warn!(message_id = id, attempts = record.attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "delivery failed; will retry");
    record.last_error = error;
}

/// Logs the outcomes of `items` durably (one commit), then stores every record (one commit).
/// If the outcomes cannot be logged, the messages stay queued and are tried again later.
async fn conclude(state: &Node, recipient: &str, mut items: Vec<Item>) {
    if items.is_empty() {
        return;
    }
    let entries: Vec<pb::AuditEntry> = items.iter().filter_map(|i| i.entry.clone()).collect();
    if state.auditor.record_all(&entries).await.is_err() {
        for item in items.iter_mut() {
            if item.entry.take().is_none() {
                continue;
            }
            item.record.state = pb::DeliveryState::Queued as i32;
            item.record.receipt = None;
            item.retry(
                &state.delivery,
                "the audit log could not record the outcome".into(),
            );
        }
    }
    let updates: Vec<(&str, &OutboxRecord)> =
        items.iter().map(|i| (i.id.as_str(), &i.record)).collect();
    let node = NodeId::new(recipient).ok();
    let saved = match state.store.outbox_update_all(&updates).await {
        Ok(saved) => saved,
        Err(e) => {
            tracing::error!(%recipient, error = %e, "cannot record the delivery outcomes; they will be retried");
            return;
        }
    };
    for (item, saved) in items.iter().zip(saved) {
        if !saved {
            tracing::warn!(message_id = %item.id, "the message had already reached a final state; outcome not stored");
            continue;
        }
        let outcome = match pb::DeliveryState::try_from(item.record.state) {
            Ok(pb::DeliveryState::Delivered) => {
                if let Some(node) = &node {
                    state.keys.delivered(node, &item.id);
                }
                "delivered"
            }
            Ok(pb::DeliveryState::Refused) => "refused",
            Ok(pb::DeliveryState::Expired) => "expired",
            _ => continue,
        };
        let kind = item.entry.as_ref().map_or(0, |e| e.kind);
        state.metrics.sent(
            kind,
            outcome,
            &item.record.recipient,
            item.record.submitted_at_ms,
        );
    }
}
