//! kinbridge audit log: every transfer event is a leaf of an RFC 9162 Merkle tree, kept in an
//! fsynced append-only journal, with checkpoints signed in the C2SP signed-note format.
//!
//! The pure parts (the tree and its proofs, checkpoints, export verification, reconciliation)
//! do no I/O beyond reading what they are given; [`journal`] and [`log`] own the files. No
//! gRPC here: the node serves the log.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod entry;
pub mod export;
pub mod journal;
pub mod log;
pub mod merkle;
pub mod reconcile;

pub use checkpoint::{Checkpoint, CheckpointError, NoteKey};
pub use log::{AuditLog, LogError};
pub use merkle::{Hash, MerkleTree};
