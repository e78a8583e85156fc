//! [`Node`]: the node as its use cases see it. One value, shared by every face and the
//! background tasks: who the node is, its keys, its peers, its store and audit log, its
//! policy and limits, and the link to its peers. It holds no listener, channel or TLS
//! identity: the runtime builds it, the faces call the use cases over it.

use std::sync::Arc;
use std::time::Duration;

use kinbridge_core::firewall::Tag;
use kinbridge_core::{NodeId, UnitName, VerificationPolicy};
use kinbridge_proto::v1 as pb;
use kinbridge_store::Store;
use tokio::sync::{Notify, watch};

use crate::audit::Auditor;
use crate::keys::KeyBook;
use crate::link::PeerLink;
use crate::metrics::{Gauges, Metrics};
use crate::once::InFlight;
use crate::ratelimit::RateLimiter;
use crate::registry::PeerRegistry;
use crate::reporting::Reporting;
use crate::tracing_records::Tracing;

/// The node's shared state and settings. See the module documentation.
pub struct Node {
    /// This node.
    pub node_id: NodeId,
    /// Its Ed25519 signing keys and the keys it trusts for its peers.
    pub keys: Arc<KeyBook>,
    /// The peer registry.
    pub registry: PeerRegistry,
    /// How calls reach peers.
    pub link: Arc<dyn PeerLink>,
    /// The durable store.
    pub store: Store,
    /// What received envelopes must satisfy.
    pub policy: VerificationPolicy,
    /// Default lifetime of submitted messages.
    pub message_ttl_ms: i64,
    /// Wakes the delivery worker when something is queued or finished.
    pub delivery_wake: Notify,
    /// Turns true when the node starts shutting down: long polls and inbox streams end, so
    /// the graceful shutdown is not held up by a client that keeps a stream open.
    pub stopping: watch::Sender<bool>,
    /// The audit log.
    pub auditor: Arc<Auditor>,
    /// How often to sign audit checkpoints.
    pub checkpoint_interval: Duration,
    /// This node's own tags (the firewall reads them for what it receives).
    pub tags: Vec<Tag>,
    /// Purposes this node accepts; `None` for all.
    pub accepted_purposes: Option<Vec<pb::Purpose>>,
    /// How long payloads are kept; `None` until withdrawal.
    pub payload_retention: Option<Duration>,
    /// Rate limit per peer.
    pub peer_limiter: RateLimiter,
    /// Rate limit per local client.
    pub client_limiter: RateLimiter,
    /// Most messages queued in the outbox.
    pub max_queued: u64,
    /// The delivery worker's retry backoff and batch size.
    pub delivery: crate::pacing::Tuning,
    /// The unit referrals addressed to no unit arrive in.
    pub intake_unit: UnitName,
    /// The units referrals may be addressed to besides the intake; empty: any.
    pub units: Vec<UnitName>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Family tracing: cases, standing queries, matches.
    pub tracing: Tracing,
    /// The dimensions of every referral sent or received, for reporting.
    pub reporting: Reporting,
    /// Counts from 1 to this minus one are withheld from reports.
    pub suppression_threshold: u64,
    /// Idempotency keys whose submission is being handled now.
    pub submitting: InFlight,
    /// Envelopes (`sender 0x00 message id`) being taken in from a peer now: a second delivery
    /// of one (the sender retrying a call whose answer it lost) waits for the first.
    pub receiving: InFlight,
}

impl Node {
    /// The metrics' exposition text, the gauges read now.
    pub fn render_metrics(&self) -> String {
        let active = self.keys.signer();
        let own_keys = self
            .keys
            .own_expiries()
            .into_iter()
            .map(|(id, not_after, _)| {
                let is_active = id == *active.id();
                (id.to_string(), not_after.map(|t| t.0), is_active)
            })
            .collect();
        self.metrics.render(&Gauges {
            node: self.node_id.to_string(),
            outbox_depth: self.store.queued(),
            audit_entries: self.auditor.log().size(),
            disk_free_bytes: self.store.free_bytes(),
            store_failed: self.store.failure().is_failed(),
            own_keys,
        })
    }
}
