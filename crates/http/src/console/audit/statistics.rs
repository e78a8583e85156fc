//! The statistics pages: `GET /console/statistics` shows the counts the statistics use case
//! answers (small cells withheld as it withholds them) as tables, each with a bar chart in
//! inline SVG (no script, no style attribute: SVG presentation attributes only), filtered by
//! period and grouping (GET parameters `from`, `to`, `by`); `GET /console/statistics.csv` is
//! one table as CSV, with the same cells withheld.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_core::reporting::Dimension;
use kinbridge_proto::v1 as pb;
use kinbridge_service::ServiceError;
use kinbridge_service::statistics::period_of_days;

use crate::console::catalogue::Catalogue;
use crate::console::html::{self, esc, when};
use crate::console::{Console, Visit};

/// This part's routes.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/statistics", get(statistics))
        .route("/console/statistics.csv", get(csv))
}

/// What the page or the CSV was asked for: the days and the grouping, as typed.
struct Asked {
    from: String,
    to: String,
    by: Vec<String>,
}

impl Asked {
    fn of(query: Option<&str>) -> Self {
        let mut asked = Self {
            from: String::new(),
            to: String::new(),
            by: Vec::new(),
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "from" => asked.from = v.into_owned(),
                "to" => asked.to = v.into_owned(),
                "by" if !v.is_empty() && asked.by.len() < Dimension::ALL.len() => {
                    asked.by.push(v.into_owned())
                }
                _ => {}
            }
        }
        asked
    }

    /// The query string of these days and `by`.
    fn query(&self, by: &[String]) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for d in by {
            q.append_pair("by", d);
        }
        if !self.from.is_empty() {
            q.append_pair("from", &self.from);
        }
        if !self.to.is_empty() {
            q.append_pair("to", &self.to);
        }
        q.finish()
    }
}

/// The tables `asked` for: one grouped by `by` if given, else one per dimension.
async fn tables(
    r: &Visit,
    asked: &Asked,
    every_dimension: bool,
) -> Result<Vec<pb::GetStatisticsResponse>, ServiceError> {
    let (from_ms, to_ms) = match period_of_days(&asked.from, &asked.to) {
        Ok(period) => period,
        Err(error) => return Err(r.refuse(error).await),
    };
    let groupings: Vec<Vec<String>> = if asked.by.is_empty() && every_dimension {
        Dimension::ALL
            .iter()
            .map(|d| vec![d.name().to_owned()])
            .collect()
    } else {
        vec![asked.by.clone()]
    };
    let mut out = Vec::with_capacity(groupings.len());
    for group_by in groupings {
        let req = pb::GetStatisticsRequest {
            group_by,
            from_ms,
            to_ms,
            threshold: 0,
        };
        out.push(r.console.statistics.get_statistics(r.auth(), req).await?);
    }
    Ok(out)
}

/// `GET /console/statistics`: the tables and charts.
async fn statistics(visit: Visit) -> Response {
    let asked = Asked::of(visit.uri.query());
    let method = "GET /console/statistics";
    visit
        .serve(method, LocalAccess::Aggregate, move |r| async move {
            let cat = r.cat();
            let title = cat.text("audit.stats.title");
            match tables(&r, &asked, true).await {
                Ok(tables) => {
                    let mut body = format!("<p>{}</p>\n", esc(cat.text("audit.stats.intro")));
                    body.push_str(&filter_form(cat, &asked));
                    if let Some(first) = tables.first() {
                        body.push_str(&html::facts(&[
                            (
                                cat.text("audit.stats.period"),
                                esc(&format!(
                                    "{} – {}",
                                    if first.from_ms > 0 {
                                        when(cat, first.from_ms)
                                    } else {
                                        cat.text("audit.stats.beginning").to_owned()
                                    },
                                    when(cat, first.to_ms)
                                )),
                            ),
                            (
                                cat.text("audit.stats.threshold"),
                                first.threshold.to_string(),
                            ),
                        ]));
                    }
                    for (n, table) in tables.iter().enumerate() {
                        body.push_str(&render(cat, table, n, &asked));
                    }
                    r.page.answer(StatusCode::OK, title, &body)
                }
                Err(error)
                    if matches!(
                        error.refusal_reason().as_str(),
                        "bad-period" | "bad-dimension"
                    ) =>
                {
                    // The form again, without what was typed: a refusal echoes nothing.
                    let empty = Asked::of(None);
                    let body = format!(
                        "{}{}",
                        html::refusal(cat, &error.refusal_reason(), error.message()),
                        filter_form(cat, &empty)
                    );
                    r.page
                        .answer(crate::problem::status_of_error(&error), title, &body)
                }
                Err(error) => r.page.refused(&error),
            }
        })
        .await
}

