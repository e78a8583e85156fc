//! The auditor's pages: the log with filters, the checkpoint, verification and reconciliation of exports, check-peers, statistics.
//!
//! `GET /console/audit` lists this node's entries, newest first, filtered by event, node,
//! days and refusals (GET parameters: none carries personal data), with the latest signed
//! checkpoint; `/console/audit/export` downloads the export file; `/console/audit/verify` and
//! `/console/audit/reconcile` take uploaded export files (`multipart/form-data`, CSRF token as
//! a field) and show what `kinbridge audit verify` and `reconcile` say; `POST
//! /console/audit/check-peers` has the node check each peer's log. The statistics pages are
//! in [`statistics`]. Every page calls the audit trail's use cases and renders their answers.

mod multipart;
mod statistics;

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kinbridge_core::firewall::LocalAccess;
use kinbridge_proto::v1 as pb;
use kinbridge_service::ServiceError;
use kinbridge_service::audit_trail::AuditCaller;
use kinbridge_service::audit_trail::review::{
    ENTRY_PAGE, EntryPage, EntryQuery, ExportCheck, ExportUpload, KeySource, MAX_EXPORT_BYTES,
    Mismatch, ReconcileCheck, VerifiedCheckpoint, all_events, event_name,
};
use kinbridge_service::local::actor_of;

use super::catalogue::Catalogue;
use super::html::{self, esc, facts, when};
use super::{Console, Visit};
use crate::problem::status_of_error;

/// Room for the form's other fields around the files of an upload.
const FORM_SLACK: usize = 64 * 1024;

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/audit", get(log_page))
        .route("/console/audit/export", get(export))
        .route("/console/audit/verify", get(verify_form).post(verify))
        .route(
            "/console/audit/reconcile",
            get(reconcile_form).post(reconcile),
        )
        .route("/console/audit/check-peers", post(check_peers))
        .merge(statistics::routes())
}

impl Visit {
    /// Records a refusal of this caller's request and answers it.
    async fn refuse(&self, error: ServiceError) -> ServiceError {
        self.console
            .local
            .refuse(&actor_of(self.auth()), error)
            .await
    }

    fn cat(&self) -> &'static Catalogue {
        self.page.cat
    }
}

/// `GET /console/audit`: a page of the log and the latest checkpoint.
async fn log_page(visit: Visit) -> Response {
    let method = "GET /console/audit";
    visit
        .serve(method, LocalAccess::Case, move |r| async move {
            let q = &r.page.query;
            let value = |k: &str| q.get(k).cloned().unwrap_or_default();
            let query = EntryQuery {
                events: q.get("kind").into_iter().cloned().collect(),
                peer: value("peer"),
                from: value("from"),
                to: value("to"),
                refusals_only: q.get("refusals").is_some_and(|v| v == "1"),
            };
            let before = q.get("before").and_then(|b| b.parse::<u64>().ok());
            let listed = r
                .console
                .audit
                .list_entries(r.auth(), &query, before, ENTRY_PAGE)
                .await;
            let (status, listing, shown) = match listed {
                Ok(page) => (StatusCode::OK, entries(r.cat(), &query, &page), query),
                Err(error) => {
                    if error.refusal_reason() != "bad-filter" {
                        return r.page.refused(&error);
                    }
                    // The form again, without what was typed: a refusal echoes nothing.
                    (
                        status_of_error(&error),
                        html::refusal(r.cat(), &error.refusal_reason(), error.message()),
                        EntryQuery::default(),
                    )
                }
            };
            let checkpoint = match r.console.audit.latest_checkpoint(r.auth()).await {
                Ok(cp) => checkpoint(r.cat(), cp.as_ref()),
                Err(error) => return r.page.refused(&error),
            };
            let body = format!(
                "<p>{}</p>\n{}{}{}{}",
                esc(r.cat().text("audit.intro")),
                filter_form(r.cat(), &shown),
                listing,
                checkpoint,
                tools(r.cat(), &r.console.token(r.auth())),
            );
            r.page.answer(status, r.cat().text("audit.title"), &body)
        })
        .await
}

