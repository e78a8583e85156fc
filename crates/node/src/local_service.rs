//! The local service: the authority's own systems submit referrals, follow their delivery,
//! and read, stream and acknowledge the inbox.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use kinbridge_core::envelope::EnvelopeDraft;
use kinbridge_core::limits::{MAX_MESSAGE_LIFETIME_MS, MAX_PAYLOAD_BYTES, MAX_REFERENCE_BYTES};
use kinbridge_core::referral::{categories_present, minimise};
use kinbridge_core::{
    MessageId, NodeId, TransferContext, UnitName, UnixMillis, check_transfer, firewall,
    seal_envelope,
};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_server::LocalService;
use kinbridge_store::{InboxRecord, OutboxRecord};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status};

use crate::identity::{LocalClient, Role};
use crate::server::NodeState;
use crate::status::{consent_status, refused, store_status};
use crate::tls::ConnInfo;

mod workflow;

/// The result of authenticating a local client's certificate.
pub type LocalAuth = Result<LocalClient, LocalAuthError>;

/// Why a certificate the local CA issued is not a usable local-client certificate.
#[derive(Clone, Debug)]
pub struct LocalAuthError {
    /// The client name the certificate carries (`urn:kinbridge:client:<NAME>`), if it carries
    /// one: the local CA issued it, so refusals are audited under it.
    pub client: Option<String>,
    /// What is wrong with it, for the caller.
    pub reason: String,
}

/// Longest a `GetDelivery` call waits for a change.
pub const MAX_DELIVERY_WAIT: Duration = Duration::from_secs(30);
/// Default and largest page of `ListInbox`.
pub const INBOX_PAGE: usize = 100;
/// Largest page a client may ask for.
pub const MAX_INBOX_PAGE: usize = 1000;

/// The `LocalService` implementation.
pub struct LocalApi {
    state: Arc<NodeState>,
}

impl LocalApi {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }

    /// Records the refusal of `actor`'s request in the audit log and returns the status to
    /// answer with (or the audit failure, if even that cannot be recorded).
    pub(crate) async fn refuse(&self, actor: &str, status: Status) -> Status {
        self.refuse_about(actor, status, Refused::default()).await
    }

    /// [`Self::refuse`] with what the refused request was about, so the entry names the
    /// recipient, purpose and consent that were refused (as far as the request named them
    /// validly).
    pub(crate) async fn refuse_about(&self, actor: &str, status: Status, about: Refused) -> Status {
        let mut entry = self.state.auditor.entry(pb::AuditEvent::Refused);
        entry.recipient = about.recipient;
        entry.purpose = about.purpose;
        entry.consent_id = about.consent_id;
        entry.actor = actor.to_owned();
        entry.reason = crate::status::refusal_reason(&status);
        tracing::warn!(actor, reason = %entry.reason, method = %entry.method, error = %status.message(), "local request refused");
        self.state.metrics.refused("local", &entry.reason);
        self.state.auditor.record_refusal(&entry, status).await
    }

    /// The caller, if allowed to `action`; a denial is recorded in the audit log.
    pub(crate) async fn authorized<T>(
        &self,
        request: &Request<T>,
        action: &str,
        allowed: &[Role],
    ) -> Result<LocalClient, Status> {
        match authorize(request, action, allowed) {
            Ok(client) => match self.state.client_limiter.check(&client.name) {
                Ok(()) => Ok(client),
                Err(wait) => {
                    self.state.metrics.refused("local", "rate-limited");
                    Err(crate::ratelimit::overloaded(&client.name, wait))
                }
            },
            Err((actor, status)) => Err(self.refuse(&actor, status).await),
        }
    }
}

/// What a refused request was about, for its audit entry: only what it named validly.
#[derive(Default)]
pub(crate) struct Refused {
    /// The recipient node, if the request named a valid node id.
    pub recipient: String,
    /// The purpose, as sent.
    pub purpose: i32,
    /// The consent id, if it has a valid length.
    pub consent_id: String,
}

