//! Family tracing across borders without sending names: descriptors of children and relatives
//! are normalised ([`normalize`]), given phonetic keys where they are in Latin script
//! ([`phonetic`]), and encoded locally into keyed Bloom-filter encodings
//! ([`mod@encode`]); only encodings are compared across borders, by Sørensen–Dice similarity,
//! and scores are reported in calibrated bands ([`band`]). The filters can be hardened against
//! attacks that need no key ([`harden`]), which sets their length ([`encoding`]). No I/O.

pub mod band;
pub mod encode;
pub mod encoding;
pub mod harden;
pub mod normalize;
pub mod phonetic;

pub use band::{BANDS, Band, Bands};
pub use encode::{
    BITS, Descriptor, Encoder, LinkageKey, SCHEMA, SCHEMA_V1, SCHEMA_V1_BAL, SCHEMA_V1_XOR,
    SCHEMA_V2, Schema, Sex, encode,
};
pub use encoding::Encoding;
pub use harden::Hardening;
