//! The use cases' check before a write that grows the store (a submission, a delivery from
//! a peer, a tracing case): refused while the disk keeps less than its reserve free
//! (RESOURCE_EXHAUSTED `disk-full`, to retry once space is freed) or once the store failed
//! (UNAVAILABLE `storage-failed`, until a restart). The refusal is counted and recorded in the
//! audit log if the log can still be written; it is not logged per request: the store logs
//! the start and the end of a full-disk episode, and a failure once.

use kinbridge_proto::v1 as pb;

use crate::error::ServiceError;
use crate::node::Node;

/// `Ok` if a write that grows the store may go ahead; otherwise the refusal, recorded as
/// refused on `side` ("local" or "peer") for `actor` (a local client, or the peer).
pub async fn ensure(node: &Node, side: &'static str, actor: &str) -> Result<(), ServiceError> {
    let Err(e) = node.store.room() else {
        return Ok(());
    };
    let error = ServiceError::from(e);
    let mut entry = node.auditor.entry(pb::AuditEvent::Refused);
    if side == "peer" {
        entry.peer = actor.to_owned();
        entry.authenticated_peer = actor.to_owned();
    } else {
        entry.actor = actor.to_owned();
    }
    entry.reason = error.refusal_reason();
    node.metrics.refused(side, &entry.reason);
    Err(node.auditor.record_refusal(&entry, error).await)
}
