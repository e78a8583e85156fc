//! The auditor's reviews of logs, for the console: this node's entries filtered and paged
//! (newest first), its latest checkpoint, its export as a file, and the offline checks the
//! `kinbridge audit verify` and `reconcile` commands make, over uploaded export files.
//!
//! Every call is the auditor's or admin's ([`AUDIT_ROLES`](super::AUDIT_ROLES)); a refusal is
//! recorded in the log. Entries hold metadata and digests only, so a page of them holds no
//! child's data; filters name events, node ids and dates, never a person.

use std::io::{BufReader, Cursor, Write};
use std::sync::{Arc, Mutex};

use kinbridge_audit::checkpoint::{NoteKey, origin_of};
use kinbridge_audit::export::{ExportWriter, Line, verify_export};
use kinbridge_audit::reconcile::reconcile;
use kinbridge_core::{KeyId, NodeId, PeerKey, UnixMillis};
use kinbridge_proto::v1 as pb;
use prost::Message;
use tokio::sync::mpsc;

/// What the answers hold, from the audit crate: a checkpoint, an export's verification, a
/// reconciliation's report.
pub use kinbridge_audit::checkpoint::VerifiedCheckpoint;
pub use kinbridge_audit::export::{VerifiedExport, VerifyFailure};
pub use kinbridge_audit::reconcile::{Mismatch, Report};

use super::{AuditCaller, AuditTrail};
use crate::error::{ErrorKind, ServiceError};
use crate::local::LocalAuth;

/// Entries on one page of the log, at most.
pub const ENTRY_PAGE: usize = 50;
/// Entries one page reads at most, looking for matches (the page then says where to go on).
pub const MAX_SCAN: u64 = 20_000;
/// Largest upload of export files (all of one request's files together).
pub const MAX_EXPORT_BYTES: usize = 64 * 1024 * 1024;
/// Longest public key file (PEM) an auditor may upload.
pub const MAX_KEY_BYTES: usize = 4096;
/// Entries read from the log at a time.
const READ_CHUNK: u64 = 500;
/// A day in milliseconds.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// What an auditor asks of the log, as typed into the page's filter form (every field may be
/// empty): events by name (`refused`, `delivered`, `referral-status`...), a node id, a first
/// and a last day (`YYYY-MM-DD`, UTC, both inclusive), refusals only.
#[derive(Debug, Clone, Default)]
pub struct EntryQuery {
    /// Event names; none: every event.
    pub events: Vec<String>,
    /// A node id the entry names as peer, sender, recipient or authenticated peer.
    pub peer: String,
    /// First day, `YYYY-MM-DD`.
    pub from: String,
    /// Last day, `YYYY-MM-DD`, inclusive.
    pub to: String,
    /// Only `refused` entries.
    pub refusals_only: bool,
}

/// An [`EntryQuery`] checked: what an entry must be to be listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Any of these events (none: every event).
    pub events: Vec<pb::AuditEvent>,
    /// Names this node somewhere.
    pub peer: Option<NodeId>,
    /// Logged at or after.
    pub from_ms: Option<i64>,
    /// Logged before.
    pub to_ms: Option<i64>,
    /// Only refusals.
    pub refusals_only: bool,
}

