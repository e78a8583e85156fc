//! A peer of an earlier release, which knows `Deliver` but not `DeliverBatch`: the sender falls
//! back to one call per message, and every message still arrives once, in order.
//!
//! The earlier release is played by a mutual-TLS gRPC server with Malawi's node certificate
//! that answers `DeliverBatch` as unimplemented and passes each `Deliver` on to Malawi's real
//! node (as Zambia), so the receipts are Malawi's own.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::peer_service_client::PeerServiceClient;
use kinbridge_proto::v1::peer_service_server::{PeerService, PeerServiceServer};
use tonic::transport::{Certificate, Channel, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct EarlierRelease {
    /// Malawi's real node, once the test lets messages through.
    upstream: Arc<OnceLock<PeerServiceClient<Channel>>>,
    /// The calls received, in order.
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl EarlierRelease {
    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().expect("calls").clone()
    }
}

#[tonic::async_trait]
impl PeerService for EarlierRelease {
    async fn deliver(
        &self,
        request: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        self.calls.lock().expect("calls").push("deliver");
        let Some(upstream) = self.upstream.get() else {
            return Err(Status::unavailable("not yet"));
        };
        upstream.clone().deliver(request.into_inner()).await
    }

    async fn deliver_batch(
        &self,
        _: Request<pb::DeliverBatchRequest>,
    ) -> Result<Response<pb::DeliverBatchResponse>, Status> {
        self.calls.lock().expect("calls").push("batch");
        Err(Status::unimplemented("Method not found: DeliverBatch"))
    }
}

#[tokio::test]
async fn a_peer_without_batches_gets_one_call_per_message_in_order() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let earlier_addr = listener.local_addr().expect("addr");
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], move |config| {
        if config.node_id.as_str() == "ZM-DSW" {
            for peer in &mut config.peers {
                if peer.node_id.as_str() == "MW-DSW" {
                    peer.endpoint = Some(format!("https://{earlier_addr}"));
                }
            }
        }
    })
    .await;
    let earlier = EarlierRelease::default();
    let (malawi, zambia) = (fed.files("MW-DSW"), fed.files("ZM-DSW"));
    let read = |p: std::path::PathBuf| std::fs::read(p).expect("pki file");
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(malawi.node_cert()),
            read(malawi.node_key()),
        ))
        .client_ca_root(Certificate::from_pem(read(zambia.ca_cert())));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(PeerServiceServer::new(earlier.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );

    // Five referrals queue while the peer answers nothing but "unavailable", so that the
    // sender offers them as a batch.
    let mut zm = fed.local("ZM-DSW", "caseworker");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let submitted = zm
            .submit_referral(submit_request("MW-DSW"))
            .await
            .expect("submit");
        ids.push(submitted.into_inner().message_id);
    }
    eventually("the sender offers a batch", || {
        let tried = earlier.calls().contains(&"batch");
        async move { tried }
    })
    .await;
    earlier
        .upstream
        .set(fed.peer_client_as("MW-DSW", "ZM-DSW"))
        .expect("upstream set once");
    for id in &ids {
        let delivery = wait_delivery(&mut zm, id).await;
        assert_eq!(
            delivery.state,
            pb::DeliveryState::Delivered as i32,
            "{id}: {}",
            delivery.last_error
        );
    }

    // After the one refused batch, only single calls.
    let calls = earlier.calls();
    let first_batch = calls.iter().position(|c| *c == "batch").expect("a batch");
    assert_eq!(
        calls.iter().filter(|c| **c == "batch").count(),
        1,
        "{calls:?}"
    );
    assert!(calls[first_batch + 1..].iter().all(|c| *c == "deliver"));
    // Malawi holds each once, in the order submitted.
    let mut mw = fed.local("MW-DSW", "caseworker");
    let inbox: Vec<String> = open_inbox(&mut mw)
        .await
        .into_iter()
        .map(|i| i.message_id)
        .collect();
    assert_eq!(inbox, ids);

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    fed.shutdown().await;
}
