//! The console's views: the HTML of each page from the messages the use cases answered.
//! They decide nothing about who may see what (the use cases did); they render what they are
//! given, the referral by data category, and no child's data in any link.

use std::fmt::Write;

use kinbridge_core::workflow::successors;
use kinbridge_proto::v1 as pb;
use kinbridge_service::identity::LocalClient;

use super::Section;
use super::catalogue::Catalogue;
use super::html::{enum_key, esc, facts, list, when};

/// The home page's body: who the caller is, and where to go.
pub fn home(cat: &Catalogue, node: &str, client: &LocalClient, sections: &[&Section]) -> String {
    let unit = client
        .unit
        .as_ref()
        .map_or_else(|| cat.text("home.no-unit").to_owned(), |u| u.to_string());
    let mut out = format!("<p>{}</p>\n", esc(cat.text("home.intro")));
    out.push_str(&facts(&[
        (cat.text("home.node"), esc(node)),
        (cat.text("home.client"), esc(&client.name)),
        (
            cat.text("home.role"),
            esc(cat.text(&format!("role.{}", client.role.as_str()))),
        ),
        (cat.text("home.unit"), esc(&unit)),
    ]));
    if !kinbridge_core::firewall::local_client_may(
        kinbridge_core::firewall::LocalAccess::Case,
        &client.tags,
    ) {
        out.push_str(&format!(
            "<p class=\"notice\">{}</p>\n",
            esc(cat.text("home.enforcement"))
        ));
    }
    out.push_str("<ul class=\"sections\">\n");
    for section in sections {
        let _ = writeln!(
            out,
            "<li><a class=\"button\" href=\"{}\">{}</a></li>",
            section.path,
            esc(cat.text(section.key))
        );
    }
    out.push_str("</ul>\n");
    out
}

/// The inbox page's body: one row per item, a link to each, and the next page's link.
pub fn inbox(cat: &Catalogue, items: &[pb::InboxItem], next: Option<u64>, first: bool) -> String {
    if items.is_empty() {
        let mut out = format!("<p>{}</p>\n", esc(cat.text("inbox.empty")));
        if !first {
            let _ = writeln!(
                out,
                "<p><a href=\"/console/inbox\">{}</a></p>",
                esc(cat.text("inbox.first"))
            );
        }
        return out;
    }
    let mut out = format!(
        "<table>\n<thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>\n<tbody>\n",
        esc(cat.text("inbox.sequence")),
        esc(cat.text("inbox.received")),
        esc(cat.text("inbox.sender")),
        esc(cat.text("inbox.kind")),
        esc(cat.text("inbox.purpose")),
        esc(cat.text("inbox.flags")),
    );
    for item in items {
        let mut flags = Vec::new();
        if item.acknowledged {
            flags.push(cat.text("inbox.acknowledged").to_owned());
        }
        if item.purged {
            flags.push(cat.text("inbox.purged").to_owned());
        }
        let _ = writeln!(
            out,
            "<tr><td><a href=\"/console/inbox/{seq}\">{seq}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&when(cat, item.received_at_ms)),
            esc(&item.sender),
            esc(kind(cat, item.kind)),
            esc(purpose(cat, item.purpose)),
            list(&flags),
            seq = item.sequence,
        );
    }
    out.push_str("</tbody>\n</table>\n<p>");
    if !first {
        let _ = write!(
            out,
            "<a href=\"/console/inbox\">{}</a> ",
            esc(cat.text("inbox.first"))
        );
    }
    if let Some(after) = next {
        let _ = write!(
            out,
            "<a href=\"/console/inbox?after={after}\">{}</a>",
            esc(cat.text("inbox.next"))
        );
    }
    out.push_str("</p>\n");
    out
}

/// One inbox item's body: its facts, its consent, its referral by category (or that it was
/// purged), its workflow history and the forms to move it on (with the CSRF `token`).
pub fn item(
    cat: &Catalogue,
    item: &pb::InboxItem,
    status: Option<&pb::GetReferralStatusResponse>,
    token: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<p><a href=\"/console/inbox\">{}</a></p>",
        esc(cat.text("item.back"))
    );
    out.push_str(&facts(&[
        (cat.text("item.sender"), esc(&item.sender)),
        (cat.text("item.kind"), esc(kind(cat, item.kind))),
        (cat.text("item.purpose"), esc(purpose(cat, item.purpose))),
        (
            cat.text("item.created"),
            esc(&when(cat, item.created_at_ms)),
        ),
        (
            cat.text("item.received"),
            esc(&when(cat, item.received_at_ms)),
        ),
        (cat.text("item.unit"), esc(&item.unit)),
        (cat.text("item.custody"), list(&item.custody)),
    ]));
    if let Some(consent) = &item.consent {
        let _ = writeln!(out, "<h2>{}</h2>", esc(cat.text("item.consent")));
        out.push_str(&consent_facts(cat, consent));
    }
    let _ = writeln!(out, "<h2>{}</h2>", esc(cat.text("item.referral")));
    if item.purged {
        let _ = writeln!(
            out,
            "<p class=\"purged\">{}</p>",
            esc(cat.text("item.purged"))
        );
    } else if let Some(referral) = &item.referral {
        out.push_str(&referral_facts(cat, referral));
    } else {
        let _ = writeln!(out, "<p>{}</p>", esc(cat.text("item.no-referral")));
    }
    if let Some(status) = status {
        out.push_str(&history(cat, status, "sent.no-history"));
        out.push_str(&actions(cat, item.sequence, status.state, token));
    }
    out
}

