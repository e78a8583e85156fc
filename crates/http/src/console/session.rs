//! The console's idle session: a console session ends after a time without a request.
//!
//! The console has no password: the browser's client certificate is the identity, and it
//! stays in the browser. On a shared computer, a console left open must not keep showing
//! case data to the next person at the keyboard, so a session is a cookie,
//! [`SESSION_COOKIE`], holding the time of the last request and the client's name, with an
//! HMAC-SHA-256 under a key drawn at random when the node starts. Every console request of a
//! client whose certificate the node accepts needs a valid cookie of that client, used within
//! the node's idle limit (`[console] idle_timeout_secs`); it is then refreshed. Without one
//! (a first visit, another client's cookie, a forged one, or one idle too long) the request
//! is answered `401` with a page that shows no case data, only a button "Continue as
//! <client>" (`POST /console/session`, CSRF-checked) that starts a new session and goes back
//! (`303`) to the page asked for. The stylesheet and the session start itself need no
//! session; a request without an accepted certificate goes on to its handler, which refuses
//! it.
//!
//! A form sent after the session ended is not lost: typing makes no request, so a referral
//! typed on a slow afternoon can outlast the idle limit. If the form (URL-encoded, within the
//! referral form's bound) carries this client's valid CSRF token, the session page keeps its
//! fields, hidden (the page is `no-store`, and nothing of it is in any URL), and its button
//! starts the session and sends the form again as typed (`307` to where it was sent). A form
//! without a valid token, or a file upload, is not kept: the button goes to the console's
//! home.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_service::identity::Role;
use kinbridge_service::local::authorize;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::compose::MAX_COMPOSE_FORM_BYTES;
use super::form::Form;
use super::html::esc;
use super::{Console, Page, Visit};
use crate::Caller;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "kinbridge-session";
/// Where a session is started.
pub const START_PATH: &str = "/console/session";

/// The console's sessions: the key their cookies are signed with and the idle limit.
pub struct Sessions {
    /// `None` if the system gave no randomness at start: then no session is valid.
    key: Option<hmac::Key>,
    idle: Duration,
}

/// What a request's session cookie says.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The client's own, used within the idle limit.
    Fresh,
    /// The client's own, unused for longer than the limit.
    Idle,
    /// None, or not this client's, or not this node's.
    Absent,
}

impl Sessions {
    /// Sessions under a fresh random key that end after `idle` without a request.
    pub fn new(idle: Duration) -> Self {
        let mut bytes = [0u8; 32];
        let key = SystemRandom::new()
            .fill(&mut bytes)
            .ok()
            .map(|()| hmac::Key::new(hmac::HMAC_SHA256, &bytes));
        Self { key, idle }
    }

    /// The cookie value for `client`, last active at `at_ms`.
    fn value(&self, client: &str, at_ms: u64) -> Option<String> {
        let key = self.key.as_ref()?;
        let tag = hmac::sign(key, &message(client, at_ms));
        Some(format!(
            "{at_ms}.{}.{}",
            hex::encode(client),
            hex::encode(tag.as_ref())
        ))
    }

    /// The `Set-Cookie` header of a session of `client` active now.
    fn cookie(&self, client: &str) -> Option<HeaderValue> {
        let value = self.value(client, now_ms())?;
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={value}; Path=/console; Secure; HttpOnly; SameSite=Strict"
        ))
        .ok()
    }

    /// What the cookie `value` says of `client` at `now_ms`.
    fn verdict(&self, client: &str, value: Option<&str>, now_ms: u64) -> Verdict {
        let (Some(key), Some(value)) = (&self.key, value) else {
            return Verdict::Absent;
        };
        let mut parts = value.splitn(3, '.');
        let (Some(at), Some(name), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            return Verdict::Absent;
        };
        let (Ok(at_ms), Ok(name), Ok(tag)) =
            (at.parse::<u64>(), hex::decode(name), hex::decode(tag))
        else {
            return Verdict::Absent;
        };
        if name != client.as_bytes() || hmac::verify(key, &message(client, at_ms), &tag).is_err() {
            return Verdict::Absent;
        }
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(at_ms) > idle_ms {
            Verdict::Idle
        } else {
            Verdict::Fresh
        }
    }

    /// The idle limit in whole minutes (at least 1), for the page that says it.
    fn minutes(&self) -> u64 {
        self.idle.as_secs().div_ceil(60).max(1)
    }
}

