//! Family tracing on a node: tracing records (children whose case consents to tracing) and
//! tracing requests (families looking for a child), the queries a request sends, the match
//! notices, the caseworkers' reviews and the disclosures.
//!
//! What a case holds (names, dates, places) is personal data: it lives in the payload store,
//! so a withdrawal purges it for real; sled keeps only ids, handles, bands, consent scopes and
//! times. The encodings are kept in memory, made again from the cases and the received queries
//! at start. Only encodings, handles and bands cross a border before both caseworkers have
//! confirmed a match; then each end discloses the agreed fields of its own case, under that
//! case's consent (see docs/tracing.md).

use std::sync::Arc;

use kinbridge_core::consent::{self, TransferContext};
use kinbridge_core::envelope::EnvelopeDraft;
use kinbridge_core::family_tracing::{MAX_CANDIDATES, agreed_fields, random_handle};
use kinbridge_core::referral::minimise;
use kinbridge_core::{MessageId, NodeId, UnixMillis};
use kinbridge_linkage::{BANDS, Band, Descriptor, Encoding, LinkageKey, SCHEMA, Sex, encode};
use kinbridge_proto::v1 as pb;
use kinbridge_store::StoreError;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tonic::{Code, Status};

use crate::local_service::LocalApi;
use crate::server::NodeState;
use crate::status::{refused, store_status};

/// The actor the audit log names for messages the node sends by itself (a match notice, a
/// disclosure once both ends confirmed).
pub const NODE_ACTOR: &str = "(node)";

/// A tracing case as sled keeps it: no personal data.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CaseRecord {
    /// Its id, a UUID.
    #[prost(string, tag = "1")]
    pub case_id: String,
    /// A `pb::TracingCaseKind`.
    #[prost(int32, tag = "2")]
    pub kind: i32,
    /// The unit of the caseworker who registered it.
    #[prost(string, tag = "3")]
    pub unit: String,
    /// The consent it relies on.
    #[prost(message, optional, tag = "4")]
    pub consent: Option<pb::ConsentScope>,
    /// When it was registered.
    #[prost(int64, tag = "5")]
    pub registered_at_ms: i64,
    /// When its data was purged (consent withdrawn); 0 if it was not.
    #[prost(int64, tag = "6")]
    pub purged_at_ms: i64,
    /// A request's queries.
    #[prost(message, repeated, tag = "7")]
    pub queries: Vec<SentQuery>,
}

/// A query sent for a request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SentQuery {
    /// The peer queried.
    #[prost(string, tag = "1")]
    pub peer: String,
    /// The query's one-time handle.
    #[prost(string, tag = "2")]
    pub handle: String,
    /// The envelope's message id.
    #[prost(string, tag = "3")]
    pub message_id: String,
}

/// A peer's query received here: where to find its encoding (the inbox) and how long it
/// stands.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryRecord {
    /// The querying node.
    #[prost(string, tag = "1")]
    pub peer: String,
    /// Its handle.
    #[prost(string, tag = "2")]
    pub handle: String,
    /// The envelope's message id, to find it in the inbox.
    #[prost(string, tag = "3")]
    pub message_id: String,
    /// The family's consent it relies on.
    #[prost(string, tag = "4")]
    pub consent_id: String,
    /// The envelope's expiry: the query stands until then.
    #[prost(int64, tag = "5")]
    pub expires_at_ms: i64,
    /// The linkage key's epoch.
    #[prost(uint32, tag = "6")]
    pub key_epoch: u32,
    /// The inbox unit its notices belong to.
    #[prost(string, tag = "7")]
    pub unit: String,
}

/// A match between a case here and one at a peer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MatchRecord {
    /// Its id here, a UUID.
    #[prost(string, tag = "1")]
    pub match_id: String,
    /// This node's case.
    #[prost(string, tag = "2")]
    pub case_id: String,
    /// A `pb::TracingCaseKind`: this node's case's kind.
    #[prost(int32, tag = "3")]
    pub case_kind: i32,
    /// The node holding the other case.
    #[prost(string, tag = "4")]
    pub peer: String,
    /// The query's handle.
    #[prost(string, tag = "5")]
    pub query_handle: String,
    /// The candidate's handle.
    #[prost(string, tag = "6")]
    pub candidate_handle: String,
    /// A `pb::MatchBand`.
    #[prost(int32, tag = "7")]
    pub band: i32,
    /// When it was noted.
    #[prost(int64, tag = "8")]
    pub noticed_at_ms: i64,
    /// When a caseworker here confirmed it (0: not yet).
    #[prost(int64, tag = "9")]
    pub confirmed_here_at_ms: i64,
    /// When the peer's caseworker confirmed it (0: not yet).
    #[prost(int64, tag = "10")]
    pub confirmed_by_peer_at_ms: i64,
    /// Whether a caseworker here or at the peer ruled it out.
    #[prost(bool, tag = "11")]
    pub ruled_out: bool,
    /// This node's disclosure, once sent.
    #[prost(string, tag = "12")]
    pub disclosure_sent: String,
    /// The peer's disclosure's message id, once received.
    #[prost(string, tag = "13")]
    pub disclosure_received: String,
}

impl MatchRecord {
    fn confirmed(&self) -> bool {
        !self.ruled_out && self.confirmed_here_at_ms != 0 && self.confirmed_by_peer_at_ms != 0
    }
}

/// A record held here, ready to compare.
struct IndexedRecord {
    case_id: String,
    consent: pb::ConsentScope,
    /// One encoding per linkage-key epoch held.
    encodings: Vec<(u32, Encoding)>,
}

/// A standing query of a peer.
struct IndexedQuery {
    record: QueryRecord,
    encoding: Encoding,
}

#[derive(Default)]
struct Index {
    records: Vec<IndexedRecord>,
    queries: Vec<IndexedQuery>,
}

