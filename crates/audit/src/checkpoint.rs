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
    /// No signature line by any key given: names the keys given and the signers the note
    /// does carry, so an auditor sees which key to ask for.
    #[error(
        "the checkpoint carries no signature by key {}; {}",
        or_list(given),
        signed_by(signers)
    )]
    NoSignature {
        /// Each key given, as `name+keyhash (fingerprint <hex SHA-256 of the public key>)`.
        given: Vec<String>,
        /// Each signature line of the note, as `name+keyhash`.
        signers: Vec<String>,
    },
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

    /// The key as an auditor can recognise it: `name+keyhash` as in a signature line, and the
    /// fingerprint `kinbridge keys list` shows (hex SHA-256 of the public key).
    pub fn describe(&self) -> String {
        format!(
            "{}+{} (fingerprint {})",
            self.name,
            hex::encode(self.key_hash()),
            hex::encode(Sha256::digest(self.key.as_bytes()))
        )
    }
}

fn or_list(given: &[String]) -> String {
    if given.is_empty() {
        "(none was given)".to_owned()
    } else {
        given.join(" or ")
    }
}

/// Most signers an error names; a note with more lists the first ones and the count of others.
const MAX_SIGNERS_NAMED: usize = 8;

fn signed_by(signers: &[String]) -> String {
    if signers.is_empty() {
        return "it carries no signature at all".to_owned();
    }
    let mut named = signers[..signers.len().min(MAX_SIGNERS_NAMED)].join(", ");
    if signers.len() > MAX_SIGNERS_NAMED {
        named.push_str(&format!(" and {} more", signers.len() - MAX_SIGNERS_NAMED));
    }
    format!(
        "it is signed by {named}: verify with that key (after a key rotation, give every key the log was signed with), or this is not the log of the key's node"
    )
}