/// What a session cookie signs: a label, the time and the client name, unambiguous.
fn message(client: &str, at_ms: u64) -> Vec<u8> {
    let mut m = b"kinbridge-console-session\0".to_vec();
    m.extend_from_slice(&at_ms.to_be_bytes());
    m.extend_from_slice(client.as_bytes());
    m
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The value of the session cookie among a request's `Cookie` headers.
fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// This part's routes, merged into the console's router.
pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route(START_PATH, post(start))
}

/// Lets a request through to the console if its session is fresh (and refreshes it), or
/// answers the page that starts a new one.
pub(super) async fn idle(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/console/style.css" || path == START_PATH {
        return next.run(request).await;
    }
    let client = match request.extensions().get::<Caller>() {
        Some(Caller(Some(Ok(client)))) => client.name.clone(),
        // No accepted certificate: the handler refuses it and shows nothing.
        _ => return next.run(request).await,
    };
    let verdict = console
        .sessions
        .verdict(&client, cookie_of(request.headers()), now_ms());
    if verdict == Verdict::Fresh {
        let mut response = next.run(request).await;
        if let Some(cookie) = console.sessions.cookie(&client) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        return response;
    }
    let (parts, body) = request.into_parts();
    // A form this client sent, kept to be sent again once the session starts.
    let kept = if parts.method == axum::http::Method::POST {
        kept_form(&console, &client, &parts.headers, body).await
    } else {
        None
    };
    // Back to the page asked for (or the form sent again); a form not kept: the home page.
    let to = if parts.method == axum::http::Method::GET || kept.is_some() {
        back_to(Some(parts.uri.path()))
    } else {
        "/console/"
    };
    let auth = parts
        .extensions
        .get::<Caller>()
        .and_then(|Caller(auth)| auth.clone());
    let query = parts.uri.query().map(str::to_owned);
    let page = Page::of(&parts.uri, query.as_deref(), &parts.headers, auth.as_ref());
    let cat = page.cat;
    let (title, text) = if verdict == Verdict::Idle {
        (
            cat.text("session.ended.title"),
            cat.fill(
                "session.ended.text",
                &[(
                    "minutes",
                    &super::html::number(cat, console.sessions.minutes()),
                )],
            ),
        )
    } else {
        (
            cat.text("session.start.title"),
            cat.text("session.start.text").to_owned(),
        )
    };
    let mut hidden = String::new();
    match &kept {
        Some(form) => {
            for (name, value) in form.fields().filter(|(n, _)| !RESERVED.contains(n)) {
                hidden.push_str(&format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    esc(name),
                    esc(value)
                ));
            }
            hidden.push_str("<input type=\"hidden\" name=\"resend\" value=\"1\">");
        }
        None => hidden.push_str(&format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(&console.token(auth.as_ref()))
        )),
    }
    let kept_text = if kept.is_some() {
        format!("<p>{}</p>\n", esc(cat.text("session.kept")))
    } else {
        String::new()
    };
    let body = format!(
        "<p>{}</p>\n{kept_text}<form method=\"post\" action=\"{START_PATH}\">{hidden}\
         <input type=\"hidden\" name=\"to\" value=\"{}\">\
         <button type=\"submit\">{}</button></form>\n<p><small>{}</small></p>\n",
        esc(&text),
        esc(to),
        esc(&cat.fill("session.continue", &[("client", &client)])),
        esc(cat.text("session.shared")),
    );
    page.answer(StatusCode::UNAUTHORIZED, title, &body)
}

/// The fields the session form sets itself, never taken from a kept form.
const RESERVED: [&str; 2] = ["to", "resend"];

/// The form `body` if it is URL-encoded, within [`MAX_COMPOSE_FORM_BYTES`] and carries
/// `client`'s valid CSRF token (field `csrf`): a form this client sent from the console.
async fn kept_form(
    console: &Console,
    client: &str,
    headers: &HeaderMap,
    body: Body,
) -> Option<Form> {
    let urlencoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !urlencoded {
        return None;
    }
    let bytes = axum::body::to_bytes(body, MAX_COMPOSE_FORM_BYTES)
        .await
        .ok()?;
    let form = Form::parse(&bytes);
    console.check_token(client, form.get("csrf")).ok()?;
    Some(form)
}

