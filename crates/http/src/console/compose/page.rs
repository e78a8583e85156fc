//! The referral form's HTML: every field labelled, the categories and the consent's choices
//! in fieldsets, filled in with what was typed; and the consent pre-check's box.

use std::fmt::Write;

use kinbridge_proto::v1 as pb;
use kinbridge_service::local::sending::ConsentCheck;

use super::super::catalogue::Catalogue;
use super::super::form::Form;
use super::super::html::{self, esc};
use super::request::{KINDS, categories, givers, migratory, purposes, sexes, urgencies};

/// What the form shows in its fields: what was typed (on a re-render), or nothing.
pub(super) struct Filled<'a>(pub(super) Option<&'a Form>);

impl Filled<'_> {
    fn value(&self, name: &str) -> &str {
        self.0.and_then(|f| f.get(name)).unwrap_or_default()
    }

    fn has(&self, name: &str, value: &str) -> bool {
        self.0.is_some_and(|f| f.all(name).any(|v| v == value))
    }
}

/// The HTML builders of the form's fields.
struct Fields<'a> {
    cat: &'static Catalogue,
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
pub(super) struct FormView<'a> {
    /// The nodes the form offers.
    pub(super) peers: &'a [String],
    /// What was typed.
    pub(super) filled: &'a Filled<'a>,
    /// The CSRF token.
    pub(super) token: &'a str,
    /// The idempotency key.
    pub(super) key: &'a str,
}

/// The form, filled in with what was typed.
pub(super) fn form_html(cat: &'static Catalogue, view: &FormView<'_>) -> String {
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
fn kind_group(cat: &'static Catalogue, checked: &str) -> String {
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
fn category_word(cat: &Catalogue, c: pb::DataCategory) -> &'static str {
    cat.text(&html::enum_key(
        "category",
        "DATA_CATEGORY_",
        c.as_str_name(),
    ))
}

/// The pre-check's box: that the consent covers everything, or each gap.
pub(super) fn check_html(
    cat: &Catalogue,
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
