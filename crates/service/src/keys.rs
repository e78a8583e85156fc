//! The node's key book: its own Ed25519 signing keys (the one in the config, and those made by
//! rotation) and the keys it trusts for each peer (those in the config, and those the peer
//! announced since), with their windows and revocations.
//!
//! Everything learned or changed after start is kept in the store's `keys` tree, so a restart
//! trusts exactly what it trusted before. Private keys made by rotation live beside the store
//! in `keys/<KEY-ID>.key` (mode 0600), written and fsynced before their record is.
//!
//! The node signs with its newest valid own key that every peer it delivers to has
//! acknowledged; until then (or until the older key's overlap ends) it keeps signing with the
//! older key, so no peer ever sees a signature by a key it has not been told of.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use kinbridge_core::sync::{lock, read_lock, write_lock};
use kinbridge_core::{KeyId, Keyring, NodeId, NodeSigningKey, PeerKey, UnixMillis};
use kinbridge_proto::v1 as pb;
use kinbridge_store::{KeyRecord, Store, StoreError};

use crate::registry::PeerRegistry;

/// What the key book reads from and makes into a stored [`KeyRecord`].
trait KeyRecordExt: Sized {
    fn peer_key(&self) -> Result<PeerKey, KeyBookError>;
    fn from_peer_key(owner: &NodeId, key: &PeerKey, source: &str) -> Self;
}

impl KeyRecordExt for KeyRecord {
    fn peer_key(&self) -> Result<PeerKey, KeyBookError> {
        let id = KeyId::new(&self.key_id).map_err(|e| KeyBookError::Stored(e.to_string()))?;
        let bound = |ms: i64| (ms != 0).then_some(UnixMillis(ms));
        let mut key = PeerKey::from_bytes(
            id,
            &self.public_key,
            bound(self.not_before_ms),
            bound(self.not_after_ms),
        )
        .map_err(|e| KeyBookError::Stored(e.to_string()))?;
        key.revoked_at = bound(self.revoked_at_ms);
        Ok(key)
    }

    fn from_peer_key(owner: &NodeId, key: &PeerKey, source: &str) -> Self {
        Self {
            owner: owner.to_string(),
            key_id: key.id.to_string(),
            public_key: key.verifying_key().as_bytes().to_vec(),
            not_before_ms: key.not_before.map_or(0, |t| t.0),
            not_after_ms: key.not_after.map_or(0, |t| t.0),
            revoked_at_ms: key.revoked_at.map_or(0, |t| t.0),
            reason: String::new(),
            source: source.to_owned(),
            announcements: Vec::new(),
            created_at_ms: UnixMillis::now().0,
        }
    }
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyBookError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored key record is damaged.
    #[error("a stored key record is damaged: {0}")]
    Stored(String),
    /// A private key file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The request cannot be carried out; the message says why.
    #[error("{0}")]
    Refused(String),
}

struct OwnKey {
    signing: Arc<NodeSigningKey>,
    public: PeerKey,
    record: KeyRecord,
    /// Peers whose announcement of this key was delivered (config keys: everyone).
    acknowledged: BTreeSet<NodeId>,
}

impl OwnKey {
    /// Valid and not revoked at `now`: a key the node may sign with.
    fn usable_at(&self, now: UnixMillis) -> bool {
        self.public.valid_at(now) && !self.public.revoked_by(now)
    }
}

/// The node's own keys and every peer's.
pub struct KeyBook {
    node_id: NodeId,
    key_dir: PathBuf,
    /// Peers that must acknowledge a new key before the node signs with it.
    delivering_to: Vec<NodeId>,
    own: RwLock<Vec<OwnKey>>,
    peers: RwLock<HashMap<NodeId, Arc<Keyring>>>,
    peer_records: RwLock<HashMap<(NodeId, KeyId), KeyRecord>>,
    /// Serialises changes, so a check and the write it leads to see the same book.
    edit: tokio::sync::Mutex<()>,
    /// Announcements queued for a key not yet in the book, and those already delivered: a
    /// receipt can come back before the rotation that queued the announcement completes.
    announcing: std::sync::Mutex<HashMap<String, bool>>,
}