/// Where to go back to after a session starts: the console path asked for, or the console's
/// home if it is not one.
fn back_to(to: Option<&str>) -> &str {
    match to {
        Some(to)
            if to.starts_with("/console/")
                && !to.contains("//")
                && to
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'\\' | b'?' | b'#')) =>
        {
            to
        }
        _ => "/console/",
    }
}

/// `POST /console/session`: starts a session for the certificate's client (a form from the
/// console's own origin with the client's CSRF token) and goes back to the page asked for.
async fn start(visit: Visit, body: Body) -> Response {
    let method = "POST /console/session";
    visit
        .serve(method, LocalAccess::NoCaseData, move |v| async move {
            let Visit {
                console,
                auth,
                page,
                uri,
                headers,
            } = v;
            let roles = [Role::Caseworker, Role::System, Role::Auditor, Role::Admin];
            let client = match authorize(auth.as_ref(), "start a console session", &roles) {
                Ok(client) => client,
                Err((actor, error)) => {
                    return page.refused(&console.local.refuse(&actor, error).await);
                }
            };
            let form = match console
                .form_within(&headers, &uri, body, &client.name, MAX_COMPOSE_FORM_BYTES)
                .await
            {
                Ok(form) => form,
                Err(error) => {
                    return page.refused(&console.local.refuse(&client.name, error).await);
                }
            };
            // A kept form goes again where it was sent, as typed: a `307` keeps the method and
            // the body (this form's fields are the kept form's, with `to` and `resend`).
            let to = back_to(form.get("to"));
            let status = if form.get("resend") == Some("1") && to != "/console/" {
                StatusCode::TEMPORARY_REDIRECT
            } else {
                StatusCode::SEE_OTHER
            };
            let mut response = status.into_response();
            let headers = response.headers_mut();
            if let Ok(to) = HeaderValue::from_str(to) {
                headers.insert(header::LOCATION, to);
            }
            if let Some(cookie) = console.sessions.cookie(&client.name) {
                headers.append(header::SET_COOKIE, cookie);
            }
            tracing::info!(client = %client.name, "console session started");
            response
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_clients_own_this_nodes_own_and_ends_when_idle() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let other = Sessions::new(Duration::from_secs(60));
        let t = 1_764_458_040_000;
        let value = sessions.value("mw-caseworker", t).expect("a key");
        let fresh = |v: &str, now| sessions.verdict("mw-caseworker", Some(v), now);
        assert_eq!(fresh(&value, t), Verdict::Fresh);
        assert_eq!(fresh(&value, t + 60_000), Verdict::Fresh);
        assert_eq!(fresh(&value, t + 60_001), Verdict::Idle);
        assert_eq!(
            sessions.verdict("mw-auditor", Some(&value), t),
            Verdict::Absent
        );
        assert_eq!(
            other.verdict("mw-caseworker", Some(&value), t),
            Verdict::Absent
        );
        assert_eq!(sessions.verdict("mw-caseworker", None, t), Verdict::Absent);
        let later = value.replacen(&t.to_string(), &(t + 1000).to_string(), 1);
        assert_eq!(fresh(&later, t + 1000), Verdict::Absent, "a moved time");
        for bad in ["", "x", "1.2.3", "..", "1.zz.00"] {
            assert_eq!(fresh(bad, t), Verdict::Absent, "{bad}");
        }
        assert_eq!(sessions.minutes(), 1);
        assert_eq!(Sessions::new(Duration::from_secs(900)).minutes(), 15);
    }

    #[test]
    fn a_session_goes_back_only_to_a_console_path() {
        assert_eq!(back_to(Some("/console/inbox/3")), "/console/inbox/3");
        assert_eq!(back_to(Some("/console/admin")), "/console/admin");
        for bad in [
            None,
            Some("https://evil.example/console/"),
            Some("//evil.example/console/"),
            Some("/console//evil"),
            Some("/consolex"),
            Some("/console/\\evil"),
            Some("/console/inbox?x=1"),
            Some("/console/a b"),
        ] {
            assert_eq!(back_to(bad), "/console/", "{bad:?}");
        }
    }
}
