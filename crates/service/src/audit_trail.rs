//! The audit trail's use cases, on both ports: local auditors and admins may use every call;
//! peers may fetch checkpoints and proofs (no entry contents), so they can hold this node to
//! its history. Checking the peers' logs in turn goes through [`crate::link::PeerLink`].

pub mod review;

use std::sync::Arc;
use std::time::Duration;

use kinbridge_audit::checkpoint::VerifiedCheckpoint;
use kinbridge_audit::merkle::verify_consistency;
use kinbridge_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::audit::verify_peer_note;
use crate::error::{ErrorKind, ServiceError};
use crate::identity::Role;
use crate::link::LinkError;
use crate::local::{LocalAuth, authorize};
use crate::node::Node;
use crate::registry::{Peer, PeerAuth};

/// Entries per export chunk.
pub const EXPORT_CHUNK: usize = 1000;
/// Longest a `GetCheckpoint` call waits.
pub const MAX_CHECKPOINT_WAIT: Duration = Duration::from_secs(30);

/// Who calls, as its port's certificate check proved it (`None`: no verified certificate).
#[derive(Debug, Clone, Copy)]
pub enum AuditCaller<'a> {
    /// A peer node, on the peer port.
    Peer(Option<&'a PeerAuth>),
    /// One of the authority's own clients, on the local port.
    Local(Option<&'a LocalAuth>),
}

/// The audit trail's use cases.
pub struct AuditTrail {
    node: Arc<Node>,
}

/// The roles that may read and check the audit log.
pub const AUDIT_ROLES: [Role; 2] = [Role::Auditor, Role::Admin];

impl AuditTrail {
    /// The use cases over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Checks the caller may `action`: a registered peer (if `peers_may`) on the peer port, an
    /// auditor or admin on the local port. A refusal is recorded in the audit log.
    async fn allow(
        &self,
        caller: AuditCaller<'_>,
        action: &str,
        peers_may: bool,
    ) -> Result<(), ServiceError> {
        let denied = match caller {
            AuditCaller::Local(auth) => authorize(auth, action, &AUDIT_ROLES).err(),
            AuditCaller::Peer(auth) => match auth {
                Some(Ok(_)) if peers_may => None,
                Some(Ok(node)) => Some((
                    node.to_string(),
                    ServiceError::refused(
                        ErrorKind::PermissionDenied,
                        "local-only",
                        format!("peers may not {action}; an auditor of this authority can"),
                    ),
                )),
                Some(Err(e)) => Some(("(unauthenticated peer)".into(), ServiceError::from(e))),
                None => Some((
                    "(unauthenticated peer)".into(),
                    ServiceError::new(
                        ErrorKind::Unauthenticated,
                        "no verified TLS client certificate",
                    ),
                )),
            },
        };
        let Some((who, status)) = denied else {
            return Ok(());
        };
        let mut entry = self.node.auditor.entry(pb::AuditEvent::Refused);
        match caller {
            AuditCaller::Local(_) => entry.actor = who,
            AuditCaller::Peer(_) => entry.peer = who,
        }
        entry.reason = status.refusal_reason();
        Err(self.node.auditor.record_refusal(&entry, status).await)
    }
}

fn out_of_range(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::refused(ErrorKind::OutOfRange, "out-of-range", e.to_string())
}

impl AuditTrail {
    /// The latest signed checkpoint, waiting up to `wait_ms` (at most
    /// [`MAX_CHECKPOINT_WAIT`]) for one of at least `min_size` entries.
    pub async fn get_checkpoint(
        &self,
        caller: AuditCaller<'_>,
        req: pb::GetCheckpointRequest,
    ) -> Result<pb::GetCheckpointResponse, ServiceError> {
        self.allow(caller, "read checkpoints", true).await?;
        let auditor = &self.node.auditor;
        let wait = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_CHECKPOINT_WAIT);
        let mut sizes = auditor.subscribe_checkpoints();
        let mut stopping = self.node.stopping.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(wait, sizes.wait_for(|s| *s >= req.min_size)) => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
        Ok(pb::GetCheckpointResponse {
            checkpoint: auditor.latest_note(),
        })
    }

    /// The proof that entry `index` is in the log of `tree_size` entries (with the entry, for
    /// a local caller).
    pub async fn get_inclusion_proof(
        &self,
        caller: AuditCaller<'_>,
        req: pb::GetInclusionProofRequest,
    ) -> Result<pb::GetInclusionProofResponse, ServiceError> {
        self.allow(caller, "read inclusion proofs", true).await?;
        let log = self.node.auditor.log();
        let hashes = log
            .inclusion_proof(req.index, req.tree_size)
            .map_err(out_of_range)?;
        let entry = match caller {
            AuditCaller::Local(_) => log
                .read_entries(req.index, req.index + 1)
                .map_err(out_of_range)?
                .pop()
                .unwrap_or_default(),
            AuditCaller::Peer(_) => Vec::new(),
        };
        Ok(pb::GetInclusionProofResponse {
            index: req.index,
            tree_size: req.tree_size,
            hashes: hashes.into_iter().map(|h| h.to_vec()).collect(),
            entry,
        })
    }

    /// The proof that the log of `second_size` entries extends the one of `first_size`.
    pub async fn get_consistency_proof(
        &self,
        caller: AuditCaller<'_>,
        req: pb::GetConsistencyProofRequest,
    ) -> Result<pb::GetConsistencyProofResponse, ServiceError> {
        self.allow(caller, "read consistency proofs", true).await?;
        let hashes = self
            .node
            .auditor
            .log()
            .consistency_proof(req.first_size, req.second_size)
            .map_err(out_of_range)?;
        Ok(pb::GetConsistencyProofResponse {
            hashes: hashes.into_iter().map(|h| h.to_vec()).collect(),
        })
    }

    /// The whole log up to a fresh checkpoint, in chunks, with every checkpoint it covers.
    pub async fn export_log(
        &self,
        caller: AuditCaller<'_>,
        _req: pb::ExportLogRequest,
    ) -> Result<mpsc::Receiver<Result<pb::ExportLogChunk, ServiceError>>, ServiceError> {
        self.allow(caller, "export the audit log", false).await?;
        let state = Arc::clone(&self.node);
        // A fresh checkpoint covers everything durable now; the export stops there.
        let covered = state.auditor.checkpoint(&state.keys.signer()).await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let origin = state.auditor.log().origin().to_owned();
            let mut start = 0u64;
            let mut first = true;
            loop {
                let end = (start + EXPORT_CHUNK as u64).min(covered.size);
                let state_for_read = Arc::clone(&state);
                let read = tokio::task::spawn_blocking(move || {
                    state_for_read.auditor.log().read_entries(start, end)
                })
                .await;
                let entries = match read {
                    Ok(Ok(entries)) => entries,
                    Ok(Err(e)) => {
                        let _ = tx
                            .send(Err(ServiceError::internal(format!(
                                "cannot read the audit log: {e}"
                            ))))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(ServiceError::internal(format!(
                                "cannot read the audit log: {e}"
                            ))))
                            .await;
                        return;
                    }
                };
                let last = end >= covered.size;
                let checkpoints = if last {
                    state
                        .auditor
                        .log()
                        .checkpoints()
                        .into_iter()
                        .filter(|c| c.size <= covered.size)
                        .map(|c| c.note)
                        .collect()
                } else {
                    Vec::new()
                };
                let chunk = pb::ExportLogChunk {
                    origin: if first { origin.clone() } else { String::new() },
                    first_index: start,
                    entries,
                    checkpoints,
                };
                first = false;
                if tx.send(Ok(chunk)).await.is_err() || last {
                    return;
                }
                start = end;
            }
        });
        Ok(rx)
    }

    /// Checks the local caller `auth` may review the log (`action`, as its refusal names it):
    /// an auditor or admin. A refusal is recorded in the audit log. For a face that must know
    /// before it reads a large upload, or draws a form only a reviewer can send.
    pub async fn admit_reviewer(
        &self,
        auth: Option<&LocalAuth>,
        action: &str,
    ) -> Result<(), ServiceError> {
        self.allow(AuditCaller::Local(auth), action, false).await
    }

    /// Checks every peer's log: its checkpoint verified and proved consistent with the one
    /// held, each result logged.
    pub async fn check_peers(
        &self,
        caller: AuditCaller<'_>,
        _req: pb::CheckPeersRequest,
    ) -> Result<pb::CheckPeersResponse, ServiceError> {
        self.allow(caller, "check peers", false).await?;
        let state = &self.node;
        let mut peers: Vec<&Peer> = state
            .registry
            .peers()
            .filter(|p| p.endpoint.is_some())
            .collect();
        peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let mut results = Vec::with_capacity(peers.len());
        for peer in peers {
            let (check, note) = check_peer(state, peer).await;
            let mut entry = state.auditor.entry(pb::AuditEvent::PeerChecked);
            entry.peer = peer.node_id.to_string();
            entry.reason = if check.consistent {
                "consistent".into()
            } else {
                check
                    .detail
                    .split(':')
                    .next()
                    .unwrap_or("failed")
                    .to_owned()
            };
            entry.peer_checkpoint = note;
            state.auditor.record(&entry).await?;
            if check.consistent {
                tracing::info!(peer = %peer.node_id, size = check.current_size, "peer log consistent");
            } else {
                tracing::error!(peer = %peer.node_id, detail = %check.detail, "peer log check failed");
            }
            results.push(check);
        }
        Ok(pb::CheckPeersResponse { peers: results })
    }
}

