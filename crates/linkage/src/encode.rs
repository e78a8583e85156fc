//! Keyed Bloom-filter encodings of descriptors (cryptographic long-term keys, CLKs, after
//! Schnell, Bachteler and Reiher; the anonlink/clkhash schema design is the reference).
//!
//! Every feature of a descriptor (a name's letter bigrams and whole tokens, the birth year,
//! month and day, the place's bigrams and tokens, the sex) is hashed with HMAC-SHA-256 under
//! the federation's linkage key, the schema id and the key's epoch, each feature to its own
//! `k` positions taken from independent HMAC outputs: not the double-hashing scheme
//! (`h1 + i·h2`) whose structure the published attacks on Bloom-filter encodings exploit. A
//! record without the key cannot be encoded, so a holder of encodings cannot test guesses
//! without it; two epochs give unrelated encodings.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::normalize::{name_tokens, normalize};

/// Bits in an encoding.
pub const BITS: usize = 1024;
const WORDS: usize = BITS / 64;

type HmacSha256 = Hmac<Sha256>;

/// The federation's secret linkage key for one epoch. Only nodes hold it; it never travels in
/// a tracing query.
#[derive(Clone)]
pub struct LinkageKey {
    secret: [u8; 32],
    epoch: u32,
}

impl LinkageKey {
    /// The key `secret` of `epoch`.
    pub fn new(secret: [u8; 32], epoch: u32) -> Self {
        Self { secret, epoch }
    }

    /// Its epoch: encodings are comparable only within one epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}

impl std::fmt::Debug for LinkageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkageKey(epoch {}, secret withheld)", self.epoch)
    }
}

/// A person's sex as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
}

/// What a tracing record or request says of one person, before encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Every name the person is known by: full names, transliterations, nicknames.
    pub names: Vec<String>,
    /// Sex, if recorded.
    pub sex: Option<Sex>,
    /// Year of birth, if known.
    pub birth_year: Option<u16>,
    /// Month of birth (1–12), if known.
    pub birth_month: Option<u8>,
    /// Day of birth (1–31), if known.
    pub birth_day: Option<u8>,
    /// Place (of separation, or of residence), if known.
    pub place: Option<String>,
}

/// How many positions each kind of feature sets: the schema. Its id travels with every
/// encoding, so that only encodings of one schema are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// Names this schema, e.g. `kinbridge-clk-v1`.
    pub id: &'static str,
    /// Per letter bigram of a name token.
    pub name_bigram_k: usize,
    /// Per whole name token.
    pub name_token_k: usize,
    /// For the birth year.
    pub year_k: usize,
    /// For the birth month.
    pub month_k: usize,
    /// For the birth day.
    pub day_k: usize,
    /// Per letter bigram of the place.
    pub place_bigram_k: usize,
    /// Per whole token of the place.
    pub place_token_k: usize,
    /// For the sex.
    pub sex_k: usize,
}

/// The schema kinbridge uses. Its weights were chosen by comparing eight settings on FEBRL 4
/// (`cargo bench -p kinbridge-linkage --bench linkage`; docs/performance.md): birth date and
/// place weigh more than in clkhash's defaults, which is what lifts recall@1 above them.
pub const SCHEMA_V1: Schema = Schema {
    id: "kinbridge-clk-v1",
    name_bigram_k: 15,
    name_token_k: 8,
    year_k: 25,
    month_k: 12,
    day_k: 12,
    place_bigram_k: 12,
    place_token_k: 8,
    sex_k: 10,
};

/// The schema nodes encode with and accept in tracing queries.
pub const SCHEMA: Schema = SCHEMA_V1;

/// A keyed Bloom-filter encoding of [`BITS`] bits.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoding([u64; WORDS]);

impl std::fmt::Debug for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoding({} of {BITS} bits set)", self.count_ones())
    }
}

impl Encoding {
    fn empty() -> Self {
        Self([0; WORDS])
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    /// Bits set.
    pub fn count_ones(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// The Sørensen–Dice coefficient of two encodings: `2|A∩B| / (|A| + |B|)`, in [0, 1].
    pub fn dice(&self, other: &Self) -> f64 {
        let common: u32 = self
            .0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| (a & b).count_ones())
            .sum();
        let total = self.count_ones() + other.count_ones();
        if total == 0 {
            0.0
        } else {
            f64::from(2 * common) / f64::from(total)
        }
    }

    /// The encoding as bytes (little-endian words), as it travels.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// An encoding from its bytes, if they are exactly [`BITS`] bits.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != BITS / 8 {
            return None;
        }
        let mut words = [0u64; WORDS];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        Some(Self(words))
    }
}

/// Sets features' positions: HMAC-SHA-256 keyed with the linkage key, over the schema id and
/// epoch, the feature's tag and value and a counter.
struct Hasher {
    keyed: HmacSha256,
}

