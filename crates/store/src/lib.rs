//! The node's durable store (sled): the outbox of submitted messages and the inbox of received
//! ones. Every write that is acknowledged to anyone goes through [`Store::commit`] first.
//!
//! Trees: `outbox` (message id → [`OutboxRecord`]), `outbox_pending` (queue sequence →
//! `recipient 0x00 message id`, for queued messages only; a store of an earlier release holds
//! the message id alone, which is read too), `outbox_lanes` (`recipient 0x00 queue sequence` →
//! message id: the same queue by recipient, so a recipient's next messages are one range read;
//! rebuilt from `outbox_pending` when a store of an earlier release is opened), `inbox` (inbox
//! sequence → [`InboxRecord`]) and `inbox_index`
//! (`sender 0x00 message id` → inbox sequence, for deduplication) and `peer_checkpoints`
//! (peer node id → the signed checkpoint of its audit log this node holds) and `keys`
//! (`owner 0x00 key id` → [`KeyRecord`]: own keys made by rotation, peers' keys
//! announced since start, revocations), and the purge indexes `purge_by_time` and
//! `purge_by_consent` (see [`purge_index`]), written with the records they index.
//!
//! Two guards stand before the writes: the free-space guard ([`room`]) refuses a write that
//! grows the store while the disk keeps less than a reserve free, and the failure latch
//! ([`failure`]) refuses every write once a commit failed. See docs/durability.md.

#![forbid(unsafe_code)]

pub mod committer;
pub mod failure;
pub mod payloads;
pub mod private_files;
pub mod purge_index;
pub mod records;
pub mod room;

use std::path::Path;

use kinbridge_core::EnvelopeDigest;
use kinbridge_proto::v1 as pb;
use prost::Message;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::watch;

use committer::Committer;
pub use failure::Failure;
pub use records::{InboxRecord, KeyRecord, OutboxRecord};

/// Why a store operation failed. Never carries payload content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error.
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    /// The store could not be made durable.
    #[error("store commit failed: {0}")]
    Commit(String),
    /// A stored record does not decode: the store is damaged.
    #[error("stored record under {key} does not decode: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoder's reason.
        reason: String,
    },
    /// The disk is nearly full: a write that would grow the store was refused. Nothing was
    /// written; the same write succeeds once space is freed.
    #[error(
        "the node's disk has less than {} free ({} left on the volume of {}); free space on that volume — the node resumes by itself",
        room::human(*reserve), room::human(*free), dir.display()
    )]
    DiskFull {
        /// The store's directory.
        dir: std::path::PathBuf,
        /// Bytes free there.
        free: u64,
        /// The reserve the node keeps free.
        reserve: u64,
    },
    /// A commit failed earlier (see [`failure`]): the store takes no more writes.
    #[error("{0}")]
    Failed(String),
    /// The store directory could not be opened.
    #[error("cannot open store at {path}: {reason}")]
    Open {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Where a message considered for a purge is, and when it got there.
#[derive(Debug, Clone, Copy)]
pub enum PurgeSide {
    /// Received, at this instant (ms).
    Inbox(i64),
    /// Submitted or forwarded by this node, at this instant (ms).
    Outbox(i64),
}

/// A watch on one outbox record; see [`Store::watch_outbox`].
pub struct OutboxWatch<'a> {
    store: &'a Store,
    message_id: String,
    receiver: Option<watch::Receiver<()>>,
}

impl OutboxWatch<'_> {
    /// Marks every change so far as seen.
    pub fn seen(&mut self) {
        if let Some(r) = self.receiver.as_mut() {
            r.borrow_and_update();
        }
    }

    /// Completes at the next change not yet seen.
    pub async fn changed(&mut self) {
        match self.receiver.as_mut() {
            Some(r) => {
                // The sender lives in the map while any receiver does: it is never dropped.
                let _ = r.changed().await;
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for OutboxWatch<'_> {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut watchers = self.store.watchers();
        if watchers
            .get(&self.message_id)
            .is_some_and(|w| w.receiver_count() == 0)
        {
            watchers.remove(&self.message_id);
        }
    }
}

/// What happened to a received envelope.
#[derive(Debug)]
pub enum ReceiveOutcome {
    /// Newly stored under this inbox sequence.
    Stored(u64),
    /// The same envelope was already stored: here is its record (with the original receipt).
    Duplicate(Box<InboxRecord>),
    /// Another envelope with the same sender and message id was already stored.
    Replay,
}

/// The node's store.
pub struct Store {
    db: sled::Db,
    outbox: sled::Tree,
    outbox_pending: sled::Tree,
    outbox_lanes: sled::Tree,
    inbox: sled::Tree,
    inbox_index: sled::Tree,
    peer_checkpoints: sled::Tree,
    keys: sled::Tree,
    /// Referral workflow histories: `referral sender 0x00 referral id` → [`records::WorkflowRecord`].
    workflow: sled::Tree,
    /// Payloads and salts, out of sled so they can truly be purged.
    payloads: std::sync::Arc<payloads::PayloadStore>,
    committer: Committer,
    /// The free-space guard of the store's volume.
    room: room::Room,
    /// Latched by the first commit that failed; shared with the audit log's recorder.
    failure: Failure,
    /// Highest inbox sequence stored; watchers of the inbox wake on a change.
    inbox_tip: watch::Sender<u64>,
    /// Highest inbox sequence given out. Inbox items are numbered 1, 2, 3, … without gaps and
    /// across restarts (a caseworker's "item 59" keeps meaning one item): numbers are taken
    /// under this lock, inside the transaction that stores the items, and only for new items.
    inbox_last: std::sync::Mutex<u64>,
    /// Per-message watchers of outbox changes: a `GetDelivery` long poll waits on its own
    /// message, so a change wakes the callers waiting for that message and no other.
    outbox_watchers: std::sync::Mutex<std::collections::HashMap<String, watch::Sender<()>>>,
    /// Messages in the pending queue.
    queued: std::sync::atomic::AtomicU64,
    /// Each webhook subscription's cursor: the last inbox sequence it has been told of.
    webhook_cursors: sled::Tree,
    /// Submissions made once under a client's key: the key → the message id and the digest of
    /// the request, written in the transaction that queues the message.
    submissions: sled::Tree,
    /// (time, side, digest) → the record's key: what a retention sweep reads.
    purge_by_time: sled::Tree,
    /// (originator, consent id, side, digest) → the record's key: what a withdrawal reads.
    purge_by_consent: sled::Tree,
}

/// A submission's key and what it is stored with: the key (the client and its idempotency
/// key) and the value (the message id and the digest of the request it came with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionKey {
    /// Who submitted and under which key, as the service layer spells it.
    pub key: Vec<u8>,
    /// The SHA-256 of the request, to tell a retry from another request under the same key.
    pub request_digest: [u8; 32],
}

