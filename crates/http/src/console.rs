//! The web console: server-rendered HTML pages for caseworkers and case-management staff,
//! served under `/console/` on the HTTP face's listener, behind the same mutual TLS (the
//! browser's client certificate is the identity), the same firewall verdict and the same use
//! cases as the JSON face. No JavaScript: every flow is links and plain form `POST`s, each
//! answered with a `303` back to the page and a result message.
//!
//! Every response carries a strict Content-Security-Policy (nothing but the node's own
//! stylesheet and forms), `Cache-Control: no-store`, `nosniff` and `same-origin` referrers
//! ([`SECURITY_HEADERS`]). Every form carries a CSRF token bound to the client's name
//! ([`csrf`]). The words come from message catalogues ([`catalogue`]), one per language.

mod admin;
mod audit;
pub mod catalogue;
mod compose;
pub mod csrf;
mod family;
pub mod form;
pub mod html;
mod sent;
mod session;
mod status_form;
pub mod views;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_core::firewall::local_client_may;
use kinbridge_proto::v1 as pb;
use kinbridge_service::admin::{ADMIN_ROLES, Administration};
use kinbridge_service::audit::serving_method;
use kinbridge_service::audit_trail::{AUDIT_ROLES, AuditTrail};
use kinbridge_service::identity::Role;
use kinbridge_service::local::{CASE_ROLES, LocalAuth, LocalCases, authorize, firewall_verdict};
use kinbridge_service::statistics::{REPORT_ROLES, Statistics};
use kinbridge_service::tracing_cases::TracingCases;
use kinbridge_service::{Node, ServiceError};

use crate::Caller;
use crate::problem::status_of_error;
use catalogue::{Catalogue, LANGUAGE_COOKIE};
use csrf::CsrfKey;

/// The headers on every console response: a Content-Security-Policy that allows only the
/// node's own stylesheet and form targets (no script at all, no frames, no base), no caching
/// (case data must not stay in a shared laptop's cache), no content sniffing, and no referrer
/// sent to any other site (`same-origin`, not `no-referrer`: under `no-referrer` a browser
/// sends `Origin: null` with the console's own form posts, and the origin check needs it).
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
];

/// Items on one inbox page.
pub const INBOX_PAGE: u32 = 25;
/// Largest form body read.
pub const MAX_FORM_BYTES: usize = 8 * 1024;

/// The console's stylesheet (left-to-right and right-to-left alike).
const STYLE: &str = include_str!("console/style.css");

/// A part of the console, as the navigation links it: its path, the catalogue key of its
/// name, and who may open it: the firewall class and the roles of the use cases it calls
/// (the service layer's own lists). A link a caller may not follow is not rendered.
pub struct Section {
    /// Where it is.
    pub path: &'static str,
    /// The catalogue key of its name.
    pub key: &'static str,
    /// What its pages return, for the firewall.
    pub access: LocalAccess,
    /// The roles its use cases admit.
    pub roles: &'static [Role],
}

/// Every part of the console, in the navigation's order.
pub const SECTIONS: &[Section] = &[
    Section {
        path: "/console/inbox",
        key: "nav.inbox",
        access: LocalAccess::Case,
        roles: &CASE_ROLES,
    },
    Section {
        path: "/console/referrals/new",
        key: "nav.new-referral",
        access: LocalAccess::Submit,
        roles: &CASE_ROLES,
    },
    Section {
        path: "/console/sent",
        key: "nav.sent",
        access: LocalAccess::Case,
        roles: &CASE_ROLES,
    },
    Section {
        path: "/console/tracing",
        key: "nav.tracing",
        access: LocalAccess::Case,
        roles: &CASE_ROLES,
    },
    Section {
        path: "/console/audit",
        key: "nav.audit",
        access: LocalAccess::Case,
        roles: &AUDIT_ROLES,
    },
    Section {
        path: "/console/statistics",
        key: "nav.statistics",
        access: LocalAccess::Aggregate,
        roles: &REPORT_ROLES,
    },
    Section {
        path: "/console/admin",
        key: "nav.admin",
        access: LocalAccess::Operations,
        roles: &ADMIN_ROLES,
    },
];