/// The filter form (GET): the days and the grouping.
fn filter_form(cat: &Catalogue, asked: &Asked) -> String {
    let mut boxes = String::new();
    for d in Dimension::ALL {
        let name = d.name();
        let checked = if asked.by.iter().any(|b| b == name) {
            " checked"
        } else {
            ""
        };
        let _ = write!(
            boxes,
            "<span class=\"choice\"><input type=\"checkbox\" id=\"by-{name}\" name=\"by\" value=\"{name}\"{checked}> <label for=\"by-{name}\">{}</label></span> ",
            esc(cat.text(&format!("audit.stats.dim.{name}")))
        );
    }
    format!(
        "<form method=\"get\" action=\"/console/statistics\" class=\"action\">\
<p><label for=\"from\">{from}</label> <input id=\"from\" name=\"from\" type=\"date\" value=\"{from_v}\"> \
<label for=\"to\">{to}</label> <input id=\"to\" name=\"to\" type=\"date\" value=\"{to_v}\"></p>\
<fieldset><legend>{by}</legend>{boxes}</fieldset>\
<p><button type=\"submit\">{show}</button></p></form>\n",
        from = esc(cat.text("audit.stats.from")),
        from_v = esc(&asked.from),
        to = esc(cat.text("audit.stats.to")),
        to_v = esc(&asked.to),
        by = esc(cat.text("audit.stats.by")),
        show = esc(cat.text("audit.stats.show")),
    )
}

/// A dimension's name in the page's language.
fn dimension(cat: &Catalogue, name: &str) -> String {
    cat.lookup(&format!("audit.stats.dim.{name}"))
        .unwrap_or(name)
        .to_owned()
}

/// A row's label: its values, or "Total".
fn label(cat: &Catalogue, values: &[String]) -> String {
    let shown: Vec<&str> = values
        .iter()
        .map(|v| {
            if v.is_empty() {
                cat.text("audit.stats.total")
            } else {
                v.as_str()
            }
        })
        .collect();
    shown.join(" · ")
}

/// One table (`n`th on the page) and its chart.
fn render(cat: &Catalogue, table: &pb::GetStatisticsResponse, n: usize, asked: &Asked) -> String {
    let heading = if table.group_by.is_empty() {
        cat.text("audit.stats.total").to_owned()
    } else {
        table
            .group_by
            .iter()
            .map(|d| dimension(cat, d))
            .collect::<Vec<_>>()
            .join(" × ")
    };
    let mut out = format!("<h2>{}</h2>\n", esc(&heading));
    if table.entries.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(cat.text("audit.stats.empty")));
    } else {
        out.push_str("<table class=\"statistics\"><thead><tr>");
        let columns: Vec<String> = if table.group_by.is_empty() {
            vec![String::new()]
        } else {
            table.group_by.iter().map(|d| dimension(cat, d)).collect()
        };
        for c in &columns {
            let _ = write!(out, "<th scope=\"col\">{}</th>", esc(c));
        }
        let _ = writeln!(
            out,
            "<th scope=\"col\">{}</th></tr></thead><tbody>",
            esc(cat.text("audit.stats.count"))
        );
        for e in &table.entries {
            out.push_str("<tr>");
            let values: Vec<String> = if e.values.is_empty() {
                vec![String::new()]
            } else {
                e.values.clone()
            };
            for (i, v) in values.iter().enumerate() {
                let shown = label(cat, std::slice::from_ref(v));
                if i == 0 {
                    let _ = write!(out, "<th scope=\"row\">{}</th>", esc(&shown));
                } else {
                    let _ = write!(out, "<td>{}</td>", esc(&shown));
                }
            }
            let count = if e.withheld {
                format!(
                    "<em class=\"withheld\">{}</em>",
                    esc(cat.text("audit.stats.withheld"))
                )
            } else {
                e.count.to_string()
            };
            let _ = writeln!(out, "<td class=\"count\">{count}</td></tr>");
        }
        out.push_str("</tbody></table>\n");
        out.push_str(&chart(cat, table, n, &heading));
    }
    let withheld = table.withheld_small + table.withheld_complementary;
    if withheld > 0 {
        let _ = writeln!(
            out,
            "<p><small>{}</small></p>",
            esc(&cat.fill(
                "audit.stats.withheld-note",
                &[
                    ("count", &withheld.to_string()),
                    ("threshold", &table.threshold.to_string())
                ]
            ))
        );
    }
    let _ = writeln!(
        out,
        "<p><a href=\"/console/statistics.csv?{}\" download>{}</a></p>",
        esc(&asked.query(&table.group_by)),
        esc(cat.text("audit.stats.csv"))
    );
    out
}