impl Hasher {
    fn new(schema: &Schema, key: &LinkageKey) -> Self {
        // HMAC accepts a key of any length: this cannot fail.
        let mut keyed = <HmacSha256 as Mac>::new_from_slice(&key.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        keyed.update(schema.id.as_bytes());
        keyed.update(&[0]);
        keyed.update(&key.epoch.to_be_bytes());
        Self { keyed }
    }

    /// Sets `k` positions for the feature `tag`:`value`.
    fn add(&self, encoding: &mut Encoding, tag: &[u8], value: &str, k: usize) {
        let mut counter = 0u32;
        let mut set = 0;
        while set < k {
            let mut mac = self.keyed.clone();
            mac.update(tag);
            mac.update(&[0]);
            mac.update(value.as_bytes());
            mac.update(&[0]);
            mac.update(&counter.to_be_bytes());
            let digest = mac.finalize().into_bytes();
            for pair in digest.chunks_exact(2) {
                if set == k {
                    break;
                }
                let index = usize::from(u16::from_be_bytes([pair[0], pair[1]])) % BITS;
                encoding.set(index);
                set += 1;
            }
            counter += 1;
        }
    }

    /// The bigrams of `token` padded with `_` at both ends, and the token itself.
    fn add_token(
        &self,
        encoding: &mut Encoding,
        tags: (&[u8], &[u8]),
        token: &str,
        ks: (usize, usize),
    ) {
        let padded: Vec<char> = std::iter::once('_')
            .chain(token.chars())
            .chain(std::iter::once('_'))
            .collect();
        let mut bigram = String::new();
        for pair in padded.windows(2) {
            bigram.clear();
            bigram.extend(pair);
            self.add(encoding, tags.0, &bigram, ks.0);
        }
        self.add(encoding, tags.1, token, ks.1);
    }
}

/// Encodes `descriptor` under `schema` and `key`.
pub fn encode(descriptor: &Descriptor, schema: &Schema, key: &LinkageKey) -> Encoding {
    let hasher = Hasher::new(schema, key);
    let mut encoding = Encoding::empty();
    let mut tokens: Vec<String> = descriptor
        .names
        .iter()
        .flat_map(|name| name_tokens(name))
        .collect();
    tokens.sort();
    tokens.dedup();
    for token in &tokens {
        hasher.add_token(
            &mut encoding,
            (b"name-bigram", b"name-token"),
            token,
            (schema.name_bigram_k, schema.name_token_k),
        );
    }
    if let Some(year) = descriptor.birth_year {
        hasher.add(
            &mut encoding,
            b"birth-year",
            &year.to_string(),
            schema.year_k,
        );
    }
    if let Some(month) = descriptor.birth_month {
        hasher.add(
            &mut encoding,
            b"birth-month",
            &month.to_string(),
            schema.month_k,
        );
    }
    if let Some(day) = descriptor.birth_day {
        hasher.add(&mut encoding, b"birth-day", &day.to_string(), schema.day_k);
    }
    if let Some(place) = &descriptor.place {
        for token in normalize(place).split(' ').filter(|t| !t.is_empty()) {
            hasher.add_token(
                &mut encoding,
                (b"place-bigram", b"place-token"),
                token,
                (schema.place_bigram_k, schema.place_token_k),
            );
        }
    }
    if let Some(sex) = descriptor.sex {
        let value = match sex {
            Sex::Female => "f",
            Sex::Male => "m",
        };
        hasher.add(&mut encoding, b"sex", value, schema.sex_k);
    }
    encoding
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(epoch: u32) -> LinkageKey {
        LinkageKey::new([7; 32], epoch)
    }

    fn person(names: &[&str], year: u16) -> Descriptor {
        Descriptor {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            sex: Some(Sex::Female),
            birth_year: Some(year),
            birth_month: Some(3),
            birth_day: Some(14),
            place: Some("Kakuma".into()),
        }
    }

    #[test]
    fn the_same_person_written_differently_scores_high_and_others_low() {
        let k = key(1);
        let a = encode(&person(&["Fatima Yusuf al-Amin"], 2012), &SCHEMA_V1, &k);
        let b = encode(&person(&["FATIMA AMIN YUSUF"], 2012), &SCHEMA_V1, &k);
        let typo = encode(&person(&["Fatma Yusuf Amin"], 2012), &SCHEMA_V1, &k);
        let other = encode(
            &Descriptor {
                names: vec!["Grace Wanjiru Mwangi".into()],
                sex: Some(Sex::Female),
                birth_year: Some(2009),
                birth_month: Some(11),
                birth_day: Some(2),
                place: Some("Dadaab".into()),
            },
            &SCHEMA_V1,
            &k,
        );
        assert_eq!(a.dice(&b), 1.0, "order and particles do not matter");
        assert!(a.dice(&typo) > 0.8, "{}", a.dice(&typo));
        assert!(a.dice(&other) < 0.5, "{}", a.dice(&other));
    }

    #[test]
    fn encodings_depend_on_the_key_and_its_epoch() {
        let p = person(&["Amani Juma"], 2014);
        let one = encode(&p, &SCHEMA_V1, &key(1));
        assert_eq!(one, encode(&p, &SCHEMA_V1, &key(1)), "deterministic");
        let next_epoch = encode(&p, &SCHEMA_V1, &key(2));
        let other_key = encode(&p, &SCHEMA_V1, &LinkageKey::new([8; 32], 1));
        assert!(one.dice(&next_epoch) < 0.5);
        assert!(one.dice(&other_key) < 0.5);
        assert!(!format!("{:?}", key(1)).contains('7'));
    }

    #[test]
    fn bytes_round_trip_and_bad_lengths_are_refused() {
        let e = encode(&person(&["Amani Juma"], 2014), &SCHEMA_V1, &key(1));
        let bytes = e.to_bytes();
        assert_eq!(bytes.len(), BITS / 8);
        assert_eq!(Encoding::from_bytes(&bytes), Some(e));
        assert_eq!(Encoding::from_bytes(&bytes[1..]), None);
        assert_eq!(Encoding::empty().dice(&Encoding::empty()), 0.0);
    }
}
