//! Receiving a batch from a peer: other nodes deliver envelopes here and get a signed receipt
//! back once the envelope is verified, taken ([`take`]: the consent checks again, a
//! withdrawal, status, key or tracing message acting), its `received` entry is in the audit
//! log and it is durably in the inbox. Every refusal is answered with a clear error and
//! recorded in the audit log.

use std::sync::Arc;

use kinbridge_core::verify::VerifiedPayload;
use kinbridge_core::{
    EnvelopeDigest, NodeId, Refusal, SealedEnvelope, SignedReceipt, UnixMillis,
    issue_refusal_receipt, verify_envelope,
};
use kinbridge_proto::v1 as pb;
use kinbridge_store::{InboxRecord, ReceiveOutcome};
use prost::Message;

use crate::error::{Declined, ErrorKind, ServiceError};
use crate::node::Node;
use crate::registry::PeerAuth;

mod take;

/// Most envelopes one `DeliverBatch` call may carry.
pub const MAX_BATCH: usize = 512;

/// The use cases of the peer port's deliveries.
pub struct Intake {
    node: Arc<Node>,
}

/// An envelope taken in: logged, stored and receipted together with the others of its group.
struct Taken {
    /// Its `received` audit entry.
    entry: pb::AuditEntry,
    /// Its inbox record, the envelope with its payload.
    record: InboxRecord,
    kind: i32,
    /// What a replay of it would be refused as.
    replay: Refusal,
}

/// What became of one envelope before its group's commit.
enum Step {
    /// Answered already: a signed negative receipt, or a re-delivery's original receipt.
    Answered(pb::Receipt),
    /// To be made durable with its group.
    Taken(Box<Taken>),
}

impl Intake {
    /// A service over the node's state.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The node the caller's TLS certificate proves, or the (audited) refusal to answer.
    async fn authenticate(&self, auth: Option<&PeerAuth>) -> Result<NodeId, ServiceError> {
        let auth = auth.cloned().ok_or_else(ServiceError::no_certificate)?;
        match auth {
            Ok(node) => {
                tracing::Span::current().record("peer", node.as_str());
                Ok(node)
            }
            Err(e) => {
                // The certificate proved no node: the entry's peer is the node whose CA issued
                // it (what TLS did prove), the node id it named is only claimed.
                let (issuer, claimed) = e.identities();
                Err(self
                    .refuse_as(&issuer, &claimed, None, ServiceError::from(&e))
                    .await)
            }
        }
    }

    /// Takes `n` envelopes' worth of `peer`'s rate. Overload is not a refusal of content: it
    /// is answered with a retry hint, not audited, so a flood cannot grow the log.
    fn limit(&self, peer: &NodeId, n: usize) -> Result<(), ServiceError> {
        self.node
            .peer_limiter
            .check_n(peer.as_str(), n)
            .map_err(|wait| {
                tracing::warn!(%peer, retry_after_ms = wait.as_millis() as u64, "peer over its rate limit");
                self.node.metrics.refused("peer", "rate-limited");
                ServiceError::rate_limited(peer.as_str(), wait)
            })
    }

    /// Records a refusal of what `peer` sent (if anything could be read of it) and returns
    /// the error to answer with. If even the refusal cannot be logged, the audit failure is
    /// answered instead, so the peer retries rather than take the refusal as final.
    async fn refuse(
        &self,
        peer: &str,
        envelope: Option<&SealedEnvelope>,
        status: ServiceError,
    ) -> ServiceError {
        self.refuse_as(peer, "", envelope, status).await
    }

    /// [`Self::refuse`] naming apart what TLS proved (`authenticated`: the peer, or the node
    /// whose CA issued a refused certificate) and what was only claimed (`claimed`: a node id
    /// a refused certificate named; an envelope's header sender is read from `envelope`).
    async fn refuse_as(
        &self,
        authenticated: &str,
        claimed: &str,
        envelope: Option<&SealedEnvelope>,
        status: ServiceError,
    ) -> ServiceError {
        let mut entry = self.node.auditor.entry(pb::AuditEvent::Refused);
        entry.claimed_sender = claimed.to_owned();
        if let Some(e) = envelope {
            entry.envelope_digest = EnvelopeDigest::compute(&e.header, &e.signature).0.to_vec();
            // The header is not verified: keep only the message id and the sender it claims,
            // bounded, the sender only if it reads as a node id.
            if let Ok(h) = pb::EnvelopeHeader::decode(e.header.as_slice()) {
                entry.message_id = h.message_id.chars().take(64).collect();
                if h.sender != authenticated && NodeId::new(&h.sender).is_ok() {
                    entry.claimed_sender = h.sender;
                }
            }
        }
        entry.peer = authenticated.to_owned();
        entry.authenticated_peer = authenticated.to_owned();
        let peer = authenticated;
        entry.reason = status.refusal_reason();
        self.node.metrics.refused("peer", &entry.reason);
        tracing::warn!(peer, reason = %entry.reason, error = %status.message(), "peer request refused");
        self.node.auditor.record_refusal(&entry, status).await
    }

