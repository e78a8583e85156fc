//! What a sender needs around a submission: the peers a referral may be addressed to, a
//! consent pre-check that lists every gap of a request's consent before anything is sent
//! (with the same consent rules the submission applies), and the listing of what was sent.

use kinbridge_core::consent::{TransferContext, violations};
use kinbridge_core::limits::{MAX_PAYLOAD_BYTES, MAX_REFERENCE_BYTES};
use kinbridge_core::referral::categories_present;
use kinbridge_core::{NodeId, UnitName, UnixMillis};
use kinbridge_proto::v1 as pb;
use prost::Message;

use super::{CASE_ROLES, LocalAuth, LocalCases, carries_case_data, invalid};
use crate::error::ServiceError;

/// Default page of [`LocalCases::list_sent`].
pub const SENT_PAGE: usize = 25;
/// Largest page of [`LocalCases::list_sent`].
pub const MAX_SENT_PAGE: usize = 200;

/// One gap of a consent: a stable reason code (as the submission would refuse with) and what
/// exactly is missing. Holds no personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentGap {
    /// The reason code (`category-not-covered`, `consent-expired`, ...).
    pub code: &'static str,
    /// What is missing, for the sender.
    pub message: String,
}

/// The consent pre-check of a submission: what it would carry and every way its consent does
/// not cover it. Nothing is sent and nothing is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsentCheck {
    /// The data categories the referral fills in.
    pub categories: Vec<pb::DataCategory>,
    /// Those of them the consent does not cover.
    pub uncovered_categories: Vec<pb::DataCategory>,
    /// Whether the consent names the recipient.
    pub recipient_covered: bool,
    /// Whether the consent covers the purpose.
    pub purpose_covered: bool,
    /// Every gap, in the order the submission checks them (the first is what it would refuse
    /// with); empty if the submission's consent covers it.
    pub gaps: Vec<ConsentGap>,
}

impl ConsentCheck {
    /// Whether the consent covers the submission (the submission may still be refused for
    /// what only sending can tell: a full outbox, an idempotency key reused).
    pub fn covered(&self) -> bool {
        self.gaps.is_empty()
    }
}

/// Where a page of [`LocalCases::list_sent`] starts: after the item submitted at
/// `submitted_at_ms` with `message_id` (newest first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentCursor {
    /// When the last item of the previous page was submitted.
    pub submitted_at_ms: i64,
    /// Its message id.
    pub message_id: String,
}

/// One referral or case transfer this node sent, as the sent list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentItem {
    /// Its message id.
    pub message_id: String,
    /// The recipient node.
    pub recipient: String,
    /// A `pb::MessageKind`.
    pub kind: i32,
    /// A `pb::Purpose`.
    pub purpose: i32,
    /// When it was submitted.
    pub submitted_at_ms: i64,
    /// A `pb::DeliveryState`.
    pub state: i32,
    /// When its receipt arrived (0 if none).
    pub delivered_at_ms: i64,
    /// Delivery attempts made.
    pub attempts: u32,
}

impl LocalCases {
    /// The peers a caseworker or system may address a referral to: every node of the registry
    /// with an endpoint, other than this one, in order. Holds no case data (an
    /// enforcement-tagged client may use it to refer children).
    pub async fn addressable_peers(
        &self,
        auth: Option<&LocalAuth>,
    ) -> Result<Vec<String>, ServiceError> {
        self.authorized(auth, "submit referrals", &CASE_ROLES)
            .await?;
        let me = &self.node.node_id;
        let mut peers: Vec<String> = self
            .node
            .registry
            .peers()
            .filter(|p| p.endpoint.is_some() && &p.node_id != me)
            .map(|p| p.node_id.to_string())
            .collect();
        peers.sort();
        peers.dedup();
        Ok(peers)
    }

    /// Checks `req`'s consent as [`Self::submit_referral`] would, but lists every gap rather
    /// than refusing with the first, and sends nothing: the same consent rules
    /// ([`kinbridge_core::consent::violations`], whose first is the submission's refusal),
    /// against the recipient's tags in the registry, now. A request that is not a submission
    /// at all (no valid recipient, purpose, kind or unit) is refused as the submission would.
    pub async fn check_consent(
        &self,
        auth: Option<&LocalAuth>,
        req: &pb::SubmitReferralRequest,
    ) -> Result<ConsentCheck, ServiceError> {
        let client = self
            .authorized(auth, "submit referrals", &CASE_ROLES)
            .await?;
        match self.consent_gaps(req) {
            Ok(check) => Ok(check),
            Err(status) => {
                let about = super::Refused::of(&req.recipient, req.purpose, req.consent.as_ref());
                Err(self.refuse_about(&client.name, status, about).await)
            }
        }
    }

