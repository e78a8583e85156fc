//! The tracing pages' HTML: the overview (matches by band, the unit's cases) and one match
//! (its band and state, the review forms, and once both sides confirmed, the agreed fields side
//! by side). They render what the use cases answered and decide nothing.

use std::fmt::Write;

use kinbridge_proto::v1 as pb;
use kinbridge_service::tracing_cases::{TracingCaseSummary, TracingMatchView};

use super::super::catalogue::Catalogue;
use super::super::html::{enum_key, esc, facts, list, when};

/// Where a match stands, as its caseworker acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Nobody here has reviewed it yet.
    AwaitingUs,
    /// Confirmed here; the other side has not confirmed yet.
    AwaitingThem,
    /// Both confirmed; the other side's fields are not here yet.
    Confirmed,
    /// Both confirmed and the other side's fields arrived.
    Disclosed,
    /// Ruled out here or by the other side.
    RuledOut,
}

impl Standing {
    /// The standing of `m`, from the state and the confirmations the use case reports.
    pub fn of(m: &pb::TracingMatch) -> Self {
        match pb::TracingMatchState::try_from(m.state) {
            Ok(pb::TracingMatchState::RuledOut) => Self::RuledOut,
            Ok(pb::TracingMatchState::Disclosed) => Self::Disclosed,
            Ok(pb::TracingMatchState::Confirmed) => Self::Confirmed,
            _ if m.confirmed_here => Self::AwaitingThem,
            _ => Self::AwaitingUs,
        }
    }

    /// Its catalogue key.
    pub fn key(self) -> &'static str {
        match self {
            Self::AwaitingUs => "tracing.state.awaiting-us",
            Self::AwaitingThem => "tracing.state.awaiting-them",
            Self::Confirmed => "tracing.state.confirmed",
            Self::Disclosed => "tracing.state.disclosed",
            Self::RuledOut => "tracing.state.ruled-out",
        }
    }
}

/// The word for a band.
fn band(cat: &Catalogue, value: i32) -> &'static str {
    let name = pb::MatchBand::try_from(value).unwrap_or(pb::MatchBand::Unspecified);
    cat.text(&enum_key("tracing.band", "MATCH_BAND_", name.as_str_name()))
}

/// The word for a case kind.
fn kind(cat: &Catalogue, value: pb::TracingCaseKind) -> &'static str {
    cat.text(&enum_key(
        "tracing.kind",
        "TRACING_CASE_KIND_",
        value.as_str_name(),
    ))
}

/// How a case is named to its own unit: its reference, or its names, or that it was purged.
fn case_label(cat: &Catalogue, case: Option<&TracingCaseSummary>) -> String {
    match case {
        Some(c) if c.purged => esc(cat.text("tracing.case.purged")),
        Some(c) if !c.case_reference.is_empty() => {
            format!("{} ({})", esc(&c.case_reference), list(&c.names))
        }
        Some(c) => list(&c.names),
        None => esc(cat.text("tracing.case.unknown")),
    }
}