    /// Answers an authentic envelope this node will not take with a signed negative receipt,
    /// logging a `refused` entry about it with the reason and the receipt's digest.
    async fn refuse_signed(
        &self,
        verified: &kinbridge_core::VerifiedEnvelope,
        declined: Declined,
    ) -> Result<Step, ServiceError> {
        let Declined { reason, detail } = declined;
        let detail = detail.as_str();
        let state = &self.node;
        let mut entry = self.entry_about(verified, pb::AuditEvent::Refused);
        let sender = verified.header().sender.as_str();
        let negative = issue_refusal_receipt(
            verified,
            &state.node_id,
            UnixMillis::now(),
            &state.keys.signer(),
            reason,
            detail,
        );
        entry.peer = sender.to_owned();
        entry.authenticated_peer = sender.to_owned();
        entry.reason = reason.to_owned();
        entry.receipt_digest = negative.digest().0.to_vec();
        state.auditor.record(&entry).await?;
        state.metrics.refused("peer", reason);
        state.metrics.received(entry.kind, "refused", sender);
        tracing::warn!(message_id = %entry.message_id, reason, error = %detail, "envelope refused; negative receipt returned");
        Ok(Step::Answered(self.with_checkpoint(negative.into())))
    }

    /// A receipt with this node's latest checkpoint attached.
    fn with_checkpoint(&self, mut receipt: pb::Receipt) -> pb::Receipt {
        receipt.checkpoint = self.node.auditor.latest_note();
        receipt
    }

    /// [`Intake::deliver_all`] in a task of its own, so that it runs to its end even if the
    /// call is dropped (the peer's connection reset while this node was taking the batch): an
    /// envelope logged as received is then stored and receipted too, and the sender's retry
    /// finds it here and gets its original receipt, rather than have it logged as received a
    /// second time with a receipt no one was given.
    async fn deliver_to_the_end(
        &self,
        peer: NodeId,
        envelopes: Vec<pb::Envelope>,
    ) -> Vec<Result<pb::Receipt, ServiceError>> {
        use tracing::Instrument;
        let intake = Self {
            node: Arc::clone(&self.node),
        };
        let task = async move { intake.deliver_all(&peer, envelopes).await };
        tokio::spawn(task.instrument(tracing::Span::current()))
            .await
            .unwrap_or_else(|e| {
                vec![Err(ServiceError::internal(format!(
                    "the intake task ended early: {e}"
                )))]
            })
    }

    /// Takes `envelopes` from `peer` in order, each exactly as a `Deliver` call would, making
    /// the accepted ones durable in groups: one audit commit, one payload-directory sync and
    /// one store commit per group. A group ends before an envelope that acts on the node's
    /// state (a withdrawal, a status update, a key update) or repeats one of the group, so
    /// that each is taken after everything before it. Stops at the first failure that may
    /// pass on a retry: the results end with it.
    ///
    /// Each envelope's (sender, message id) is held from before its look-up in the inbox
    /// until its group is durable: a second delivery of it on another call (the sender
    /// retrying a call whose answer it lost while this node was still taking it) waits, then
    /// finds it in the inbox and gets the original receipt, logged as a re-delivery; it is
    /// never logged as received twice, with a second receipt no one was given.
    async fn deliver_all(
        &self,
        peer: &NodeId,
        envelopes: Vec<pb::Envelope>,
    ) -> Vec<Result<pb::Receipt, ServiceError>> {
        let mut results: Vec<Option<Result<pb::Receipt, ServiceError>>> = Vec::new();
        let mut group: Vec<(usize, Box<Taken>)> = Vec::new();
        let mut in_group = std::collections::HashSet::new();
        // The envelopes of the group, held until it is durable.
        let mut holding = Vec::new();
        // Envelopes newly stored in the inbox.
        let mut stored = 0;
        for envelope in envelopes {
            let at = results.len();
            let now = UnixMillis::now();
            let step = match self.verify(peer, envelope, now).await {
                Err(status) => Err(status),
                Ok(verified) => {
                    let header = verified.header();
                    let key = (header.sender.to_string(), header.message_id.to_string());
                    let acts = !matches!(verified.payload(), VerifiedPayload::Referral(_));
                    if acts || in_group.contains(&key) {
                        let stop = self
                            .commit_group(peer, &mut group, &mut results, &mut stored)
                            .await;
                        in_group.clear();
                        holding.clear();
                        if stop {
                            break;
                        }
                    }
                    let held_key = [key.0.as_bytes(), &[0], key.1.as_bytes()].concat();
                    in_group.insert(key);
                    match self.node.receiving.hold(&held_key).await {
                        Some(held) => {
                            holding.push(held);
                            self.take(verified, now).await
                        }
                        None => Err(ServiceError::new(
                            ErrorKind::Unavailable,
                            "this message is being taken in on another call; retry later",
                        )),
                    }
                }
            };
            match step {
                Ok(Step::Taken(taken)) => {
                    results.push(None);
                    group.push((at, taken));
                }
                Ok(Step::Answered(receipt)) => results.push(Some(Ok(receipt))),
                Err(status) => {
                    let transient = status.is_transient();
                    results.push(Some(Err(status)));
                    if transient {
                        break;
                    }
                }
            }
        }
        self.commit_group(peer, &mut group, &mut results, &mut stored)
            .await;
        drop(holding);
        if stored > 0 {
            tracing::info!(stored, envelopes = results.len(), "envelopes received");
        }
        let mut answered = Vec::with_capacity(results.len());
        for result in results {
            // A slot is empty only if its group was never committed: it was not taken.
            let Some(result) = result else { break };
            let stop = result.as_ref().is_err_and(ServiceError::is_transient);
            answered.push(result);
            if stop {
                break;
            }
        }
        answered
    }