/// The sections the client `auth` proves may open.
pub fn sections_for(auth: Option<&LocalAuth>) -> Vec<&'static Section> {
    match auth {
        Some(Ok(client)) => SECTIONS
            .iter()
            .filter(|s| local_client_may(s.access, &client.tags) && s.roles.contains(&client.role))
            .collect(),
        _ => Vec::new(),
    }
}

/// What every console request shares.
struct Console {
    node_id: String,
    local: LocalCases,
    tracing: TracingCases,
    audit: AuditTrail,
    statistics: Statistics,
    admin: Administration,
    /// `None` if the system gave no randomness at start: then every form is refused.
    csrf: Option<CsrfKey>,
    /// The idle sessions' key and limit.
    sessions: session::Sessions,
}

/// The console's routes, to merge into the HTTP face's router; a session ends after `idle`
/// without a request.
pub(crate) fn router(node: &Arc<Node>, idle: std::time::Duration) -> Router {
    let console = Arc::new(Console {
        node_id: node.node_id.to_string(),
        local: LocalCases::new(Arc::clone(node)),
        tracing: TracingCases::new(Arc::clone(node)),
        audit: AuditTrail::new(Arc::clone(node)),
        statistics: Statistics::new(Arc::clone(node)),
        admin: Administration::new(Arc::clone(node)),
        csrf: CsrfKey::random(),
        sessions: session::Sessions::new(idle),
    });
    if console.csrf.is_none() {
        tracing::error!(
            "no randomness for the console's CSRF key: every console form will be refused"
        );
    }
    Router::new()
        .route(
            "/console",
            get(|| async { redirect(StatusCode::PERMANENT_REDIRECT, "/console/") }),
        )
        .route("/console/", get(home))
        .route("/console/style.css", get(style))
        .route("/console/inbox", get(inbox))
        .route("/console/inbox/{sequence}", get(item))
        .route(
            "/console/inbox/{sequence}/status",
            axum::routing::post(status_form::change_status),
        )
        .merge(compose::routes())
        .merge(sent::routes())
        .merge(family::routes())
        .merge(audit::routes())
        .merge(admin::routes())
        .merge(session::routes())
        .route("/console/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            session::idle,
        ))
        .layer(axum::middleware::map_response(secure))
        .with_state(console)
}

/// Adds [`SECURITY_HEADERS`] to a console response.
async fn secure(mut response: Response) -> Response {
    for (name, value) in SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    response
}

/// One request's language and where it was made.
struct Page {
    cat: &'static Catalogue,
    /// The cookie that keeps a language chosen with `?lang=`.
    set_cookie: Option<String>,
    path: String,
    query: HashMap<String, String>,
    /// The sections the caller may open, for the navigation.
    sections: Vec<&'static Section>,
}

