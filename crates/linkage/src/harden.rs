//! Hardening of a Bloom-filter encoding against the attacks that need no key: frequency and
//! pattern-mining attacks (Christen, Ranbaduge, Vatsalan and Schnell, "Precise and fast
//! cryptanalysis for Bloom filter based privacy-preserving record linkage", IEEE TKDE 2019;
//! Vidanage, Ranbaduge, Christen and Schnell, "Efficient pattern mining based cryptanalysis
//! for privacy-preserving record linkage", ICDE 2019) read which bits are set together in many
//! encodings, and how many.
//!
//! - **XOR-folding** (Schnell, Borgs and Encarnação, "XOR-folding for Bloom filter-based
//!   encryptions for privacy-preserving record linkage", German Record Linkage Center
//!   WP-GRLC-2016-03): the filter's two halves XORed into one of half the length. A set bit no
//!   longer says which of two positions was set, which blurs the patterns a feature leaves.
//! - **Balancing** (Schnell and Borgs, "Randomized response and balanced Bloom filters for
//!   privacy preserving record linkage", IEEE ICDMW 2016): the filter concatenated with its
//!   complement and the positions permuted under the key. Every encoding then has exactly half
//!   its bits set, so the number of bits set (which grows with the length of the names) says
//!   nothing; the keyed permutation hides which half a bit came from.

use crate::Encoding;

/// Bits in the Bloom filter a descriptor is encoded into, before hardening (which halves or
/// doubles it: [`Hardening::bits`]).
pub const BITS: usize = 1024;

/// The keyed hash a hardening draws from: the `counter`th output for `tag`:`value` under the
/// linkage key, schema and epoch (the encoder's own).
pub(crate) type Digest<'a> = &'a dyn Fn(&[u8], &str, u32) -> [u8; 32];

/// The words of an unhardened filter.
pub(crate) const WORDS: usize = BITS / 64;

/// What is done to a Bloom filter before it leaves [`crate::encode()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardening {
    /// None: the filter itself, [`BITS`] (1,024) bits.
    None,
    /// XOR-folded: the two halves of the filter XORed, `BITS / 2` (512) bits.
    XorFold,
    /// Balanced: the filter and its complement, permuted under the key, `2 · BITS` (2,048)
    /// bits of which exactly half are set.
    Balance,
}

impl Hardening {
    /// The length in bits of the encodings it gives.
    pub const fn bits(self) -> usize {
        match self {
            Self::None => BITS,
            Self::XorFold => BITS / 2,
            Self::Balance => BITS * 2,
        }
    }
}

/// A [`Hardening`] ready to apply: balancing's permutation is drawn once per key, schema and
/// epoch, not once per encoding.
pub(crate) enum Hardener {
    /// [`Hardening::None`].
    None,
    /// [`Hardening::XorFold`].
    XorFold,
    /// [`Hardening::Balance`] under its permutation.
    Balance(Permutation),
}

impl Hardener {
    /// `hardening` under the key, schema and epoch of `digest`.
    pub(crate) fn new(hardening: Hardening, digest: Digest<'_>) -> Self {
        match hardening {
            Hardening::None => Self::None,
            Hardening::XorFold => Self::XorFold,
            Hardening::Balance => Self::Balance(Permutation::derive(digest)),
        }
    }

    /// The encoding of `filter`.
    pub(crate) fn apply(&self, filter: &[u64; WORDS]) -> Encoding {
        match self {
            Self::None => Encoding::from(*filter),
            Self::XorFold => Encoding::from(xor_fold(filter)),
            Self::Balance(permutation) => Encoding::from(permutation.balance(filter)),
        }
    }
}

/// The filter's first half XORed with its second.
pub(crate) fn xor_fold(filter: &[u64; WORDS]) -> [u64; WORDS / 2] {
    std::array::from_fn(|i| filter[i] ^ filter[i + WORDS / 2])
}

/// Where balancing moves each of the `2·BITS` positions of a filter followed by its
/// complement: a permutation drawn under the linkage key, the schema id and the epoch, so that
/// nobody without the key knows which positions are the complement's, and each epoch has its
/// own.
pub(crate) struct Permutation(Box<[u16; PERMUTED]>);