    /// Verifies one envelope from `peer`, logging a refusal.
    async fn verify(
        &self,
        peer: &NodeId,
        envelope: pb::Envelope,
        now: UnixMillis,
    ) -> Result<kinbridge_core::VerifiedEnvelope, ServiceError> {
        let state = &self.node;
        let sealed = SealedEnvelope::from(envelope);
        // Only the header and signature are kept for a refusal's entry, not the payload.
        let named = SealedEnvelope {
            header: sealed.header.clone(),
            signature: sealed.signature.clone(),
            payload: Vec::new(),
            payload_salt: Vec::new(),
        };
        let keys = state.keys.peer_keyring(peer);
        match verify_envelope(sealed, peer, keys.as_deref(), &state.policy, now) {
            Ok(v) => Ok(v),
            Err(r) => Err(self
                .refuse(peer.as_str(), Some(&named), ServiceError::from(&r))
                .await),
        }
    }

    /// Makes the envelopes of `group` durable and fills in their results; empties the group.
    /// The audit entries are durable before the payloads and inbox records are written, so
    /// no receipted message can be missing from the log: a crash in between leaves only
    /// entries whose receipts the sender never got, and its retry is logged again. Returns
    /// whether the batch must stop (a failure that may pass on a retry).
    async fn commit_group(
        &self,
        peer: &NodeId,
        group: &mut Vec<(usize, Box<Taken>)>,
        results: &mut [Option<Result<pb::Receipt, ServiceError>>],
        stored: &mut usize,
    ) -> bool {
        if group.is_empty() {
            return false;
        }
        let taken = std::mem::take(group);
        let outcome = self.make_durable(&taken).await;
        match outcome {
            Err(status) => {
                for (at, _) in &taken {
                    results[*at] = Some(Err(status.clone()));
                }
                true
            }
            Ok(outcomes) => {
                let mut failed = false;
                for ((at, taken), outcome) in taken.into_iter().zip(outcomes) {
                    if matches!(outcome.0, ReceiveOutcome::Stored(_)) {
                        *stored += 1;
                    }
                    let result = self.answer(peer, *taken, outcome).await;
                    failed |= result.as_ref().is_err_and(ServiceError::is_transient);
                    results[at] = Some(result);
                }
                failed
            }
        }
    }

    /// Logs, stores the payloads of and stores the inbox records of `taken`, in that order.
    async fn make_durable(
        &self,
        taken: &[(usize, Box<Taken>)],
    ) -> Result<Vec<(ReceiveOutcome, InboxRecord)>, ServiceError> {
        let state = &self.node;
        let entries: Vec<pb::AuditEntry> = taken.iter().map(|(_, t)| t.entry.clone()).collect();
        state.auditor.record_all(&entries).await?;
        let mut records: Vec<InboxRecord> = taken.iter().map(|(_, t)| t.record.clone()).collect();
        // Reporting dimensions, from the payloads, made durable by the inbox's commit.
        for record in &records {
            state.reporting.note_received(record)?;
        }
        let envelopes = records
            .iter_mut()
            .map(|r| r.envelope.take().unwrap_or_default())
            .collect();
        let stripped = state.store.put_payloads(envelopes).await?;
        for (record, envelope) in records.iter_mut().zip(stripped) {
            record.envelope = Some(envelope);
        }
        let outcomes = state.store.receive_stored(records.clone()).await?;
        Ok(outcomes.into_iter().zip(records).collect())
    }

