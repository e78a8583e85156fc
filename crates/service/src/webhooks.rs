//! Webhooks: the node pushes its inbox events (a referral or case transfer received, a status
//! update about a referral it sent, a consent withdrawn, a family tracing message) to the URLs
//! the authority configures, so that its case-management system need not poll.
//!
//! The inbox is the event log: every received envelope is an inbox item, numbered in order and
//! made durable in the commit that receipts it, so an event is queued exactly when its item
//! is. Each subscription keeps a cursor (the last inbox sequence it has been told of) in the
//! store; its worker sends the events after it one at a time, in order, retrying each with
//! backoff until the receiver answers 2xx or the event is older than the subscription's
//! `max_age`, and moves the cursor only past an event that was answered (or that expired,
//! logged and counted). Delivery is at least once: an event answered just before a crash is
//! sent again after it, under the same `webhook-id`, for the receiver to de-duplicate.
//!
//! Events are signed as Standard Webhooks specifies (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA-256 of "id.timestamp.body">` under the
//! subscription's `whsec_` secret), so off-the-shelf verifiers check them. An event carries
//! ids, kinds, units and times, never a child's data: the receiver reads the item through the
//! API, with its own certificate, as its role and unit allow.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use kinbridge_core::UnixMillis;
use kinbridge_proto::v1 as pb;
use kinbridge_store::InboxRecord;
use prost::Message;
use sha2::Sha256;
use tokio::sync::watch;

use crate::link::LinkFuture;
use crate::node::Node;

/// How many inbox items a worker reads at a time.
const PAGE: usize = 100;
/// First retry delay of an event.
pub const RETRY_BASE: Duration = Duration::from_millis(200);

/// What happened, as an event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A referral or case transfer arrived in the inbox.
    Referral,
    /// A node this one sent a referral to moved it along its workflow.
    Status,
    /// The node that originated some data withdrew its consent; the data is deleted here.
    Withdrawal,
    /// A family tracing message arrived (a match notice, a confirmation, a disclosure).
    Tracing,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 4] = [
        Self::Referral,
        Self::Status,
        Self::Withdrawal,
        Self::Tracing,
    ];

    /// Its name in an event's `type` and in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Referral => "inbox.referral",
            Self::Status => "referral.status",
            Self::Withdrawal => "consent.withdrawn",
            Self::Tracing => "tracing.message",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The event an inbox item of message kind `kind` is; `None` for the node's own business
    /// (key updates).
    pub fn of_kind(kind: i32) -> Option<Self> {
        use pb::MessageKind as K;
        match K::try_from(kind).ok()? {
            K::Referral | K::CaseTransfer => Some(Self::Referral),
            K::StatusUpdate => Some(Self::Status),
            K::ConsentWithdrawal => Some(Self::Withdrawal),
            K::TracingRequest
            | K::TracingMatchNotice
            | K::TracingConfirmation
            | K::TracingDisclosure => Some(Self::Tracing),
            K::Unspecified | K::KeyUpdate => None,
        }
    }
}

/// One subscription: where its events go and which.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Its name in the config, logs and metrics, and the key of its cursor.
    pub name: String,
    /// Where its events are POSTed.
    pub url: String,
    /// The signing key (the bytes of the `whsec_` secret).
    pub secret: Vec<u8>,
    /// The event types it takes; empty: all.
    pub events: Vec<EventType>,
    /// The units whose items it is told of; empty: all.
    pub units: Vec<String>,
    /// An event not answered within this long is given up (logged and counted).
    pub max_age: Duration,
    /// Longest delay between two attempts of an event.
    pub retry_max: Duration,
}

impl Subscription {
    fn wants(&self, event: EventType, unit: &str) -> bool {
        (self.events.is_empty() || self.events.contains(&event))
            && (self.units.is_empty() || unit.is_empty() || self.units.iter().any(|u| u == unit))
    }
}

/// Decodes a Standard Webhooks secret (`whsec_` and base64).
pub fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    let encoded = text.trim().strip_prefix("whsec_").ok_or_else(|| {
        "a webhook secret is `whsec_` followed by base64 (Standard Webhooks)".to_owned()
    })?;
    let key = BASE64
        .decode(encoded)
        .map_err(|_| "the part after `whsec_` is not base64".to_owned())?;
    if !(24..=64).contains(&key.len()) {
        return Err("a webhook secret holds 24 to 64 bytes".into());
    }
    Ok(key)
}

