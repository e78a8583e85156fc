//! Sent items: each referral's delivery state, its signed receipt and the status history from the other side.
//!
//! `GET /console/sent` lists the referrals and case transfers sent from the caller's unit,
//! newest first (`LocalCases::list_sent`); `GET /console/sent/{message_id}` shows one
//! (`get_delivery`, and `get_referral_status` for the history), with the form to withdraw its
//! consent. Message ids are random: no child's data is in any link.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_proto::v1 as pb;
use kinbridge_service::ServiceError;
use kinbridge_service::local::LocalAuth;
use kinbridge_service::local::sending::{SENT_PAGE, SentCursor, SentItem};
// prost, as prost-reflect re-exports it (the same version the protobuf types derive).
use prost_reflect::prost::Message;

use super::catalogue::Catalogue;
use super::html::{enum_key, esc, facts, list, when};
use super::{Console, Visit};

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/sent", get(sent_list))
        .route("/console/sent/{message_id}", get(sent_item))
}

fn word(cat: &Catalogue, prefix: &str, type_prefix: &str, name: &str) -> &'static str {
    cat.text(&enum_key(prefix, type_prefix, name))
}

fn kind(cat: &Catalogue, value: i32) -> &'static str {
    let k = pb::MessageKind::try_from(value).unwrap_or(pb::MessageKind::Unspecified);
    word(cat, "kind", "MESSAGE_KIND_", k.as_str_name())
}

fn purpose(cat: &Catalogue, value: i32) -> &'static str {
    let p = pb::Purpose::try_from(value).unwrap_or(pb::Purpose::Unspecified);
    word(cat, "purpose", "PURPOSE_", p.as_str_name())
}

fn delivery(cat: &Catalogue, value: i32) -> &'static str {
    let s = pb::DeliveryState::try_from(value).unwrap_or(pb::DeliveryState::Unspecified);
    word(cat, "sent.state", "DELIVERY_STATE_", s.as_str_name())
}

/// `GET /console/sent`: a page of the caller's sent referrals, newest first.
async fn sent_list(visit: Visit) -> Response {
    let method = "GET /console/sent";
    visit
        .serve(method, LocalAccess::Case, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                ..
            } = v;
            let after = match (
                page.query
                    .get("after_ms")
                    .and_then(|a| a.parse::<i64>().ok()),
                page.query.get("after_id"),
            ) {
                (Some(submitted_at_ms), Some(id)) => Some(SentCursor {
                    submitted_at_ms,
                    message_id: id.clone(),
                }),
                _ => None,
            };
            match console
                .local
                .list_sent(auth.as_ref(), after.as_ref(), SENT_PAGE)
                .await
            {
                Ok(items) => {
                    let next = (items.len() == SENT_PAGE).then(|| items.last()).flatten();
                    let body = list_html(page.cat, &items, next, after.is_none());
                    page.answer(StatusCode::OK, page.cat.text("sent.title"), &body)
                }
                Err(error) => page.refused(&error),
            }
        })
        .await
}

fn list_html(cat: &Catalogue, items: &[SentItem], next: Option<&SentItem>, first: bool) -> String {
    let mut out = String::new();
    if items.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(cat.text("sent.empty")));
    } else {
        let _ = writeln!(
            out,
            "<table>\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\n<tbody>",
            esc(cat.text("sent.submitted")),
            esc(cat.text("sent.recipient")),
            esc(cat.text("sent.kind")),
            esc(cat.text("sent.purpose")),
            esc(cat.text("sent.state")),
            esc(cat.text("sent.message")),
        );
        for item in items {
            let _ = writeln!(
                out,
                "<tr><td><a href=\"/console/sent/{id}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{id}</code></td></tr>",
                esc(&when(cat, item.submitted_at_ms)),
                esc(&item.recipient),
                esc(kind(cat, item.kind)),
                esc(purpose(cat, item.purpose)),
                esc(delivery(cat, item.state)),
                id = esc(&item.message_id),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    if first && next.is_none() {
        return out;
    }
    out.push_str("<p>");
    if !first {
        let _ = write!(
            out,
            "<a href=\"/console/sent\">{}</a> ",
            esc(cat.text("sent.first"))
        );
    }
    if let Some(last) = next {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("after_ms", &last.submitted_at_ms.to_string())
            .append_pair("after_id", &last.message_id)
            .finish();
        let _ = write!(
            out,
            "<a href=\"/console/sent?{}\">{}</a>",
            esc(&query),
            esc(cat.text("sent.next"))
        );
    }
    out.push_str("</p>\n");
    out
}

/// `GET /console/sent/{message_id}`: one sent item.
async fn sent_item(Path(message_id): Path<String>, visit: Visit) -> Response {
    let method = "GET /console/sent/{message_id}";
    visit
        .serve(method, LocalAccess::Case, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                ..
            } = v;
            let done = page.done(&["sent"], "sent.done-");
            match item_body(&console, auth.as_ref(), page.cat, &message_id).await {
                Ok(body) => page.answer(
                    StatusCode::OK,
                    page.cat.text("sent.item-title"),
                    &format!("{done}{body}"),
                ),
                Err(error) => page.refused(&error),
            }
        })
        .await
}

