//! Consent withdrawal from a sent item's page: the form (the consent id in its body, a
//! confirmation required) and its target, which lists the notices sent and what was purged.

use std::fmt::Write;

use axum::body::Body;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_proto::v1 as pb;
use kinbridge_service::local::actor_of;
use kinbridge_service::{ErrorKind, ServiceError};

use super::super::Visit;
use super::super::catalogue::Catalogue;
use super::super::html::{self, esc};
use crate::problem::status_of_error;

/// The withdrawal form of the consent `consent_id` on the sent item `message_id`'s page.
pub(in crate::console) fn withdraw_form(
    cat: &Catalogue,
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
pub(super) async fn withdraw(Path(message_id): Path<String>, visit: Visit, body: Body) -> Response {
    let method = "POST /console/sent/{message_id}/withdraw";
    visit
        .serve(method, LocalAccess::Case, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                uri,
                headers,
            } = v;
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
            match super::super::sent::item_body(&console, auth.as_ref(), page.cat, &message_id)
                .await
            {
                Ok(item) => page.answer(
                    status_of_error(&error),
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
fn withdrawn(cat: &Catalogue, done: &pb::WithdrawConsentResponse, message_id: &str) -> String {
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
