//! Family tracing: records and requests, their matches by band, confirmation and the agreed fields.
//!
//! `GET /console/tracing` lists the caller's unit's matches by band and its cases, with the
//! form that registers a record or a request (`POST /console/tracing/register`). A match has
//! its page, `GET /console/tracing/matches/{id}` (match ids are random, they name no child),
//! with the forms that confirm it or rule it out (`POST …/review`). Every page asks the
//! firewall (`LocalAccess::Case`) and then the `TracingCases` use cases, which decide who sees
//! what and what is released; the pages only render their answers.

mod register;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_proto::v1 as pb;
use kinbridge_service::local::{CASE_ROLES, LocalAuth, actor_of, authorize};
use kinbridge_service::{ErrorKind, ServiceError};

use super::form::Form;
use super::{Console, MAX_FORM_BYTES, Page, Visit, html, see_other};
use crate::problem::status_of_error;
use register::Draft;

/// The results a page announces after a form's `303`, by their `?done=` code.
const DONE: [&str; 3] = ["registered", "confirmed", "ruled-out"];

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/tracing", get(overview))
        .route(
            "/console/tracing/register",
            get(|| async { see_other("/console/tracing#register") }).post(register_case),
        )
        .route("/console/tracing/matches/{id}", get(show_match))
        .route(
            "/console/tracing/matches/{id}/review",
            axum::routing::post(review),
        )
}

/// The result notice a `?done=` code asks for, if it is one of ours.
fn done(page: &Page) -> String {
    page.done(&DONE, "tracing.done.")
}

/// The registration section: its heading, what it does, the form filled with `draft`.
fn register_section(page: &Page, draft: &Draft, token: &str) -> String {
    format!(
        "<h2 id=\"register\">{}</h2>\n<p>{}</p>\n{}",
        html::esc(page.cat.text("tracing.register.title")),
        html::esc(page.cat.text("tracing.register.intro")),
        register::form(page.cat, draft, token)
    )
}

/// Whether a refusal is of the caller itself (its role, its identity): then nothing of the
/// page is rendered, not even the form.
fn of_the_caller(error: &ServiceError) -> bool {
    error.kind() == ErrorKind::Unauthenticated || error.refusal_reason() == "role-denied"
}

/// `GET /console/tracing`: the unit's matches by band, its cases, the registration form.
async fn overview(visit: Visit) -> Response {
    let method = "GET /console/tracing";
    visit
        .serve(method, LocalAccess::Case, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                ..
            } = v;
            let cases = match console.tracing.list_tracing_cases(auth.as_ref()).await {
                Ok(cases) => cases,
                Err(error) => return page.refused(&error),
            };
            let matches = match console
                .tracing
                .list_tracing_matches(auth.as_ref(), pb::ListTracingMatchesRequest::default())
                .await
            {
                Ok(list) => list.matches,
                Err(error) => return page.refused(&error),
            };
            let body = format!(
                "{}{}{}",
                done(&page),
                view::overview(page.cat, &cases, &matches),
                register_section(&page, &Draft::default(), &console.token(auth.as_ref()))
            );
            page.answer(StatusCode::OK, page.cat.text("tracing.title"), &body)
        })
        .await
}

/// `POST /console/tracing/register`: the same origin and a valid CSRF token, then the
/// `RegisterTracingCase` use case; a `303` to the overview, or the form again, filled in as
/// typed, with the refusal.
async fn register_case(visit: Visit, body: Body) -> Response {
    let method = "POST /console/tracing/register";
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
            // A form from another site is not shown back: it is not what this user typed.
            if let Err(error) = Console::same_origin(&headers, &uri) {
                return page.refused(&console.local.refuse(&actor, error).await);
            }
            let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
                let error = ServiceError::invalid(
                    "too-large",
                    format!("a console form is at most {MAX_FORM_BYTES} bytes"),
                );
                return page.refused(&console.local.refuse(&actor, error).await);
            };
            let form = Form::parse(&bytes);
            let draft = Draft::of(&form);
            let answered = match console.check_token(&actor, form.get("csrf")) {
                Err(error) => Err(console.local.refuse(&actor, error).await),
                Ok(()) => match draft.request() {
                    Err(error) => Err(console.local.refuse(&actor, error).await),
                    Ok(req) => console
                        .tracing
                        .register_tracing_case(auth.as_ref(), req)
                        .await
                        .map(|_| ()),
                },
            };
            // A caller the use case would not take from at all gets no form back, even when it
            // is only its token that was refused.
            let may_register =
                authorize(auth.as_ref(), "register tracing cases", &CASE_ROLES).is_ok();
            match answered {
                Ok(()) => see_other("/console/tracing?done=registered"),
                Err(error) if of_the_caller(&error) || !may_register => page.refused(&error),
                Err(error) => {
                    let body = format!(
                        "{}{}",
                        html::refusal(page.cat, &error.refusal_reason(), error.message()),
                        register_section(&page, &draft, &console.token(auth.as_ref()))
                    );
                    page.answer(
                        status_of_error(&error),
                        page.cat.text("tracing.register.title"),
                        &body,
                    )
                }
            }
        })
        .await
}