    /// The answer to one envelope of a committed group.
    async fn answer(
        &self,
        peer: &NodeId,
        taken: Taken,
        (outcome, record): (ReceiveOutcome, InboxRecord),
    ) -> Result<pb::Receipt, ServiceError> {
        let metrics = &self.node.metrics;
        let (kind, sender, message_id) = (taken.kind, &record.sender, &record.message_id);
        match outcome {
            ReceiveOutcome::Stored(sequence) => {
                tracing::debug!(%message_id, kind, sequence, "envelope received");
                metrics.received(kind, "accepted", sender);
                Ok(self.with_checkpoint(record.receipt.unwrap_or_default()))
            }
            ReceiveOutcome::Duplicate(original) => {
                metrics.received(kind, "duplicate", sender);
                Ok(self.with_checkpoint(original.receipt.unwrap_or_default()))
            }
            ReceiveOutcome::Replay => {
                let sealed = record.envelope.map(SealedEnvelope::from);
                Err(self
                    .refuse(
                        peer.as_str(),
                        sealed.as_ref(),
                        ServiceError::from(&taken.replay),
                    )
                    .await)
            }
        }
    }
}

impl Intake {
    /// Takes one envelope from the peer `auth` proves: a signed receipt, or the refusal.
    #[tracing::instrument(skip_all, fields(peer))]
    pub async fn deliver(
        &self,
        auth: Option<&PeerAuth>,
        req: pb::DeliverRequest,
    ) -> Result<pb::DeliverResponse, ServiceError> {
        let peer = self.authenticate(auth).await?;
        self.limit(&peer, 1)?;
        crate::room::ensure(&self.node, "peer", peer.as_str()).await?;
        let Some(envelope) = req.envelope else {
            let status =
                ServiceError::from(&Refusal::Malformed("the request holds no envelope".into()));
            return Err(self.refuse(peer.as_str(), None, status).await);
        };
        let result = self.deliver_to_the_end(peer, vec![envelope]).await.pop();
        let receipt = result.unwrap_or_else(|| Err(ServiceError::internal("no result")))?;
        Ok(pb::DeliverResponse {
            receipt: Some(receipt),
        })
    }

    /// Takes a batch of envelopes from the peer `auth` proves, in order: a result for each,
    /// stopping after the first failure that may pass on a retry.
    #[tracing::instrument(skip_all, fields(peer, envelopes))]
    pub async fn deliver_batch(
        &self,
        auth: Option<&PeerAuth>,
        req: pb::DeliverBatchRequest,
    ) -> Result<pb::DeliverBatchResponse, ServiceError> {
        let peer = self.authenticate(auth).await?;
        tracing::Span::current().record("envelopes", req.envelopes.len());
        if let Err(refusal) = check_batch(&req) {
            let status = ServiceError::from(&refusal);
            return Err(self.refuse(peer.as_str(), None, status).await);
        }
        let envelopes = req.envelopes;
        self.limit(&peer, envelopes.len())?;
        // A full disk or a failed store refuses the whole call: the peer retries it later.
        crate::room::ensure(&self.node, "peer", peer.as_str()).await?;
        let results = self
            .deliver_to_the_end(peer, envelopes)
            .await
            .into_iter()
            .map(|result| pb::DeliverResult {
                outcome: Some(match result {
                    Ok(receipt) => pb::deliver_result::Outcome::Receipt(receipt),
                    Err(status) => pb::deliver_result::Outcome::Error(status.to_deliver_error()),
                }),
            })
            .collect();
        Ok(pb::DeliverBatchResponse { results })
    }
}

/// Checks the shape of a `DeliverBatch` request before any of its envelopes is read: it holds
/// 1 to [`MAX_BATCH`] envelopes.
pub fn check_batch(req: &pb::DeliverBatchRequest) -> Result<(), Refusal> {
    let n = req.envelopes.len();
    if n == 0 || n > MAX_BATCH {
        return Err(Refusal::Malformed(format!(
            "a batch holds 1 to {MAX_BATCH} envelopes; this one holds {n}"
        )));
    }
    Ok(())
}

fn receipt_digest(receipt: Option<&pb::Receipt>) -> Vec<u8> {
    receipt
        .map(|r| {
            SignedReceipt {
                body: r.body.clone(),
                signature: r.signature.clone(),
            }
            .digest()
            .0
            .to_vec()
        })
        .unwrap_or_default()
}

/// How a workflow change is written in the audit log: the state, and its code if any.
pub fn status_reason(change: &pb::StatusChange) -> String {
    let state = pb::ReferralState::try_from(change.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("REFERRAL_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into());
    if change.code.is_empty() {
        state
    } else {
        format!("{state}:{}", change.code)
    }
}
