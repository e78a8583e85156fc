//! The new referral or case transfer form, with its consent pre-check, and consent withdrawal.
//!
//! `GET /console/referrals/new` renders the form (the referral by data category, the consent
//! scope, a hidden idempotency key drawn at random). `POST /console/referrals/new` with
//! `action=check` asks the service's consent pre-check (`LocalCases::check_consent`) and shows
//! every gap, sending nothing; with `action=send` it submits the referral under the form's
//! idempotency key and answers `303` to the sent item (or the form again, filled in, with the
//! refusal). `POST /console/sent/{message_id}/withdraw` withdraws the consent named in its body.
//! Nothing typed goes into a URL.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kinbridge_core::firewall::{LocalAccess, local_client_may};
use kinbridge_proto::v1 as pb;
use kinbridge_service::audit::serving_method;
use kinbridge_service::local::actor_of;
use kinbridge_service::local::sending::ConsentCheck;
use kinbridge_service::{ErrorKind, ServiceError};
use ring::rand::{SecureRandom, SystemRandom};

use super::form::Form;
use super::{Console, Page, html};
use crate::Caller;
use crate::problem::status_of;
use html::esc;

/// Largest body of the referral form (it carries free text in every category).
pub const MAX_COMPOSE_FORM_BYTES: usize = 64 * 1024;

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/referrals/new", get(new_form).post(post_form))
        .route("/console/sent/{message_id}/withdraw", post(withdraw))
}

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

fn purposes() -> Vec<(i32, String)> {
    values::<pb::Purpose>("PURPOSE_", |e| e.as_str_name())
}
fn categories() -> Vec<(i32, String)> {
    values::<pb::DataCategory>("DATA_CATEGORY_", |e| e.as_str_name())
}
fn givers() -> Vec<(i32, String)> {
    values::<pb::ConsentGiver>("CONSENT_GIVER_", |e| e.as_str_name())
}
fn sexes() -> Vec<(i32, String)> {
    values::<pb::Sex>("SEX_", |e| e.as_str_name())
}
fn migratory() -> Vec<(i32, String)> {
    values::<pb::MigratoryStatus>("MIGRATORY_STATUS_", |e| e.as_str_name())
}
fn urgencies() -> Vec<(i32, String)> {
    values::<pb::Urgency>("URGENCY_", |e| e.as_str_name())
}

/// The two kinds the form sends, as (form value, catalogue key, kind).
const KINDS: [(&str, &str, pb::MessageKind); 2] = [
    ("referral", "kind.referral", pb::MessageKind::Referral),
    (
        "case-transfer",
        "kind.case-transfer",
        pb::MessageKind::CaseTransfer,
    ),
];

/// What the form shows in its fields: what was typed (on a re-render), or nothing.
struct Filled<'a>(Option<&'a Form>);

impl Filled<'_> {
    fn value(&self, name: &str) -> &str {
        self.0.and_then(|f| f.get(name)).unwrap_or_default()
    }

    fn has(&self, name: &str, value: &str) -> bool {
        self.0.is_some_and(|f| f.all(name).any(|v| v == value))
    }
}

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
fn request_of(form: &Form) -> Result<pb::SubmitReferralRequest, ServiceError> {
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

/// A fresh idempotency key for a rendered form: 16 random bytes in hex (empty if the system
/// gave no randomness: the form is then sent without one).
fn fresh_key() -> String {
    let mut bytes = [0u8; 16];
    match SystemRandom::new().fill(&mut bytes) {
        Ok(()) => hex::encode(bytes),
        Err(_) => String::new(),
    }
}

/// The HTML builders of the form's fields.
struct Fields<'a> {
    cat: &'static super::catalogue::Catalogue,
    filled: &'a Filled<'a>,
    out: String,
}

