//! The local use cases: the authority's own systems submit and forward referrals, follow
//! their delivery, read, stream and acknowledge the inbox, withdraw consent and work a
//! referral's status. Each call says who the caller is ([`LocalAuth`], from its certificate)
//! and is authorised here, by role, unit and tags; every refusal is recorded in the audit log.

use std::sync::Arc;
use std::time::Duration;

use kinbridge_core::envelope::EnvelopeDraft;
use kinbridge_core::firewall::{self, LocalAccess, local_client_may};
use kinbridge_core::limits::MAX_REFERENCE_BYTES;
use kinbridge_core::referral::{categories_present, minimise};
use kinbridge_core::{MessageId, NodeId, UnitName, UnixMillis, check_transfer};
use kinbridge_proto::v1 as pb;
use kinbridge_store::{InboxRecord, OutboxRecord};
use prost::Message;
use tokio::sync::mpsc;

use crate::error::{ErrorKind, ServiceError};
use crate::identity::{LocalClient, Role};
use crate::node::Node;
use crate::outbox;

pub mod sending;
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

/// The local use cases over the node.
pub struct LocalCases {
    node: Arc<Node>,
}

impl LocalCases {
    /// A service over the node's state.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Records the refusal of `actor`'s request in the audit log and returns the error to
    /// answer with (or the audit failure, if even that cannot be recorded).
    pub async fn refuse(&self, actor: &str, status: ServiceError) -> ServiceError {
        self.refuse_about(actor, status, Refused::default()).await
    }

    /// [`Self::refuse`] with what the refused request was about, so the entry names the
    /// recipient, purpose and consent that were refused (as far as the request named them
    /// validly).
    pub(crate) async fn refuse_about(
        &self,
        actor: &str,
        status: ServiceError,
        about: Refused,
    ) -> ServiceError {
        let mut entry = self.node.auditor.entry(pb::AuditEvent::Refused);
        entry.recipient = about.recipient;
        entry.purpose = about.purpose;
        entry.consent_id = about.consent_id;
        entry.actor = actor.to_owned();
        entry.reason = status.refusal_reason();
        tracing::warn!(actor, reason = %entry.reason, method = %entry.method, error = %status.message(), "local request refused");
        self.node.metrics.refused("local", &entry.reason);
        self.node.auditor.record_refusal(&entry, status).await
    }