/// A refusal of a peer's tracing message: a reason code and what was wrong. The sender gets
/// it in a signed negative receipt.
pub type Refused = (&'static str, String);

/// A linkage key this node holds.
#[derive(Debug, Clone)]
pub struct HeldKey {
    /// The key of one epoch.
    pub key: LinkageKey,
    /// From when this node's queries use it; `None`: at once.
    pub queries_from: Option<UnixMillis>,
}

/// Family tracing state of a node.
pub struct Tracing {
    /// The federation's linkage keys, oldest epoch first. Records are encoded under each;
    /// queries use the newest whose time has come.
    keys: Vec<HeldKey>,
    cases: sled::Tree,
    queries: sled::Tree,
    matches: sled::Tree,
    /// `peer 0x00 query handle 0x00 candidate handle` → match id, and `peer 0x00 query
    /// handle` → case id for the queries this node sent.
    handles: sled::Tree,
    index: std::sync::RwLock<Index>,
    /// Serialises changes to cases and matches.
    edit: Mutex<()>,
}

fn blob_key(case_id: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"kinbridge tracing case\0")
        .chain_update(case_id.as_bytes())
        .finalize()
        .into()
}

fn handle_key(peer: &str, query: &str, candidate: Option<&str>) -> Vec<u8> {
    let mut key = format!("{peer}\0{query}");
    if let Some(c) = candidate {
        key.push('\0');
        key.push_str(c);
    }
    key.into_bytes()
}

fn decode<M: Message + Default>(what: &str, bytes: &[u8]) -> Result<M, Status> {
    M::decode(bytes).map_err(|e| {
        store_status(&StoreError::Corrupt {
            key: what.to_owned(),
            reason: e.to_string(),
        })
    })
}

/// The record under `key` in `tree`, if any.
fn get_record<M: Message + Default>(
    tree: &sled::Tree,
    key: &str,
    what: &str,
) -> Result<Option<M>, Status> {
    tree.get(key.as_bytes())
        .map_err(sled_status)?
        .map(|v| decode::<M>(what, &v))
        .transpose()
}

/// Writes `record` under `key` in `tree` (durable with the next store commit).
fn put_record<M: Message>(tree: &sled::Tree, key: &str, record: &M) -> Result<(), Status> {
    tree.insert(key.as_bytes(), record.encode_to_vec())
        .map_err(sled_status)?;
    Ok(())
}

fn sled_status(e: sled::Error) -> Status {
    store_status(&StoreError::from(e))
}

/// What of a case is encoded: every name, sex, birth date or year, place of separation.
pub fn descriptor(case: &pb::ReferralPayload) -> Descriptor {
    let mut d = Descriptor::default();
    if let Some(i) = &case.identity {
        let full = [i.given_names.join(" "), i.family_names.join(" ")].join(" ");
        if !full.trim().is_empty() {
            d.names.push(full);
        }
        d.names.extend(i.other_names.iter().cloned());
        d.sex = match pb::Sex::try_from(i.sex) {
            Ok(pb::Sex::Female) => Some(Sex::Female),
            Ok(pb::Sex::Male) => Some(Sex::Male),
            _ => None,
        };
        let mut parts = i.birth_date.split('-').map(|p| p.parse::<u16>().ok());
        if let (Some(Some(y)), m, day) = (parts.next(), parts.next(), parts.next()) {
            d.birth_year = Some(y);
            d.birth_month = m.flatten().and_then(|m| u8::try_from(m).ok());
            d.birth_day = day.flatten().and_then(|d| u8::try_from(d).ok());
        } else if i.estimated_birth_year != 0 {
            d.birth_year = u16::try_from(i.estimated_birth_year).ok();
        }
    }
    d.place = case
        .location
        .as_ref()
        .map(|l| l.place_of_separation.clone())
        .filter(|p| !p.trim().is_empty());
    d
}

fn band_of(band: Band) -> Option<pb::MatchBand> {
    match band {
        Band::Likely => Some(pb::MatchBand::Likely),
        Band::Possible => Some(pb::MatchBand::Possible),
        Band::None => None,
    }
}

