//! The audit log of one node: entries appended to the fsynced journal by a group-commit
//! thread, the Merkle tree over them, and the signed checkpoints.
//!
//! An entry is visible (in the tree, in proofs, in exports, in checkpoints) only once it is
//! durable. Appending returns the entry's index at once; [`AuditLog::commit_then`] reports
//! when everything appended before it is on disk. A node acknowledges an event only after
//! that report.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use kinbridge_core::sync::lock;
use kinbridge_core::{NodeId, NodeSigningKey};

use crate::checkpoint::{
    Checkpoint, CheckpointError, NoteKey, VerifiedCheckpoint, origin_of, verify_note_any,
};
use crate::journal::{Journal, JournalError, read_record_at};
use crate::merkle::{Hash, MerkleTree, ProofError, leaf_hash, verify_consistency};

/// Entries committed in one group commit at most.
const MAX_BATCH: usize = 4096;

/// Why the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A stored checkpoint does not verify.
    #[error("stored checkpoint {index} does not verify: {source}")]
    Checkpoint {
        /// Position in the checkpoint journal.
        index: usize,
        /// Why.
        source: CheckpointError,
    },
    /// The entries on disk do not match a checkpoint this node signed: the log was altered or
    /// truncated. The node refuses to sign anything over it.
    #[error(
        "the audit log does not match the checkpoint it signed for size {size}: {detail}; refusing to go on (restore the audit directory from a backup)"
    )]
    Inconsistent {
        /// The checkpoint's size.
        size: u64,
        /// What differs.
        detail: String,
    },
    /// A proof could not be made.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// An earlier write failed: the log accepts nothing more, so nothing more is acknowledged.
    #[error("the audit log failed earlier and accepts no more entries: {0}")]
    Failed(String),
    /// The directory could not be created or a file read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What a commit waiter is told: the durable size, or why the commit failed.
pub type CommitResult = Result<u64, String>;
type Waiter = Box<dyn FnOnce(CommitResult) + Send>;

struct State {
    /// Index the next appended entry gets.
    next_index: u64,
    /// Appended, not yet durable.
    pending: Vec<Vec<u8>>,
    /// The tree of durable entries.
    tree: MerkleTree,
    /// Journal offset of each durable entry's frame.
    offsets: Vec<u64>,
    /// Every checkpoint signed, by ascending size.
    checkpoints: Vec<VerifiedCheckpoint>,
    /// Set when a write failed.
    failed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    entries_path: PathBuf,
    checkpoints: Mutex<Journal>,
    origin: String,
}