impl Fields<'_> {
    fn text(&mut self, name: &str, label: &str, input_type: &str, hint: Option<&str>) {
        let hint_html = hint.map_or_else(String::new, |h| {
            format!(
                " <small id=\"{name}-hint\">{}</small>",
                esc(self.cat.text(h))
            )
        });
        let described = if hint.is_some() {
            format!(" aria-describedby=\"{name}-hint\"")
        } else {
            String::new()
        };
        let _ = writeln!(
            self.out,
            "<p><label for=\"{name}\">{}</label> <input type=\"{input_type}\" id=\"{name}\" name=\"{name}\" value=\"{}\" autocomplete=\"off\"{described}>{hint_html}</p>",
            esc(self.cat.text(label)),
            esc(self.filled.value(name)),
        );
    }

    fn area(&mut self, name: &str, label: &str) {
        let _ = writeln!(
            self.out,
            "<p><label for=\"{name}\">{}</label><br><textarea id=\"{name}\" name=\"{name}\" rows=\"4\" cols=\"60\">{}</textarea></p>",
            esc(self.cat.text(label)),
            esc(self.filled.value(name)),
        );
    }

    /// A select of `options` (form value, catalogue key), with an empty first choice.
    fn select(&mut self, name: &str, label: &str, options: &[(String, String)]) {
        let current = self.filled.value(name);
        let _ = write!(
            self.out,
            "<p><label for=\"{name}\">{}</label> <select id=\"{name}\" name=\"{name}\"><option value=\"\">—</option>",
            esc(self.cat.text(label))
        );
        for (value, key) in options {
            let selected = if value == current { " selected" } else { "" };
            let _ = write!(
                self.out,
                "<option value=\"{}\"{selected}>{}</option>",
                esc(value),
                esc(self.cat.lookup(key).unwrap_or(key))
            );
        }
        self.out.push_str("</select></p>\n");
    }

    /// A group of checkboxes or radios (`input_type`) named `name`, of `options` (form value,
    /// catalogue key or plain text).
    fn group(&mut self, input_type: &str, name: &str, legend: &str, options: &[(String, String)]) {
        let _ = write!(
            self.out,
            "<fieldset><legend>{}</legend>",
            esc(self.cat.text(legend))
        );
        for (value, key) in options {
            let id = format!("{name}-{}", value.to_ascii_lowercase());
            let checked = if self.filled.has(name, value) {
                " checked"
            } else {
                ""
            };
            let _ = write!(
                self.out,
                "<span class=\"choice\"><input type=\"{input_type}\" id=\"{}\" name=\"{name}\" value=\"{}\"{checked}> <label for=\"{}\">{}</label></span> ",
                esc(&id),
                esc(value),
                esc(&id),
                esc(self.cat.lookup(key).unwrap_or(key))
            );
        }
        self.out.push_str("</fieldset>\n");
    }

    fn checkbox(&mut self, name: &str, label: &str) {
        let checked = if self.filled.has(name, "yes") {
            " checked"
        } else {
            ""
        };
        let _ = writeln!(
            self.out,
            "<p><input type=\"checkbox\" id=\"{name}\" name=\"{name}\" value=\"yes\"{checked}> <label for=\"{name}\">{}</label></p>",
            esc(self.cat.text(label))
        );
    }

    /// Opens a fieldset for a data category.
    fn category(&mut self, category: &str) {
        let _ = writeln!(
            self.out,
            "<fieldset class=\"category\"><legend>{}</legend>",
            esc(self.cat.text(&format!("category.{category}")))
        );
    }

    fn end(&mut self) {
        self.out.push_str("</fieldset>\n");
    }
}

fn keyed(prefix: &str, known: &[(i32, String)]) -> Vec<(String, String)> {
    known
        .iter()
        .map(|(_, v)| (v.clone(), format!("{prefix}.{v}")))
        .collect()
}

/// What the form body shows: the pre-check's answer (if any), then the form itself.
struct FormView<'a> {
    peers: &'a [String],
    filled: &'a Filled<'a>,
    token: &'a str,
    key: &'a str,
}

