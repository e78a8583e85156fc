//! The audit service, served on both listeners: local auditors and admins may use every call;
//! peers may fetch checkpoints and proofs (no entry contents), so they can hold this node to
//! its history.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use kinbridge_audit::checkpoint::VerifiedCheckpoint;
use kinbridge_audit::merkle::verify_consistency;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::audit_service_client::AuditServiceClient;
use kinbridge_proto::v1::audit_service_server::AuditService;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::audit::verify_peer_note;
use crate::identity::Role;
use crate::local_service::authorize;
use crate::registry::{Peer, PeerAuth};
use crate::server::NodeState;
use crate::status::{peer_auth_status, refused, store_status};
use crate::tls::ConnInfo;

/// Entries per export chunk.
pub const EXPORT_CHUNK: usize = 1000;
/// Longest a `GetCheckpoint` call waits.
pub const MAX_CHECKPOINT_WAIT: Duration = Duration::from_secs(30);
/// Bound on each call `CheckPeers` makes to a peer.
pub const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Which listener the service is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The peer port: callers are peer nodes.
    Peer,
    /// The local port: callers are the authority's clients.
    Local,
}

/// The `AuditService` implementation for one listener.
pub struct AuditApi {
    state: Arc<NodeState>,
    side: Side,
}

const AUDIT_ROLES: [Role; 2] = [Role::Auditor, Role::Admin];

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportLogChunk, Status>> + Send>>;

impl AuditApi {
    /// The service for `side`.
    pub fn new(state: Arc<NodeState>, side: Side) -> Self {
        Self { state, side }
    }

    /// Checks the caller may `action`: a registered peer (if `peers_may`) on the peer port, an
    /// auditor or admin on the local port. A refusal is recorded in the audit log.
    async fn allow<T>(
        &self,
        request: &Request<T>,
        action: &str,
        peers_may: bool,
    ) -> Result<(), Status> {
        let denied = match self.side {
            Side::Local => authorize(request, action, &AUDIT_ROLES).err(),
            Side::Peer => match request
                .extensions()
                .get::<ConnInfo<PeerAuth>>()
                .map(|i| i.auth.clone())
            {
                Some(Ok(_)) if peers_may => None,
                Some(Ok(node)) => Some((
                    node.to_string(),
                    refused(
                        Code::PermissionDenied,
                        "local-only",
                        format!("peers may not {action}; an auditor of this authority can"),
                    ),
                )),
                Some(Err(e)) => Some(("(unauthenticated peer)".into(), peer_auth_status(&e))),
                None => Some((
                    "(unauthenticated peer)".into(),
                    Status::unauthenticated("no verified TLS client certificate"),
                )),
            },
        };
        let Some((caller, status)) = denied else {
            return Ok(());
        };
        let mut entry = self.state.auditor.entry(pb::AuditEvent::Refused);
        match self.side {
            Side::Local => entry.actor = caller,
            Side::Peer => entry.peer = caller,
        }
        entry.reason = crate::status::refusal_reason(&status);
        Err(self.state.auditor.record_refusal(&entry, status).await)
    }
}

