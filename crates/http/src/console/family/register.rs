//! The form that registers a tracing record or request: what the caseworker typed (kept as
//! typed, so a refused form comes back filled in), the request it makes for the
//! `RegisterTracingCase` use case, and its HTML. The use case decides what is taken.

use std::fmt::Write;

use kinbridge_proto::v1 as pb;
use kinbridge_service::ServiceError;

use super::super::catalogue::Catalogue;
use super::super::form::Form;
use super::super::html::{enum_key, esc};

/// Relatives' rows on the form.
pub const RELATIVES: usize = 3;

/// Consent givers the form offers, by their catalogue key's suffix (as in `giver.*`).
const GIVERS: [pb::ConsentGiver; 5] = [
    pb::ConsentGiver::Child,
    pb::ConsentGiver::Parent,
    pb::ConsentGiver::Guardian,
    pb::ConsentGiver::LegalRepresentative,
    pb::ConsentGiver::BestInterestsDetermination,
];

/// Data categories the form offers for the consent.
const CATEGORIES: [pb::DataCategory; 8] = [
    pb::DataCategory::Identity,
    pb::DataCategory::Family,
    pb::DataCategory::Location,
    pb::DataCategory::Contact,
    pb::DataCategory::ProtectionConcerns,
    pb::DataCategory::Health,
    pb::DataCategory::Education,
    pb::DataCategory::LegalStatus,
];

/// One relative's row: relationship and names.
#[derive(Debug, Default, Clone)]
pub struct Relative {
    /// e.g. mother.
    pub relationship: String,
    /// Comma-separated names.
    pub names: String,
}

/// What the caseworker typed, as typed.
#[derive(Debug, Clone)]
pub struct Draft {
    /// `record` or `request`.
    pub kind: String,
    /// The authority's case reference.
    pub case_reference: String,
    /// Comma-separated given names.
    pub given_names: String,
    /// Comma-separated family names.
    pub family_names: String,
    /// Comma-separated other names and spellings.
    pub other_names: String,
    /// `female`, `male`, `other` or empty.
    pub sex: String,
    /// YYYY-MM-DD.
    pub birth_date: String,
    /// A year.
    pub estimated_birth_year: String,
    /// Comma-separated languages.
    pub languages: String,
    /// Where the child and family were separated.
    pub place_of_separation: String,
    /// YYYY-MM-DD.
    pub date_of_separation: String,
    /// The relatives' rows.
    pub relatives: Vec<Relative>,
    /// A request's peers to query, comma-separated (empty: the consent's recipients).
    pub peers: String,
    /// The consent's reference.
    pub consent_id: String,
    /// A consent giver's catalogue suffix (`parent`, ...).
    pub given_by: String,
    /// For a best-interests determination.
    pub determining_authority: String,
    /// For a best-interests determination.
    pub legal_basis: String,
    /// Whether the child's views were recorded.
    pub child_views: bool,
    /// Whether the consent covers family tracing.
    pub covers_tracing: bool,
    /// Category suffixes ticked (`identity`, ...).
    pub categories: Vec<String>,
    /// Comma-separated node ids the consent names.
    pub recipients: String,
    /// YYYY-MM-DD: the last day the consent holds.
    pub consent_until: String,
}

impl Default for Draft {
    /// An empty form, with the categories a disclosure can carry ticked.
    fn default() -> Self {
        Self {
            kind: String::new(),
            case_reference: String::new(),
            given_names: String::new(),
            family_names: String::new(),
            other_names: String::new(),
            sex: String::new(),
            birth_date: String::new(),
            estimated_birth_year: String::new(),
            languages: String::new(),
            place_of_separation: String::new(),
            date_of_separation: String::new(),
            relatives: vec![Relative::default(); RELATIVES],
            peers: String::new(),
            consent_id: String::new(),
            given_by: String::new(),
            determining_authority: String::new(),
            legal_basis: String::new(),
            child_views: false,
            covers_tracing: false,
            categories: ["identity", "family", "location"]
                .map(String::from)
                .to_vec(),
            recipients: String::new(),
            consent_until: String::new(),
        }
    }
}

