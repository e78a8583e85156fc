//! Validated identifiers: node ids, message ids and signing-key ids. Each newtype checks its
//! form at construction and refuses anything else, so code holding one never re-checks.

use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A node id must be `CC-AUTHORITY`: an ISO 3166-1 alpha-2 code, a hyphen, then 1 to 16
    /// upper-case letters or digits (e.g. `ZM-DSW`).
    #[error(
        "'{0}' is not a node id: expected an ISO 3166-1 alpha-2 country code, '-', and 1-16 upper-case letters or digits, e.g. ZM-DSW"
    )]
    NodeId(String),
    /// A message id must be a UUID in canonical lowercase hyphenated form.
    #[error("'{0}' is not a message id: expected a lowercase hyphenated UUID")]
    MessageId(String),
    /// A key id must be 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
    #[error("'{0}' is not a key id: expected 1-64 characters from A-Z a-z 0-9 . _ -")]
    KeyId(String),
    /// A unit name must be 1 to 64 characters from `a-z 0-9 -`.
    #[error(
        "'{0}' is not a unit name: expected 1-64 characters from a-z 0-9 -, e.g. chipata-district"
    )]
    Unit(String),
}

/// Longest authority part of a node id.
const MAX_AUTHORITY_LEN: usize = 16;
/// Longest key id; keeps headers and logs bounded.
pub const MAX_KEY_ID_LEN: usize = 64;

/// One authority's node, e.g. `ZM-DSW` (Zambia, Department of Social Welfare).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Parses and validates a node id.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::NodeId(truncate_for_error(s));
        let (country, authority) = s.split_once('-').ok_or_else(bad)?;
        let country_ok = country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase());
        let authority_ok = !authority.is_empty()
            && authority.len() <= MAX_AUTHORITY_LEN
            && authority
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if country_ok && authority_ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(bad())
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ISO 3166-1 alpha-2 country code.
    pub fn country(&self) -> &str {
        &self.0[..2]
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message id: a UUID chosen by the sender, unique per sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(uuid::Uuid);

impl MessageId {
    /// A fresh random (version 4) message id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Parses a message id; only the canonical lowercase hyphenated form is accepted, so one
    /// message has exactly one spelling.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let parsed =
            uuid::Uuid::try_parse(s).map_err(|_| IdError::MessageId(truncate_for_error(s)))?;
        if parsed.hyphenated().to_string() == s {
            Ok(Self(parsed))
        } else {
            Err(IdError::MessageId(truncate_for_error(s)))
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// The name of one Ed25519 signing key of a node, e.g. `ZM-DSW-2026a`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Parses and validates a key id.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_KEY_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::KeyId(truncate_for_error(s)))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A unit of an authority: an office or team whose caseworkers share cases, e.g.
/// `chipata-district`. It names an organisation, never a person.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitName(String);

impl UnitName {
    /// Parses and validates a unit name.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_KEY_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Unit(truncate_for_error(s)))
        }
    }

    /// An optional unit: the empty string is none.
    pub fn optional(s: &str) -> Result<Option<Self>, IdError> {
        if s.is_empty() {
            Ok(None)
        } else {
            Self::new(s).map(Some)
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifiers come from peers: quote at most a short, printable prefix in errors.
fn truncate_for_error(s: &str) -> String {
    s.chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        assert_eq!(
            NodeId::new("ZM-DSW").map(|n| n.country().to_owned()),
            Ok("ZM".into())
        );
        for bad in [
            "",
            "ZM",
            "zm-DSW",
            "ZMB-DSW",
            "ZM-",
            "ZM-dsw",
            "ZM-DSW-X",
            "ZM-ABCDEFGHIJKLMNOPQ",
        ] {
            assert!(NodeId::new(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn message_ids_have_one_spelling() {
        let id = MessageId::random();
        assert_eq!(MessageId::new(&id.to_string()), Ok(id));
        assert!(MessageId::new(&id.to_string().to_uppercase()).is_err());
        assert!(MessageId::new(&id.to_string().replace('-', "")).is_err());
    }

    #[test]
    fn key_ids() {
        assert!(KeyId::new("ZM-DSW-2026a").is_ok());
        assert!(KeyId::new("").is_err());
        assert!(KeyId::new("a b").is_err());
        assert!(KeyId::new(&"k".repeat(65)).is_err());
    }

    #[test]
    fn unit_names() {
        assert!(UnitName::new("chipata-district").is_ok());
        assert_eq!(UnitName::optional(""), Ok(None));
        for bad in ["Chipata", "a b", "a_b", ""] {
            assert!(UnitName::new(bad).is_err(), "{bad} accepted");
        }
    }
}
