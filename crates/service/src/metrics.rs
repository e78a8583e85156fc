//! The node's Prometheus metrics: counters, gauges and histograms the use cases update, and
//! their exposition text (served by the runtime's metrics listener).
//!
//! Labels carry node ids, message kinds, outcomes, reason codes and key ids: never a child's
//! data, never a consent or case reference.

use std::time::Duration;

use kinbridge_core::UnixMillis;
use kinbridge_proto::v1 as pb;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A message's direction, kind, outcome and peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// "sent" or "received".
    pub direction: &'static str,
    /// The message kind, e.g. "referral".
    pub kind: String,
    /// "delivered", "refused", "expired" (sent); "accepted", "refused", "duplicate" (received).
    pub outcome: &'static str,
    /// The peer node.
    pub peer: String,
}

/// A refusal's reason code and where it happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// "peer" or "local"; "tracing" for a tracing record not reported to a peer because its
    /// consent no longer holds.
    pub side: &'static str,
    /// The reason code, as in the `kinbridge-refusal` metadata.
    pub reason: String,
}

/// One peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer node.
    pub peer: String,
}

/// One certificate file.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// "node", "node-ca", "local-client-ca" or "peer-ca".
    pub certificate: String,
    /// The node it belongs to.
    pub node: String,
}

/// One signing key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// The node it belongs to.
    pub node: String,
    /// Its id.
    pub key_id: String,
}

/// A webhook subscription and what became of one event or attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The subscription's name in the config.
    pub subscription: String,
    /// "delivered", "retried" (an attempt that failed) or "expired" (given up).
    pub outcome: &'static str,
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    submitted: Family<PeerLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    delivery_latency: Family<PeerLabels, Histogram>,
    attempt_latency: Family<PeerLabels, Histogram>,
    outbox_depth: Gauge,
    audit_entries: Gauge,
    disk_free: Gauge,
    store_failed: Gauge,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    key_expiry: Family<KeyLabels, Gauge>,
    key_active: Family<KeyLabels, Gauge>,
    webhooks: Family<WebhookLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s, doubling; longer waits (a peer away) land in +Inf.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// The lower-case name of a message kind, as metrics label it.