/// The filter form (GET): event, node, days, refusals only.
fn filter_form(cat: &Catalogue, q: &EntryQuery) -> String {
    let chosen = q.events.first().map(String::as_str).unwrap_or_default();
    let mut options = format!(
        "<option value=\"\">{}</option>",
        esc(cat.text("audit.filter.any"))
    );
    for event in all_events() {
        let name = event_name(event);
        let selected = if name == chosen { " selected" } else { "" };
        let _ = write!(
            options,
            "<option value=\"{name}\"{selected}>{name}</option>"
        );
    }
    let checked = if q.refusals_only { " checked" } else { "" };
    format!(
        "<form method=\"get\" action=\"/console/audit\" class=\"action\">\
<h2>{filter}</h2>\
<p><label for=\"kind\">{kind}</label> <select id=\"kind\" name=\"kind\">{options}</select></p>\
<p><label for=\"peer\">{peer}</label> <input id=\"peer\" name=\"peer\" value=\"{peer_v}\" size=\"12\" maxlength=\"40\" autocomplete=\"off\"></p>\
<p><label for=\"from\">{from}</label> <input id=\"from\" name=\"from\" type=\"date\" value=\"{from_v}\"> \
<label for=\"to\">{to}</label> <input id=\"to\" name=\"to\" type=\"date\" value=\"{to_v}\"></p>\
<p><input id=\"refusals\" name=\"refusals\" type=\"checkbox\" value=\"1\"{checked}> <label for=\"refusals\">{refusals}</label></p>\
<p><button type=\"submit\">{show}</button></p></form>\n",
        filter = esc(cat.text("audit.filter")),
        kind = esc(cat.text("audit.filter.kind")),
        peer = esc(cat.text("audit.filter.peer")),
        peer_v = esc(&q.peer),
        from = esc(cat.text("audit.filter.from")),
        from_v = esc(&q.from),
        to = esc(cat.text("audit.filter.to")),
        to_v = esc(&q.to),
        refusals = esc(cat.text("audit.filter.refusals")),
        show = esc(cat.text("audit.filter.show")),
    )
}

/// The table of a page of entries, and the link to the older ones.
fn entries(cat: &Catalogue, q: &EntryQuery, page: &EntryPage) -> String {
    let mut out = format!("<h2>{}</h2>\n", esc(cat.text("audit.entries")));
    if page.entries.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(cat.text("audit.empty")));
    } else {
        let cols = [
            "audit.col.index",
            "audit.col.time",
            "audit.col.event",
            "audit.col.peer",
            "audit.col.actor",
            "audit.col.reason",
            "audit.col.message",
        ];
        out.push_str("<table class=\"entries\"><thead><tr>");
        for col in cols {
            let _ = write!(out, "<th scope=\"col\">{}</th>", esc(cat.text(col)));
        }
        out.push_str("</tr></thead><tbody>\n");
        for (index, e) in &page.entries {
            let event = pb::AuditEvent::try_from(e.event)
                .map_or_else(|_| format!("event-{}", e.event), event_name);
            // The other node: the one named as peer, else the message's other end.
            let other = if e.sender.is_empty() || e.sender == e.node {
                &e.recipient
            } else {
                &e.sender
            };
            let peer = [&e.peer, &e.authenticated_peer, other]
                .into_iter()
                .find(|p| !p.is_empty() && **p != e.node)
                .map_or("", |p| p.as_str());
            let _ = writeln!(
                out,
                "<tr><th scope=\"row\">{index}</th><td>{}</td><td class=\"event\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&when(cat, e.time_ms)),
                esc(&event),
                esc(peer),
                esc(&e.actor),
                code(&e.reason),
                code(&e.message_id),
            );
        }
        out.push_str("</tbody></table>\n");
    }
    let _ = writeln!(
        out,
        "<p><small>{}</small></p>",
        esc(&cat.fill(
            "audit.scanned",
            &[
                ("scanned", &page.scanned.to_string()),
                ("size", &page.size.to_string())
            ]
        ))
    );
    let mut links = Vec::new();
    if let Some(next) = page.next_before {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            (
                "kind",
                q.events.first().map(String::as_str).unwrap_or_default(),
            ),
            ("peer", q.peer.as_str()),
            ("from", q.from.as_str()),
            ("to", q.to.as_str()),
            ("refusals", if q.refusals_only { "1" } else { "" }),
        ] {
            if !v.is_empty() {
                query.append_pair(k, v);
            }
        }
        query.append_pair("before", &next.to_string());
        links.push(format!(
            "<a href=\"/console/audit?{}\">{}</a>",
            esc(&query.finish()),
            esc(cat.text("audit.older"))
        ));
    }
    if !links.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", links.join(" "));
    }
    out
}

