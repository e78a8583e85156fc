//! Administration: the node's signing keys and the keys it holds for its
//! peers. Rotating or revoking an own key publishes the change to every peer as a signed,
//! audited key update that rides the outbox like any other message.

use std::sync::Arc;

use kinbridge_core::envelope::EnvelopeDraft;
use kinbridge_core::{KeyId, NodeId, UnixMillis};
use kinbridge_proto::v1 as pb;
use prost::Message;

use crate::error::{ErrorKind, ServiceError};
use crate::identity::{LocalClient, Role};
use crate::keys::KeyBookError;
use crate::local::{LocalAuth, LocalCases};
use crate::node::Node;
use crate::outbox;

/// How long the previous key stays valid after a rotation, by default.
pub const DEFAULT_OVERLAP_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Lifetime of a new key, by default: two years.
pub const DEFAULT_KEY_LIFETIME_MS: i64 = 730 * 24 * 60 * 60 * 1000;
/// Reason codes a revocation may give.
pub const REVOCATION_REASONS: [&str; 3] = ["compromised", "superseded", "retired"];

/// A key that expires sooner than this is flagged to its administrators: 30 days, the time
/// to make and announce a new one and let every peer acknowledge it.
pub const KEY_EXPIRY_WARNING_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// The roles that run the node: peers, keys and their queues.
pub const ADMIN_ROLES: [Role; 1] = [Role::Admin];
/// The roles that may read the node's keys and their expiry.
pub const KEY_READERS: [Role; 2] = [Role::Admin, Role::Auditor];

/// The administration use cases.
pub struct Administration {
    node: Arc<Node>,
    local: LocalCases,
}

impl Administration {
    /// The use cases over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            local: LocalCases::new(Arc::clone(&node)),
            node,
        }
    }

    /// Answers a failed key operation: a refusal is recorded in the audit log.
    async fn key_failure(&self, client: &LocalClient, e: KeyBookError) -> ServiceError {
        let refused = matches!(e, KeyBookError::Refused(_));
        let status = ServiceError::from(e);
        if refused {
            self.local.refuse(&client.name, status).await
        } else {
            status
        }
    }

    async fn invalid(
        &self,
        client: &LocalClient,
        reason: &'static str,
        message: String,
    ) -> ServiceError {
        self.local
            .refuse(
                &client.name,
                ServiceError::refused(ErrorKind::InvalidArgument, reason, message),
            )
            .await
    }

    /// Seals `update` for every peer this node delivers to and queues it as `client`'s.
    /// `before_queue` sees each (peer, message id) first.
    async fn publish(
        &self,
        client: &LocalClient,
        update: &pb::KeyUpdate,
        before_queue: impl Fn(&NodeId, &str),
    ) -> Result<Vec<(NodeId, String)>, ServiceError> {
        let state = &self.node;
        let payload = update.encode_to_vec();
        let mut peers: Vec<NodeId> = state
            .registry
            .peers()
            .filter(|p| p.endpoint.is_some())
            .map(|p| p.node_id.clone())
            .collect();
        peers.sort();
        let mut queued = Vec::with_capacity(peers.len());
        for peer in peers {
            let draft = EnvelopeDraft::new(
                pb::MessageKind::KeyUpdate,
                state.node_id.clone(),
                peer.clone(),
                pb::Purpose::ServiceReferral,
            );
            let (message_id, record) =
                outbox::seal(&self.node, draft, payload.clone(), 0, |d, _| {
                    kinbridge_core::consent::permit_without_personal_data(d)
                })?;
            before_queue(&peer, &message_id);
            outbox::queue(
                state,
                &client.name,
                client.unit_str(),
                message_id.clone(),
                record,
                None,
            )
            .await?;
            queued.push((peer, message_id));
        }
        Ok(queued)
    }
}

/// The node's health as an administrator sees it: who it is and how its queues and log stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    /// This node's id.
    pub node_id: String,
    /// Its firewall tags.
    pub tags: Vec<String>,
    /// The units referrals reach here: the intake unit first.
    pub units: Vec<String>,
    /// Messages waiting for delivery to a peer.
    pub delivery_backlog: u64,
    /// Entries in its audit log.
    pub audit_log_size: u64,
    /// The id of the key it signs with now.
    pub active_key_id: String,
    /// Registered peers.
    pub peers: u64,
    /// Whether its store answered a read just now and has not failed.
    pub store_ok: bool,
}

impl Administration {
    /// The node's health: its id, delivery backlog, audit log size and whether its store
    /// reads. For administrators only (an auditor reads keys, not the node's operations).
    pub async fn health(&self, auth: Option<&LocalAuth>) -> Result<NodeHealth, ServiceError> {
        self.local
            .authorized(auth, "read the node's health", &ADMIN_ROLES)
            .await?;
        let state = Arc::clone(&self.node);
        let store_ok = tokio::task::spawn_blocking(move || {
            !state.store.failure().is_failed() && state.store.pending_heads(1).is_ok()
        })
        .await
        .unwrap_or(false);
        let node = &self.node;
        Ok(NodeHealth {
            node_id: node.node_id.to_string(),
            tags: node.tags.iter().map(ToString::to_string).collect(),
            units: std::iter::once(&node.intake_unit)
                .chain(node.units.iter().filter(|u| **u != node.intake_unit))
                .map(ToString::to_string)
                .collect(),
            delivery_backlog: node.store.queued(),
            audit_log_size: node.auditor.log().size(),
            active_key_id: node.keys.signer().id().to_string(),
            peers: node.registry.peers().count() as u64,
            store_ok,
        })
    }
}