/// A horizontal bar chart of `table`'s counts (a withheld count has no bar and says so).
fn chart(cat: &Catalogue, table: &pb::GetStatisticsResponse, n: usize, heading: &str) -> String {
    const ROW: usize = 24;
    const LABEL: usize = 220;
    const BAR: usize = 300;
    let max = table
        .entries
        .iter()
        .filter(|e| !e.withheld)
        .map(|e| e.count)
        .max()
        .unwrap_or(0)
        .max(1);
    let height = ROW * table.entries.len() + 8;
    let title = cat.fill("audit.stats.chart", &[("table", heading)]);
    let mut out = format!(
        "<svg class=\"chart\" role=\"img\" direction=\"ltr\" aria-labelledby=\"chart-{n}\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"chart-{n}\">{}</title>",
        esc(&title),
        w = LABEL + BAR + 120,
    );
    for (i, e) in table.entries.iter().enumerate() {
        let y = i * ROW + 4;
        let text_y = y + 16;
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"{text_y}\" text-anchor=\"end\" font-size=\"13\" fill=\"#1b1b1b\">{}</text>",
            esc(&label(cat, &e.values)),
            x = LABEL - 8,
        );
        if e.withheld {
            let _ = write!(
                out,
                "<text x=\"{LABEL}\" y=\"{text_y}\" font-size=\"13\" font-style=\"italic\" fill=\"#555555\">{}</text>",
                esc(cat.text("audit.stats.withheld"))
            );
        } else {
            let width = ((e.count as usize).saturating_mul(BAR) / max as usize).max(1);
            let _ = write!(
                out,
                "<rect x=\"{LABEL}\" y=\"{y}\" width=\"{width}\" height=\"{h}\" fill=\"#123d63\"></rect><text x=\"{tx}\" y=\"{text_y}\" font-size=\"13\" fill=\"#1b1b1b\">{}</text>",
                e.count,
                h = ROW - 6,
                tx = LABEL + width + 6,
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A CSV field, quoted if it must be; a field a spreadsheet would run as a formula is
/// prefixed with `'`.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// `table` as CSV: a header row (the dimensions, `count`, `withheld`), then one row per
/// cell; a withheld count is empty, with `withheld` true.
pub(super) fn to_csv(table: &pb::GetStatisticsResponse) -> String {
    let mut out = String::new();
    let header: Vec<String> = table
        .group_by
        .iter()
        .map(|d| csv_field(d))
        .chain(["count".to_owned(), "withheld".to_owned()])
        .collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for e in &table.entries {
        let values: Vec<String> = if table.group_by.is_empty() {
            Vec::new()
        } else {
            e.values.iter().map(|v| csv_field(v)).collect()
        };
        let count = if e.withheld {
            String::new()
        } else {
            e.count.to_string()
        };
        let row: Vec<String> = values
            .into_iter()
            .chain([count, e.withheld.to_string()])
            .collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

/// `GET /console/statistics.csv`: one table (grouped by `by`, or the total) as CSV.
async fn csv(visit: Visit) -> Response {
    let asked = Asked::of(visit.uri.query());
    let method = "GET /console/statistics.csv";
    visit
        .serve(method, LocalAccess::Aggregate, move |r| async move {
            let table = match tables(&r, &asked, false).await {
                Ok(mut tables) => match tables.pop() {
                    Some(table) => table,
                    None => return r.page.refused(&ServiceError::internal("no table answered")),
                },
                Err(error) => return r.page.refused(&error),
            };
            let name = if table.group_by.is_empty() {
                "total".to_owned()
            } else {
                table.group_by.join("-")
            };
            let mut response = to_csv(&table).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            if let Ok(value) = HeaderValue::from_str(&format!(
                "attachment; filename=\"{}-statistics-{name}.csv\"",
                table.node
            )) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_keeps_withheld_cells_empty_and_quotes_what_it_must() {
        let table = pb::GetStatisticsResponse {
            group_by: vec!["route".into()],
            entries: vec![
                pb::StatisticsEntry {
                    values: vec!["ZM-DSW→MW-DSW".into()],
                    count: 0,
                    withheld: true,
                },
                pb::StatisticsEntry {
                    values: vec!["a,b".into()],
                    count: 12,
                    withheld: false,
                },
                pb::StatisticsEntry {
                    values: vec!["=1+1".into()],
                    count: 7,
                    withheld: false,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            to_csv(&table),
            "route,count,withheld\r\nZM-DSW→MW-DSW,,true\r\n\"a,b\",12,false\r\n'=1+1,7,false\r\n"
        );
    }
}
