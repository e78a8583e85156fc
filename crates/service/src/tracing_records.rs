//! Family tracing's durable records and in-memory index: the cases registered here, the
//! standing queries of peers, the matches and the handles that tie them together, with no
//! personal data in sled (see [`crate::family_tracing`]). The index is made again from the
//! cases and the received queries at start.

use kinbridge_core::{NodeId, UnixMillis};
use kinbridge_linkage::{Band, Descriptor, Encoding, LinkageKey, SCHEMA, Sex, encode};
use kinbridge_proto::v1 as pb;
use kinbridge_store::StoreError;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::error::{Declined, ServiceError};

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
    pub(crate) fn confirmed(&self) -> bool {
        !self.ruled_out && self.confirmed_here_at_ms != 0 && self.confirmed_by_peer_at_ms != 0
    }
}

/// A record held here, ready to compare.
pub(crate) struct IndexedRecord {
    pub(crate) case_id: String,
    pub(crate) consent: pb::ConsentScope,
    /// One encoding per linkage-key epoch held.
    pub(crate) encodings: Vec<(u32, Encoding)>,
}

/// A standing query of a peer.
pub(crate) struct IndexedQuery {
    pub(crate) record: QueryRecord,
    pub(crate) encoding: Encoding,
}

#[derive(Default)]
pub(crate) struct Index {
    pub(crate) records: Vec<IndexedRecord>,
    pub(crate) queries: Vec<IndexedQuery>,
}

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
    pub(crate) keys: Vec<HeldKey>,
    pub(crate) cases: sled::Tree,
    pub(crate) queries: sled::Tree,
    pub(crate) matches: sled::Tree,
    /// `peer 0x00 query handle 0x00 candidate handle` → match id, and `peer 0x00 query
    /// handle` → case id for the queries this node sent.
    pub(crate) handles: sled::Tree,
    pub(crate) index: std::sync::RwLock<Index>,
    /// Serialises changes to cases and matches.
    pub(crate) edit: Mutex<()>,
}

pub(crate) fn blob_key(case_id: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"kinbridge tracing case\0")
        .chain_update(case_id.as_bytes())
        .finalize()
        .into()
}

pub(crate) fn handle_key(peer: &str, query: &str, candidate: Option<&str>) -> Vec<u8> {
    let mut key = format!("{peer}\0{query}");
    if let Some(c) = candidate {
        key.push('\0');
        key.push_str(c);
    }
    key.into_bytes()
}

pub(crate) fn decode<M: Message + Default>(what: &str, bytes: &[u8]) -> Result<M, ServiceError> {
    M::decode(bytes).map_err(|e| {
        ServiceError::from(StoreError::Corrupt {
            key: what.to_owned(),
            reason: e.to_string(),
        })
    })
}

/// The record under `key` in `tree`, if any.
pub(crate) fn get_record<M: Message + Default>(
    tree: &sled::Tree,
    key: &str,
    what: &str,
) -> Result<Option<M>, ServiceError> {
    tree.get(key.as_bytes())
        .map_err(StoreError::from)?
        .map(|v| decode::<M>(what, &v))
        .transpose()
}

/// Writes `record` under `key` in `tree` (durable with the next store commit).
pub(crate) fn put_record<M: Message>(
    tree: &sled::Tree,
    key: &str,
    record: &M,
) -> Result<(), ServiceError> {
    tree.insert(key.as_bytes(), record.encode_to_vec())
        .map_err(StoreError::from)?;
    Ok(())
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

pub(crate) fn band_of(band: Band) -> Option<pb::MatchBand> {
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

    pub(crate) fn indexed(
        &self,
        case: &CaseRecord,
        payload: &pb::ReferralPayload,
    ) -> IndexedRecord {
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

    pub(crate) fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn case(&self, case_id: &str) -> Result<Option<CaseRecord>, ServiceError> {
        get_record(&self.cases, case_id, "tracing case")
    }

    pub(crate) fn put_case(&self, case: &CaseRecord) -> Result<(), ServiceError> {
        put_record(&self.cases, &case.case_id, case)
    }

    /// The match `match_id`.
    pub fn get_match(&self, match_id: &str) -> Result<Option<MatchRecord>, ServiceError> {
        get_record(&self.matches, match_id, "tracing match")
    }

    pub(crate) fn put_match(&self, m: &MatchRecord) -> Result<(), ServiceError> {
        put_record(&self.matches, &m.match_id, m)
    }

    pub(crate) fn match_by_handles(
        &self,
        peer: &str,
        query: &str,
        candidate: &str,
    ) -> Result<Option<MatchRecord>, ServiceError> {
        let Some(id) = self
            .handles
            .get(handle_key(peer, query, Some(candidate)))
            .map_err(StoreError::from)?
        else {
            return Ok(None);
        };
        self.get_match(&String::from_utf8_lossy(&id))
    }

    /// The match with `peer` under the handles, or the refusal naming it unknown.
    pub(crate) fn find_match(
        &self,
        peer: &NodeId,
        query: &str,
        candidate: &str,
    ) -> Result<Result<MatchRecord, Declined>, ServiceError> {
        Ok(self
            .match_by_handles(peer.as_str(), query, candidate)?
            .ok_or_else(|| {
                Declined::new(
                    "unknown-tracing-match",
                    format!("this node holds no tracing match with {peer} under those handles"),
                )
            }))
    }

    /// The matches noted here for `peer`'s query `query_handle`, best band first.
    pub(crate) fn matches_of_query(
        &self,
        peer: &str,
        query_handle: &str,
    ) -> Result<Vec<MatchRecord>, ServiceError> {
        let mut prefix = handle_key(peer, query_handle, None);
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.handles.scan_prefix(prefix) {
            let (_, id) = entry.map_err(StoreError::from)?;
            if let Some(m) = self.get_match(&String::from_utf8_lossy(&id))? {
                out.push(m);
            }
        }
        out.sort_by_key(|m| std::cmp::Reverse(m.band));
        Ok(out)
    }

    /// Every match, newest first, with its case's unit.
    pub fn all_matches(&self) -> Result<Vec<(MatchRecord, String)>, ServiceError> {
        let mut out = Vec::new();
        for entry in self.matches.iter() {
            let (_, value) = entry.map_err(StoreError::from)?;
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
    ) -> Result<Option<pb::ConsentScope>, ServiceError> {
        for entry in self.cases.iter() {
            let (_, value) = entry.map_err(StoreError::from)?;
            let case = decode::<CaseRecord>("tracing case", &value)?;
            let scope = case.consent.filter(|c| c.consent_id == consent_id);
            if case.purged_at_ms == 0 && sees(&case.unit) && scope.is_some() {
                return Ok(scope);
            }
        }
        Ok(None)
    }

    /// The unit of case `case_id`, if it is held.
    pub fn case_unit(&self, case_id: &str) -> Result<Option<String>, ServiceError> {
        Ok(self.case(case_id)?.map(|c| c.unit))
    }
}

/// The encoding of a stored query, read back from its inbox envelope; `None` once purged.
pub(crate) fn stored_query_encoding(
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
