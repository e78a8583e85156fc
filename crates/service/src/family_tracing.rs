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
use kinbridge_linkage::{BANDS, Encoding, SCHEMA, encode};
use kinbridge_proto::v1 as pb;
use kinbridge_store::StoreError;
use prost::Message;

use crate::error::{Declined, ErrorKind, ServiceError};
use crate::node::Node;
use crate::outbox;
pub use crate::tracing_records::{
    CaseRecord, HeldKey, MatchRecord, QueryRecord, SentQuery, Tracing,
};
use crate::tracing_records::{
    Index, IndexedQuery, band_of, blob_key, decode, descriptor, handle_key,
};

/// The actor the audit log names for messages the node sends by itself (a match notice, a
/// disclosure once both ends confirmed).
pub const NODE_ACTOR: &str = "(node)";

/// The consent check of a tracing exchange with `peer` at `now`: the one rule that
/// registration and matching share, so a case is registered only if it can match.
fn check_tracing_consent(
    state: &Node,
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
    state: &Node,
    kind: pb::TracingCaseKind,
    consent: &pb::ConsentScope,
    peers: &[NodeId],
) -> Result<(), ServiceError> {
    let invalid = |reason: &'static str, message: String| {
        ServiceError::refused(ErrorKind::InvalidArgument, reason, message)
    };
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
        check_tracing_consent(state, consent, peer, now).map_err(|v| ServiceError::from(&v))?;
    }
    Ok(())
}