/// `value` as code, or nothing if it is empty.
fn code(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!("<code>{}</code>", esc(value))
    }
}

/// The latest checkpoint: size, root hash and the signed note.
fn checkpoint(cat: &Catalogue, cp: Option<&VerifiedCheckpoint>) -> String {
    let mut out = format!("<h2>{}</h2>\n", esc(cat.text("audit.checkpoint")));
    match cp {
        None => {
            let _ = writeln!(out, "<p>{}</p>", esc(cat.text("audit.checkpoint.none")));
        }
        Some(cp) => {
            out.push_str(&facts(&[
                (cat.text("audit.checkpoint.size"), cp.size.to_string()),
                (
                    cat.text("audit.checkpoint.root"),
                    format!("<code>{}</code>", hex::encode(cp.root)),
                ),
            ]));
            let _ = writeln!(
                out,
                "<h3>{}</h3>\n<pre class=\"note\">{}</pre>",
                esc(cat.text("audit.checkpoint.note")),
                esc(&cp.note)
            );
        }
    }
    out
}

/// Links to the other tools, and the check-peers form.
fn tools(cat: &Catalogue, token: &str) -> String {
    format!(
        "<h2>{tools}</h2>\n<ul>\
<li><a href=\"/console/audit/export\" download>{export}</a></li>\
<li><a href=\"/console/audit/verify\">{verify}</a></li>\
<li><a href=\"/console/audit/reconcile\">{reconcile}</a></li></ul>\n\
<form method=\"post\" action=\"/console/audit/check-peers\" class=\"action\">\
<input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
<p>{intro}</p><p><button type=\"submit\">{button}</button></p></form>\n",
        tools = esc(cat.text("audit.tools")),
        export = esc(cat.text("audit.export")),
        verify = esc(cat.text("audit.verify.link")),
        reconcile = esc(cat.text("audit.reconcile.link")),
        token = esc(token),
        intro = esc(cat.text("audit.check-peers")),
        button = esc(cat.text("audit.check-peers.button")),
    )
}

/// `GET /console/audit/export`: the log as an export file, for `kinbridge audit verify` or
/// this console's verification.
async fn export(visit: Visit) -> Response {
    let method = "GET /console/audit/export";
    visit
        .serve(method, LocalAccess::Case, move |r| async move {
            let download = match r.console.audit.export_file(r.auth()).await {
                Ok(download) => download,
                Err(error) => return r.page.refused(&error),
            };
            let pieces = futures::stream::unfold(download.pieces, |mut rx| async move {
                rx.recv().await.map(|piece| {
                    (
                        piece.map_err(|e| std::io::Error::other(e.message().to_owned())),
                        rx,
                    )
                })
            });
            let mut response = Body::from_stream(pieces).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jsonl"),
            );
            if let Ok(value) =
                HeaderValue::from_str(&format!("attachment; filename=\"{}\"", download.file_name))
            {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        })
        .await
}