/// The form, filled in with what was typed.
fn form_html(cat: &'static super::catalogue::Catalogue, view: &FormView<'_>) -> String {
    let mut f = Fields {
        cat,
        filled: view.filled,
        out: String::new(),
    };
    let _ = writeln!(
        f.out,
        "<p>{}</p>\n<form class=\"compose\" method=\"post\" action=\"/console/referrals/new\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"idempotency_key\" value=\"{}\">",
        esc(cat.text("compose.intro")),
        esc(view.token),
        esc(view.key)
    );
    let peers: Vec<(String, String)> = view.peers.iter().map(|p| (p.clone(), p.clone())).collect();
    let _ = writeln!(f.out, "<h2>{}</h2>", esc(cat.text("compose.where")));
    f.select("recipient", "compose.recipient", &peers);
    f.text(
        "recipient_unit",
        "compose.recipient-unit",
        "text",
        Some("compose.recipient-unit-hint"),
    );
    let kinds: Vec<(String, String)> = KINDS
        .iter()
        .map(|(v, k, _)| ((*v).to_owned(), (*k).to_owned()))
        .collect();
    if view.filled.0.is_none() {
        // A new form is a referral unless the user says otherwise.
        f.out.push_str(&kind_group(cat, "referral"));
    } else {
        f.group("radio", "kind", "compose.kind", &kinds);
    }
    f.select("purpose", "compose.purpose", &keyed("purpose", &purposes()));
    f.text("case_reference", "item.case-reference", "text", None);
    f.text(
        "requested_services",
        "item.services",
        "text",
        Some("compose.list-hint"),
    );

    let _ = writeln!(
        f.out,
        "<h2>{}</h2>\n<p>{}</p>",
        esc(cat.text("compose.child")),
        esc(cat.text("compose.child-hint"))
    );
    f.category("identity");
    f.text(
        "given_names",
        "field.given-names",
        "text",
        Some("compose.list-hint"),
    );
    f.text("family_names", "field.family-names", "text", None);
    f.text("other_names", "field.other-names", "text", None);
    f.select("sex", "field.sex", &keyed("sex", &sexes()));
    f.text("birth_date", "field.birth-date", "date", None);
    f.text(
        "estimated_birth_year",
        "field.estimated-birth-year",
        "number",
        None,
    );
    f.text("languages", "field.languages", "text", None);
    f.end();
    f.category("contact");
    f.text("phone", "field.phone", "tel", None);
    f.text("address", "field.address", "text", None);
    f.text("caregiver_name", "field.caregiver-name", "text", None);
    f.text("caregiver_phone", "field.caregiver-phone", "tel", None);
    f.end();
    f.category("family");
    f.text("member_relationship", "compose.relationship", "text", None);
    f.text("member_names", "compose.member-names", "text", None);
    f.checkbox("member_whereabouts_known", "field.whereabouts-known");
    f.text(
        "member_last_known_location",
        "compose.last-known-location",
        "text",
        None,
    );
    f.end();
    f.category("location");
    f.text("current_location", "field.current-location", "text", None);
    f.text(
        "place_of_separation",
        "field.place-of-separation",
        "text",
        None,
    );
    f.text(
        "date_of_separation",
        "field.date-of-separation",
        "date",
        None,
    );
    f.end();
    f.category("protection-concerns");
    f.select(
        "migratory_status",
        "field.migratory-status",
        &keyed("migratory", &migratory()),
    );
    f.select("urgency", "field.urgency", &keyed("urgency", &urgencies()));
    f.text(
        "concerns",
        "field.concerns",
        "text",
        Some("compose.list-hint"),
    );
    f.area("narrative", "field.narrative");
    f.end();
    f.category("health");
    f.text("conditions", "field.conditions", "text", None);
    f.text("disabilities", "field.disabilities", "text", None);
    f.text("health_needs", "field.needs", "text", None);
    f.end();
    f.category("education");
    f.text("education_level", "field.level", "text", None);
    f.text("last_school", "field.last-school", "text", None);
    f.text("education_needs", "field.needs", "text", None);
    f.end();
    f.category("legal-status");
    f.text("nationality", "field.nationality", "text", None);
    f.text("documentation", "field.documentation", "text", None);
    f.text("legal_status", "field.status", "text", None);
    f.end();

    let _ = writeln!(
        f.out,
        "<h2>{}</h2>\n<p>{}</p>",
        esc(cat.text("compose.consent")),
        esc(cat.text("compose.consent-hint"))
    );
    f.text("consent_id", "consent.id", "text", None);
    f.group(
        "radio",
        "given_by",
        "consent.given-by",
        &keyed("giver", &givers()),
    );
    f.text(
        "determining_authority",
        "consent.determining-authority",
        "text",
        Some("compose.bid-hint"),
    );
    f.text("legal_basis", "consent.legal-basis", "text", None);
    f.checkbox("child_views_recorded", "compose.child-views");
    f.group(
        "checkbox",
        "consent_purpose",
        "consent.purposes",
        &keyed("purpose", &purposes()),
    );
    f.group(
        "checkbox",
        "consent_category",
        "consent.categories",
        &keyed("category", &categories()),
    );
    f.group(
        "checkbox",
        "consent_recipient",
        "consent.recipients",
        &peers,
    );
    f.group("checkbox", "consent_onward", "consent.onward", &peers);
    f.text(
        "consent_expires",
        "compose.expires",
        "date",
        Some("compose.expires-hint"),
    );
    let _ = writeln!(
        f.out,
        "<p class=\"buttons\"><button type=\"submit\" name=\"action\" value=\"check\">{}</button> \
         <button type=\"submit\" name=\"action\" value=\"send\">{}</button></p>\n</form>",
        esc(cat.text("compose.check")),
        esc(cat.text("compose.send"))
    );
    f.out
}