/// Overlays one of this node's own key records from the store on `own`: a record of the
/// config's key updates its validity and revocation; another key is read from `key_dir` and
/// checked against the public key on record.
fn overlay_own(
    own: &mut Vec<OwnKey>,
    record: KeyRecord,
    store: &Store,
    key_dir: &Path,
) -> Result<(), KeyBookError> {
    let public = record.peer_key()?;
    if let Some(existing) = own.iter_mut().find(|k| k.public.id == public.id) {
        if existing.public.verifying_key() != public.verifying_key() {
            return Err(KeyBookError::Refused(format!(
                "the store holds another key under the config's signing key id '{}'",
                public.id
            )));
        }
        existing.public = public;
        existing.record.not_after_ms = record.not_after_ms;
        existing.record.revoked_at_ms = record.revoked_at_ms;
        existing.record.reason = record.reason.clone();
        return Ok(());
    }
    let path = key_dir.join(format!("{}.key", record.key_id));
    let pem = std::fs::read_to_string(&path).map_err(|e| KeyBookError::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let signing = NodeSigningKey::from_pkcs8_pem(public.id.clone(), &pem).map_err(|e| {
        KeyBookError::File {
            path: path.clone(),
            reason: e.to_string(),
        }
    })?;
    if signing.verifying_key() != *public.verifying_key() {
        return Err(KeyBookError::File {
            path,
            reason: "the private key does not match the public key on record".into(),
        });
    }
    let acknowledged = acknowledged_by(store, &record)?;
    own.push(OwnKey {
        signing: Arc::new(signing),
        public,
        record,
        acknowledged,
    });
    Ok(())
}

/// Overlays a peer's key record from the store on the keyrings and records read from the
/// config: a stored record supersedes the config's view of the same key (a revocation).
fn overlay_peer(
    peer_rings: &mut HashMap<NodeId, Keyring>,
    peer_records: &mut HashMap<(NodeId, KeyId), KeyRecord>,
    record: KeyRecord,
) -> Result<(), KeyBookError> {
    let node = NodeId::new(&record.owner).map_err(|e| KeyBookError::Stored(e.to_string()))?;
    let key = record.peer_key()?;
    let ring = peer_rings.entry(node.clone()).or_default();
    let mut keys: Vec<PeerKey> = ring
        .keys()
        .iter()
        .filter(|k| k.id != key.id)
        .cloned()
        .collect();
    keys.push(key.clone());
    *ring = Keyring::new(keys);
    peer_records.insert((node, key.id.clone()), record);
    Ok(())
}

impl KeyBook {
    /// Loads the book: the config's own key and peer keys, overlaid with what the store kept.
    pub fn load(
        node_id: &NodeId,
        config_key: NodeSigningKey,
        registry: &PeerRegistry,
        store: &Store,
        key_dir: &Path,
    ) -> Result<Self, KeyBookError> {
        let delivering_to: Vec<NodeId> = registry
            .peers()
            .filter(|p| p.endpoint.is_some())
            .map(|p| p.node_id.clone())
            .collect();
        let mut peer_rings: HashMap<NodeId, Keyring> = registry
            .peers()
            .map(|p| (p.node_id.clone(), p.keyring.clone()))
            .collect();
        let mut peer_records = HashMap::new();
        for (node, ring) in &peer_rings {
            for key in ring.keys() {
                peer_records.insert(
                    (node.clone(), key.id.clone()),
                    KeyRecord::from_peer_key(node, key, "config"),
                );
            }
        }
        let config_public = PeerKey::new(
            config_key.id().clone(),
            config_key.verifying_key(),
            None,
            None,
        )
        .map_err(|e| KeyBookError::Stored(e.to_string()))?;
        let mut own = vec![OwnKey {
            record: KeyRecord::from_peer_key(node_id, &config_public, "config"),
            public: config_public,
            signing: Arc::new(config_key),
            acknowledged: delivering_to.iter().cloned().collect(),
        }];
        for record in store.key_records()? {
            if record.owner == node_id.as_str() {
                overlay_own(&mut own, record, store, key_dir)?;
            } else {
                overlay_peer(&mut peer_rings, &mut peer_records, record)?;
            }
        }
        Ok(Self {
            node_id: node_id.clone(),
            key_dir: key_dir.to_path_buf(),
            delivering_to,
            own: RwLock::new(own),
            peers: RwLock::new(
                peer_rings
                    .into_iter()
                    .map(|(n, r)| (n, Arc::new(r)))
                    .collect(),
            ),
            peer_records: RwLock::new(peer_records),
            edit: tokio::sync::Mutex::new(()),
            announcing: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The key the node signs with at `now`: the newest own key valid and not revoked that
    /// every peer has acknowledged; failing that, the newest valid one.
    pub fn signer_at(&self, now: UnixMillis) -> Arc<NodeSigningKey> {
        // Called for every message sealed: no allocation, a read lock and a short scan.
        let own = read_lock(&self.own);
        let everyone = |k: &OwnKey| {
            self.delivering_to
                .iter()
                .all(|p| k.acknowledged.contains(p))
        };
        own.iter()
            .rev()
            .find(|k| k.usable_at(now) && everyone(k))
            .or_else(|| own.iter().rev().find(|k| k.usable_at(now)))
            .or_else(|| own.last())
            .map(|k| Arc::clone(&k.signing))
            .unwrap_or_else(|| unreachable!("the config's key is always in the book"))
    }

    /// The key the node signs with now.
    pub fn signer(&self) -> Arc<NodeSigningKey> {
        self.signer_at(UnixMillis::now())
    }

    /// Every own key, public halves, for verifying the node's own checkpoints.
    pub fn own_keyring(&self) -> Keyring {
        Keyring::new(
            read_lock(&self.own)
                .iter()
                .map(|k| k.public.clone())
                .collect(),
        )
    }

    /// The keys trusted for `node`, if it is a peer.
    pub fn peer_keyring(&self, node: &NodeId) -> Option<Arc<Keyring>> {
        read_lock(&self.peers).get(node).cloned()
    }

    /// Own keys' windows, for expiry warnings and metrics: `(key id, not_after)`.
    pub fn own_expiries(&self) -> Vec<(KeyId, Option<UnixMillis>, bool)> {
        let now = UnixMillis::now();
        read_lock(&self.own)
            .iter()
            .map(|k| (k.public.id.clone(), k.public.not_after, k.usable_at(now)))
            .collect()
    }

    /// What `kinbridge keys list` shows: own keys, then peers' keys.
    pub fn list(&self) -> (Vec<pb::KeyInfo>, Vec<pb::KeyInfo>) {
        let active = self.signer();
        let own = read_lock(&self.own)
            .iter()
            .map(|k| {
                let mut info = key_info(&self.node_id, &k.public, &k.record);
                info.active = k.public.id == *active.id();
                info.acknowledged_by = k.acknowledged.iter().map(ToString::to_string).collect();
                info
            })
            .collect();
        let records = read_lock(&self.peer_records);
        let mut peers: Vec<pb::KeyInfo> = read_lock(&self.peers)
            .iter()
            .flat_map(|(node, ring)| {
                ring.keys()
                    .iter()
                    .map(|k| {
                        let record = records
                            .get(&(node.clone(), k.id.clone()))
                            .cloned()
                            .unwrap_or_default();
                        key_info(node, k, &record)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        peers.sort_by(|a, b| (&a.node_id, &a.key_id).cmp(&(&b.node_id, &b.key_id)));
        (own, peers)
    }

    /// Starts a change; changes are made one at a time.
    pub async fn edit(&self) -> KeyEdit<'_> {
        KeyEdit {
            book: self,
            _guard: self.edit.lock().await,
        }
    }

    /// Notes that `peer` acknowledged the message `message_id`: if it announced an own key,
    /// the peer now knows that key.
    /// Called for every delivered message: it takes the write lock only for an announcement.
    pub fn delivered(&self, peer: &NodeId, message_id: &str) {
        let tag = announcement_tag(peer, message_id);
        if let Some(done) = lock(&self.announcing).get_mut(&tag) {
            *done = true;
        }
        let announced = read_lock(&self.own)
            .iter()
            .any(|k| k.record.announcements.contains(&tag));
        if !announced {
            return;
        }
        let mut own = write_lock(&self.own);
        for key in own.iter_mut() {
            if key.record.announcements.contains(&tag) && key.acknowledged.insert(peer.clone()) {
                tracing::info!(key = %key.public.id, %peer, "peer acknowledged the new signing key");
            }
        }
    }
}

fn announcement_tag(peer: &NodeId, message_id: &str) -> String {
    format!("{peer}\0{message_id}")
}

/// The peers whose announcement of `record`'s key was delivered, read from the outbox.
fn acknowledged_by(store: &Store, record: &KeyRecord) -> Result<BTreeSet<NodeId>, KeyBookError> {
    let mut out = BTreeSet::new();
    for tag in &record.announcements {
        let Some((peer, message_id)) = tag.split_once('\0') else {
            continue;
        };
        let delivered = store
            .outbox_get(message_id)?
            .is_some_and(|r| r.state == pb::DeliveryState::Delivered as i32);
        if delivered && let Ok(peer) = NodeId::new(peer) {
            out.insert(peer);
        }
    }
    Ok(out)
}

fn key_info(node: &NodeId, key: &PeerKey, record: &KeyRecord) -> pb::KeyInfo {
    pb::KeyInfo {
        node_id: node.to_string(),
        key_id: key.id.to_string(),
        fingerprint: key.fingerprint(),
        not_before_ms: key.not_before.map_or(0, |t| t.0),
        not_after_ms: key.not_after.map_or(0, |t| t.0),
        revoked_at_ms: key.revoked_at.map_or(0, |t| t.0),
        revocation_reason: record.reason.clone(),
        active: false,
        acknowledged_by: Vec::new(),
        source: if record.source.is_empty() {
            "config".into()
        } else {
            record.source.clone()
        },
    }
}

/// A change to the key book in progress; holds the book's edit lock.
pub struct KeyEdit<'a> {
    book: &'a KeyBook,
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

/// A new own key, made but not yet in the book.
pub struct NewKey {
    /// The private key.
    pub signing: NodeSigningKey,
    /// Its record, to be completed with the announcements sent for it.
    pub record: KeyRecord,
}

impl KeyEdit<'_> {
    /// Makes a new own key `id` valid from now for `lifetime`, and writes its private key file
    /// (fsynced). The book is unchanged until [`Self::add_own`].
    pub async fn make_own(&self, id: KeyId, lifetime_ms: i64) -> Result<NewKey, KeyBookError> {
        let taken = read_lock(&self.book.own).iter().any(|k| k.public.id == id);
        if taken {
            return Err(KeyBookError::Refused(format!(
                "this node already has a key '{id}'; choose another id"
            )));
        }
        let signing = NodeSigningKey::generate(id.clone());
        let pem = signing
            .to_pkcs8_pem()
            .map_err(|e| KeyBookError::Refused(e.to_string()))?;
        let public_pem = signing
            .public_key_pem()
            .map_err(|e| KeyBookError::Refused(e.to_string()))?;
        let dir = self.book.key_dir.clone();
        let path = dir.join(format!("{id}.key"));
        let written = path.clone();
        tokio::task::spawn_blocking(move || write_private_key(&dir, &written, &pem, &public_pem))
            .await
            .map_err(|e| KeyBookError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| KeyBookError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let now = UnixMillis::now();
        let public = PeerKey::new(
            id,
            signing.verifying_key(),
            Some(now),
            Some(now.plus_ms(lifetime_ms)),
        )
        .map_err(|e| KeyBookError::Refused(e.to_string()))?;
        let mut record = KeyRecord::from_peer_key(&self.book.node_id, &public, "rotated");
        record.created_at_ms = now.0;
        Ok(NewKey { signing, record })
    }

    /// Notes that an announcement of a new own key is about to be queued as `message_id` for
    /// `peer`, so its receipt counts even if it comes back before [`Self::add_own`].
    pub fn announcing(&self, peer: &NodeId, message_id: &str) {
        lock(&self.book.announcing).insert(announcement_tag(peer, message_id), false);
    }

    /// Adds a new own key; every other own key still valid after `overlap_ends` ends there.
    /// `announcements` are `(peer, message id)` of the queued announcements.
    pub async fn add_own(
        &self,
        store: &Store,
        new: NewKey,
        overlap_ends: UnixMillis,
        announcements: &[(NodeId, String)],
    ) -> Result<pb::KeyInfo, KeyBookError> {
        let NewKey {
            signing,
            mut record,
        } = new;
        record.announcements = announcements
            .iter()
            .map(|(p, m)| announcement_tag(p, m))
            .collect();
        let mut shortened = Vec::new();
        for k in read_lock(&self.book.own).iter() {
            let ends_later = k.public.not_after.is_none_or(|na| na > overlap_ends);
            if ends_later && !k.public.revoked_by(overlap_ends) {
                let mut r = k.record.clone();
                r.not_after_ms = overlap_ends.0;
                shortened.push(r);
            }
        }
        let mut records = shortened.clone();
        records.push(record.clone());
        store.put_key_records(&records).await?;
        let public = record.peer_key()?;
        let mut acknowledged = acknowledged_by(store, &record)?;
        {
            let mut announcing = lock(&self.book.announcing);
            for (peer, message_id) in announcements {
                if announcing.remove(&announcement_tag(peer, message_id)) == Some(true) {
                    acknowledged.insert(peer.clone());
                }
            }
        }
        let mut own = write_lock(&self.book.own);
        for r in &shortened {
            if let Some(k) = own.iter_mut().find(|k| k.public.id.as_str() == r.key_id) {
                k.public.not_after = Some(UnixMillis(r.not_after_ms));
                k.record.not_after_ms = r.not_after_ms;
            }
        }
        let info = key_info(&self.book.node_id, &public, &record);
        own.push(OwnKey {
            signing: Arc::new(signing),
            public,
            record,
            acknowledged,
        });
        Ok(info)
    }

    /// The own key `id` as it would be once revoked at `at`, checking that another key is left
    /// to sign with.
    pub fn check_own_revocation(&self, id: &KeyId, at: UnixMillis) -> Result<(), KeyBookError> {
        let own = read_lock(&self.book.own);
        if !own.iter().any(|k| &k.public.id == id) {
            return Err(KeyBookError::Refused(format!(
                "this node has no key '{id}'"
            )));
        }
        let now = UnixMillis::now();
        let other = own.iter().any(|k| {
            // Still usable now, and not revoked by the time this revocation takes effect.
            &k.public.id != id && k.public.valid_at(now) && !k.public.revoked_by(at.max(now))
        });
        if other {
            Ok(())
        } else {
            Err(KeyBookError::Refused(format!(
                "'{id}' is the only key this node can sign with; run `kinbridge keys rotate` first, then revoke it"
            )))
        }
    }

    /// The key that would sign once own key `id` is revoked at `at`.
    pub fn signer_without(&self, id: &KeyId) -> Arc<NodeSigningKey> {
        let now = UnixMillis::now();
        let own = read_lock(&self.book.own);
        own.iter()
            .rev()
            .find(|k| &k.public.id != id && k.usable_at(now))
            .map(|k| Arc::clone(&k.signing))
            .unwrap_or_else(|| self.book.signer())
    }

    /// Revokes own key `id` from `at` on, durably.
    pub async fn revoke_own(
        &self,
        store: &Store,
        id: &KeyId,
        at: UnixMillis,
        reason: &str,
    ) -> Result<pb::KeyInfo, KeyBookError> {
        let mut record = {
            let own = read_lock(&self.book.own);
            let key = own
                .iter()
                .find(|k| &k.public.id == id)
                .ok_or_else(|| KeyBookError::Refused(format!("this node has no key '{id}'")))?;
            key.record.clone()
        };
        let effective = match record.revoked_at_ms {
            0 => at.0,
            earlier => earlier.min(at.0),
        };
        record.revoked_at_ms = effective;
        record.reason = reason.to_owned();
        store.put_key_records(std::slice::from_ref(&record)).await?;
        let mut own = write_lock(&self.book.own);
        let key = own
            .iter_mut()
            .find(|k| &k.public.id == id)
            .ok_or_else(|| KeyBookError::Refused(format!("this node has no key '{id}'")))?;
        key.public.revoked_at = Some(UnixMillis(effective));
        key.record = record;
        Ok(key_info(&self.book.node_id, &key.public, &key.record))
    }

    /// Checks that `key` may be added for `peer`: a new id, or the same key again.
    /// `Ok(false)` if it is already known.
    pub fn check_peer_key(&self, peer: &NodeId, key: &PeerKey) -> Result<bool, KeyBookError> {
        let ring = self
            .book
            .peer_keyring(peer)
            .ok_or_else(|| KeyBookError::Refused(format!("'{peer}' is not a registered peer")))?;
        match ring.get(&key.id) {
            Some(existing) if existing.verifying_key() == key.verifying_key() => Ok(false),
            Some(_) => Err(KeyBookError::Refused(format!(
                "{peer} already has another key named '{}'; a key id names one key forever",
                key.id
            ))),
            None => Ok(true),
        }
    }

    /// Adds `key` for `peer`, durably.
    pub async fn add_peer_key(
        &self,
        store: &Store,
        peer: &NodeId,
        key: PeerKey,
    ) -> Result<(), KeyBookError> {
        if !self.check_peer_key(peer, &key)? {
            return Ok(());
        }
        let record = KeyRecord::from_peer_key(peer, &key, "announced");
        store.put_key_records(std::slice::from_ref(&record)).await?;
        let mut peers = write_lock(&self.book.peers);
        let ring = peers.entry(peer.clone()).or_default();
        let mut next = (**ring).clone();
        next.insert(key.clone())
            .map_err(|e| KeyBookError::Refused(e.to_string()))?;
        *ring = Arc::new(next);
        write_lock(&self.book.peer_records).insert((peer.clone(), key.id), record);
        Ok(())
    }

    /// Checks that `peer` has a key `id` to revoke.
    pub fn check_peer_revocation(&self, peer: &NodeId, id: &KeyId) -> Result<(), KeyBookError> {
        let ring = self
            .book
            .peer_keyring(peer)
            .ok_or_else(|| KeyBookError::Refused(format!("'{peer}' is not a registered peer")))?;
        if ring.get(id).is_some() {
            Ok(())
        } else {
            Err(KeyBookError::Refused(format!(
                "this node holds no key '{id}' of {peer}"
            )))
        }
    }

    /// Revokes `peer`'s key `id` from `at` on, durably. Returns the key as now held.
    pub async fn revoke_peer_key(
        &self,
        store: &Store,
        peer: &NodeId,
        id: &KeyId,
        at: UnixMillis,
        reason: &str,
    ) -> Result<pb::KeyInfo, KeyBookError> {
        self.check_peer_revocation(peer, id)?;
        let ring = self
            .book
            .peer_keyring(peer)
            .ok_or_else(|| KeyBookError::Refused(format!("'{peer}' is not a registered peer")))?;
        let mut next = (*ring).clone();
        next.revoke(id, at)
            .map_err(|e| KeyBookError::Refused(e.to_string()))?;
        let revoked = next
            .get(id)
            .cloned()
            .ok_or_else(|| KeyBookError::Refused(format!("no key '{id}' of {peer}")))?;
        let source = read_lock(&self.book.peer_records)
            .get(&(peer.clone(), id.clone()))
            .map_or_else(|| "config".to_owned(), |r| r.source.clone());
        let mut record = KeyRecord::from_peer_key(peer, &revoked, &source);
        record.reason = reason.to_owned();
        store.put_key_records(std::slice::from_ref(&record)).await?;
        write_lock(&self.book.peers).insert(peer.clone(), Arc::new(next));
        let info = key_info(peer, &revoked, &record);
        write_lock(&self.book.peer_records).insert((peer.clone(), id.clone()), record);
        Ok(info)
    }
}

/// Writes a private key file readable by the owner only, fsynced with its directory.
/// Writes a private key (PKCS#8 v1 PEM) to `path` and its public key (SPKI PEM) beside it
/// with the extension `pub`, both 0600 in a 0700 `dir`, fsynced.
fn write_private_key(dir: &Path, path: &Path, pem: &str, public_pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    kinbridge_store::private_files::create_dir(dir)?;
    let mut file = kinbridge_store::private_files::file_options()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    let mut public = kinbridge_store::private_files::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path.with_extension("pub"))?;
    public.write_all(public_pem.as_bytes())?;
    public.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
