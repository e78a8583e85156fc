//! The firewall between child protection and immigration enforcement: the one place that
//! decides whether data sent for a child-protection purpose may go to, or be read by, a node or
//! local client with given tags.
//!
//! It is one-way: an enforcement authority may refer a child *to* child protection; nothing
//! sent for a child-protection purpose ever flows back, whatever a consent says.

use kinbridge_proto::v1::Purpose;

/// The tag of anything that is part of immigration enforcement.
pub const IMMIGRATION_ENFORCEMENT: &str = "immigration-enforcement";

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
pub fn is_enforcement(tags: &[String]) -> bool {
    tags.iter().any(|t| t == IMMIGRATION_ENFORCEMENT)
}

/// Whether data for `purpose` may go to, or be read by, something with `tags`.
pub fn allows(purpose: Purpose, tags: &[String]) -> bool {
    !(is_child_protection(purpose) && is_enforcement(tags))
}

/// Whether a local client with `tags` may read a node's inbox and deliveries at all. Every
/// purpose kinbridge carries is child protection, so an enforcement-tagged reader may read
/// nothing; it may still submit (refer a child to child protection).
pub fn reader_allowed(tags: &[String]) -> bool {
    [
        Purpose::ServiceReferral,
        Purpose::FamilyTracing,
        Purpose::FamilyReunification,
        Purpose::BestInterestsDetermination,
        Purpose::ReturnAndReintegration,
        Purpose::AlternativeCare,
    ]
    .iter()
    .all(|p| allows(*p, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_for_child_protection_reaches_enforcement() {
        let enforcement = vec!["immigration-enforcement".to_owned()];
        let protection = vec!["child-protection".to_owned()];
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
}
