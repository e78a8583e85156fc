//! Family tracing messages: what a tracing query, match notice, confirmation and disclosure
//! may hold, checked before a receiver acts on them, and the agreed fields a disclosure takes
//! from a case. No name, date or place crosses before a disclosure; a disclosure carries the
//! agreed fields and nothing else.

use kinbridge_proto::v1::{self as pb, DataCategory};

/// Length of a one-time handle: 16 random bytes in lowercase hexadecimal.
pub const HANDLE_LEN: usize = 32;
/// Most candidates one match notice lists.
pub const MAX_CANDIDATES: usize = 16;
/// Longest schema id.
pub const MAX_SCHEMA_ID_LEN: usize = 64;
/// Largest encoding a query may carry, in bytes (a 2,048-bit filter is 256).
pub const MAX_ENCODING_BYTES: usize = 1024;

/// A fresh one-time handle.
pub fn random_handle() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; HANDLE_LEN / 2];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `handle` is a well-formed one-time handle.
pub fn valid_handle(handle: &str) -> bool {
    handle.len() == HANDLE_LEN
        && handle
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn handle(what: &str, value: &str) -> Result<(), String> {
    if valid_handle(value) {
        Ok(())
    } else {
        Err(format!(
            "{what} must be {HANDLE_LEN} lowercase hexadecimal characters"
        ))
    }
}

/// Checks a query's fields; returns the data categories its header must declare.
pub fn check_query(query: &pb::TracingQuery, declared: &[DataCategory]) -> Result<(), String> {
    handle("the query handle", &query.handle)?;
    if query.schema_id.is_empty() || query.schema_id.len() > MAX_SCHEMA_ID_LEN {
        return Err(format!("the schema id must be 1-{MAX_SCHEMA_ID_LEN} bytes"));
    }
    if query.encoding.is_empty() || query.encoding.len() > MAX_ENCODING_BYTES {
        return Err(format!("the encoding must be 1-{MAX_ENCODING_BYTES} bytes"));
    }
    // An encoding is made from identity data, and from the place of separation when known.
    let allowed: [&[DataCategory]; 2] = [
        &[DataCategory::Identity],
        &[DataCategory::Identity, DataCategory::Location],
    ];
    if !allowed.contains(&declared) {
        return Err(
            "a tracing query declares IDENTITY, or IDENTITY and LOCATION, as its data categories"
                .into(),
        );
    }
    Ok(())
}

/// Checks a match notice's fields.
pub fn check_notice(notice: &pb::TracingMatchNotice) -> Result<(), String> {
    handle("the query handle", &notice.query_handle)?;
    if notice.candidates.len() > MAX_CANDIDATES {
        return Err(format!(
            "a match notice lists at most {MAX_CANDIDATES} candidates"
        ));
    }
    for c in &notice.candidates {
        handle("a candidate handle", &c.handle)?;
        let band = pb::MatchBand::try_from(c.band).unwrap_or(pb::MatchBand::Unspecified);
        if band == pb::MatchBand::Unspecified {
            return Err("a candidate's band is POSSIBLE or LIKELY".into());
        }
    }
    Ok(())
}

/// Checks a confirmation's fields.
pub fn check_confirmation(confirmation: &pb::TracingConfirmation) -> Result<(), String> {
    handle("the query handle", &confirmation.query_handle)?;
    handle("the candidate handle", &confirmation.candidate_handle)
}

/// Checks that a disclosure holds only the agreed fields; returns the data categories present.
pub fn check_disclosure(disclosure: &pb::TracingDisclosure) -> Result<Vec<DataCategory>, String> {
    handle("the query handle", &disclosure.query_handle)?;
    handle("the candidate handle", &disclosure.candidate_handle)?;
    let agreed = agreed_fields(&pb::ReferralPayload {
        identity: disclosure.identity.clone(),
        location: disclosure.location.clone(),
        family: disclosure.family.clone(),
        ..Default::default()
    });
    let beyond = [
        ("identity", disclosure.identity != agreed.identity),
        ("location", disclosure.location != agreed.location),
        ("family", disclosure.family != agreed.family),
    ];
    if let Some((what, _)) = beyond.iter().find(|(_, b)| *b) {
        return Err(format!(
            "the disclosure's {what} holds fields beyond the agreed ones (docs/tracing.md, \"What a disclosure carries\")"
        ));
    }
    crate::ids::UnitName::optional(&disclosure.contact_unit)
        .map_err(|e| format!("the contact unit: {e}"))?;
    Ok(categories(disclosure))
}

/// The data categories a disclosure holds.
pub fn categories(disclosure: &pb::TracingDisclosure) -> Vec<DataCategory> {
    let mut out = Vec::new();
    if disclosure.identity.is_some() {
        out.push(DataCategory::Identity);
    }
    if disclosure.family.is_some() {
        out.push(DataCategory::Family);
    }
    if disclosure.location.is_some() {
        out.push(DataCategory::Location);
    }
    out
}

/// The agreed fields of a case, which a disclosure carries: the names, sex and birth date or
/// estimated year of the person; the place and date of separation; each relative's
/// relationship and names. Nothing else of the case (contact details, current location,
/// protection concerns, health, education, legal status, languages) is disclosed. A part left
/// empty is left out.
pub fn agreed_fields(case: &pb::ReferralPayload) -> AgreedFields {
    let identity = case.identity.as_ref().map(|i| pb::IdentityData {
        given_names: i.given_names.clone(),
        family_names: i.family_names.clone(),
        other_names: i.other_names.clone(),
        sex: i.sex,
        birth_date: i.birth_date.clone(),
        estimated_birth_year: i.estimated_birth_year,
        languages: Vec::new(),
    });
    let location = case
        .location
        .as_ref()
        .map(|l| pb::LocationData {
            current_location: String::new(),
            place_of_separation: l.place_of_separation.clone(),
            date_of_separation: l.date_of_separation.clone(),
        })
        .filter(|l| *l != pb::LocationData::default());
    let family = case
        .family
        .as_ref()
        .map(|f| pb::FamilyData {
            members: f
                .members
                .iter()
                .map(|m| pb::FamilyMember {
                    relationship: m.relationship.clone(),
                    names: m.names.clone(),
                    whereabouts_known: false,
                    last_known_location: String::new(),
                })
                .collect(),
        })
        .filter(|f| !f.members.is_empty());
    AgreedFields {
        identity: identity.filter(|i| *i != pb::IdentityData::default()),
        location,
        family,
    }
}

/// The parts of a case a disclosure may carry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgreedFields {
    /// Names, sex, birth date or estimated year.
    pub identity: Option<pb::IdentityData>,
    /// Place and date of separation.
    pub location: Option<pb::LocationData>,
    /// Relatives' relationships and names.
    pub family: Option<pb::FamilyData>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case() -> pb::ReferralPayload {
        pb::ReferralPayload {
            case_reference: "MW-2026-0042".into(),
            identity: Some(pb::IdentityData {
                given_names: vec!["Amina".into()],
                family_names: vec!["Yusuf".into()],
                sex: pb::Sex::Female as i32,
                birth_date: "2014-03-02".into(),
                languages: vec!["ar".into()],
                ..Default::default()
            }),
            contact: Some(pb::ContactData {
                phone: "+265 1".into(),
                ..Default::default()
            }),
            location: Some(pb::LocationData {
                current_location: "Dzaleka".into(),
                place_of_separation: "Mwanza border post".into(),
                date_of_separation: "2026-05-01".into(),
            }),
            family: Some(pb::FamilyData {
                members: vec![pb::FamilyMember {
                    relationship: "mother".into(),
                    names: vec!["Halima Yusuf".into()],
                    whereabouts_known: true,
                    last_known_location: "Lusaka".into(),
                }],
            }),
            ..Default::default()
        }
    }

    fn disclosure(fields: AgreedFields) -> pb::TracingDisclosure {
        pb::TracingDisclosure {
            query_handle: random_handle(),
            candidate_handle: random_handle(),
            identity: fields.identity,
            location: fields.location,
            family: fields.family,
            contact_unit: "lilongwe-district".into(),
        }
    }

    #[test]
    fn agreed_fields_leave_the_rest_of_the_case_behind() {
        let fields = agreed_fields(&case());
        let identity = fields.identity.as_ref().expect("identity");
        assert_eq!(identity.given_names, ["Amina"]);
        assert!(identity.languages.is_empty());
        let location = fields.location.as_ref().expect("location");
        assert!(location.current_location.is_empty());
        let member = &fields.family.as_ref().expect("family").members[0];
        assert!(member.last_known_location.is_empty() && !member.whereabouts_known);
        let d = disclosure(fields);
        assert_eq!(
            check_disclosure(&d),
            Ok(vec![
                DataCategory::Identity,
                DataCategory::Family,
                DataCategory::Location
            ])
        );
    }

    #[test]
    fn a_disclosure_beyond_the_agreed_fields_is_refused() {
        let mut d = disclosure(agreed_fields(&case()));
        if let Some(l) = d.location.as_mut() {
            l.current_location = "Dzaleka".into();
        }
        let err = check_disclosure(&d).expect_err("refused");
        assert!(err.contains("location"), "{err}");
        let mut d = disclosure(agreed_fields(&case()));
        if let Some(i) = d.identity.as_mut() {
            i.languages.push("ar".into());
        }
        assert!(check_disclosure(&d).is_err());
    }

    #[test]
    fn handles_and_queries_are_checked() {
        assert!(valid_handle(&random_handle()));
        assert!(!valid_handle("ABCDEF"));
        assert!(!valid_handle(&"g".repeat(HANDLE_LEN)));
        let query = pb::TracingQuery {
            handle: random_handle(),
            schema_id: "kinbridge-clk-v1".into(),
            key_epoch: 1,
            encoding: vec![0; 128],
        };
        assert!(check_query(&query, &[DataCategory::Identity]).is_ok());
        assert!(check_query(&query, &[DataCategory::Contact]).is_err());
        let empty = pb::TracingQuery {
            encoding: Vec::new(),
            ..query
        };
        assert!(check_query(&empty, &[DataCategory::Identity]).is_err());
    }
}
