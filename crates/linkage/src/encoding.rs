//! Encodings as they are compared and travel: 512, 1,024 or 2,048 bits, one length per
//! hardening ([`crate::Hardening`]). Only encodings of one length are comparable; comparing two
//! of different lengths (different schemas) scores 0, and bytes of any other length are not an
//! encoding.

/// The bits of an encoding, by length: the length is part of the type, so that comparing
/// words of two lengths cannot happen by mistake.
#[derive(Clone, PartialEq, Eq)]
enum Bits {
    /// 512 bits: XOR-folded.
    B512(Box<[u64; 8]>),
    /// 1,024 bits: not hardened.
    B1024(Box<[u64; 16]>),
    /// 2,048 bits: balanced.
    B2048(Box<[u64; 32]>),
}

/// A keyed Bloom-filter encoding of 512, 1,024 or 2,048 bits, depending on its schema's
/// hardening.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoding(Bits);

impl std::fmt::Debug for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Encoding({} of {} bits set)",
            self.count_ones(),
            self.bits()
        )
    }
}

impl From<[u64; 8]> for Encoding {
    fn from(words: [u64; 8]) -> Self {
        Self(Bits::B512(Box::new(words)))
    }
}

impl From<[u64; 16]> for Encoding {
    fn from(words: [u64; 16]) -> Self {
        Self(Bits::B1024(Box::new(words)))
    }
}

impl From<[u64; 32]> for Encoding {
    fn from(words: [u64; 32]) -> Self {
        Self(Bits::B2048(Box::new(words)))
    }
}

impl Encoding {
    fn words(&self) -> &[u64] {
        match &self.0 {
            Bits::B512(w) => w.as_slice(),
            Bits::B1024(w) => w.as_slice(),
            Bits::B2048(w) => w.as_slice(),
        }
    }

    /// Its length in bits: 512, 1,024 or 2,048.
    pub fn bits(&self) -> usize {
        self.words().len() * 64
    }

    /// Bits set.
    pub fn count_ones(&self) -> u32 {
        self.words().iter().map(|w| w.count_ones()).sum()
    }

    /// The Sørensen–Dice coefficient of two encodings: `2|A∩B| / (|A| + |B|)`, in [0, 1]; 0 for
    /// encodings of different lengths, which belong to different schemas and are unrelated.
    pub fn dice(&self, other: &Self) -> f64 {
        match (&self.0, &other.0) {
            (Bits::B512(a), Bits::B512(b)) => dice(a, b),
            (Bits::B1024(a), Bits::B1024(b)) => dice(a, b),
            (Bits::B2048(a), Bits::B2048(b)) => dice(a, b),
            _ => 0.0,
        }
    }

    /// The encoding as bytes (little-endian words), as it travels.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words().iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// An encoding from its bytes, if they are 512, 1,024 or 2,048 bits; `None` for any other
    /// length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match bytes.len() {
            64 => words(bytes).map(Box::new).map(|w| Self(Bits::B512(w))),
            128 => words(bytes).map(Box::new).map(|w| Self(Bits::B1024(w))),
            256 => words(bytes).map(Box::new).map(|w| Self(Bits::B2048(w))),
            _ => None,
        }
    }
}

/// Dice over two equal-length word arrays: one function per length, so each loop is unrolled.
fn dice<const W: usize>(a: &[u64; W], b: &[u64; W]) -> f64 {
    let common: u32 = a.iter().zip(b).map(|(x, y)| (x & y).count_ones()).sum();
    let total: u32 = a.iter().chain(b).map(|w| w.count_ones()).sum();
    if total == 0 {
        0.0
    } else {
        f64::from(2 * common) / f64::from(total)
    }
}

/// `W` little-endian words from exactly `8·W` bytes.
fn words<const W: usize>(bytes: &[u8]) -> Option<[u64; W]> {
    if bytes.len() != W * 8 {
        return None;
    }
    let mut words = [0u64; W];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern<const W: usize>() -> [u64; W] {
        std::array::from_fn(|i| 0x0123_4567_89ab_cdef_u64.rotate_left(i as u32 * 7))
    }

    #[test]
    fn bytes_round_trip_at_every_length_and_other_lengths_are_refused() {
        for encoding in [
            Encoding::from(pattern::<8>()),
            Encoding::from(pattern::<16>()),
            Encoding::from(pattern::<32>()),
        ] {
            let bytes = encoding.to_bytes();
            assert_eq!(bytes.len() * 8, encoding.bits());
            assert_eq!(Encoding::from_bytes(&bytes), Some(encoding));
            assert_eq!(Encoding::from_bytes(&bytes[1..]), None);
        }
        for len in [0, 1, 63, 65, 127, 129, 192, 255, 257, 512] {
            assert_eq!(Encoding::from_bytes(&vec![0xff; len]), None, "{len} bytes");
        }
    }

    #[test]
    fn encodings_of_different_lengths_score_zero() {
        let all_set = [
            Encoding::from([u64::MAX; 8]),
            Encoding::from([u64::MAX; 16]),
            Encoding::from([u64::MAX; 32]),
        ];
        for (i, a) in all_set.iter().enumerate() {
            for (j, b) in all_set.iter().enumerate() {
                let expected = if i == j { 1.0 } else { 0.0 };
                assert_eq!(
                    a.dice(b),
                    expected,
                    "{} against {} bits",
                    a.bits(),
                    b.bits()
                );
            }
        }
        let empty = Encoding::from([0u64; 16]);
        assert_eq!(empty.dice(&empty), 0.0);
    }
}
