//! The peer client: how this node calls its peers over mutual TLS, presenting its own TLS
//! identity and trusting only each peer's registered CA. It implements the service layer's
//! [`PeerLink`]: deliveries (`DeliverBatch`, or `Deliver` one at a time to a peer of an
//! earlier release) and the audit calls the peer-log check makes. Channels are made on first
//! use and reconnect by themselves; every call is bounded in time.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use kinbridge_core::NodeId;
use kinbridge_core::sync::lock;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::audit_service_client::AuditServiceClient;
use kinbridge_proto::v1::peer_service_client::PeerServiceClient;
use kinbridge_service::link::{LinkError, LinkFuture, PeerLink};
use kinbridge_service::registry::Peer;
use kinbridge_service::{ErrorKind, ServiceError};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::status::from_status;

/// Bound on one delivery call, unless the client is made with another
/// ([`PeerClient::with_delivery_timeout`]).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on each call the peer-log check makes to a peer.
pub const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls to peers over mutual-TLS gRPC.
pub struct PeerClient {
    /// This node's TLS identity, presented to peers.
    identity: Identity,
    /// Channels to peers, made on first use; they reconnect by themselves.
    channels: Mutex<HashMap<NodeId, Channel>>,
    /// Peers that answered `DeliverBatch` as unimplemented (an earlier release): one at a time.
    single: Mutex<HashSet<String>>,
    /// Bound on one delivery call.
    delivery_timeout: Duration,
}

impl PeerClient {
    /// A client presenting `identity`.
    pub fn new(identity: Identity) -> Self {
        Self::with_delivery_timeout(identity, DELIVERY_TIMEOUT)
    }

    /// A client presenting `identity` whose delivery calls are bounded by `timeout`.
    pub fn with_delivery_timeout(identity: Identity, timeout: Duration) -> Self {
        Self {
            identity,
            channels: Mutex::new(HashMap::new()),
            single: Mutex::new(HashSet::new()),
            delivery_timeout: timeout,
        }
    }

    /// Forgets the channel to `peer` after a call on it got no answer in time: its
    /// connection may be dead without either side knowing (a black-holed link keeps a TCP
    /// connection open, and a call waits on it until its bound), so the next call connects
    /// again rather than wait on it once more.
    fn forget(&self, peer: &Peer) {
        lock(&self.channels).remove(&peer.node_id);
    }

    /// The channel to `peer`'s peer port.
    fn channel(&self, peer: &Peer) -> Result<Channel, String> {
        let mut map = lock(&self.channels);
        if let Some(channel) = map.get(&peer.node_id) {
            return Ok(channel.clone());
        }
        let endpoint = peer
            .endpoint
            .as_deref()
            .ok_or_else(|| format!("peer '{}' has no endpoint", peer.node_id))?;
        let channel = peer_channel(
            endpoint,
            peer.tls_server_name.as_deref(),
            &peer.ca_pem,
            &self.identity,
        )?;
        map.insert(peer.node_id.clone(), channel.clone());
        Ok(channel)
    }
}

impl PeerLink for PeerClient {
    fn route(&self, peer: &Peer) -> Result<(), String> {
        self.channel(peer).map(|_| ())
    }

    fn takes_batches(&self, peer: &str) -> bool {
        !lock(&self.single).contains(peer)
    }

    fn deliver<'a>(
        &'a self,
        peer: &'a Peer,
        envelopes: Vec<pb::Envelope>,
    ) -> LinkFuture<'a, Result<Vec<Result<pb::Receipt, ServiceError>>, LinkError>> {
        Box::pin(async move {
            let channel = self.channel(peer).map_err(LinkError::NoRoute)?;
            let bound = self.delivery_timeout;
            let results = call(
                channel,
                envelopes,
                peer.node_id.as_str(),
                &self.single,
                bound,
            )
            .await;
            if results.iter().any(|r| {
                r.as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::DeadlineExceeded)
            }) {
                self.forget(peer);
            }
            Ok(results)
        })
    }

    fn checkpoint<'a>(&'a self, peer: &'a Peer) -> LinkFuture<'a, Result<String, LinkError>> {
        Box::pin(async move {
            let channel = self.channel(peer).map_err(LinkError::NoRoute)?;
            let mut request = tonic::Request::new(pb::GetCheckpointRequest::default());
            request.set_timeout(PEER_CHECK_TIMEOUT);
            let mut client = AuditServiceClient::new(channel);
            let answer = client.get_checkpoint(request);
            match tokio::time::timeout(PEER_CHECK_TIMEOUT, answer).await {
                Ok(Ok(response)) => Ok(response.into_inner().checkpoint),
                Ok(Err(status)) => Err(LinkError::Call(from_status(&status))),
                Err(_) => Err(LinkError::Call(timed_out(PEER_CHECK_TIMEOUT))),
            }
        })
    }

    fn consistency_proof<'a>(
        &'a self,
        peer: &'a Peer,
        first_size: u64,
        second_size: u64,
    ) -> LinkFuture<'a, Result<Vec<Vec<u8>>, LinkError>> {
        Box::pin(async move {
            let channel = self.channel(peer).map_err(LinkError::NoRoute)?;
            let mut request = tonic::Request::new(pb::GetConsistencyProofRequest {
                first_size,
                second_size,
            });
            request.set_timeout(PEER_CHECK_TIMEOUT);
            let mut client = AuditServiceClient::new(channel);
            let answer = client.get_consistency_proof(request);
            match tokio::time::timeout(PEER_CHECK_TIMEOUT, answer).await {
                Ok(Ok(response)) => Ok(response.into_inner().hashes),
                Ok(Err(status)) => Err(LinkError::Call(from_status(&status))),
                Err(_) => Err(LinkError::Call(timed_out(PEER_CHECK_TIMEOUT))),
            }
        })
    }
}