/// The verification form: the export file, the optional keys.
fn verify_form_html(cat: &Catalogue, token: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/console/audit/verify\" enctype=\"multipart/form-data\" class=\"action\">\
<input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
<p><label for=\"export\">{file}</label> <input id=\"export\" name=\"export\" type=\"file\" required></p>\
<p><label for=\"key\">{keys}</label> <input id=\"key\" name=\"key\" type=\"file\" multiple></p>\
<p><button type=\"submit\">{button}</button></p></form>\n",
        token = esc(token),
        file = esc(cat.text("audit.verify.file")),
        keys = esc(cat.text("audit.verify.keys")),
        button = esc(cat.text("audit.verify.button")),
    )
}

/// `GET /console/audit/verify`: the form.
async fn verify_form(visit: Visit) -> Response {
    upload_page(
        visit,
        "GET /console/audit/verify",
        "verify an export",
        "verify",
        verify_form_html,
    )
    .await
}

/// The page of an upload form (`part`: verify or reconcile, naming its catalogue keys), drawn
/// by `form`: a reviewer's only (whoever else asks gets the use case's refusal, for `action`).
async fn upload_page(
    visit: Visit,
    method: &'static str,
    action: &'static str,
    part: &'static str,
    form: fn(&Catalogue, &str) -> String,
) -> Response {
    visit
        .serve(method, LocalAccess::Case, move |r| async move {
            if let Err(error) = r.console.audit.admit_reviewer(r.auth(), action).await {
                return r.page.refused(&error);
            }
            let body = format!(
                "<p>{}</p>\n{}",
                esc(r.cat().text(&format!("audit.{part}.intro"))),
                form(r.cat(), &r.console.token(r.auth()))
            );
            r.page.answer(
                StatusCode::OK,
                r.cat().text(&format!("audit.{part}.title")),
                &body,
            )
        })
        .await
}

/// An upload's parts: from a reviewer of the log (asked before a byte of the body is read),
/// from this origin, within [`MAX_EXPORT_BYTES`], with the caller's CSRF token; or the
/// refusal, recorded.
async fn upload(r: &Visit, body: Body) -> Result<multipart::Parts, ServiceError> {
    r.console
        .audit
        .admit_reviewer(r.auth(), "upload exports")
        .await?;
    let actor = actor_of(r.auth());
    let parts = async {
        Console::same_origin(&r.headers, &r.uri)?;
        let boundary = multipart::boundary(&r.headers).ok_or_else(|| {
            ServiceError::invalid(
                "not-a-form",
                "send the page's form: files are uploaded as multipart/form-data",
            )
        })?;
        let bytes = axum::body::to_bytes(body, MAX_EXPORT_BYTES + FORM_SLACK)
            .await
            .map_err(|_| {
                ServiceError::invalid(
                    "too-large",
                    format!(
                        "the files sent are larger than {} MiB: verify a larger export with `kinbridge audit verify`",
                        MAX_EXPORT_BYTES / (1024 * 1024)
                    ),
                )
            })?;
        let parts = multipart::parse(&bytes, &boundary).ok_or_else(|| {
            ServiceError::invalid(
                "not-a-form",
                "the upload is not a well-formed multipart/form-data body; send the page's form again",
            )
        })?;
        r.console.check_token(&actor, parts.text("csrf"))?;
        Ok(parts)
    }
    .await;
    match parts {
        Ok(parts) => Ok(parts),
        Err(error) => Err(r.refuse(error).await),
    }
}

/// The export in field `file` and the keys in field `keys`; a missing file is refused.
async fn export_upload(
    r: &Visit,
    parts: &multipart::Parts,
    file: &str,
    keys: &str,
) -> Result<ExportUpload, ServiceError> {
    let Some(export) = parts.files(file).next() else {
        return Err(r
            .refuse(ServiceError::invalid(
                "no-file",
                "choose an export file to upload (the file `kinbridge audit export` or this console's download wrote)",
            ))
            .await);
    };
    Ok(ExportUpload {
        file: export.data.clone(),
        keys: parts
            .files(keys)
            .map(|k| String::from_utf8_lossy(&k.data).into_owned())
            .collect(),
    })
}