/// Checks one peer: fetch its checkpoint, prove it consistent with the one held, hold it.
async fn check_peer(state: &Node, peer: &Peer) -> (pb::PeerCheck, String) {
    let node = &peer.node_id;
    let keyring = state.keys.peer_keyring(node).unwrap_or_default();
    let mut check = pb::PeerCheck {
        peer: node.to_string(),
        ..Default::default()
    };
    let (held, note) = match fetch_checkpoint(state, peer).await {
        Ok(fetched) => fetched,
        Err(detail) => {
            check.detail = detail;
            return (check, String::new());
        }
    };
    let current = match verify_peer_note(&note, node, &keyring) {
        Ok(c) => c,
        Err(e) => {
            check.detail =
                format!("bad-checkpoint: the checkpoint {node} served does not verify: {e}");
            return (check, note);
        }
    };
    check.current_size = current.size;
    let Some(held_note) = held else {
        check.consistent = true;
        check.detail = format!(
            "first checkpoint held (size {}); nothing to compare yet: the next check proves {node}'s log consistent with it",
            current.size
        );
        hold_checked(state, node, &note).await;
        return (check, note);
    };
    let held = match verify_peer_note(&held_note, node, &keyring) {
        Ok(h) => h,
        Err(e) => {
            check.detail = format!(
                "bad-held-checkpoint: the checkpoint held for {node} no longer verifies: {e}"
            );
            return (check, note);
        }
    };
    check.held_size = held.size;
    if held.size == 0 {
        // Every log extends an empty one: a proof from size 0 proves nothing, so say so.
        check.consistent = true;
        check.detail = format!(
            "the checkpoint held was of an empty log, so there is nothing to compare yet; now holding size {}: the next check proves {node}'s log consistent with it",
            current.size
        );
        hold_checked(state, node, &note).await;
        return (check, note);
    }
    if current.size < held.size {
        check.detail = format!(
            "inconsistent: {node}'s log has {} entries now but signed a checkpoint of {} before: it was truncated or rewritten",
            current.size, held.size
        );
        return (check, note);
    }
    match prove_consistent(state, peer, &held, &current).await {
        Ok(()) => {
            check.consistent = true;
            check.detail = format!("consistent from size {} to {}", held.size, current.size);
            hold_checked(state, node, &note).await;
        }
        Err(detail) => check.detail = detail,
    }
    (check, note)
}

