//! Family tracing across borders without sending names: descriptors of children and relatives
//! are normalised ([`normalize`]) and encoded locally into keyed Bloom-filter encodings
//! ([`encode`]); only encodings are compared across borders, by Sørensen–Dice similarity, and
//! scores are reported in calibrated bands ([`band`]). No I/O.

pub mod band;
pub mod encode;
pub mod normalize;

pub use band::{BANDS, Band, Bands};
pub use encode::{BITS, Descriptor, Encoding, LinkageKey, SCHEMA, SCHEMA_V1, Schema, Sex, encode};