impl EntryFilter {
    /// Checks `query`: an unknown event, a malformed node id or date is refused with what to
    /// type instead (the refusal quotes nothing typed but a bounded, checked word).
    pub fn parse(query: &EntryQuery) -> Result<Self, ServiceError> {
        let invalid = |reason: &'static str, message: String| {
            ServiceError::refused(ErrorKind::InvalidArgument, reason, message)
        };
        let mut events = Vec::new();
        for name in query
            .events
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            let event = event_of(name).ok_or_else(|| {
                invalid(
                    "bad-filter",
                    format!(
                        "the event filter is not an audit event; choose one of: {}",
                        event_names().join(", ")
                    ),
                )
            })?;
            if !events.contains(&event) {
                events.push(event);
            }
        }
        let peer = match query.peer.trim() {
            "" => None,
            text => Some(NodeId::new(text).map_err(|_| {
                invalid(
                    "bad-filter",
                    "the node filter is a node id, two capital letters, a dash and the authority's code, e.g. MW-DSW".into(),
                )
            })?),
        };
        let day = |text: &str, what: &str| -> Result<Option<i64>, ServiceError> {
            match text.trim() {
                "" => Ok(None),
                text => day_start_ms(text).map(Some).ok_or_else(|| {
                    invalid(
                        "bad-filter",
                        format!("the {what} date is a day written YYYY-MM-DD, e.g. 2026-11-20"),
                    )
                }),
            }
        };
        let from_ms = day(&query.from, "first")?;
        let to_ms = day(&query.to, "last")?.map(|d| d.saturating_add(DAY_MS));
        if let (Some(from), Some(to)) = (from_ms, to_ms)
            && to <= from
        {
            return Err(invalid(
                "bad-filter",
                "the last day is before the first day".into(),
            ));
        }
        Ok(Self {
            events,
            peer,
            from_ms,
            to_ms,
            refusals_only: query.refusals_only,
        })
    }

    /// Whether `entry` passes.
    pub fn matches(&self, entry: &pb::AuditEntry) -> bool {
        let event_ok =
            self.events.is_empty() || self.events.iter().any(|e| *e as i32 == entry.event);
        let refusal_ok = !self.refusals_only || entry.event == pb::AuditEvent::Refused as i32;
        let peer_ok = self.peer.as_ref().is_none_or(|p| {
            let p = p.as_str();
            [
                &entry.peer,
                &entry.sender,
                &entry.recipient,
                &entry.authenticated_peer,
            ]
            .iter()
            .any(|v| v.as_str() == p)
        });
        let from_ok = self.from_ms.is_none_or(|f| entry.time_ms >= f);
        let to_ok = self.to_ms.is_none_or(|t| entry.time_ms < t);
        event_ok && refusal_ok && peer_ok && from_ok && to_ok
    }
}

