//! Serving the two ports: the mutual-TLS accept loops, the services of each port behind
//! their guards, grpc.health.v1 on both, reflection on the local port, and the graceful
//! shutdown that reports the node as leaving before it stops answering.

use std::future::Future;
use std::sync::Arc;

use kinbridge_proto::v1::admin_service_server::AdminServiceServer;
use kinbridge_proto::v1::audit_service_server::AuditServiceServer;
use kinbridge_proto::v1::local_service_server::LocalServiceServer;
use kinbridge_proto::v1::peer_service_server::PeerServiceServer;
use kinbridge_proto::v1::reporting_service_server::ReportingServiceServer;
use kinbridge_proto::v1::tracing_service_server::TracingServiceServer;
use kinbridge_service::Node;
use kinbridge_service::local::local_auth_of;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;

use crate::admin::AdminApi;
use crate::audit::{AuditApi, Side};
use crate::local::LocalApi;
use crate::peer::PeerApi;
use crate::peer_guard::MAX_GRPC_MESSAGE_BYTES;
use crate::reporting::ReportingApi;
use crate::tls::accept_loop;
use crate::tracing::TracingApi;

/// The services of the local port, as reflection lists them.
pub const LOCAL_SERVICES: [&str; 8] = [
    "kinbridge.v1.LocalService",
    "kinbridge.v1.TracingService",
    "kinbridge.v1.ReportingService",
    "kinbridge.v1.AuditService",
    "kinbridge.v1.AdminService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Why the gRPC face could not serve.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The reflection service could not be built from the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A port to serve: its bound listener and its TLS configuration (which roots it trusts).
pub struct Port {
    /// The bound listener.
    pub listener: TcpListener,
    /// Its TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
}

/// Serves the peer port and the local port of `node` until `shutdown` completes; then
/// reports the node as not serving, turns `node.stopping` true (long polls and streams end),
/// stops accepting and lets calls in flight finish.
pub async fn serve(
    node: Arc<Node>,
    peer: Port,
    local: Port,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let registry_node = Arc::clone(&node);
    let peer_incoming = accept_loop("peer", peer.listener, peer.tls, move |chain| {
        registry_node.registry.authenticate(chain)
    });
    let local_incoming = accept_loop("local", local.listener, local.tls, local_auth_of);
    let stop_rx = node.stopping.subscribe();
    let wait_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // grpc.health.v1 on both ports; reflection on the local port only (peers need no map of
    // the authority's own API).
    let (health, health_service) = tonic_health::server::health_reporter();
    set_serving(&health).await;
    let reflection = || {
        LOCAL_SERVICES.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(kinbridge_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, name| builder.with_service_name(*name),
        )
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;
    let peer_server = Server::builder()
        .trace_fn(|req| request_span("peer", req))
        // A peer's bytes tonic refuses before any handler (undecodable, too large) get a
        // final refusal with a reason, counted and audited (crate::peer_guard).
        .layer(crate::peer_guard::PeerGuardLayer::new(Arc::clone(&node)))
        .add_service(
            PeerServiceServer::new(PeerApi::new(Arc::clone(&node)))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(AuditServiceServer::new(AuditApi::new(
            Arc::clone(&node),
            Side::Peer,
        )))
        .add_service(health_service.clone())
        .serve_with_incoming_shutdown(peer_incoming, wait_stop(stop_rx.clone()));
    let local_server = Server::builder()
        .trace_fn(|req| request_span("local", req))
        .layer(crate::local_firewall::LocalFirewallLayer::new(Arc::clone(
            &node,
        )))
        // A local system's bytes tonic refuses before any handler get the same final,
        // counted and audited refusals as a peer's (crate::peer_guard).
        .layer(crate::peer_guard::PeerGuardLayer::local(Arc::clone(&node)))
        .add_service(
            LocalServiceServer::new(LocalApi::new(Arc::clone(&node)))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(
            TracingServiceServer::new(TracingApi::new(Arc::clone(&node)))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(ReportingServiceServer::new(ReportingApi::new(Arc::clone(
            &node,
        ))))
        .add_service(AuditServiceServer::new(AuditApi::new(
            Arc::clone(&node),
            Side::Local,
        )))
        .add_service(AdminServiceServer::new(AdminApi::new(Arc::clone(&node))))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(local_incoming, wait_stop(stop_rx));
    // A failed store (or audit log) takes no writes until restarted: the node says so.
    let failed = {
        let health = health.clone();
        let mut failure = node.store.failure().subscribe();
        let stop = wait_stop(node.stopping.subscribe());
        async move {
            let failed = tokio::select! {
                changed = failure.wait_for(|failed| *failed) => changed.is_ok(),
                () = stop => false,
            };
            if failed {
                set_not_serving(&health).await;
            }
            Ok::<(), tonic::transport::Error>(())
        }
    };
    let trigger = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing calls in flight");
        set_not_serving(&health).await;
        node.stopping.send_replace(true);
        Ok::<(), tonic::transport::Error>(())
    };
    tokio::try_join!(peer_server, local_server, trigger, failed)?;
    Ok(())
}

/// Reports every service of both ports as serving (grpc.health.v1).
async fn set_serving(health: &tonic_health::server::HealthReporter) {
    health.set_serving::<PeerServiceServer<PeerApi>>().await;
    health.set_serving::<LocalServiceServer<LocalApi>>().await;
    health.set_serving::<AuditServiceServer<AuditApi>>().await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;
    health
        .set_serving::<TracingServiceServer<TracingApi>>()
        .await;
    health
        .set_serving::<ReportingServiceServer<ReportingApi>>()
        .await;
}

/// Reports the node as leaving (or its storage as failed), so that load balancers and
/// monitors see it go before it stops answering.
async fn set_not_serving(health: &tonic_health::server::HealthReporter) {
    health.set_not_serving::<PeerServiceServer<PeerApi>>().await;
    health
        .set_not_serving::<LocalServiceServer<LocalApi>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}

/// The span every gRPC request runs in: the port, the method and a request id (the caller's
/// `x-request-id` if it sent a sane one, else a fresh one). Never anything from the body.
fn request_span(port: &'static str, req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_owned);
    let request_id = given.unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    tracing::info_span!("rpc", port, method = %req.uri().path(), request_id = %request_id)
}
