//! The firewall between child protection and immigration enforcement: the one place that
//! decides whether data sent for a child-protection purpose may go to, or be read by, a node or
//! local client with given tags.
//!
//! It is one-way: an enforcement authority may refer a child *to* child protection; nothing
//! sent for a child-protection purpose ever flows back, whatever a consent says.
//!
//! Tags are a closed vocabulary ([`Tag`]). Wherever a tag enters a node (its config, a peer's
//! entry, a local client's certificate) it is parsed with [`Tag::parse`], which ignores case
//! and surrounding spaces and takes `_` or a space for `-`, and refuses anything else by name:
//! a misspelt tag must fail loudly, never quietly weaken the firewall.

use std::fmt;

use kinbridge_proto::v1::Purpose;

/// The spelling of the tag of anything that is part of immigration enforcement.
pub const IMMIGRATION_ENFORCEMENT: &str = "immigration-enforcement";
/// The spelling of the tag of a child-protection authority or system.
pub const CHILD_PROTECTION: &str = "child-protection";

/// A tag of a node or local client: what kind of authority it belongs to. The vocabulary is
/// closed; docs/consent.md lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tag {
    /// Part of a child-protection authority.
    ChildProtection,
    /// Part of immigration enforcement: receives and reads no child-protection data.
    ImmigrationEnforcement,
}

/// Every tag, in the order they are listed to a user.
pub const VOCABULARY: [Tag; 2] = [Tag::ChildProtection, Tag::ImmigrationEnforcement];

/// Longest tag text quoted back in an error.
const MAX_QUOTED_TAG: usize = 64;

/// A tag outside the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown tag '{0}': the tags are child-protection and immigration-enforcement (case, surrounding spaces and '_' for '-' do not matter); correct the spelling"
)]
pub struct UnknownTag(pub String);