/// The checkpoint held for `peer` (if any) and the checkpoint it serves now (not yet
/// verified); or why the check could not get that far.
async fn fetch_checkpoint(state: &Node, peer: &Peer) -> Result<(Option<String>, String), String> {
    let held = state
        .store
        .held_checkpoint(peer.node_id.as_str())
        .map_err(|e| format!("not-checked: {}", ServiceError::from(e).message()))?;
    let note = state.link.checkpoint(peer).await.map_err(|e| match e {
        LinkError::NoRoute(e) => format!("not-checked: {e}"),
        LinkError::Call(e) => format!("unreachable: {:?}: {}", e.kind(), e.message()),
    })?;
    Ok((held, note))
}

/// Asks `peer` for the proof that its log of `current` extends the one of `held` and checks
/// it (RFC 9162 §2.1.4); the error is the check's detail.
async fn prove_consistent(
    state: &Node,
    peer: &Peer,
    held: &VerifiedCheckpoint,
    current: &VerifiedCheckpoint,
) -> Result<(), String> {
    let node = &peer.node_id;
    let proof = state
        .link
        .consistency_proof(peer, held.size, current.size)
        .await
        .map_err(|e| format!("unreachable: no consistency proof: {e}"))?;
    let proof: Option<Vec<[u8; 32]>> = proof
        .iter()
        .map(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
        .collect();
    proof
        .ok_or_else(|| "a proof hash is not 32 bytes".to_owned())
        .and_then(|p| {
            verify_consistency(held.size, current.size, &p, &held.root, &current.root)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            format!(
                "inconsistent: {node}'s checkpoint of size {} is not an extension of the one of size {} it signed before ({e}): its log was rewritten",
                current.size, held.size
            )
        })
}

/// Holds `note`, just checked, as the checkpoint the next check of `node` starts from. A failure
/// is logged: the next check then starts from the older one, which is still sound.
async fn hold_checked(state: &Node, node: &kinbridge_core::NodeId, note: &str) {
    if let Err(e) = state.store.hold_checkpoint(node.as_str(), note).await {
        tracing::error!(peer = %node, error = %e, "cannot hold the checked checkpoint; the next check starts from the one held before");
    }
}
