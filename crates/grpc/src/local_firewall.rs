//! The firewall on the local port: one gate every call passes before any service sees it.
//!
//! Each local method is classified in [`LOCAL_METHODS`] by what it does with case data
//! ([`LocalAccess`]); [`kinbridge_core::firewall::local_client_may`] decides from that class
//! and the caller's tags. A method missing from the table counts as returning case data, so a
//! new method is closed to an enforcement-tagged client until it is classified here. A refusal
//! is a PERMISSION_DENIED status with the reason code `firewall`, recorded in the audit log.
//! A caller whose certificate names no valid local client (no role, an unknown tag…) reaches
//! nothing but health and reflection.

use std::sync::Arc;
use std::task::{Context, Poll};

use kinbridge_core::firewall::LocalAccess;
use kinbridge_service::audit::serving_method;
use kinbridge_service::local::{LocalAuth, LocalCases, firewall_verdict};
use kinbridge_service::{Node, ServiceError};
use tonic::codegen::{BoxFuture, http};

use crate::status::to_status;
use crate::tls::ConnInfo;

/// Every method served on the local port, by its gRPC path, and what it does with case data.
/// docs/consent.md shows the same table.
pub const LOCAL_METHODS: &[(&str, LocalAccess)] = &[
    (
        "/kinbridge.v1.LocalService/SubmitReferral",
        LocalAccess::Submit,
    ),
    ("/kinbridge.v1.LocalService/GetDelivery", LocalAccess::Case),
    ("/kinbridge.v1.LocalService/ListInbox", LocalAccess::Case),
    ("/kinbridge.v1.LocalService/GetInboxItem", LocalAccess::Case),
    ("/kinbridge.v1.LocalService/WatchInbox", LocalAccess::Case),
    (
        "/kinbridge.v1.LocalService/AcknowledgeInboxItem",
        LocalAccess::Case,
    ),
    (
        "/kinbridge.v1.LocalService/ForwardReferral",
        LocalAccess::Case,
    ),
    (
        "/kinbridge.v1.LocalService/WithdrawConsent",
        LocalAccess::Case,
    ),
    (
        "/kinbridge.v1.LocalService/UpdateReferralStatus",
        LocalAccess::Case,
    ),
    (
        "/kinbridge.v1.LocalService/GetReferralStatus",
        LocalAccess::Case,
    ),
    (
        "/kinbridge.v1.TracingService/RegisterTracingCase",
        LocalAccess::Case,
    ),
    (
        "/kinbridge.v1.TracingService/ListTracingMatches",
        LocalAccess::Case,
    ),
    (
        "/kinbridge.v1.TracingService/ConfirmTracingMatch",
        LocalAccess::Case,
    ),
    (
        "/kinbridge.v1.ReportingService/GetStatistics",
        LocalAccess::Aggregate,
    ),
    (
        "/kinbridge.v1.AuditService/GetCheckpoint",
        LocalAccess::NoCaseData,
    ),
    (
        "/kinbridge.v1.AuditService/GetInclusionProof",
        LocalAccess::NoCaseData,
    ),
    (
        "/kinbridge.v1.AuditService/GetConsistencyProof",
        LocalAccess::NoCaseData,
    ),
    ("/kinbridge.v1.AuditService/ExportLog", LocalAccess::Case),
    (
        "/kinbridge.v1.AuditService/CheckPeers",
        LocalAccess::Operations,
    ),
    (
        "/kinbridge.v1.AdminService/ListKeys",
        LocalAccess::Operations,
    ),
    (
        "/kinbridge.v1.AdminService/RotateKey",
        LocalAccess::Operations,
    ),
    (
        "/kinbridge.v1.AdminService/RevokeKey",
        LocalAccess::Operations,
    ),
    (
        "/kinbridge.v1.AdminService/ListPeers",
        LocalAccess::Operations,
    ),
    ("/grpc.health.v1.Health/Check", LocalAccess::NoCaseData),
    ("/grpc.health.v1.Health/Watch", LocalAccess::NoCaseData),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        LocalAccess::NoCaseData,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        LocalAccess::NoCaseData,
    ),
];

/// What the method at gRPC `path` does with case data; [`LocalAccess::Case`] for a method
/// not in [`LOCAL_METHODS`].
pub fn access_of(path: &str) -> LocalAccess {
    LOCAL_METHODS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(LocalAccess::Case, |(_, access)| *access)
}

/// The firewall's verdict on a call to `path` by the client `auth` proves
/// ([`kinbridge_service::local::firewall_verdict`] for the method's class): `Ok` to let it
/// through (roles and units are checked by the use case), or the caller as far as known and
/// the refusal.
pub fn authorise(path: &str, auth: Option<&LocalAuth>) -> Result<(), (String, ServiceError)> {
    firewall_verdict(access_of(path), path, auth)
}

/// The layer that puts [`LocalFirewall`] in front of every service of the local port.
#[derive(Clone)]
pub struct LocalFirewallLayer {
    state: Arc<Node>,
}

impl LocalFirewallLayer {
    /// The gate for the node with `state` (where refusals are recorded).
    pub fn new(state: Arc<Node>) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for LocalFirewallLayer {
    type Service = LocalFirewall<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LocalFirewall {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

/// Refuses, before any service runs, each local call the firewall does not allow.
#[derive(Clone)]
pub struct LocalFirewall<S> {
    inner: S,
    state: Arc<Node>,
}

impl<S, B> tower::Service<http::Request<B>> for LocalFirewall<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method: String = request.uri().path().chars().take(128).collect();
        let verdict = authorise(
            request.uri().path(),
            request
                .extensions()
                .get::<ConnInfo<LocalAuth>>()
                .map(|info| &info.auth),
        );
        match verdict {
            Ok(()) => {
                // The service that was made ready is the one that must be called.
                let ready = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, ready);
                // Every refusal the use case audits names the method.
                Box::pin(serving_method(method, inner.call(request)))
            }
            Err((actor, error)) => {
                let cases = LocalCases::new(Arc::clone(&self.state));
                Box::pin(serving_method(method, async move {
                    Ok(to_status(cases.refuse(&actor, error).await).into_http())
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_listed_once_and_an_unlisted_one_is_case_data() {
        for (i, (path, _)) in LOCAL_METHODS.iter().enumerate() {
            assert!(
                LOCAL_METHODS[i + 1..].iter().all(|(p, _)| p != path),
                "{path} twice"
            );
        }
        assert_eq!(
            access_of("/kinbridge.v1.TracingService/SomethingNew"),
            LocalAccess::Case
        );
        assert_eq!(
            access_of("/kinbridge.v1.LocalService/SubmitReferral"),
            LocalAccess::Submit
        );
    }
}