impl Refused {
    /// What a request for `recipient`, `purpose` under `consent` was about.
    pub(crate) fn of(recipient: &str, purpose: i32, consent: Option<&pb::ConsentScope>) -> Self {
        let consent_id = consent
            .map(|c| c.consent_id.as_str())
            .filter(|id| id.len() <= MAX_REFERENCE_BYTES && !id.chars().any(char::is_control))
            .unwrap_or_default()
            .to_owned();
        Self {
            recipient: NodeId::new(recipient)
                .map(|n| n.to_string())
                .unwrap_or_default(),
            purpose: pb::Purpose::try_from(purpose).map_or(0, |p| p as i32),
            consent_id,
        }
    }
}

/// The caller, if its certificate names a local client whose role is one of `allowed`;
/// otherwise the caller's name (as far as known) and the refusal.
pub(crate) fn authorize<T>(
    request: &Request<T>,
    action: &str,
    allowed: &[Role],
) -> Result<LocalClient, (String, Status)> {
    let unknown = "(unidentified client)".to_owned();
    let client = request
        .extensions()
        .get::<ConnInfo<LocalAuth>>()
        .map(|info| info.auth.clone())
        .ok_or_else(|| {
            (
                unknown.clone(),
                Status::unauthenticated("no verified TLS client certificate on this connection"),
            )
        })?
        .map_err(|e| {
            (
                e.client.unwrap_or(unknown),
                refused(Code::Unauthenticated, "not-a-client-certificate", e.reason),
            )
        })?;
    if allowed.contains(&client.role) {
        Ok(client)
    } else {
        let roles: Vec<_> = allowed.iter().map(|r| r.as_str()).collect();
        let status = refused(
            Code::PermissionDenied,
            "role-denied",
            format!(
                "role '{}' may not {action}; it needs one of: {}",
                client.role.as_str(),
                roles.join(", ")
            ),
        );
        Err((client.name, status))
    }
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Status {
    refused(Code::InvalidArgument, reason, message)
}

const CASE_ROLES: [Role; 2] = [Role::Caseworker, Role::System];

type InboxStream = Pin<Box<dyn Stream<Item = Result<pb::InboxItem, Status>> + Send>>;

#[tonic::async_trait]
impl LocalService for LocalApi {
    #[tracing::instrument(skip_all, fields(client))]
    async fn submit_referral(
        &self,
        request: Request<pb::SubmitReferralRequest>,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        let client = self
            .authorized(&request, "submit referrals", &CASE_ROLES)
            .await?;
        tracing::Span::current().record("client", client.name.as_str());
        let req = request.into_inner();
        let about = Refused::of(&req.recipient, req.purpose, req.consent.as_ref());
        let (message_id, record) = match self.seal_submission(req) {
            Ok(sealed) => sealed,
            Err(status) => return Err(self.refuse_about(&client.name, status, about).await),
        };
        self.queue(&client, message_id, record).await
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        self.get_delivery_inner(request).await
    }

    async fn list_inbox(
        &self,
        request: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        self.list_inbox_inner(request).await
    }

    type WatchInboxStream = InboxStream;

    async fn watch_inbox(
        &self,
        request: Request<pb::WatchInboxRequest>,
    ) -> Result<Response<InboxStream>, Status> {
        self.watch_inbox_inner(request).await
    }

    async fn acknowledge_inbox_item(
        &self,
        request: Request<pb::AcknowledgeInboxItemRequest>,
    ) -> Result<Response<pb::AcknowledgeInboxItemResponse>, Status> {
        self.acknowledge_inner(request).await
    }

    async fn forward_referral(
        &self,
        request: Request<pb::ForwardReferralRequest>,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        self.forward_inner(request).await
    }

    async fn withdraw_consent(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> Result<Response<pb::WithdrawConsentResponse>, Status> {
        self.withdraw_inner(request).await
    }

    async fn update_referral_status(
        &self,
        request: Request<pb::UpdateReferralStatusRequest>,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        self.update_status_inner(request).await
    }

    async fn get_referral_status(
        &self,
        request: Request<pb::GetReferralStatusRequest>,
    ) -> Result<Response<pb::GetReferralStatusResponse>, Status> {
        self.get_status_inner(request).await
    }
}

impl LocalApi {
    /// Validates a submission and seals its envelope; returns the message id and the outbox
    /// record to store.
    fn seal_submission(
        &self,
        req: pb::SubmitReferralRequest,
    ) -> Result<(String, OutboxRecord), Status> {
        let recipient =
            NodeId::new(&req.recipient).map_err(|e| invalid("bad-recipient", e.to_string()))?;
        let purpose = pb::Purpose::try_from(req.purpose)
            .ok()
            .filter(|p| *p != pb::Purpose::Unspecified)
            .ok_or_else(|| {
                invalid(
                    "bad-purpose",
                    "purpose is required: one of the Purpose values other than UNSPECIFIED",
                )
            })?;
        let consent = req.consent.ok_or_else(|| {
            refused(
                Code::FailedPrecondition,
                "consent-missing",
                "consent is required: the scope the child, guardian or a best-interests determination allowed",
            )
        })?;
        if consent.consent_id.is_empty() || consent.consent_id.len() > MAX_REFERENCE_BYTES {
            return Err(invalid(
                "bad-consent-id",
                format!("consent.consent_id is required, at most {MAX_REFERENCE_BYTES} bytes"),
            ));
        }
        if req.correlation_id.len() > MAX_REFERENCE_BYTES {
            return Err(invalid(
                "bad-correlation-id",
                format!("correlation_id is at most {MAX_REFERENCE_BYTES} bytes"),
            ));
        }
        let referral = req
            .referral
            .ok_or_else(|| invalid("no-referral", "referral is required"))?;
        let kind = match pb::MessageKind::try_from(req.kind) {
            Ok(pb::MessageKind::Unspecified | pb::MessageKind::Referral) => {
                pb::MessageKind::Referral
            }
            Ok(pb::MessageKind::CaseTransfer) => pb::MessageKind::CaseTransfer,
            _ => return Err(invalid("bad-kind", "kind is a referral or a case transfer")),
        };
        let recipient_unit = UnitName::optional(&req.recipient_unit)
            .map_err(|e| invalid("bad-unit", format!("recipient_unit: {e}")))?;
        let payload = referral.encode_to_vec();
        let draft = EnvelopeDraft {
            consent_id: consent.consent_id.clone(),
            correlation_id: req.correlation_id,
            data_categories: categories_present(&referral),
            consent: Some(consent),
            recipient_unit,
            ..EnvelopeDraft::new(kind, self.state.node_id.clone(), recipient, purpose)
        };
        self.seal_checked(draft, payload, req.ttl_seconds)
    }

    /// Checks `draft` against the registry, its consent scope and the firewall, and seals it
    /// with `payload`. The message lives `ttl_seconds` (0: the node's default), never past its
    /// consent's expiry.
    fn seal_checked(
        &self,
        draft: EnvelopeDraft,
        payload: Vec<u8>,
        ttl_seconds: u32,
    ) -> Result<(String, OutboxRecord), Status> {
        self.seal_with(draft, payload, ttl_seconds, check_transfer)
    }

    /// [`Self::seal_checked`] with the permit made by `permit` (the consent check, or the
    /// withdrawal permit).
    pub(crate) fn seal_with(
        &self,
        mut draft: EnvelopeDraft,
        payload: Vec<u8>,
        ttl_seconds: u32,
        permit: impl FnOnce(
            EnvelopeDraft,
            &TransferContext<'_>,
        ) -> Result<
            kinbridge_core::PermittedTransfer,
            kinbridge_core::ConsentViolation,
        >,
    ) -> Result<(String, OutboxRecord), Status> {
        let state = &self.state;
        let recipient = draft.recipient.clone();
        let peer = state.registry.get(&recipient).ok_or_else(|| {
            refused(
                Code::FailedPrecondition,
                "unknown-recipient",
                format!("recipient '{recipient}' is not in this node's peer registry"),
            )
        })?;
        if peer.endpoint.is_none() {
            return Err(refused(
                Code::FailedPrecondition,
                "recipient-unreachable",
                format!(
                    "peer '{recipient}' has no endpoint in this node's registry: messages cannot be delivered to it"
                ),
            ));
        }
        let ttl_ms = match ttl_seconds {
            0 => state.message_ttl_ms,
            s => i64::from(s) * 1000,
        };
        if ttl_ms > MAX_MESSAGE_LIFETIME_MS {
            return Err(invalid(
                "bad-ttl",
                format!("ttl_seconds is at most {}", MAX_MESSAGE_LIFETIME_MS / 1000),
            ));
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(invalid(
                "oversized",
                format!(
                    "the referral is {} bytes encoded; the limit is {MAX_PAYLOAD_BYTES} bytes",
                    payload.len()
                ),
            ));
        }
        let now = UnixMillis::now();
        let consent_expiry = draft.consent.as_ref().map_or(i64::MAX, |c| c.expires_at_ms);
        draft.created_at = now;
        draft.expires_at = UnixMillis(now.plus_ms(ttl_ms).0.min(consent_expiry));
        let ctx = TransferContext {
            recipient_tags: &peer.tags,
            accepted_purposes: None,
            now,
        };
        let permit = permit(draft, &ctx).map_err(|v| consent_status(&v))?;
        let sealed = seal_envelope(&permit, payload, &state.keys.signer());
        let draft = permit.draft();
        let record = OutboxRecord {
            envelope: Some(sealed.into()),
            recipient: recipient.to_string(),
            state: pb::DeliveryState::Queued as i32,
            submitted_at_ms: now.0,
            next_attempt_at_ms: now.0,
            expires_at_ms: draft.expires_at.0,
            ..Default::default()
        };
        Ok((draft.message_id.to_string(), record))
    }

    /// Logs a sealed message as submitted by `client`, puts it in the outbox, and answers.
    /// A full outbox refuses with RESOURCE_EXHAUSTED and a retry hint.
    pub(crate) async fn queue(
        &self,
        client: &LocalClient,
        message_id: String,
        record: OutboxRecord,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        self.queue_as(&client.name, client.unit_str(), message_id, record)
            .await
    }

    /// [`Self::queue`] for a message submitted by `actor` (a local client's name, or the node
    /// itself answering a peer) on behalf of `unit`.
    pub(crate) async fn queue_as(
        &self,
        actor: &str,
        unit: &str,
        message_id: String,
        mut record: OutboxRecord,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        let state = &self.state;
        record.unit = unit.to_owned();
        if state.store.queued() >= state.max_queued {
            let mut status = refused(
                Code::ResourceExhausted,
                "outbox-full",
                format!(
                    "{} messages are waiting for delivery, the most this node holds; retry later",
                    state.max_queued
                ),
            );
            if let Ok(value) = "1000".parse() {
                status
                    .metadata_mut()
                    .insert(crate::ratelimit::RETRY_AFTER_METADATA, value);
            }
            return Err(status);
        }
        if let Some(e) = record.envelope.as_ref() {
            let digest = kinbridge_core::EnvelopeDigest::compute(&e.header, &e.signature);
            let mut entry = crate::audit::with_header(
                state.auditor.entry(pb::AuditEvent::Submitted),
                &e.header,
                &digest.0,
            );
            entry.actor = actor.to_owned();
            state.auditor.record(&entry).await?;
        }
        let recipient = record.recipient.clone();
        // Its reporting dimensions, made durable by the queue's own commit.
        let noted = state
            .reporting
            .note_sent(&record)
            .map_err(|e| store_status(&e))?;
        if let Err(e) = state.store.enqueue(&message_id, record).await {
            if let Some(key) = noted {
                let _ = state.reporting.forget(&key);
            }
            return Err(store_status(&e));
        }
        state.delivery_wake.notify_one();
        state.metrics.queued(&recipient);
        tracing::info!(%message_id, %recipient, "message queued");
        Ok(Response::new(pb::SubmitReferralResponse {
            message_id,
            state: pb::DeliveryState::Queued as i32,
        }))
    }

    /// Refuses a caseworker a case of another unit than its own; recorded in the audit log.
    async fn in_unit(&self, client: &LocalClient, unit: &str, what: &str) -> Result<(), Status> {
        if client.sees(unit) {
            return Ok(());
        }
        let status = refused(
            Code::PermissionDenied,
            "other-unit",
            format!(
                "{what} belongs to unit '{unit}'; caseworker '{}' works in unit '{}' and sees only its cases",
                client.name,
                client.unit_str()
            ),
        );
        Err(self.refuse(&client.name, status).await)
    }

    /// Refuses a client the firewall keeps from reading child-protection data.
    async fn readable_by(&self, client: &LocalClient) -> Result<(), Status> {
        if firewall::reader_allowed(&client.tags) {
            return Ok(());
        }
        let status = refused(
            Code::PermissionDenied,
            "firewall",
            "this client is tagged immigration-enforcement: it may refer children to child protection but never read child-protection data",
        );
        Err(self.refuse(&client.name, status).await)
    }

    async fn withdraw_inner(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> Result<Response<pb::WithdrawConsentResponse>, Status> {
        let client = self
            .authorized(&request, "withdraw consent", &CASE_ROLES)
            .await?;
        let consent_id = request.into_inner().consent_id;
        let state = &self.state;
        let me = state.node_id.to_string();
        // The scope, from a message this node originated under the consent.
        let header = state
            .store
            .find_outbox_header(|h, record| {
                carries_case_data(h.kind)
                    && h.consent_id == consent_id
                    && h.custody.is_empty()
                    && h.sender == me
                    && client.sees(&record.unit)
            })
            .map_err(|e| store_status(&e))?;
        // Or a tracing case registered here under it.
        let scope = match header.and_then(|h| h.consent) {
            Some(scope) => Some(scope),
            None => state
                .tracing
                .consent_of(&consent_id, |unit| client.sees(unit))?,
        };
        let Some(scope) = scope else {
            let status = refused(
                Code::NotFound,
                "unknown-consent",
                format!(
                    "this node sent no data under consent '{}'; only the node that originated it can withdraw it",
                    consent_id.chars().take(64).collect::<String>()
                ),
            );
            return Err(self.refuse(&client.name, status).await);
        };
        let mut entry = state.auditor.entry(pb::AuditEvent::ConsentWithdrawn);
        entry.consent_id = consent_id.clone();
        entry.actor = client.name.clone();
        state.auditor.record(&entry).await?;
        let purged_here = crate::purge::purge_consent(state, &consent_id, &me, "consent-withdrawn")
            .await?
            + crate::family_tracing::forget_consent(state, &consent_id, &me).await?;
        let mut targets: Vec<&String> = scope
            .recipients
            .iter()
            .chain(&scope.onward_recipients)
            .filter(|n| **n != me)
            .collect();
        targets.sort();
        targets.dedup();
        let purpose = scope
            .purposes
            .first()
            .and_then(|p| pb::Purpose::try_from(*p).ok())
            .unwrap_or(pb::Purpose::ServiceReferral);
        let payload = pb::ConsentWithdrawal {
            consent_id: consent_id.clone(),
            withdrawn_at_ms: UnixMillis::now().0,
        }
        .encode_to_vec();
        let mut notices = Vec::with_capacity(targets.len());
        for target in targets {
            let recipient =
                NodeId::new(target).map_err(|e| invalid("bad-recipient", e.to_string()))?;
            let draft = EnvelopeDraft {
                consent_id: consent_id.clone(),
                ..EnvelopeDraft::new(
                    pb::MessageKind::ConsentWithdrawal,
                    state.node_id.clone(),
                    recipient.clone(),
                    purpose,
                )
            };
            let (message_id, record) = self.seal_with(draft, payload.clone(), 0, |d, _| {
                kinbridge_core::consent::permit_withdrawal(d)
            })?;
            self.queue(&client, message_id.clone(), record).await?;
            notices.push(pb::WithdrawalNotice {
                recipient: recipient.to_string(),
                message_id,
            });
        }
        tracing::info!(purged_here, notices = notices.len(), "consent withdrawn");
        Ok(Response::new(pb::WithdrawConsentResponse {
            notices,
            purged_here,
        }))
    }

    async fn forward_inner(
        &self,
        request: Request<pb::ForwardReferralRequest>,
    ) -> Result<Response<pb::SubmitReferralResponse>, Status> {
        let client = self
            .authorized(&request, "forward referrals", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let req = request.into_inner();
        let state = &self.state;
        let Some(item) = state
            .store
            .inbox_get(req.sequence)
            .map_err(|e| store_status(&e))?
        else {
            let status = refused(
                Code::NotFound,
                "unknown-inbox-item",
                format!("no inbox item with sequence {}", req.sequence),
            );
            return Err(self.refuse(&client.name, status).await);
        };
        self.in_unit(&client, &item.unit, &format!("inbox item {}", req.sequence))
            .await?;
        let full = if item.purged_at_ms == 0 {
            state
                .store
                .with_payload(item.envelope.unwrap_or_default())
                .map_err(|e| store_status(&e))?
        } else {
            None
        };
        let Some(envelope) = full else {
            let status = refused(
                Code::FailedPrecondition,
                "payload-purged",
                format!(
                    "inbox item {} holds no payload any more (consent withdrawn or retention passed)",
                    req.sequence
                ),
            );
            return Err(self.refuse(&client.name, status).await);
        };
        let sealed = match self.seal_forward(&envelope, &req) {
            Ok(sealed) => sealed,
            Err(status) => {
                // The entry names the onward recipient and what the data was sent for.
                let header =
                    pb::EnvelopeHeader::decode(envelope.header.as_slice()).unwrap_or_default();
                let mut about = Refused::of(&req.recipient, header.purpose, None);
                about.consent_id = header.consent_id;
                return Err(self.refuse_about(&client.name, status, about).await);
            }
        };
        self.queue(&client, sealed.0, sealed.1).await
    }

    /// A new envelope carrying a received referral on to `req.recipient`: same payload (fresh
    /// salt), purpose and consent scope, with the previous sender added to the chain of custody.
    fn seal_forward(
        &self,
        received: &pb::Envelope,
        req: &pb::ForwardReferralRequest,
    ) -> Result<(String, OutboxRecord), Status> {
        // The stored envelope was verified on arrival: its header decodes.
        let header = pb::EnvelopeHeader::decode(received.header.as_slice()).map_err(|e| {
            Status::internal(format!("a stored envelope header does not decode: {e}"))
        })?;
        let recipient =
            NodeId::new(&req.recipient).map_err(|e| invalid("bad-recipient", e.to_string()))?;
        let malformed = |e: kinbridge_core::IdError| {
            Status::internal(format!("a stored envelope holds a bad node id: {e}"))
        };
        let mut custody: Vec<NodeId> = header
            .custody
            .iter()
            .map(|n| NodeId::new(n))
            .collect::<Result<_, _>>()
            .map_err(malformed)?;
        custody.push(NodeId::new(&header.sender).map_err(malformed)?);
        let recipient_unit = UnitName::optional(&req.recipient_unit)
            .map_err(|e| invalid("bad-unit", format!("recipient_unit: {e}")))?;
        let draft = EnvelopeDraft {
            consent_id: header.consent_id,
            correlation_id: header.correlation_id,
            data_categories: header
                .data_categories
                .iter()
                .filter_map(|c| pb::DataCategory::try_from(*c).ok())
                .collect(),
            consent: header.consent,
            custody,
            recipient_unit,
            ..EnvelopeDraft::new(
                pb::MessageKind::try_from(header.kind).unwrap_or(pb::MessageKind::Referral),
                self.state.node_id.clone(),
                recipient,
                pb::Purpose::try_from(header.purpose).unwrap_or(pb::Purpose::Unspecified),
            )
        };
        self.seal_checked(draft, received.payload.clone(), req.ttl_seconds)
    }

    async fn get_delivery_inner(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        let client = self
            .authorized(&request, "read deliveries", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let req = request.into_inner();
        let id = MessageId::new(&req.message_id)
            .map_err(|e| invalid("bad-message-id", e.to_string()))?
            .to_string();
        let store = &self.state.store;
        if let Some(record) = store.outbox_get(&id).map_err(|e| store_status(&e))? {
            self.in_unit(&client, &record.unit, &format!("message {id}"))
                .await?;
        }
        let state_stopping = &self.state.stopping;
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(u64::from(req.wait_ms)).min(MAX_DELIVERY_WAIT);
        let mut changes = store.watch_outbox(&id);
        loop {
            changes.seen();
            let record = store
                .outbox_get(&id)
                .map_err(|e| store_status(&e))?
                .ok_or_else(|| {
                    refused(
                        Code::NotFound,
                        "unknown-message",
                        format!("no submitted message {id} on this node"),
                    )
                })?;
            let queued = record.state == pb::DeliveryState::Queued as i32;
            if !queued || tokio::time::Instant::now() >= deadline {
                return Ok(Response::new(delivery_response(store, id, record)));
            }
            let mut stopping = state_stopping.subscribe();
            let changed = tokio::select! {
                r = tokio::time::timeout_at(deadline, changes.changed()) => r.is_ok(),
                _ = stopping.wait_for(|s| *s) => false,
            };
            if !changed || *state_stopping.borrow() {
                let record = store.outbox_get(&id).map_err(|e| store_status(&e))?;
                if let Some(record) = record {
                    return Ok(Response::new(delivery_response(store, id, record)));
                }
                continue;
            }
        }
    }

    async fn list_inbox_inner(
        &self,
        request: Request<pb::ListInboxRequest>,
    ) -> Result<Response<pb::ListInboxResponse>, Status> {
        let client = self
            .authorized(&request, "read the inbox", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let req = request.into_inner();
        let limit = match req.limit as usize {
            0 => INBOX_PAGE,
            n => n.min(MAX_INBOX_PAGE),
        };
        let page = self
            .state
            .store
            .inbox_page(req.after_sequence, limit, req.include_acknowledged, |r| {
                listed_for(&client, r)
            })
            .map_err(|e| store_status(&e))?;
        let items = page
            .into_iter()
            .map(|(seq, r)| inbox_item(&self.state.store, seq, r))
            .collect();
        Ok(Response::new(pb::ListInboxResponse { items }))
    }

    async fn watch_inbox_inner(
        &self,
        request: Request<pb::WatchInboxRequest>,
    ) -> Result<Response<InboxStream>, Status> {
        let client = self
            .authorized(&request, "read the inbox", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let mut cursor = request.into_inner().after_sequence;
        let state = Arc::clone(&self.state);
        let (tx, rx) = mpsc::channel(INBOX_PAGE);
        tokio::spawn(async move {
            let mut tip = state.store.subscribe_inbox();
            let mut stopping = state.stopping.subscribe();
            loop {
                tip.borrow_and_update();
                let page = match state
                    .store
                    .inbox_page(cursor, INBOX_PAGE, false, |r| listed_for(&client, r))
                {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(store_status(&e))).await;
                        return;
                    }
                };
                let empty = page.is_empty();
                for (seq, record) in page {
                    cursor = seq;
                    if tx
                        .send(Ok(inbox_item(&state.store, seq, record)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if empty {
                    tokio::select! {
                        changed = tip.changed() => if changed.is_err() { return },
                        () = tx.closed() => return,
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn acknowledge_inner(
        &self,
        request: Request<pb::AcknowledgeInboxItemRequest>,
    ) -> Result<Response<pb::AcknowledgeInboxItemResponse>, Status> {
        let client = self
            .authorized(&request, "acknowledge inbox items", &CASE_ROLES)
            .await?;
        let sequence = request.into_inner().sequence;
        let state = &self.state;
        let Some(record) = state
            .store
            .inbox_get(sequence)
            .map_err(|e| store_status(&e))?
        else {
            let status = refused(
                Code::NotFound,
                "unknown-inbox-item",
                format!("no inbox item with sequence {sequence}"),
            );
            return Err(self.refuse(&client.name, status).await);
        };
        self.in_unit(&client, &record.unit, &format!("inbox item {sequence}"))
            .await?;
        if !record.acknowledged {
            let envelope = record.envelope.unwrap_or_default();
            let mut entry = crate::audit::with_header(
                state.auditor.entry(pb::AuditEvent::Acknowledged),
                &envelope.header,
                &record.envelope_digest,
            );
            entry.actor = client.name;
            state.auditor.record(&entry).await?;
            state
                .store
                .acknowledge(sequence)
                .await
                .map_err(|e| store_status(&e))?;
            tracing::info!(sequence, "inbox item acknowledged");
        }
        Ok(Response::new(pb::AcknowledgeInboxItemResponse {}))
    }
}

/// The delivery of an outbox record, with its envelope's payload restored from the payload
/// store (none once purged).
fn delivery_response(
    store: &kinbridge_store::Store,
    message_id: String,
    r: OutboxRecord,
) -> pb::GetDeliveryResponse {
    let envelope = r.envelope.map(|e| {
        let restored = if r.purged_at_ms == 0 {
            store.with_payload(e.clone()).ok().flatten()
        } else {
            None
        };
        restored.unwrap_or(e)
    });
    pb::GetDeliveryResponse {
        message_id,
        recipient: r.recipient,
        state: r.state,
        attempts: r.attempts,
        last_error: r.last_error,
        receipt: r.receipt,
        submitted_at_ms: r.submitted_at_ms,
        delivered_at_ms: r.delivered_at_ms,
        envelope,
    }
}

/// An inbox item for a local client. The stored envelope was verified when it arrived, so its
/// header and payload decode; a record that does not is shown with what can be read.
fn inbox_item(store: &kinbridge_store::Store, sequence: u64, r: InboxRecord) -> pb::InboxItem {
    let stored = r.envelope.unwrap_or_default();
    let header = pb::EnvelopeHeader::decode(stored.header.as_slice()).unwrap_or_default();
    let full = if r.purged_at_ms == 0 {
        store.with_payload(stored.clone()).ok().flatten()
    } else {
        None
    };
    let purged = full.is_none();
    let envelope = full.unwrap_or(stored);
    // Minimisation: the reader gets only the categories the consent covers.
    let allowed = header
        .consent
        .as_ref()
        .map(|c| c.categories.clone())
        .unwrap_or_default();
    let referral = match pb::MessageKind::try_from(header.kind) {
        Ok(pb::MessageKind::Referral | pb::MessageKind::CaseTransfer) if !purged => {
            pb::ReferralPayload::decode(envelope.payload.as_slice())
                .ok()
                .map(|mut p| {
                    minimise(&mut p, &allowed);
                    p
                })
        }
        _ => None,
    };
    pb::InboxItem {
        sequence,
        message_id: r.message_id,
        sender: r.sender,
        kind: header.kind,
        purpose: header.purpose,
        consent_id: header.consent_id,
        correlation_id: header.correlation_id,
        created_at_ms: header.created_at_ms,
        received_at_ms: r.received_at_ms,
        data_categories: header.data_categories,
        referral,
        acknowledged: r.acknowledged,
        envelope: Some(envelope),
        receipt: r.receipt,
        consent: header.consent,
        custody: header.custody,
        purged: purged && r.purged_at_ms != 0,
        unit: r.unit,
    }
}

/// Whether `record` shows in `client`'s inbox: of its unit (or of none), and not the node's
/// own business (key updates are the administrator's, read with `kinbridge keys list`).
fn listed_for(client: &LocalClient, record: &InboxRecord) -> bool {
    if !client.sees(&record.unit) {
        return false;
    }
    let kind = record
        .envelope
        .as_ref()
        .and_then(|e| pb::EnvelopeHeader::decode(e.header.as_slice()).ok())
        .map_or(0, |h| h.kind);
    kind != pb::MessageKind::KeyUpdate as i32
}

/// Whether a message of `kind` carries a child's case (a referral or a case transfer).
pub(crate) fn carries_case_data(kind: i32) -> bool {
    kind == pb::MessageKind::Referral as i32 || kind == pb::MessageKind::CaseTransfer as i32
}