/// The kind radios of a new form, `checked` chosen.
fn kind_group(cat: &'static super::catalogue::Catalogue, checked: &str) -> String {
    let mut out = format!(
        "<fieldset><legend>{}</legend>",
        esc(cat.text("compose.kind"))
    );
    for (value, key, _) in KINDS {
        let on = if value == checked { " checked" } else { "" };
        let _ = write!(
            out,
            "<span class=\"choice\"><input type=\"radio\" id=\"kind-{value}\" name=\"kind\" value=\"{value}\"{on}> <label for=\"kind-{value}\">{}</label></span> ",
            esc(cat.text(key))
        );
    }
    out.push_str("</fieldset>\n");
    out
}

/// The word for data category `c`.
fn category_word(cat: &super::catalogue::Catalogue, c: pb::DataCategory) -> &'static str {
    cat.text(&html::enum_key(
        "category",
        "DATA_CATEGORY_",
        c.as_str_name(),
    ))
}

/// The pre-check's box: that the consent covers everything, or each gap.
fn check_html(
    cat: &super::catalogue::Catalogue,
    check: &ConsentCheck,
    recipient: &str,
    purpose: i32,
) -> String {
    let filled: Vec<String> = check
        .categories
        .iter()
        .map(|c| category_word(cat, *c).to_owned())
        .collect();
    let purpose_word = pb::Purpose::try_from(purpose)
        .map(|p| cat.text(&html::enum_key("purpose", "PURPOSE_", p.as_str_name())))
        .unwrap_or_default();
    let mut out = String::new();
    if check.covered() {
        let _ = write!(
            out,
            "<section class=\"notice check\" role=\"status\" aria-labelledby=\"check-title\"><h2 id=\"check-title\">{}</h2><p>{}</p>",
            esc(cat.text("compose.covered-title")),
            esc(&cat.fill(
                "compose.covered",
                &[
                    ("recipient", recipient),
                    ("purpose", purpose_word),
                    ("categories", &filled.join(", ")),
                ],
            ))
        );
        out.push_str("</section>\n");
        return out;
    }
    let _ = write!(
        out,
        "<section class=\"refusal check\" role=\"alert\" aria-labelledby=\"check-title\"><h2 id=\"check-title\">{}</h2><p>{}</p><ul>",
        esc(cat.text("compose.gaps-title")),
        esc(cat.text("compose.gaps-intro"))
    );
    for c in &check.uncovered_categories {
        let _ = write!(
            out,
            "<li class=\"gap-category\">{} <code>category-not-covered</code></li>",
            esc(&cat.fill(
                "compose.gap-category",
                &[("category", category_word(cat, *c))]
            ))
        );
    }
    if !check.recipient_covered {
        let _ = write!(
            out,
            "<li class=\"gap-recipient\">{} <code>recipient-not-permitted</code></li>",
            esc(&cat.fill("compose.gap-recipient", &[("recipient", recipient)]))
        );
    }
    if !check.purpose_covered {
        let _ = write!(
            out,
            "<li class=\"gap-purpose\">{} <code>purpose-not-covered</code></li>",
            esc(&cat.fill("compose.gap-purpose", &[("purpose", purpose_word)]))
        );
    }
    for gap in check.gaps.iter().filter(|g| {
        !matches!(
            g.code,
            "category-not-covered" | "recipient-not-permitted" | "purpose-not-covered"
        )
    }) {
        let said = cat
            .lookup(&format!("compose.gap.{}", gap.code))
            .map_or_else(|| esc(&gap.message), esc);
        let _ = write!(out, "<li>{said} <code>{}</code></li>", esc(gap.code));
    }
    out.push_str("</ul></section>\n");
    out
}