fn out_of_range(e: impl std::fmt::Display) -> Status {
    refused(Code::OutOfRange, "out-of-range", e.to_string())
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        self.allow(&request, "read checkpoints", true).await?;
        let req = request.into_inner();
        let auditor = &self.state.auditor;
        let wait = Duration::from_millis(u64::from(req.wait_ms)).min(MAX_CHECKPOINT_WAIT);
        let mut sizes = auditor.subscribe_checkpoints();
        let mut stopping = self.state.stopping.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(wait, sizes.wait_for(|s| *s >= req.min_size)) => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
        Ok(Response::new(pb::GetCheckpointResponse {
            checkpoint: auditor.latest_note(),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        self.allow(&request, "read inclusion proofs", true).await?;
        let req = request.into_inner();
        let log = self.state.auditor.log();
        let hashes = log
            .inclusion_proof(req.index, req.tree_size)
            .map_err(out_of_range)?;
        let entry = match self.side {
            Side::Local => log
                .read_entries(req.index, req.index + 1)
                .map_err(out_of_range)?
                .pop()
                .unwrap_or_default(),
            Side::Peer => Vec::new(),
        };
        Ok(Response::new(pb::GetInclusionProofResponse {
            index: req.index,
            tree_size: req.tree_size,
            hashes: hashes.into_iter().map(|h| h.to_vec()).collect(),
            entry,
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        self.allow(&request, "read consistency proofs", true)
            .await?;
        let req = request.into_inner();
        let hashes = self
            .state
            .auditor
            .log()
            .consistency_proof(req.first_size, req.second_size)
            .map_err(out_of_range)?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            hashes: hashes.into_iter().map(|h| h.to_vec()).collect(),
        }))
    }

    type ExportLogStream = ExportStream;

    async fn export_log(
        &self,
        request: Request<pb::ExportLogRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        self.allow(&request, "export the audit log", false).await?;
        let state = Arc::clone(&self.state);
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
                            .send(Err(Status::internal(format!(
                                "cannot read the audit log: {e}"
                            ))))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!(
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
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn check_peers(
        &self,
        request: Request<pb::CheckPeersRequest>,
    ) -> Result<Response<pb::CheckPeersResponse>, Status> {
        self.allow(&request, "check peers", false).await?;
        let state = &self.state;
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
        Ok(Response::new(pb::CheckPeersResponse { peers: results }))
    }
}

/// Checks one peer: fetch its checkpoint, prove it consistent with the one held, hold it.
async fn check_peer(state: &NodeState, peer: &Peer) -> (pb::PeerCheck, String) {
    let node = &peer.node_id;
    let keyring = state.keys.peer_keyring(node).unwrap_or_default();
    let mut check = pb::PeerCheck {
        peer: node.to_string(),
        ..Default::default()
    };
    let (held, mut client, note) = match fetch_checkpoint(state, peer).await {
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
    match prove_consistent(&mut client, node, &held, &current).await {
        Ok(()) => {
            check.consistent = true;
            check.detail = format!("consistent from size {} to {}", held.size, current.size);
            hold_checked(state, node, &note).await;
        }
        Err(detail) => check.detail = detail,
    }
    (check, note)
}

/// The checkpoint held for `peer` (if any), a client of its audit service, and the checkpoint
/// it serves now (not yet verified); or why the check could not get that far.
async fn fetch_checkpoint(
    state: &NodeState,
    peer: &Peer,
) -> Result<(Option<String>, AuditServiceClient<Channel>, String), String> {
    let held = state
        .store
        .held_checkpoint(peer.node_id.as_str())
        .map_err(|e| format!("not-checked: {}", store_status(&e).message()))?;
    let channel = state
        .peer_channel(peer)
        .map_err(|e| format!("not-checked: {e}"))?;
    let mut client = AuditServiceClient::new(channel);
    let mut request = Request::new(pb::GetCheckpointRequest::default());
    request.set_timeout(PEER_CHECK_TIMEOUT);
    let note = client
        .get_checkpoint(request)
        .await
        .map_err(|e| format!("unreachable: {:?}: {}", e.code(), e.message()))?
        .into_inner()
        .checkpoint;
    Ok((held, client, note))
}

/// Asks `node` for the proof that its log of `current` extends the one of `held` and checks
/// it (RFC 9162 §2.1.4); the error is the check's detail.
async fn prove_consistent(
    client: &mut AuditServiceClient<Channel>,
    node: &kinbridge_core::NodeId,
    held: &VerifiedCheckpoint,
    current: &VerifiedCheckpoint,
) -> Result<(), String> {
    let mut request = Request::new(pb::GetConsistencyProofRequest {
        first_size: held.size,
        second_size: current.size,
    });
    request.set_timeout(PEER_CHECK_TIMEOUT);
    let proof = match client.get_consistency_proof(request).await {
        Ok(r) => r.into_inner().hashes,
        Err(e) => {
            return Err(format!(
                "unreachable: no consistency proof: {:?}: {}",
                e.code(),
                e.message()
            ));
        }
    };
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
async fn hold_checked(state: &NodeState, node: &kinbridge_core::NodeId, note: &str) {
    if let Err(e) = state.store.hold_checkpoint(node.as_str(), note).await {
        tracing::error!(peer = %node, error = %e, "cannot hold the checked checkpoint; the next check starts from the one held before");
    }
}