impl Administration {
    /// The registered peers, with what is queued for each and their keys.
    pub async fn list_peers(
        &self,
        auth: Option<&LocalAuth>,
        _req: pb::ListPeersRequest,
    ) -> Result<pb::ListPeersResponse, ServiceError> {
        self.local
            .authorized(auth, "list peers", &KEY_READERS)
            .await?;
        let state = Arc::clone(&self.node);
        // The whole pending queue is read: an administrator's call, not a hot path.
        let peers = tokio::task::spawn_blocking(move || peer_infos(&state))
            .await
            .map_err(|e| ServiceError::internal(e.to_string()))??;
        Ok(pb::ListPeersResponse { peers })
    }

    /// This node's signing keys and the keys it holds for its peers.
    pub async fn list_keys(
        &self,
        auth: Option<&LocalAuth>,
        _req: pb::ListKeysRequest,
    ) -> Result<pb::ListKeysResponse, ServiceError> {
        self.local
            .authorized(auth, "list signing keys", &KEY_READERS)
            .await?;
        let (own, peers) = self.node.keys.list();
        Ok(pb::ListKeysResponse { own, peers })
    }

    /// Makes a new signing key active, keeps the previous one valid for an overlap, and
    /// publishes the new key to every peer as a signed key update.
    #[tracing::instrument(skip_all, fields(client))]
    pub async fn rotate_key(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::RotateKeyRequest,
    ) -> Result<pb::RotateKeyResponse, ServiceError> {
        let client = self
            .local
            .authorized(auth, "rotate the node's signing key", &ADMIN_ROLES)
            .await?;
        tracing::Span::current().record("client", client.name.as_str());
        let state = &self.node;
        let now = UnixMillis::now();
        let key_id = if req.key_id.is_empty() {
            format!("{}-{}", state.node_id, now.0 / 1000)
        } else {
            req.key_id.clone()
        };
        let key_id = match KeyId::new(&key_id) {
            Ok(id) => id,
            Err(e) => return Err(self.invalid(&client, "bad-key-id", e.to_string()).await),
        };
        let ms = |seconds: u64, default: i64| match seconds {
            0 => default,
            s => i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000),
        };
        let overlap_ms = ms(req.overlap_seconds, DEFAULT_OVERLAP_MS);
        let lifetime_ms = ms(req.lifetime_seconds, DEFAULT_KEY_LIFETIME_MS);
        if lifetime_ms <= overlap_ms || lifetime_ms > 10 * DEFAULT_KEY_LIFETIME_MS {
            let why = format!(
                "lifetime_seconds must be longer than overlap_seconds ({}) and at most {}",
                overlap_ms / 1000,
                10 * DEFAULT_KEY_LIFETIME_MS / 1000
            );
            return Err(self.invalid(&client, "bad-key-window", why).await);
        }
        let edit = state.keys.edit().await;
        let new = match edit.make_own(key_id.clone(), lifetime_ms).await {
            Ok(new) => new,
            Err(e) => return Err(self.key_failure(&client, e).await),
        };
        let public_key_pem = new
            .signing
            .public_key_pem()
            .map_err(|e| ServiceError::internal(e.to_string()))?;
        let mut entry = state.auditor.entry(pb::AuditEvent::KeyAdded);
        entry.actor = client.name.clone();
        entry.reason = key_id.to_string();
        state.auditor.record(&entry).await?;
        // Announced under the current key, which every peer already trusts.
        let announce = pb::KeyUpdate {
            update: Some(pb::key_update::Update::Announce(pb::KeyAnnouncement {
                key_id: key_id.to_string(),
                public_key: new.signing.verifying_key().as_bytes().to_vec(),
                not_before_ms: new.record.not_before_ms,
                not_after_ms: new.record.not_after_ms,
            })),
        };
        let queued = self
            .publish(&client, &announce, |peer, id| edit.announcing(peer, id))
            .await?;
        // The overlap runs from the moment the new key is valid.
        let overlap_ends = UnixMillis(new.record.not_before_ms).plus_ms(overlap_ms);
        let key = match edit.add_own(&state.store, new, overlap_ends, &queued).await {
            Ok(info) => info,
            Err(e) => return Err(self.key_failure(&client, e).await),
        };
        drop(edit);
        tracing::info!(key = %key_id, peers = queued.len(), "new signing key made and announced");
        Ok(pb::RotateKeyResponse {
            key: Some(key),
            announced_to: queued.into_iter().map(|(p, _)| p.to_string()).collect(),
            public_key_pem,
        })
    }

    /// Revokes a signing key, this node's own (published to every peer) or one it holds for
    /// a peer (here only).
    #[tracing::instrument(skip_all, fields(client))]
    pub async fn revoke_key(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::RevokeKeyRequest,
    ) -> Result<pb::RevokeKeyResponse, ServiceError> {
        let client = self
            .local
            .authorized(auth, "revoke signing keys", &ADMIN_ROLES)
            .await?;
        tracing::Span::current().record("client", client.name.as_str());
        let state = &self.node;
        let key_id = match KeyId::new(&req.key_id) {
            Ok(id) => id,
            Err(e) => return Err(self.invalid(&client, "bad-key-id", e.to_string()).await),
        };
        if !REVOCATION_REASONS.contains(&req.reason.as_str()) {
            let why = format!(
                "reason must be one of: {}; not '{}'",
                REVOCATION_REASONS.join(", "),
                req.reason.chars().take(32).collect::<String>()
            );
            return Err(self.invalid(&client, "bad-reason", why).await);
        }
        let at = match req.revoked_at_ms {
            0 => UnixMillis::now(),
            ms if ms > 0 => UnixMillis(ms),
            _ => {
                let why = "revoked_at_ms must be positive, or 0 for now".to_owned();
                return Err(self.invalid(&client, "bad-time", why).await);
            }
        };
        let own = req.node_id.is_empty() || req.node_id == state.node_id.as_str();
        let edit = state.keys.edit().await;
        let mut entry = state.auditor.entry(pb::AuditEvent::KeyRevoked);
        entry.actor = client.name.clone();
        entry.reason = format!("{key_id}:{}", req.reason);
        if own {
            if let Err(e) = edit.check_own_revocation(&key_id, at) {
                return Err(self.key_failure(&client, e).await);
            }
            state.auditor.record(&entry).await?;
            let key = match edit
                .revoke_own(&state.store, &key_id, at, &req.reason)
                .await
            {
                Ok(info) => info,
                Err(e) => return Err(self.key_failure(&client, e).await),
            };
            // Signed by a key that stays valid; queued behind any announcement of it.
            let revoke = pb::KeyUpdate {
                update: Some(pb::key_update::Update::Revoke(pb::KeyRevocation {
                    key_id: key_id.to_string(),
                    revoked_at_ms: key.revoked_at_ms,
                    reason: req.reason.clone(),
                })),
            };
            let queued = self.publish(&client, &revoke, |_, _| {}).await?;
            drop(edit);
            tracing::warn!(key = %key_id, reason = %req.reason, peers = queued.len(), "own signing key revoked and the revocation published");
            return Ok(pb::RevokeKeyResponse {
                key: Some(key),
                announced_to: queued.into_iter().map(|(p, _)| p.to_string()).collect(),
            });
        }
        let peer = match NodeId::new(&req.node_id) {
            Ok(p) => p,
            Err(e) => return Err(self.invalid(&client, "bad-node-id", e.to_string()).await),
        };
        if let Err(e) = edit.check_peer_revocation(&peer, &key_id) {
            return Err(self.key_failure(&client, e).await);
        }
        entry.peer = peer.to_string();
        state.auditor.record(&entry).await?;
        let key = match edit
            .revoke_peer_key(&state.store, &peer, &key_id, at, &req.reason)
            .await
        {
            Ok(info) => info,
            Err(e) => return Err(self.key_failure(&client, e).await),
        };
        drop(edit);
        tracing::warn!(%peer, key = %key_id, reason = %req.reason, "peer's signing key revoked here");
        Ok(pb::RevokeKeyResponse {
            key: Some(key),
            announced_to: Vec::new(),
        })
    }
}