impl Tag {
    /// Parses a tag as written in a config or certificate: case does not matter, surrounding
    /// whitespace is ignored, and `_` or an inner space stands for `-`. Anything else outside
    /// the vocabulary is refused, naming it.
    pub fn parse(text: &str) -> Result<Tag, UnknownTag> {
        let normal: String = text
            .trim()
            .chars()
            .map(|c| match c {
                '_' | ' ' => '-',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        VOCABULARY
            .into_iter()
            .find(|t| t.as_str() == normal)
            .ok_or_else(|| UnknownTag(printable(text)))
    }

    /// The tag's one spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::ChildProtection => CHILD_PROTECTION,
            Tag::ImmigrationEnforcement => IMMIGRATION_ENFORCEMENT,
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn printable(text: &str) -> String {
    text.chars()
        .take(MAX_QUOTED_TAG)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Whether data sent for `purpose` is child-protection data. Every purpose kinbridge carries
/// is; a new purpose must be decided here explicitly.
pub fn is_child_protection(purpose: Purpose) -> bool {
    match purpose {
        Purpose::ServiceReferral
        | Purpose::FamilyTracing
        | Purpose::FamilyReunification
        | Purpose::BestInterestsDetermination
        | Purpose::ReturnAndReintegration
        | Purpose::AlternativeCare
        | Purpose::Unspecified => true,
    }
}

/// Whether something with `tags` is part of immigration enforcement.
pub fn is_enforcement(tags: &[Tag]) -> bool {
    tags.contains(&Tag::ImmigrationEnforcement)
}

/// Whether data for `purpose` may go to, or be read by, something with `tags`.
pub fn allows(purpose: Purpose, tags: &[Tag]) -> bool {
    !(is_child_protection(purpose) && is_enforcement(tags))
}

/// What a call on the local port does with case data; every local method is classified as
/// one of these (a method not classified counts as [`LocalAccess::Case`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAccess {
    /// Hands data *to* child protection and returns only an id and a state (submitting a
    /// referral): what an enforcement authority may do.
    Submit,
    /// Returns nothing about any case or transfer: health, the API's own descriptors, signed
    /// checkpoints and proofs of the audit log (hashes, as peers receive them).
    NoCaseData,
    /// Returns, releases, moves or changes case data or the record of its transfers: inbox,
    /// deliveries, referral status, forwarding, withdrawal, family tracing, audit entries.
    Case,
    /// Returns suppressed aggregate counts of referrals. They are not case data, but they are
    /// drawn from child-protection work and broken down by route and month: nothing of that
    /// flows to enforcement through a node.
    Aggregate,
    /// Runs the node (signing keys, peers and their queues): for the authority's own
    /// administrators only.
    Operations,
}

/// Whether a local client with `tags` may make a call of kind `access`. The firewall's answer
/// only: roles and units are checked besides.
pub fn local_client_may(access: LocalAccess, tags: &[Tag]) -> bool {
    match access {
        LocalAccess::Submit | LocalAccess::NoCaseData => true,
        LocalAccess::Case | LocalAccess::Aggregate | LocalAccess::Operations => {
            !is_enforcement(tags)
        }
    }
}

/// Whether a local client with `tags` may read a node's inbox and deliveries at all. Every
/// purpose kinbridge carries is child protection, so an enforcement-tagged reader may read
/// nothing; it may still submit (refer a child to child protection).
pub fn reader_allowed(tags: &[Tag]) -> bool {
    local_client_may(LocalAccess::Case, tags)
}

/// Whether a status update to a referral's sender with `tags` may carry the reason or outcome
/// code: not to enforcement, which learns the state only (received, accepted, declined, in
/// progress, closed), never why nor how a case ended.
pub fn status_code_allowed(sender_tags: &[Tag]) -> bool {
    !is_enforcement(sender_tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_for_child_protection_reaches_enforcement() {
        let enforcement = vec![Tag::ImmigrationEnforcement];
        let protection = vec![Tag::ChildProtection];
        for purpose in [
            Purpose::ServiceReferral,
            Purpose::FamilyTracing,
            Purpose::ReturnAndReintegration,
        ] {
            assert!(!allows(purpose, &enforcement));
            assert!(allows(purpose, &protection));
            assert!(allows(purpose, &[]));
        }
    }

    #[test]
    fn tags_parse_in_any_spelling_and_unknown_ones_are_named() {
        for text in [
            "immigration-enforcement",
            "Immigration-Enforcement",
            "IMMIGRATION-ENFORCEMENT",
            "  immigration_enforcement\t",
            "Immigration Enforcement",
        ] {
            assert_eq!(Tag::parse(text), Ok(Tag::ImmigrationEnforcement), "{text}");
        }
        assert_eq!(Tag::parse(" Child-Protection "), Ok(Tag::ChildProtection));
        for text in [
            "immigration-enforcment",
            "",
            "enforcement",
            "immigration--enforcement",
        ] {
            let err = Tag::parse(text).expect_err(text);
            let message = err.to_string();
            assert!(message.contains(&format!("'{text}'")), "{message}");
            assert!(message.contains(IMMIGRATION_ENFORCEMENT), "{message}");
        }
        for tag in VOCABULARY {
            assert_eq!(Tag::parse(tag.as_str()), Ok(tag));
        }
    }

    #[test]
    fn an_enforcement_client_may_only_submit_and_see_no_case_data() {
        let enforcement = [Tag::ImmigrationEnforcement];
        assert!(local_client_may(LocalAccess::Submit, &enforcement));
        assert!(local_client_may(LocalAccess::NoCaseData, &enforcement));
        for access in [
            LocalAccess::Case,
            LocalAccess::Aggregate,
            LocalAccess::Operations,
        ] {
            assert!(!local_client_may(access, &enforcement), "{access:?}");
            assert!(local_client_may(access, &[Tag::ChildProtection]));
            assert!(local_client_may(access, &[]));
        }
        assert!(!status_code_allowed(&enforcement));
        assert!(status_code_allowed(&[Tag::ChildProtection]));
    }
}