    fn consent_gaps(&self, req: &pb::SubmitReferralRequest) -> Result<ConsentCheck, ServiceError> {
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
        match pb::MessageKind::try_from(req.kind) {
            Ok(
                pb::MessageKind::Unspecified
                | pb::MessageKind::Referral
                | pb::MessageKind::CaseTransfer,
            ) => {}
            _ => return Err(invalid("bad-kind", "kind is a referral or a case transfer")),
        }
        UnitName::optional(&req.recipient_unit)
            .map_err(|e| invalid("bad-unit", format!("recipient_unit: {e}")))?;
        let referral = req.referral.clone().unwrap_or_default();
        let categories = categories_present(&referral);
        let mut gaps = Vec::new();
        let peer = self.node.registry.get(&recipient);
        match peer {
            None => gaps.push(ConsentGap {
                code: "unknown-recipient",
                message: format!("recipient '{recipient}' is not in this node's peer registry"),
            }),
            Some(p) if p.endpoint.is_none() => gaps.push(ConsentGap {
                code: "recipient-unreachable",
                message: format!(
                    "peer '{recipient}' has no endpoint in this node's registry: messages cannot be delivered to it"
                ),
            }),
            Some(_) => {}
        }
        let size = referral.encoded_len();
        if size > MAX_PAYLOAD_BYTES {
            gaps.push(ConsentGap {
                code: "oversized",
                message: format!(
                    "the referral is {size} bytes encoded; the limit is {MAX_PAYLOAD_BYTES} bytes"
                ),
            });
        }
        let consent_id = req
            .consent
            .as_ref()
            .map(|c| c.consent_id.as_str())
            .unwrap_or_default();
        if req.consent.is_some()
            && (consent_id.is_empty() || consent_id.len() > MAX_REFERENCE_BYTES)
        {
            gaps.push(ConsentGap {
                code: "bad-consent-id",
                message: format!(
                    "consent.consent_id is required, at most {MAX_REFERENCE_BYTES} bytes"
                ),
            });
        }
        let tags = peer.map(|p| p.tags.as_slice()).unwrap_or_default();
        let ctx = TransferContext {
            recipient_tags: tags,
            accepted_purposes: None,
            now: UnixMillis::now(),
        };
        let found = violations(
            req.consent.as_ref(),
            consent_id,
            purpose,
            &self.node.node_id,
            &recipient,
            &categories,
            &[],
            &ctx,
        );
        gaps.extend(found.iter().map(|v| ConsentGap {
            code: v.code(),
            message: v.to_string(),
        }));
        let scope = req.consent.clone().unwrap_or_default();
        Ok(ConsentCheck {
            uncovered_categories: categories
                .iter()
                .copied()
                .filter(|c| !scope.categories.contains(&(*c as i32)))
                .collect(),
            categories,
            recipient_covered: scope.recipients.iter().any(|r| r == recipient.as_str()),
            purpose_covered: scope.purposes.contains(&(purpose as i32)),
            gaps,
        })
    }

    /// A page of the referrals and case transfers sent from the caller's unit (every unit's,
    /// for a client of none), newest first, after `after` (from the newest if `None`), at
    /// most `limit` (0: [`SENT_PAGE`]; at most [`MAX_SENT_PAGE`]). Authorised as
    /// [`Self::get_delivery`]: a caseworker or system the firewall lets read case data.
    pub async fn list_sent(
        &self,
        auth: Option<&LocalAuth>,
        after: Option<&SentCursor>,
        limit: usize,
    ) -> Result<Vec<SentItem>, ServiceError> {
        let client = self
            .authorized(auth, "read deliveries", &CASE_ROLES)
            .await?;
        self.readable_by(&client).await?;
        let limit = match limit {
            0 => SENT_PAGE,
            n => n.min(MAX_SENT_PAGE),
        };
        let me = self.node.node_id.to_string();
        let before = |at: i64, id: &str| match after {
            None => true,
            Some(c) => (at, id) < (c.submitted_at_ms, c.message_id.as_str()),
        };
        let picked = self.node.store.outbox_matching(|id, record| {
            client.sees(&record.unit) && before(record.submitted_at_ms, id)
        })?;
        let mut items: Vec<SentItem> = picked
            .into_iter()
            .filter_map(|(message_id, record)| {
                let envelope = record.envelope.as_ref()?;
                let header = pb::EnvelopeHeader::decode(envelope.header.as_slice()).ok()?;
                (carries_case_data(header.kind) && header.sender == me).then(|| SentItem {
                    message_id,
                    recipient: record.recipient.clone(),
                    kind: header.kind,
                    purpose: header.purpose,
                    submitted_at_ms: record.submitted_at_ms,
                    state: record.state,
                    delivered_at_ms: record.delivered_at_ms,
                    attempts: record.attempts,
                })
            })
            .collect();
        items.sort_by(|a, b| {
            (b.submitted_at_ms, &b.message_id).cmp(&(a.submitted_at_ms, &a.message_id))
        });
        items.truncate(limit);
        Ok(items)
    }
}