/// `GET /console/tracing/matches/{id}`: one match, as the use case shows it.
async fn show_match(Path(id): Path<String>, visit: Visit) -> Response {
    let method = "GET /console/tracing/matches/{id}";
    visit
        .serve(method, LocalAccess::Case, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                ..
            } = v;
            match match_page(&console, auth.as_ref(), &page, &id, &done(&page)).await {
                Ok(body) => {
                    page.answer(StatusCode::OK, page.cat.text("tracing.match.title"), &body)
                }
                Err(error) => page.refused(&error),
            }
        })
        .await
}

/// The body of match `id`'s page, after `before` (a notice or a refusal).
async fn match_page(
    console: &Console,
    auth: Option<&LocalAuth>,
    page: &Page,
    id: &str,
    before: &str,
) -> Result<String, ServiceError> {
    let shown = console.tracing.show_tracing_match(auth, id).await?;
    Ok(format!(
        "{before}{}",
        view::one_match(page.cat, &shown, &console.token(auth))
    ))
}

/// `POST /console/tracing/matches/{id}/review`: the same origin and a valid CSRF token, the
/// box ticked, then the `ConfirmTracingMatch` use case; a `303` back to the match, or its page
/// with the refusal.
async fn review(Path(id): Path<String>, visit: Visit, body: Body) -> Response {
    let method = "POST /console/tracing/matches/{id}/review";
    visit.serve(method, LocalAccess::Case, move |v| async move {
        let Visit { console, auth, page, uri, headers } = v;
        let actor = actor_of(auth.as_ref());
        let form = match console.form(&headers, &uri, body, &actor).await {
            Ok(form) => form,
            Err(error) => return page.refused(&console.local.refuse(&actor, error).await),
        };
        let (confirm, done) = match form.get("action") {
            Some("confirm") => (true, "confirmed"),
            Some("rule-out") => (false, "ruled-out"),
            _ => {
                let error = ServiceError::invalid(
                    "unknown-action",
                    "the form asks for neither of: confirm, rule-out",
                );
                return page.refused(&console.local.refuse(&actor, error).await);
            }
        };
        let answered = if form.get("sure") == Some("yes") {
            let req = pb::ConfirmTracingMatchRequest {
                match_id: id.clone(),
                confirm,
            };
            console
                .tracing
                .confirm_tracing_match(auth.as_ref(), req)
                .await
                .map(|_| ())
        } else {
            let error = ServiceError::invalid(
                "review-not-ticked",
                "tick the box that says you checked the match against your case, then send the form again",
            );
            Err(console.local.refuse(&actor, error).await)
        };
        match answered {
            Ok(()) => see_other(&format!("/console/tracing/matches/{id}?done={done}")),
            Err(error)
                if of_the_caller(&error)
                    || matches!(
                        error.kind(),
                        ErrorKind::NotFound | ErrorKind::PermissionDenied
                    ) =>
            {
                page.refused(&error)
            }
            Err(error) => {
                let refusal = html::refusal(page.cat, &error.refusal_reason(), error.message());
                match match_page(&console, auth.as_ref(), &page, &id, &refusal).await {
                    Ok(body) => page.answer(
                        status_of_error(&error),
                        page.cat.text("tracing.match.title"),
                        &body,
                    ),
                    Err(_) => page.refused(&error),
                }
            }
        }
    })
    .await
}