impl Page {
    fn of(uri: &Uri, query: Option<&str>, headers: &HeaderMap, auth: Option<&LocalAuth>) -> Self {
        let query: HashMap<String, String> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let chosen = query.get("lang").map(String::as_str);
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == LANGUAGE_COOKIE)
            .map(|(_, value)| value);
        let accept = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        let cat = catalogue::choose(chosen, cookie, accept);
        let set_cookie = chosen.and_then(catalogue::find).map(|c| {
            format!(
                "{LANGUAGE_COOKIE}={}; Path=/console; Secure; HttpOnly; SameSite=Strict; Max-Age=31536000",
                c.code
            )
        });
        Self {
            cat,
            set_cookie,
            path: uri.path().to_owned(),
            query,
            sections: sections_for(auth),
        }
    }

    /// The page `title` with `body`, answered with `status`.
    fn answer(&self, status: StatusCode, title: &str, body: &str) -> Response {
        let mut response = (
            status,
            html::page(self.cat, title, &self.path, &self.sections, body),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(
            header::CONTENT_LANGUAGE,
            HeaderValue::from_static(self.cat.code),
        );
        if let Some(cookie) = self
            .set_cookie
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.insert(header::SET_COOKIE, cookie);
        }
        response
    }

    /// The result notice the query's `?done=` code asks for (the text of catalogue key
    /// `prefix` + code) if it is one of `codes`; else nothing.
    fn done(&self, codes: &[&str], prefix: &str) -> String {
        self.query
            .get("done")
            .filter(|d| codes.contains(&d.as_str()))
            .map(|d| html::notice(self.cat.text(&format!("{prefix}{d}"))))
            .unwrap_or_default()
    }

    /// The page of a refusal: its reason and message, with the status of its kind.
    fn refused(&self, error: &ServiceError) -> Response {
        let body = html::refusal(self.cat, &error.refusal_reason(), error.message());
        self.answer(
            status_of_error(error),
            self.cat.text("refused.title"),
            &body,
        )
    }
}

