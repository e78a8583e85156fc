//! The delivery worker: sends queued outbox entries to their peers, retrying with exponential
//! backoff and jitter while a peer is unreachable, until a signed receipt arrives, the peer
//! refuses the message for good, or the message expires.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinbridge_core::{MessageId, NodeId, SealedEnvelope, UnixMillis, verify_receipt};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::peer_service_client::PeerServiceClient;
use rand::Rng;
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::audit::{verify_peer_note, with_header};
use crate::server::NodeState;
use crate::status::is_transient;
use crate::store::OutboxRecord;

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest retry delay: a border post's link may be down for hours, but it should be tried
/// again soon after it is back.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Bound on one delivery call.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Recipients delivered to at once (one message each).
pub const MAX_IN_FLIGHT: usize = 64;
/// How many queued entries one scan looks at.
const SCAN_LIMIT: usize = 1024;

/// Delay before attempt `attempts + 1`: exponential, capped, with jitter in [50%, 100%] so
/// that many queued messages do not retry in lockstep.
pub fn backoff(attempts: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1u32 << attempts.min(16))
        .min(BACKOFF_MAX);
    let jitter = rand::thread_rng().gen_range(0.5..=1.0);
    exp.mul_f64(jitter)
}

/// Sends the outbox to the peers until `shutdown` turns true.
///
/// Messages to one recipient go one at a time, in the order they were queued: the recipient's
/// inbox receives them in submission order, and a message waiting for its retry holds back the
/// ones queued after it for the same recipient. Different recipients proceed independently.
pub async fn run(state: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    // Recipients with a delivery in flight.
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    loop {
        let now = UnixMillis::now();
        let mut next_due: Option<i64> = None;
        // Only the head of each recipient's queue is considered.
        match state.store.pending_heads(SCAN_LIMIT) {
            Ok(heads) => {
                for (id, record) in heads {
                    // `record` is a snapshot: the attempt re-reads it once it holds the recipient.
                    if record.next_attempt_at_ms > now.0 {
                        next_due = Some(next_due.map_or(record.next_attempt_at_ms, |d| {
                            d.min(record.next_attempt_at_ms)
                        }));
                        continue;
                    }
                    let recipient = record.recipient;
                    {
                        let mut flying = lock(&in_flight);
                        if flying.len() >= MAX_IN_FLIGHT || !flying.insert(recipient.clone()) {
                            continue;
                        }
                    }
                    let state = Arc::clone(&state);
                    let in_flight = Arc::clone(&in_flight);
                    tokio::spawn(async move {
                        attempt(&state, &id).await;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An audit entry about the outbox message in `record`.
fn outbox_entry(state: &NodeState, event: pb::AuditEvent, record: &OutboxRecord) -> pb::AuditEntry {
    let envelope = record.envelope.clone().unwrap_or_default();
    let digest = SealedEnvelope::from(envelope.clone()).digest();
    let mut entry = with_header(state.auditor.entry(event), &envelope.header, &digest.0);
    entry.peer = record.recipient.clone();
    entry.attempts = record.attempts;
    entry
}

/// One delivery attempt of `id`, recording its outcome in the audit log, then in the store.
/// The caller holds `id` in the in-flight set, so the record read here is current: an attempt
/// that finished just before cannot be overwritten by a stale snapshot of the queue.
async fn attempt(state: &NodeState, id: &str) {
    let now = UnixMillis::now();
    let mut record = match state.store.outbox_get(id) {
        Ok(Some(r))
            if r.state == pb::DeliveryState::Queued as i32 && r.next_attempt_at_ms <= now.0 =>
        {
            r
        }
        Ok(_) => return,
        Err(e) => {
            tracing::error!(message_id = id, error = %e, "cannot read the outbox record");
            return;
        }
    };
    if now.0 >= record.expires_at_ms {
        record.state = pb::DeliveryState::Expired as i32;
        record.last_error = format!(
            "expired after {} attempts without a receipt",
            record.attempts
        );
        tracing::warn!(
            message_id = id,
            attempts = record.attempts,
            "message expired undelivered"
        );
        let mut entry = outbox_entry(state, pb::AuditEvent::DeliveryFailed, &record);
        entry.reason = "expired".into();
        return finish(state, id, &record, Some(entry)).await;
    }
    let stored = match record
        .envelope
        .clone()
        .map(|e| state.store.with_payload(e))
        .transpose()
    {
        Ok(envelope) => envelope.flatten(),
        Err(e) => {
            tracing::error!(message_id = id, error = %e, "cannot read the payload; will retry");
            retry(id, &mut record, format!("cannot read the payload: {e}"));
            return save(state, id, &record).await;
        }
    };
    let Some(envelope) = stored else {
        let why = "its payload was purged before delivery (consent withdrawn or retention passed)";
        return refuse(state, id, record, "payload-purged", why.into()).await;
    };
    let recipient = match NodeId::new(&record.recipient) {
        Ok(node) => node,
        Err(e) => return refuse(state, id, record, "bad-recipient", e.to_string()).await,
    };
    let Some(peer) = state.registry.get(&recipient) else {
        let why = format!("peer '{recipient}' is no longer in the registry");
        return refuse(state, id, record, "unknown-recipient", why).await;
    };
    let channel = match state.peer_channel(peer) {
        Ok(c) => c,
        Err(e) => return refuse(state, id, record, "recipient-unreachable", e).await,
    };
    let keyring = state.keys.peer_keyring(&recipient).unwrap_or_default();
    if record.attempts == 0 {
        // The first attempt is logged as the message being sent; if that cannot be logged,
        // nothing is sent now and the attempt is retried.
        if state
            .auditor
            .record(&outbox_entry(state, pb::AuditEvent::Sent, &record))
            .await
            .is_err()
        {
            retry(
                id,
                &mut record,
                "the audit log could not record the send".into(),
            );
            return save(state, id, &record).await;
        }
    }
    record.attempts += 1;
    let sealed = SealedEnvelope::from(envelope.clone());
    let mut client = PeerServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::DeliverRequest {
        envelope: Some(envelope),
    });
    request.set_timeout(DELIVERY_TIMEOUT);
    // A bound on the whole call, whatever state the connection is in.
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(DELIVERY_TIMEOUT, client.deliver(request)).await;
    state.metrics.attempt(recipient.as_str(), started.elapsed());
    let answer = match answered {
        Ok(answer) => answer,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {DELIVERY_TIMEOUT:?}"
        ))),
    };
    match answer {
        Ok(response) => {
            let receipt = response.into_inner().receipt.unwrap_or_default();
            let checkpoint = receipt.checkpoint.clone();
            let signed = kinbridge_core::SignedReceipt::from(receipt);
            let checked = MessageId::new(id)
                .map_err(|e| e.to_string())
                .and_then(|message_id| {
                    verify_receipt(
                        &signed,
                        &state.node_id,
                        message_id,
                        sealed.digest(),
                        &recipient,
                        &keyring,
                    )
                    .map_err(|e| e.to_string())
                });
            match checked {
                Ok(verified) if verified.status == pb::ReceiptStatus::Refused => {
                    // A signed negative receipt: the recipient refused it under its consent
                    // checks or policy. Final; the submitter sees why.
                    let mut entry = outbox_entry(state, pb::AuditEvent::DeliveryFailed, &record);
                    entry.reason = verified.refusal_reason.clone();
                    entry.receipt_digest = verified.signed.digest().0.to_vec();
                    entry.peer_checkpoint = witness(state, &recipient, &keyring, &checkpoint).await;
                    record.state = pb::DeliveryState::Refused as i32;
                    record.last_error = format!(
                        "{recipient} refused it with a signed receipt: {}: {}",
                        verified.refusal_reason, verified.refusal_detail
                    );
                    record.receipt = Some(verified.signed.into());
                    tracing::warn!(message_id = id, %recipient, reason = %entry.reason, "refused by the recipient's consent checks or policy");
                    return finish(state, id, &record, Some(entry)).await;
                }
                Ok(verified) => {
                    let mut entry = outbox_entry(state, pb::AuditEvent::Delivered, &record);
                    entry.receipt_digest = verified.signed.digest().0.to_vec();
                    entry.peer_checkpoint = witness(state, &recipient, &keyring, &checkpoint).await;
                    record.state = pb::DeliveryState::Delivered as i32;
                    record.receipt = Some(verified.signed.into());
                    record.delivered_at_ms = UnixMillis::now().0;
                    record.last_error.clear();
                    tracing::info!(message_id = id, %recipient, attempts = record.attempts, "delivered; receipt verified");
                    state.keys.delivered(&recipient, id);
                    return finish(state, id, &record, Some(entry)).await;
                }
                Err(e) => retry(
                    id,
                    &mut record,
                    format!("the receipt from {recipient} does not verify: {e}"),
                ),
            }
        }
        Err(status) if is_transient(&status) => {
            retry(
                id,
                &mut record,
                format!("{:?}: {}", status.code(), status.message()),
            );
        }
        Err(status) => {
            let reason = crate::status::refusal_code(&status)
                .unwrap_or("refused-by-peer")
                .to_owned();
            let why = format!(
                "{recipient} refused it: {:?}: {}",
                status.code(),
                status.message()
            );
            return refuse(state, id, record, &reason, why).await;
        }
    }
    save(state, id, &record).await;
}

/// Checks the checkpoint a receipt carried: it must be signed by the peer. The first one is
/// held as evidence of the peer's log; later ones are logged and checked against the held
/// one by `CheckPeers`, which alone advances it after verifying a consistency proof.
/// Returns the note to log, or nothing if it does not verify.
async fn witness(
    state: &NodeState,
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

fn retry(id: &str, record: &mut OutboxRecord, error: String) {
    let delay = backoff(record.attempts.saturating_sub(1));
    record.next_attempt_at_ms = UnixMillis::now().plus_ms(delay.as_millis() as i64).0;
    tracing::warn!(message_id = id, attempts = record.attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "delivery failed; will retry");
    record.last_error = error;
}

async fn refuse(
    state: &NodeState,
    id: &str,
    mut record: OutboxRecord,
    reason: &str,
    error: String,
) {
    tracing::warn!(message_id = id, reason, error = %error, "delivery refused for good");
    record.state = pb::DeliveryState::Refused as i32;
    record.last_error = error;
    let mut entry = outbox_entry(state, pb::AuditEvent::DeliveryFailed, &record);
    entry.reason = reason.to_owned();
    finish(state, id, &record, Some(entry)).await;
}

/// Logs `entry` (if any) durably, then stores the record's final state. If the entry cannot
/// be logged, the record stays queued and the attempt is made again later.
async fn finish(state: &NodeState, id: &str, record: &OutboxRecord, entry: Option<pb::AuditEntry>) {
    let kind = entry.as_ref().map_or(0, |e| e.kind);
    if let Some(entry) = entry
        && state.auditor.record(&entry).await.is_err()
    {
        let mut again = record.clone();
        again.state = pb::DeliveryState::Queued as i32;
        again.receipt = None;
        retry(
            id,
            &mut again,
            "the audit log could not record the outcome".into(),
        );
        return save(state, id, &again).await;
    }
    save(state, id, record).await;
    let outcome = match pb::DeliveryState::try_from(record.state) {
        Ok(pb::DeliveryState::Delivered) => "delivered",
        Ok(pb::DeliveryState::Refused) => "refused",
        Ok(pb::DeliveryState::Expired) => "expired",
        _ => return,
    };
    state
        .metrics
        .sent(kind, outcome, &record.recipient, record.submitted_at_ms);
}

async fn save(state: &NodeState, id: &str, record: &OutboxRecord) {
    match state.store.outbox_update(id, record).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            message_id = id,
            "the message had already reached a final state; outcome not stored"
        ),
        Err(e) => {
            tracing::error!(message_id = id, error = %e, "cannot record the delivery outcome; it will be retried")
        }
    }
}

/// A lazily connecting mutual-TLS channel to `endpoint`, trusting only `ca_pem` and presenting
/// `identity`. The server certificate must name `server_name`, or the endpoint's host.
pub fn peer_channel(
    endpoint: &str,
    server_name: Option<&str>,
    ca_pem: &[u8],
    identity: &Identity,
) -> Result<Channel, String> {
    let uri: tonic::transport::Uri = endpoint
        .parse()
        .map_err(|e| format!("endpoint '{endpoint}' is not a URL: {e}"))?;
    let host = server_name
        .map(str::to_owned)
        .or_else(|| uri.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .ok_or_else(|| format!("endpoint '{endpoint}' names no host"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(identity.clone())
        .domain_name(host);
    Ok(Endpoint::from(uri)
        .tls_config(tls)
        .map_err(|e| format!("TLS configuration for '{endpoint}': {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy())
}