fn consent_facts(cat: &Catalogue, c: &pb::ConsentScope) -> String {
    let yes_no = |b: bool| esc(cat.text(if b { "yes" } else { "no" }));
    let giver = pb::ConsentGiver::try_from(c.given_by)
        .map(|g| cat.text(&enum_key("giver", "CONSENT_GIVER_", g.as_str_name())))
        .unwrap_or_default();
    let purposes: Vec<String> = c
        .purposes
        .iter()
        .map(|p| purpose(cat, *p).to_owned())
        .collect();
    let categories: Vec<String> = c
        .categories
        .iter()
        .map(|k| category(cat, *k).to_owned())
        .collect();
    facts(&[
        (cat.text("consent.id"), esc(&c.consent_id)),
        (cat.text("consent.given-by"), esc(giver)),
        (
            cat.text("consent.determining-authority"),
            esc(&c.determining_authority),
        ),
        (cat.text("consent.legal-basis"), esc(&c.legal_basis)),
        (
            cat.text("consent.child-views"),
            yes_no(c.child_views_recorded),
        ),
        (cat.text("consent.purposes"), list(&purposes)),
        (cat.text("consent.categories"), list(&categories)),
        (cat.text("consent.recipients"), list(&c.recipients)),
        (cat.text("consent.onward"), list(&c.onward_recipients)),
        (
            cat.text("consent.expires"),
            esc(&when(cat, c.expires_at_ms)),
        ),
    ])
}

/// The referral, one section per data category present (the use case already left out what
/// the consent does not cover).
fn referral_facts(cat: &Catalogue, r: &pb::ReferralPayload) -> String {
    let t = |k: &str| cat.text(k);
    let number = |n: u32| if n == 0 { String::new() } else { n.to_string() };
    let mut out = facts(&[
        (t("item.case-reference"), esc(&r.case_reference)),
        (t("item.services"), list(&r.requested_services)),
    ]);
    let mut section = |key: pb::DataCategory, rows: &[(&str, String)]| {
        if rows.iter().any(|(_, v)| !v.is_empty()) {
            let _ = writeln!(out, "<h3>{}</h3>", esc(category(cat, key as i32)));
            out.push_str(&facts(rows));
        }
    };
    if let Some(i) = &r.identity {
        let sex = pb::Sex::try_from(i.sex)
            .ok()
            .filter(|s| *s != pb::Sex::Unspecified)
            .map(|s| cat.text(&enum_key("sex", "SEX_", s.as_str_name())))
            .unwrap_or_default();
        section(
            pb::DataCategory::Identity,
            &[
                (t("field.given-names"), list(&i.given_names)),
                (t("field.family-names"), list(&i.family_names)),
                (t("field.other-names"), list(&i.other_names)),
                (t("field.sex"), esc(sex)),
                (t("field.birth-date"), esc(&i.birth_date)),
                (
                    t("field.estimated-birth-year"),
                    number(i.estimated_birth_year),
                ),
                (t("field.languages"), list(&i.languages)),
            ],
        );
    }
    if let Some(c) = &r.contact {
        section(
            pb::DataCategory::Contact,
            &[
                (t("field.phone"), esc(&c.phone)),
                (t("field.address"), esc(&c.address)),
                (t("field.caregiver-name"), esc(&c.caregiver_name)),
                (t("field.caregiver-phone"), esc(&c.caregiver_phone)),
            ],
        );
    }
    if let Some(f) = &r.family {
        let members: Vec<String> = f
            .members
            .iter()
            .map(|m| {
                let known = t(if m.whereabouts_known { "yes" } else { "no" });
                format!(
                    "{} — {} ({}: {}; {})",
                    m.relationship,
                    m.names.join(", "),
                    t("field.whereabouts-known"),
                    known,
                    m.last_known_location
                )
            })
            .collect();
        section(
            pb::DataCategory::Family,
            &[(t("field.members"), list(&members))],
        );
    }
    if let Some(l) = &r.location {
        section(
            pb::DataCategory::Location,
            &[
                (t("field.current-location"), esc(&l.current_location)),
                (t("field.place-of-separation"), esc(&l.place_of_separation)),
                (t("field.date-of-separation"), esc(&l.date_of_separation)),
            ],
        );
    }
    if let Some(p) = &r.protection_concerns {
        let migratory = pb::MigratoryStatus::try_from(p.migratory_status)
            .ok()
            .filter(|s| *s != pb::MigratoryStatus::Unspecified)
            .map(|s| cat.text(&enum_key("migratory", "MIGRATORY_STATUS_", s.as_str_name())))
            .unwrap_or_default();
        let urgency = pb::Urgency::try_from(p.urgency)
            .ok()
            .filter(|u| *u != pb::Urgency::Unspecified)
            .map(|u| cat.text(&enum_key("urgency", "URGENCY_", u.as_str_name())))
            .unwrap_or_default();
        section(
            pb::DataCategory::ProtectionConcerns,
            &[
                (t("field.migratory-status"), esc(migratory)),
                (t("field.urgency"), esc(urgency)),
                (t("field.concerns"), list(&p.concerns)),
                (t("field.narrative"), esc(&p.narrative)),
            ],
        );
    }
    if let Some(h) = &r.health {
        section(
            pb::DataCategory::Health,
            &[
                (t("field.conditions"), list(&h.conditions)),
                (t("field.disabilities"), list(&h.disabilities)),
                (t("field.needs"), esc(&h.needs)),
            ],
        );
    }
    if let Some(e) = &r.education {
        section(
            pb::DataCategory::Education,
            &[
                (t("field.level"), esc(&e.level)),
                (t("field.last-school"), esc(&e.last_school)),
                (t("field.needs"), esc(&e.needs)),
            ],
        );
    }
    if let Some(l) = &r.legal_status {
        section(
            pb::DataCategory::LegalStatus,
            &[
                (t("field.nationality"), esc(&l.nationality)),
                (t("field.documentation"), esc(&l.documentation)),
                (t("field.status"), esc(&l.status)),
            ],
        );
    }
    out
}

