//! The referral payload's data categories: which ones a payload actually holds.

use kinbridge_proto::v1::{DataCategory, ReferralPayload};

/// The data categories present in `payload`, sorted ascending without repeats. A category is
/// present when its message is set, even if empty: the sender chose to include it.
pub fn categories_present(payload: &ReferralPayload) -> Vec<DataCategory> {
    let mut out = Vec::new();
    let checks = [
        (payload.identity.is_some(), DataCategory::Identity),
        (payload.contact.is_some(), DataCategory::Contact),
        (payload.family.is_some(), DataCategory::Family),
        (payload.location.is_some(), DataCategory::Location),
        (
            payload.protection_concerns.is_some(),
            DataCategory::ProtectionConcerns,
        ),
        (payload.health.is_some(), DataCategory::Health),
        (payload.education.is_some(), DataCategory::Education),
        (payload.legal_status.is_some(), DataCategory::LegalStatus),
    ];
    for (present, category) in checks {
        if present {
            out.push(category);
        }
    }
    out
}

/// Data minimisation: clears every category of `payload` that `allowed` (a consent scope's
/// categories) does not name, so a reader gets only what the consent covers.
pub fn minimise(payload: &mut ReferralPayload, allowed: &[i32]) {
    let keep = |c: DataCategory| allowed.contains(&(c as i32));
    if !keep(DataCategory::Identity) {
        payload.identity = None;
    }
    if !keep(DataCategory::Contact) {
        payload.contact = None;
    }
    if !keep(DataCategory::Family) {
        payload.family = None;
    }
    if !keep(DataCategory::Location) {
        payload.location = None;
    }
    if !keep(DataCategory::ProtectionConcerns) {
        payload.protection_concerns = None;
    }
    if !keep(DataCategory::Health) {
        payload.health = None;
    }
    if !keep(DataCategory::Education) {
        payload.education = None;
    }
    if !keep(DataCategory::LegalStatus) {
        payload.legal_status = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinbridge_proto::v1::{HealthData, IdentityData};

    #[test]
    fn lists_set_categories_in_order() {
        let payload = ReferralPayload {
            health: Some(HealthData::default()),
            identity: Some(IdentityData::default()),
            ..Default::default()
        };
        assert_eq!(
            categories_present(&payload),
            vec![DataCategory::Identity, DataCategory::Health]
        );
        assert!(categories_present(&ReferralPayload::default()).is_empty());
    }

    #[test]
    fn minimise_keeps_only_allowed_categories() {
        let mut payload = ReferralPayload {
            health: Some(HealthData::default()),
            identity: Some(IdentityData::default()),
            ..Default::default()
        };
        minimise(&mut payload, &[DataCategory::Identity as i32]);
        assert_eq!(categories_present(&payload), vec![DataCategory::Identity]);
    }
}
