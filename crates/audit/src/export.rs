//! The portable export of an audit log, and its offline verification.
//!
//! An export is a text file of JSON lines: a header line, one line per entry in index order
//! (`{"type":"entry","index":N,"leaf":"<hex leaf hash>","entry":"<base64 entry bytes>"}`),
//! then one line per signed checkpoint (`{"type":"checkpoint","note":"…"}`), the last of which
//! covers every entry. [`verify_export`] recomputes the tree from the entries alone and checks
//! every checkpoint's signature and root against it.

use std::io::{BufRead, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{NoteKey, printable, verify_note_any};
use crate::merkle::{Hash, MerkleTree, leaf_hash};

/// The format name in the header line.
pub const EXPORT_FORMAT: &str = "kinbridge-audit-export/v1";

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    /// The first line.
    Header {
        /// [`EXPORT_FORMAT`].
        format: String,
        /// The log's origin.
        origin: String,
        /// The node whose log it is.
        node: String,
        /// When the export was made, milliseconds since the Unix epoch.
        exported_at_ms: i64,
    },
    /// One entry.
    Entry {
        /// Its index in the log.
        index: u64,
        /// Its RFC 9162 leaf hash, hex.
        leaf: String,
        /// The entry bytes, base64.
        entry: String,
    },
    /// One signed checkpoint.
    Checkpoint {
        /// The signed note.
        note: String,
    },
}

/// Writes an export.
pub struct ExportWriter<W: Write> {
    out: W,
    next_index: u64,
}

impl<W: Write> ExportWriter<W> {
    /// Starts an export of `origin` (the log of `node`) on `out`.
    pub fn new(mut out: W, origin: &str, node: &str, exported_at_ms: i64) -> std::io::Result<Self> {
        let header = Line::Header {
            format: EXPORT_FORMAT.into(),
            origin: origin.into(),
            node: node.into(),
            exported_at_ms,
        };
        write_line(&mut out, &header)?;
        Ok(Self { out, next_index: 0 })
    }

    /// Writes the next entry.
    pub fn entry(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let line = Line::Entry {
            index: self.next_index,
            leaf: hex::encode(leaf_hash(bytes)),
            entry: STANDARD.encode(bytes),
        };
        self.next_index += 1;
        write_line(&mut self.out, &line)
    }