/// Whether the consent of record `case_id` here lets a match with it be reported to `peer`
/// now. A consent that names the peer but no longer holds (expired, not valid yet) is said at
/// WARN: the record resembles the peer's query and stays unreported until it is renewed.
fn permits(
    state: &Node,
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
    state: &Node,
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
    state: &Arc<Node>,
    actor: &str,
    unit: &str,
    registration: Registration,
) -> Result<(String, Vec<pb::TracingQuerySent>), ServiceError> {
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
    crate::room::ensure(state, "local", actor).await?;
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
        .await?;
    let _edit = tracing.edit.lock().await;
    tracing.put_case(&record)?;
    for q in &record.queries {
        tracing
            .handles
            .insert(handle_key(&q.peer, &q.handle, None), case_id.as_bytes())
            .map_err(StoreError::from)?;
    }
    state.store.commit().await?;
    let mut sent = Vec::new();
    for (message_id, outbox) in sealed {
        state.reporting.note_query(&outbox, &case)?;
        let peer = outbox.recipient.clone();
        outbox::queue(state, actor, unit, message_id.clone(), outbox, None).await?;
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
    state: &Arc<Node>,
    record: &mut CaseRecord,
    case: &pb::ReferralPayload,
    consent: &pb::ConsentScope,
    peers: Vec<NodeId>,
    ttl_seconds: u32,
    now: UnixMillis,
) -> Result<Vec<(String, kinbridge_store::OutboxRecord)>, ServiceError> {
    let tracing = &state.tracing;
    let mut sealed = Vec::new();
    let Some(key) = tracing.query_key(now) else {
        return Err(ServiceError::refused(
            ErrorKind::FailedPrecondition,
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
            outbox::seal(state, draft, payload, ttl_seconds, consent::check_transfer)?;
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
    state: &Arc<Node>,
    record: &CaseRecord,
    case: &pb::ReferralPayload,
    now: UnixMillis,
) -> Result<(), ServiceError> {
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

fn disabled() -> ServiceError {
    ServiceError::refused(
        ErrorKind::FailedPrecondition,
        "tracing-disabled",
        "this node takes no part in family tracing: its config names no linkage key ([tracing] linkage_keys)",
    )
}

/// Notes a new match of record `case` with a query of `peer`, audited; the handles index
/// finds it again from the peer's messages.
async fn new_match(
    state: &Node,
    case: &CaseRecord,
    peer: &str,
    query_handle: &str,
    band: pb::MatchBand,
) -> Result<MatchRecord, ServiceError> {
    // The case is a record here: this node draws the candidate's handle.
    let mut m = new_match_record(case, peer, query_handle, band);
    m.candidate_handle = random_handle();
    record_match(state, &m).await?;
    Ok(m)
}

async fn record_match(state: &Node, m: &MatchRecord) -> Result<(), ServiceError> {
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
        .map_err(StoreError::from)?;
    state.store.commit().await?;
    tracing::info!(match_id = %m.match_id, peer = %m.peer, band = entry.reason, "tracing match noted");
    Ok(())
}

/// Sends `query`'s node a notice of `matches` (possibly none: the query was searched).
async fn notify(
    state: &Arc<Node>,
    query: &QueryRecord,
    matches: &[MatchRecord],
) -> Result<(), ServiceError> {
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
    state: &Arc<Node>,
    kind: pb::MessageKind,
    peer: &str,
    consent_id: &str,
    correlation_id: &str,
    payload: Vec<u8>,
    unit: &str,
    actor: &str,
) -> Result<(), ServiceError> {
    let recipient = NodeId::new(peer).map_err(|e| ServiceError::internal(e.to_string()))?;
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
    let (message_id, record) = outbox::seal(state, draft, payload, 0, |d, _| {
        consent::permit_without_personal_data(d)
    })?;
    outbox::queue(state, actor, unit, message_id, record, None).await?;
    Ok(())
}

/// A peer's query, verified and consent-checked: noted as standing, compared with the
/// records here, answered with a notice. `Ok(Err(_))` refuses it for good; a query already
/// taken (a retried delivery) is not answered twice. Returns the inbox unit of the query.
pub async fn take_query(
    state: &Arc<Node>,
    peer: &NodeId,
    header: &kinbridge_core::verify::EnvelopeHeader,
    query: &pb::TracingQuery,
) -> Result<Result<String, Declined>, ServiceError> {
    let tracing = &state.tracing;
    if !tracing.enabled() {
        return Ok(Err(Declined::new(
            "tracing-disabled",
            disabled().message().to_owned(),
        )));
    }
    if query.schema_id != SCHEMA.id {
        return Ok(Err(Declined::new(
            "tracing-schema-unsupported",
            format!(
                "this node compares encodings of schema '{}', not '{}'",
                SCHEMA.id,
                printable(&query.schema_id)
            ),
        )));
    }
    if !tracing.epochs().contains(&query.key_epoch) {
        return Ok(Err(Declined::new(
            "linkage-epoch-unknown",
            format!(
                "this node holds the linkage keys of epochs {:?}, not of epoch {}",
                tracing.epochs(),
                query.key_epoch
            ),
        )));
    }
    let Some(encoding) = Encoding::from_bytes(&query.encoding) else {
        return Ok(Err(Declined::new(
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
    if tracing
        .queries
        .get(&key)
        .map_err(StoreError::from)?
        .is_some()
    {
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
        .map_err(StoreError::from)?;
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
    state: &Arc<Node>,
    peer: &NodeId,
    notice: &pb::TracingMatchNotice,
) -> Result<Result<String, Declined>, ServiceError> {
    let tracing = &state.tracing;
    let _edit = tracing.edit.lock().await;
    let case = match tracing
        .handles
        .get(handle_key(peer.as_str(), &notice.query_handle, None))
        .map_err(StoreError::from)?
    {
        Some(id) => tracing.case(&String::from_utf8_lossy(&id))?,
        None => None,
    };
    let Some(case) = case.filter(|c| c.kind == pb::TracingCaseKind::Request as i32) else {
        return Ok(Err(Declined::new(
            "unknown-tracing-query",
            format!("this node sent {peer} no tracing query with that handle"),
        )));
    };
    if case.purged_at_ms != 0 {
        return Ok(Err(Declined::new(
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
    state: &Arc<Node>,
    peer: &NodeId,
    confirmation: &pb::TracingConfirmation,
) -> Result<Result<String, Declined>, ServiceError> {
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
    state.store.commit().await?;
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
    state: &Arc<Node>,
    actor: &str,
    match_id: &str,
    confirm: bool,
) -> Result<MatchRecord, ServiceError> {
    let tracing = &state.tracing;
    let edit = tracing.edit.lock().await;
    let Some(mut m) = tracing.get_match(match_id)? else {
        return Err(ServiceError::refused(
            ErrorKind::NotFound,
            "unknown-tracing-match",
            format!("no tracing match {match_id} here"),
        ));
    };
    if m.ruled_out || m.confirmed_here_at_ms != 0 {
        return Err(ServiceError::refused(
            ErrorKind::FailedPrecondition,
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
        return Err(ServiceError::refused(
            ErrorKind::FailedPrecondition,
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
    state.store.commit().await?;
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
async fn disclose_logged(state: &Arc<Node>, m: MatchRecord) -> Result<MatchRecord, ServiceError> {
    match disclose(state, &m).await {
        Ok(message_id) => {
            let tracing = &state.tracing;
            let _edit = tracing.edit.lock().await;
            let mut stored = tracing.get_match(&m.match_id)?.unwrap_or(m);
            stored.disclosure_sent = message_id;
            tracing.put_match(&stored)?;
            state.store.commit().await?;
            Ok(stored)
        }
        Err(status) if status.kind() == ErrorKind::FailedPrecondition => {
            let mut entry = state.auditor.entry(pb::AuditEvent::Refused);
            entry.message_id = m.match_id.clone();
            entry.peer = m.peer.clone();
            entry.actor = NODE_ACTOR.to_owned();
            entry.reason = status.reason().unwrap_or("disclosure-refused").to_owned();
            state.auditor.record(&entry).await?;
            tracing::warn!(match_id = %m.match_id, error = %status.message(), "tracing disclosure not sent");
            Ok(m)
        }
        Err(status) => Err(status),
    }
}

/// Seals and queues the disclosure of match `m`: the agreed fields of this node's case, as
/// far as its consent's categories cover them, under that consent.
async fn disclose(state: &Arc<Node>, m: &MatchRecord) -> Result<String, ServiceError> {
    let tracing = &state.tracing;
    let case = tracing.case(&m.case_id)?.filter(|c| c.purged_at_ms == 0);
    let data = state.store.get_blob(&blob_key(&m.case_id))?;
    let (Some(case), Some(data)) = (case, data) else {
        return Err(ServiceError::refused(
            ErrorKind::FailedPrecondition,
            "case-purged",
            format!(
                "tracing case {} was purged (consent withdrawn): nothing to disclose",
                m.case_id
            ),
        ));
    };
    let consent = case.consent.clone().unwrap_or_default();
    // Unreadable data is refused (audited by the caller), never disclosed as an empty case.
    let Ok(payload) = pb::ReferralPayload::decode(data.as_slice()) else {
        return Err(ServiceError::refused(
            ErrorKind::FailedPrecondition,
            "case-data-unreadable",
            format!(
                "the data of tracing case {} does not decode: nothing disclosed; register the case again",
                m.case_id
            ),
        ));
    };
    let disclosure = disclosure_of(&case, payload, m);
    let categories = kinbridge_core::family_tracing::categories(&disclosure);
    let peer = NodeId::new(&m.peer).map_err(|e| ServiceError::internal(e.to_string()))?;
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
    let (message_id, record) = outbox::seal(
        state,
        draft,
        disclosure.encode_to_vec(),
        0,
        consent::check_transfer,
    )?;
    outbox::queue(
        state,
        NODE_ACTOR,
        &case.unit,
        message_id.clone(),
        record,
        None,
    )
    .await?;
    tracing::info!(match_id = %m.match_id, %message_id, "tracing disclosure queued");
    Ok(message_id)
}

/// The disclosure of `case` (its data `payload`) in match `m`: the agreed fields of the case,
/// as far as its consent's categories cover them, and its unit as the contact.
pub(crate) fn disclosure_of(
    case: &CaseRecord,
    mut payload: pb::ReferralPayload,
    m: &MatchRecord,
) -> pb::TracingDisclosure {
    let categories = case
        .consent
        .as_ref()
        .map(|c| c.categories.clone())
        .unwrap_or_default();
    minimise(&mut payload, &categories);
    let fields = agreed_fields(&payload);
    pb::TracingDisclosure {
        query_handle: m.query_handle.clone(),
        candidate_handle: m.candidate_handle.clone(),
        identity: fields.identity,
        location: fields.location,
        family: fields.family,
        contact_unit: case.unit.clone(),
    }
}

/// A peer's disclosure: taken only for a match both caseworkers confirmed. Returns the inbox
/// unit (the case's).
pub async fn take_disclosure(
    state: &Arc<Node>,
    peer: &NodeId,
    message_id: &str,
    disclosure: &pb::TracingDisclosure,
) -> Result<Result<String, Declined>, ServiceError> {
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
        return Ok(Err(Declined::new(
            "tracing-case-withdrawn",
            "the consent of this node's case in this match was withdrawn".to_owned(),
        )));
    }
    if !m.confirmed() {
        return Ok(Err(Declined::new(
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
pub fn to_api(state: &Node, m: &MatchRecord) -> Result<pb::TracingMatch, ServiceError> {
    // The peer's disclosure counts as received once it is in the inbox (the match notes it
    // just before the inbox commit); a purged one stays received, without its fields.
    let item = if m.disclosure_received.is_empty() {
        None
    } else {
        state.store.inbox_lookup(&m.peer, &m.disclosure_received)?
    };
    let received = item.is_some();
    let disclosure = match item.and_then(|i| i.envelope.filter(|_| i.purged_at_ms == 0)) {
        Some(envelope) => state
            .store
            .with_payload(envelope)
            ?
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
    state: &Node,
    consent_id: &str,
    originator: &str,
) -> Result<u32, ServiceError> {
    let tracing = &state.tracing;
    let _edit = tracing.edit.lock().await;
    let mut purged = 0;
    if originator == state.node_id.as_str() {
        let mut cases = Vec::new();
        for entry in tracing.cases.iter() {
            let (_, value) = entry.map_err(StoreError::from)?;
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
            state.store.purge_blob(blob_key(&case.case_id)).await?;
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
        state.store.commit().await?;
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