/// `POST /console/audit/verify`: the uploaded export verified, and the form again.
async fn verify(visit: Visit, body: Body) -> Response {
    let method = "POST /console/audit/verify";
    visit
        .serve(method, LocalAccess::Case, move |r| async move {
            let title = r.cat().text("audit.verify.title");
            let form = verify_form_html(r.cat(), &r.console.token(r.auth()));
            let checked = async {
                let parts = upload(&r, body).await?;
                let export = export_upload(&r, &parts, "export", "key").await?;
                r.console.audit.verify_upload(r.auth(), export).await
            }
            .await;
            match checked {
                Ok(check) => {
                    let body = format!("{}{form}", export_check(r.cat(), &check, true));
                    r.page.answer(StatusCode::OK, title, &body)
                }
                Err(error) => {
                    let body = format!(
                        "{}{form}",
                        html::refusal(r.cat(), &error.refusal_reason(), error.message())
                    );
                    r.page.answer(status_of_error(&error), title, &body)
                }
            }
        })
        .await
}

/// One export's verification: valid (what it holds) or its first failure, and the keys it
/// was checked against and where they came from.
fn export_check(cat: &Catalogue, check: &ExportCheck, heading: bool) -> String {
    let mut out = String::new();
    if heading {
        let _ = writeln!(out, "<h2>{}</h2>", esc(cat.text("audit.verify.result")));
    }
    match &check.outcome {
        Ok(v) => {
            out.push_str(&html::notice(cat.text("audit.verify.ok")));
            out.push_str(&facts(&[
                (cat.text("audit.verify.node"), esc(&v.node)),
                (cat.text("audit.verify.origin"), esc(&v.origin)),
                (cat.text("audit.verify.entries"), v.size.to_string()),
                (
                    cat.text("audit.verify.checkpoints"),
                    v.checkpoints.to_string(),
                ),
                (
                    cat.text("audit.verify.root"),
                    format!("<code>{}</code>", hex::encode(v.root)),
                ),
            ]));
        }
        Err(failure) => {
            let _ = writeln!(
                out,
                "<section class=\"refusal\" role=\"alert\"><p><strong>{}</strong></p>{}</section>",
                esc(cat.text("audit.verify.failed")),
                facts(&[
                    (cat.text("audit.verify.node"), esc(&check.node)),
                    (cat.text("audit.verify.origin"), esc(&check.origin)),
                    (
                        cat.text("audit.verify.index"),
                        failure
                            .index
                            .map(|i| format!("<strong class=\"bad-entry\">{i}</strong>"))
                            .unwrap_or_default(),
                    ),
                    (
                        cat.text("audit.verify.line"),
                        if failure.line > 0 {
                            failure.line.to_string()
                        } else {
                            String::new()
                        },
                    ),
                    (cat.text("audit.verify.why"), esc(&failure.reason)),
                ])
            );
        }
    }
    let source = match check.source {
        KeySource::Uploaded => "audit.keys.uploaded",
        KeySource::ThisNode => "audit.keys.this-node",
        KeySource::RegisteredPeer => "audit.keys.registered-peer",
    };
    let _ = write!(
        out,
        "<p>{}: {}</p>\n<ul class=\"keys\">",
        esc(cat.text("audit.verify.keys-used")),
        esc(cat.text(source))
    );
    for key in &check.keys {
        let _ = write!(out, "<li><code>{}</code></li>", esc(key));
    }
    out.push_str("</ul>\n");
    out
}

