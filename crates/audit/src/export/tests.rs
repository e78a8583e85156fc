//! Offline verification: an honest export verifies; a flipped byte, a dropped entry, a
//! reordered entry and a checkpoint signed by another key each fail, naming what they can.

use super::*;
use crate::checkpoint::{Checkpoint, origin_of};
use crate::entry::{encode, new_entry};
use kinbridge_core::{KeyId, NodeId, NodeSigningKey};
use kinbridge_proto::v1 as pb;

struct Fixture {
    note_key: NoteKey,
    text: String,
}

/// An export of `n` entries with checkpoints at `n / 2` and `n`, the last signed by `last_signer`
/// (the log's own key if `None`).
fn build(n: u64, last_signer: Option<&NodeSigningKey>) -> Fixture {
    let node = NodeId::new("ZM-DSW").expect("node");
    let key = NodeSigningKey::generate(KeyId::new("k1").expect("key"));
    let origin = origin_of(&node);
    let note_key = NoteKey {
        name: origin.clone(),
        key: key.verifying_key(),
    };
    let mut tree = MerkleTree::new();
    let mut w = ExportWriter::new(Vec::new(), &origin, "ZM-DSW", 0).expect("header");
    for i in 0..n {
        let mut e = new_entry(pb::AuditEvent::Received, "ZM-DSW");
        e.message_id = format!("m-{i}");
        let bytes = encode(&e);
        tree.push(leaf_hash(&bytes));
        w.entry(&bytes).expect("entry");
    }
    for (size, signer) in [(n / 2, &key), (n, last_signer.unwrap_or(&key))] {
        let root = tree.root(size).expect("root");
        w.checkpoint(
            &Checkpoint {
                origin: &origin,
                size,
                root,
            }
            .sign(signer),
        )
        .expect("checkpoint");
    }
    let text = String::from_utf8(w.finish().expect("finish")).expect("utf8");
    Fixture { note_key, text }
}

fn honest(n: u64) -> Fixture {
    build(n, None)
}

fn verify(f: &Fixture, text: &str) -> Result<VerifiedExport, VerifyFailure> {
    verify_export(text.as_bytes(), std::slice::from_ref(&f.note_key), false)
}

#[test]
fn an_honest_export_verifies() {
    let f = honest(10);
    let v = verify(&f, &f.text).expect("verifies");
    assert_eq!((v.size, v.checkpoints), (10, 2));
}

#[test]
fn a_flipped_byte_names_the_entry() {
    let f = honest(10);
    let mut lines: Vec<String> = f.text.lines().map(str::to_owned).collect();
    // Line 8 holds entry 6; flip one character of its base64 entry.
    let line = &mut lines[7];
    let at = line.find("\"entry\":\"").expect("entry field") + 12;
    let mut bytes = line.clone().into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    *line = String::from_utf8(bytes).expect("utf8");
    let err = verify(&f, &lines.join("\n")).expect_err("must fail");
    assert_eq!(err.index, Some(6), "{err}");
    assert_eq!(err.line, 8);
}

#[test]
fn a_dropped_entry_is_named() {
    let f = honest(10);
    let lines: Vec<&str> = f
        .text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, l)| l)
        .collect();
    let err = verify(&f, &lines.join("\n")).expect_err("must fail");
    assert_eq!(err.index, Some(3), "{err}");
    assert_eq!(err.line, 5);
    assert_eq!(
        err.reason,
        "entry 3 is missing (dropped): the entry at position 3 (line 5) has index 4, and no line holds entry 3"
    );
}

#[test]
fn two_swapped_entries_are_named_as_a_reorder_not_a_drop() {
    let f = honest(10);
    let mut lines: Vec<&str> = f.text.lines().collect();
    // Lines 5 and 6 hold entries 3 and 4.
    lines.swap(4, 5);
    let err = verify(&f, &lines.join("\n")).expect_err("must fail");
    assert_eq!((err.index, err.line), (Some(3), 5), "{err}");
    assert_eq!(
        err.reason,
        "entries 3 and 4 are out of order (swapped): the entry at position 3 (line 5) has index 4, and the one at position 4 (line 6) has index 3"
    );
    assert!(!err.reason.contains("missing"), "{err}");
}