fn timed_out(bound: Duration) -> ServiceError {
    ServiceError::new(
        ErrorKind::DeadlineExceeded,
        format!("no answer within {bound:?}"),
    )
}

/// A delivery call's answer as a receipt or the error it stands for.
fn receipt_of(
    answer: Result<tonic::Response<pb::DeliverResponse>, tonic::Status>,
) -> Result<pb::Receipt, ServiceError> {
    answer
        .map(|r| r.into_inner().receipt.unwrap_or_default())
        .map_err(|status| from_status(&status))
}

/// Delivers `envelopes` to the peer on `channel`: one `DeliverBatch` call, or `Deliver` calls
/// to a peer that does not know `DeliverBatch`. `results[i]` answers `envelopes[i]`; the
/// results may stop short (the rest were not looked at). A failure of the whole call answers
/// the first envelope.
async fn call(
    channel: Channel,
    envelopes: Vec<pb::Envelope>,
    recipient: &str,
    single: &Mutex<HashSet<String>>,
    bound: Duration,
) -> Vec<Result<pb::Receipt, ServiceError>> {
    let mut client = PeerServiceClient::new(channel);
    if envelopes.len() == 1 || lock(single).contains(recipient) {
        let envelope = envelopes.into_iter().next();
        let mut request = tonic::Request::new(pb::DeliverRequest { envelope });
        request.set_timeout(bound);
        let answer = bounded(client.deliver(request), bound).await;
        return vec![receipt_of(answer)];
    }
    let sent = envelopes.len();
    let head = envelopes.first().cloned();
    let mut request = tonic::Request::new(pb::DeliverBatchRequest { envelopes });
    request.set_timeout(bound);
    match bounded(client.deliver_batch(request), bound).await {
        Ok(response) => {
            let mut results: Vec<_> = response
                .into_inner()
                .results
                .into_iter()
                .map(|r| match r.outcome {
                    Some(pb::deliver_result::Outcome::Receipt(receipt)) => Ok(receipt),
                    Some(pb::deliver_result::Outcome::Error(e)) => {
                        Err(ServiceError::from_deliver_error(&e))
                    }
                    None => Err(ServiceError::new(
                        ErrorKind::Unknown,
                        "the peer's result holds nothing",
                    )),
                })
                .collect();
            results.truncate(sent);
            if results.is_empty() {
                results.push(Err(ServiceError::new(
                    ErrorKind::Unknown,
                    "the peer answered the batch with no result",
                )));
            }
            results
        }
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            tracing::info!(%recipient, "the peer does not take batches; sending one message at a time");
            lock(single).insert(recipient.to_owned());
            // Nothing was taken: the head goes at once, on its own.
            let mut request = tonic::Request::new(pb::DeliverRequest { envelope: head });
            request.set_timeout(bound);
            let answer = bounded(client.deliver(request), bound).await;
            vec![receipt_of(answer)]
        }
        Err(status) => vec![Err(from_status(&status))],
    }
}

/// `call`, bounded by `bound` whatever state the connection is in.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    bound: Duration,
) -> Result<T, tonic::Status> {
    let started = tokio::time::Instant::now();
    let late = || tonic::Status::deadline_exceeded(format!("no answer within {bound:?}"));
    match tokio::time::timeout(bound, call).await {
        // The request's own timeout may end it first, as another status.
        Ok(Err(_)) if started.elapsed() >= bound => Err(late()),
        Ok(answer) => answer,
        Err(_) => Err(late()),
    }
}

/// A lazily connecting mutual-TLS channel to `endpoint`, trusting only `ca_pem` and presenting
/// `identity`. The server certificate must name `server_name`, or the endpoint's host.
pub fn peer_channel(
    endpoint: &str,
    server_name: Option<&str>,
    ca_pem: &[u8],
    identity: &Identity,
) -> Result<Channel, String> {
    let uri: tonic::transport::Uri = endpoint
        .parse()
        .map_err(|e| format!("endpoint '{endpoint}' is not a URL: {e}"))?;
    let host = server_name
        .map(str::to_owned)
        .or_else(|| uri.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .ok_or_else(|| format!("endpoint '{endpoint}' names no host"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(identity.clone())
        .domain_name(host);
    Ok(Endpoint::from(uri)
        .tls_config(tls)
        .map_err(|e| format!("TLS configuration for '{endpoint}': {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy())
}