/// Positions balancing permutes: the filter's and its complement's.
const PERMUTED: usize = 2 * BITS;

impl Permutation {
    /// The permutation of `digest`'s key, schema and epoch: a Fisher–Yates shuffle (Knuth,
    /// TAOCP vol. 2, §3.4.2, algorithm P) whose draws are 16-bit words of HMAC-SHA-256 outputs,
    /// by rejection, so that every index is equally likely.
    pub(crate) fn derive(digest: Digest<'_>) -> Self {
        const _: () = assert!(PERMUTED <= 1 << 16, "positions must fit a u16");
        let mut draws = (0u32..)
            .map(|counter| digest(b"balance-permutation", "", counter))
            .flat_map(|digest| {
                let words: [u16; 16] =
                    std::array::from_fn(|i| u16::from_be_bytes([digest[2 * i], digest[2 * i + 1]]));
                words
            })
            .map(u32::from);
        let mut positions: Box<[u16; PERMUTED]> = Box::new(std::array::from_fn(|p| p as u16));
        for i in (1..PERMUTED).rev() {
            let bound = i as u32 + 1;
            // Only draws below the largest multiple of `bound` that 16 bits reach are used:
            // the others would make `draw % bound` favour small indices.
            let accepted = (1u32 << 16) - (1u32 << 16) % bound;
            let j = draws
                .find(|draw| *draw < accepted)
                .map_or(0, |draw| draw % bound);
            positions.swap(i, j as usize);
        }
        Self(positions)
    }

    /// The filter followed by its complement, permuted: `2·BITS` bits, exactly `BITS` set.
    pub(crate) fn balance(&self, filter: &[u64; WORDS]) -> [u64; PERMUTED / 64] {
        let mut out = [0u64; PERMUTED / 64];
        for bit in 0..BITS {
            let set = filter[bit / 64] >> (bit % 64) & 1 == 1;
            // Position `bit` of the filter if set, else position `bit` of its complement.
            let source = if set { bit } else { BITS + bit };
            let target = usize::from(self.0[source]);
            out[target / 64] |= 1 << (target % 64);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{Hasher, LinkageKey, SCHEMA_V1_BAL};

    fn permutation(secret: u8, epoch: u32) -> Permutation {
        let hasher = Hasher::new(&SCHEMA_V1_BAL, &LinkageKey::new([secret; 32], epoch));
        Permutation::derive(&|tag, value, counter| hasher.digest(tag, value, counter))
    }

    #[test]
    fn the_permutation_is_a_permutation_and_depends_on_key_and_epoch() {
        let p = permutation(7, 1);
        let mut sorted = p.0.to_vec();
        assert_eq!(sorted.len(), 2048);
        sorted.sort_unstable();
        assert!(sorted.iter().enumerate().all(|(i, &v)| usize::from(v) == i));
        assert_eq!(p.0, permutation(7, 1).0, "deterministic");
        for other in [permutation(8, 1), permutation(7, 2)] {
            let fixed =
                p.0.iter()
                    .zip(other.0.iter())
                    .filter(|(a, b)| a == b)
                    .count();
            // Two independent permutations of 2,048 agree on about one position.
            assert!(fixed < 10, "{fixed} positions agree");
        }
    }

    #[test]
    fn balancing_sets_exactly_half_and_folding_halves() {
        let p = permutation(7, 1);
        for filter in [
            [0u64; WORDS],
            [u64::MAX; WORDS],
            std::array::from_fn(|i| 0x8000_0000_0000_0001_u64.rotate_left(i as u32)),
        ] {
            let balanced = p.balance(&filter);
            let ones: u32 = balanced.iter().map(|w| w.count_ones()).sum();
            assert_eq!(ones as usize, BITS);
        }
        let mut filter = [0u64; WORDS];
        filter[0] = 0b1010;
        filter[WORDS / 2] = 0b0110;
        let folded = xor_fold(&filter);
        assert_eq!(folded.len() * 64, Hardening::XorFold.bits());
        assert_eq!(folded[0], 0b1100);
    }
}
