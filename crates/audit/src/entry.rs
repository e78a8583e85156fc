//! Audit entries: building them from what a node knows, and reading them back.
//!
//! An entry holds metadata and digests only (ids, kinds, node ids, purpose, consent id,
//! digests, times, reason codes); there is no field for payload content.

use kinbridge_core::UnixMillis;
use kinbridge_proto::v1 as pb;
use prost::Message;

/// Version of the entry format this crate writes.
pub const ENTRY_VERSION: u32 = 1;

/// A fresh entry of `event` logged by `node` now; the caller fills in the rest.
pub fn new_entry(event: pb::AuditEvent, node: &str) -> pb::AuditEntry {
    pb::AuditEntry {
        version: ENTRY_VERSION,
        event: event as i32,
        time_ms: UnixMillis::now().0,
        node: node.to_owned(),
        ..Default::default()
    }
}

/// The entry's bytes: the leaf as stored and hashed.
pub fn encode(entry: &pb::AuditEntry) -> Vec<u8> {
    entry.encode_to_vec()
}

/// Decodes a stored or exported entry.
pub fn decode(bytes: &[u8]) -> Result<pb::AuditEntry, prost::DecodeError> {
    pb::AuditEntry::decode(bytes)
}

/// The event's name without its prefix, in lower case (`delivered`), for reports.
pub fn event_name(entry: &pb::AuditEntry) -> String {
    pb::AuditEvent::try_from(entry.event)
        .map(|e| {
            e.as_str_name()
                .trim_start_matches("AUDIT_EVENT_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("event-{}", entry.event))
}
