//! Ed25519 signing keys: a node's own key, and the keyring of a peer's public keys with their
//! validity windows.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::ids::KeyId;
use crate::time::UnixMillis;

/// Why a key could not be loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM text is not a PKCS#8 Ed25519 private key.
    #[error("not a PKCS#8 PEM Ed25519 private key: {0}")]
    BadPrivateKey(String),
    /// The PEM text is not an SPKI Ed25519 public key.
    #[error("not an SPKI PEM Ed25519 public key: {0}")]
    BadPublicKey(String),
    /// The public key is of small order: any signature could verify under it.
    #[error("public key {0} is a weak (small-order) Ed25519 key and is refused")]
    WeakKey(KeyId),
    /// The key was revoked before the instant it was used at.
    #[error("signing key '{key}' was revoked at {revoked_at}; it was used at {at}")]
    Revoked {
        /// The key.
        key: KeyId,
        /// The instant it was used at.
        at: UnixMillis,
        /// When it was revoked.
        revoked_at: UnixMillis,
    },
    /// A key id is already taken by another key of the same node.
    #[error("key id '{0}' already names another key of this node")]
    Conflict(KeyId),
    /// No key with this id is registered for the signer.
    #[error("no signing key '{0}' is registered for this node")]
    UnknownKey(KeyId),
    /// The key exists but was not valid at the time of signing.
    #[error(
        "signing key '{key}' is not valid at {at}: valid from {not_before:?} until {not_after:?}"
    )]
    OutsideValidity {
        /// The key.
        key: KeyId,
        /// The instant it was used at.
        at: UnixMillis,
        /// Start of its validity window, if any.
        not_before: Option<UnixMillis>,
        /// End of its validity window, if any.
        not_after: Option<UnixMillis>,
    },
}

/// This node's own Ed25519 signing key and its id.
pub struct NodeSigningKey {
    id: KeyId,
    key: SigningKey,
}

impl NodeSigningKey {
    /// Wraps a key.
    pub fn new(id: KeyId, key: SigningKey) -> Self {
        Self { id, key }
    }

    /// A fresh random key.
    pub fn generate(id: KeyId) -> Self {
        Self::new(id, SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Loads a PKCS#8 PEM private key, version 1 (RFC 5208: the private key alone, as kinbridge
    /// writes it) or version 2 (RFC 5958: with the public key inside, as kinbridge wrote it
    /// before). Text before the PEM block (a warning comment) is allowed.
    pub fn from_pkcs8_pem(id: KeyId, pem: &str) -> Result<Self, KeyError> {
        let start = pem
            .find("-----BEGIN")
            .ok_or_else(|| KeyError::BadPrivateKey("no PEM block".into()))?;
        let key = SigningKey::from_pkcs8_pem(&pem[start..])
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        Ok(Self::new(id, key))
    }

    /// The private key as PKCS#8 PEM, version 1 (RFC 5208 / RFC 8410: `PrivateKeyInfo` with
    /// the private key only), the form OpenSSL, Python's `cryptography` and most tools read.
    /// The public key goes in its own SPKI file ([`Self::public_key_pem`]).
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let bytes = KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))
    }

    /// The public key as SPKI PEM.
    pub fn public_key_pem(&self) -> Result<String, KeyError> {
        self.key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .map_err(|e| KeyError::BadPublicKey(e.to_string()))
    }

    /// The key's id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `message` (already domain-separated by the caller).
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }
}

impl std::fmt::Debug for NodeSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One public key of a peer, with the window in which signatures made by it are accepted.
#[derive(Debug, Clone)]
pub struct PeerKey {
    /// The key's id, as carried in headers and receipts.
    pub id: KeyId,
    /// The key itself; never a weak key.
    key: VerifyingKey,
    /// Signatures made before this instant are refused.
    pub not_before: Option<UnixMillis>,
    /// Signatures made at or after this instant are refused (expiry).
    pub not_after: Option<UnixMillis>,
    /// Signatures made at or after this instant are refused (revocation).
    pub revoked_at: Option<UnixMillis>,
}

impl PeerKey {
    /// A peer key; refuses small-order keys.
    pub fn new(
        id: KeyId,
        key: VerifyingKey,
        not_before: Option<UnixMillis>,
        not_after: Option<UnixMillis>,
    ) -> Result<Self, KeyError> {
        if key.is_weak() {
            return Err(KeyError::WeakKey(id));
        }
        Ok(Self {
            id,
            key,
            not_before,
            not_after,
            revoked_at: None,
        })
    }

