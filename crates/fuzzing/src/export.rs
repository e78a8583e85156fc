//! Target `audit_export`: an audit export file through `verify_export`, what
//! `kinbridge audit verify` runs on a file an auditor was handed.

use kinbridge_audit::checkpoint::{Checkpoint, origin_of};
use kinbridge_audit::entry::{decode, encode, new_entry};
use kinbridge_audit::export::{ExportWriter, verify_export};
use kinbridge_audit::merkle::{MerkleTree, leaf_hash};
use kinbridge_proto::v1 as pb;

use crate::assert_error_message;
use crate::checkpoint::note_key;
use crate::fixture::{NOW, SENDER, sender, sender_key};

/// A valid entry of the sender's log.
pub fn valid_entry() -> Vec<u8> {
    let mut entry = new_entry(pb::AuditEvent::Received, SENDER);
    entry.time_ms = NOW.0;
    encode(&entry)
}

/// A valid export of `entries` of the sender's log, with a signed checkpoint after the first
/// entry (when there are two or more) and one covering them all.
pub fn export_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let origin = origin_of(&sender());
    let write = || -> std::io::Result<Vec<u8>> {
        let mut out = ExportWriter::new(Vec::new(), &origin, SENDER, NOW.0)?;
        let mut tree = MerkleTree::new();
        for entry in entries {
            out.entry(entry)?;
            tree.push(leaf_hash(entry));
        }
        let sizes = if entries.len() >= 2 {
            vec![1, tree.size()]
        } else {
            vec![tree.size()]
        };
        for size in sizes {
            let root = tree
                .root(size)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let checkpoint = Checkpoint {
                origin: &origin,
                size,
                root,
            };
            out.checkpoint(&checkpoint.sign(&sender_key()))?;
        }
        out.finish()
    };
    write().unwrap_or_else(|e| panic!("writing an export to memory: {e}"))
}

/// The fuzz bytes, by the first byte's value modulo 3: 0, a whole export file; 1, entries
/// (each a length byte and that many bytes, appended to a valid entry's encoding, so fields
/// are replaced) written into a valid export whose checkpoints cover them; 2, an edit of a
/// valid export of three entries (two bytes of offset, then the bytes written there).
///
/// Asserts: a failure is a `VerifyFailure` naming a line of the file and a short printable
/// reason; a verified export is of the key's log, its size is the number of entries, its root
/// the RFC 9162 root over them, every entry an audit entry of the export's node; written out
/// again, the verified entries verify to the same size and root.
pub fn audit_export(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let mut entries = Vec::new();
            let mut tail = rest;
            while let [len, more @ ..] = tail {
                let n = usize::from(*len).min(more.len());
                let mut entry = valid_entry();
                entry.extend_from_slice(&more[..n]);
                entries.push(entry);
                tail = &more[n..];
            }
            export_of(&entries)
        }
        _ => {
            let [hi, lo, patch @ ..] = rest else {
                return;
            };
            let mut file = export_of(&[valid_entry(), valid_entry(), valid_entry()]);
            let at = usize::from(u16::from_be_bytes([*hi, *lo])) % (file.len() + 1);
            let end = (at + patch.len()).min(file.len());
            file.splice(at..end, patch.iter().copied());
            file
        }
    };
    check(&file);
}

fn check(file: &[u8]) {
    let key = note_key(&sender_key());
    match verify_export(file, std::slice::from_ref(&key), true) {
        Ok(export) => {
            assert_eq!(export.origin, key.name);
            assert_eq!(export.size, export.entries.len() as u64);
            let mut tree = MerkleTree::new();
            for entry in &export.entries {
                tree.push(leaf_hash(entry));
                let decoded = decode(entry)
                    .unwrap_or_else(|e| panic!("a verified entry does not decode: {e}"));
                assert_eq!(decoded.node, export.node);
            }
            let root = tree
                .root(export.size)
                .unwrap_or_else(|e| panic!("the root of a verified export: {e}"));
            assert_eq!(
                root, export.root,
                "a verified export's root is not its entries'"
            );
            assert!(export.checkpoints >= 1);
            if export.node == SENDER {
                let again = verify_export(export_of(&export.entries).as_slice(), &[key], false)
                    .unwrap_or_else(|e| panic!("a verified export written again: {e}"));
                assert_eq!((again.size, again.root), (export.size, export.root));
            }
        }
        Err(failure) => {
            let lines = file.split(|b| *b == b'\n').count();
            assert!(
                failure.line <= lines,
                "a failure on line {} of {lines}",
                failure.line
            );
            assert_error_message(&failure.to_string(), 4096);
        }
    }
}