/// `GET /console/referrals/new`: the empty form.
async fn new_form(
    State(console): State<Arc<Console>>,
    Extension(Caller(auth)): Extension<Caller>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let page = Page::of(&uri, query.as_deref(), &headers, auth.as_ref());
    let method = "GET /console/referrals/new";
    serving_method(method.to_owned(), async move {
        if let Err(error) = console
            .admit(LocalAccess::Submit, method, auth.as_ref())
            .await
        {
            return page.refused(&error);
        }
        let peers = match console.local.addressable_peers(auth.as_ref()).await {
            Ok(peers) => peers,
            Err(error) => return page.refused(&error),
        };
        let mut body = String::new();
        if page.query.get("done").map(String::as_str) == Some("sent") {
            let id = page
                .query
                .get("id")
                .filter(|id| kinbridge_core::MessageId::new(id).is_ok())
                .cloned()
                .unwrap_or_default();
            body.push_str(&html::notice(
                &page.cat.fill("compose.sent-no-read", &[("id", &id)]),
            ));
        }
        let filled = Filled(None);
        let view = FormView {
            peers: &peers,
            filled: &filled,
            token: &console.token(auth.as_ref()),
            key: &fresh_key(),
        };
        body.push_str(&form_html(page.cat, &view));
        page.answer(StatusCode::OK, page.cat.text("compose.title"), &body)
    })
    .await
}

/// A `303` to `to`.
fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(to) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, to);
    }
    response
}

/// Reads a form body of at most [`MAX_COMPOSE_FORM_BYTES`] from the console's own origin
/// carrying `actor`'s CSRF token.
async fn compose_form(
    console: &Console,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
    actor: &str,
) -> Result<Form, ServiceError> {
    Console::same_origin(headers, uri)?;
    let bytes = axum::body::to_bytes(body, MAX_COMPOSE_FORM_BYTES)
        .await
        .map_err(|_| {
            ServiceError::invalid(
                "too-large",
                format!("the referral form is at most {MAX_COMPOSE_FORM_BYTES} bytes"),
            )
        })?;
    let form = Form::parse(&bytes);
    console.check_token(actor, form.get("csrf"))?;
    Ok(form)
}

/// `POST /console/referrals/new`: `action=check` shows the consent pre-check, `action=send`
/// submits; either way nothing typed is lost.
async fn post_form(
    State(console): State<Arc<Console>>,
    Extension(Caller(auth)): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let page = Page::of(&uri, None, &headers, auth.as_ref());
    let method = "POST /console/referrals/new";
    serving_method(method.to_owned(), async move {
        if let Err(error) = console
            .admit(LocalAccess::Submit, method, auth.as_ref())
            .await
        {
            return page.refused(&error);
        }
        let actor = actor_of(auth.as_ref());
        let form = match compose_form(&console, &headers, &uri, body, &actor).await {
            Ok(form) => form,
            Err(error) => return page.refused(&console.local.refuse(&actor, error).await),
        };
        let peers = match console.local.addressable_peers(auth.as_ref()).await {
            Ok(peers) => peers,
            Err(error) => return page.refused(&error),
        };
        let filled = Filled(Some(&form));
        let key = form.get("idempotency_key").unwrap_or_default().to_owned();
        let token = console.token(auth.as_ref());
        let view = FormView {
            peers: &peers,
            filled: &filled,
            token: &token,
            key: &key,
        };
        let title = page.cat.text("compose.title");
        let again = |status: StatusCode, before: String| {
            page.answer(
                status,
                title,
                &format!("{before}{}", form_html(page.cat, &view)),
            )
        };
        let refusal = |error: &ServiceError| {
            html::refusal(page.cat, &error.refusal_reason(), error.message())
        };
        let action = form.get("action").unwrap_or_default();
        if action != "check" && action != "send" {
            let error =
                ServiceError::invalid("unknown-action", "the form asks for neither check nor send");
            let error = console.local.refuse(&actor, error).await;
            return again(status_of(error.kind()), refusal(&error));
        }
        let req = match request_of(&form) {
            Ok(req) => req,
            Err(error) => {
                let error = console.local.refuse(&actor, error).await;
                return again(status_of(error.kind()), refusal(&error));
            }
        };
        if action == "check" {
            return match console.local.check_consent(auth.as_ref(), &req).await {
                Ok(check) => again(
                    StatusCode::OK,
                    check_html(page.cat, &check, &req.recipient, req.purpose),
                ),
                Err(error) => again(status_of(error.kind()), refusal(&error)),
            };
        }
        let once = (!key.is_empty()).then_some(key.as_str());
        match console
            .local
            .submit_referral(auth.as_ref(), req, once)
            .await
        {
            Ok(sent) => {
                let reads =
                    matches!(&auth, Some(Ok(c)) if local_client_may(LocalAccess::Case, &c.tags));
                if reads {
                    see_other(&format!("/console/sent/{}?done=sent", sent.message_id))
                } else {
                    see_other(&format!(
                        "/console/referrals/new?done=sent&id={}",
                        sent.message_id
                    ))
                }
            }
            Err(error) => again(status_of(error.kind()), refusal(&error)),
        }
    })
    .await
}

