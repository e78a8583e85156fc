//! The console's one form target, `POST /console/inbox/{sequence}/status`: the same origin
//! and a valid CSRF token, then the workflow use case (`UpdateReferralStatus`); a `303` back
//! to the item with a result message, or the item page with the use case's refusal.

use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_proto::v1 as pb;
use kinbridge_service::ServiceError;

use super::{Visit, html, see_other, sequence_of, views};
use crate::problem::status_of_error;

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
pub(super) async fn change_status(Path(raw): Path<String>, visit: Visit, body: Body) -> Response {
    let method = "POST /console/inbox/{sequence}/status";
    visit
        .serve(method, LocalAccess::Case, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                uri,
                headers,
            } = v;
            let sequence = match sequence_of(&console, auth.as_ref(), &raw).await {
                Ok(sequence) => sequence,
                Err(error) => return page.refused(&error),
            };
            let actor = kinbridge_service::local::actor_of(auth.as_ref());
            let form = match console.form(&headers, &uri, body, &actor).await {
                Ok(form) => form,
                Err(error) => return page.refused(&console.local.refuse(&actor, error).await),
            };
            let Some((action, state)) =
                ACTIONS.iter().find(|(a, _)| Some(*a) == form.get("action"))
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
                Ok(_) => see_other(&format!("/console/inbox/{sequence}?done={action}")),
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
                        page.answer(status_of_error(&error), &title, &body)
                    }
                    Err(_) => page.refused(&error),
                },
            }
        })
        .await
}