    /// A peer key from its 32 raw bytes; refuses bytes that are not a point, and weak keys.
    pub fn from_bytes(
        id: KeyId,
        bytes: &[u8],
        not_before: Option<UnixMillis>,
        not_after: Option<UnixMillis>,
    ) -> Result<Self, KeyError> {
        let raw = <[u8; 32]>::try_from(bytes)
            .map_err(|_| KeyError::BadPublicKey(format!("{} bytes, not 32", bytes.len())))?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| KeyError::BadPublicKey("not an Ed25519 point".into()))?;
        Self::new(id, key, not_before, not_after)
    }

    /// Hex SHA-256 of the 32-byte public key: what two operators compare over the phone.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.key.as_bytes()))
    }

    /// Loads an SPKI PEM public key.
    pub fn from_public_key_pem(id: KeyId, pem: &str) -> Result<Self, KeyError> {
        let start = pem
            .find("-----BEGIN")
            .ok_or_else(|| KeyError::BadPublicKey("no PEM block".into()))?;
        let key = VerifyingKey::from_public_key_pem(&pem[start..])
            .map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        Self::new(id, key, None, None)
    }

    /// The verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether a signature made at `at` falls inside the key's window (revocation aside).
    pub fn valid_at(&self, at: UnixMillis) -> bool {
        self.not_before.is_none_or(|nb| at >= nb) && self.not_after.is_none_or(|na| at < na)
    }

    /// Whether the key was revoked at or before `at`.
    pub fn revoked_by(&self, at: UnixMillis) -> bool {
        self.revoked_at.is_some_and(|r| at >= r)
    }
}

/// All public keys of one node.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<PeerKey>,
}

impl Keyring {
    /// A keyring holding `keys`.
    pub fn new(keys: Vec<PeerKey>) -> Self {
        Self { keys }
    }