/// What every console handler is given: the console, the caller (the certificate's client,
/// `None` if the connection carried none), the page in the caller's language, and the request's
/// URI and headers (for a form's origin check). A form post's page ignores any query string.
pub(super) struct Visit {
    console: Arc<Console>,
    auth: Option<LocalAuth>,
    page: Page,
    uri: Uri,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<Console>> for Visit {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let auth = parts
            .extensions
            .get::<Caller>()
            .and_then(|Caller(auth)| auth.clone());
        let query = if parts.method == Method::POST {
            None
        } else {
            parts.uri.query()
        };
        let page = Page::of(&parts.uri, query, &parts.headers, auth.as_ref());
        Ok(Self {
            console: Arc::clone(console),
            auth,
            page,
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

impl Visit {
    /// The caller's proof of who it is, if any.
    fn auth(&self) -> Option<&LocalAuth> {
        self.auth.as_ref()
    }

    /// Serves `method` of firewall class `access`: a refusal (recorded) is answered with its
    /// page, else `answer` answers.
    async fn serve<F, Fut>(self, method: &'static str, access: LocalAccess, answer: F) -> Response
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = Response>,
    {
        serving_method(method.to_owned(), async move {
            if let Err(error) = self.console.admit(access, method, self.auth()).await {
                return self.page.refused(&error);
            }
            answer(self).await
        })
        .await
    }
}

/// A `303` to `to` (a form's answer: the page again, with its `?done=` result).
fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(to) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, to);
    }
    response
}

fn redirect(status: StatusCode, to: &'static str) -> Response {
    let mut response = status.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

impl Console {
    /// The firewall's verdict on `method` of class `access` for `auth`; a refusal is audited.
    async fn admit(
        &self,
        access: LocalAccess,
        method: &str,
        auth: Option<&LocalAuth>,
    ) -> Result<(), ServiceError> {
        match firewall_verdict(access, method, auth) {
            Ok(()) => Ok(()),
            Err((actor, error)) => Err(self.local.refuse(&actor, error).await),
        }
    }

    /// One inbox item and, for a referral, where it stands.
    async fn item_and_status(
        &self,
        auth: Option<&LocalAuth>,
        sequence: u64,
    ) -> Result<(pb::InboxItem, Option<pb::GetReferralStatusResponse>), ServiceError> {
        let item = self.local.show_inbox_item(auth, sequence).await?;
        let referral = item.kind == pb::MessageKind::Referral as i32
            || item.kind == pb::MessageKind::CaseTransfer as i32;
        let status = if referral {
            let req = pb::GetReferralStatusRequest {
                referral_id: item.message_id.clone(),
            };
            Some(self.local.get_referral_status(auth, req).await?)
        } else {
            None
        };
        Ok((item, status))
    }

    /// The CSRF token for the caller's forms.
    fn token(&self, auth: Option<&LocalAuth>) -> String {
        match (auth, &self.csrf) {
            (Some(Ok(client)), Some(key)) => key.token(&client.name),
            _ => String::new(),
        }
    }
}

async fn style() -> Response {
    let mut response = STYLE.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    response
}

async fn not_found(Visit { page, .. }: Visit) -> Response {
    let body = format!("<p>{}</p>\n", html::esc(page.cat.text("notfound.text")));
    page.answer(
        StatusCode::NOT_FOUND,
        page.cat.text("notfound.title"),
        &body,
    )
}

/// `/console/`: who the caller is and where to go.
async fn home(visit: Visit) -> Response {
    visit
        .serve("GET /console/", LocalAccess::NoCaseData, |v| async move {
            let roles = [Role::Caseworker, Role::System, Role::Auditor, Role::Admin];
            let client = match authorize(v.auth(), "open the console", &roles) {
                Ok(client) => client,
                Err((actor, error)) => {
                    return v.page.refused(&v.console.local.refuse(&actor, error).await);
                }
            };
            let body = views::home(v.page.cat, &v.console.node_id, &client, &v.page.sections);
            v.page
                .answer(StatusCode::OK, v.page.cat.text("home.title"), &body)
        })
        .await
}

/// `/console/inbox`: a page of the caller's inbox, after the `after` sequence.
async fn inbox(visit: Visit) -> Response {
    visit
        .serve("GET /console/inbox", LocalAccess::Case, |v| async move {
            let Visit {
                console,
                auth,
                page,
                ..
            } = v;
            let after = page
                .query
                .get("after")
                .and_then(|a| a.parse::<u64>().ok())
                .unwrap_or(0);
            let req = pb::ListInboxRequest {
                after_sequence: after,
                limit: INBOX_PAGE,
                include_acknowledged: true,
            };
            match console.local.list_inbox(auth.as_ref(), req).await {
                Ok(list) => {
                    let next = (list.items.len() == INBOX_PAGE as usize)
                        .then(|| list.items.last().map(|i| i.sequence))
                        .flatten();
                    let body = views::inbox(page.cat, &list.items, next, after == 0);
                    page.answer(StatusCode::OK, page.cat.text("inbox.title"), &body)
                }
                Err(error) => page.refused(&error),
            }
        })
        .await
}

/// The sequence in a path, or the refusal of one that is not a number.
async fn sequence_of(
    console: &Console,
    auth: Option<&LocalAuth>,
    raw: &str,
) -> Result<u64, ServiceError> {
    match raw.parse::<u64>() {
        Ok(sequence) => Ok(sequence),
        Err(_) => {
            let actor = kinbridge_service::local::actor_of(auth);
            let error = ServiceError::invalid(
                "bad-sequence",
                "an inbox item is named by its sequence number, e.g. /console/inbox/12",
            );
            Err(console.local.refuse(&actor, error).await)
        }
    }
}

/// `/console/inbox/{sequence}`: one item, its history and the forms to move it on.
async fn item(Path(raw): Path<String>, visit: Visit) -> Response {
    let method = "GET /console/inbox/{sequence}";
    visit
        .serve(method, LocalAccess::Case, |v| async move {
            let Visit {
                console,
                auth,
                page,
                ..
            } = v;
            let sequence = match sequence_of(&console, auth.as_ref(), &raw).await {
                Ok(sequence) => sequence,
                Err(error) => return page.refused(&error),
            };
            let actions: Vec<&str> = status_form::ACTIONS.iter().map(|(a, _)| *a).collect();
            let done = page.done(&actions, "done.");
            match console.item_and_status(auth.as_ref(), sequence).await {
                Ok((item, status)) => {
                    let body = format!(
                        "{}{}",
                        done,
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
                    page.answer(StatusCode::OK, &title, &body)
                }
                Err(error) => page.refused(&error),
            }
        })
        .await
}