    /// Writes a checkpoint note.
    pub fn checkpoint(&mut self, note: &str) -> std::io::Result<()> {
        write_line(&mut self.out, &Line::Checkpoint { note: note.into() })
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_line<W: Write>(out: &mut W, line: &Line) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// Why an export does not verify: the line, the first bad entry's index when one can be
/// named, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}line {line}: {reason}", index.map(|i| format!("entry {i}, ")).unwrap_or_default())]
pub struct VerifyFailure {
    /// 1-based line number.
    pub line: usize,
    /// Index of the first bad entry, when it can be named.
    pub index: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// What a verified export holds.
#[derive(Debug, Clone)]
pub struct VerifiedExport {
    /// The log's origin.
    pub origin: String,
    /// The node whose log it is.
    pub node: String,
    /// Number of entries.
    pub size: u64,
    /// Root hash over all entries.
    pub root: Hash,
    /// Number of checkpoints verified.
    pub checkpoints: usize,
    /// The entries, if asked for.
    pub entries: Vec<Vec<u8>>,
}

/// Verifies an export read from `input` against the log's public keys `keys` (whose name must
/// be the export's origin; each checkpoint must verify under one of them: a node that rotated
/// its key signed older checkpoints with the older key). With `keep_entries`, the entries are
/// returned for reconciliation.
pub fn verify_export<R: BufRead>(
    input: R,
    keys: &[NoteKey],
    keep_entries: bool,
) -> Result<VerifiedExport, VerifyFailure> {
    let fail = |line: usize, index: Option<u64>, reason: String| VerifyFailure {
        line,
        index,
        reason,
    };
    let mut lines = input.lines().enumerate();
    let (origin, node) = match lines.next() {
        Some((_, Ok(text))) => match serde_json::from_str::<Line>(&text) {
            Ok(Line::Header {
                format,
                origin,
                node,
                ..
            }) if format == EXPORT_FORMAT => (origin, node),
            _ => {
                return Err(fail(
                    1,
                    None,
                    format!("not a {EXPORT_FORMAT} file: the first line is not its header"),
                ));
            }
        },
        _ => return Err(fail(1, None, "empty or unreadable file".into())),
    };
    if keys.is_empty() {
        return Err(fail(
            1,
            None,
            "no public key was given to verify with".into(),
        ));
    }
    if let Some(key) = keys.iter().find(|k| k.name != origin) {
        return Err(fail(
            1,
            None,
            format!(
                "the export is of log '{}', but a key given is for '{}'",
                printable(&origin, 80),
                key.name
            ),
        ));
    }
    let mut tree = MerkleTree::new();
    let mut entries = Vec::new();
    let mut notes: Vec<(usize, String)> = Vec::new();
    while let Some((n, text)) = lines.next() {
        let line = n + 1;
        let text = text.map_err(|e| fail(line, None, format!("unreadable: {e}")))?;
        if text.is_empty() {
            continue;
        }
        let expected = tree.size();
        match serde_json::from_str::<Line>(&text) {
            Ok(Line::Entry { index, leaf, entry }) => {
                if !notes.is_empty() {
                    return Err(fail(
                        line,
                        Some(index),
                        "an entry after the checkpoints".into(),
                    ));
                }
                if index != expected {
                    let reason = misplaced(expected, index, line, &mut lines);
                    return Err(fail(line, Some(expected), reason));
                }
                let bytes = STANDARD
                    .decode(entry)
                    .map_err(|_| fail(line, Some(index), "the entry is not valid base64".into()))?;
                let hash = leaf_hash(&bytes);
                if hex::encode(hash) != leaf {
                    return Err(fail(
                        line,
                        Some(index),
                        "the entry does not match its leaf hash: it was altered".into(),
                    ));
                }
                let decoded = crate::entry::decode(&bytes).map_err(|e| {
                    fail(
                        line,
                        Some(index),
                        format!("the entry is not an audit entry: {e}"),
                    )
                })?;
                if decoded.node != node {
                    return Err(fail(
                        line,
                        Some(index),
                        format!(
                            "the entry was logged by '{}', not '{}'",
                            printable(&decoded.node, 80),
                            printable(&node, 80)
                        ),
                    ));
                }
                tree.push(hash);
                if keep_entries {
                    entries.push(bytes);
                }
            }
            Ok(Line::Checkpoint { note }) => notes.push((line, note)),
            Ok(Line::Header { .. }) => return Err(fail(line, None, "a second header".into())),
            Err(_) => {
                return Err(fail(
                    line,
                    Some(expected),
                    "not a valid export line (damaged?)".into(),
                ));
            }
        }
    }
    if notes.is_empty() {
        return Err(fail(
            0,
            None,
            "the export holds no signed checkpoint: nothing vouches for its entries".into(),
        ));
    }
    let mut last_verified: Option<u64> = None;
    for (line, note) in &notes {
        let cp = verify_note_any(note, keys)
            .map_err(|e| fail(*line, None, format!("checkpoint: {e}")))?;
        if cp.size > tree.size() {
            return Err(fail(
                *line,
                Some(tree.size()),
                format!(
                    "the checkpoint covers {} entries but the export holds {}: entries are missing from index {}",
                    cp.size,
                    tree.size(),
                    tree.size()
                ),
            ));
        }
        let root = tree
            .root(cp.size)
            .map_err(|e| fail(*line, None, e.to_string()))?;
        if root != cp.root {
            let after = last_verified.map_or("the start".to_owned(), |s| {
                format!("entry {}", s.saturating_sub(1))
            });
            return Err(fail(
                *line,
                None,
                format!(
                    "the checkpoint for size {} does not match the entries: an entry between {after} and entry {} was altered, dropped, inserted or reordered",
                    cp.size,
                    cp.size.saturating_sub(1)
                ),
            ));
        }
        if last_verified.is_none_or(|s| cp.size > s) {
            last_verified = Some(cp.size);
        }
    }
    let size = tree.size();
    if last_verified != Some(size) {
        return Err(fail(
            0,
            last_verified,
            format!(
                "entries from index {} on are not covered by any signed checkpoint",
                last_verified.unwrap_or(0)
            ),
        ));
    }
    let root = tree.root(size).map_err(|e| fail(0, None, e.to_string()))?;
    Ok(VerifiedExport {
        origin,
        node,
        size,
        root,
        checkpoints: notes.len(),
        entries,
    })
}

/// Says what an entry line holding `found` where entry `expected` belongs (on `line`) means:
/// a reorder when entry `expected` comes later in `rest`, a drop when it never does, a repeat
/// when `found` came before.
fn misplaced(
    expected: u64,
    found: u64,
    line: usize,
    rest: &mut impl Iterator<Item = (usize, std::io::Result<String>)>,
) -> String {
    if found < expected {
        return format!(
            "the entry at position {expected} (line {line}) has index {found}, which came before: entry {found} is repeated, or entries were renumbered"
        );
    }
    // Where entry `expected` is, if anywhere: its position among the entries, and its line.
    let mut position = expected + 1;
    let mut later = None;
    for (n, text) in rest {
        match text.map(|t| serde_json::from_str::<Line>(&t)) {
            Ok(Ok(Line::Entry { index, .. })) if index == expected => {
                later = Some((position, n + 1));
                break;
            }
            Ok(Ok(Line::Entry { .. })) => position += 1,
            Ok(Ok(Line::Checkpoint { .. })) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match later {
        Some((at, at_line)) if at == found => format!(
            "entries {expected} and {found} are out of order (swapped): the entry at position {expected} (line {line}) has index {found}, and the one at position {found} (line {at_line}) has index {expected}"
        ),
        Some((at, at_line)) => format!(
            "entry {expected} is out of order: the entry at position {expected} (line {line}) has index {found}, and entry {expected} comes later, at position {at} (line {at_line})"
        ),
        None => format!(
            "entry {expected} is missing (dropped): the entry at position {expected} (line {line}) has index {found}, and no line holds entry {expected}"
        ),
    }
}

#[cfg(test)]
mod tests;
