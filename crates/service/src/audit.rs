//! The node's side of the audit log: recording each event durably before the event is
//! acknowledged, building entries from envelopes, signing checkpoints on a timer, and the
//! note keys that verify this node's and its peers' checkpoints.

use std::sync::Arc;
use std::time::Duration;

use kinbridge_audit::AuditLog;
use kinbridge_audit::checkpoint::{NoteKey, VerifiedCheckpoint, origin_of};
use kinbridge_audit::entry::{encode, new_entry};
use kinbridge_core::{Keyring, NodeId, NodeSigningKey};
use kinbridge_proto::v1 as pb;
use prost::Message;
use tokio::sync::{oneshot, watch};

use crate::error::{ServiceError, audit_failure};

/// Default interval between checkpoints while the log grows.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

/// The node's audit log and what goes with it.
pub struct Auditor {
    log: Arc<AuditLog>,
    node: NodeId,
    /// Size of the latest signed checkpoint; waiters on a checkpoint wake on it.
    checkpoint_size: watch::Sender<u64>,
    /// The node's storage failure latch (the store's, see [`Auditor::with_failure`]): a
    /// journal write or sync that fails latches it, so the whole node stops taking writes.
    failure: kinbridge_store::Failure,
}

impl Auditor {
    /// Wraps an open log.
    pub fn new(log: AuditLog, node: NodeId) -> Self {
        let size = log.latest_checkpoint().map_or(0, |c| c.size);
        Self {
            log: Arc::new(log),
            node,
            checkpoint_size: watch::Sender::new(size),
            failure: kinbridge_store::Failure::default(),
        }
    }

    /// The same recorder, latching `failure` (the store's) when the log fails.
    pub fn with_failure(mut self, failure: kinbridge_store::Failure) -> Self {
        self.failure = failure;
        self
    }

    /// The error of a log that failed: the node's storage is failed from now on.
    fn failed(&self, reason: &str) -> ServiceError {
        self.failure.fail(format!("audit log: {reason}"));
        ServiceError::storage_failed(&format!("audit log: {reason}"))
    }

    /// The error of an entry that could not be appended.
    fn append_error(&self, e: &kinbridge_audit::LogError) -> ServiceError {
        match e {
            kinbridge_audit::LogError::Failed(reason) => self.failed(reason),
            other => audit_failure(&other.to_string()),
        }
    }

    /// The log.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// A new entry of `event` by this node.
    pub fn entry(&self, event: pb::AuditEvent) -> pb::AuditEntry {
        let mut entry = new_entry(event, self.node.as_str());
        if event == pb::AuditEvent::Refused {
            // A refusal made while serving a local call names the method refused.
            entry.method = current_method();
        }
        entry
    }

    /// Records `entry`, the refusal about to be answered with `error`, and returns the error
    /// to answer with: `error`, or the log's failure if even the refusal cannot be recorded,
    /// so that the caller retries rather than take the refusal as final. A refusal that
    /// already tells the caller to retry (a full disk, failed storage) is answered as it is.
    pub async fn record_refusal(
        &self,
        entry: &pb::AuditEntry,
        error: ServiceError,
    ) -> ServiceError {
        match self.record(entry).await {
            Ok(_) => error,
            Err(_) if error.is_transient() => error,
            Err(audit) => audit,
        }
    }

    /// Appends `entry` and returns once it is durable. Fails closed: if the log cannot record
    /// the event, the caller must not acknowledge it.
    pub async fn record(&self, entry: &pb::AuditEntry) -> Result<u64, ServiceError> {
        let index = self
            .log
            .append(encode(entry))
            .map_err(|e| self.append_error(&e))?;
        self.commit().await.map(|()| index)
    }