/// The withdrawal form of the consent `consent_id` on the sent item `message_id`'s page.
pub(super) fn withdraw_form(
    cat: &super::catalogue::Catalogue,
    message_id: &str,
    consent_id: &str,
    token: &str,
) -> String {
    format!(
        "<h2>{}</h2>\n<p>{}</p>\n<form class=\"action\" method=\"post\" action=\"/console/sent/{}/withdraw\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"consent_id\" value=\"{}\">\
         <p><input type=\"checkbox\" id=\"confirm\" name=\"confirm\" value=\"yes\" required> <label for=\"confirm\">{}</label></p>\
         <button type=\"submit\">{}</button></form>\n",
        esc(cat.text("compose.withdraw-title")),
        esc(cat.text("compose.withdraw-intro")),
        esc(message_id),
        esc(token),
        esc(consent_id),
        esc(cat.text("compose.withdraw-confirm")),
        esc(cat.text("compose.withdraw-button")),
    )
}

/// `POST /console/sent/{message_id}/withdraw`: withdraws the consent named in the body (with
/// the confirmation ticked); the page lists the notices sent and what was purged here.
async fn withdraw(
    State(console): State<Arc<Console>>,
    Extension(Caller(auth)): Extension<Caller>,
    Path(message_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let page = Page::of(&uri, None, &headers, auth.as_ref());
    let method = "POST /console/sent/{message_id}/withdraw";
    serving_method(method.to_owned(), async move {
        if let Err(error) = console
            .admit(LocalAccess::Case, method, auth.as_ref())
            .await
        {
            return page.refused(&error);
        }
        let actor = actor_of(auth.as_ref());
        let form = match console.form(&headers, &uri, body, &actor).await {
            Ok(form) => form,
            Err(error) => return page.refused(&console.local.refuse(&actor, error).await),
        };
        let result = if form.get("confirm") == Some("yes") {
            let req = pb::WithdrawConsentRequest {
                consent_id: form.get("consent_id").unwrap_or_default().trim().to_owned(),
            };
            console.local.withdraw_consent(auth.as_ref(), req).await
        } else {
            let error = ServiceError::refused(
                ErrorKind::InvalidArgument,
                "confirmation-missing",
                "tick the box confirming the consent is withdrawn before withdrawing it",
            );
            Err(console.local.refuse(&actor, error).await)
        };
        let error = match result {
            Ok(done) => {
                let title = page.cat.text("compose.withdrawn-title");
                return page.answer(
                    StatusCode::OK,
                    title,
                    &withdrawn(page.cat, &done, &message_id),
                );
            }
            Err(error) => error,
        };
        let refusal = html::refusal(page.cat, &error.refusal_reason(), error.message());
        match super::sent::item_body(&console, auth.as_ref(), page.cat, &message_id).await {
            Ok(item) => page.answer(
                status_of(error.kind()),
                page.cat.text("sent.item-title"),
                &format!("{refusal}{item}"),
            ),
            Err(_) => page.refused(&error),
        }
    })
    .await
}

/// The page after a withdrawal: each notice sent (a link to its sent item, where its
/// delivery and receipt show), and how many payloads were purged here.
fn withdrawn(
    cat: &super::catalogue::Catalogue,
    done: &pb::WithdrawConsentResponse,
    message_id: &str,
) -> String {
    let mut out = html::notice(&cat.fill(
        "compose.withdrawn",
        &[("purged", &html::number(cat, u64::from(done.purged_here)))],
    ));
    let _ = writeln!(out, "<h2>{}</h2>", esc(cat.text("compose.notices")));
    if done.notices.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(cat.text("compose.no-notices")));
    } else {
        let _ = writeln!(
            out,
            "<table>\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\n<tbody>",
            esc(cat.text("sent.recipient")),
            esc(cat.text("compose.notice-message"))
        );
        for notice in &done.notices {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><a href=\"/console/sent/{id}\"><code>{id}</code></a></td></tr>",
                esc(&notice.recipient),
                id = esc(&notice.message_id)
            );
        }
        out.push_str("</tbody>\n</table>\n");
        let _ = writeln!(out, "<p>{}</p>", esc(cat.text("compose.notices-follow")));
    }
    let _ = writeln!(
        out,
        "<p><a href=\"/console/sent/{}\">{}</a></p>",
        esc(message_id),
        esc(cat.text("compose.back-to-item"))
    );
    out
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