/// The reconciliation form: two exports and their optional keys.
fn reconcile_form_html(cat: &Catalogue, token: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/console/audit/reconcile\" enctype=\"multipart/form-data\" class=\"action\">\
<input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
<p><label for=\"first\">{first}</label> <input id=\"first\" name=\"first\" type=\"file\" required></p>\
<p><label for=\"first_key\">{first_key}</label> <input id=\"first_key\" name=\"first_key\" type=\"file\" multiple></p>\
<p><label for=\"second\">{second}</label> <input id=\"second\" name=\"second\" type=\"file\" required></p>\
<p><label for=\"second_key\">{second_key}</label> <input id=\"second_key\" name=\"second_key\" type=\"file\" multiple></p>\
<p><button type=\"submit\">{button}</button></p></form>\n",
        token = esc(token),
        first = esc(cat.text("audit.reconcile.first")),
        first_key = esc(cat.text("audit.reconcile.first-keys")),
        second = esc(cat.text("audit.reconcile.second")),
        second_key = esc(cat.text("audit.reconcile.second-keys")),
        button = esc(cat.text("audit.reconcile.button")),
    )
}

/// `GET /console/audit/reconcile`: the form.
async fn reconcile_form(visit: Visit) -> Response {
    upload_page(
        visit,
        "GET /console/audit/reconcile",
        "reconcile exports",
        "reconcile",
        reconcile_form_html,
    )
    .await
}

/// `POST /console/audit/reconcile`: both exports verified and reconciled, and the form again.
async fn reconcile(visit: Visit, body: Body) -> Response {
    let method = "POST /console/audit/reconcile";
    visit
        .serve(method, LocalAccess::Case, move |r| async move {
            let title = r.cat().text("audit.reconcile.title");
            let form = reconcile_form_html(r.cat(), &r.console.token(r.auth()));
            let checked = async {
                let parts = upload(&r, body).await?;
                let a = export_upload(&r, &parts, "first", "first_key").await?;
                let b = export_upload(&r, &parts, "second", "second_key").await?;
                r.console.audit.reconcile_uploads(r.auth(), a, b).await
            }
            .await;
            match checked {
                Ok(check) => {
                    let body = format!("{}{form}", reconciled(r.cat(), &check));
                    r.page.answer(StatusCode::OK, title, &body)
                }
                Err(error) => {
                    let body = format!(
                        "{}{form}",
                        html::refusal(r.cat(), &error.refusal_reason(), error.message())
                    );
                    r.page.answer(status_of_error(&error), title, &body)
                }
            }
        })
        .await
}