    /// The caller, if allowed to `action`; a denial is recorded in the audit log.
    pub async fn authorized(
        &self,
        auth: Option<&LocalAuth>,
        action: &str,
        allowed: &[Role],
    ) -> Result<LocalClient, ServiceError> {
        match authorize(auth, action, allowed) {
            Ok(client) => match self.node.client_limiter.check(&client.name) {
                Ok(()) => Ok(client),
                Err(wait) => {
                    self.node.metrics.refused("local", "rate-limited");
                    Err(ServiceError::rate_limited(&client.name, wait))
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
pub fn authorize(
    auth: Option<&LocalAuth>,
    action: &str,
    allowed: &[Role],
) -> Result<LocalClient, (String, ServiceError)> {
    let unknown = UNIDENTIFIED.to_owned();
    let client = auth
        .cloned()
        .ok_or_else(|| (unknown.clone(), ServiceError::no_certificate()))?
        .map_err(|e| {
            (
                e.client.unwrap_or(unknown),
                ServiceError::refused(
                    ErrorKind::Unauthenticated,
                    "not-a-client-certificate",
                    e.reason,
                ),
            )
        })?;
    if allowed.contains(&client.role) {
        Ok(client)
    } else {
        let roles: Vec<_> = allowed.iter().map(|r| r.as_str()).collect();
        let status = ServiceError::refused(
            ErrorKind::PermissionDenied,
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

/// How the audit log names a local caller it cannot name otherwise.
pub const UNIDENTIFIED: &str = "(unidentified client)";

/// The name a local caller's refusals are recorded under: the client its certificate names,
/// as far as it names one (a certificate refused as a local-client certificate may still
/// carry its client name).
pub fn actor_of(auth: Option<&LocalAuth>) -> String {
    match auth {
        Some(Ok(client)) => client.name.clone(),
        Some(Err(e)) => e.client.clone().unwrap_or_else(|| UNIDENTIFIED.to_owned()),
        None => UNIDENTIFIED.to_owned(),
    }
}

/// Who a local client's certificate `chain` (verified by the port's TLS against the local CA)
/// proves: a local client with its role, unit and tags, or why not.
pub fn local_auth_of(chain: &[rustls::pki_types::CertificateDer<'static>]) -> LocalAuth {
    let leaf = chain.first().ok_or_else(|| LocalAuthError {
        client: None,
        reason: "no client certificate was presented".to_owned(),
    })?;
    crate::identity::local_client_of(leaf).map_err(|e| LocalAuthError {
        client: crate::identity::client_name_of(leaf),
        reason: format!("the client certificate is not a kinbridge local-client certificate: {e}"),
    })
}

/// The firewall's verdict on a call to `method`, of class `access`, by the client `auth`
/// proves: `Ok` to let it through (roles and units are checked by each use case), or the
/// caller as far as known and the refusal. An enforcement-tagged client may submit referrals
/// and nothing that returns, releases or changes child-protection data; a caller whose
/// certificate names no valid local client reaches only what holds no case data.
pub fn firewall_verdict(
    access: LocalAccess,
    method: &str,
    auth: Option<&LocalAuth>,
) -> Result<(), (String, ServiceError)> {
    let path = method;
    let unknown = || UNIDENTIFIED.to_owned();
    match auth {
        Some(Ok(client)) if local_client_may(access, &client.tags) => Ok(()),
        Some(Ok(client)) => Err((
            client.name.clone(),
            ServiceError::refused(
                ErrorKind::PermissionDenied,
                "firewall",
                format!(
                    "this client is tagged immigration-enforcement: it may refer children to child protection, but {path} {}; nothing sent for child protection flows back to enforcement",
                    match access {
                        LocalAccess::Aggregate =>
                            "returns counts drawn from child-protection cases",
                        LocalAccess::Operations =>
                            "runs the node for the child-protection authority",
                        _ => "returns, releases or changes child-protection case data",
                    }
                ),
            ),
        )),
        _ if access == LocalAccess::NoCaseData => Ok(()),
        Some(Err(e)) => Err((
            e.client.clone().unwrap_or_else(unknown),
            ServiceError::refused(
                ErrorKind::Unauthenticated,
                "not-a-client-certificate",
                e.reason.clone(),
            ),
        )),
        None => Err((unknown(), ServiceError::no_certificate())),
    }
}

fn invalid(reason: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::refused(ErrorKind::InvalidArgument, reason, message)
}

/// The roles that work cases: send, receive and move referrals, family tracing.
pub const CASE_ROLES: [Role; 2] = [Role::Caseworker, Role::System];

impl LocalCases {
    /// Submits a referral or case transfer: authorised for a caseworker or system, checked
    /// and sealed ([`outbox::seal`]), logged as submitted and queued ([`outbox::queue`]).
    /// Answers the message id to follow its delivery by. Under an `idempotency_key`, the
    /// first submission under it is the only one: a retry of the same request gets the same
    /// answer, another request under the key is refused ([`crate::once`]).
    #[tracing::instrument(skip_all, fields(client))]
    pub async fn submit_referral(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::SubmitReferralRequest,
        idempotency_key: Option<&str>,
    ) -> Result<pb::SubmitReferralResponse, ServiceError> {
        let client = self
            .authorized(auth, "submit referrals", &CASE_ROLES)
            .await?;
        tracing::Span::current().record("client", client.name.as_str());
        let Some(key) = idempotency_key else {
            return self.submit(&client, req, None).await;
        };
        let once = match crate::once::submission_key(&client.name, key, &req.encode_to_vec()) {
            Ok(once) => once,
            Err(refusal) => return Err(self.refuse(&client.name, refusal).await),
        };
        let Some(_held) = self.node.submitting.hold(&once.key).await else {
            let busy = ServiceError::refused(
                ErrorKind::Aborted,
                "idempotency-key-in-use",
                "another request under this idempotency key is still being handled; retry in a moment",
            );
            return Err(busy.retry_after(Duration::from_secs(1)));
        };
        match self.node.store.submitted(&once.key)? {
            Some(first) if first.request_digest == once.request_digest => {
                tracing::info!(message_id = %first.message_id, "a retried submission answered with its first answer");
                Ok(pb::SubmitReferralResponse {
                    message_id: first.message_id,
                    state: pb::DeliveryState::Queued as i32,
                })
            }
            Some(_) => {
                let reused = ServiceError::refused(
                    ErrorKind::AlreadyExists,
                    "idempotency-key-reused",
                    "this idempotency key was used for another request; use a new key for a new submission",
                );
                Err(self.refuse(&client.name, reused).await)
            }
            None => self.submit(&client, req, Some(&once)).await,
        }
    }

    /// Seals `client`'s submission and queues it (under `once`, if given).
    async fn submit(
        &self,
        client: &LocalClient,
        req: pb::SubmitReferralRequest,
        once: Option<&kinbridge_store::SubmissionKey>,
    ) -> Result<pb::SubmitReferralResponse, ServiceError> {
        let about = Refused::of(&req.recipient, req.purpose, req.consent.as_ref());
        let (message_id, record) = match self.seal_submission(req) {
            Ok(sealed) => sealed,
            Err(status) => return Err(self.refuse_about(&client.name, status, about).await),
        };
        self.queue(client, message_id, record, once).await
    }

    /// Validates a submission and seals its envelope; returns the message id and the outbox
    /// record to store.
    fn seal_submission(
        &self,
        req: pb::SubmitReferralRequest,
    ) -> Result<(String, OutboxRecord), ServiceError> {
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
            ServiceError::refused(ErrorKind::FailedPrecondition,
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
            ..EnvelopeDraft::new(kind, self.node.node_id.clone(), recipient, purpose)
        };
        self.seal_checked(draft, payload, req.ttl_seconds)
    }

    /// Checks `draft` and seals it with `payload`: [`outbox::seal`] with the consent check.
    fn seal_checked(
        &self,
        draft: EnvelopeDraft,
        payload: Vec<u8>,
        ttl_seconds: u32,
    ) -> Result<(String, OutboxRecord), ServiceError> {
        outbox::seal(&self.node, draft, payload, ttl_seconds, check_transfer)
    }

    /// Logs a sealed message as submitted by `client` and puts it in the outbox (under
    /// `once`, if given) ([`outbox::queue`]).
    async fn queue(
        &self,
        client: &LocalClient,
        message_id: String,
        record: OutboxRecord,
        once: Option<&kinbridge_store::SubmissionKey>,
    ) -> Result<pb::SubmitReferralResponse, ServiceError> {
        outbox::queue(
            &self.node,
            &client.name,
            client.unit_str(),
            message_id,
            record,
            once,
        )
        .await
    }

    /// Refuses a caseworker a case of another unit than its own; recorded in the audit log.
    async fn in_unit(
        &self,
        client: &LocalClient,
        unit: &str,
        what: &str,
    ) -> Result<(), ServiceError> {
        if client.sees(unit) {
            return Ok(());
        }
        let status = ServiceError::refused(
            ErrorKind::PermissionDenied,
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
    async fn readable_by(&self, client: &LocalClient) -> Result<(), ServiceError> {
        if firewall::reader_allowed(&client.tags) {
            return Ok(());
        }
        let status = ServiceError::refused(
            ErrorKind::PermissionDenied,
            "firewall",
            "this client is tagged immigration-enforcement: it may refer children to child protection but never read child-protection data",
        );
        Err(self.refuse(&client.name, status).await)
    }

    /// Withdraws a consent this node originated data under: deletes the payloads here and
    /// sends a signed withdrawal notice to every node the scope reached.
    pub async fn withdraw_consent(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::WithdrawConsentRequest,
    ) -> Result<pb::WithdrawConsentResponse, ServiceError> {
        let client = self
            .authorized(auth, "withdraw consent", &CASE_ROLES)
            .await?;
        let consent_id = req.consent_id;
        let state = &self.node;
        let me = state.node_id.to_string();
        // The scope, from a message this node originated under the consent.
        let header = state.store.find_outbox_header(|h, record| {
            carries_case_data(h.kind)
                && h.consent_id == consent_id
                && h.custody.is_empty()
                && h.sender == me
                && client.sees(&record.unit)
        })?;
        // Or a tracing case registered here under it.
        let scope = match header.and_then(|h| h.consent) {
            Some(scope) => Some(scope),
            None => state
                .tracing
                .consent_of(&consent_id, |unit| client.sees(unit))?,
        };
        let Some(scope) = scope else {
            let status = ServiceError::refused(
                ErrorKind::NotFound,
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
            let (message_id, record) =
                outbox::seal(&self.node, draft, payload.clone(), 0, |d, _| {
                    kinbridge_core::consent::permit_withdrawal(d)
                })?;
            self.queue(&client, message_id.clone(), record, None)
                .await?;
            notices.push(pb::WithdrawalNotice {
                recipient: recipient.to_string(),
                message_id,
            });
        }
        tracing::info!(purged_here, notices = notices.len(), "consent withdrawn");
        Ok(pb::WithdrawConsentResponse {
            notices,
            purged_here,
        })
    }

    /// Forwards a received referral to another node under the same consent scope, adding
    /// this node to its chain of custody.
    pub async fn forward_referral(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::ForwardReferralRequest,
    ) -> Result<pb::SubmitReferralResponse, ServiceError> {
        let client = self
            .authorized(auth, "forward referrals", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let state = &self.node;
        let Some(item) = state.store.inbox_get(req.sequence)? else {
            let status = ServiceError::refused(
                ErrorKind::NotFound,
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
                .with_payload(item.envelope.unwrap_or_default())?
        } else {
            None
        };
        let Some(envelope) = full else {
            let status = ServiceError::refused(
                ErrorKind::FailedPrecondition,
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
        self.queue(&client, sealed.0, sealed.1, None).await
    }

    /// A new envelope carrying a received referral on to `req.recipient`: same payload (fresh
    /// salt), purpose and consent scope, with the previous sender added to the chain of custody.
    fn seal_forward(
        &self,
        received: &pb::Envelope,
        req: &pb::ForwardReferralRequest,
    ) -> Result<(String, OutboxRecord), ServiceError> {
        // The stored envelope was verified on arrival: its header decodes.
        let header = pb::EnvelopeHeader::decode(received.header.as_slice()).map_err(|e| {
            ServiceError::internal(format!("a stored envelope header does not decode: {e}"))
        })?;
        let recipient =
            NodeId::new(&req.recipient).map_err(|e| invalid("bad-recipient", e.to_string()))?;
        let malformed = |e: kinbridge_core::IdError| {
            ServiceError::internal(format!("a stored envelope holds a bad node id: {e}"))
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
                self.node.node_id.clone(),
                recipient,
                pb::Purpose::try_from(header.purpose).unwrap_or(pb::Purpose::Unspecified),
            )
        };
        self.seal_checked(draft, received.payload.clone(), req.ttl_seconds)
    }

    /// A submitted message's delivery, waiting up to `wait_ms` (at most
    /// [`MAX_DELIVERY_WAIT`]) for it to leave the queue.
    pub async fn get_delivery(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::GetDeliveryRequest,
    ) -> Result<pb::GetDeliveryResponse, ServiceError> {
        let client = self
            .authorized(auth, "read deliveries", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let id = MessageId::new(&req.message_id)
            .map_err(|e| invalid("bad-message-id", e.to_string()))?
            .to_string();
        let store = &self.node.store;
        if let Some(record) = store.outbox_get(&id)? {
            self.in_unit(&client, &record.unit, &format!("message {id}"))
                .await?;
        }
        let state_stopping = &self.node.stopping;
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(u64::from(req.wait_ms)).min(MAX_DELIVERY_WAIT);
        let mut changes = store.watch_outbox(&id);
        loop {
            changes.seen();
            let record = store.outbox_get(&id)?.ok_or_else(|| {
                ServiceError::refused(
                    ErrorKind::NotFound,
                    "unknown-message",
                    format!("no submitted message {id} on this node"),
                )
            })?;
            let queued = record.state == pb::DeliveryState::Queued as i32;
            if !queued || tokio::time::Instant::now() >= deadline {
                return Ok(delivery_response(store, id, record));
            }
            let mut stopping = state_stopping.subscribe();
            let changed = tokio::select! {
                r = tokio::time::timeout_at(deadline, changes.changed()) => r.is_ok(),
                _ = stopping.wait_for(|s| *s) => false,
            };
            if !changed || *state_stopping.borrow() {
                let record = store.outbox_get(&id)?;
                if let Some(record) = record {
                    return Ok(delivery_response(store, id, record));
                }
                continue;
            }
        }
    }

    /// A page of the caller's inbox: its unit's items (or every unit's), oldest first.
    pub async fn list_inbox(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::ListInboxRequest,
    ) -> Result<pb::ListInboxResponse, ServiceError> {
        let client = self.authorized(auth, "read the inbox", &CASE_ROLES).await?;
        self.readable_by(&client).await?;
        let limit = match req.limit as usize {
            0 => INBOX_PAGE,
            n => n.min(MAX_INBOX_PAGE),
        };
        let page = self.node.store.inbox_page(
            req.after_sequence,
            limit,
            req.include_acknowledged,
            |r| listed_for(&client, r),
        )?;
        let items = page
            .into_iter()
            .map(|(seq, r)| inbox_item(&self.node.store, seq, r))
            .collect();
        Ok(pb::ListInboxResponse { items })
    }

    /// One inbox item with its details, as the caller's role, unit and tags may see it (the
    /// referral minimised to what its consent covers).
    pub async fn show_inbox_item(
        &self,
        auth: Option<&LocalAuth>,
        sequence: u64,
    ) -> Result<pb::InboxItem, ServiceError> {
        let client = self.authorized(auth, "read the inbox", &CASE_ROLES).await?;
        self.readable_by(&client).await?;
        let unknown = || {
            ServiceError::refused(
                ErrorKind::NotFound,
                "unknown-inbox-item",
                format!("no inbox item with sequence {sequence}"),
            )
        };
        let Some(record) = self.node.store.inbox_get(sequence)? else {
            return Err(self.refuse(&client.name, unknown()).await);
        };
        self.in_unit(&client, &record.unit, &format!("inbox item {sequence}"))
            .await?;
        if !listed_for(&client, &record) {
            return Err(self.refuse(&client.name, unknown()).await);
        }
        Ok(inbox_item(&self.node.store, sequence, record))
    }

    /// The caller's inbox from `after_sequence` on, then each new item as it arrives, until
    /// the receiver is dropped or the node stops.
    pub async fn watch_inbox(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::WatchInboxRequest,
    ) -> Result<mpsc::Receiver<Result<pb::InboxItem, ServiceError>>, ServiceError> {
        let client = self.authorized(auth, "read the inbox", &CASE_ROLES).await?;
        self.readable_by(&client).await?;
        let mut cursor = req.after_sequence;
        let state = Arc::clone(&self.node);
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
                        let _ = tx.send(Err(ServiceError::from(e))).await;
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
        Ok(rx)
    }

    /// Marks an inbox item as taken into the caller's case-management system (logged).
    pub async fn acknowledge_inbox_item(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::AcknowledgeInboxItemRequest,
    ) -> Result<pb::AcknowledgeInboxItemResponse, ServiceError> {
        let client = self
            .authorized(auth, "acknowledge inbox items", &CASE_ROLES)
            .await?;
        let sequence = req.sequence;
        let state = &self.node;
        let Some(record) = state.store.inbox_get(sequence)? else {
            let status = ServiceError::refused(
                ErrorKind::NotFound,
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
            state.store.acknowledge(sequence).await?;
            tracing::info!(sequence, "inbox item acknowledged");
        }
        Ok(pb::AcknowledgeInboxItemResponse {})
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