impl Tracing {
    /// Opens the tracing state in `store` and rebuilds the encodings: from the cases held, and
    /// from the standing queries in the inbox.
    pub fn open(store: &kinbridge_store::Store, keys: Vec<HeldKey>) -> Result<Self, StoreError> {
        let mut keys = keys;
        keys.sort_by_key(|k| k.key.epoch());
        let tracing = Self {
            keys,
            cases: store.tree("tracing_cases")?,
            queries: store.tree("tracing_queries")?,
            matches: store.tree("tracing_matches")?,
            handles: store.tree("tracing_handles")?,
            index: std::sync::RwLock::default(),
            edit: Mutex::new(()),
        };
        let now = UnixMillis::now().0;
        let mut index = Index::default();
        for entry in tracing.cases.iter() {
            let (_, value) = entry?;
            let case = CaseRecord::decode(value.as_ref()).map_err(|e| StoreError::Corrupt {
                key: "tracing case".into(),
                reason: e.to_string(),
            })?;
            if case.purged_at_ms != 0 || case.kind != pb::TracingCaseKind::Record as i32 {
                continue;
            }
            // A live record without readable data cannot match: said at WARN, not skipped
            // silently.
            let Some(data) = store.get_blob(&blob_key(&case.case_id))? else {
                tracing::warn!(case_id = %case.case_id, "tracing record has no data in the payload store; it cannot match until registered again");
                continue;
            };
            let payload = match pb::ReferralPayload::decode(data.as_slice()) {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::warn!(case_id = %case.case_id, error = %e, "tracing record's data does not decode; it cannot match until registered again");
                    continue;
                }
            };
            index.records.push(tracing.indexed(&case, &payload));
        }
        for entry in tracing.queries.iter() {
            let (_, value) = entry?;
            let record = QueryRecord::decode(value.as_ref()).map_err(|e| StoreError::Corrupt {
                key: "tracing query".into(),
                reason: e.to_string(),
            })?;
            if record.expires_at_ms <= now {
                continue;
            }
            if let Some(encoding) = stored_query_encoding(store, &record)? {
                index.queries.push(IndexedQuery { record, encoding });
            }
        }
        if let Ok(mut guard) = tracing.index.write() {
            *guard = index;
        }
        Ok(tracing)
    }

    /// Whether this node takes part in family tracing (it holds a linkage key).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The epochs of the linkage keys held.
    pub fn epochs(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.key.epoch()).collect()
    }

    /// The key this node's queries use at `now`: the newest whose time has come.
    pub fn query_key(&self, now: UnixMillis) -> Option<&LinkageKey> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.queries_from.is_none_or(|from| from <= now))
            .map(|k| &k.key)
    }

    fn indexed(&self, case: &CaseRecord, payload: &pb::ReferralPayload) -> IndexedRecord {
        let d = descriptor(payload);
        IndexedRecord {
            case_id: case.case_id.clone(),
            consent: case.consent.clone().unwrap_or_default(),
            encodings: self
                .keys
                .iter()
                .map(|k| (k.key.epoch(), encode(&d, &SCHEMA, &k.key)))
                .collect(),
        }
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn case(&self, case_id: &str) -> Result<Option<CaseRecord>, Status> {
        get_record(&self.cases, case_id, "tracing case")
    }

    fn put_case(&self, case: &CaseRecord) -> Result<(), Status> {
        put_record(&self.cases, &case.case_id, case)
    }

    /// The match `match_id`.
    pub fn get_match(&self, match_id: &str) -> Result<Option<MatchRecord>, Status> {
        get_record(&self.matches, match_id, "tracing match")
    }

    fn put_match(&self, m: &MatchRecord) -> Result<(), Status> {
        put_record(&self.matches, &m.match_id, m)
    }

    fn match_by_handles(
        &self,
        peer: &str,
        query: &str,
        candidate: &str,
    ) -> Result<Option<MatchRecord>, Status> {
        let Some(id) = self
            .handles
            .get(handle_key(peer, query, Some(candidate)))
            .map_err(sled_status)?
        else {
            return Ok(None);
        };
        self.get_match(&String::from_utf8_lossy(&id))
    }

    /// The match with `peer` under the handles, or the refusal naming it unknown.
    fn find_match(
        &self,
        peer: &NodeId,
        query: &str,
        candidate: &str,
    ) -> Result<Result<MatchRecord, Refused>, Status> {
        Ok(self
            .match_by_handles(peer.as_str(), query, candidate)?
            .ok_or_else(|| {
                (
                    "unknown-tracing-match",
                    format!("this node holds no tracing match with {peer} under those handles"),
                )
            }))
    }

    /// The matches noted here for `peer`'s query `query_handle`, best band first.
    fn matches_of_query(&self, peer: &str, query_handle: &str) -> Result<Vec<MatchRecord>, Status> {
        let mut prefix = handle_key(peer, query_handle, None);
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.handles.scan_prefix(prefix) {
            let (_, id) = entry.map_err(sled_status)?;
            if let Some(m) = self.get_match(&String::from_utf8_lossy(&id))? {
                out.push(m);
            }
        }
        out.sort_by_key(|m| std::cmp::Reverse(m.band));
        Ok(out)
    }

    /// Every match, newest first, with its case's unit.
    pub fn all_matches(&self) -> Result<Vec<(MatchRecord, String)>, Status> {
        let mut out = Vec::new();
        for entry in self.matches.iter() {
            let (_, value) = entry.map_err(sled_status)?;
            let m = decode::<MatchRecord>("tracing match", &value)?;
            let unit = self.case(&m.case_id)?.map(|c| c.unit).unwrap_or_default();
            out.push((m, unit));
        }
        out.sort_by_key(|(m, _)| std::cmp::Reverse(m.noticed_at_ms));
        Ok(out)
    }

    /// The consent scope of a live case registered here under `consent_id` in a unit `sees`
    /// accepts.
    pub fn consent_of(
        &self,
        consent_id: &str,
        sees: impl Fn(&str) -> bool,
    ) -> Result<Option<pb::ConsentScope>, Status> {
        for entry in self.cases.iter() {
            let (_, value) = entry.map_err(sled_status)?;
            let case = decode::<CaseRecord>("tracing case", &value)?;
            let scope = case.consent.filter(|c| c.consent_id == consent_id);
            if case.purged_at_ms == 0 && sees(&case.unit) && scope.is_some() {
                return Ok(scope);
            }
        }
        Ok(None)
    }

    /// The unit of case `case_id`, if it is held.
    pub fn case_unit(&self, case_id: &str) -> Result<Option<String>, Status> {
        Ok(self.case(case_id)?.map(|c| c.unit))
    }
}

/// The encoding of a stored query, read back from its inbox envelope; `None` once purged.
fn stored_query_encoding(
    store: &kinbridge_store::Store,
    record: &QueryRecord,
) -> Result<Option<Encoding>, StoreError> {
    let Some(item) = store.inbox_lookup(&record.peer, &record.message_id)? else {
        return Ok(None);
    };
    let Some(envelope) = item.envelope.filter(|_| item.purged_at_ms == 0) else {
        return Ok(None);
    };
    let Some(envelope) = store.with_payload(envelope)? else {
        return Ok(None);
    };
    let encoding = pb::TracingQuery::decode(envelope.payload.as_slice())
        .ok()
        .and_then(|q| Encoding::from_bytes(&q.encoding));
    if encoding.is_none() {
        tracing::warn!(peer = %record.peer, message_id = %record.message_id, "a standing tracing query's stored encoding does not decode; it no longer stands");
    }
    Ok(encoding)
}

/// The consent check of a tracing exchange with `peer` at `now`: the one rule that
/// registration and matching share, so a case is registered only if it can match.
fn check_tracing_consent(
    state: &NodeState,
    consent: &pb::ConsentScope,
    peer: &NodeId,
    now: UnixMillis,
) -> Result<(), consent::ConsentViolation> {
    let tags = state
        .registry
        .get(peer)
        .map(|p| p.tags.clone())
        .unwrap_or_default();
    let ctx = TransferContext {
        recipient_tags: &tags,
        accepted_purposes: None,
        now,
    };
    consent::check_parts(
        Some(consent),
        &consent.consent_id,
        pb::Purpose::FamilyTracing,
        &state.node_id,
        peer,
        &[],
        &[],
        &ctx,
    )
}

/// Refuses a registration whose consent could never let a match be reported: a record is
/// matched only for the peers its consent names, and only while the consent's form holds (a
/// best-interests determination names its authority and legal basis). Without this check the
/// case would be registered and then silently never match.
pub fn check_registration_reaches(
    state: &NodeState,
    kind: pb::TracingCaseKind,
    consent: &pb::ConsentScope,
    peers: &[NodeId],
) -> Result<(), Status> {
    let invalid =
        |reason: &'static str, message: String| refused(Code::InvalidArgument, reason, message);
    consent::check_scope_form(consent).map_err(|v| invalid(v.code(), v.to_string()))?;
    let reached: Vec<NodeId> = if kind == pb::TracingCaseKind::Record {
        let mut reached = Vec::new();
        for name in &consent.recipients {
            let peer = NodeId::new(name).map_err(|e| invalid("bad-peer", e.to_string()))?;
            reached.push(peer);
        }
        if reached.is_empty() {
            return Err(invalid(
                "no-recipients",
                "the consent names no recipient (--recipient on the command line): a record is reported only to the peers its consent names, so it would never match".into(),
            ));
        }
        reached
    } else {
        peers.to_vec()
    };
    let now = UnixMillis::now();
    for peer in &reached {
        check_tracing_consent(state, consent, peer, now)
            .map_err(|v| crate::status::consent_status(&v))?;
    }
    Ok(())
}

