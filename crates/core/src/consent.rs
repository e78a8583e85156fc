//! Consent: whether a transfer is covered by the consent scope it relies on, by the firewall,
//! and by the receiver's policy. A [`PermittedTransfer`] can only be made by
//! [`check_transfer`]; sealing an envelope takes one.

use kinbridge_proto::v1::{self as pb, ConsentGiver, DataCategory, Purpose};

use crate::envelope::{EnvelopeDraft, PermittedTransfer};
use crate::firewall;
use crate::ids::NodeId;
use crate::time::UnixMillis;

/// Longest free-text field of a consent scope (authority, legal basis), in bytes.
pub const MAX_SCOPE_TEXT_BYTES: usize = 256;
/// Most node ids a scope may name as recipients or onward recipients.
pub const MAX_SCOPE_NODES: usize = 32;

/// Why a transfer is not covered. Each names exactly what is missing; none carries personal
/// data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentViolation {
    /// The message holds personal data but carries no consent scope.
    #[error(
        "no consent scope: every message holding personal data must carry the consent it relies on"
    )]
    Missing,
    /// The scope's consent id is not the header's.
    #[error("the consent scope's id '{scope}' is not the message's consent id '{header}'")]
    IdMismatch {
        /// In the scope.
        scope: String,
        /// In the header.
        header: String,
    },
    /// The scope does not say who gave the consent.
    #[error(
        "the consent scope does not say who gave the consent (child, parent, guardian, legal representative, or a best-interests determination)"
    )]
    GiverMissing,
    /// A best-interests determination must name the authority that made it.
    #[error(
        "a best-interests determination must name the authority that made it: determining_authority (--bid-authority on the command line)"
    )]
    BestInterestsWithoutAuthority,
    /// A best-interests determination must state its legal basis.
    #[error(
        "a best-interests determination must state its legal basis: legal_basis (--legal-basis on the command line)"
    )]
    BestInterestsWithoutLegalBasis,
    /// The scope is malformed (too long, bad node id).
    #[error("malformed consent scope: {0}")]
    Malformed(String),
    /// Not valid yet.
    #[error(
        "the consent is not valid yet: valid from {valid_from_ms} ms, now is {now_ms} ms since epoch"
    )]
    NotYetValid {
        /// Start of validity.
        valid_from_ms: i64,
        /// Now.
        now_ms: i64,
    },
    /// Expired.
    #[error("the consent expired at {expires_at_ms} ms, now is {now_ms} ms since epoch")]
    Expired {
        /// End of validity.
        expires_at_ms: i64,
        /// Now.
        now_ms: i64,
    },
    /// The purpose is not among the scope's.
    #[error("the consent does not cover the purpose {purpose}; it covers: {permitted}")]
    PurposeNotCovered {
        /// The message's purpose.
        purpose: String,
        /// The scope's purposes.
        permitted: String,
    },
    /// Categories present in the payload that the scope does not permit.
    #[error(
        "the consent does not cover the data categories {missing}; remove them from the message or obtain consent for them"
    )]
    CategoryNotCovered {
        /// The categories not covered.
        missing: String,
    },
    /// The recipient is not among the scope's recipients.
    #[error("the consent does not permit sending to {recipient}; it permits: {permitted}")]
    RecipientNotPermitted {
        /// The recipient.
        recipient: String,
        /// The permitted recipients.
        permitted: String,
    },
    /// Onward transfer to this recipient is not permitted.
    #[error(
        "the consent does not permit passing this data on to {recipient}; onward transfer is permitted to: {permitted}"
    )]
    OnwardNotPermitted {
        /// The next recipient.
        recipient: String,
        /// The permitted onward recipients.
        permitted: String,
    },
    /// The firewall: child-protection data never goes to immigration enforcement.
    #[error(
        "{0} is tagged immigration-enforcement: data sent for a child-protection purpose never goes to it, whatever the consent says"
    )]
    Firewall(String),
    /// The receiver does not accept this purpose.
    #[error("this node does not accept messages for the purpose {0}")]
    PurposeNotAccepted(String),
}

impl ConsentViolation {
    /// A stable reason code, for statuses, receipts and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            ConsentViolation::Missing => "consent-missing",
            ConsentViolation::IdMismatch { .. } => "consent-id-mismatch",
            ConsentViolation::GiverMissing => "consent-giver-missing",
            ConsentViolation::BestInterestsWithoutAuthority => "best-interests-without-authority",
            ConsentViolation::BestInterestsWithoutLegalBasis => {
                "best-interests-without-legal-basis"
            }
            ConsentViolation::Malformed(_) => "consent-malformed",
            ConsentViolation::NotYetValid { .. } => "consent-not-yet-valid",
            ConsentViolation::Expired { .. } => "consent-expired",
            ConsentViolation::PurposeNotCovered { .. } => "purpose-not-covered",
            ConsentViolation::CategoryNotCovered { .. } => "category-not-covered",
            ConsentViolation::RecipientNotPermitted { .. } => "recipient-not-permitted",
            ConsentViolation::OnwardNotPermitted { .. } => "onward-transfer-not-permitted",
            ConsentViolation::Firewall(_) => "firewall",
            ConsentViolation::PurposeNotAccepted(_) => "purpose-not-accepted",
        }
    }
}