/// The body of sent item `message_id`'s page: its delivery, its receipt, its history from the
/// other side, and (for a referral this node originated) the consent withdrawal form.
pub(super) async fn item_body(
    console: &Console,
    auth: Option<&LocalAuth>,
    cat: &'static Catalogue,
    message_id: &str,
) -> Result<String, ServiceError> {
    let req = pb::GetDeliveryRequest {
        message_id: message_id.to_owned(),
        wait_ms: 0,
    };
    let delivery_now = console.local.get_delivery(auth, req).await?;
    let header = delivery_now
        .envelope
        .as_ref()
        .and_then(|e| pb::EnvelopeHeader::decode(e.header.as_slice()).ok())
        .unwrap_or_default();
    let referral = header.kind == pb::MessageKind::Referral as i32
        || header.kind == pb::MessageKind::CaseTransfer as i32;
    let mut out = format!(
        "<p><a href=\"/console/sent\">{}</a></p>\n",
        esc(cat.text("sent.back"))
    );
    let categories: Vec<String> = header
        .data_categories
        .iter()
        .map(|c| {
            let c = pb::DataCategory::try_from(*c).unwrap_or(pb::DataCategory::Unspecified);
            word(cat, "category", "DATA_CATEGORY_", c.as_str_name()).to_owned()
        })
        .collect();
    out.push_str(&facts(&[
        (
            cat.text("sent.message"),
            format!("<code>{}</code>", esc(&delivery_now.message_id)),
        ),
        (cat.text("sent.recipient"), esc(&delivery_now.recipient)),
        (cat.text("sent.recipient-unit"), esc(&header.recipient_unit)),
        (cat.text("sent.kind"), esc(kind(cat, header.kind))),
        (cat.text("sent.purpose"), esc(purpose(cat, header.purpose))),
        (cat.text("consent.id"), esc(&header.consent_id)),
        (cat.text("consent.categories"), list(&categories)),
        (
            cat.text("sent.submitted"),
            esc(&when(cat, delivery_now.submitted_at_ms)),
        ),
        (
            cat.text("sent.state"),
            esc(delivery(cat, delivery_now.state)),
        ),
        (
            cat.text("sent.attempts"),
            esc(&delivery_now.attempts.to_string()),
        ),
        (cat.text("sent.last-error"), esc(&delivery_now.last_error)),
        (
            cat.text("sent.delivered"),
            esc(&when(cat, delivery_now.delivered_at_ms)),
        ),
    ]));
    let _ = writeln!(out, "<h2>{}</h2>", esc(cat.text("sent.receipt")));
    out.push_str(&receipt_html(cat, delivery_now.receipt.as_ref()));
    if referral {
        let status_req = pb::GetReferralStatusRequest {
            referral_id: delivery_now.message_id.clone(),
        };
        let status = console.local.get_referral_status(auth, status_req).await?;
        out.push_str(&super::views::history(cat, &status, "sent.no-history"));
        if !header.consent_id.is_empty() && header.custody.is_empty() {
            out.push_str(&super::compose::withdraw_form(
                cat,
                &delivery_now.message_id,
                &header.consent_id,
                &console.token(auth),
            ));
        }
    }
    Ok(out)
}

/// The receipt's signed statement, verified by this node before it was stored.
fn receipt_html(cat: &Catalogue, receipt: Option<&pb::Receipt>) -> String {
    let Some(receipt) = receipt else {
        return format!("<p>{}</p>\n", esc(cat.text("sent.no-receipt")));
    };
    let Ok(body) = pb::ReceiptBody::decode(receipt.body.as_slice()) else {
        return format!("<p>{}</p>\n", esc(cat.text("sent.no-receipt")));
    };
    let status = pb::ReceiptStatus::try_from(body.status).unwrap_or(pb::ReceiptStatus::Unspecified);
    let mut out = format!(
        "<p class=\"notice verified\">{}</p>\n",
        esc(&cat.fill("sent.receipt-verified", &[("receiver", &body.receiver)]))
    );
    out.push_str(&facts(&[
        (
            cat.text("sent.receipt-status"),
            esc(word(
                cat,
                "sent.receipt",
                "RECEIPT_STATUS_",
                status.as_str_name(),
            )),
        ),
        (cat.text("sent.receipt-by"), esc(&body.receiver)),
        (
            cat.text("sent.receipt-at"),
            esc(&when(cat, body.received_at_ms)),
        ),
        (
            cat.text("sent.receipt-key"),
            format!("<code>{}</code>", esc(&body.signing_key_id)),
        ),
        (
            cat.text("sent.receipt-digest"),
            format!("<code>{}</code>", hex::encode(&body.envelope_digest)),
        ),
        (
            cat.text("sent.receipt-signature"),
            format!("<code>{}</code>", hex::encode(&receipt.signature)),
        ),
        (cat.text("sent.receipt-reason"), esc(&body.refusal_reason)),
        (cat.text("sent.receipt-detail"), esc(&body.refusal_detail)),
    ]));
    out
}