/// Whether the consent of record `case_id` here lets a match with it be reported to `peer`
/// now. A consent that names the peer but no longer holds (expired, not valid yet) is said at
/// WARN: the record resembles the peer's query and stays unreported until it is renewed.
fn permits(
    state: &NodeState,
    case_id: &str,
    consent: &pb::ConsentScope,
    peer: &NodeId,
    now: UnixMillis,
) -> bool {
    match check_tracing_consent(state, consent, peer, now) {
        Ok(()) => true,
        // The consent's own choice: this peer may not learn of the record.
        Err(
            consent::ConsentViolation::RecipientNotPermitted { .. }
            | consent::ConsentViolation::Firewall(_),
        ) => false,
        Err(violation) => {
            tracing::warn!(%case_id, %peer, reason = violation.code(), "a tracing record resembling a peer's query is not reported: its consent does not hold now; renew it and register the case again");
            state.metrics.refused("tracing", violation.code());
            false
        }
    }
}

/// Compares `encoding` of `epoch` with every record here whose consent lets `peer` learn of a
/// match: the candidates in a band, best first, at most [`MAX_CANDIDATES`].
fn candidates(
    state: &NodeState,
    index: &Index,
    peer: &NodeId,
    epoch: u32,
    encoding: &Encoding,
    now: UnixMillis,
) -> Vec<(String, pb::MatchBand, f64)> {
    let mut found: Vec<(String, pb::MatchBand, f64)> = index
        .records
        .iter()
        .filter_map(|r| {
            let (_, own) = r.encodings.iter().find(|(e, _)| *e == epoch)?;
            let similarity = own.dice(encoding);
            let band = band_of(BANDS.of(similarity))?;
            permits(state, &r.case_id, &r.consent, peer, now)
                .then(|| (r.case_id.clone(), band, similarity))
        })
        .collect();
    found.sort_by(|a, b| b.2.total_cmp(&a.2));
    found.truncate(MAX_CANDIDATES);
    found
}

/// A checked registration of a tracing case.
pub struct Registration {
    /// A record or a request.
    pub kind: pb::TracingCaseKind,
    /// The consent it relies on.
    pub consent: pb::ConsentScope,
    /// The case.
    pub case: pb::ReferralPayload,
    /// A request's peers to query.
    pub peers: Vec<NodeId>,
    /// A request's queries' lifetime; 0 for the default.
    pub ttl_seconds: u32,
}

/// Registers a case for `actor` of `unit`: the case's data goes to the payload store, its
/// record to sled; a record joins the index and is compared with the standing queries, a
/// request sends its queries to `peers`. Returns the case id and the queries sent.
pub async fn register(
    state: &Arc<NodeState>,
    actor: &str,
    unit: &str,
    registration: Registration,
) -> Result<(String, Vec<pb::TracingQuerySent>), Status> {
    let Registration {
        kind,
        consent,
        case,
        peers,
        ttl_seconds,
    } = registration;
    let tracing = &state.tracing;
    let case_id = MessageId::random().to_string();
    let now = UnixMillis::now();
    let mut record = CaseRecord {
        case_id: case_id.clone(),
        kind: kind as i32,
        unit: unit.to_owned(),
        consent: Some(consent.clone()),
        registered_at_ms: now.0,
        purged_at_ms: 0,
        queries: Vec::new(),
    };
    // Seal every query first: a refusal (consent, registry) registers nothing.
    let sealed = if kind == pb::TracingCaseKind::Request {
        seal_queries(state, &mut record, &case, &consent, peers, ttl_seconds, now)?
    } else {
        Vec::new()
    };
    let local = LocalApi::new(Arc::clone(state));
    let mut entry = state.auditor.entry(pb::AuditEvent::TracingRegistered);
    entry.message_id = case_id.clone();
    entry.consent_id = consent.consent_id.clone();
    entry.purpose = pb::Purpose::FamilyTracing as i32;
    entry.actor = actor.to_owned();
    entry.reason = match kind {
        pb::TracingCaseKind::Request => "request",
        _ => "record",
    }
    .to_owned();
    state.auditor.record(&entry).await?;
    state
        .store
        .put_blob(blob_key(&case_id), case.encode_to_vec())
        .await
        .map_err(|e| store_status(&e))?;
    let _edit = tracing.edit.lock().await;
    tracing.put_case(&record)?;
    for q in &record.queries {
        tracing
            .handles
            .insert(handle_key(&q.peer, &q.handle, None), case_id.as_bytes())
            .map_err(sled_status)?;
    }
    state.store.commit().await.map_err(|e| store_status(&e))?;
    let mut sent = Vec::new();
    for (message_id, outbox) in sealed {
        state
            .reporting
            .note_query(&outbox, &case)
            .map_err(|e| store_status(&e))?;
        let peer = outbox.recipient.clone();
        local
            .queue_as(actor, unit, message_id.clone(), outbox)
            .await?;
        sent.push(pb::TracingQuerySent { peer, message_id });
    }
    if kind == pb::TracingCaseKind::Record {
        match_standing_queries(state, &record, &case, now).await?;
    }
    tracing::info!(%case_id, kind = kind.as_str_name(), queries = sent.len(), "tracing case registered");
    Ok((case_id, sent))
}