/// A node's audit log.
pub struct AuditLog {
    shared: Arc<Shared>,
    tx: Option<std_mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditLog {
    /// Opens (or creates) the log of `node` in `dir`, recovering the journal and checking it
    /// against every checkpoint signed before, each verified with one of `keys`.
    pub fn open(dir: &Path, node: &NodeId, keys: &[NoteKey]) -> Result<Self, LogError> {
        // 0700 whatever the umask: the node's data directory is its user's alone.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(|source| LogError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let entries_path = dir.join("entries.log");
        let entries = Journal::open(&entries_path)?;
        let mut tree = MerkleTree::new();
        let mut offsets = Vec::with_capacity(entries.records.len());
        for (offset, record) in &entries.records {
            tree.push(leaf_hash(record));
            offsets.push(*offset);
        }
        let cps = Journal::open(&dir.join("checkpoints.log"))?;
        let mut checkpoints: Vec<VerifiedCheckpoint> = Vec::with_capacity(cps.records.len());
        for (index, (_, note)) in cps.records.iter().enumerate() {
            let note = String::from_utf8_lossy(note);
            let verified = verify_note_any(&note, keys)
                .map_err(|source| LogError::Checkpoint { index, source })?;
            if verified.size > tree.size() {
                return Err(LogError::Inconsistent {
                    size: verified.size,
                    detail: format!("only {} entries are on disk", tree.size()),
                });
            }
            if tree.root(verified.size)? != verified.root {
                return Err(LogError::Inconsistent {
                    size: verified.size,
                    detail: "the root hash differs".into(),
                });
            }
            checkpoints.push(verified);
        }
        let next_index = tree.size();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_index,
                pending: Vec::new(),
                tree,
                offsets,
                checkpoints,
                failed: None,
            }),
            entries_path,
            checkpoints: Mutex::new(cps.journal),
            origin: origin_of(node),
        });
        let (tx, rx) = std_mpsc::channel::<Waiter>();
        let thread_shared = Arc::clone(&shared);
        let mut journal = entries.journal;
        let thread = std::thread::Builder::new()
            .name("kinbridge-audit".into())
            .spawn(move || commit_loop(&thread_shared, &mut journal, &rx))
            .map_err(|source| LogError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            shared,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// The log's origin, `kinbridge.audit/<NODE>`.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// Appends an entry (its serialized bytes); returns its index. It is durable only after a
    /// later commit reports success.
    pub fn append(&self, entry: Vec<u8>) -> Result<u64, LogError> {
        let mut state = lock(&self.shared.state);
        if let Some(reason) = &state.failed {
            return Err(LogError::Failed(reason.clone()));
        }
        let index = state.next_index;
        state.next_index += 1;
        state.pending.push(entry);
        Ok(index)
    }

    /// Calls `done` once every entry appended before this call is durable (with the durable
    /// size), or with the reason it cannot be.
    pub fn commit_then(&self, done: impl FnOnce(CommitResult) + Send + 'static) {
        match &self.tx {
            Some(tx) => {
                if let Err(e) = tx.send(Box::new(done)) {
                    (e.0)(Err("the audit commit thread has stopped".into()));
                }
            }
            None => done(Err("the audit log is closed".into())),
        }
    }

    /// Blocks until everything appended so far is durable.
    pub fn commit_blocking(&self) -> CommitResult {
        let (tx, rx) = std_mpsc::channel();
        self.commit_then(move |r| {
            let _ = tx.send(r);
        });
        rx.recv()
            .unwrap_or_else(|_| Err("the audit commit thread has stopped".into()))
    }

    /// Number of durable entries.
    pub fn size(&self) -> u64 {
        lock(&self.shared.state).tree.size()
    }

    /// Root hash of the first `size` durable entries.
    pub fn root(&self, size: u64) -> Result<Hash, LogError> {
        Ok(lock(&self.shared.state).tree.root(size)?)
    }

    /// Inclusion proof of `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        Ok(lock(&self.shared.state).tree.inclusion_proof(index, size)?)
    }

    /// Consistency proof between two sizes.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, LogError> {
        Ok(lock(&self.shared.state)
            .tree
            .consistency_proof(first, second)?)
    }

    /// The latest signed checkpoint note, if any.
    pub fn latest_checkpoint(&self) -> Option<VerifiedCheckpoint> {
        lock(&self.shared.state).checkpoints.last().cloned()
    }

    /// Every signed checkpoint, by ascending size.
    pub fn checkpoints(&self) -> Vec<VerifiedCheckpoint> {
        lock(&self.shared.state).checkpoints.clone()
    }

    /// Signs a checkpoint of the durable entries with `key` unless the latest one already
    /// covers them; the new checkpoint is checked consistent with the latest one before it is
    /// signed, and is durable before it is returned.
    pub fn sign_checkpoint(&self, key: &NodeSigningKey) -> Result<VerifiedCheckpoint, LogError> {
        // One signer at a time: the checkpoint journal's lock orders them.
        let mut journal = lock(&self.shared.checkpoints);
        let (size, root, latest, proof) = {
            let state = lock(&self.shared.state);
            let size = state.tree.size();
            let latest = state.checkpoints.last().cloned();
            if let Some(latest) = latest.as_ref().filter(|l| l.size == size) {
                return Ok(latest.clone());
            }
            let proof = match &latest {
                Some(l) => state.tree.consistency_proof(l.size, size)?,
                None => Vec::new(),
            };
            (size, state.tree.root(size)?, latest, proof)
        };
        if let Some(latest) = &latest {
            verify_consistency(latest.size, size, &proof, &latest.root, &root).map_err(|e| {
                LogError::Inconsistent {
                    size: latest.size,
                    detail: format!("the tree is not an extension of it: {e}"),
                }
            })?;
        }
        let note = Checkpoint {
            origin: &self.shared.origin,
            size,
            root,
        }
        .sign(key);
        journal.append(&[note.clone().into_bytes()])?;
        let signed = VerifiedCheckpoint {
            origin: self.shared.origin.clone(),
            size,
            root,
            note,
        };
        lock(&self.shared.state).checkpoints.push(signed.clone());
        Ok(signed)
    }

    /// The durable entries with indices `[start, end)`.
    pub fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, LogError> {
        let offsets: Vec<u64> = {
            let state = lock(&self.shared.state);
            let end = end.min(state.tree.size());
            if start >= end {
                return Ok(Vec::new());
            }
            state.offsets[start as usize..end as usize].to_vec()
        };
        let io = |source| LogError::Io {
            path: self.shared.entries_path.clone(),
            source,
        };
        let file = std::fs::File::open(&self.shared.entries_path).map_err(io)?;
        let mut out = Vec::with_capacity(offsets.len());
        for offset in offsets {
            out.push(read_record_at(&file, offset).map_err(io)?);
        }
        Ok(out)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn commit_loop(shared: &Shared, journal: &mut Journal, rx: &std_mpsc::Receiver<Waiter>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let result = loop {
            let batch: Vec<Vec<u8>> = {
                let mut state = lock(&shared.state);
                if let Some(reason) = &state.failed {
                    break Err(reason.clone());
                }
                let n = state.pending.len().min(MAX_BATCH);
                state.pending.drain(..n).collect()
            };
            if batch.is_empty() {
                break Ok(lock(&shared.state).tree.size());
            }
            match journal.append(&batch) {
                Ok(offsets) => {
                    let mut state = lock(&shared.state);
                    for (record, offset) in batch.iter().zip(offsets) {
                        state.tree.push(leaf_hash(record));
                        state.offsets.push(offset);
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    lock(&shared.state).failed = Some(reason.clone());
                    break Err(reason);
                }
            }
        };
        for waiter in waiters {
            waiter(result.clone());
        }
    }
}

#[cfg(test)]
mod tests;