    /// The key `id`, if it was valid and not revoked at `at`.
    pub fn find(&self, id: &KeyId, at: UnixMillis) -> Result<&VerifyingKey, KeyError> {
        let key = self
            .keys
            .iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| KeyError::UnknownKey(id.clone()))?;
        if let Some(revoked_at) = key.revoked_at.filter(|r| at >= *r) {
            return Err(KeyError::Revoked {
                key: id.clone(),
                at,
                revoked_at,
            });
        }
        if key.valid_at(at) {
            Ok(&key.key)
        } else {
            Err(KeyError::OutsideValidity {
                key: id.clone(),
                at,
                not_before: key.not_before,
                not_after: key.not_after,
            })
        }
    }

    /// The keys.
    pub fn keys(&self) -> &[PeerKey] {
        &self.keys
    }

    /// The key `id`, whatever its window.
    pub fn get(&self, id: &KeyId) -> Option<&PeerKey> {
        self.keys.iter().find(|k| &k.id == id)
    }

    /// Adds `key`. `Ok(false)` if the very same key is already there (its window is kept);
    /// a different key under a taken id is refused.
    pub fn insert(&mut self, key: PeerKey) -> Result<bool, KeyError> {
        match self.get(&key.id) {
            Some(existing) if existing.key == key.key => Ok(false),
            Some(_) => Err(KeyError::Conflict(key.id)),
            None => {
                self.keys.push(key);
                Ok(true)
            }
        }
    }

    /// Revokes key `id` from `at` on. An earlier revocation stands: revocation only widens.
    pub fn revoke(&mut self, id: &KeyId, at: UnixMillis) -> Result<UnixMillis, KeyError> {
        let key = self
            .keys
            .iter_mut()
            .find(|k| &k.id == id)
            .ok_or_else(|| KeyError::UnknownKey(id.clone()))?;
        let effective = key.revoked_at.map_or(at, |r| r.min(at));
        key.revoked_at = Some(effective);
        Ok(effective)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kid(s: &str) -> KeyId {
        KeyId::new(s).expect("valid key id")
    }

    #[test]
    fn pem_round_trip() {
        let key = NodeSigningKey::generate(kid("k1"));
        let pem = format!("# a comment\n{}", key.to_pkcs8_pem().expect("encode"));
        let back = NodeSigningKey::from_pkcs8_pem(kid("k1"), &pem).expect("decode");
        assert_eq!(back.verifying_key(), key.verifying_key());
        let public = PeerKey::from_public_key_pem(kid("k1"), &key.public_key_pem().expect("pub"))
            .expect("decode pub");
        assert_eq!(public.verifying_key(), &key.verifying_key());
    }

    /// The DER inside the first PEM block of `pem`.
    fn der_of(pem: &str) -> Vec<u8> {
        let start = pem.find("-----BEGIN").expect("a PEM block");
        let (_, doc) = ed25519_dalek::pkcs8::SecretDocument::from_pem(&pem[start..]).expect("PEM");
        doc.as_bytes().to_vec()
    }

    #[test]
    fn private_keys_are_written_as_pkcs8_v1_and_read_back() {
        let key = NodeSigningKey::generate(kid("k1"));
        let pem = key.to_pkcs8_pem().expect("encode");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let der = der_of(&pem);
        // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }:
        // RFC 8410's example, 48 bytes, version 0 and nothing after the private key.
        assert_eq!(der.len(), 48);
        assert_eq!(
            &der[..16],
            &[
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20
            ]
        );
        assert_eq!(&der[16..], key.key.to_bytes().as_slice());
        let back = NodeSigningKey::from_pkcs8_pem(kid("k1"), &pem).expect("decode");
        assert_eq!(back.verifying_key(), key.verifying_key());
    }

    #[test]
    fn pkcs8_v2_files_still_load() {
        // The form written before: OneAsymmetricKey version 1 (v2) with the public key inside.
        let key = NodeSigningKey::generate(kid("k1"));
        let v2 = key
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encode v2")
            .to_string();
        let der = der_of(&v2);
        assert_eq!(&der[2..5], &[0x02, 0x01, 0x01], "version 1 (v2)");
        let back = NodeSigningKey::from_pkcs8_pem(kid("k1"), &format!("# old\n{v2}"))
            .expect("a v2 file loads");
        assert_eq!(back.verifying_key(), key.verifying_key());
    }

    #[test]
    fn validity_window() {
        let key = NodeSigningKey::generate(kid("k1"));
        let ring = Keyring::new(vec![
            PeerKey::new(
                kid("k1"),
                key.verifying_key(),
                Some(UnixMillis(100)),
                Some(UnixMillis(200)),
            )
            .expect("key"),
        ]);
        assert!(ring.find(&kid("k1"), UnixMillis(150)).is_ok());
        assert!(matches!(
            ring.find(&kid("k1"), UnixMillis(99)),
            Err(KeyError::OutsideValidity { .. })
        ));
        assert!(matches!(
            ring.find(&kid("k1"), UnixMillis(200)),
            Err(KeyError::OutsideValidity { .. })
        ));
        assert!(matches!(
            ring.find(&kid("k2"), UnixMillis(150)),
            Err(KeyError::UnknownKey(_))
        ));
    }

    #[test]
    fn revocation_refuses_from_its_instant_on_and_only_widens() {
        let key = NodeSigningKey::generate(kid("k1"));
        let other = NodeSigningKey::generate(kid("k1"));
        let mut ring = Keyring::new(vec![
            PeerKey::new(kid("k1"), key.verifying_key(), None, None).expect("key"),
        ]);
        assert_eq!(
            ring.revoke(&kid("k1"), UnixMillis(500)),
            Ok(UnixMillis(500))
        );
        assert!(ring.find(&kid("k1"), UnixMillis(499)).is_ok());
        assert!(matches!(
            ring.find(&kid("k1"), UnixMillis(500)),
            Err(KeyError::Revoked { .. })
        ));
        // A later revocation does not move it back.
        assert_eq!(
            ring.revoke(&kid("k1"), UnixMillis(900)),
            Ok(UnixMillis(500))
        );
        assert_eq!(
            ring.revoke(&kid("k1"), UnixMillis(100)),
            Ok(UnixMillis(100))
        );
        assert!(ring.find(&kid("k1"), UnixMillis(200)).is_err());
        // The same key again is a no-op; another key under the id is refused.
        let same = PeerKey::new(kid("k1"), key.verifying_key(), None, None).expect("key");
        assert_eq!(ring.insert(same), Ok(false));
        let clash = PeerKey::new(kid("k1"), other.verifying_key(), None, None).expect("key");
        assert!(matches!(ring.insert(clash), Err(KeyError::Conflict(_))));
        assert!(matches!(
            ring.revoke(&kid("nope"), UnixMillis(1)),
            Err(KeyError::UnknownKey(_))
        ));
    }

    #[test]
    fn raw_keys_are_checked() {
        let key = NodeSigningKey::generate(kid("k1"));
        let peer = PeerKey::from_bytes(kid("k1"), key.verifying_key().as_bytes(), None, None)
            .expect("key");
        assert_eq!(peer.fingerprint().len(), 64);
        assert!(PeerKey::from_bytes(kid("k1"), &[0u8; 31], None, None).is_err());
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(matches!(
            PeerKey::from_bytes(kid("w"), &weak, None, None),
            Err(KeyError::WeakKey(_))
        ));
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (0x01 followed by zeros) is of small order.
        let mut bytes = [0u8; 32];
        bytes[0] = 1;
        let weak = VerifyingKey::from_bytes(&bytes).expect("decodes");
        assert!(matches!(
            PeerKey::new(kid("w"), weak, None, None),
            Err(KeyError::WeakKey(_))
        ));
    }
}
