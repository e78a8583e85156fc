//! Reporting: the non-identifying dimensions of every referral and case transfer this node
//! sent or received (age band, sex, migratory status, purpose, route, month), kept in the
//! store's `stats` tree as they were at submission or receipt, and the outcome read at query
//! time from the outbox and the workflow histories. Counts come out only through
//! [`kinbridge_core::reporting::tabulate`], with small-cell suppression.

use kinbridge_core::reporting::{Fact, fact_of};
use kinbridge_proto::v1 as pb;
use kinbridge_store::{InboxRecord, OutboxRecord, Store, StoreError};
use prost::Message;

/// What the `stats` tree keeps of one message: no id, no name, no date of birth.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsRecord {
    /// See `Fact`.
    #[prost(string, tag = "1")]
    pub age_band: String,
    /// See `Fact`.
    #[prost(string, tag = "2")]
    pub sex: String,
    /// See `Fact`.
    #[prost(string, tag = "3")]
    pub migratory_status: String,
    /// See `Fact`.
    #[prost(string, tag = "4")]
    pub purpose: String,
    /// The node that sent the message.
    #[prost(string, tag = "5")]
    pub origin: String,
    /// The node it went to.
    #[prost(string, tag = "6")]
    pub destination: String,
    /// When it was submitted (sent) or received here.
    #[prost(int64, tag = "7")]
    pub at_ms: i64,
    /// Whether this node sent it.
    #[prost(bool, tag = "8")]
    pub sent: bool,
}

/// The node's reporting records.
pub struct Reporting {
    /// `origin 0x00 message id` → [`StatsRecord`].
    tree: sled::Tree,
}

fn key(origin: &str, message_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(origin.len() + 1 + message_id.len());
    k.extend_from_slice(origin.as_bytes());
    k.push(0);
    k.extend_from_slice(message_id.as_bytes());
    k
}

/// The record of `envelope` (with its payload) if it carries a case: a referral or case
/// transfer, a tracing disclosure (its agreed fields), a tracing query (no dimension can be
/// read from an encoding: its sender notes the request's own with [`Reporting::note_query`]);
/// `None` for any other kind.
fn record_of(envelope: &pb::Envelope, at_ms: i64, sent: bool) -> Option<(Vec<u8>, StatsRecord)> {
    let header = pb::EnvelopeHeader::decode(envelope.header.as_slice()).ok()?;
    let payload = match pb::MessageKind::try_from(header.kind).ok()? {
        pb::MessageKind::Referral | pb::MessageKind::CaseTransfer => {
            pb::ReferralPayload::decode(envelope.payload.as_slice()).ok()?
        }
        pb::MessageKind::TracingDisclosure => {
            let d = pb::TracingDisclosure::decode(envelope.payload.as_slice()).ok()?;
            pb::ReferralPayload {
                identity: d.identity,
                location: d.location,
                family: d.family,
                ..Default::default()
            }
        }
        pb::MessageKind::TracingRequest => pb::ReferralPayload::default(),
        _ => return None,
    };
    let purpose = pb::Purpose::try_from(header.purpose).unwrap_or(pb::Purpose::Unspecified);
    let record = stats_record(&payload, purpose, &header, at_ms, sent);
    Some((key(&header.sender, &header.message_id), record))
}

/// What the `stats` tree keeps of a message of `header` carrying `payload`.
fn stats_record(
    payload: &pb::ReferralPayload,
    purpose: pb::Purpose,
    header: &pb::EnvelopeHeader,
    at_ms: i64,
    sent: bool,
) -> StatsRecord {
    let f = fact_of(
        payload,
        purpose,
        &header.sender,
        &header.recipient,
        at_ms,
        "",
    );
    StatsRecord {
        age_band: f.age_band,
        sex: f.sex,
        migratory_status: f.migratory_status,
        purpose: f.purpose,
        origin: header.sender.clone(),
        destination: header.recipient.clone(),
        at_ms,
        sent,
    }
}