fn category_name(c: pb::DataCategory) -> String {
    enum_key("", "DATA_CATEGORY_", c.as_str_name())[1..].to_owned()
}

fn giver_name(g: pb::ConsentGiver) -> String {
    enum_key("", "CONSENT_GIVER_", g.as_str_name())[1..].to_owned()
}

/// The comma-separated values of `text`, trimmed, empty ones left out.
fn split(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Milliseconds since the Unix epoch at the end of day `date` (YYYY-MM-DD, UTC).
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

impl Draft {
    /// The draft a posted form holds.
    pub fn of(form: &Form) -> Self {
        let text = |name: &str| form.get(name).unwrap_or_default().to_owned();
        let relatives = (1..=RELATIVES)
            .map(|n| Relative {
                relationship: text(&format!("relative{n}_relationship")),
                names: text(&format!("relative{n}_names")),
            })
            .collect();
        Self {
            kind: text("kind"),
            case_reference: text("case_reference"),
            given_names: text("given_names"),
            family_names: text("family_names"),
            other_names: text("other_names"),
            sex: text("sex"),
            birth_date: text("birth_date"),
            estimated_birth_year: text("estimated_birth_year"),
            languages: text("languages"),
            place_of_separation: text("place_of_separation"),
            date_of_separation: text("date_of_separation"),
            relatives,
            peers: text("peers"),
            consent_id: text("consent_id"),
            given_by: text("given_by"),
            determining_authority: text("determining_authority"),
            legal_basis: text("legal_basis"),
            child_views: form.get("child_views").is_some(),
            covers_tracing: form.get("covers_tracing").is_some(),
            categories: form.all("category").map(str::to_owned).collect(),
            recipients: text("recipients"),
            consent_until: text("consent_until"),
        }
    }

    /// The use case's request, or the refusal of a value that is not of its form (a year
    /// that is not a number, a date that is not a date). Whether the case is taken is the
    /// use case's decision.
    pub fn request(&self) -> Result<pb::RegisterTracingCaseRequest, ServiceError> {
        let kind = match self.kind.as_str() {
            "record" => pb::TracingCaseKind::Record,
            "request" => pb::TracingCaseKind::Request,
            _ => pb::TracingCaseKind::Unspecified,
        };
        let sex = match self.sex.as_str() {
            "female" => pb::Sex::Female,
            "male" => pb::Sex::Male,
            "other" => pb::Sex::Other,
            _ => pb::Sex::Unspecified,
        };
        let year = self.estimated_birth_year.trim();
        let estimated_birth_year = if year.is_empty() {
            0
        } else {
            year.parse::<u32>().map_err(|_| {
                ServiceError::invalid(
                    "bad-year",
                    "the estimated year of birth is a year in digits, e.g. 2014",
                )
            })?
        };
        let expires_at_ms = end_of_day_ms(&self.consent_until).ok_or_else(|| {
            ServiceError::invalid(
                "bad-date",
                "the last day the consent holds is a date (YYYY-MM-DD), e.g. 2027-06-30",
            )
        })?;
        let identity = pb::IdentityData {
            given_names: split(&self.given_names),
            family_names: split(&self.family_names),
            other_names: split(&self.other_names),
            sex: sex as i32,
            birth_date: self.birth_date.trim().to_owned(),
            estimated_birth_year,
            languages: split(&self.languages),
        };
        let location = pb::LocationData {
            current_location: String::new(),
            place_of_separation: self.place_of_separation.trim().to_owned(),
            date_of_separation: self.date_of_separation.trim().to_owned(),
        };
        let members: Vec<pb::FamilyMember> = self
            .relatives
            .iter()
            .filter(|r| !r.relationship.trim().is_empty() || !r.names.trim().is_empty())
            .map(|r| pb::FamilyMember {
                relationship: r.relationship.trim().to_owned(),
                names: split(&r.names),
                ..Default::default()
            })
            .collect();
        let case = pb::ReferralPayload {
            case_reference: self.case_reference.trim().to_owned(),
            identity: Some(identity),
            location: (location != pb::LocationData::default()).then_some(location),
            family: (!members.is_empty()).then_some(pb::FamilyData { members }),
            ..Default::default()
        };
        let given_by = GIVERS
            .into_iter()
            .find(|g| giver_name(*g) == self.given_by)
            .unwrap_or(pb::ConsentGiver::Unspecified);
        let categories = CATEGORIES
            .into_iter()
            .filter(|c| self.categories.contains(&category_name(*c)))
            .map(|c| c as i32)
            .collect();
        let consent = pb::ConsentScope {
            consent_id: self.consent_id.trim().to_owned(),
            given_by: given_by as i32,
            determining_authority: self.determining_authority.trim().to_owned(),
            legal_basis: self.legal_basis.trim().to_owned(),
            child_views_recorded: self.child_views,
            purposes: if self.covers_tracing {
                vec![pb::Purpose::FamilyTracing as i32]
            } else {
                Vec::new()
            },
            categories,
            recipients: split(&self.recipients),
            onward_recipients: Vec::new(),
            valid_from_ms: 0,
            expires_at_ms,
        };
        Ok(pb::RegisterTracingCaseRequest {
            kind: kind as i32,
            consent: Some(consent),
            case: Some(case),
            peers: split(&self.peers),
            ttl_seconds: 0,
        })
    }
}

/// A text input with its label (and a hint, if the catalogue key `hint` is given).
fn input(
    out: &mut String,
    cat: &Catalogue,
    (name, label, kind): (&str, &str, &str),
    value: &str,
    hint: Option<&str>,
    required: bool,
) {
    let described = hint.map_or_else(String::new, |_| {
        format!(" aria-describedby=\"{name}-hint\"")
    });
    let _ = write!(
        out,
        "<p class=\"field\"><label for=\"{name}\">{}</label> <input id=\"{name}\" name=\"{name}\" type=\"{kind}\" value=\"{}\" autocomplete=\"off\"{described}{}>",
        esc(cat.text(label)),
        esc(value),
        if required { " required" } else { "" }
    );
    if let Some(hint) = hint {
        let _ = write!(
            out,
            " <small id=\"{name}-hint\">{}</small>",
            esc(cat.text(hint))
        );
    }
    out.push_str("</p>\n");
}

fn checkbox(out: &mut String, id: &str, name: &str, value: &str, label: &str, checked: bool) {
    let _ = writeln!(
        out,
        "<p class=\"check\"><input type=\"checkbox\" id=\"{id}\" name=\"{name}\" value=\"{value}\"{}> <label for=\"{id}\">{}</label></p>",
        if checked { " checked" } else { "" },
        esc(label)
    );
}

/// The registration form, filled in with `draft`, with the CSRF `token`.
pub fn form(cat: &Catalogue, draft: &Draft, token: &str) -> String {
    let t = |k: &str| cat.text(k);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<form class=\"tracing-form\" method=\"post\" action=\"/console/tracing/register\">\n<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    );
    // What is registered.
    let _ = writeln!(
        out,
        "<fieldset><legend>{}</legend>",
        esc(t("tracing.form.kind"))
    );
    for (value, label) in [
        ("record", "tracing.form.kind-record"),
        ("request", "tracing.form.kind-request"),
    ] {
        let _ = writeln!(
            out,
            "<p class=\"check\"><input type=\"radio\" id=\"kind-{value}\" name=\"kind\" value=\"{value}\" required{}> <label for=\"kind-{value}\">{}</label></p>",
            if draft.kind == value { " checked" } else { "" },
            esc(t(label))
        );
    }
    out.push_str("</fieldset>\n");

    // The person.
    let _ = writeln!(
        out,
        "<fieldset><legend>{}</legend>\n<p><small>{}</small></p>",
        esc(t("tracing.form.person")),
        esc(t("tracing.form.person-hint"))
    );
    let comma = Some("tracing.form.comma-hint");
    input(
        &mut out,
        cat,
        ("case_reference", "tracing.form.case-reference", "text"),
        &draft.case_reference,
        None,
        false,
    );
    input(
        &mut out,
        cat,
        ("given_names", "field.given-names", "text"),
        &draft.given_names,
        comma,
        false,
    );
    input(
        &mut out,
        cat,
        ("family_names", "field.family-names", "text"),
        &draft.family_names,
        comma,
        false,
    );
    input(
        &mut out,
        cat,
        ("other_names", "field.other-names", "text"),
        &draft.other_names,
        Some("tracing.form.other-names-hint"),
        false,
    );
    let _ = write!(
        out,
        "<p class=\"field\"><label for=\"sex\">{}</label> <select id=\"sex\" name=\"sex\"><option value=\"\">{}</option>",
        esc(t("field.sex")),
        esc(t("tracing.form.unknown"))
    );
    for sex in ["female", "male", "other"] {
        let _ = write!(
            out,
            "<option value=\"{sex}\"{}>{}</option>",
            if draft.sex == sex { " selected" } else { "" },
            esc(t(&format!("sex.{sex}")))
        );
    }
    out.push_str("</select></p>\n");
    input(
        &mut out,
        cat,
        ("birth_date", "field.birth-date", "date"),
        &draft.birth_date,
        None,
        false,
    );
    input(
        &mut out,
        cat,
        ("estimated_birth_year", "field.estimated-birth-year", "text"),
        &draft.estimated_birth_year,
        Some("tracing.form.year-hint"),
        false,
    );
    input(
        &mut out,
        cat,
        ("languages", "field.languages", "text"),
        &draft.languages,
        comma,
        false,
    );
    input(
        &mut out,
        cat,
        ("place_of_separation", "field.place-of-separation", "text"),
        &draft.place_of_separation,
        None,
        false,
    );
    input(
        &mut out,
        cat,
        ("date_of_separation", "field.date-of-separation", "date"),
        &draft.date_of_separation,
        None,
        false,
    );
    out.push_str("</fieldset>\n");

    // The relatives.
    let _ = writeln!(
        out,
        "<fieldset><legend>{}</legend>\n<p><small>{}</small></p>",
        esc(t("tracing.form.relatives")),
        esc(t("tracing.form.relatives-hint"))
    );
    for (i, r) in draft.relatives.iter().enumerate() {
        let n = i + 1;
        let number = n.to_string();
        let _ = writeln!(
            out,
            "<fieldset><legend>{}</legend>",
            esc(&cat.fill("tracing.form.relative", &[("n", &number)]))
        );
        input(
            &mut out,
            cat,
            (
                &format!("relative{n}_relationship"),
                "tracing.form.relationship",
                "text",
            ),
            &r.relationship,
            None,
            false,
        );
        input(
            &mut out,
            cat,
            (
                &format!("relative{n}_names"),
                "tracing.form.relative-names",
                "text",
            ),
            &r.names,
            None,
            false,
        );
        out.push_str("</fieldset>\n");
    }
    out.push_str("</fieldset>\n");

    // Whom to trace with.
    let _ = writeln!(
        out,
        "<fieldset><legend>{}</legend>",
        esc(t("tracing.form.peers-title"))
    );
    input(
        &mut out,
        cat,
        ("peers", "tracing.form.peers", "text"),
        &draft.peers,
        Some("tracing.form.peers-hint"),
        false,
    );
    out.push_str("</fieldset>\n");

    // The consent.
    let _ = writeln!(
        out,
        "<fieldset><legend>{}</legend>",
        esc(t("tracing.form.consent"))
    );
    input(
        &mut out,
        cat,
        ("consent_id", "consent.id", "text"),
        &draft.consent_id,
        None,
        true,
    );
    let _ = write!(
        out,
        "<p class=\"field\"><label for=\"given_by\">{}</label> <select id=\"given_by\" name=\"given_by\" required><option value=\"\">{}</option>",
        esc(t("consent.given-by")),
        esc(t("tracing.form.choose"))
    );
    for giver in GIVERS {
        let name = giver_name(giver);
        let _ = write!(
            out,
            "<option value=\"{name}\"{}>{}</option>",
            if draft.given_by == name {
                " selected"
            } else {
                ""
            },
            esc(t(&format!("giver.{name}")))
        );
    }
    out.push_str("</select></p>\n");
    input(
        &mut out,
        cat,
        (
            "determining_authority",
            "consent.determining-authority",
            "text",
        ),
        &draft.determining_authority,
        Some("tracing.form.bid-hint"),
        false,
    );
    input(
        &mut out,
        cat,
        ("legal_basis", "consent.legal-basis", "text"),
        &draft.legal_basis,
        Some("tracing.form.bid-hint"),
        false,
    );
    checkbox(
        &mut out,
        "child_views",
        "child_views",
        "yes",
        t("consent.child-views"),
        draft.child_views,
    );
    checkbox(
        &mut out,
        "covers_tracing",
        "covers_tracing",
        "yes",
        t("tracing.form.covers-tracing"),
        draft.covers_tracing,
    );
    let _ = writeln!(
        out,
        "<fieldset><legend>{}</legend>",
        esc(t("consent.categories"))
    );
    for c in CATEGORIES {
        let name = category_name(c);
        checkbox(
            &mut out,
            &format!("category-{name}"),
            "category",
            &name,
            t(&format!("category.{name}")),
            draft.categories.contains(&name),
        );
    }
    let _ = writeln!(
        out,
        "<p><small>{}</small></p></fieldset>",
        esc(t("tracing.form.categories-hint"))
    );
    input(
        &mut out,
        cat,
        ("recipients", "consent.recipients", "text"),
        &draft.recipients,
        Some("tracing.form.recipients-hint"),
        false,
    );
    input(
        &mut out,
        cat,
        ("consent_until", "tracing.form.consent-until", "date"),
        &draft.consent_until,
        None,
        true,
    );
    out.push_str("</fieldset>\n");
    let _ = writeln!(
        out,
        "<p><button type=\"submit\">{}</button></p>\n</form>",
        esc(t("tracing.form.submit"))
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posted_form_becomes_the_use_cases_request_and_keeps_what_was_typed() {
        let posted = Form::parse(
            b"csrf=t&kind=request&case_reference=MW-1&given_names=Aminah&family_names=Yussuf%2C+Hassan\
              &sex=female&birth_date=2014-03-02&place_of_separation=Mwami&relative1_relationship=mother\
              &relative1_names=Halima+Hassan&consent_id=C-1&given_by=parent&covers_tracing=yes\
              &category=identity&category=family&recipients=ZM-DSW&consent_until=2027-01-31",
        );
        let draft = Draft::of(&posted);
        let req = draft.request().expect("a request");
        assert_eq!(req.kind, pb::TracingCaseKind::Request as i32);
        let case = req.case.expect("case");
        let identity = case.identity.expect("identity");
        assert_eq!(identity.family_names, ["Yussuf", "Hassan"]);
        assert_eq!(identity.sex, pb::Sex::Female as i32);
        assert_eq!(
            case.family.expect("family").members[0].names,
            ["Halima Hassan"]
        );
        let consent = req.consent.expect("consent");
        assert_eq!(consent.given_by, pb::ConsentGiver::Parent as i32);
        assert_eq!(consent.purposes, [pb::Purpose::FamilyTracing as i32]);
        assert_eq!(
            consent.categories,
            [
                pb::DataCategory::Identity as i32,
                pb::DataCategory::Family as i32
            ]
        );
        // The consent holds through its last day (UTC).
        assert_eq!(consent.expires_at_ms, 1_801_440_000_000);
        let html = form(super::super::super::catalogue::english(), &draft, "t");
        for typed in [
            "value=\"Yussuf, Hassan\"",
            "value=\"Halima Hassan\"",
            "value=\"2027-01-31\"",
        ] {
            assert!(html.contains(typed), "{typed}");
        }
        assert!(html.contains("value=\"request\" required checked"));
        assert!(html.contains("value=\"family\" checked"));
        assert!(!html.contains("value=\"location\" checked"));
    }

    #[test]
    fn a_date_or_year_not_of_its_form_is_refused() {
        let mut draft = Draft {
            consent_until: "31/01/2027".into(),
            ..Draft::default()
        };
        assert_eq!(draft.request().unwrap_err().refusal_reason(), "bad-date");
        draft.consent_until = "2027-01-31".into();
        draft.estimated_birth_year = "about 2014".into();
        assert_eq!(draft.request().unwrap_err().refusal_reason(), "bad-year");
    }
}
