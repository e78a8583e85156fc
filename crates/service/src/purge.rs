//! Deleting payloads: on consent withdrawal (here, or by a signed withdrawal from the node
//! that originated the data) and past the configured retention period. Each deletion is
//! recorded in the audit log, which keeps only the message's digests.

use std::sync::Arc;
use std::time::Duration;

use kinbridge_core::{EnvelopeDigest, UnixMillis};
use kinbridge_proto::v1 as pb;
use tokio::sync::watch;

use crate::audit::with_header;
use crate::error::ServiceError;
use crate::node::Node;

/// How often the retention sweep runs.
pub const RETENTION_SWEEP: Duration = Duration::from_secs(60);

/// The node that originated the data an envelope header carries: the first node of its chain
/// of custody, or its sender (the store indexes payloads by it).
pub fn originator(header: &pb::EnvelopeHeader) -> &str {
    kinbridge_store::purge_index::originator(header)
}

/// Deletes every payload this node holds that `originator_node` originated under
/// `consent_id` (received, or sent on), logging a `purged` entry for each with `reason`.
/// Reads only that consent's entries of the store's purge index. Returns how many were
/// deleted.
pub async fn purge_consent(
    state: &Node,
    consent_id: &str,
    originator_node: &str,
    reason: &str,
) -> Result<u32, ServiceError> {
    let purged = state
        .store
        .purge_consent(originator_node, consent_id)
        .await?;
    log_purged(state, &purged, reason, originator_node).await?;
    Ok(purged.len() as u32)
}

/// Deletes every payload received or sent more than `retention` ago. Reads only the store's
/// purge index up to the cutoff: a sweep that finds nothing costs the same however many
/// records the node holds.
pub async fn purge_expired(state: &Node, retention: Duration) -> Result<u32, ServiceError> {
    let cutoff = UnixMillis::now().plus_ms(-(retention.as_millis() as i64)).0;
    let purged = state.store.purge_received_or_sent_before(cutoff).await?;
    log_purged(state, &purged, "retention", "").await?;
    Ok(purged.len() as u32)
}

async fn log_purged(
    state: &Node,
    purged: &[pb::Envelope],
    reason: &str,
    peer: &str,
) -> Result<(), ServiceError> {
    for envelope in purged {
        let digest = EnvelopeDigest::compute(&envelope.header, &envelope.signature);
        let mut entry = with_header(
            state.auditor.entry(pb::AuditEvent::Purged),
            &envelope.header,
            &digest.0,
        );
        entry.reason = reason.to_owned();
        entry.peer = peer.to_owned();
        state.auditor.record(&entry).await?;
        tracing::info!(message_id = %entry.message_id, reason, "payload purged");
    }
    Ok(())
}

/// Purges payloads past `retention` every [`RETENTION_SWEEP`] until `shutdown` turns true.
pub async fn run_retention(
    state: Arc<Node>,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(RETENTION_SWEEP);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        match purge_expired(&state, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "retention sweep"),
            Err(e) => tracing::error!(error = %e.message(), "retention sweep failed"),
        }
    }
}