impl Reporting {
    /// The reporting records of `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree("stats")?,
        })
    }

    /// Notes a message this node is about to queue (made durable by the queue's commit),
    /// unless it was noted already (a tracing query, by [`Self::note_query`]). Returns the key
    /// to forget if queueing fails.
    pub fn note_sent(&self, record: &OutboxRecord) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(envelope) = &record.envelope else {
            return Ok(None);
        };
        let Some((k, r)) = record_of(envelope, record.submitted_at_ms, true) else {
            return Ok(None);
        };
        let _ = self
            .tree
            .compare_and_swap(&k, None::<&[u8]>, Some(r.encode_to_vec()))?;
        Ok(Some(k))
    }

    /// Notes a tracing query this node is about to send for `request` (whose dimensions the
    /// query's encoding does not show), before it is queued.
    pub fn note_query(
        &self,
        record: &OutboxRecord,
        request: &pb::ReferralPayload,
    ) -> Result<(), StoreError> {
        let Some(envelope) = &record.envelope else {
            return Ok(());
        };
        let Ok(header) = pb::EnvelopeHeader::decode(envelope.header.as_slice()) else {
            return Ok(());
        };
        let r = stats_record(
            request,
            pb::Purpose::FamilyTracing,
            &header,
            record.submitted_at_ms,
            true,
        );
        self.tree
            .insert(key(&header.sender, &header.message_id), r.encode_to_vec())?;
        Ok(())
    }

    /// Forgets what [`Self::note_sent`] noted for a message that was not queued after all.
    pub fn forget(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree.remove(key)?;
        Ok(())
    }

    /// Notes a message received here (made durable by the inbox's commit). A re-delivery
    /// keeps the first record.
    pub fn note_received(&self, record: &InboxRecord) -> Result<(), StoreError> {
        let Some(envelope) = &record.envelope else {
            return Ok(());
        };
        if let Some((k, r)) = record_of(envelope, record.received_at_ms, false) {
            let _ = self
                .tree
                .compare_and_swap(&k, None::<&[u8]>, Some(r.encode_to_vec()))?;
        }
        Ok(())
    }

    /// The facts of the messages sent or received in `[from_ms, to_ms)`, with their outcome
    /// as the outbox and the workflow history say now.
    pub fn facts(&self, store: &Store, from_ms: i64, to_ms: i64) -> Result<Vec<Fact>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.iter() {
            let (k, v) = entry?;
            let r = StatsRecord::decode(v.as_ref()).map_err(|e| StoreError::Corrupt {
                key: "stats".into(),
                reason: e.to_string(),
            })?;
            if r.at_ms < from_ms || r.at_ms >= to_ms {
                continue;
            }
            let message_id = k
                .splitn(2, |b| *b == 0)
                .nth(1)
                .map(|id| String::from_utf8_lossy(id).into_owned())
                .unwrap_or_default();
            let outcome = outcome(store, &r, &message_id)?;
            out.push(Fact {
                age_band: r.age_band,
                sex: r.sex,
                migratory_status: r.migratory_status,
                purpose: r.purpose,
                route: format!("{} → {}", r.origin, r.destination),
                month: kinbridge_core::reporting::month_of(r.at_ms),
                outcome,
            });
        }
        Ok(out)
    }
}

/// Where a message stands: its referral workflow's latest state (declined and closed with
/// their code), or else its delivery (`pending`, `received`, `refused`, `expired`).
fn outcome(store: &Store, r: &StatsRecord, message_id: &str) -> Result<String, StoreError> {
    let history = store.workflow(&r.origin, message_id)?;
    if let Some(last) = history.iter().max_by_key(|c| c.at_ms) {
        let state = pb::ReferralState::try_from(last.state).unwrap_or(pb::ReferralState::Received);
        let name = state
            .as_str_name()
            .trim_start_matches("REFERRAL_STATE_")
            .to_ascii_lowercase()
            .replace('_', "-");
        return Ok(match state {
            pb::ReferralState::Declined | pb::ReferralState::Closed if !last.code.is_empty() => {
                format!("{name}:{}", last.code)
            }
            _ => name,
        });
    }
    if !r.sent {
        return Ok("received".into());
    }
    let state = store
        .outbox_get(message_id)?
        .and_then(|o| pb::DeliveryState::try_from(o.state).ok());
    Ok(match state {
        Some(pb::DeliveryState::Delivered) => "received",
        Some(pb::DeliveryState::Refused) => "refused",
        Some(pb::DeliveryState::Expired) => "expired",
        _ => "pending",
    }
    .into())
}