fn peer_infos(state: &Node) -> Result<Vec<pb::PeerInfo>, kinbridge_store::StoreError> {
    let now = UnixMillis::now();
    let mut peers: Vec<pb::PeerInfo> = state
        .registry
        .peers()
        .map(|p| pb::PeerInfo {
            node_id: p.node_id.to_string(),
            endpoint: p.endpoint.clone().unwrap_or_default(),
            tags: p.tags.iter().map(ToString::to_string).collect(),
            trusted_key_ids: state
                .keys
                .peer_keyring(&p.node_id)
                .map(|ring| {
                    ring.keys()
                        .iter()
                        .filter(|k| k.valid_at(now) && !k.revoked_by(now))
                        .map(|k| k.id.to_string())
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        })
        .collect();
    peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    for (_, record) in state.store.pending(usize::MAX)? {
        if let Some(peer) = peers.iter_mut().find(|p| p.node_id == record.recipient) {
            if peer.queued == 0 {
                peer.oldest_queued_at_ms = record.submitted_at_ms;
                peer.last_error = record.last_error.clone();
            }
            peer.queued += 1;
        }
    }
    for peer in &mut peers {
        let Ok(node) = NodeId::new(&peer.node_id) else {
            continue;
        };
        let held = state.store.held_checkpoint(&peer.node_id)?;
        if let (Some(note), Some(ring)) = (held, state.keys.peer_keyring(&node))
            && let Ok(cp) = crate::audit::verify_peer_note(&note, &node, &ring)
        {
            peer.held_checkpoint_size = cp.size;
        }
    }
    Ok(peers)
}