/// How events reach their receivers: one POST, bounded in time, answering the HTTP status.
pub trait HookSender: Send + Sync {
    /// POSTs `body` with `headers` to `subscription`'s URL.
    fn post<'a>(
        &'a self,
        subscription: &'a Subscription,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> LinkFuture<'a, Result<u16, String>>;
}

/// An event ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its id: the node and the inbox sequence; the same on every attempt.
    pub id: String,
    /// Its type.
    pub event_type: EventType,
    /// When it happened (the item's arrival).
    pub at: UnixMillis,
    /// Its JSON body.
    pub body: Vec<u8>,
}

/// The event of inbox item `sequence` of `node`, if it is one.
pub fn event_of(node: &str, sequence: u64, record: &InboxRecord) -> Option<Event> {
    let envelope = record.envelope.as_ref()?;
    let header = pb::EnvelopeHeader::decode(envelope.header.as_slice()).ok()?;
    let event_type = EventType::of_kind(header.kind)?;
    let at = UnixMillis(record.received_at_ms);
    let kind = pb::MessageKind::try_from(header.kind).map_or("", |k| k.as_str_name());
    let purpose = pb::Purpose::try_from(header.purpose).map_or("", |p| p.as_str_name());
    let mut data = serde_json::json!({
        "node": node,
        "sequence": sequence.to_string(),
        "messageId": record.message_id,
        "sender": record.sender,
        "kind": kind,
        "purpose": purpose,
        "unit": record.unit,
        "receivedAtMs": record.received_at_ms.to_string(),
    });
    match event_type {
        EventType::Status => {
            // A status update names the referral and its state: no personal data.
            if let Ok(update) = pb::StatusUpdate::decode(envelope.payload.as_slice()) {
                data["referralId"] = update.referral_id.into();
                data["state"] = pb::ReferralState::try_from(update.state)
                    .map_or("", |s| s.as_str_name())
                    .into();
                data["code"] = update.code.into();
            }
        }
        EventType::Withdrawal => data["consentId"] = header.consent_id.into(),
        EventType::Referral | EventType::Tracing => {}
    }
    let body = serde_json::json!({
        "type": event_type.name(),
        "timestamp": rfc3339(at),
        "data": data,
    });
    Some(Event {
        id: format!("{node}:{sequence}"),
        event_type,
        at,
        body: body.to_string().into_bytes(),
    })
}

