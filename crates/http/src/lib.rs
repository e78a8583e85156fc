//! kinbridge's HTTP/JSON face: the local use cases for case-management systems that speak
//! REST and JSON, beside the gRPC face and over the same service layer.
//!
//! It listens on its own port (`listen.http`) with the same mutual TLS as the local gRPC port
//! (a client certificate from the authority's local CA, carrying a role), so an authority can
//! open it to its case-management system alone, and the gRPC port stays HTTP/2 only. Each
//! request passes the same firewall verdict and the same use case as its gRPC twin: roles,
//! units, consent and every refusal's audit entry are the service layer's. JSON is the
//! protobuf JSON mapping of the same messages; errors are `application/problem+json`
//! ([`problem`]); the operations ([`operations::OPERATIONS`]) make both the router and the
//! OpenAPI 3.1 document ([`openapi`]) served at `/v1/openapi.json`. The same listener serves
//! the web console's HTML pages under `/console/` ([`console`]).

#![forbid(unsafe_code)]

pub mod console;
pub mod openapi;
pub mod operations;
pub mod problem;
pub mod webhook_client;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, RawPathParams, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_service::audit::serving_method;
use kinbridge_service::local::{LocalAuth, actor_of, firewall_verdict, local_auth_of};
use kinbridge_service::{ErrorKind, Node, ServiceError};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::operations::{Cases, Failure, OPERATIONS, Operation, Reply, Verb};

/// Largest request body read: as the gRPC face's largest message.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Bound on a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections in flight may finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The header of a submission's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What every request of the face shares.
struct Face {
    cases: Arc<Cases>,
    document: Value,
}

/// The caller a connection's certificate proved.
#[derive(Clone)]
struct Caller(Option<LocalAuth>);

/// The router of every operation, the document and the refusals of what is not one.
fn router(node: &Arc<Node>, console_idle: Duration) -> Router {
    let face = Arc::new(Face {
        cases: Arc::new(Cases::new(node)),
        document: openapi::document(),
    });
    let mut router = Router::new().route("/v1/openapi.json", get(serve_document));
    let mut paths: HashMap<&str, axum::routing::MethodRouter<Arc<Face>>> = HashMap::new();
    for op in OPERATIONS {
        let entry = paths.remove(op.path).unwrap_or_default();
        let handler = move |state, caller, params, query, headers, body| {
            handle(op, state, caller, params, query, headers, body)
        };
        let entry = match op.verb {
            Verb::Get => entry.merge(get(handler)),
            Verb::Post => entry.merge(post(handler)),
        };
        paths.insert(op.path, entry);
    }
    for (path, entry) in paths {
        router = router.route(
            path,
            entry.fallback(|| async { refusal_without_operation(StatusCode::METHOD_NOT_ALLOWED) }),
        );
    }
    router
        .with_state(face)
        .merge(console::router(node, console_idle))
        .fallback(|| async { refusal_without_operation(StatusCode::NOT_FOUND) })
}

/// The answer to a path or method that names no operation.
fn refusal_without_operation(status: StatusCode) -> Response {
    let (kind, reason, detail) = if status == StatusCode::NOT_FOUND {
        (
            ErrorKind::NotFound,
            "unknown-operation",
            "no operation at this path; the node's OpenAPI document at /v1/openapi.json lists them",
        )
    } else {
        (
            ErrorKind::InvalidArgument,
            "method-not-allowed",
            "this path takes another method; the node's OpenAPI document at /v1/openapi.json says which",
        )
    };
    let mut response = problem::answer(&ServiceError::refused(kind, reason, detail));
    *response.status_mut() = status;
    response
}

