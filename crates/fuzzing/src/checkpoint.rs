//! Target `checkpoint`: a C2SP signed note carrying an audit checkpoint, through
//! `verify_note` and `verify_note_any` (what a node runs on a peer's checkpoint in a receipt
//! or a consistency check, and an auditor on an export).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kinbridge_audit::checkpoint::{
    Checkpoint, MAX_NOTE_BYTES, NoteKey, VerifiedCheckpoint, origin_of, verify_note,
    verify_note_any,
};
use kinbridge_core::NodeSigningKey;

use crate::assert_error_message;
use crate::fixture::{receiver_key, sender, sender_key};

/// The note key of the sender's log (the key a node holds for it).
pub fn note_key(key: &NodeSigningKey) -> NoteKey {
    NoteKey {
        name: origin_of(&sender()),
        key: key.verifying_key(),
    }
}

/// `body` signed by `key` under the name `name`, in the signed-note form.
pub fn sign_body(body: &str, name: &str, key: &NodeSigningKey) -> String {
    let note_key = NoteKey {
        name: name.to_owned(),
        key: key.verifying_key(),
    };
    let mut blob = note_key.key_hash().to_vec();
    blob.extend_from_slice(&key.sign(body.as_bytes()).to_bytes());
    format!("{body}\n\u{2014} {name} {}\n", STANDARD.encode(blob))
}

/// The fuzz bytes (as UTF-8; a gRPC string is), by the first byte's parity: 0, a whole note;
/// 1, a note body, signed by the log's key (reaching the origin, size and root lines).
///
/// Asserts: a refusal is a `CheckpointError` with a short printable message; an accepted
/// note is at most `MAX_NOTE_BYTES`, names the log's origin, and its body begins with the
/// checkpoint it reads as, which signed again verifies to the same checkpoint; the lenient
/// `verify_note_any` (any of several keys) never accepts what `verify_note` with each key
/// refuses, and accepts exactly what one of them accepts.
pub fn checkpoint(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let key = note_key(&sender_key());
    let note = if mode % 2 == 0 {
        text.to_owned()
    } else {
        sign_body(text, &key.name, &sender_key())
    };
    let other = NoteKey {
        name: key.name.clone(),
        key: receiver_key().verifying_key(),
    };
    let strict = check(verify_note(&note, &key));
    let strict_other = check(verify_note(&note, &other));
    let lenient = check(verify_note_any(&note, &[other, key.clone()]));
    match (&lenient, &strict, &strict_other) {
        (Ok(cp), Ok(a), _) => assert_eq!(cp, a),
        (Ok(cp), _, Ok(b)) => assert_eq!(cp, b),
        (Ok(_), Err(_), Err(_)) => {
            panic!("verify_note_any accepted a note that verify_note refuses under every key")
        }
        (Err(_), Ok(_), _) | (Err(_), _, Ok(_)) => {
            panic!("verify_note_any refused a note one of its keys verifies")
        }
        (Err(_), Err(_), Err(_)) => {}
    }
    if let Ok(cp) = strict {
        assert!(note.len() <= MAX_NOTE_BYTES);
        assert_eq!(cp.origin, key.name);
        assert_eq!(cp.note, note);
        let again = Checkpoint {
            origin: &cp.origin,
            size: cp.size,
            root: cp.root,
        };
        assert!(
            note.starts_with(&again.body()),
            "the note's body is not its checkpoint's"
        );
        let resigned = verify_note(&again.sign(&sender_key()), &key)
            .unwrap_or_else(|e| panic!("a checkpoint signed again does not verify: {e}"));
        assert_eq!((resigned.size, resigned.root), (cp.size, cp.root));
    }
}

fn check(
    result: Result<VerifiedCheckpoint, kinbridge_audit::checkpoint::CheckpointError>,
) -> Result<VerifiedCheckpoint, String> {
    result.map_err(|e| {
        let message = e.to_string();
        assert_error_message(&message, 2048);
        message
    })
}