pub fn kind_label(kind: i32) -> String {
    pb::MessageKind::try_from(kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("MESSAGE_KIND_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kinbridge");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages sent to and received from peers, by direction, kind, outcome and peer",
            messages.clone(),
        );
        let submitted = Family::<PeerLabels, Counter>::default();
        registry.register(
            "submitted",
            "Messages sealed and queued for a peer (submitted, forwarded, withdrawals, status and key updates)",
            submitted.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused, by side (peer or local) and reason code",
            refusals.clone(),
        );
        let delivery_latency = Family::<PeerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "delivery_latency_seconds",
            "From submission to the recipient's verified receipt, by peer",
            delivery_latency.clone(),
        );
        let attempt_latency = Family::<PeerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "delivery_attempt_seconds",
            "One delivery call to a peer, answered or not, by peer",
            attempt_latency.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Messages queued for delivery",
            outbox_depth.clone(),
        );
        let audit_entries = Gauge::default();
        registry.register(
            "audit_log_entries",
            "Entries in the node's audit log",
            audit_entries.clone(),
        );
        let disk_free = Gauge::default();
        registry.register(
            "disk_free_bytes",
            "Bytes free on the volume of the node's store (writes that grow the store are refused below the [storage] min_free_bytes reserve); -1 if they cannot be read",
            disk_free.clone(),
        );
        let store_failed = Gauge::default();
        registry.register(
            "store_failed",
            "1 once a commit of the store or the audit log failed: the node takes no writes until restarted",
            store_failed.clone(),
        );
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each certificate the node uses or trusts expires (Unix seconds)",
            certificate_expiry.clone(),
        );
        let key_expiry = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "signing_key_expiry_timestamp_seconds",
            "When each of the node's own signing keys stops being valid (Unix seconds); keys without an end are not listed",
            key_expiry.clone(),
        );
        let key_active = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "signing_key_active",
            "1 for the own key the node signs with now, 0 for its other keys",
            key_active.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_events",
            "Webhook events delivered, attempts retried and events given up, by subscription",
            webhooks.clone(),
        );
        Self {
            webhooks,
            registry,
            messages,
            submitted,
            refusals,
            delivery_latency,
            attempt_latency,
            outbox_depth,
            audit_entries,
            disk_free,
            store_failed,
            certificate_expiry,
            key_expiry,
            key_active,
        }
    }

    /// A message to `peer` reached a final state.
    pub fn sent(&self, kind: i32, outcome: &'static str, peer: &str, submitted_at_ms: i64) {
        self.messages
            .get_or_create(&MessageLabels {
                direction: "sent",
                kind: kind_label(kind),
                outcome,
                peer: peer.to_owned(),
            })
            .inc();
        if outcome == "delivered" {
            let seconds = (UnixMillis::now().0 - submitted_at_ms).max(0) as f64 / 1000.0;
            self.delivery_latency
                .get_or_create(&PeerLabels {
                    peer: peer.to_owned(),
                })
                .observe(seconds);
        }
    }

    /// A message for `peer` was sealed and queued.
    pub fn queued(&self, peer: &str) {
        self.submitted
            .get_or_create(&PeerLabels {
                peer: peer.to_owned(),
            })
            .inc();
    }

    /// One delivery call to `peer` took `elapsed`.
    pub fn attempt(&self, peer: &str, elapsed: Duration) {
        self.attempt_latency
            .get_or_create(&PeerLabels {
                peer: peer.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A message from `peer` was answered.
    pub fn received(&self, kind: i32, outcome: &'static str, peer: &str) {
        self.messages
            .get_or_create(&MessageLabels {
                direction: "received",
                kind: kind_label(kind),
                outcome,
                peer: peer.to_owned(),
            })
            .inc();
    }

    /// A request was refused.
    pub fn refused(&self, side: &'static str, reason: &str) {
        self.refusals
            .get_or_create(&RefusalLabels {
                side,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a webhook event or attempt of `subscription` with `outcome`.
    pub fn webhook(&self, subscription: &str, outcome: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                subscription: subscription.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Records when a certificate expires.
    pub fn certificate(&self, certificate: &str, node: &str, not_after_unix: i64) {
        self.certificate_expiry
            .get_or_create(&CertificateLabels {
                certificate: certificate.to_owned(),
                node: node.to_owned(),
            })
            .set(not_after_unix);
    }

    /// The exposition text, with the gauges set from `now` first.
    pub fn render(&self, now: &Gauges) -> String {
        self.outbox_depth
            .set(i64::try_from(now.outbox_depth).unwrap_or(i64::MAX));
        self.audit_entries
            .set(i64::try_from(now.audit_entries).unwrap_or(i64::MAX));
        self.disk_free.set(
            now.disk_free_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        );
        self.store_failed.set(i64::from(now.store_failed));
        for (key_id, not_after, active) in &now.own_keys {
            let labels = KeyLabels {
                node: now.node.clone(),
                key_id: key_id.clone(),
            };
            if let Some(end) = not_after {
                self.key_expiry.get_or_create(&labels).set(end / 1000);
            }
            self.key_active
                .get_or_create(&labels)
                .set(i64::from(*active));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out = "# the metrics could not be encoded\n".into();
        }
        out
    }
}

/// What the gauges show, read from the node when the metrics are rendered.
pub struct Gauges {
    /// This node.
    pub node: String,
    /// Messages queued in the outbox.
    pub outbox_depth: u64,
    /// Entries in the audit log.
    pub audit_entries: u64,
    /// Bytes free on the store's volume, if they can be read.
    pub disk_free_bytes: Option<u64>,
    /// Whether the store (or the audit log) failed.
    pub store_failed: bool,
    /// This node's signing keys: id, expiry (Unix milliseconds) if any, whether active.
    pub own_keys: Vec<(String, Option<i64>, bool)>,
}
