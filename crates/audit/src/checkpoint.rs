//! Checkpoints: a log's size and root hash, signed in the C2SP signed-note format.
//!
//! The checkpoint body is C2SP `tlog-checkpoint`: three lines, the origin, the tree size in
//! decimal, and the base64 root hash, each ending in a newline. The note is C2SP
//! `signed-note`: the body, an empty line, and one line per signature,
//! `"— " key-name " " base64(key-hash || signature)`, where for Ed25519 the key hash is the
//! first four bytes of `SHA-256(key-name || "\n" || 0x01 || public key)` and the signature is
//! over the body's bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};
use kinbridge_core::{NodeId, NodeSigningKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The signature-line prefix: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// The signed-note signature type byte of Ed25519.
const ED25519_TYPE: u8 = 0x01;
/// Longest note accepted: a checkpoint is three short lines and a few signatures.
pub const MAX_NOTE_BYTES: usize = 4096;

/// The origin (and key name) of `node`'s audit log.
pub fn origin_of(node: &NodeId) -> String {
    format!("kinbridge.audit/{node}")
}

/// Why a checkpoint note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note is not in the signed-note format.
    #[error("malformed checkpoint note: {0}")]
    Malformed(String),
    /// No signature line by the expected key.
    #[error("the checkpoint carries no signature by key '{0}'")]
    NoSignature(String),
    /// A signature line by the expected key that does not verify.
    #[error("the checkpoint signature by key '{0}' does not verify")]
    BadSignature(String),
    /// The origin is not the expected one.
    #[error("the checkpoint's origin is '{got}', expected '{expected}'")]
    WrongOrigin {
        /// Found.
        got: String,
        /// Expected.
        expected: String,
    },
}

/// A log's state: its origin, size and root hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint<'a> {
    /// Names the log (`kinbridge.audit/ZM-DSW`).
    pub origin: &'a str,
    /// Number of entries.
    pub size: u64,
    /// RFC 9162 root hash of those entries.
    pub root: Hash,
}

/// A checkpoint read from a verified note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// Names the log.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The note, as received.
    pub note: String,
}

/// A public key that verifies notes: its name and the Ed25519 key.
#[derive(Debug, Clone)]
pub struct NoteKey {
    /// The key name, which is the log's origin.
    pub name: String,
    /// The Ed25519 key.
    pub key: VerifyingKey,
}

impl NoteKey {
    /// The 4-byte signed-note key hash.
    pub fn key_hash(&self) -> [u8; 4] {
        key_hash(&self.name, &self.key)
    }
}

fn key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519_TYPE]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

impl Checkpoint<'_> {
    /// The checkpoint body text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// The signed note: the body signed by `key` under the key name `origin`.
    pub fn sign(&self, key: &NodeSigningKey) -> String {
        let body = self.body();
        let signature = key.sign(body.as_bytes());
        let mut blob = key_hash(self.origin, &key.verifying_key()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.origin,
            STANDARD.encode(blob)
        )
    }
}

/// Verifies `note` with `key` and reads its checkpoint; the origin must equal the key name.
pub fn verify_note(note: &str, key: &NoteKey) -> Result<VerifiedCheckpoint, CheckpointError> {
    let malformed = |what: &str| CheckpointError::Malformed(what.to_owned());
    if note.len() > MAX_NOTE_BYTES {
        return Err(malformed("longer than a checkpoint can be"));
    }
    let split = note
        .find("\n\n")
        .ok_or_else(|| malformed("no empty line before the signatures"))?;
    let (body, signatures) = (&note[..=split], &note[split + 2..]);
    if !signatures.ends_with('\n') {
        return Err(malformed("the signature block does not end with a newline"));
    }
    let expected_hash = key.key_hash();
    let mut found = false;
    for line in signatures.lines() {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| malformed("a signature line does not start with an em dash"))?;
        let (name, blob) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("a signature line has no signature"))?;
        if name != key.name {
            continue;
        }
        let blob = STANDARD
            .decode(blob)
            .map_err(|_| malformed("a signature is not base64"))?;
        if blob.len() != 4 + 64 || blob[..4] != expected_hash {
            continue;
        }
        found = true;
        let signature =
            Signature::from_slice(&blob[4..]).map_err(|_| malformed("not an Ed25519 signature"))?;
        key.key
            .verify_strict(body.as_bytes(), &signature)
            .map_err(|_| CheckpointError::BadSignature(key.name.clone()))?;
    }
    if !found {
        return Err(CheckpointError::NoSignature(key.name.clone()));
    }
    let mut lines = body.lines();
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| malformed("no origin line"))?;
    if origin != key.name {
        return Err(CheckpointError::WrongOrigin {
            got: origin.chars().take(80).collect(),
            expected: key.name.clone(),
        });
    }
    let size = lines
        .next()
        .filter(|s| !(s.starts_with('+') || (s.len() > 1 && s.starts_with('0'))))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| malformed("the size line is not a decimal number"))?;
    let root = lines
        .next()
        .and_then(|r| STANDARD.decode(r).ok())
        .and_then(|r| <[u8; 32]>::try_from(r.as_slice()).ok())
        .ok_or_else(|| malformed("the root hash line is not a base64 32-byte hash"))?;
    Ok(VerifiedCheckpoint {
        origin: origin.to_owned(),
        size,
        root,
        note: note.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinbridge_core::KeyId;

    fn setup() -> (NodeSigningKey, NoteKey, String) {
        let key = NodeSigningKey::generate(KeyId::new("k1").expect("key id"));
        let origin = origin_of(&NodeId::new("ZM-DSW").expect("node"));
        let note_key = NoteKey {
            name: origin.clone(),
            key: key.verifying_key(),
        };
        (key, note_key, origin)
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let (key, note_key, origin) = setup();
        let cp = Checkpoint {
            origin: &origin,
            size: 42,
            root: [7; 32],
        };
        let note = cp.sign(&key);
        assert!(note.starts_with("kinbridge.audit/ZM-DSW\n42\nBwcH"));
        assert!(note.contains("\n\n\u{2014} kinbridge.audit/ZM-DSW "));
        let v = verify_note(&note, &note_key).expect("verifies");
        assert_eq!((v.size, v.root), (42, [7; 32]));
    }

    #[test]
    fn tampering_and_other_keys_are_refused() {
        let (key, note_key, origin) = setup();
        let note = Checkpoint {
            origin: &origin,
            size: 42,
            root: [7; 32],
        }
        .sign(&key);
        let tampered = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(
            verify_note(&tampered, &note_key),
            Err(CheckpointError::BadSignature(origin.clone()))
        );
        let other = NodeSigningKey::generate(KeyId::new("k2").expect("key id"));
        let forged = Checkpoint {
            origin: &origin,
            size: 42,
            root: [7; 32],
        }
        .sign(&other);
        assert_eq!(
            verify_note(&forged, &note_key),
            Err(CheckpointError::NoSignature(origin.clone()))
        );
        assert!(matches!(
            verify_note("garbage", &note_key),
            Err(CheckpointError::Malformed(_))
        ));
    }
}
