//! The delivery worker: sends queued outbox entries to their peers, retrying with exponential
//! backoff and jitter while a peer is unreachable, until a signed receipt arrives, the peer
//! refuses the message for good, or the message expires.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinbridge_core::{MessageId, NodeId, SealedEnvelope, UnixMillis, verify_receipt};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::peer_service_client::PeerServiceClient;
use rand::Rng;
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::registry::Peer;
use crate::server::NodeState;
use crate::status::is_transient;
use crate::store::OutboxRecord;

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest retry delay: a border post's link may be down for hours, but it should be tried
/// again soon after it is back.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Bound on one delivery call.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries in flight at once.
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
pub async fn run(state: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let channels: Arc<Mutex<HashMap<NodeId, Channel>>> = Arc::default();
    loop {
        let now = UnixMillis::now();
        let mut next_due: Option<i64> = None;
        match state.store.pending(SCAN_LIMIT) {
            Ok(pending) => {
                for (id, record) in pending {
                    if record.next_attempt_at_ms > now.0 {
                        next_due = Some(next_due.map_or(record.next_attempt_at_ms, |d| {
                            d.min(record.next_attempt_at_ms)
                        }));
                        continue;
                    }
                    {
                        let mut flying = lock(&in_flight);
                        if flying.len() >= MAX_IN_FLIGHT || !flying.insert(id.clone()) {
                            continue;
                        }
                    }
                    let state = Arc::clone(&state);
                    let in_flight = Arc::clone(&in_flight);
                    let channels = Arc::clone(&channels);
                    tokio::spawn(async move {
                        attempt(&state, &channels, &id, record).await;
                        lock(&in_flight).remove(&id);
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

/// One delivery attempt of `id`, recording its outcome durably.
async fn attempt(
    state: &NodeState,
    channels: &Mutex<HashMap<NodeId, Channel>>,
    id: &str,
    mut record: OutboxRecord,
) {
    let now = UnixMillis::now();
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
        save(state, id, &record).await;
        return;
    }
    let Some(envelope) = record.envelope.clone() else {
        record.state = pb::DeliveryState::Refused as i32;
        record.last_error = "outbox record holds no envelope".into();
        save(state, id, &record).await;
        return;
    };
    let recipient = match NodeId::new(&record.recipient) {
        Ok(node) => node,
        Err(e) => return refuse(state, id, record, e.to_string()).await,
    };
    let Some(peer) = state.registry.get(&recipient) else {
        return refuse(
            state,
            id,
            record,
            format!("peer '{recipient}' is no longer in the registry"),
        )
        .await;
    };
    let channel = match channel_for(state, channels, peer) {
        Ok(c) => c,
        Err(e) => return refuse(state, id, record, e).await,
    };
    record.attempts += 1;
    let sealed = SealedEnvelope::from(envelope.clone());
    let mut client = PeerServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::DeliverRequest {
        envelope: Some(envelope),
    });
    request.set_timeout(DELIVERY_TIMEOUT);
    let result = client.deliver(request).await;
    match result {
        Ok(response) => {
            let receipt = response.into_inner().receipt.unwrap_or_default().into();
            let checked = MessageId::new(id)
                .map_err(|e| e.to_string())
                .and_then(|message_id| {
                    verify_receipt(
                        &receipt,
                        &state.node_id,
                        message_id,
                        sealed.digest(),
                        &recipient,
                        &peer.keyring,
                    )
                    .map_err(|e| e.to_string())
                });
            match checked {
                Ok(verified) => {
                    record.state = pb::DeliveryState::Delivered as i32;
                    record.receipt = Some(verified.signed.into());
                    record.delivered_at_ms = UnixMillis::now().0;
                    record.last_error.clear();
                    tracing::info!(message_id = id, %recipient, attempts = record.attempts, "delivered; receipt verified");
                }
                Err(e) => retry(
                    &mut record,
                    format!("the receipt from {recipient} does not verify: {e}"),
                ),
            }
        }
        Err(status) if is_transient(&status) => {
            retry(
                &mut record,
                format!("{:?}: {}", status.code(), status.message()),
            );
        }
        Err(status) => {
            return refuse(
                state,
                id,
                record,
                format!(
                    "{recipient} refused it: {:?}: {}",
                    status.code(),
                    status.message()
                ),
            )
            .await;
        }
    }
    save(state, id, &record).await;
}

fn retry(record: &mut OutboxRecord, error: String) {
    let delay = backoff(record.attempts.saturating_sub(1));
    record.next_attempt_at_ms = UnixMillis::now().plus_ms(delay.as_millis() as i64).0;
    tracing::warn!(attempts = record.attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "delivery failed; will retry");
    record.last_error = error;
}

async fn refuse(state: &NodeState, id: &str, mut record: OutboxRecord, error: String) {
    tracing::warn!(message_id = id, error = %error, "delivery refused for good");
    record.state = pb::DeliveryState::Refused as i32;
    record.last_error = error;
    save(state, id, &record).await;
}

async fn save(state: &NodeState, id: &str, record: &OutboxRecord) {
    if let Err(e) = state.store.outbox_update(id, record).await {
        tracing::error!(message_id = id, error = %e, "cannot record the delivery outcome; it will be retried");
    }
}

/// The cached channel to `peer`, made on first use. Channels reconnect by themselves.
fn channel_for(
    state: &NodeState,
    channels: &Mutex<HashMap<NodeId, Channel>>,
    peer: &Peer,
) -> Result<Channel, String> {
    let mut map = lock(channels);
    if let Some(channel) = map.get(&peer.node_id) {
        return Ok(channel.clone());
    }
    let endpoint = peer
        .endpoint
        .as_deref()
        .ok_or_else(|| format!("peer '{}' has no endpoint", peer.node_id))?;
    let channel = peer_channel(
        endpoint,
        peer.tls_server_name.as_deref(),
        &peer.ca_pem,
        &state.tls_identity,
    )?;
    map.insert(peer.node_id.clone(), channel.clone());
    Ok(channel)
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