/// Seals a request's query to each of `peers`, noting each in `record`: the case's keyed
/// encoding of `case` under the linkage key in use, under its `consent`, living
/// `ttl_seconds` (0 for the default). Returns the sealed queries, not yet queued.
fn seal_queries(
    state: &Arc<NodeState>,
    record: &mut CaseRecord,
    case: &pb::ReferralPayload,
    consent: &pb::ConsentScope,
    peers: Vec<NodeId>,
    ttl_seconds: u32,
    now: UnixMillis,
) -> Result<Vec<(String, kinbridge_store::OutboxRecord)>, Status> {
    let tracing = &state.tracing;
    let local = LocalApi::new(Arc::clone(state));
    let mut sealed = Vec::new();
    let Some(key) = tracing.query_key(now) else {
        return Err(refused(
            Code::FailedPrecondition,
            "no-linkage-key-in-use",
            "no linkage key of this node is in use for queries yet (see queries_from in [tracing] linkage_keys)",
        ));
    };
    let d = descriptor(case);
    let encoding = encode(&d, &SCHEMA, key);
    let mut categories = vec![pb::DataCategory::Identity];
    if d.place.is_some() {
        categories.push(pb::DataCategory::Location);
    }
    for peer in peers {
        let handle = random_handle();
        let payload = pb::TracingQuery {
            handle: handle.clone(),
            schema_id: SCHEMA.id.to_owned(),
            key_epoch: key.epoch(),
            encoding: encoding.to_bytes(),
        }
        .encode_to_vec();
        let draft = EnvelopeDraft {
            consent_id: consent.consent_id.clone(),
            correlation_id: handle.clone(),
            data_categories: categories.clone(),
            consent: Some(consent.clone()),
            ..EnvelopeDraft::new(
                pb::MessageKind::TracingRequest,
                state.node_id.clone(),
                peer.clone(),
                pb::Purpose::FamilyTracing,
            )
        };
        let (message_id, outbox) =
            local.seal_with(draft, payload, ttl_seconds, consent::check_transfer)?;
        record.queries.push(SentQuery {
            peer: peer.to_string(),
            handle,
            message_id: message_id.clone(),
        });
        sealed.push((message_id, outbox));
    }
    Ok(sealed)
}

/// Indexes a registered record and sends a notice for each standing query it matches.
async fn match_standing_queries(
    state: &Arc<NodeState>,
    record: &CaseRecord,
    case: &pb::ReferralPayload,
    now: UnixMillis,
) -> Result<(), Status> {
    let tracing = &state.tracing;
    let indexed = tracing.indexed(record, case);
    // The standing queries this record matches get a notice each.
    let found: Vec<(QueryRecord, pb::MatchBand)> = {
        let index = tracing.read_index();
        index
            .queries
            .iter()
            .filter(|q| q.record.expires_at_ms > now.0)
            .filter_map(|q| {
                let peer = NodeId::new(&q.record.peer).ok()?;
                let (_, own) = indexed
                    .encodings
                    .iter()
                    .find(|(e, _)| *e == q.record.key_epoch)?;
                let band = band_of(BANDS.of(own.dice(&q.encoding)))?;
                permits(state, &indexed.case_id, &indexed.consent, &peer, now)
                    .then(|| (q.record.clone(), band))
            })
            .collect()
    };
    tracing.write_index().records.push(indexed);
    for (query, band) in found {
        let m = new_match(state, record, &query.peer, &query.handle, band).await?;
        notify(state, &query, &[m]).await?;
    }
    Ok(())
}

fn disabled() -> Status {
    refused(
        Code::FailedPrecondition,
        "tracing-disabled",
        "this node takes no part in family tracing: its config names no linkage key ([tracing] linkage_keys)",
    )
}

/// Notes a new match of record `case` with a query of `peer`, audited; the handles index
/// finds it again from the peer's messages.
async fn new_match(
    state: &NodeState,
    case: &CaseRecord,
    peer: &str,
    query_handle: &str,
    band: pb::MatchBand,
) -> Result<MatchRecord, Status> {
    // The case is a record here: this node draws the candidate's handle.
    let mut m = new_match_record(case, peer, query_handle, band);
    m.candidate_handle = random_handle();
    record_match(state, &m).await?;
    Ok(m)
}

async fn record_match(state: &NodeState, m: &MatchRecord) -> Result<(), Status> {
    let tracing = &state.tracing;
    let mut entry = state.auditor.entry(pb::AuditEvent::TracingMatched);
    entry.message_id = m.match_id.clone();
    entry.peer = m.peer.clone();
    entry.purpose = pb::Purpose::FamilyTracing as i32;
    entry.reason = match pb::MatchBand::try_from(m.band) {
        Ok(pb::MatchBand::Likely) => "likely",
        _ => "possible",
    }
    .to_owned();
    state.auditor.record(&entry).await?;
    tracing.put_match(m)?;
    tracing
        .handles
        .insert(
            handle_key(&m.peer, &m.query_handle, Some(&m.candidate_handle)),
            m.match_id.as_bytes(),
        )
        .map_err(sled_status)?;
    state.store.commit().await.map_err(|e| store_status(&e))?;
    tracing::info!(match_id = %m.match_id, peer = %m.peer, band = entry.reason, "tracing match noted");
    Ok(())
}