/// A string from a note (or an export) quoted in an error: at most `max` characters, control characters
/// replaced by `?` (an error is printed and logged; a note must not forge lines there).
pub(crate) fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The signers of `note`'s well-formed signature lines, as `name+keyhash`.
fn signers_of(note: &str) -> Vec<String> {
    let Some(split) = note.find("\n\n") else {
        return Vec::new();
    };
    note[split + 2..]
        .lines()
        .filter_map(|line| line.strip_prefix(SIGNATURE_PREFIX)?.split_once(' '))
        .map(|(name, blob)| {
            let name = printable(name, 80);
            match STANDARD.decode(blob) {
                Ok(b) if b.len() >= 4 => format!("{name}+{}", hex::encode(&b[..4])),
                _ => name,
            }
        })
        .collect()
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

/// Verifies `note` with the first of `keys` that signed it (a log whose key was rotated has
/// older checkpoints signed by an older key). When none did, the error names every key given
/// and the note's signers; a signature by a given key that does not verify is reported as such.
pub fn verify_note_any(
    note: &str,
    keys: &[NoteKey],
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let mut other = None;
    for key in keys {
        match verify_note(note, key) {
            Ok(cp) => return Ok(cp),
            Err(CheckpointError::NoSignature { .. }) => {}
            Err(e) => {
                other.get_or_insert(e);
            }
        }
    }
    Err(other.unwrap_or_else(|| CheckpointError::NoSignature {
        given: keys.iter().map(NoteKey::describe).collect(),
        signers: signers_of(note),
    }))
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
        return Err(CheckpointError::NoSignature {
            given: vec![key.describe()],
            signers: signers_of(note),
        });
    }
    let mut lines = body.lines();
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| malformed("no origin line"))?;
    if origin != key.name {
        return Err(CheckpointError::WrongOrigin {
            got: printable(origin, 80),
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

    /// A note signed by `key` under `name` whose body is `body`.
    fn signed(body: &str, name: &str, key: &NodeSigningKey, note_key: &NoteKey) -> String {
        let mut blob = note_key.key_hash().to_vec();
        blob.extend_from_slice(&key.sign(body.as_bytes()).to_bytes());
        format!(
            "{body}\n{SIGNATURE_PREFIX}{name} {}\n",
            STANDARD.encode(blob)
        )
    }

    /// Found by fuzzing (fuzz/regressions/checkpoint): the wrong-origin error quoted the
    /// note's origin line with its control characters, which could forge lines in a log.
    #[test]
    fn errors_quote_no_control_characters_from_the_note() {
        let (key, note_key, origin) = setup();
        let body = format!("kinbri\u{1}\0dM-DSW\r\n1\n{}\n", STANDARD.encode([0u8; 32]));
        let wrong_origin = verify_note(&signed(&body, &origin, &key, &note_key), &note_key)
            .expect_err("wrong origin")
            .to_string();
        assert!(wrong_origin.contains("kinbri??dM-DSW'"), "{wrong_origin:?}");
        let other_signer = verify_note(&signed(&body, "a\rb", &key, &note_key), &note_key)
            .expect_err("no signature by the key")
            .to_string();
        for err in [wrong_origin, other_signer] {
            assert!(!err.chars().any(char::is_control), "{err:?}");
        }
    }

    #[test]
    fn a_note_of_many_signers_is_refused_naming_a_few() {
        let (key, note_key, _) = setup();
        let body = "other.log\n1\nAAAA\n";
        let mut note = signed(body, "other.log", &key, &note_key);
        for i in 0..20 {
            note.push_str(&format!("{SIGNATURE_PREFIX}signer-{i} AAAAAAAA\n"));
        }
        let err = verify_note(&note, &note_key).expect_err("no signature by the key");
        let text = err.to_string();
        assert!(text.contains("and 13 more"), "{text}");
        assert!(!text.contains("signer-19"), "{text}");
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
            Err(CheckpointError::NoSignature {
                given: vec![note_key.describe()],
                signers: vec![format!(
                    "{origin}+{}",
                    hex::encode(key_hash(&origin, &other.verifying_key()))
                )],
            })
        );
        assert!(matches!(
            verify_note("garbage", &note_key),
            Err(CheckpointError::Malformed(_))
        ));
    }

    #[test]
    fn a_wrong_key_names_the_key_given_and_the_signer() {
        let (key, note_key, origin) = setup();
        let other = NodeSigningKey::generate(KeyId::new("k2").expect("key id"));
        let other_key = NoteKey {
            name: origin.clone(),
            key: other.verifying_key(),
        };
        let note = Checkpoint {
            origin: &origin,
            size: 3,
            root: [1; 32],
        }
        .sign(&key);
        let err =
            verify_note_any(&note, std::slice::from_ref(&other_key)).expect_err("another key");
        let given_hash = hex::encode(other_key.key_hash());
        let signer_hash = hex::encode(note_key.key_hash());
        let fingerprint = hex::encode(Sha256::digest(other.verifying_key().as_bytes()));
        assert_eq!(
            err.to_string(),
            format!(
                "the checkpoint carries no signature by key kinbridge.audit/ZM-DSW+{given_hash} (fingerprint {fingerprint}); it is signed by kinbridge.audit/ZM-DSW+{signer_hash}: verify with that key (after a key rotation, give every key the log was signed with), or this is not the log of the key's node"
            )
        );
        assert_ne!(given_hash, signer_hash);
        // With two wrong keys, both are named; with the right one among them, it verifies.
        let third = NodeSigningKey::generate(KeyId::new("k3").expect("key id"));
        let third_key = NoteKey {
            name: origin.clone(),
            key: third.verifying_key(),
        };
        let err = verify_note_any(&note, &[other_key.clone(), third_key.clone()])
            .expect_err("two other keys");
        assert!(
            matches!(&err, CheckpointError::NoSignature { given, .. } if *given == vec![other_key.describe(), third_key.describe()]),
            "{err}"
        );
        assert!(
            err.to_string().contains(" or kinbridge.audit/ZM-DSW+"),
            "{err}"
        );
        verify_note_any(&note, &[other_key, note_key]).expect("the right key among others");
        assert_eq!(
            verify_note_any(&note, &[])
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(format!(
                "the checkpoint carries no signature by key (none was given); it is signed by kinbridge.audit/ZM-DSW+{signer_hash}: verify with that key (after a key rotation, give every key the log was signed with), or this is not the log of the key's node"
            ))
        );
    }
}