/// A reconciliation's result: agreement, the mismatches, or which export did not verify.
fn reconciled(cat: &Catalogue, check: &ReconcileCheck) -> String {
    let mut out = format!("<h2>{}</h2>\n", esc(cat.text("audit.verify.result")));
    match &check.report {
        None => {
            let _ = writeln!(
                out,
                "<section class=\"refusal\" role=\"alert\"><p><strong>{}</strong></p></section>",
                esc(cat.text("audit.reconcile.unverified"))
            );
        }
        Some(report) if report.mismatches.is_empty() => {
            out.push_str(&html::notice(&cat.fill(
                "audit.reconcile.agree",
                &[("matched", &report.matched.to_string())],
            )));
        }
        Some(report) => {
            let _ = writeln!(
                out,
                "<section class=\"refusal\" role=\"alert\"><p><strong>{}</strong></p></section>",
                esc(&cat.fill(
                    "audit.reconcile.disagree",
                    &[
                        ("count", &report.mismatches.len().to_string()),
                        ("matched", &report.matched.to_string())
                    ]
                ))
            );
            let _ = write!(
                out,
                "<h3>{}</h3>\n<table class=\"mismatches\"><thead><tr>",
                esc(cat.text("audit.reconcile.mismatches"))
            );
            for col in [
                "audit.reconcile.col.kind",
                "audit.col.message",
                "audit.reconcile.col.from",
                "audit.reconcile.col.to",
                "audit.col.detail",
            ] {
                let _ = write!(out, "<th scope=\"col\">{}</th>", esc(cat.text(col)));
            }
            out.push_str("</tr></thead><tbody>\n");
            for m in &report.mismatches {
                let (key, id, from, to) = match m {
                    Mismatch::MissingReceive {
                        sender,
                        receiver,
                        message_id,
                    } => (
                        "missing-receive",
                        message_id,
                        sender.as_str(),
                        receiver.as_str(),
                    ),
                    Mismatch::MissingDelivery {
                        sender,
                        receiver,
                        message_id,
                    } => (
                        "missing-delivery",
                        message_id,
                        sender.as_str(),
                        receiver.as_str(),
                    ),
                    Mismatch::EnvelopeMismatch { message_id } => {
                        ("envelope-mismatch", message_id, "", "")
                    }
                    Mismatch::ReceiptMismatch { message_id, .. } => {
                        ("receipt-mismatch", message_id, "", "")
                    }
                };
                let _ = writeln!(
                    out,
                    "<tr><th scope=\"row\">{}</th><td><code>{}</code></td><td>{}</td><td>{}</td><td><small>{}</small></td></tr>",
                    esc(cat.text(&format!("audit.mismatch.{key}"))),
                    esc(id),
                    esc(from),
                    esc(to),
                    esc(&m.to_string()),
                );
            }
            out.push_str("</tbody></table>\n");
        }
    }
    for (label, side) in [
        ("audit.reconcile.first", &check.a),
        ("audit.reconcile.second", &check.b),
    ] {
        let _ = writeln!(out, "<h3>{}</h3>", esc(cat.text(label)));
        out.push_str(&export_check(cat, side, false));
    }
    out
}

/// `POST /console/audit/check-peers`: the node checks each peer's log; the results.
async fn check_peers(visit: Visit, body: Body) -> Response {
    let method = "POST /console/audit/check-peers";
    visit
        .serve(method, LocalAccess::Case, move |r| async move {
            let actor = actor_of(r.auth());
            if let Err(error) = r.console.form(&r.headers, &r.uri, body, &actor).await {
                return r.page.refused(&r.refuse(error).await);
            }
            let title = r.cat().text("audit.check-peers.title");
            match r
                .console
                .audit
                .check_peers(AuditCaller::Local(r.auth()), pb::CheckPeersRequest {})
                .await
            {
                Ok(report) => {
                    let body = peer_checks(r.cat(), &report.peers);
                    r.page.answer(StatusCode::OK, title, &body)
                }
                Err(error) => r.page.refused(&error),
            }
        })
        .await
}

/// Each peer's check: consistent or not, the sizes, what was found.
fn peer_checks(cat: &Catalogue, peers: &[pb::PeerCheck]) -> String {
    let mut out = String::new();
    if peers.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(cat.text("audit.check-peers.none")));
    } else {
        out.push_str("<table class=\"peers\"><thead><tr>");
        for col in [
            "audit.col.node",
            "audit.col.consistent",
            "audit.col.held",
            "audit.col.size",
            "audit.col.detail",
        ] {
            let _ = write!(out, "<th scope=\"col\">{}</th>", esc(cat.text(col)));
        }
        out.push_str("</tr></thead><tbody>\n");
        for p in peers {
            let verdict = if p.consistent {
                format!(
                    "<span class=\"consistent\">{}</span>",
                    esc(cat.text("audit.yes"))
                )
            } else {
                format!(
                    "<strong class=\"inconsistent\">{}</strong>",
                    esc(cat.text("audit.no"))
                )
            };
            let _ = writeln!(
                out,
                "<tr><th scope=\"row\">{}</th><td>{verdict}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.peer),
                p.held_size,
                p.current_size,
                esc(&p.detail)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    let _ = writeln!(
        out,
        "<p><a href=\"/console/audit\">{}</a></p>",
        esc(cat.text("audit.back"))
    );
    out
}
