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
}