    /// Appends `entries` in order and returns once all are durable, with one commit: a batch
    /// costs one `fdatasync`, not one per entry. Fails closed like [`Auditor::record`]: an
    /// entry appended before a failure is not durable and the log stops taking entries.
    pub async fn record_all(&self, entries: &[pb::AuditEntry]) -> Result<(), ServiceError> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            self.log
                .append(encode(entry))
                .map_err(|e| self.append_error(&e))?;
        }
        self.commit().await
    }

    /// Returns once everything appended so far is durable.
    async fn commit(&self) -> Result<(), ServiceError> {
        let (tx, rx) = oneshot::channel();
        self.log.commit_then(move |result| {
            let _ = tx.send(result);
        });
        match rx.await {
            Ok(Ok(_)) => Ok(()),
            // The journal's write or sync failed: the log takes nothing more.
            Ok(Err(e)) => Err(self.failed(&e)),
            Err(_) => Err(audit_failure("the audit commit thread has stopped")),
        }
    }

    /// Signs a checkpoint of the durable entries if they grew, off the async threads.
    pub async fn checkpoint(
        &self,
        key: &Arc<NodeSigningKey>,
    ) -> Result<VerifiedCheckpoint, ServiceError> {
        let log = Arc::clone(&self.log);
        let key = Arc::clone(key);
        let signed = tokio::task::spawn_blocking(move || log.sign_checkpoint(&key))
            .await
            .map_err(|e| audit_failure(&e.to_string()))?
            .map_err(|e| match e {
                // The checkpoint journal's write or sync failed: as for the entries, a retry
                // that succeeds would prove nothing, so the node's storage is failed.
                kinbridge_audit::LogError::Journal(
                    e @ kinbridge_audit::journal::JournalError::Io { .. },
                ) => self.failed(&e.to_string()),
                e => audit_failure(&e.to_string()),
            })?;
        self.checkpoint_size.send_if_modified(|s| {
            let grew = signed.size > *s;
            *s = (*s).max(signed.size);
            grew
        });
        Ok(signed)
    }

    /// Watches the size of the latest checkpoint.
    pub fn subscribe_checkpoints(&self) -> watch::Receiver<u64> {
        self.checkpoint_size.subscribe()
    }

    /// The latest signed checkpoint note, or empty.
    pub fn latest_note(&self) -> String {
        self.log
            .latest_checkpoint()
            .map(|c| c.note)
            .unwrap_or_default()
    }
}

/// Signs a checkpoint every `interval` while the log grows, until `shutdown` turns true.
pub async fn run_checkpointer(
    auditor: Arc<Auditor>,
    keys: Arc<crate::keys::KeyBook>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {}
        }
        if let Err(e) = auditor.checkpoint(&keys.signer()).await {
            tracing::error!(error = %e.message(), "cannot sign an audit checkpoint");
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// The note keys of `node`'s log: its origin with each of its keys.
pub fn note_keys(node: &NodeId, keyring: &Keyring) -> Vec<NoteKey> {
    keyring
        .keys()
        .iter()
        .map(|k| NoteKey {
            name: origin_of(node),
            key: *k.verifying_key(),
        })
        .collect()
}

/// Verifies a peer's checkpoint note with any of its keys.
pub fn verify_peer_note(
    note: &str,
    node: &NodeId,
    keyring: &Keyring,
) -> Result<VerifiedCheckpoint, String> {
    let mut last = format!("no signing key of {node} is registered");
    for key in note_keys(node, keyring) {
        match kinbridge_audit::checkpoint::verify_note(note, &key) {
            Ok(v) => return Ok(v),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Fills the envelope fields of `entry` from a serialized header this node sealed or verified.
pub fn with_header(
    mut entry: pb::AuditEntry,
    header_bytes: &[u8],
    envelope_digest: &[u8],
) -> pb::AuditEntry {
    if let Ok(h) = pb::EnvelopeHeader::decode(header_bytes) {
        entry.message_id = h.message_id;
        entry.kind = h.kind;
        entry.sender = h.sender;
        entry.recipient = h.recipient;
        entry.purpose = h.purpose;
        entry.consent_id = h.consent_id;
        entry.payload_digest = h.payload_digest;
        entry.data_categories = h.data_categories;
        entry.custody = h.custody;
    }
    entry.envelope_digest = envelope_digest.to_vec();
    entry
}

tokio::task_local! {
    /// The method of the local call being served, for its refusals' audit entries.
    static LOCAL_METHOD: String;
}

/// Runs `call` as the serving of the local method `method`: a refusal it records names the
/// method (a face sets it for every local call it serves).
pub async fn serving_method<F: std::future::Future>(method: String, call: F) -> F::Output {
    LOCAL_METHOD.scope(method, call).await
}

/// The local method the current task serves (empty outside one).
pub fn current_method() -> String {
    LOCAL_METHOD.try_with(Clone::clone).unwrap_or_default()
}
