//! Who is on the other end of a TLS connection: a peer node or a local client, read from the
//! subject alternative names of its certificate.
//!
//! A node certificate carries the URI `urn:kinbridge:node:<NODE-ID>`. A local client
//! certificate carries `urn:kinbridge:client:<NAME>` and `urn:kinbridge:role:<ROLE>`, and for
//! a caseworker `urn:kinbridge:unit:<UNIT>`, and any number of `urn:kinbridge:tag:<TAG>`
//! (normalised; an unknown tag makes the certificate invalid, so a misspelt tag never
//! weakens the firewall).
//! Certificates of the development PKI carry [`DEV_MARKER`] in their organisation name.

use kinbridge_core::firewall::{Tag, UnknownTag};
use kinbridge_core::{NodeId, UnitName};
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// URI prefix naming a node in a certificate.
pub const NODE_URI_PREFIX: &str = "urn:kinbridge:node:";
/// URI prefix naming a local client in a certificate.
pub const CLIENT_URI_PREFIX: &str = "urn:kinbridge:client:";
/// URI prefix naming a local client's role in a certificate.
pub const ROLE_URI_PREFIX: &str = "urn:kinbridge:role:";
/// URI prefix naming the unit (office, team) a local client works in.
pub const UNIT_URI_PREFIX: &str = "urn:kinbridge:unit:";
/// URI prefix naming a tag of a local client in a certificate (e.g.
/// `urn:kinbridge:tag:immigration-enforcement`).
pub const TAG_URI_PREFIX: &str = "urn:kinbridge:tag:";
/// Organisation name of every certificate the development PKI issues. A node refuses
/// material carrying it unless its config says `development = true`.
pub const DEV_MARKER: &str = "kinbridge DEVELOPMENT PKI - not for production";

/// A local client's role, from its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Submits referrals and reads its unit's cases.
    Caseworker,
    /// A case-management system linked to the node.
    System,
    /// Reads the audit log, never a payload.
    Auditor,
    /// Manages peers and keys.
    Admin,
}

impl Role {
    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "caseworker" => Some(Role::Caseworker),
            "system" => Some(Role::System),
            "auditor" => Some(Role::Auditor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caseworker => "caseworker",
            Role::System => "system",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

/// A local client as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalClient {
    /// The client's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its tags, normalised; the firewall reads them.
    pub tags: Vec<Tag>,
    /// The unit it works in: required for a caseworker, who sees only its unit's cases.
    pub unit: Option<UnitName>,
}

impl LocalClient {
    /// Whether this client may see a case belonging to `unit` (empty: no unit, every client
    /// of a case role sees it). A caseworker sees its own unit's; a system sees every unit's.
    pub fn sees(&self, unit: &str) -> bool {
        match self.role {
            Role::Caseworker => {
                unit.is_empty() || self.unit.as_ref().is_some_and(|u| u.as_str() == unit)
            }
            Role::System => true,
            Role::Auditor | Role::Admin => false,
        }
    }

    /// The client's unit as stored with what it submits; empty for none.
    pub fn unit_str(&self) -> &str {
        self.unit.as_ref().map_or("", UnitName::as_str)
    }
}

/// Why a certificate does not name a valid identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The DER could not be parsed.
    #[error("the certificate could not be parsed")]
    Unparsable,
    /// No URI of the expected form.
    #[error("the certificate names no {0}")]
    Missing(&'static str),
    /// A URI of the expected form with an invalid value.
    #[error("the certificate names an invalid {what}: {value}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// The value, as printed.
        value: String,
    },
    /// A tag URI naming a tag outside the vocabulary.
    #[error("the certificate carries {TAG_URI_PREFIX}…: {0}")]
    UnknownTag(#[from] UnknownTag),
}

fn san_uris(cert: &CertificateDer<'_>) -> Result<Vec<String>, IdentityError> {
    let (_, parsed) =
        X509Certificate::from_der(cert.as_ref()).map_err(|_| IdentityError::Unparsable)?;
    let mut uris = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uris.push((*uri).to_owned());
            }
        }
    }
    Ok(uris)
}

/// The node id a node certificate names.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, IdentityError> {
    let uris = san_uris(cert)?;
    let value = uris
        .iter()
        .find_map(|u| u.strip_prefix(NODE_URI_PREFIX))
        .ok_or(IdentityError::Missing("node id"))?;
    NodeId::new(value).map_err(|_| IdentityError::Invalid {
        what: "node id",
        value: printable(value, 64),
    })
}

/// The local client a client certificate names.
pub fn local_client_of(cert: &CertificateDer<'_>) -> Result<LocalClient, IdentityError> {
    let uris = san_uris(cert)?;
    let name = uris
        .iter()
        .find_map(|u| u.strip_prefix(CLIENT_URI_PREFIX))
        .ok_or(IdentityError::Missing("client name"))?;
    let role_name = uris
        .iter()
        .find_map(|u| u.strip_prefix(ROLE_URI_PREFIX))
        .ok_or(IdentityError::Missing("role"))?;
    let role = Role::parse(role_name).ok_or_else(|| IdentityError::Invalid {
        what: "role",
        value: printable(role_name, 32),
    })?;
    let mut tags = uris
        .iter()
        .filter_map(|u| tag_of(u))
        .map(Tag::parse)
        .collect::<Result<Vec<_>, _>>()?;
    tags.sort();
    tags.dedup();
    let unit = match uris.iter().find_map(|u| u.strip_prefix(UNIT_URI_PREFIX)) {
        Some(value) => Some(UnitName::new(value).map_err(|_| IdentityError::Invalid {
            what: "unit",
            value: printable(value, 64),
        })?),
        None if role == Role::Caseworker => {
            return Err(IdentityError::Missing(
                "unit (a caseworker certificate must carry urn:kinbridge:unit:<UNIT>)",
            ));
        }
        None => None,
    };
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    if name.is_empty() {
        return Err(IdentityError::Invalid {
            what: "client name",
            value: "(empty, or control characters only)".into(),
        });
    }
    Ok(LocalClient {
        name,
        role,
        tags,
        unit,
    })
}

/// A value from a certificate quoted in an error: at most `max` characters, control
/// characters replaced by `?` (an error is logged and audited; a certificate must not forge
/// lines there).
fn printable(value: &str, max: usize) -> String {
    value
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The client name a certificate carries (`urn:kinbridge:client:<NAME>`, at most 64
/// characters, control characters dropped), whether or not the rest of it is valid.
pub fn client_name_of(cert: &CertificateDer<'_>) -> Option<String> {
    let uris = san_uris(cert).ok()?;
    let name = uris
        .iter()
        .find_map(|u| u.strip_prefix(CLIENT_URI_PREFIX))?;
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    (!name.is_empty()).then_some(name)
}

/// The tag text of a URI of the form `urn:kinbridge:tag:<TAG>`, whatever the case of its
/// prefix (URN prefixes are case-insensitive, RFC 8141 §3.1).
fn tag_of(uri: &str) -> Option<&str> {
    let prefix = uri.get(..TAG_URI_PREFIX.len())?;
    if prefix.eq_ignore_ascii_case(TAG_URI_PREFIX) {
        uri.get(TAG_URI_PREFIX.len()..)
    } else {
        None
    }
}

/// Whether a certificate was issued by, or is, development material.
pub fn is_development(cert: &CertificateDer<'_>) -> bool {
    X509Certificate::from_der(cert.as_ref())
        .map(|(_, c)| {
            c.issuer().to_string().contains(DEV_MARKER)
                || c.subject().to_string().contains(DEV_MARKER)
        })
        .unwrap_or(false)
}
