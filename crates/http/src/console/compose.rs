//! The new referral or case transfer form, with its consent pre-check, and consent withdrawal.
//!
//! `GET /console/referrals/new` renders the form (the referral by data category, the consent
//! scope, a hidden idempotency key drawn at random). `POST /console/referrals/new` with
//! `action=check` asks the service's consent pre-check (`LocalCases::check_consent`) and shows
//! every gap, sending nothing; with `action=send` it submits the referral under the form's
//! idempotency key and answers `303` to the sent item (or the form again, filled in, with the
//! refusal). `POST /console/sent/{message_id}/withdraw` withdraws the consent named in its body.
//! Nothing typed goes into a URL.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use kinbridge_core::firewall::{LocalAccess, local_client_may};
use kinbridge_service::ServiceError;
use kinbridge_service::local::actor_of;
use ring::rand::{SecureRandom, SystemRandom};

mod page;
mod request;
mod withdraw;

pub(super) use withdraw::withdraw_form;

use super::form::Form;
use super::{Console, Visit, html, see_other};
use crate::problem::status_of_error;
use page::{Filled, FormView, check_html, form_html};
use request::request_of;

/// Largest body of the referral form (it carries free text in every category).
pub const MAX_COMPOSE_FORM_BYTES: usize = 64 * 1024;

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/referrals/new", get(new_form).post(post_form))
        .route(
            "/console/sent/{message_id}/withdraw",
            post(withdraw::withdraw),
        )
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

/// `GET /console/referrals/new`: the empty form.
async fn new_form(visit: Visit) -> Response {
    let method = "GET /console/referrals/new";
    visit
        .serve(method, LocalAccess::Submit, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                ..
            } = v;
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

/// Reads a form body of at most [`MAX_COMPOSE_FORM_BYTES`] from the console's own origin
/// carrying `actor`'s CSRF token; or the refusal, with the form if only its token was wrong
/// (an expired token must not lose an hour's typing: the form comes back with a fresh one).
async fn compose_form(
    console: &Console,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
    actor: &str,
) -> Result<Form, (ServiceError, Option<Form>)> {
    Console::same_origin(headers, uri).map_err(|e| (e, None))?;
    let bytes = axum::body::to_bytes(body, MAX_COMPOSE_FORM_BYTES)
        .await
        .map_err(|_| {
            let error = ServiceError::invalid(
                "too-large",
                format!("the referral form is at most {MAX_COMPOSE_FORM_BYTES} bytes"),
            );
            (error, None)
        })?;
    let form = Form::parse(&bytes);
    match console.check_token(actor, form.get("csrf")) {
        Ok(()) => Ok(form),
        Err(error) => Err((error, Some(form))),
    }
}

/// `POST /console/referrals/new`: `action=check` shows the consent pre-check, `action=send`
/// submits; either way nothing typed is lost.
async fn post_form(visit: Visit, body: Body) -> Response {
    let method = "POST /console/referrals/new";
    visit.serve(method, LocalAccess::Submit, move |v| async move {
        let Visit { console, auth, page, uri, headers } = v;
        let actor = actor_of(auth.as_ref());
        let (form, token_refused) = match compose_form(&console, &headers, &uri, body, &actor).await
        {
            Ok(form) => (form, None),
            Err((error, Some(form))) => (form, Some(console.local.refuse(&actor, error).await)),
            Err((error, None)) => {
                return page.refused(&console.local.refuse(&actor, error).await);
            }
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
        if let Some(error) = token_refused {
            // Nothing is checked or sent; the form comes back with a valid token.
            return again(status_of_error(&error), refusal(&error));
        }
        let action = form.get("action").unwrap_or_default();
        if action != "check" && action != "send" {
            let error =
                ServiceError::invalid("unknown-action", "the form asks for neither check nor send");
            let error = console.local.refuse(&actor, error).await;
            return again(status_of_error(&error), refusal(&error));
        }
        let req = match request_of(&form) {
            Ok(req) => req,
            Err(error) => {
                let error = console.local.refuse(&actor, error).await;
                return again(status_of_error(&error), refusal(&error));
            }
        };
        if action == "check" {
            return match console.local.check_consent(auth.as_ref(), &req).await {
                Ok(check) => again(
                    StatusCode::OK,
                    check_html(page.cat, &check, &req.recipient, req.purpose),
                ),
                Err(error) => again(status_of_error(&error), refusal(&error)),
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
            Err(error) => again(status_of_error(&error), refusal(&error)),
        }
    })
    .await
}