/// Where a referral stands at the receiving side, change by change (`empty`: the catalogue key
/// said when nothing has changed there yet). The inbox item and the sent item both show it.
pub(super) fn history(
    cat: &Catalogue,
    status: &pb::GetReferralStatusResponse,
    empty: &str,
) -> String {
    let mut out = format!(
        "<h2>{}</h2>\n<p>{}</p>\n",
        esc(cat.text("history.title")),
        esc(&cat.fill("history.current", &[("state", state(cat, status.state))])),
    );
    if status.history.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(cat.text(empty)));
        return out;
    }
    let _ = writeln!(
        out,
        "<table>\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\n<tbody>",
        esc(cat.text("history.state")),
        esc(cat.text("history.code")),
        esc(cat.text("history.at")),
        esc(cat.text("history.by")),
    );
    for change in &status.history {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(state(cat, change.state)),
            esc(&change.code),
            esc(&when(cat, change.at_ms)),
            esc(&change.by)
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// The forms of the steps the referral can take from `current` (the service checks again).
fn actions(cat: &Catalogue, sequence: u64, current: i32, token: &str) -> String {
    let current = pb::ReferralState::try_from(current).unwrap_or(pb::ReferralState::Unspecified);
    let mut out = format!("<h2>{}</h2>\n", esc(cat.text("action.title")));
    let next = successors(current);
    if next.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(cat.text("action.none")));
        return out;
    }
    for to in next {
        let (action, code_label) = match to {
            pb::ReferralState::Accepted => ("accept", None),
            pb::ReferralState::Declined => ("decline", Some("action.reason")),
            pb::ReferralState::InProgress => ("start", None),
            pb::ReferralState::Closed => ("close", Some("action.outcome")),
            _ => continue,
        };
        let _ = write!(
            out,
            "<form class=\"action\" method=\"post\" action=\"/console/inbox/{sequence}/status\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">",
            esc(token)
        );
        if let Some(label) = code_label {
            let _ = write!(
                out,
                "<label>{} <input name=\"code\" required maxlength=\"64\" pattern=\"[a-z0-9-]+\" autocomplete=\"off\"></label> \
                 <small>{}</small> ",
                esc(cat.text(label)),
                esc(cat.text("action.code-hint"))
            );
        }
        let _ = writeln!(
            out,
            "<button type=\"submit\">{}</button></form>",
            esc(cat.text(&format!("action.{action}")))
        );
    }
    out
}

/// The word for a message kind.
fn kind(cat: &Catalogue, value: i32) -> &'static str {
    let name = pb::MessageKind::try_from(value).unwrap_or(pb::MessageKind::Unspecified);
    cat.text(&enum_key("kind", "MESSAGE_KIND_", name.as_str_name()))
}

/// The word for a purpose.
fn purpose(cat: &Catalogue, value: i32) -> &'static str {
    let name = pb::Purpose::try_from(value).unwrap_or(pb::Purpose::Unspecified);
    cat.text(&enum_key("purpose", "PURPOSE_", name.as_str_name()))
}

/// The word for a data category.
fn category(cat: &Catalogue, value: i32) -> &'static str {
    let name = pb::DataCategory::try_from(value).unwrap_or(pb::DataCategory::Unspecified);
    cat.text(&enum_key("category", "DATA_CATEGORY_", name.as_str_name()))
}

/// The word for a referral state.
fn state(cat: &Catalogue, value: i32) -> &'static str {
    let name = pb::ReferralState::try_from(value).unwrap_or(pb::ReferralState::Unspecified);
    cat.text(&enum_key("state", "REFERRAL_STATE_", name.as_str_name()))
}