async fn serve_document(State(face): State<Arc<Face>>) -> Response {
    json_response(StatusCode::OK, &face.document)
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// One operation: the firewall, the request made from the body, the path and the query, the
/// use case, the answer. Every refusal is the use case's or recorded through it.
#[allow(clippy::too_many_arguments)]
async fn handle(
    op: &'static Operation,
    State(face): State<Arc<Face>>,
    Extension(Caller(auth)): Extension<Caller>,
    params: RawPathParams,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let method = format!("{} {}", op.verb.as_str(), op.path);
    serving_method(method, async move {
        match run(op, &face, auth, params, query, headers, body).await {
            Ok(reply) => reply,
            Err(error) => problem::answer(&error),
        }
    })
    .await
}

async fn run(
    op: &'static Operation,
    face: &Face,
    auth: Option<LocalAuth>,
    params: RawPathParams,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ServiceError> {
    let refuse = |error: ServiceError| {
        let actor = actor_of(auth.as_ref());
        let local = face.cases.local();
        async move { local.refuse(&actor, error).await }
    };
    if let Err((actor, error)) = firewall_verdict(op.access, op.path, auth.as_ref()) {
        return Err(face.cases.local().refuse(&actor, error).await);
    }
    let request = match request_of(op, params, query.as_deref(), body).await {
        Ok(request) => request,
        Err(error) => return Err(refuse(error).await),
    };
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(_) if !op.idempotent => None,
        Some(value) => Some(value.to_str().unwrap_or("\u{0}").to_owned()),
    };
    let reply = match (op.call)(Arc::clone(&face.cases), auth.clone(), request, key).await {
        Ok(reply) => reply,
        Err(Failure::UseCase(error)) => return Err(error),
        Err(Failure::Request(error)) => return Err(refuse(error).await),
    };
    let status = if op.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(match reply {
        Reply::One(value) => json_response(status, &value),
        Reply::Lines(rx) => {
            let lines = tokio_stream_of(rx).map(|item| {
                let line = match item {
                    Ok(value) => value,
                    Err(error) => serde_json::json!({ "error": problem::problem(&error) }),
                };
                Ok::<_, std::convert::Infallible>(format!("{line}\n"))
            });
            let mut response = Response::new(Body::from_stream(lines));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            response
        }
    })
}

/// The messages of `rx` as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The request message of `op` as JSON: the body (a `POST`'s), then each path parameter and
/// (for a `GET`) each query parameter set on the field of its name.
async fn request_of(
    op: &Operation,
    params: RawPathParams,
    query: Option<&str>,
    body: Body,
) -> Result<Value, ServiceError> {
    let mut request = match op.verb {
        Verb::Post => {
            let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
                .await
                .map_err(|_| {
                    ServiceError::invalid(
                        "too-large",
                        format!("the request body is over {MAX_BODY_BYTES} bytes or was cut short"),
                    )
                })?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                Value::Object(serde_json::Map::new())
            } else {
                serde_json::from_slice(&bytes).map_err(|_| {
                    ServiceError::invalid(
                        "malformed",
                        format!(
                            "the body is not JSON (a {} in the protobuf JSON mapping); see /v1/openapi.json",
                            op.request
                        ),
                    )
                })?
            }
        }
        Verb::Get => Value::Object(serde_json::Map::new()),
    };
    let Value::Object(fields) = &mut request else {
        return Err(ServiceError::invalid(
            "malformed",
            format!("the body is a JSON object, a {}", op.request),
        ));
    };
    for (name, value) in params.iter() {
        let value = percent_decode(value)?;
        openapi::set_field(op.request, fields, name, &value)?;
    }
    if let Some(query) = query {
        if op.verb == Verb::Post && !query.is_empty() {
            return Err(ServiceError::invalid(
                "unknown-parameter",
                "this operation takes its request in the JSON body, not in the query string",
            ));
        }
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            openapi::set_field(op.request, fields, &name, &value)?;
        }
    }
    Ok(request)
}

fn percent_decode(value: &str) -> Result<String, ServiceError> {
    form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ServiceError::invalid("malformed", "a path parameter does not decode"))
}

/// Serves the JSON face and the console of `node` on `listener` with `tls` (which must
/// require a client certificate from the local CA) until `stop` turns true; then lets the
/// requests in flight finish for at most [`SHUTDOWN_GRACE`]. A console session ends after
/// `console_idle` without a request.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    console_idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let router = router(&node, console_idle);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, remote) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(listener = "http", %remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(listener = "http", %remote, "TLS handshake timed out");
                    return;
                }
            };
            let auth = tls.get_ref().1.peer_certificates().map(|chain| {
                local_auth_of(
                    &chain
                        .iter()
                        .map(|c| c.clone().into_owned())
                        .collect::<Vec<_>>(),
                )
            });
            let service = router.layer(Extension(Caller(auth)));
            let service = hyper_util::service::TowerToHyperService::new(service);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let connection = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(listener = "http", error = %e, "HTTP connection ended");
            }
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight at shutdown were cut");
    }
}

/// The access class of the operation at `path` (its template) and `verb`:
/// [`LocalAccess::Case`] for one that is not an operation.
pub fn access_of(verb: Verb, path: &str) -> LocalAccess {
    operations::find(verb, path).map_or(LocalAccess::Case, |op| op.access)
}