/// A submission made before under a key: its message and the digest of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The message it queued.
    pub message_id: String,
    /// The SHA-256 of the request it came with.
    pub request_digest: [u8; 32],
}

/// Makes sled's settings file (`<dir>/conf`) and its name durable. sled 0.34 writes the file
/// when it creates a store, in two writes and without an fsync; a power cut before the kernel
/// writes it back leaves it zero-filled or torn, and sled then refuses to open the store
/// ("failed to parse minor version value"). Found by the power-cut campaign
/// (docs/durability.md, "Power cuts").
fn sync_sled_settings(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir.join("conf"))?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        crate::private_files::create_dir(dir).map_err(|e| open_err(e.to_string()))?;
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| open_err(e.to_string()))?;
        sync_sled_settings(dir).map_err(|e| open_err(e.to_string()))?;
        let failure = Failure::default();
        let committer = Committer::start(db.clone(), dir, failure.clone())
            .map_err(|e| open_err(e.to_string()))?;
        let payloads = payloads::PayloadStore::open(&dir.join("payloads"))
            .map_err(|e| open_err(e.to_string()))?;
        let inbox = db.open_tree("inbox")?;
        let outbox = db.open_tree("outbox")?;
        let outbox_pending = db.open_tree("outbox_pending")?;
        let outbox_lanes = db.open_tree("outbox_lanes")?;
        if outbox_lanes.len() != outbox_pending.len() {
            rebuild_lanes(&outbox, &outbox_pending, &outbox_lanes)?;
        }
        let queued = outbox_pending.len() as u64;
        let submissions = db.open_tree("submissions")?;
        let webhook_cursors = db.open_tree("webhook_cursors")?;
        let purge_by_time = db.open_tree("purge_by_time")?;
        let purge_by_consent = db.open_tree("purge_by_consent")?;
        if purge_index::ensure_built(&db, &inbox, &outbox, &purge_by_time, &purge_by_consent)? {
            tracing::info!(
                entries = purge_by_time.len(),
                "built the purge indexes of a store written before they existed"
            );
        }
        let tip = match inbox.last()? {
            Some((k, _)) => decode_seq(&k),
            None => 0,
        };
        Ok(Self {
            outbox,
            outbox_pending,
            outbox_lanes,
            inbox_index: db.open_tree("inbox_index")?,
            peer_checkpoints: db.open_tree("peer_checkpoints")?,
            keys: db.open_tree("keys")?,
            workflow: db.open_tree("workflow")?,
            payloads: std::sync::Arc::new(payloads),
            inbox,
            db,
            committer,
            room: room::Room::new(dir, room::DEFAULT_MIN_FREE_BYTES),
            failure,
            inbox_tip: watch::Sender::new(tip),
            inbox_last: std::sync::Mutex::new(tip),
            outbox_watchers: std::sync::Mutex::default(),
            queued: std::sync::atomic::AtomicU64::new(queued),
            submissions,
            webhook_cursors,
            purge_by_time,
            purge_by_consent,
        })
    }

    /// The same store, refusing writes that grow it while less than `bytes` are free on its
    /// volume (0: no guard). The default is [`room::DEFAULT_MIN_FREE_BYTES`].
    pub fn with_min_free_bytes(mut self, bytes: u64) -> Self {
        self.room = room::Room::new(self.room.dir(), bytes);
        self
    }

    /// Whether a write that grows the store may go ahead now: [`StoreError::Failed`] once a
    /// commit failed, [`StoreError::DiskFull`] while the disk keeps less than the reserve
    /// free. Cheap: the free space is read at most once a second.
    pub fn room(&self) -> Result<(), StoreError> {
        if let Some(reason) = self.failure.reason() {
            return Err(failed(reason));
        }
        self.room.check().map_err(|r| StoreError::DiskFull {
            dir: r.dir,
            free: r.free,
            reserve: r.reserve,
        })
    }

    /// Bytes free on the store's volume (read at most a second ago), if they can be read.
    pub fn free_bytes(&self) -> Option<u64> {
        self.room.free_bytes()
    }

    /// The reserve of free bytes the store keeps.
    pub fn min_free_bytes(&self) -> u64 {
        self.room.reserve()
    }

    /// The store's failure latch.
    pub fn failure(&self) -> &Failure {
        &self.failure
    }

    /// Returns once every write made before the call is on stable storage. Fails at once,
    /// without flushing, once a commit failed.
    pub async fn commit(&self) -> Result<(), StoreError> {
        if let Some(reason) = self.failure.reason() {
            return Err(failed(reason));
        }
        self.committer.commit().await.map_err(|e| {
            if let Some(reason) = self.failure.reason() {
                failed(reason)
            } else {
                StoreError::Commit(e)
            }
        })
    }

    /// A payload store error: if it left the payload store failed, the whole store is.
    fn payload_error(&self, what: &str, e: &std::io::Error) -> StoreError {
        match self.payloads.failure() {
            Some(reason) => {
                self.failure.fail(reason);
                self.failure
                    .reason()
                    .map(failed)
                    .unwrap_or_else(|| StoreError::Commit(format!("{what}: {e}")))
            }
            None => StoreError::Commit(format!("{what}: {e}")),
        }
    }

    /// Puts a newly submitted message in the outbox and its pending queue, durably.
    pub async fn enqueue(&self, message_id: &str, record: OutboxRecord) -> Result<(), StoreError> {
        self.enqueue_once(message_id, record, None).await
    }

    /// [`Store::enqueue`], recording under `once` (if given) that this message is the one its
    /// key submitted, in the same transaction: a retry under the key finds the message
    /// ([`Store::submitted`]) exactly when the message is queued.
    pub async fn enqueue_once(
        &self,
        message_id: &str,
        mut record: OutboxRecord,
        once: Option<&SubmissionKey>,
    ) -> Result<(), StoreError> {
        self.room()?;
        if let Some(envelope) = record.envelope.take() {
            record.envelope = self.put_payloads(vec![envelope]).await?.pop();
        }
        let sequence = self.db.generate_id()? + 1;
        record.queue_sequence = sequence;
        let bytes = record.encode_to_vec();
        let pending_value = [record.recipient.as_bytes(), &[0], message_id.as_bytes()].concat();
        let lane_key = lane_key(&record.recipient, sequence);
        let submitted = once.map(|k| {
            let value = [k.request_digest.as_slice(), message_id.as_bytes()].concat();
            (k.key.as_slice(), value)
        });
        let indexed = purge_index::Entries::outbox(&record);
        (
            &self.outbox,
            &self.outbox_pending,
            &self.outbox_lanes,
            &self.submissions,
            &self.purge_by_time,
            &self.purge_by_consent,
        )
            .transaction(
                |(outbox, pending, lanes, submissions, by_time, by_consent)| {
                    outbox.insert(message_id.as_bytes(), bytes.as_slice())?;
                    pending.insert(&sequence.to_be_bytes(), pending_value.as_slice())?;
                    lanes.insert(lane_key.as_slice(), message_id.as_bytes())?;
                    if let Some((key, value)) = &submitted {
                        submissions.insert(*key, value.as_slice())?;
                    }
                    if let Some(entries) = &indexed {
                        by_time.insert(entries.by_time.as_slice(), message_id.as_bytes())?;
                        if let Some(key) = &entries.by_consent {
                            by_consent.insert(key.as_slice(), message_id.as_bytes())?;
                        }
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                },
            )
            .map_err(tx_error)?;
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.commit().await?;
        Ok(())
    }

    /// The cursor of webhook subscription `name`: the last inbox sequence it has been told
    /// of, if it has one.
    pub fn webhook_cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .webhook_cursors
            .get(name.as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Moves the cursor of webhook subscription `name` to `sequence`, durably.
    pub async fn set_webhook_cursor(&self, name: &str, sequence: u64) -> Result<(), StoreError> {
        self.webhook_cursors
            .insert(name.as_bytes(), &sequence.to_be_bytes())?;
        self.commit().await
    }

    /// The submission made before under `key`, if any ([`Store::enqueue_once`]).
    pub fn submitted(&self, key: &[u8]) -> Result<Option<Submitted>, StoreError> {
        let Some(value) = self.submissions.get(key)? else {
            return Ok(None);
        };
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: "submission".into(),
            reason: reason.into(),
        };
        let (digest, message_id) = value
            .split_first_chunk::<32>()
            .ok_or_else(|| corrupt("shorter than its digest"))?;
        let message_id = std::str::from_utf8(message_id)
            .map_err(|_| corrupt("a message id that is not UTF-8"))?;
        Ok(Some(Submitted {
            message_id: message_id.to_owned(),
            request_digest: *digest,
        }))
    }

    /// Messages queued for delivery now.
    pub fn queued(&self) -> u64 {
        self.queued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The outbox record of `message_id`.
    pub fn outbox_get(&self, message_id: &str) -> Result<Option<OutboxRecord>, StoreError> {
        self.outbox
            .get(message_id.as_bytes())?
            .map(|v| decode::<OutboxRecord>(message_id, &v))
            .transpose()
    }

    /// The head of each recipient's queue, oldest first, for at most `limit` recipients: what
    /// the delivery worker considers. One record is read per recipient, so a scan costs little
    /// however long the queues behind the heads are.
    pub fn pending_heads(&self, limit: usize) -> Result<Vec<(String, OutboxRecord)>, StoreError> {
        let mut out = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        while out.len() < limit {
            let Some(entry) = self.outbox_lanes.range(from.as_slice()..).next() else {
                break;
            };
            let (key, id) = entry?;
            let recipient = lane_recipient(&key);
            // Every key of this recipient sorts below `recipient 0x01`.
            from = [recipient, &[1]].concat();
            let id = String::from_utf8_lossy(&id).into_owned();
            if let Some(record) = self.outbox_get(&id)? {
                out.push((id, record));
            }
        }
        out.sort_by_key(|(_, r)| r.queue_sequence);
        Ok(out)
    }

    /// The first `limit` queued messages to `recipient`, in the order they were queued.
    pub fn pending_for(
        &self,
        recipient: &str,
        limit: usize,
    ) -> Result<Vec<(String, OutboxRecord)>, StoreError> {
        let mut out = Vec::new();
        let prefix = [recipient.as_bytes(), &[0]].concat();
        for entry in self.outbox_lanes.scan_prefix(&prefix).take(limit) {
            let (_, id) = entry?;
            let id = String::from_utf8_lossy(&id).into_owned();
            if let Some(record) = self.outbox_get(&id)? {
                out.push((id, record));
            }
        }
        Ok(out)
    }

    /// Queued messages in submission order, at most `limit`.
    pub fn pending(&self, limit: usize) -> Result<Vec<(String, OutboxRecord)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.outbox_pending.iter().take(limit) {
            let (_, value) = entry?;
            let id = match value.iter().position(|b| *b == 0) {
                Some(at) => String::from_utf8_lossy(&value[at + 1..]).into_owned(),
                None => String::from_utf8_lossy(&value).into_owned(),
            };
            if let Some(record) = self.outbox_get(&id)? {
                out.push((id, record));
            }
        }
        Ok(out)
    }

    /// Replaces the outbox record of `message_id`, durably. A record that left the queued state
    /// leaves the pending queue in the same transaction. A record already in a final state
    /// (delivered, refused, expired) is never changed: returns `false` then.
    pub async fn outbox_update(
        &self,
        message_id: &str,
        record: &OutboxRecord,
    ) -> Result<bool, StoreError> {
        let updated = self.outbox_update_all(&[(message_id, record)]).await?;
        Ok(updated.first().copied().unwrap_or(false))
    }

    /// [`Store::outbox_update`] of several records in one transaction and one commit; says for
    /// each whether it was changed.
    pub async fn outbox_update_all(
        &self,
        updates: &[(&str, &OutboxRecord)],
    ) -> Result<Vec<bool>, StoreError> {
        let queued = kinbridge_proto::v1::DeliveryState::Queued as i32;
        let encoded: Vec<Vec<u8>> = updates.iter().map(|(_, r)| r.encode_to_vec()).collect();
        let updated = (&self.outbox, &self.outbox_pending, &self.outbox_lanes)
            .transaction(|(outbox, pending, lanes)| {
                let mut updated = Vec::with_capacity(updates.len());
                for ((message_id, record), bytes) in updates.iter().zip(&encoded) {
                    let mut purged_at_ms = 0;
                    if let Some(current) = outbox.get(message_id.as_bytes())? {
                        let current = OutboxRecord::decode(current.as_ref()).ok();
                        if current.as_ref().is_some_and(|c| c.state != queued) {
                            updated.push(false);
                            continue;
                        }
                        purged_at_ms = current.map_or(0, |c| c.purged_at_ms);
                    }
                    if purged_at_ms != 0 && record.purged_at_ms == 0 {
                        // Purged since the caller read it: the mark stays.
                        let mut kept = (*record).clone();
                        kept.purged_at_ms = purged_at_ms;
                        outbox.insert(message_id.as_bytes(), kept.encode_to_vec())?;
                    } else {
                        outbox.insert(message_id.as_bytes(), bytes.as_slice())?;
                    }
                    if record.state != queued {
                        pending.remove(&record.queue_sequence.to_be_bytes())?;
                        lanes.remove(lane_key(&record.recipient, record.queue_sequence))?;
                    }
                    updated.push(true);
                }
                Ok::<_, ConflictableTransactionError<()>>(updated)
            })
            .map_err(tx_error)?;
        let left = updates
            .iter()
            .zip(&updated)
            .filter(|((_, r), changed)| **changed && r.state != queued)
            .count() as u64;
        self.queued
            .fetch_sub(left, std::sync::atomic::Ordering::Relaxed);
        self.commit().await?;
        let watchers = self.watchers();
        for ((message_id, _), changed) in updates.iter().zip(&updated) {
            if *changed && let Some(watch) = watchers.get(*message_id) {
                watch.send_replace(());
            }
        }
        Ok(updated)
    }

    /// Takes settled (delivered, refused, expired) messages out of the pending queue, durably.
    pub async fn unqueue(&self, settled: &[(&str, &OutboxRecord)]) -> Result<(), StoreError> {
        let queued = kinbridge_proto::v1::DeliveryState::Queued as i32;
        let mut removed = 0;
        for (_, record) in settled.iter().filter(|(_, r)| r.state != queued) {
            let lane = self
                .outbox_lanes
                .remove(lane_key(&record.recipient, record.queue_sequence))?;
            self.outbox_pending
                .remove(record.queue_sequence.to_be_bytes())?;
            removed += u64::from(lane.is_some());
        }
        self.queued
            .fetch_sub(removed, std::sync::atomic::Ordering::Relaxed);
        self.commit().await
    }

    fn watchers(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, watch::Sender<()>>> {
        kinbridge_core::sync::lock(&self.outbox_watchers)
    }

    /// Watches the outbox record of `message_id`: [`OutboxWatch::changed`] completes when it is
    /// updated after the watch began (or after the last [`OutboxWatch::seen`]).
    pub fn watch_outbox(&self, message_id: &str) -> OutboxWatch<'_> {
        let receiver = self
            .watchers()
            .entry(message_id.to_owned())
            .or_insert_with(|| watch::Sender::new(()))
            .subscribe();
        OutboxWatch {
            store: self,
            message_id: message_id.to_owned(),
            receiver: Some(receiver),
        }
    }

    /// Stores a verified envelope in the inbox unless this sender's message id is already
    /// there, durably. Deduplication and insertion are one transaction, so two concurrent
    /// deliveries of one envelope store it once.
    pub async fn receive(&self, record: &InboxRecord) -> Result<ReceiveOutcome, StoreError> {
        let mut record = record.clone();
        if let Some(envelope) = record.envelope.take() {
            record.envelope = self.put_payloads(vec![envelope]).await?.pop();
        }
        let mut outcomes = self.receive_stored(vec![record]).await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Commit("no outcome".into()))
    }

    /// Stores verified envelopes in the inbox, in order, each unless its sender's message id
    /// is already there: one transaction and one commit for all. Their payloads must already
    /// be in the payload store ([`Store::put_payloads`]): the records' envelopes hold none.
    pub async fn receive_stored(
        &self,
        records: Vec<InboxRecord>,
    ) -> Result<Vec<ReceiveOutcome>, StoreError> {
        self.room()?;
        let prepared: Vec<(Vec<u8>, Vec<u8>, Option<purge_index::Entries>)> = records
            .iter()
            .map(|r| {
                (
                    index_key(&r.sender, &r.message_id),
                    r.encode_to_vec(),
                    purge_index::Entries::inbox(r),
                )
            })
            .collect();
        let stored = {
            let mut last = self.inbox_last.lock().unwrap_or_else(|e| e.into_inner());
            let base = *last;
            let trees = (
                &self.inbox,
                &self.inbox_index,
                &self.purge_by_time,
                &self.purge_by_consent,
            );
            let (stored, next) = trees
                .transaction(|(inbox, index, by_time, by_consent)| {
                    // Numbered from `base` again on every try, so a retried transaction
                    // leaves no gap. Sequences start at 1: 0 is the cursor before the first.
                    let mut next = base;
                    let mut stored = Vec::with_capacity(prepared.len());
                    for (index_key, bytes, indexed) in &prepared {
                        if let Some(seq) = index.get(index_key)? {
                            stored.push(Err(decode_seq(&seq)));
                            continue;
                        }
                        next += 1;
                        index.insert(index_key.as_slice(), &next.to_be_bytes())?;
                        inbox.insert(&next.to_be_bytes(), bytes.as_slice())?;
                        if let Some(entries) = indexed {
                            by_time.insert(entries.by_time.as_slice(), &next.to_be_bytes())?;
                            if let Some(key) = &entries.by_consent {
                                by_consent.insert(key.as_slice(), &next.to_be_bytes())?;
                            }
                        }
                        stored.push(Ok(next));
                    }
                    Ok::<_, ConflictableTransactionError<()>>((stored, next))
                })
                .map_err(tx_error)?;
            *last = next;
            stored
        };
        // A duplicate is answered only once the original is durable too.
        self.commit().await?;
        let mut outcomes = Vec::with_capacity(records.len());
        let mut tip = 0;
        for (record, stored) in records.iter().zip(stored) {
            outcomes.push(match stored {
                Ok(sequence) => {
                    tip = tip.max(sequence);
                    ReceiveOutcome::Stored(sequence)
                }
                Err(seq) => {
                    let stored = self.inbox_get(seq)?.ok_or_else(|| StoreError::Corrupt {
                        key: format!("inbox/{seq}"),
                        reason: "index points to no record".into(),
                    })?;
                    if stored.envelope_digest == record.envelope_digest {
                        ReceiveOutcome::Duplicate(Box::new(stored))
                    } else {
                        ReceiveOutcome::Replay
                    }
                }
            });
        }
        if tip > 0 {
            self.inbox_tip.send_if_modified(|t| {
                let grew = tip > *t;
                *t = (*t).max(tip);
                grew
            });
        }
        Ok(outcomes)
    }

    /// Writes envelopes' payloads and salts to the payload store, durably (one directory sync
    /// for all), and returns the envelopes without them, for sled.
    pub async fn put_payloads(
        &self,
        envelopes: Vec<pb::Envelope>,
    ) -> Result<Vec<pb::Envelope>, StoreError> {
        self.room()?;
        let payloads = std::sync::Arc::clone(&self.payloads);
        tokio::task::spawn_blocking(move || {
            let mut stripped = Vec::with_capacity(envelopes.len());
            let mut files = Vec::with_capacity(envelopes.len());
            for mut envelope in envelopes {
                let digest = EnvelopeDigest::compute(&envelope.header, &envelope.signature).0;
                let payload = std::mem::take(&mut envelope.payload);
                let salt = std::mem::take(&mut envelope.payload_salt);
                files.push((digest, payload, salt));
                stripped.push(envelope);
            }
            payloads.put_all(&files).map(|()| stripped)
        })
        .await
        .map_err(|e| StoreError::Commit(format!("payload write task failed: {e}")))?
        .map_err(|e| self.payload_error("cannot write a payload", &e))
    }

    /// Opens (or creates) a tree of this store, for records kept by other parts of the node.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Writes personal data that belongs to no envelope (a tracing case) to the payload store
    /// under `key`, durably: out of sled, so that it can be purged for real.
    pub async fn put_blob(&self, key: [u8; 32], data: Vec<u8>) -> Result<(), StoreError> {
        self.room()?;
        let payloads = std::sync::Arc::clone(&self.payloads);
        tokio::task::spawn_blocking(move || payloads.put(&key, &data, &[]))
            .await
            .map_err(|e| StoreError::Commit(format!("payload write task failed: {e}")))?
            .map_err(|e| self.payload_error("cannot write a payload", &e))
    }

    /// What [`Self::put_blob`] wrote under `key`, or `None` if it was purged.
    pub fn get_blob(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.payloads.get(key) {
            Ok(found) => Ok(found.map(|(data, _)| data)),
            Err(e) => Err(StoreError::Corrupt {
                key: format!("payload {}", hex::encode(key)),
                reason: e.to_string(),
            }),
        }
    }

    /// Purges what [`Self::put_blob`] wrote under `key`, durably.
    pub async fn purge_blob(&self, key: [u8; 32]) -> Result<(), StoreError> {
        let payloads = std::sync::Arc::clone(&self.payloads);
        tokio::task::spawn_blocking(move || payloads.purge(&key))
            .await
            .map_err(|e| StoreError::Commit(format!("payload purge task failed: {e}")))?
            .map_err(|e| self.payload_error("cannot purge a payload", &e))?;
        Ok(())
    }

    /// `envelope` (as stored, without payload) with its payload and salt restored, or `None`
    /// if the payload was purged.
    pub fn with_payload(
        &self,
        mut envelope: pb::Envelope,
    ) -> Result<Option<pb::Envelope>, StoreError> {
        let digest = EnvelopeDigest::compute(&envelope.header, &envelope.signature).0;
        match self.payloads.get(&digest) {
            Ok(Some((payload, salt))) => {
                envelope.payload = payload;
                envelope.payload_salt = salt;
                Ok(Some(envelope))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Corrupt {
                key: format!("payload {}", hex::encode(digest)),
                reason: e.to_string(),
            }),
        }
    }

    /// Purges the payloads of every inbox and outbox message that `accept` picks by its header,
    /// durably, marking each record purged. Returns the purged envelopes (without payload).
    pub async fn purge_where(
        &self,
        accept: impl Fn(&pb::EnvelopeHeader, PurgeSide) -> bool,
    ) -> Result<Vec<pb::Envelope>, StoreError> {
        let now = kinbridge_core::UnixMillis::now().0;
        let mut purged = Vec::new();
        for entry in self.inbox.iter() {
            let (key, value) = entry?;
            let mut record = decode::<InboxRecord>("inbox", &value)?;
            let Some(envelope) = record.envelope.clone() else {
                continue;
            };
            // A stored header that no longer decodes cannot be matched to a consent: said,
            // not skipped silently (retention still reaches it by its record's time).
            let header = pb::EnvelopeHeader::decode(envelope.header.as_slice()).unwrap_or_else(|e| {
                tracing::warn!(side = "inbox", key = %String::from_utf8_lossy(&key), error = %e, "a stored envelope header does not decode; a consent withdrawal cannot find it");
                pb::EnvelopeHeader::default()
            });
            if record.purged_at_ms != 0 || !accept(&header, PurgeSide::Inbox(record.received_at_ms))
            {
                continue;
            }
            self.purge_payload(&envelope).await?;
            record.purged_at_ms = now;
            mark::<InboxRecord>(&self.inbox, &key, |r| r.purged_at_ms = now)?;
            self.unindex(purge_index::Entries::inbox(&record))?;
            purged.push(envelope);
        }
        for entry in self.outbox.iter() {
            let (key, value) = entry?;
            let mut record = decode::<OutboxRecord>("outbox", &value)?;
            let Some(envelope) = record.envelope.clone() else {
                continue;
            };
            // A stored header that no longer decodes cannot be matched to a consent: said,
            // not skipped silently (retention still reaches it by its record's time).
            let header = pb::EnvelopeHeader::decode(envelope.header.as_slice()).unwrap_or_else(|e| {
                tracing::warn!(side = "outbox", key = %String::from_utf8_lossy(&key), error = %e, "a stored envelope header does not decode; a consent withdrawal cannot find it");
                pb::EnvelopeHeader::default()
            });
            if record.purged_at_ms != 0
                || !accept(&header, PurgeSide::Outbox(record.submitted_at_ms))
            {
                continue;
            }
            self.purge_payload(&envelope).await?;
            record.purged_at_ms = now;
            mark::<OutboxRecord>(&self.outbox, &key, |r| r.purged_at_ms = now)?;
            self.unindex(purge_index::Entries::outbox(&record))?;
            purged.push(envelope);
        }
        self.commit().await?;
        Ok(purged)
    }

    /// Purges the payloads of every inbox message received, and every outbox message
    /// submitted, before `cutoff_ms`, durably, marking each record purged. Reads only the
    /// purge index up to the cutoff and the records it names, so a sweep that finds nothing
    /// costs the same however many records are held. Returns the purged envelopes (without
    /// payload).
    pub async fn purge_received_or_sent_before(
        &self,
        cutoff_ms: i64,
    ) -> Result<Vec<pb::Envelope>, StoreError> {
        let due: Vec<(sled::IVec, sled::IVec)> = self
            .purge_by_time
            .range(..purge_index::time_key(cutoff_ms).to_vec())
            .collect::<Result<_, _>>()?;
        let mut purged = Vec::new();
        let wrote = !due.is_empty();
        for (key, record_key) in due {
            let found = self.purge_indexed(&key, &record_key, |_| true).await?;
            if found.is_none() {
                // Names no record to purge (purged another way): the entry goes.
                self.purge_by_time.remove(&key)?;
            }
            purged.extend(found);
        }
        if wrote {
            self.commit().await?;
        }
        Ok(purged)
    }

    /// Purges the payloads of every inbox and outbox message that `originator` originated
    /// under `consent_id` (see [`purge_index::originator`]), durably, marking each record
    /// purged. Reads only the purge index's entries of that consent and the records they name.
    /// Returns the purged envelopes (without payload).
    pub async fn purge_consent(
        &self,
        originator: &str,
        consent_id: &str,
    ) -> Result<Vec<pb::Envelope>, StoreError> {
        let prefix = purge_index::consent_prefix(originator, consent_id);
        let due: Vec<(sled::IVec, sled::IVec)> = self
            .purge_by_consent
            .scan_prefix(&prefix)
            .collect::<Result<_, _>>()?;
        let mut purged = Vec::new();
        let wrote = !due.is_empty();
        for (key, record_key) in due {
            // The key's length says it is this consent's and not a longer name's.
            if key.len() != prefix.len() + 33 {
                continue;
            }
            let matches = |h: &pb::EnvelopeHeader| {
                h.consent_id == consent_id && purge_index::originator(h) == originator
            };
            let found = self.purge_indexed(&key, &record_key, matches).await?;
            if found.is_none() {
                self.purge_by_consent.remove(&key)?;
            }
            purged.extend(found);
        }
        if wrote {
            self.commit().await?;
        }
        Ok(purged)
    }

    /// Purges the payload of the record an index entry `index_key` names (`record_key` on its
    /// side) if it is not purged yet and its header passes `accept`; marks the record purged
    /// and removes its index entries (computed from the record, as they were written) in one
    /// transaction. Not committed: the caller commits.
    /// Returns the purged envelope, or `None` if there was nothing to purge.
    async fn purge_indexed(
        &self,
        index_key: &[u8],
        record_key: &[u8],
        accept: impl Fn(&pb::EnvelopeHeader) -> bool,
    ) -> Result<Option<pb::Envelope>, StoreError> {
        let inbox = match purge_index::side_of(index_key) {
            Some(purge_index::INBOX) => true,
            Some(purge_index::OUTBOX) => false,
            _ => return Ok(None),
        };
        let (tree, name) = if inbox {
            (&self.inbox, "inbox")
        } else {
            (&self.outbox, "outbox")
        };
        let Some(value) = tree.get(record_key)? else {
            return Ok(None);
        };
        let (envelope, purged_at_ms, entries) = if inbox {
            let r = decode::<InboxRecord>(name, &value)?;
            let entries = purge_index::Entries::inbox(&r);
            (r.envelope, r.purged_at_ms, entries)
        } else {
            let r = decode::<OutboxRecord>(name, &value)?;
            let entries = purge_index::Entries::outbox(&r);
            (r.envelope, r.purged_at_ms, entries)
        };
        let (Some(envelope), 0) = (envelope, purged_at_ms) else {
            return Ok(None);
        };
        let header = pb::EnvelopeHeader::decode(envelope.header.as_slice()).unwrap_or_default();
        if !accept(&header) {
            return Ok(None);
        }
        self.purge_payload(&envelope).await?;
        let now = kinbridge_core::UnixMillis::now().0;
        (tree, &self.purge_by_time, &self.purge_by_consent)
            .transaction(|(records, by_time, by_consent)| {
                // The record as it is now: an outcome stored since it was read is kept.
                if let Some(current) = records.get(record_key)? {
                    let marked = if inbox {
                        InboxRecord::decode(current.as_ref()).ok().map(|mut r| {
                            r.purged_at_ms = now;
                            r.encode_to_vec()
                        })
                    } else {
                        OutboxRecord::decode(current.as_ref()).ok().map(|mut r| {
                            r.purged_at_ms = now;
                            r.encode_to_vec()
                        })
                    };
                    if let Some(bytes) = marked {
                        records.insert(record_key, bytes)?;
                    }
                }
                if let Some(entries) = &entries {
                    by_time.remove(entries.by_time.as_slice())?;
                    if let Some(key) = &entries.by_consent {
                        by_consent.remove(key.as_slice())?;
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        Ok(Some(envelope))
    }

    /// Removes a purged record's index entries.
    fn unindex(&self, entries: Option<purge_index::Entries>) -> Result<(), StoreError> {
        if let Some(entries) = entries {
            self.purge_by_time.remove(entries.by_time)?;
            if let Some(key) = entries.by_consent {
                self.purge_by_consent.remove(key)?;
            }
        }
        Ok(())
    }

    /// Purges the payload of `envelope`, stored under its envelope digest, durably.
    async fn purge_payload(&self, envelope: &pb::Envelope) -> Result<(), StoreError> {
        self.purge_blob(EnvelopeDigest::compute(&envelope.header, &envelope.signature).0)
            .await
    }

    /// The workflow history of the referral `referral_id` sent by `sender`.
    pub fn workflow(
        &self,
        sender: &str,
        referral_id: &str,
    ) -> Result<Vec<pb::StatusChange>, StoreError> {
        Ok(match self.workflow.get(index_key(sender, referral_id))? {
            Some(v) => decode::<records::WorkflowRecord>("workflow", &v)?.history,
            None => Vec::new(),
        })
    }

    /// Appends `change` to the workflow history of `sender`'s referral `referral_id`, durably.
    pub async fn record_workflow(
        &self,
        sender: &str,
        referral_id: &str,
        change: pb::StatusChange,
    ) -> Result<(), StoreError> {
        let key = index_key(sender, referral_id);
        self.workflow.fetch_and_update(key, |old| {
            let mut record = old
                .and_then(|v| records::WorkflowRecord::decode(v).ok())
                .unwrap_or_default();
            record.history.push(change.clone());
            Some(record.encode_to_vec())
        })?;
        self.commit().await
    }

    /// The inbox record of the message `message_id`, whoever sent it.
    pub fn inbox_find(&self, message_id: &str) -> Result<Option<(u64, InboxRecord)>, StoreError> {
        for entry in self.inbox_index.iter() {
            let (key, seq) = entry?;
            let separator = key
                .len()
                .checked_sub(message_id.len() + 1)
                .and_then(|at| key.get(at));
            if key.ends_with(message_id.as_bytes()) && separator == Some(&0) {
                let seq = decode_seq(&seq);
                return Ok(self.inbox_get(seq)?.map(|r| (seq, r)));
            }
        }
        Ok(None)
    }

    /// The header of the first outbox message `accept` picks.
    pub fn find_outbox_header(
        &self,
        accept: impl Fn(&pb::EnvelopeHeader, &OutboxRecord) -> bool,
    ) -> Result<Option<pb::EnvelopeHeader>, StoreError> {
        for entry in self.outbox.iter() {
            let (_, value) = entry?;
            let record = decode::<OutboxRecord>("outbox", &value)?;
            let Some(envelope) = record.envelope.as_ref() else {
                continue;
            };
            if let Ok(header) = pb::EnvelopeHeader::decode(envelope.header.as_slice())
                && accept(&header, &record)
            {
                return Ok(Some(header));
            }
        }
        Ok(None)
    }

    /// Every outbox record `accept` picks (by its message id and record), in no particular
    /// order: a scan of the whole outbox, for listings that sort and page what they pick.
    pub fn outbox_matching(
        &self,
        accept: impl Fn(&str, &OutboxRecord) -> bool,
    ) -> Result<Vec<(String, OutboxRecord)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.outbox.iter() {
            let (key, value) = entry?;
            let id = String::from_utf8_lossy(&key).into_owned();
            let record = decode::<OutboxRecord>(&id, &value)?;
            if accept(&id, &record) {
                out.push((id, record));
            }
        }
        Ok(out)
    }

    /// The inbox record of `sender`'s message `message_id`, if stored.
    pub fn inbox_lookup(
        &self,
        sender: &str,
        message_id: &str,
    ) -> Result<Option<InboxRecord>, StoreError> {
        match self.inbox_index.get(index_key(sender, message_id))? {
            Some(seq) => self.inbox_get(decode_seq(&seq)),
            None => Ok(None),
        }
    }

    /// Every key record kept.
    pub fn key_records(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.keys
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                decode(&format!("keys/{}", String::from_utf8_lossy(&k)), &v)
            })
            .collect()
    }

    /// Writes key records, durably.
    pub async fn put_key_records(&self, records: &[KeyRecord]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in records {
            batch.insert(r.store_key(), r.encode_to_vec());
        }
        self.keys.apply_batch(batch)?;
        self.commit().await
    }

    /// The checkpoint note held for `peer`: the last one checked consistent, or the first one
    /// received.
    pub fn held_checkpoint(&self, peer: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .peer_checkpoints
            .get(peer.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Holds `note` as `peer`'s checkpoint, durably.
    pub async fn hold_checkpoint(&self, peer: &str, note: &str) -> Result<(), StoreError> {
        self.peer_checkpoints
            .insert(peer.as_bytes(), note.as_bytes())?;
        self.commit().await
    }

    /// The inbox record at `sequence`.
    pub fn inbox_get(&self, sequence: u64) -> Result<Option<InboxRecord>, StoreError> {
        self.inbox
            .get(sequence.to_be_bytes())?
            .map(|v| decode::<InboxRecord>(&format!("inbox/{sequence}"), &v))
            .transpose()
    }

    /// Inbox records after `after` that `visible` lets through, in order, at most `limit`.
    pub fn inbox_page(
        &self,
        after: u64,
        limit: usize,
        include_acknowledged: bool,
        visible: impl Fn(&InboxRecord) -> bool,
    ) -> Result<Vec<(u64, InboxRecord)>, StoreError> {
        let mut out = Vec::new();
        let start = after.saturating_add(1).to_be_bytes();
        for entry in self.inbox.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            let seq = decode_seq(&k);
            let record = decode::<InboxRecord>(&format!("inbox/{seq}"), &v)?;
            if (include_acknowledged || !record.acknowledged) && visible(&record) {
                out.push((seq, record));
            }
        }
        Ok(out)
    }

    /// Marks an inbox item acknowledged, durably. `false` if there is no such item.
    pub async fn acknowledge(&self, sequence: u64) -> Result<bool, StoreError> {
        let key = sequence.to_be_bytes();
        let updated = self.inbox.fetch_and_update(key, |old| {
            old.map(|v| match InboxRecord::decode(v) {
                Ok(mut r) => {
                    r.acknowledged = true;
                    r.encode_to_vec()
                }
                Err(_) => v.to_vec(),
            })
        })?;
        if updated.is_none() {
            return Ok(false);
        }
        self.commit().await?;
        Ok(true)
    }

    /// Watches the highest inbox sequence.
    pub fn subscribe_inbox(&self) -> watch::Receiver<u64> {
        self.inbox_tip.subscribe()
    }
}

/// Changes the record under `key` as it is now, with `change`: a purge marks the current
/// record, so a delivery outcome or an acknowledgement stored since it was read is kept.
fn mark<M: Message + Default>(
    tree: &sled::Tree,
    key: &[u8],
    change: impl Fn(&mut M),
) -> Result<(), StoreError> {
    tree.fetch_and_update(key, |old| {
        old.map(|v| match M::decode(v) {
            Ok(mut record) => {
                change(&mut record);
                record.encode_to_vec()
            }
            Err(_) => v.to_vec(),
        })
    })?;
    Ok(())
}

/// The `outbox_lanes` key of the message queued at `sequence` for `recipient`.
fn lane_key(recipient: &str, sequence: u64) -> Vec<u8> {
    [recipient.as_bytes(), &[0], &sequence.to_be_bytes()].concat()
}

/// The recipient part of an `outbox_lanes` key.
fn lane_recipient(key: &[u8]) -> &[u8] {
    &key[..key.len().saturating_sub(9)]
}

/// Rebuilds the queue by recipient from the pending queue: for a store an earlier release
/// wrote, whose pending queue has no `outbox_lanes` beside it.
fn rebuild_lanes(
    outbox: &sled::Tree,
    pending: &sled::Tree,
    lanes: &sled::Tree,
) -> Result<(), StoreError> {
    lanes.clear()?;
    for entry in pending.iter() {
        let (seq, value) = entry?;
        let id = match value.iter().position(|b| *b == 0) {
            Some(at) => &value[at + 1..],
            None => &value[..],
        };
        // The record says whose queue it is in (an early entry names no recipient).
        let Some(bytes) = outbox.get(id)? else {
            continue;
        };
        let record = decode::<OutboxRecord>(&String::from_utf8_lossy(id), &bytes)?;
        lanes.insert(lane_key(&record.recipient, decode_seq(&seq)), id)?;
    }
    Ok(())
}

/// The error of a write refused because the store failed earlier with `reason`.
fn failed(reason: &str) -> StoreError {
    StoreError::Failed(format!(
        "the store failed earlier and takes no more writes ({reason}); restart the node after checking its disk; nothing unacknowledged was kept"
    ))
}

fn index_key(sender: &str, message_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(sender.len() + 1 + message_id.len());
    key.extend_from_slice(sender.as_bytes());
    key.push(0);
    key.extend_from_slice(message_id.as_bytes());
    key
}

fn decode_seq(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn decode<M: Message + Default>(key: &str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn tx_error(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => StoreError::Sled(e),
        TransactionError::Abort(()) => StoreError::Commit("transaction aborted".into()),
    }
}

#[cfg(test)]
mod tests;
