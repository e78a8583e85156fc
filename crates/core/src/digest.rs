//! Digests: the salted payload commitment and the envelope digest that receipts name.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::limits::SALT_BYTES;

/// Domain-separation prefix of the payload commitment.
const PAYLOAD_COMMITMENT_DOMAIN: &[u8] = b"kinbridge/v1/payload-commitment\0";
/// Domain-separation prefix of the envelope digest.
const ENVELOPE_DIGEST_DOMAIN: &[u8] = b"kinbridge/v1/envelope-digest\0";
/// Domain-separation prefix of the receipt digest.
const RECEIPT_DIGEST_DOMAIN: &[u8] = b"kinbridge/v1/receipt-digest\0";

/// The random salt of a payload commitment. It is kept with the payload and purged with it,
/// so a digest left in a log cannot confirm a guessed name or birth date.
#[derive(Clone, PartialEq, Eq)]
pub struct PayloadSalt(pub [u8; SALT_BYTES]);

impl PayloadSalt {
    /// A fresh salt from the operating system's random generator.
    pub fn random() -> Self {
        let mut salt = [0u8; SALT_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self(salt)
    }

    /// Takes a salt from bytes received on the wire; `None` if the length is wrong.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; SALT_BYTES]>::try_from(bytes).ok().map(Self)
    }
}

impl std::fmt::Debug for PayloadSalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayloadSalt(..)")
    }
}

/// SHA-256 commitment to a payload: `SHA-256(domain || salt || payload)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadCommitment(pub [u8; 32]);

impl PayloadCommitment {
    /// Commits to `payload` under `salt`.
    pub fn compute(salt: &PayloadSalt, payload: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(PAYLOAD_COMMITMENT_DOMAIN);
        h.update(salt.0);
        h.update(payload);
        Self(h.finalize().into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// SHA-256 digest naming one exact envelope:
/// `SHA-256(domain || u64be(len header) || header || u64be(len signature) || signature)`.
/// The header commits to the payload, so this digest covers all of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvelopeDigest(pub [u8; 32]);

impl EnvelopeDigest {
    /// Digest of a header and its signature.
    pub fn compute(header: &[u8], signature: &[u8]) -> Self {
        Self(length_prefixed_digest(
            ENVELOPE_DIGEST_DOMAIN,
            header,
            signature,
        ))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// SHA-256 digest naming one exact signed receipt:
/// `SHA-256(domain || u64be(len body) || body || u64be(len signature) || signature)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceiptDigest(pub [u8; 32]);

impl ReceiptDigest {
    /// Digest of a receipt body and its signature.
    pub fn compute(body: &[u8], signature: &[u8]) -> Self {
        Self(length_prefixed_digest(
            RECEIPT_DIGEST_DOMAIN,
            body,
            signature,
        ))
    }
}

fn length_prefixed_digest(domain: &[u8], first: &[u8], second: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    h.update((first.len() as u64).to_be_bytes());
    h.update(first);
    h.update((second.len() as u64).to_be_bytes());
    h.update(second);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitment_depends_on_salt_and_payload() {
        let a = PayloadSalt([1; 32]);
        let b = PayloadSalt([2; 32]);
        assert_ne!(
            PayloadCommitment::compute(&a, b"x"),
            PayloadCommitment::compute(&b, b"x")
        );
        assert_ne!(
            PayloadCommitment::compute(&a, b"x"),
            PayloadCommitment::compute(&a, b"y")
        );
        assert_eq!(
            PayloadCommitment::compute(&a, b"x"),
            PayloadCommitment::compute(&a, b"x")
        );
    }

    #[test]
    fn envelope_digest_is_length_prefixed() {
        // Moving a byte from the header to the signature changes the digest.
        assert_ne!(
            EnvelopeDigest::compute(b"ab", b"c"),
            EnvelopeDigest::compute(b"a", b"bc")
        );
    }
}
