//! The referral workflow: received → accepted | declined(reason) → in progress →
//! closed(outcome). The node a referral was sent to moves it along; its sender follows.

use kinbridge_proto::v1::ReferralState;

/// Longest reason or outcome code.
pub const MAX_CODE_LEN: usize = 64;

/// Why a status change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// The change does not follow from the current state.
    #[error("a referral that is {from} cannot become {to}; from {from} it can become: {allowed}")]
    NotAllowed {
        /// Current state.
        from: &'static str,
        /// Requested state.
        to: &'static str,
        /// What is allowed.
        allowed: String,
    },
    /// A declined or closed referral needs a code; others take none.
    #[error("{0}")]
    Code(String),
}

impl WorkflowError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            WorkflowError::NotAllowed { .. } => "workflow-not-allowed",
            WorkflowError::Code(_) => "workflow-bad-code",
        }
    }
}

/// The states a referral may move to from `from`.
pub fn successors(from: ReferralState) -> &'static [ReferralState] {
    match from {
        ReferralState::Received => &[ReferralState::Accepted, ReferralState::Declined],
        ReferralState::Accepted => &[ReferralState::InProgress],
        ReferralState::InProgress => &[ReferralState::Closed],
        ReferralState::Declined | ReferralState::Closed | ReferralState::Unspecified => &[],
    }
}

fn name(s: ReferralState) -> &'static str {
    s.as_str_name().trim_start_matches("REFERRAL_STATE_")
}

/// Checks the change `from` → `to` with `code` (the decline reason or closing outcome).
pub fn check_change(
    from: ReferralState,
    to: ReferralState,
    code: &str,
) -> Result<(), WorkflowError> {
    if !successors(from).contains(&to) {
        let allowed: Vec<&str> = successors(from).iter().map(|s| name(*s)).collect();
        return Err(WorkflowError::NotAllowed {
            from: name(from),
            to: name(to),
            allowed: if allowed.is_empty() {
                "nothing (it is final)".into()
            } else {
                allowed.join(", ")
            },
        });
    }
    let needs_code = matches!(to, ReferralState::Declined | ReferralState::Closed);
    if needs_code && code.is_empty() {
        return Err(WorkflowError::Code(format!(
            "{} needs a code: the reason or outcome, e.g. \"no-capacity\"",
            name(to)
        )));
    }
    if !needs_code && !code.is_empty() {
        return Err(WorkflowError::Code(format!("{} takes no code", name(to))));
    }
    let well_formed = code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        return Err(WorkflowError::Code(format!(
            "codes are at most {MAX_CODE_LEN} lower-case letters, digits and '-'; free text could carry personal data"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workflow() {
        use ReferralState::*;
        assert!(check_change(Received, Accepted, "").is_ok());
        assert!(check_change(Received, Declined, "no-capacity").is_ok());
        assert!(check_change(Accepted, InProgress, "").is_ok());
        assert!(check_change(InProgress, Closed, "reunified").is_ok());
        assert_eq!(
            check_change(Received, Closed, "x").map_err(|e| e.code()),
            Err("workflow-not-allowed")
        );
        assert_eq!(
            check_change(Declined, Accepted, "").map_err(|e| e.code()),
            Err("workflow-not-allowed")
        );
        assert_eq!(
            check_change(Received, Declined, "").map_err(|e| e.code()),
            Err("workflow-bad-code")
        );
        assert_eq!(
            check_change(Received, Declined, "Chipo Banda").map_err(|e| e.code()),
            Err("workflow-bad-code")
        );
        assert_eq!(
            check_change(Received, Accepted, "yes").map_err(|e| e.code()),
            Err("workflow-bad-code")
        );
    }
}