/// What a transfer is checked against besides its scope.
#[derive(Debug, Clone, Copy)]
pub struct TransferContext<'a> {
    /// The tags of the recipient (as the sender's registry has them, or the receiver's own).
    pub recipient_tags: &'a [firewall::Tag],
    /// Purposes the receiver accepts; `None` for any (sender side, or a receiver without
    /// a policy).
    pub accepted_purposes: Option<&'a [Purpose]>,
    /// The current time.
    pub now: UnixMillis,
}

/// Checks `draft` (which must carry its consent scope) against its scope, the firewall and
/// `ctx`.
pub fn check_transfer(
    draft: EnvelopeDraft,
    ctx: &TransferContext<'_>,
) -> Result<PermittedTransfer, ConsentViolation> {
    check_parts(
        draft.consent.as_ref(),
        &draft.consent_id,
        draft.purpose,
        &draft.sender,
        &draft.recipient,
        &draft.data_categories,
        &draft.custody,
        ctx,
    )?;
    Ok(PermittedTransfer::new(draft))
}

/// A permit for a consent withdrawal: it holds no personal data, so no scope covers it; it
/// goes to every node the withdrawn scope named. Refuses any other kind of draft.
pub fn permit_withdrawal(draft: EnvelopeDraft) -> Result<PermittedTransfer, ConsentViolation> {
    permit_without_personal_data(draft)
}

/// A permit for a message that holds no personal data (a consent withdrawal, a referral status
/// update, a key update, a tracing match notice or confirmation: ids, handles, bands, codes
/// and keys only), which no consent scope needs to cover. Refuses any other kind.
pub fn permit_without_personal_data(
    draft: EnvelopeDraft,
) -> Result<PermittedTransfer, ConsentViolation> {
    let kind_ok = matches!(
        draft.kind,
        pb::MessageKind::ConsentWithdrawal
            | pb::MessageKind::StatusUpdate
            | pb::MessageKind::KeyUpdate
            | pb::MessageKind::TracingMatchNotice
            | pb::MessageKind::TracingConfirmation
    );
    if !kind_ok || !draft.data_categories.is_empty() {
        return Err(ConsentViolation::Malformed(
            "only a withdrawal, status update, key update, match notice or match confirmation without data categories is permitted without a scope".into(),
        ));
    }
    Ok(PermittedTransfer::new(draft))
}

