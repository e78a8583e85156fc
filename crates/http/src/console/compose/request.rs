//! The referral form's fields as a submission: each category built only if one of its
//! fields is filled in, enum choices by their protobuf names, the consent's last day as its
//! expiry.

use kinbridge_proto::v1 as pb;
use kinbridge_service::ServiceError;

use super::super::form::Form;

/// A protobuf enum value's name as a form value: without its type prefix, lower case, `-`
/// for `_` (`PURPOSE_SERVICE_REFERRAL` → `service-referral`).
fn slug(type_prefix: &str, name: &str) -> String {
    name.trim_start_matches(type_prefix)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// The values of an enum from 1 up (0 is always UNSPECIFIED), as (number, form value).
fn values<E: TryFrom<i32>>(
    type_prefix: &str,
    name: impl Fn(&E) -> &'static str,
) -> Vec<(i32, String)> {
    (1..64)
        .map_while(|n| {
            E::try_from(n)
                .ok()
                .map(|e| (n, slug(type_prefix, name(&e))))
        })
        .collect()
}

/// The purposes the form offers, as (number, form value).
pub(super) fn purposes() -> Vec<(i32, String)> {
    values::<pb::Purpose>("PURPOSE_", |e| e.as_str_name())
}

/// The data categories the form offers, as (number, form value).
pub(super) fn categories() -> Vec<(i32, String)> {
    values::<pb::DataCategory>("DATA_CATEGORY_", |e| e.as_str_name())
}

/// The givers of consent the form offers, as (number, form value).
pub(super) fn givers() -> Vec<(i32, String)> {
    values::<pb::ConsentGiver>("CONSENT_GIVER_", |e| e.as_str_name())
}

/// The sexes the form offers, as (number, form value).
pub(super) fn sexes() -> Vec<(i32, String)> {
    values::<pb::Sex>("SEX_", |e| e.as_str_name())
}

/// The migratory statuses the form offers, as (number, form value).
pub(super) fn migratory() -> Vec<(i32, String)> {
    values::<pb::MigratoryStatus>("MIGRATORY_STATUS_", |e| e.as_str_name())
}

/// The urgencies the form offers, as (number, form value).
pub(super) fn urgencies() -> Vec<(i32, String)> {
    values::<pb::Urgency>("URGENCY_", |e| e.as_str_name())
}

/// The two kinds the form sends, as (form value, catalogue key, kind).
pub(super) const KINDS: [(&str, &str, pb::MessageKind); 2] = [
    ("referral", "kind.referral", pb::MessageKind::Referral),
    (
        "case-transfer",
        "kind.case-transfer",
        pb::MessageKind::CaseTransfer,
    ),
];

/// Comma-separated values, trimmed, empty ones left out.
fn split(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The enum number of form value `value` among `known`, 0 if empty; a refusal naming `field`
/// if unknown.
fn choice(known: &[(i32, String)], value: &str, field: &str) -> Result<i32, ServiceError> {
    if value.is_empty() {
        return Ok(0);
    }
    known
        .iter()
        .find(|(_, v)| v == value)
        .map(|(n, _)| *n)
        .ok_or_else(|| {
            let allowed: Vec<&str> = known.iter().map(|(_, v)| v.as_str()).collect();
            ServiceError::invalid(
                "bad-form-field",
                format!("{field} is one of: {}", allowed.join(", ")),
            )
        })
}

/// Milliseconds since the epoch at the start of the day after `date` (`YYYY-MM-DD`): a consent
/// valid through `date` expires then.
fn end_of_day_ms(date: &str) -> Option<i64> {
    let mut parts = date.trim().splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    let month = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let next = date.next_day()?;
    Some(next.midnight().assume_utc().unix_timestamp() * 1000)
}

/// The submission the form describes. A category is sent only if one of its fields is filled
/// in: what is left empty is not sent (and needs no consent).
pub(super) fn request_of(form: &Form) -> Result<pb::SubmitReferralRequest, ServiceError> {
    let f = |name: &str| form.get(name).map(str::trim).unwrap_or_default();
    let any = |names: &[&str]| names.iter().any(|n| !f(n).is_empty());
    let kind = KINDS
        .iter()
        .find(|(v, _, _)| *v == f("kind"))
        .map_or(pb::MessageKind::Referral, |(_, _, k)| *k);
    let purpose = choice(&purposes(), f("purpose"), "purpose")?;
    let mut referral = pb::ReferralPayload {
        case_reference: f("case_reference").to_owned(),
        requested_services: split(f("requested_services")),
        ..Default::default()
    };
    if any(&[
        "given_names",
        "family_names",
        "other_names",
        "sex",
        "birth_date",
        "estimated_birth_year",
        "languages",
    ]) {
        let year = f("estimated_birth_year");
        let estimated_birth_year = if year.is_empty() {
            0
        } else {
            year.parse().map_err(|_| {
                ServiceError::invalid(
                    "bad-form-field",
                    "the estimated birth year is a year in digits, e.g. 2014",
                )
            })?
        };
        referral.identity = Some(pb::IdentityData {
            given_names: split(f("given_names")),
            family_names: split(f("family_names")),
            other_names: split(f("other_names")),
            sex: choice(&sexes(), f("sex"), "sex")?,
            birth_date: f("birth_date").to_owned(),
            estimated_birth_year,
            languages: split(f("languages")),
        });
    }
    if any(&["phone", "address", "caregiver_name", "caregiver_phone"]) {
        referral.contact = Some(pb::ContactData {
            phone: f("phone").to_owned(),
            address: f("address").to_owned(),
            caregiver_name: f("caregiver_name").to_owned(),
            caregiver_phone: f("caregiver_phone").to_owned(),
        });
    }
    if any(&[
        "member_relationship",
        "member_names",
        "member_last_known_location",
    ]) {
        referral.family = Some(pb::FamilyData {
            members: vec![pb::FamilyMember {
                relationship: f("member_relationship").to_owned(),
                names: split(f("member_names")),
                whereabouts_known: f("member_whereabouts_known") == "yes",
                last_known_location: f("member_last_known_location").to_owned(),
            }],
        });
    }
    if any(&[
        "current_location",
        "place_of_separation",
        "date_of_separation",
    ]) {
        referral.location = Some(pb::LocationData {
            current_location: f("current_location").to_owned(),
            place_of_separation: f("place_of_separation").to_owned(),
            date_of_separation: f("date_of_separation").to_owned(),
        });
    }
    if any(&["migratory_status", "urgency", "concerns", "narrative"]) {
        referral.protection_concerns = Some(pb::ProtectionConcerns {
            migratory_status: choice(&migratory(), f("migratory_status"), "migratory status")?,
            urgency: choice(&urgencies(), f("urgency"), "urgency")?,
            concerns: split(f("concerns")),
            narrative: f("narrative").to_owned(),
        });
    }
    if any(&["conditions", "disabilities", "health_needs"]) {
        referral.health = Some(pb::HealthData {
            conditions: split(f("conditions")),
            disabilities: split(f("disabilities")),
            needs: f("health_needs").to_owned(),
        });
    }
    if any(&["education_level", "last_school", "education_needs"]) {
        referral.education = Some(pb::EducationData {
            level: f("education_level").to_owned(),
            last_school: f("last_school").to_owned(),
            needs: f("education_needs").to_owned(),
        });
    }
    if any(&["nationality", "documentation", "legal_status"]) {
        referral.legal_status = Some(pb::LegalStatusData {
            nationality: f("nationality").to_owned(),
            documentation: f("documentation").to_owned(),
            status: f("legal_status").to_owned(),
        });
    }
    let expires_at_ms = match f("consent_expires") {
        "" => {
            return Err(ServiceError::invalid(
                "bad-form-field",
                "the consent's last day of validity is required (a date, YYYY-MM-DD)",
            ));
        }
        date => end_of_day_ms(date).ok_or_else(|| {
            ServiceError::invalid(
                "bad-form-field",
                "the consent's last day of validity is a date, YYYY-MM-DD",
            )
        })?,
    };
    let mut scope_purposes = Vec::new();
    for value in form.all("consent_purpose") {
        scope_purposes.push(choice(&purposes(), value, "a consent purpose")?);
    }
    let mut scope_categories = Vec::new();
    for value in form.all("consent_category") {
        scope_categories.push(choice(&categories(), value, "a consent category")?);
    }
    let consent = pb::ConsentScope {
        consent_id: f("consent_id").to_owned(),
        given_by: choice(&givers(), f("given_by"), "who gave the consent")?,
        determining_authority: f("determining_authority").to_owned(),
        legal_basis: f("legal_basis").to_owned(),
        child_views_recorded: f("child_views_recorded") == "yes",
        purposes: scope_purposes,
        categories: scope_categories,
        recipients: form.all("consent_recipient").map(str::to_owned).collect(),
        onward_recipients: form.all("consent_onward").map(str::to_owned).collect(),
        valid_from_ms: 0,
        expires_at_ms,
    };
    Ok(pb::SubmitReferralRequest {
        recipient: f("recipient").to_owned(),
        purpose,
        consent: Some(consent),
        correlation_id: String::new(),
        ttl_seconds: 0,
        referral: Some(referral),
        kind: kind as i32,
        recipient_unit: f("recipient_unit").to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_form_becomes_the_submission_with_only_the_categories_filled_in() {
        let form = Form::parse(
            b"recipient=MW-DSW&kind=case-transfer&purpose=service-referral&given_names=A%2C+B\
              &health_needs=x&consent_id=C-1&given_by=guardian&consent_purpose=service-referral\
              &consent_category=identity&consent_recipient=MW-DSW&consent_expires=2030-01-31",
        );
        let req = request_of(&form).expect("a submission");
        assert_eq!(req.kind, pb::MessageKind::CaseTransfer as i32);
        assert_eq!(req.purpose, pb::Purpose::ServiceReferral as i32);
        let referral = req.referral.expect("referral");
        assert_eq!(referral.identity.expect("identity").given_names, ["A", "B"]);
        assert!(referral.health.is_some());
        assert!(referral.contact.is_none() && referral.legal_status.is_none());
        let consent = req.consent.expect("consent");
        assert_eq!(consent.given_by, pb::ConsentGiver::Guardian as i32);
        assert_eq!(consent.categories, [pb::DataCategory::Identity as i32]);
        // Valid through 31 January 2030: expires at midnight starting 1 February.
        assert_eq!(consent.expires_at_ms, 1_896_134_400_000);
        let bad = Form::parse(b"purpose=nonsense&consent_expires=2030-01-31");
        assert_eq!(
            request_of(&bad).expect_err("refused").refusal_reason(),
            "bad-form-field"
        );
        let no_expiry = Form::parse(b"purpose=service-referral");
        assert!(request_of(&no_expiry).is_err());
    }
}