/// The overview's body: matches by band, then the unit's cases.
pub fn overview(
    cat: &Catalogue,
    cases: &[TracingCaseSummary],
    matches: &[pb::TracingMatch],
) -> String {
    let t = |k: &str| cat.text(k);
    let mut out = format!("<p>{}</p>\n", esc(t("tracing.intro")));
    let _ = writeln!(
        out,
        "<p><a class=\"button\" href=\"#register\">{}</a></p>",
        esc(t("tracing.register.link"))
    );
    let _ = writeln!(out, "<h2>{}</h2>", esc(t("tracing.matches")));
    if matches.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(t("tracing.matches.none")));
    }
    for b in [pb::MatchBand::Likely, pb::MatchBand::Possible] {
        let in_band: Vec<&pb::TracingMatch> =
            matches.iter().filter(|m| m.band == b as i32).collect();
        if in_band.is_empty() {
            continue;
        }
        let name = if b == pb::MatchBand::Likely {
            "likely"
        } else {
            "possible"
        };
        let _ = writeln!(
            out,
            "<h3>{}</h3>\n<p><small>{}</small></p>",
            esc(t(&format!("tracing.band.{name}-title"))),
            esc(t(&format!("tracing.band.{name}-hint")))
        );
        let _ = writeln!(
            out,
            "<table>\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\n<tbody>",
            esc(t("tracing.col.case")),
            esc(t("tracing.col.peer")),
            esc(t("tracing.col.noticed")),
            esc(t("tracing.col.state")),
            esc(t("tracing.col.open")),
        );
        for m in in_band {
            let case = cases.iter().find(|c| c.case_id == m.case_id);
            let kind_of = pb::TracingCaseKind::try_from(m.case_kind).unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr><td>{} <small>{}</small></td><td>{}</td><td>{}</td><td class=\"standing\">{}</td><td><a href=\"/console/tracing/matches/{}\">{}</a></td></tr>",
                case_label(cat, case),
                esc(kind(cat, kind_of)),
                esc(&m.peer),
                esc(&when(cat, m.noticed_at_ms)),
                esc(t(Standing::of(m).key())),
                esc(&m.match_id),
                esc(t("tracing.open")),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    let _ = writeln!(out, "<h2>{}</h2>", esc(t("tracing.cases")));
    if cases.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(t("tracing.cases.none")));
        return out;
    }
    let _ = writeln!(
        out,
        "<table>\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\n<tbody>",
        esc(t("tracing.col.case")),
        esc(t("tracing.col.kind")),
        esc(t("tracing.col.registered")),
        esc(t("tracing.col.queried")),
        esc(t("tracing.col.matches")),
    );
    for c in cases {
        let found = matches.iter().filter(|m| m.case_id == c.case_id).count();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{found}</td></tr>",
            case_label(cat, Some(c)),
            esc(kind(cat, c.kind)),
            esc(&when(cat, c.registered_at_ms)),
            list(&c.peers),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// One match's body: its facts, what may be known of it, the review forms (with the CSRF
/// `token`) while it awaits this side, and the agreed fields side by side once released.
pub fn one_match(cat: &Catalogue, view: &TracingMatchView, token: &str) -> String {
    let t = |k: &str| cat.text(k);
    let m = &view.matched;
    let standing = Standing::of(m);
    let yes_no = |b: bool| esc(t(if b { "yes" } else { "no" }));
    let kind_of = pb::TracingCaseKind::try_from(m.case_kind).unwrap_or_default();
    let mut out = format!(
        "<p><a href=\"/console/tracing\">{}</a></p>\n",
        esc(t("tracing.back"))
    );
    out.push_str(&facts(&[
        (t("tracing.col.band"), esc(band(cat, m.band))),
        (
            t("tracing.col.state"),
            format!(
                "<strong class=\"standing\">{}</strong>",
                esc(t(standing.key()))
            ),
        ),
        (t("tracing.col.case"), case_label(cat, view.case.as_ref())),
        (t("tracing.col.kind"), esc(kind(cat, kind_of))),
        (t("tracing.col.peer"), esc(&m.peer)),
        (t("tracing.col.noticed"), esc(&when(cat, m.noticed_at_ms))),
        (t("tracing.confirmed-here"), yes_no(m.confirmed_here)),
        (t("tracing.confirmed-by-peer"), yes_no(m.confirmed_by_peer)),
    ]));
    let _ = writeln!(out, "<h2>{}</h2>", esc(t("tracing.known")));
    match standing {
        Standing::AwaitingUs | Standing::AwaitingThem => {
            let _ = writeln!(
                out,
                "<p>{}</p>",
                esc(&cat.fill("tracing.known.before", &[("band", band(cat, m.band))]))
            );
        }
        Standing::RuledOut => {
            let _ = writeln!(out, "<p>{}</p>", esc(t("tracing.known.ruled-out")));
        }
        Standing::Confirmed | Standing::Disclosed => {
            // The second confirmation, here or from the peer, sends this side's disclosure
            // before it is answered: a confirmed match without one (beyond that moment) is one
            // whose disclosure the case's consent refused.
            if m.disclosure_message_id.is_empty() {
                let _ = writeln!(out, "<p>{}</p>", esc(t("tracing.known.not-sent")));
            } else if standing == Standing::Confirmed {
                let _ = writeln!(out, "<p>{}</p>", esc(t("tracing.known.waiting")));
            }
            out.push_str(&side_by_side(
                cat,
                view.ours.as_ref(),
                m.disclosure.as_ref(),
            ));
        }
    }
    let _ = writeln!(out, "<h2>{}</h2>", esc(t("tracing.review")));
    if standing != Standing::AwaitingUs {
        let _ = writeln!(out, "<p>{}</p>", esc(t("tracing.review.done")));
        return out;
    }
    let _ = writeln!(out, "<p>{}</p>", esc(t("tracing.review.hint")));
    for (action, check) in [
        ("confirm", "tracing.review.confirm-check"),
        ("rule-out", "tracing.review.rule-out-check"),
    ] {
        let _ = writeln!(
            out,
            "<form class=\"action\" method=\"post\" action=\"/console/tracing/matches/{id}/review\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">\
             <p class=\"check\"><input type=\"checkbox\" id=\"sure-{action}\" name=\"sure\" value=\"yes\" required> \
             <label for=\"sure-{action}\">{}</label></p>\
             <button type=\"submit\">{}</button></form>",
            esc(token),
            esc(t(check)),
            esc(t(&format!("tracing.review.{action}"))),
            id = esc(&m.match_id),
        );
    }
    out
}

/// The agreed fields, ours beside theirs, one row per field.
fn side_by_side(
    cat: &Catalogue,
    ours: Option<&pb::TracingDisclosure>,
    theirs: Option<&pb::TracingDisclosure>,
) -> String {
    let t = |k: &str| cat.text(k);
    let rows = |d: Option<&pb::TracingDisclosure>| -> Vec<String> {
        let Some(d) = d else {
            return vec![String::new(); 10];
        };
        let i = d.identity.clone().unwrap_or_default();
        let l = d.location.clone().unwrap_or_default();
        let sex = pb::Sex::try_from(i.sex)
            .ok()
            .filter(|s| *s != pb::Sex::Unspecified)
            .map(|s| cat.text(&enum_key("sex", "SEX_", s.as_str_name())))
            .unwrap_or_default();
        let relatives: Vec<String> = d
            .family
            .as_ref()
            .map(|f| {
                f.members
                    .iter()
                    .map(|m| format!("{} — {}", m.relationship, m.names.join(", ")))
                    .collect()
            })
            .unwrap_or_default();
        vec![
            list(&i.given_names),
            list(&i.family_names),
            list(&i.other_names),
            esc(sex),
            esc(&i.birth_date),
            if i.estimated_birth_year == 0 {
                String::new()
            } else {
                i.estimated_birth_year.to_string()
            },
            esc(&l.place_of_separation),
            esc(&l.date_of_separation),
            relatives
                .iter()
                .map(|r| esc(r))
                .collect::<Vec<_>>()
                .join("<br>"),
            esc(&d.contact_unit),
        ]
    };
    let labels = [
        "field.given-names",
        "field.family-names",
        "field.other-names",
        "field.sex",
        "field.birth-date",
        "field.estimated-birth-year",
        "field.place-of-separation",
        "field.date-of-separation",
        "tracing.field.relatives",
        "tracing.field.contact-unit",
    ];
    let (ours, theirs) = (rows(ours), rows(theirs));
    let mut out = format!(
        "<table class=\"side-by-side\">\n<caption>{}</caption>\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\n<tbody>\n",
        esc(t("tracing.agreed.caption")),
        esc(t("tracing.agreed.field")),
        esc(t("tracing.agreed.ours")),
        esc(t("tracing.agreed.theirs")),
    );
    for ((label, a), b) in labels.iter().zip(&ours).zip(&theirs) {
        if a.is_empty() && b.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{a}</td><td>{b}</td></tr>",
            esc(t(label))
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::catalogue;

    fn disclosure(given: &str) -> pb::TracingDisclosure {
        pb::TracingDisclosure {
            identity: Some(pb::IdentityData {
                given_names: vec![given.into()],
                ..Default::default()
            }),
            contact_unit: "intake".into(),
            ..Default::default()
        }
    }

    fn view(state: pb::TracingMatchState, here: bool, peer: bool) -> TracingMatchView {
        TracingMatchView {
            matched: pb::TracingMatch {
                match_id: "3f2b6c1e-0000-4000-8000-000000000001".into(),
                peer: "ZM-DSW".into(),
                band: pb::MatchBand::Likely as i32,
                state: state as i32,
                confirmed_here: here,
                confirmed_by_peer: peer,
                disclosure: Some(disclosure("Theirs")),
                disclosure_message_id: "m-1".into(),
                ..Default::default()
            },
            case: None,
            ours: Some(disclosure("Ours")),
        }
    }

    #[test]
    fn fields_show_side_by_side_only_once_both_confirmed() {
        let en = catalogue::english();
        use pb::TracingMatchState as S;
        for (state, here, peer, standing) in [
            (S::Pending, false, false, Standing::AwaitingUs),
            (S::Pending, false, true, Standing::AwaitingUs),
            (S::Pending, true, false, Standing::AwaitingThem),
            (S::RuledOut, true, false, Standing::RuledOut),
        ] {
            let v = view(state, here, peer);
            assert_eq!(Standing::of(&v.matched), standing);
            let html = one_match(en, &v, "t");
            assert!(
                !html.contains("Theirs") && !html.contains("Ours"),
                "{state:?}"
            );
            assert_eq!(
                html.contains(">Confirm</button>"),
                standing == Standing::AwaitingUs,
                "{state:?}"
            );
        }
        let html = one_match(en, &view(S::Disclosed, true, true), "t");
        assert!(html.contains("<td>Ours</td><td>Theirs</td>"), "{html}");
        assert!(!html.contains("<form"), "{html}");
    }
}
