//! The purge indexes: what a retention sweep and a consent withdrawal read instead of every
//! record held. `purge_by_time` is keyed by (time, side, envelope digest), the time being an
//! inbox record's reception or an outbox record's submission, so a sweep reads the range up to
//! its cutoff; `purge_by_consent` is keyed by (originator, consent id, side, envelope digest).
//! Both map to the record's key in the inbox or the outbox. Entries are written in the
//! transaction that writes the record they index and removed when its payload is purged. A
//! store written before the indexes existed gets them once, at open; a marker says they are
//! built.

use kinbridge_core::EnvelopeDigest;
use kinbridge_proto::v1 as pb;
use prost::Message;

use crate::{InboxRecord, OutboxRecord, StoreError};

/// The side of an index entry: the inbox.
pub(crate) const INBOX: u8 = 0;
/// The side of an index entry: the outbox.
pub(crate) const OUTBOX: u8 = 1;

/// The key (in the store's default tree) that says the purge indexes are built.
const BUILT: &[u8] = b"purge_index_built";

/// The node that originated the data an envelope header carries: the first node of its chain
/// of custody, or its sender.
pub fn originator(header: &pb::EnvelopeHeader) -> &str {
    header.custody.first().unwrap_or(&header.sender)
}

/// A time as an index key part that sorts as the time does (the sign bit flipped).
pub(crate) fn time_key(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// The `purge_by_consent` key prefix of `consent_id` from `originator`: each part
/// length-prefixed, so no pair of names can spell another.
pub(crate) fn consent_prefix(originator: &str, consent_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + originator.len() + consent_id.len());
    for part in [originator, consent_id] {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// The index entries of one record.
pub(crate) struct Entries {
    /// Its `purge_by_time` key.
    pub by_time: Vec<u8>,
    /// Its `purge_by_consent` key; none if its header does not decode (retention still
    /// reaches it by its time).
    pub by_consent: Option<Vec<u8>>,
}

impl Entries {
    /// The entries of the record on `side` whose time is `at_ms` and whose envelope (header
    /// and signature) is `envelope`.
    pub(crate) fn of(side: u8, at_ms: i64, envelope: &pb::Envelope) -> Self {
        let digest = EnvelopeDigest::compute(&envelope.header, &envelope.signature).0;
        let by_time = [time_key(at_ms).as_slice(), &[side], &digest].concat();
        let by_consent = pb::EnvelopeHeader::decode(envelope.header.as_slice())
            .ok()
            .map(|h| {
                [
                    consent_prefix(originator(&h), &h.consent_id).as_slice(),
                    &[side],
                    &digest,
                ]
                .concat()
            });
        Self {
            by_time,
            by_consent,
        }
    }

    /// The entries of an inbox record, if it holds an envelope.
    pub(crate) fn inbox(record: &InboxRecord) -> Option<Self> {
        let envelope = record.envelope.as_ref()?;
        Some(Self::of(INBOX, record.received_at_ms, envelope))
    }

    /// The entries of an outbox record, if it holds an envelope.
    pub(crate) fn outbox(record: &OutboxRecord) -> Option<Self> {
        let envelope = record.envelope.as_ref()?;
        Some(Self::of(OUTBOX, record.submitted_at_ms, envelope))
    }
}

/// The side an index key names (the byte after its time or consent prefix).
pub(crate) fn side_of(key: &[u8]) -> Option<u8> {
    key.len().checked_sub(33).map(|at| key[at])
}

/// Builds the purge indexes from every record not yet purged, unless the marker says they
/// are built (a store written before they existed). Returns whether it built them.
pub(crate) fn ensure_built(
    db: &sled::Db,
    inbox: &sled::Tree,
    outbox: &sled::Tree,
    by_time: &sled::Tree,
    by_consent: &sled::Tree,
) -> Result<bool, StoreError> {
    if db.get(BUILT)?.is_some() {
        return Ok(false);
    }
    by_time.clear()?;
    by_consent.clear()?;
    let add = |entries: Option<Entries>, key: &[u8]| -> Result<(), StoreError> {
        if let Some(entries) = entries {
            by_time.insert(entries.by_time, key)?;
            if let Some(by_consent_key) = entries.by_consent {
                by_consent.insert(by_consent_key, key)?;
            }
        }
        Ok(())
    };
    for entry in inbox.iter() {
        let (key, value) = entry?;
        let record = crate::decode::<InboxRecord>("inbox", &value)?;
        if record.purged_at_ms == 0 {
            add(Entries::inbox(&record), &key)?;
        }
    }
    for entry in outbox.iter() {
        let (key, value) = entry?;
        let record = crate::decode::<OutboxRecord>("outbox", &value)?;
        if record.purged_at_ms == 0 {
            add(Entries::outbox(&record), &key)?;
        }
    }
    // Written after the entries: sled keeps the order of writes, so a marker that survives
    // a crash comes with every entry before it.
    db.insert(BUILT, &[1])?;
    Ok(true)
}

/// Forgets that the indexes are built, as a store of an earlier release (for tests of the
/// upgrade).
#[cfg(test)]
pub(crate) fn unbuild(
    db: &sled::Db,
    by_time: &sled::Tree,
    by_consent: &sled::Tree,
) -> Result<(), StoreError> {
    db.remove(BUILT)?;
    by_time.clear()?;
    by_consent.clear()?;
    Ok(())
}

#[cfg(test)]
mod tests;