#[test]
fn an_entry_moved_later_is_named_as_out_of_order() {
    let f = honest(10);
    let mut lines: Vec<&str> = f.text.lines().collect();
    // Entry 2 (line 4) moved after entry 6 (line 8).
    let moved = lines.remove(3);
    lines.insert(7, moved);
    let err = verify(&f, &lines.join("\n")).expect_err("must fail");
    assert_eq!((err.index, err.line), (Some(2), 4), "{err}");
    assert_eq!(
        err.reason,
        "entry 2 is out of order: the entry at position 2 (line 4) has index 3, and entry 2 comes later, at position 6 (line 8)"
    );
}

#[test]
fn a_repeated_entry_is_named() {
    let f = honest(10);
    let mut lines: Vec<&str> = f.text.lines().collect();
    // Entry 1 (line 3) again after entry 4 (line 6).
    let again = lines[2];
    lines.insert(6, again);
    let err = verify(&f, &lines.join("\n")).expect_err("must fail");
    assert_eq!((err.index, err.line), (Some(5), 7), "{err}");
    assert!(
        err.reason.contains("has index 1, which came before"),
        "{err}"
    );
}

#[test]
fn a_renumbered_alteration_is_caught_by_the_checkpoints() {
    let f = honest(10);
    let mut lines: Vec<String> = f.text.lines().map(str::to_owned).collect();
    // Swap the entries of lines 3 and 4 but keep the index fields in order.
    let parse = |l: &str| match serde_json::from_str::<Line>(l) {
        Ok(Line::Entry { index, leaf, entry }) => (index, leaf, entry),
        _ => panic!("entry line"),
    };
    let (i2, l2, e2) = parse(&lines[2]);
    let (i3, l3, e3) = parse(&lines[3]);
    lines[2] = serde_json::to_string(&Line::Entry {
        index: i2,
        leaf: l3,
        entry: e3,
    })
    .expect("json");
    lines[3] = serde_json::to_string(&Line::Entry {
        index: i3,
        leaf: l2,
        entry: e2,
    })
    .expect("json");
    let err = verify(&f, &lines.join("\n")).expect_err("must fail");
    assert!(err.reason.contains("does not match the entries"), "{err}");
}

#[test]
fn a_checkpoint_signed_by_another_key_fails() {
    let other = NodeSigningKey::generate(KeyId::new("k2").expect("key"));
    let f = build(8, Some(&other));
    let err = verify(&f, &f.text).expect_err("must fail");
    assert!(err.reason.contains("no signature by key"), "{err}");
}

#[test]
fn entries_beyond_the_last_checkpoint_fail() {
    let f = honest(10);
    let mut lines: Vec<&str> = f.text.lines().collect();
    lines.remove(lines.len() - 1);
    let err = verify(&f, &lines.join("\n")).expect_err("must fail");
    assert!(err.reason.contains("not covered"), "{err}");
}

/// An export's header origin and an entry's node come from the file: a failure quotes them
/// printable and short, so a crafted export cannot write control characters into an
/// auditor's terminal or a log.
#[test]
fn failures_quote_no_control_characters_from_the_file() {
    let f = honest(2);
    // JSON escapes: the file holds them as text, the parsed origin as control characters.
    let origin = f
        .text
        .replacen("kinbridge.audit/ZM-DSW", "evil\\u001b[2J\\r\\nlog", 1);
    let entry = new_entry(pb::AuditEvent::Received, "ZM-\u{7}DSW");
    let line = format!(
        "{{\"type\":\"entry\",\"index\":0,\"leaf\":\"{}\",\"entry\":\"{}\"}}",
        hex::encode(leaf_hash(&encode(&entry))),
        STANDARD.encode(encode(&entry))
    );
    let mut lines: Vec<&str> = f.text.lines().collect();
    lines[1] = &line;
    let other_node = lines.join("\n");
    for text in [origin, other_node] {
        let failure = verify(&f, &text).expect_err("refused").to_string();
        assert!(!failure.chars().any(char::is_control), "{failure:?}");
    }
}
