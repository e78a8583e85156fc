//! The console's one form target, `POST /console/inbox/{sequence}/status`: the same origin
//! and a valid CSRF token, then the workflow use case (`UpdateReferralStatus`); a `303` back
//! to the item with a result message, or the item page with the use case's refusal.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use kinbridge_core::firewall::LocalAccess;
use kinbridge_proto::v1 as pb;
use kinbridge_service::ServiceError;
use kinbridge_service::audit::serving_method;

use super::{Console, Page, html, sequence_of, views};
use crate::Caller;
use crate::problem::status_of;

/// The form's actions and the state each asks for.
pub(super) const ACTIONS: &[(&str, pb::ReferralState)] = &[
    ("accept", pb::ReferralState::Accepted),
    ("decline", pb::ReferralState::Declined),
    ("start", pb::ReferralState::InProgress),
    ("close", pb::ReferralState::Closed),
];

/// `POST /console/inbox/{sequence}/status`: the same origin and a valid CSRF token, then the
/// workflow use case; a `303` back to the item with a result message, or the item page with
/// the refusal.
pub(super) async fn change_status(
    State(console): State<Arc<Console>>,
    Extension(Caller(auth)): Extension<Caller>,
    Path(raw): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let page = Page::of(&uri, None, &headers, auth.as_ref());
    let method = "POST /console/inbox/{sequence}/status";
    serving_method(method.to_owned(), async move {
        if let Err(error) = console
            .admit(LocalAccess::Case, method, auth.as_ref())
            .await
        {
            return page.refused(&error);
        }
        let sequence = match sequence_of(&console, auth.as_ref(), &raw).await {
            Ok(sequence) => sequence,
            Err(error) => return page.refused(&error),
        };
        let actor = kinbridge_service::local::actor_of(auth.as_ref());
        let form = match console.form(&headers, &uri, body, &actor).await {
            Ok(form) => form,
            Err(error) => return page.refused(&console.local.refuse(&actor, error).await),
        };
        let Some((action, state)) = ACTIONS.iter().find(|(a, _)| Some(*a) == form.get("action"))
        else {
            let error = ServiceError::invalid(
                "unknown-action",
                "the form asks for none of: accept, decline, start, close",
            );
            return page.refused(&console.local.refuse(&actor, error).await);
        };
        let req = pb::UpdateReferralStatusRequest {
            sequence,
            state: *state as i32,
            code: form
                .get("code")
                .map(str::trim)
                .unwrap_or_default()
                .to_owned(),
        };
        match console
            .local
            .update_referral_status(auth.as_ref(), req)
            .await
        {
            Ok(_) => {
                let mut response = StatusCode::SEE_OTHER.into_response();
                let to = format!("/console/inbox/{sequence}?done={action}");
                if let Ok(to) = HeaderValue::from_str(&to) {
                    response.headers_mut().insert(header::LOCATION, to);
                }
                response
            }
            Err(error) => match console.item_and_status(auth.as_ref(), sequence).await {
                Ok((item, status)) => {
                    let body = format!(
                        "{}{}",
                        html::refusal(page.cat, &error.refusal_reason(), error.message()),
                        views::item(
                            page.cat,
                            &item,
                            status.as_ref(),
                            &console.token(auth.as_ref())
                        )
                    );
                    let title = page
                        .cat
                        .fill("item.title", &[("sequence", &sequence.to_string())]);
                    page.answer(status_of(error.kind()), &title, &body)
                }
                Err(_) => page.refused(&error),
            },
        }
    })
    .await
}