fn rfc3339(at: UnixMillis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.0) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The Standard Webhooks headers of `event`, signed with `secret` at `timestamp` (Unix
/// seconds).
pub fn signed_headers(event: &Event, secret: &[u8], timestamp: i64) -> Vec<(&'static str, String)> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(event.id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(&event.body);
    let signature = BASE64.encode(mac.finalize().into_bytes());
    vec![
        ("webhook-id", event.id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", format!("v1,{signature}")),
        ("content-type", "application/json".to_owned()),
    ]
}

/// Runs one worker per subscription until `stop` turns true.
pub async fn run(
    node: Arc<Node>,
    subscriptions: Vec<Subscription>,
    sender: Arc<dyn HookSender>,
    stop: watch::Receiver<bool>,
) {
    let workers: Vec<_> = subscriptions
        .into_iter()
        .map(|sub| {
            tokio::spawn(run_one(
                Arc::clone(&node),
                sub,
                Arc::clone(&sender),
                stop.clone(),
            ))
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

/// The worker of one subscription.
async fn run_one(
    node: Arc<Node>,
    sub: Subscription,
    sender: Arc<dyn HookSender>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tip = node.store.subscribe_inbox();
    // A new subscription starts at the inbox as it is: it is told of what comes, not of the
    // whole history.
    let mut cursor = match node.store.webhook_cursor(&sub.name) {
        Ok(Some(cursor)) => cursor,
        Ok(None) => {
            let now = *tip.borrow();
            if let Err(e) = node.store.set_webhook_cursor(&sub.name, now).await {
                tracing::error!(subscription = %sub.name, error = %e, "cannot store a webhook cursor");
            }
            now
        }
        Err(e) => {
            tracing::error!(subscription = %sub.name, error = %e, "cannot read the webhook cursor; its events are not sent");
            return;
        }
    };
    tracing::info!(subscription = %sub.name, after = cursor, "webhook worker started");
    loop {
        tip.borrow_and_update();
        let page = match node.store.inbox_page(cursor, PAGE, true, |_| true) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(subscription = %sub.name, error = %e, "cannot read the inbox for webhooks");
                Vec::new()
            }
        };
        let empty = page.is_empty();
        for (sequence, record) in page {
            if let Some(event) = event_of(node.node_id.as_str(), sequence, &record)
                && sub.wants(event.event_type, &record.unit)
                && !send(&node, &sub, sender.as_ref(), &event, &mut stop).await
            {
                // Stopping: the cursor stays before this event.
                return;
            }
            cursor = sequence;
            if let Err(e) = node.store.set_webhook_cursor(&sub.name, cursor).await {
                tracing::error!(subscription = %sub.name, error = %e, "cannot store a webhook cursor; events may be sent again");
            }
        }
        if empty {
            tokio::select! {
                changed = tip.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Sends `event` until the receiver answers 2xx or the event expires; `false` if the node
/// stopped first.
async fn send(
    node: &Node,
    sub: &Subscription,
    sender: &dyn HookSender,
    event: &Event,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut attempts = 0u32;
    loop {
        if *stop.borrow() {
            return false;
        }
        let age_ms = UnixMillis::now().0.saturating_sub(event.at.0).max(0);
        if Duration::from_millis(age_ms as u64) > sub.max_age {
            tracing::warn!(subscription = %sub.name, event = %event.id, attempts, "webhook event given up: not answered within the subscription's max_age");
            node.metrics.webhook(&sub.name, "expired");
            return true;
        }
        let headers = signed_headers(event, &sub.secret, UnixMillis::now().0 / 1000);
        attempts += 1;
        match sender.post(sub, headers, event.body.clone()).await {
            Ok(status) if (200..300).contains(&status) => {
                tracing::debug!(subscription = %sub.name, event = %event.id, attempts, "webhook event delivered");
                node.metrics.webhook(&sub.name, "delivered");
                return true;
            }
            Ok(status) => {
                tracing::warn!(subscription = %sub.name, event = %event.id, status, attempts, "webhook receiver refused the event; will retry");
            }
            Err(e) => {
                tracing::warn!(subscription = %sub.name, event = %event.id, error = %e, attempts, "webhook receiver unreachable; will retry");
            }
        }
        node.metrics.webhook(&sub.name, "retried");
        let delay = RETRY_BASE
            .saturating_mul(1u32 << attempts.min(16))
            .min(sub.retry_max)
            .mul_f64(rand::random::<f64>().mul_add(0.5, 0.5));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral_item(kind: pb::MessageKind) -> InboxRecord {
        let header = pb::EnvelopeHeader {
            kind: kind as i32,
            purpose: pb::Purpose::ServiceReferral as i32,
            consent_id: "CONSENT-1".into(),
            ..Default::default()
        };
        InboxRecord {
            envelope: Some(pb::Envelope {
                header: header.encode_to_vec(),
                ..Default::default()
            }),
            sender: "ZM-DSW".into(),
            message_id: "m-1".into(),
            received_at_ms: 1_700_000_000_000,
            unit: "intake".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_event_names_the_item_and_never_its_payload() {
        let event =
            event_of("MW-DSW", 12, &referral_item(pb::MessageKind::Referral)).expect("event");
        assert_eq!(event.id, "MW-DSW:12");
        let body: serde_json::Value = serde_json::from_slice(&event.body).expect("json");
        assert_eq!(body["type"], "inbox.referral");
        assert_eq!(body["data"]["sequence"], "12");
        assert_eq!(body["data"]["unit"], "intake");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20Z");
        let withdrawal = event_of(
            "MW-DSW",
            13,
            &referral_item(pb::MessageKind::ConsentWithdrawal),
        )
        .expect("event");
        let body: serde_json::Value = serde_json::from_slice(&withdrawal.body).expect("json");
        assert_eq!(body["data"]["consentId"], "CONSENT-1");
        assert!(event_of("MW-DSW", 14, &referral_item(pb::MessageKind::KeyUpdate)).is_none());
    }

    #[test]
    fn the_signature_is_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let event = Event {
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek".into(),
            event_type: EventType::Referral,
            at: UnixMillis(0),
            body: br#"{"test": 2432232314}"#.to_vec(),
        };
        let headers = signed_headers(&event, &secret, 1_614_265_330);
        let signature = headers
            .iter()
            .find(|(name, _)| *name == "webhook-signature")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            signature,
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn secrets_are_whsec_base64_of_a_sound_length() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(decode_secret("whsec_AAAA").is_err());
    }
}