/// Sends `query`'s node a notice of `matches` (possibly none: the query was searched).
async fn notify(
    state: &Arc<NodeState>,
    query: &QueryRecord,
    matches: &[MatchRecord],
) -> Result<(), Status> {
    let notice = pb::TracingMatchNotice {
        query_handle: query.handle.clone(),
        candidates: matches
            .iter()
            .map(|m| pb::TracingCandidate {
                handle: m.candidate_handle.clone(),
                band: m.band,
            })
            .collect(),
    };
    send_without_data(
        state,
        pb::MessageKind::TracingMatchNotice,
        &query.peer,
        &query.consent_id,
        &query.handle,
        notice.encode_to_vec(),
        &query.unit,
        NODE_ACTOR,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn send_without_data(
    state: &Arc<NodeState>,
    kind: pb::MessageKind,
    peer: &str,
    consent_id: &str,
    correlation_id: &str,
    payload: Vec<u8>,
    unit: &str,
    actor: &str,
) -> Result<(), Status> {
    let recipient = NodeId::new(peer).map_err(|e| Status::internal(e.to_string()))?;
    let draft = EnvelopeDraft {
        consent_id: consent_id.to_owned(),
        correlation_id: correlation_id.to_owned(),
        ..EnvelopeDraft::new(
            kind,
            state.node_id.clone(),
            recipient,
            pb::Purpose::FamilyTracing,
        )
    };
    let local = LocalApi::new(Arc::clone(state));
    let (message_id, record) = local.seal_with(draft, payload, 0, |d, _| {
        consent::permit_without_personal_data(d)
    })?;
    local.queue_as(actor, unit, message_id, record).await?;
    Ok(())
}

/// A peer's query, verified and consent-checked: noted as standing, compared with the
/// records here, answered with a notice. `Ok(Err(_))` refuses it for good; a query already
/// taken (a retried delivery) is not answered twice. Returns the inbox unit of the query.
pub async fn take_query(
    state: &Arc<NodeState>,
    peer: &NodeId,
    header: &kinbridge_core::verify::EnvelopeHeader,
    query: &pb::TracingQuery,
) -> Result<Result<String, Refused>, Status> {
    let tracing = &state.tracing;
    if !tracing.enabled() {
        return Ok(Err(("tracing-disabled", disabled().message().to_owned())));
    }
    if query.schema_id != SCHEMA.id {
        return Ok(Err((
            "tracing-schema-unsupported",
            format!(
                "this node compares encodings of schema '{}', not '{}'",
                SCHEMA.id,
                printable(&query.schema_id)
            ),
        )));
    }
    if !tracing.epochs().contains(&query.key_epoch) {
        return Ok(Err((
            "linkage-epoch-unknown",
            format!(
                "this node holds the linkage keys of epochs {:?}, not of epoch {}",
                tracing.epochs(),
                query.key_epoch
            ),
        )));
    }
    let Some(encoding) = Encoding::from_bytes(&query.encoding) else {
        return Ok(Err((
            "bad-encoding",
            format!(
                "the encoding is {} bytes; schema '{}' encodings are {} bytes",
                query.encoding.len(),
                SCHEMA.id,
                kinbridge_linkage::BITS / 8
            ),
        )));
    };
    let unit = state.intake_unit.to_string();
    let record = QueryRecord {
        peer: peer.to_string(),
        handle: query.handle.clone(),
        message_id: header.message_id.to_string(),
        consent_id: header.consent_id.clone(),
        expires_at_ms: header.expires_at.0,
        key_epoch: query.key_epoch,
        unit: unit.clone(),
    };
    let key = handle_key(peer.as_str(), &query.handle, None);
    let _edit = tracing.edit.lock().await;
    if tracing.queries.get(&key).map_err(sled_status)?.is_some() {
        return Ok(Ok(unit));
    }
    // A query whose notice could not be queued (the sender retries it) has its matches
    // already: the same candidates, under the same handles, go in the notice.
    let mut matches = tracing.matches_of_query(peer.as_str(), &query.handle)?;
    if matches.is_empty() {
        let now = UnixMillis::now();
        let found = candidates(
            state,
            &tracing.read_index(),
            peer,
            query.key_epoch,
            &encoding,
            now,
        );
        for (case_id, band, _) in found {
            match tracing.case(&case_id)? {
                Some(case) => {
                    matches.push(new_match(state, &case, peer.as_str(), &query.handle, band).await?)
                }
                None => {
                    tracing::warn!(%case_id, %peer, "a tracing record in the index has no case record; not reported")
                }
            }
        }
    }
    notify(state, &record, &matches).await?;
    // Only once answered does the query stand, and a re-delivery find it answered.
    tracing
        .queries
        .insert(key, record.encode_to_vec())
        .map_err(sled_status)?;
    tracing.write_index().queries.push(IndexedQuery {
        record: record.clone(),
        encoding,
    });
    tracing::info!(peer = %peer, candidates = matches.len(), "tracing query answered");
    Ok(Ok(unit))
}

/// A peer's notice answering a query of a request here: its candidates become matches.
/// Returns the inbox unit (the request's).
pub async fn take_notice(
    state: &Arc<NodeState>,
    peer: &NodeId,
    notice: &pb::TracingMatchNotice,
) -> Result<Result<String, Refused>, Status> {
    let tracing = &state.tracing;
    let _edit = tracing.edit.lock().await;
    let case = match tracing
        .handles
        .get(handle_key(peer.as_str(), &notice.query_handle, None))
        .map_err(sled_status)?
    {
        Some(id) => tracing.case(&String::from_utf8_lossy(&id))?,
        None => None,
    };
    let Some(case) = case.filter(|c| c.kind == pb::TracingCaseKind::Request as i32) else {
        return Ok(Err((
            "unknown-tracing-query",
            format!("this node sent {peer} no tracing query with that handle"),
        )));
    };
    if case.purged_at_ms != 0 {
        return Ok(Err((
            "tracing-case-withdrawn",
            "the consent of the request this query was sent for was withdrawn".to_owned(),
        )));
    }
    for c in &notice.candidates {
        if tracing
            .match_by_handles(peer.as_str(), &notice.query_handle, &c.handle)?
            .is_some()
        {
            continue;
        }
        let band = pb::MatchBand::try_from(c.band).unwrap_or(pb::MatchBand::Possible);
        let mut m = new_match_record(&case, peer.as_str(), &notice.query_handle, band);
        m.candidate_handle = c.handle.clone();
        record_match(state, &m).await?;
    }
    Ok(Ok(case.unit))
}

fn new_match_record(
    case: &CaseRecord,
    peer: &str,
    query_handle: &str,
    band: pb::MatchBand,
) -> MatchRecord {
    MatchRecord {
        match_id: MessageId::random().to_string(),
        case_id: case.case_id.clone(),
        case_kind: case.kind,
        peer: peer.to_owned(),
        query_handle: query_handle.to_owned(),
        band: band as i32,
        noticed_at_ms: UnixMillis::now().0,
        ..Default::default()
    }
}

/// A peer's caseworker reviewed a match: noted, and once both ends confirmed, this node
/// discloses its case's agreed fields. Returns the inbox unit (the case's).
pub async fn take_confirmation(
    state: &Arc<NodeState>,
    peer: &NodeId,
    confirmation: &pb::TracingConfirmation,
) -> Result<Result<String, Refused>, Status> {
    let tracing = &state.tracing;
    let edit = tracing.edit.lock().await;
    let mut m = match tracing.find_match(
        peer,
        &confirmation.query_handle,
        &confirmation.candidate_handle,
    )? {
        Ok(m) => m,
        Err(refused) => return Ok(Err(refused)),
    };
    let verdict = if confirmation.confirmed {
        m.confirmed_by_peer_at_ms = UnixMillis::now().0;
        "confirmed"
    } else {
        m.ruled_out = true;
        "ruled-out"
    };
    let mut entry = state.auditor.entry(pb::AuditEvent::TracingReviewed);
    entry.message_id = m.match_id.clone();
    entry.peer = peer.to_string();
    entry.purpose = pb::Purpose::FamilyTracing as i32;
    entry.reason = verdict.to_owned();
    state.auditor.record(&entry).await?;
    tracing.put_match(&m)?;
    state.store.commit().await.map_err(|e| store_status(&e))?;
    drop(edit);
    let unit = tracing.case_unit(&m.case_id)?.unwrap_or_default();
    if m.confirmed() && m.disclosure_sent.is_empty() {
        disclose_logged(state, m).await?;
    }
    Ok(Ok(unit))
}

/// A caseworker here reviewed match `match_id`: noted, told to the peer, and once both ends
/// confirmed, this node discloses its case's agreed fields.
pub async fn review(
    state: &Arc<NodeState>,
    actor: &str,
    match_id: &str,
    confirm: bool,
) -> Result<MatchRecord, Status> {
    let tracing = &state.tracing;
    let edit = tracing.edit.lock().await;
    let Some(mut m) = tracing.get_match(match_id)? else {
        return Err(refused(
            Code::NotFound,
            "unknown-tracing-match",
            format!("no tracing match {match_id} here"),
        ));
    };
    if m.ruled_out || m.confirmed_here_at_ms != 0 {
        return Err(refused(
            Code::FailedPrecondition,
            "already-reviewed",
            format!("tracing match {match_id} was already reviewed here or ruled out"),
        ));
    }
    let verdict = if confirm {
        m.confirmed_here_at_ms = UnixMillis::now().0;
        "confirmed"
    } else {
        m.ruled_out = true;
        "ruled-out"
    };
    let Some(case) = tracing.case(&m.case_id)?.filter(|c| c.purged_at_ms == 0) else {
        return Err(refused(
            Code::FailedPrecondition,
            "tracing-case-withdrawn",
            format!("the consent of the case of tracing match {match_id} was withdrawn"),
        ));
    };
    let consent_id = case
        .consent
        .as_ref()
        .map(|c| c.consent_id.clone())
        .unwrap_or_default();
    let mut entry = state.auditor.entry(pb::AuditEvent::TracingReviewed);
    entry.message_id = m.match_id.clone();
    entry.actor = actor.to_owned();
    entry.consent_id = consent_id.clone();
    entry.purpose = pb::Purpose::FamilyTracing as i32;
    entry.reason = verdict.to_owned();
    state.auditor.record(&entry).await?;
    tracing.put_match(&m)?;
    state.store.commit().await.map_err(|e| store_status(&e))?;
    drop(edit);
    let payload = pb::TracingConfirmation {
        query_handle: m.query_handle.clone(),
        candidate_handle: m.candidate_handle.clone(),
        confirmed: confirm,
    }
    .encode_to_vec();
    send_without_data(
        state,
        pb::MessageKind::TracingConfirmation,
        &m.peer,
        &consent_id,
        &m.query_handle,
        payload,
        &case.unit,
        actor,
    )
    .await?;
    if m.confirmed() && m.disclosure_sent.is_empty() {
        m = disclose_logged(state, m).await?;
    }
    Ok(m)
}

/// [`disclose`], with a refusal by the case's consent (withdrawn, expired, not naming the
/// peer) recorded instead of failing the caller: the match stays confirmed, undisclosed.
async fn disclose_logged(state: &Arc<NodeState>, m: MatchRecord) -> Result<MatchRecord, Status> {
    match disclose(state, &m).await {
        Ok(message_id) => {
            let tracing = &state.tracing;
            let _edit = tracing.edit.lock().await;
            let mut stored = tracing.get_match(&m.match_id)?.unwrap_or(m);
            stored.disclosure_sent = message_id;
            tracing.put_match(&stored)?;
            state.store.commit().await.map_err(|e| store_status(&e))?;
            Ok(stored)
        }
        Err(status) if status.code() == Code::FailedPrecondition => {
            let mut entry = state.auditor.entry(pb::AuditEvent::Refused);
            entry.message_id = m.match_id.clone();
            entry.peer = m.peer.clone();
            entry.actor = NODE_ACTOR.to_owned();
            entry.reason = crate::status::refusal_code(&status)
                .unwrap_or("disclosure-refused")
                .to_owned();
            state.auditor.record(&entry).await?;
            tracing::warn!(match_id = %m.match_id, error = %status.message(), "tracing disclosure not sent");
            Ok(m)
        }
        Err(status) => Err(status),
    }
}

/// Seals and queues the disclosure of match `m`: the agreed fields of this node's case, as
/// far as its consent's categories cover them, under that consent.
async fn disclose(state: &Arc<NodeState>, m: &MatchRecord) -> Result<String, Status> {
    let tracing = &state.tracing;
    let case = tracing.case(&m.case_id)?.filter(|c| c.purged_at_ms == 0);
    let data = state
        .store
        .get_blob(&blob_key(&m.case_id))
        .map_err(|e| store_status(&e))?;
    let (Some(case), Some(data)) = (case, data) else {
        return Err(refused(
            Code::FailedPrecondition,
            "case-purged",
            format!(
                "tracing case {} was purged (consent withdrawn): nothing to disclose",
                m.case_id
            ),
        ));
    };
    let consent = case.consent.clone().unwrap_or_default();
    // Unreadable data is refused (audited by the caller), never disclosed as an empty case.
    let Ok(mut payload) = pb::ReferralPayload::decode(data.as_slice()) else {
        return Err(refused(
            Code::FailedPrecondition,
            "case-data-unreadable",
            format!(
                "the data of tracing case {} does not decode: nothing disclosed; register the case again",
                m.case_id
            ),
        ));
    };
    minimise(&mut payload, &consent.categories);
    let fields = agreed_fields(&payload);
    let disclosure = pb::TracingDisclosure {
        query_handle: m.query_handle.clone(),
        candidate_handle: m.candidate_handle.clone(),
        identity: fields.identity,
        location: fields.location,
        family: fields.family,
        contact_unit: case.unit.clone(),
    };
    let categories = kinbridge_core::family_tracing::categories(&disclosure);
    let peer = NodeId::new(&m.peer).map_err(|e| Status::internal(e.to_string()))?;
    let draft = EnvelopeDraft {
        consent_id: consent.consent_id.clone(),
        correlation_id: m.query_handle.clone(),
        data_categories: categories,
        consent: Some(consent),
        ..EnvelopeDraft::new(
            pb::MessageKind::TracingDisclosure,
            state.node_id.clone(),
            peer,
            pb::Purpose::FamilyTracing,
        )
    };
    let local = LocalApi::new(Arc::clone(state));
    let (message_id, record) = local.seal_with(
        draft,
        disclosure.encode_to_vec(),
        0,
        consent::check_transfer,
    )?;
    local
        .queue_as(NODE_ACTOR, &case.unit, message_id.clone(), record)
        .await?;
    tracing::info!(match_id = %m.match_id, %message_id, "tracing disclosure queued");
    Ok(message_id)
}

/// A peer's disclosure: taken only for a match both caseworkers confirmed. Returns the inbox
/// unit (the case's).
pub async fn take_disclosure(
    state: &Arc<NodeState>,
    peer: &NodeId,
    message_id: &str,
    disclosure: &pb::TracingDisclosure,
) -> Result<Result<String, Refused>, Status> {
    let tracing = &state.tracing;
    let _edit = tracing.edit.lock().await;
    let mut m =
        match tracing.find_match(peer, &disclosure.query_handle, &disclosure.candidate_handle)? {
            Ok(m) => m,
            Err(refused) => return Ok(Err(refused)),
        };
    if tracing
        .case(&m.case_id)?
        .is_none_or(|c| c.purged_at_ms != 0)
    {
        return Ok(Err((
            "tracing-case-withdrawn",
            "the consent of this node's case in this match was withdrawn".to_owned(),
        )));
    }
    if !m.confirmed() {
        return Ok(Err((
            "tracing-match-not-confirmed",
            "a disclosure is taken only for a match both caseworkers confirmed; this one is not"
                .to_owned(),
        )));
    }
    m.disclosure_received = message_id.to_owned();
    tracing.put_match(&m)?;
    Ok(Ok(tracing.case_unit(&m.case_id)?.unwrap_or_default()))
}

/// The match as the local API shows it, with the peer's disclosure once received.
pub fn to_api(state: &NodeState, m: &MatchRecord) -> Result<pb::TracingMatch, Status> {
    // The peer's disclosure counts as received once it is in the inbox (the match notes it
    // just before the inbox commit); a purged one stays received, without its fields.
    let item = if m.disclosure_received.is_empty() {
        None
    } else {
        state
            .store
            .inbox_lookup(&m.peer, &m.disclosure_received)
            .map_err(|e| store_status(&e))?
    };
    let received = item.is_some();
    let disclosure = match item.and_then(|i| i.envelope.filter(|_| i.purged_at_ms == 0)) {
        Some(envelope) => state
            .store
            .with_payload(envelope)
            .map_err(|e| store_status(&e))?
            .and_then(|e| match pb::TracingDisclosure::decode(e.payload.as_slice()) {
                Ok(d) => Some(d),
                Err(error) => {
                    tracing::warn!(match_id = %m.match_id, message_id = %m.disclosure_received, %error, "a received tracing disclosure does not decode; shown without its fields");
                    None
                }
            }),
        None => None,
    };
    let state_of = if m.ruled_out {
        pb::TracingMatchState::RuledOut
    } else if received {
        pb::TracingMatchState::Disclosed
    } else if m.confirmed() {
        pb::TracingMatchState::Confirmed
    } else {
        pb::TracingMatchState::Pending
    };
    Ok(pb::TracingMatch {
        match_id: m.match_id.clone(),
        case_id: m.case_id.clone(),
        case_kind: m.case_kind,
        peer: m.peer.clone(),
        band: m.band,
        state: state_of as i32,
        confirmed_here: m.confirmed_here_at_ms != 0,
        confirmed_by_peer: m.confirmed_by_peer_at_ms != 0,
        noticed_at_ms: m.noticed_at_ms,
        disclosure,
        disclosure_message_id: m.disclosure_sent.clone(),
    })
}

/// Forgets what a withdrawn consent covered: this node's cases under it (`originator` is this
/// node: their data is purged) or a peer's standing queries under it. Returns how many cases
/// were purged.
pub async fn forget_consent(
    state: &NodeState,
    consent_id: &str,
    originator: &str,
) -> Result<u32, Status> {
    let tracing = &state.tracing;
    let _edit = tracing.edit.lock().await;
    let mut purged = 0;
    if originator == state.node_id.as_str() {
        let mut cases = Vec::new();
        for entry in tracing.cases.iter() {
            let (_, value) = entry.map_err(sled_status)?;
            let case = decode::<CaseRecord>("tracing case", &value)?;
            let under = case
                .consent
                .as_ref()
                .is_some_and(|c| c.consent_id == consent_id);
            if under && case.purged_at_ms == 0 {
                cases.push(case);
            }
        }
        for mut case in cases {
            state
                .store
                .purge_blob(blob_key(&case.case_id))
                .await
                .map_err(|e| store_status(&e))?;
            case.purged_at_ms = UnixMillis::now().0;
            tracing.put_case(&case)?;
            let mut entry = state.auditor.entry(pb::AuditEvent::Purged);
            entry.message_id = case.case_id.clone();
            entry.consent_id = consent_id.to_owned();
            entry.reason = "consent-withdrawn".into();
            state.auditor.record(&entry).await?;
            tracing
                .write_index()
                .records
                .retain(|r| r.case_id != case.case_id);
            purged += 1;
        }
        state.store.commit().await.map_err(|e| store_status(&e))?;
    }
    tracing
        .write_index()
        .queries
        .retain(|q| !(q.record.consent_id == consent_id && q.record.peer == originator));
    Ok(purged)
}

fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
}

/// Loads the linkage keys `config` names: each file holds 32 bytes in hexadecimal (lines
/// starting with `#` are comments). A development key is refused unless the node is a
/// development node.
pub fn load_keys(
    keys: &[crate::config::LinkageKeyConfig],
    development: bool,
) -> Result<Vec<HeldKey>, (std::path::PathBuf, String)> {
    let mut out = Vec::new();
    for k in keys {
        let err = |reason: String| (k.file.clone(), reason);
        let text = std::fs::read_to_string(&k.file).map_err(|e| err(e.to_string()))?;
        if text.contains(crate::devpki::DEV_LINKAGE_MARKER) && !development {
            return Err(err(
                "a development linkage key, refused by a node that is not a development node"
                    .into(),
            ));
        }
        let hex_text: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = hex::decode(&hex_text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                err("a linkage key is 32 bytes written as 64 hexadecimal digits".into())
            })?;
        out.push(HeldKey {
            key: LinkageKey::new(bytes, k.epoch),
            queries_from: k.queries_from,
        });
    }
    Ok(out)
}