/// Checks a transfer given by its parts; [`check_transfer`] and receivers use it. The first
/// of its [`violations`].
#[allow(clippy::too_many_arguments)]
pub fn check_parts(
    scope: Option<&pb::ConsentScope>,
    consent_id: &str,
    purpose: Purpose,
    sender: &NodeId,
    recipient: &NodeId,
    categories: &[DataCategory],
    custody: &[NodeId],
    ctx: &TransferContext<'_>,
) -> Result<(), ConsentViolation> {
    match violations(
        scope, consent_id, purpose, sender, recipient, categories, custody, ctx,
    )
    .into_iter()
    .next()
    {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// Every way a transfer given by its parts is not covered, in the order [`check_parts`]
/// checks them (its refusal is the first): the firewall, then the scope's form, validity,
/// purpose, categories, recipient and the receiver's policy. Empty if it is covered. Lets a
/// sender see every gap of a consent at once before sending.
#[allow(clippy::too_many_arguments)]
pub fn violations(
    scope: Option<&pb::ConsentScope>,
    consent_id: &str,
    purpose: Purpose,
    sender: &NodeId,
    recipient: &NodeId,
    categories: &[DataCategory],
    custody: &[NodeId],
    ctx: &TransferContext<'_>,
) -> Vec<ConsentViolation> {
    let mut out = Vec::new();
    // The firewall first: no consent can open it.
    if !firewall::allows(purpose, ctx.recipient_tags) {
        out.push(ConsentViolation::Firewall(recipient.to_string()));
    }
    let Some(scope) = scope else {
        out.push(ConsentViolation::Missing);
        return out;
    };
    out.extend(scope_form_violations(scope));
    if scope.consent_id != consent_id {
        out.push(ConsentViolation::IdMismatch {
            scope: printable(&scope.consent_id),
            header: printable(consent_id),
        });
    }
    let now = ctx.now.0;
    if now < scope.valid_from_ms {
        out.push(ConsentViolation::NotYetValid {
            valid_from_ms: scope.valid_from_ms,
            now_ms: now,
        });
    }
    if now >= scope.expires_at_ms {
        out.push(ConsentViolation::Expired {
            expires_at_ms: scope.expires_at_ms,
            now_ms: now,
        });
    }
    if !scope.purposes.contains(&(purpose as i32)) {
        out.push(ConsentViolation::PurposeNotCovered {
            purpose: purpose.as_str_name().to_owned(),
            permitted: names(&scope.purposes, |p| {
                Purpose::try_from(p).map(|p| p.as_str_name())
            }),
        });
    }
    let missing: Vec<i32> = categories
        .iter()
        .map(|c| *c as i32)
        .filter(|c| !scope.categories.contains(c))
        .collect();
    if !missing.is_empty() {
        out.push(ConsentViolation::CategoryNotCovered {
            missing: names(&missing, |c| {
                DataCategory::try_from(c).map(|c| c.as_str_name())
            }),
        });
    }
    if custody.is_empty() {
        if !scope.recipients.iter().any(|r| r == recipient.as_str()) {
            out.push(ConsentViolation::RecipientNotPermitted {
                recipient: recipient.to_string(),
                permitted: list(&scope.recipients),
            });
        }
    } else {
        // Onward transfer: the sender must itself have been allowed the data, and the next
        // recipient must be named for onward transfer.
        let held_by_right = scope
            .recipients
            .iter()
            .chain(&scope.onward_recipients)
            .any(|r| r == sender.as_str());
        if !held_by_right
            || !scope
                .onward_recipients
                .iter()
                .any(|r| r == recipient.as_str())
        {
            out.push(ConsentViolation::OnwardNotPermitted {
                recipient: recipient.to_string(),
                permitted: list(&scope.onward_recipients),
            });
        }
    }
    if let Some(accepted) = ctx.accepted_purposes
        && !accepted.contains(&purpose)
    {
        out.push(ConsentViolation::PurposeNotAccepted(
            purpose.as_str_name().to_owned(),
        ));
    }
    out
}

/// Checks what a scope must say whatever the transfer: who gave it, a best-interests
/// determination's authority and legal basis, sizes and node ids. The first of its
/// [`scope_form_violations`].
pub fn check_scope_form(scope: &pb::ConsentScope) -> Result<(), ConsentViolation> {
    match scope_form_violations(scope).into_iter().next() {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// Every way a scope's form is wrong, in the order [`check_scope_form`] checks them.
pub fn scope_form_violations(scope: &pb::ConsentScope) -> Vec<ConsentViolation> {
    let mut out = Vec::new();
    let giver = ConsentGiver::try_from(scope.given_by).unwrap_or(ConsentGiver::Unspecified);
    if giver == ConsentGiver::Unspecified {
        out.push(ConsentViolation::GiverMissing);
    }
    if giver == ConsentGiver::BestInterestsDetermination {
        if scope.determining_authority.trim().is_empty() {
            out.push(ConsentViolation::BestInterestsWithoutAuthority);
        }
        if scope.legal_basis.trim().is_empty() {
            out.push(ConsentViolation::BestInterestsWithoutLegalBasis);
        }
    }
    for (what, text) in [
        ("determining_authority", &scope.determining_authority),
        ("legal_basis", &scope.legal_basis),
    ] {
        if text.len() > MAX_SCOPE_TEXT_BYTES {
            out.push(ConsentViolation::Malformed(format!(
                "{what} is longer than {MAX_SCOPE_TEXT_BYTES} bytes"
            )));
        }
    }
    for (what, nodes) in [
        ("recipients", &scope.recipients),
        ("onward_recipients", &scope.onward_recipients),
    ] {
        if nodes.len() > MAX_SCOPE_NODES {
            out.push(ConsentViolation::Malformed(format!(
                "{what} names more than {MAX_SCOPE_NODES} nodes"
            )));
        }
        if let Some(bad) = nodes.iter().find(|n| NodeId::new(n).is_err()) {
            out.push(ConsentViolation::Malformed(format!(
                "{what} holds '{}', which is not a node id",
                printable(bad)
            )));
        }
    }
    out
}

fn names(
    values: &[i32],
    name: impl Fn(i32) -> Result<&'static str, prost::UnknownEnumValue>,
) -> String {
    if values.is_empty() {
        return "nothing".into();
    }
    values
        .iter()
        .map(|v| name(*v).unwrap_or("UNKNOWN"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(nodes: &[String]) -> String {
    if nodes.is_empty() {
        "nobody".into()
    } else {
        nodes
            .iter()
            .map(|n| printable(n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
