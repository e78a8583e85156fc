//! A console form's `POST`: from the console's own origin, carrying the caller's CSRF token,
//! within [`MAX_FORM_BYTES`](super::MAX_FORM_BYTES); its fields in order (checkboxes repeat a
//! name).

use axum::body::Body;
use axum::http::{HeaderMap, Uri, header};
use kinbridge_service::{ErrorKind, ServiceError};

use super::{Console, MAX_FORM_BYTES, csrf};

/// A form's fields, in the order sent; a name may repeat (a group of checkboxes).
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// The fields of an `application/x-www-form-urlencoded` body.
    pub fn parse(bytes: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of the field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every field, in the order sent.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every value of the field `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Console {
    /// Refuses a `POST` whose `Origin` is another site's (a request without one passes: the
    /// CSRF token still binds it).
    pub(super) fn same_origin(headers: &HeaderMap, uri: &Uri) -> Result<(), ServiceError> {
        let origin = headers
            .get(header::ORIGIN)
            .map(|o| o.to_str().unwrap_or("\u{0}"));
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()));
        if csrf::same_origin(origin, host) {
            Ok(())
        } else {
            Err(ServiceError::refused(
                ErrorKind::PermissionDenied,
                "cross-origin",
                "this form was sent from another site's page; open the console at this node's address and send it from there",
            ))
        }
    }

    /// Refuses a form whose CSRF `token` is missing, expired or not `actor`'s.
    pub(super) fn check_token(&self, actor: &str, token: Option<&str>) -> Result<(), ServiceError> {
        let valid = match (&self.csrf, token) {
            (Some(key), Some(token)) => key.check(actor, token),
            _ => false,
        };
        if valid {
            Ok(())
        } else {
            Err(ServiceError::refused(
                ErrorKind::PermissionDenied,
                "csrf-token",
                "the form's security token is missing, expired or not this client's; reload the page and send the form again",
            ))
        }
    }

    /// The fields of a form `POST` from the console's own origin carrying `actor`'s CSRF
    /// token (field `csrf`), or the refusal (not yet recorded: the caller records it).
    pub(super) async fn form(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        body: Body,
        actor: &str,
    ) -> Result<Form, ServiceError> {
        self.form_within(headers, uri, body, actor, MAX_FORM_BYTES)
            .await
    }

    /// As [`Console::form`], for a form of at most `limit` bytes.
    pub(super) async fn form_within(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        body: Body,
        actor: &str,
        limit: usize,
    ) -> Result<Form, ServiceError> {
        Self::same_origin(headers, uri)?;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ServiceError::invalid(
                "too-large",
                format!("a console form is at most {limit} bytes"),
            )
        })?;
        let form = Form::parse(&bytes);
        self.check_token(actor, form.get("csrf"))?;
        Ok(form)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_field_keeps_every_value_in_order() {
        let form = Form::parse(b"csrf=t&category=identity&category=health&note=a%20b");
        assert_eq!(form.get("category"), Some("identity"));
        assert_eq!(
            form.all("category").collect::<Vec<_>>(),
            ["identity", "health"]
        );
        assert_eq!(form.get("note"), Some("a b"));
        assert_eq!(form.get("absent"), None);
    }
}