/// The name of an event in filters and pages: `delivered`, `referral-status`.
pub fn event_name(event: pb::AuditEvent) -> String {
    event
        .as_str_name()
        .trim_start_matches("AUDIT_EVENT_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// Every event's name, in the protocol's order.
pub fn event_names() -> Vec<String> {
    all_events().into_iter().map(event_name).collect()
}

/// Every event but `unspecified`.
pub fn all_events() -> Vec<pb::AuditEvent> {
    (1..=64)
        .filter_map(|n| pb::AuditEvent::try_from(n).ok())
        .collect()
}

/// The event named `name` (`delivered`, `delivery_failed`, `AUDIT_EVENT_DELIVERED`).
fn event_of(name: &str) -> Option<pb::AuditEvent> {
    if name.len() > 64 {
        return None;
    }
    let upper = name.to_ascii_uppercase().replace('-', "_");
    let full = if upper.starts_with("AUDIT_EVENT_") {
        upper
    } else {
        format!("AUDIT_EVENT_{upper}")
    };
    pb::AuditEvent::from_str_name(&full).filter(|e| *e != pb::AuditEvent::Unspecified)
}

/// The start of day `text` (`YYYY-MM-DD`, UTC) in milliseconds since the epoch.
pub(crate) fn day_start_ms(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}

/// One page of the log: matching entries, newest first, with their indices.
#[derive(Debug, Clone, Default)]
pub struct EntryPage {
    /// `(index, entry)`, newest first.
    pub entries: Vec<(u64, pb::AuditEntry)>,
    /// Where the next page starts (entries before this index), if any are left to read.
    pub next_before: Option<u64>,
    /// The log's size when read.
    pub size: u64,
    /// How many entries were read for this page.
    pub scanned: u64,
}

/// The keys an export was checked against, and where they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Public keys the auditor uploaded with the export (as `kinbridge audit verify --key`).
    Uploaded,
    /// This node's own signing keys (the export is of this node's log).
    ThisNode,
    /// The keys this node holds for the registered peer whose log it is.
    RegisteredPeer,
}

/// The verification of one export file.
#[derive(Debug, Clone)]
pub struct ExportCheck {
    /// The node the export's header names.
    pub node: String,
    /// The log's origin, as the header names it.
    pub origin: String,
    /// Where the keys came from.
    pub source: KeySource,
    /// The keys, described (`<key id>: <origin>+<key hash> (fingerprint …)`).
    pub keys: Vec<String>,
    /// What it holds, or the first failure (the first altered entry's index when one can be
    /// named, or the checkpoint that does not verify).
    pub outcome: Result<VerifiedExport, VerifyFailure>,
}

/// One uploaded export file and the public keys given with it (PEM texts, possibly none).
#[derive(Debug, Clone, Default)]
pub struct ExportUpload {
    /// The export file.
    pub file: Vec<u8>,
    /// Public key files (SPKI PEM) to check it with; none: the keys this node holds.
    pub keys: Vec<String>,
}

/// Two exports reconciled: each one's verification, and, when both verify, the report.
#[derive(Debug, Clone)]
pub struct ReconcileCheck {
    /// The first export.
    pub a: ExportCheck,
    /// The second export.
    pub b: ExportCheck,
    /// Deliveries matched and every disagreement, when both exports verified.
    pub report: Option<Report>,
}

/// This node's log as an export file: its name and its bytes, in pieces.
pub struct ExportDownload {
    /// A file name: `<node>-audit-<size>.jsonl`.
    pub file_name: String,
    /// The file's bytes, in order; an error ends it (the file is then incomplete, and does
    /// not verify).
    pub pieces: mpsc::Receiver<Result<Vec<u8>, ServiceError>>,
}

/// A `Write` whose bytes are taken out piece by piece.
#[derive(Clone, Default)]
struct Pieces(Arc<Mutex<Vec<u8>>>);

impl Pieces {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AuditTrail {
    /// A page of this node's log, newest first: the entries before index `before` (or from
    /// the newest) that pass `query`, at most `limit` (at most [`ENTRY_PAGE`]); reading at
    /// most [`MAX_SCAN`] entries, so a rare filter answers a short page and where to go on.
    pub async fn list_entries(
        &self,
        auth: Option<&LocalAuth>,
        query: &EntryQuery,
        before: Option<u64>,
        limit: usize,
    ) -> Result<EntryPage, ServiceError> {
        self.allow(AuditCaller::Local(auth), "read the audit log", false)
            .await?;
        let filter = match EntryFilter::parse(query) {
            Ok(filter) => filter,
            Err(error) => return Err(self.refuse_local(auth, error).await),
        };
        let limit = limit.clamp(1, ENTRY_PAGE);
        let node = Arc::clone(&self.node);
        tokio::task::spawn_blocking(move || scan(&node.auditor, &filter, before, limit))
            .await
            .map_err(|e| ServiceError::internal(format!("audit log read failed: {e}")))?
    }

    /// The latest checkpoint this node signed of its log, if any yet.
    pub async fn latest_checkpoint(
        &self,
        auth: Option<&LocalAuth>,
    ) -> Result<Option<VerifiedCheckpoint>, ServiceError> {
        self.allow(AuditCaller::Local(auth), "read checkpoints", false)
            .await?;
        Ok(self.node.auditor.log().latest_checkpoint())
    }

    /// This node's log as the file `kinbridge audit export` writes (and `verify` reads): the
    /// export use case ([`AuditTrail::export_log`]) written out in the export format.
    pub async fn export_file(
        &self,
        auth: Option<&LocalAuth>,
    ) -> Result<ExportDownload, ServiceError> {
        let mut chunks = self
            .export_log(AuditCaller::Local(auth), pb::ExportLogRequest {})
            .await?;
        let node = self.node.node_id.to_string();
        let file_name = format!("{node}-audit-{}.jsonl", self.node.auditor.log().size());
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let sink = Pieces::default();
            let mut writer: Option<ExportWriter<Pieces>> = None;
            let io =
                |e: std::io::Error| ServiceError::internal(format!("cannot write the export: {e}"));
            while let Some(chunk) = chunks.recv().await {
                let written = chunk.and_then(|chunk| {
                    let w = match writer.as_mut() {
                        Some(w) => w,
                        None => writer.insert(
                            ExportWriter::new(
                                sink.clone(),
                                &chunk.origin,
                                &node,
                                UnixMillis::now().0,
                            )
                            .map_err(io)?,
                        ),
                    };
                    for entry in &chunk.entries {
                        w.entry(entry).map_err(io)?;
                    }
                    for note in &chunk.checkpoints {
                        w.checkpoint(note).map_err(io)?;
                    }
                    Ok(sink.take())
                });
                let failed = written.is_err();
                if tx.send(written).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(ExportDownload {
            file_name,
            pieces: rx,
        })
    }

    /// Verifies an export file as `kinbridge audit verify` does: the tree recomputed from the
    /// entries, every checkpoint's signature and root checked. The keys are the ones uploaded
    /// with it if any (named after the export's origin, as the command names them), else the
    /// keys this node holds for the export's node: its own, or a registered peer's. An export
    /// of another node, with no key given, is refused with what to upload.
    pub async fn verify_upload(
        &self,
        auth: Option<&LocalAuth>,
        upload: ExportUpload,
    ) -> Result<ExportCheck, ServiceError> {
        self.allow(AuditCaller::Local(auth), "verify an audit export", false)
            .await?;
        match self.check_upload(upload, false).await {
            Ok(check) => Ok(check),
            Err(error) => Err(self.refuse_local(auth, error).await),
        }
    }

    /// Reconciles two export files as `kinbridge audit reconcile` does: both verified (keys
    /// chosen as for [`AuditTrail::verify_upload`]), then every delivery one logged checked
    /// against the receipts the other logged, both ways.
    pub async fn reconcile_uploads(
        &self,
        auth: Option<&LocalAuth>,
        a: ExportUpload,
        b: ExportUpload,
    ) -> Result<ReconcileCheck, ServiceError> {
        self.allow(AuditCaller::Local(auth), "reconcile audit exports", false)
            .await?;
        let checked = async {
            let a = self.check_upload(a, true).await?;
            let b = self.check_upload(b, true).await?;
            Ok::<_, ServiceError>((a, b))
        }
        .await;
        let (mut a, mut b) = match checked {
            Ok(both) => both,
            Err(error) => return Err(self.refuse_local(auth, error).await),
        };
        let report = match (&a.outcome, &b.outcome) {
            (Ok(va), Ok(vb)) => Some(reconcile(&va.node, &va.entries, &vb.node, &vb.entries)),
            _ => None,
        };
        for check in [&mut a, &mut b] {
            if let Ok(v) = check.outcome.as_mut() {
                v.entries = Vec::new();
            }
        }
        Ok(ReconcileCheck { a, b, report })
    }

    /// Records `error`, a local client's refusal, and answers it.
    async fn refuse_local(&self, auth: Option<&LocalAuth>, error: ServiceError) -> ServiceError {
        let mut entry = self.node.auditor.entry(pb::AuditEvent::Refused);
        entry.actor = crate::local::actor_of(auth);
        entry.reason = error.refusal_reason();
        entry.method = crate::audit::current_method();
        self.node.auditor.record_refusal(&entry, error).await
    }

    /// The keys for `upload` and its verification (not recorded: the caller records a
    /// refusal).
    async fn check_upload(
        &self,
        upload: ExportUpload,
        keep_entries: bool,
    ) -> Result<ExportCheck, ServiceError> {
        let invalid = |reason: &'static str, message: String| {
            ServiceError::refused(ErrorKind::InvalidArgument, reason, message)
        };
        if upload.file.len() > MAX_EXPORT_BYTES {
            return Err(invalid(
                "too-large",
                format!(
                    "an export file is at most {} MiB here; verify a larger one with `kinbridge audit verify`",
                    MAX_EXPORT_BYTES / (1024 * 1024)
                ),
            ));
        }
        let first = upload
            .file
            .split(|b| *b == b'\n')
            .next()
            .unwrap_or_default();
        let (origin, node) = match serde_json::from_slice::<Line>(first) {
            Ok(Line::Header { origin, node, .. }) => (origin, node),
            _ => {
                return Err(invalid(
                    "not-an-export",
                    "the file is not a kinbridge audit export: its first line is not the export's header; choose the file `kinbridge audit export` or the console's download wrote".into(),
                ));
            }
        };
        let (source, keys) = if upload.keys.is_empty() {
            let id = NodeId::new(&node).map_err(|_| {
                invalid(
                    "not-an-export",
                    "the export's header does not name a node id".into(),
                )
            })?;
            if id == self.node.node_id {
                let ring = self.node.keys.own_keyring();
                (KeySource::ThisNode, described(&id, ring.keys()))
            } else if let Some(ring) = self.node.keys.peer_keyring(&id) {
                (KeySource::RegisteredPeer, described(&id, ring.keys()))
            } else {
                return Err(invalid(
                    "unknown-node",
                    format!(
                        "the export is of {id}'s log, which is neither this node's nor a registered peer's, so no key of it is held here: upload {id}'s public signing key (SPKI PEM), obtained from its authority, with the export"
                    ),
                ));
            }
        } else {
            let mut keys = Vec::with_capacity(upload.keys.len());
            for (n, pem) in upload.keys.iter().enumerate() {
                let bad = || {
                    invalid(
                        "bad-key",
                        format!(
                            "public key file {} is not an Ed25519 public key in SPKI PEM (the `signing.pub` file an authority hands out)",
                            n + 1
                        ),
                    )
                };
                if pem.len() > MAX_KEY_BYTES {
                    return Err(bad());
                }
                let id = KeyId::new(&format!("uploaded-{}", n + 1)).map_err(|_| bad())?;
                let key = PeerKey::from_public_key_pem(id, pem).map_err(|_| bad())?;
                let note = NoteKey {
                    name: origin.clone(),
                    key: *key.verifying_key(),
                };
                keys.push((format!("{}: {}", key.id, note.describe()), note));
            }
            (KeySource::Uploaded, keys)
        };
        let (descriptions, note_keys): (Vec<String>, Vec<NoteKey>) = keys.into_iter().unzip();
        let file = upload.file;
        let outcome = tokio::task::spawn_blocking(move || {
            verify_export(BufReader::new(Cursor::new(file)), &note_keys, keep_entries)
        })
        .await
        .map_err(|e| ServiceError::internal(format!("export verification failed: {e}")))?;
        Ok(ExportCheck {
            node,
            origin,
            source,
            keys: descriptions,
            outcome,
        })
    }
}

/// `node`'s note keys for `keys`, each with its description.
fn described(node: &NodeId, keys: &[PeerKey]) -> Vec<(String, NoteKey)> {
    keys.iter()
        .map(|k| {
            let note = NoteKey {
                name: origin_of(node),
                key: *k.verifying_key(),
            };
            (format!("{}: {}", k.id, note.describe()), note)
        })
        .collect()
}

/// Reads the log backwards from `before` for a page of entries passing `filter`.
fn scan(
    auditor: &crate::audit::Auditor,
    filter: &EntryFilter,
    before: Option<u64>,
    limit: usize,
) -> Result<EntryPage, ServiceError> {
    let log = auditor.log();
    let size = log.size();
    let mut end = before.map_or(size, |b| b.min(size));
    let floor = end.saturating_sub(MAX_SCAN);
    let mut page = EntryPage {
        size,
        ..Default::default()
    };
    while end > floor {
        let start = end.saturating_sub(READ_CHUNK).max(floor);
        let entries = log
            .read_entries(start, end)
            .map_err(|e| ServiceError::internal(format!("cannot read the audit log: {e}")))?;
        for (offset, bytes) in entries.iter().enumerate().rev() {
            let index = start + offset as u64;
            page.scanned += 1;
            // An entry that does not decode is shown as such, by its index: the log's own
            // bytes, checked by its tree, never a peer's.
            let entry = pb::AuditEntry::decode(bytes.as_slice()).unwrap_or_default();
            if filter.matches(&entry) {
                page.entries.push((index, entry));
                if page.entries.len() == limit {
                    page.next_before = (index > 0).then_some(index);
                    return Ok(page);
                }
            }
        }
        end = start;
    }
    page.next_before = (end > 0).then_some(end);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(events: &[&str], peer: &str, from: &str, to: &str) -> EntryQuery {
        EntryQuery {
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            peer: peer.into(),
            from: from.into(),
            to: to.into(),
            refusals_only: false,
        }
    }

    #[test]
    fn a_filter_takes_event_names_node_ids_and_days() {
        let f = EntryFilter::parse(&query(
            &[
                "delivered",
                "referral-status",
                "AUDIT_EVENT_REFUSED",
                "delivered",
            ],
            "MW-DSW",
            "2026-11-01",
            "2026-11-01",
        ))
        .expect("valid");
        assert_eq!(
            f.events,
            [
                pb::AuditEvent::Delivered,
                pb::AuditEvent::ReferralStatus,
                pb::AuditEvent::Refused
            ]
        );
        assert_eq!(f.peer.as_ref().map(NodeId::as_str), Some("MW-DSW"));
        let day = day_start_ms("2026-11-01").expect("day");
        assert_eq!((f.from_ms, f.to_ms), (Some(day), Some(day + DAY_MS)));

        let mut e = pb::AuditEntry {
            event: pb::AuditEvent::Delivered as i32,
            recipient: "MW-DSW".into(),
            time_ms: day + 5,
            ..Default::default()
        };
        assert!(f.matches(&e));
        e.time_ms = day + DAY_MS;
        assert!(!f.matches(&e), "the last day is inclusive, the next is not");
        e.time_ms = day;
        e.recipient = "ZW-DSD".into();
        assert!(!f.matches(&e), "names another node");
        e.recipient = "MW-DSW".into();
        e.event = pb::AuditEvent::Submitted as i32;
        assert!(!f.matches(&e), "another event");
    }

    #[test]
    fn refusals_only_lists_refusals() {
        let f = EntryFilter::parse(&EntryQuery {
            refusals_only: true,
            ..Default::default()
        })
        .expect("valid");
        let refused = pb::AuditEntry {
            event: pb::AuditEvent::Refused as i32,
            ..Default::default()
        };
        let delivered = pb::AuditEntry {
            event: pb::AuditEvent::Delivered as i32,
            ..Default::default()
        };
        assert!(f.matches(&refused) && !f.matches(&delivered));
    }

    #[test]
    fn a_bad_filter_is_refused_without_echoing_it() {
        for q in [
            query(&["Chipo Mwansa"], "", "", ""),
            query(&[], "Chipo", "", ""),
            query(&[], "", "20 November", ""),
            query(&[], "", "2026-02-30", ""),
            query(&[], "", "2026-11-02", "2026-11-01"),
        ] {
            let error = EntryFilter::parse(&q).expect_err("refused");
            assert_eq!(error.refusal_reason(), "bad-filter");
            assert!(!error.message().contains("Chipo"), "{}", error.message());
            assert!(!error.message().contains("November"), "{}", error.message());
        }
    }

    #[test]
    fn every_event_has_a_name_that_parses_back() {
        for event in all_events() {
            assert_eq!(event_of(&event_name(event)), Some(event));
        }
        assert!(event_names().contains(&"delivery-failed".to_owned()));
    }
}
