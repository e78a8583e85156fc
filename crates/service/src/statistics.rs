//! Statistics: counts over a period, grouped by the chosen
//! dimensions, with small-cell suppression (auditor and admin roles).

use std::sync::Arc;

use kinbridge_core::UnixMillis;
use kinbridge_core::reporting::{Dimension, tabulate};
use kinbridge_proto::v1 as pb;

use crate::error::{ErrorKind, ServiceError};
use crate::identity::Role;
use crate::local::{LocalAuth, LocalCases};
use crate::node::Node;

/// The roles that may read the statistics.
pub const REPORT_ROLES: [Role; 2] = [Role::Auditor, Role::Admin];

/// The statistics use case.
pub struct Statistics {
    node: Arc<Node>,
    local: LocalCases,
}

impl Statistics {
    /// The use case over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            local: LocalCases::new(Arc::clone(&node)),
            node,
        }
    }

    fn table(
        &self,
        req: pb::GetStatisticsRequest,
    ) -> Result<pb::GetStatisticsResponse, ServiceError> {
        let state = &self.node;
        let invalid = |reason, message: String| {
            ServiceError::refused(ErrorKind::InvalidArgument, reason, message)
        };
        let mut dimensions = Vec::new();
        for name in &req.group_by {
            let d = Dimension::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Dimension::ALL.iter().map(|d| d.name()).collect();
                invalid(
                    "bad-dimension",
                    format!(
                        "'{}' is not a dimension; group by any of: {}",
                        name.chars().take(32).collect::<String>(),
                        known.join(", ")
                    ),
                )
            })?;
            dimensions.push(d);
        }
        let threshold = match u64::from(req.threshold) {
            0 => state.suppression_threshold,
            t if t < state.suppression_threshold => {
                return Err(invalid(
                    "threshold-too-low",
                    format!(
                        "this node withholds counts below {}; a report may raise the threshold, never lower it",
                        state.suppression_threshold
                    ),
                ));
            }
            t => t,
        };
        let to_ms = if req.to_ms == 0 {
            UnixMillis::now().0.saturating_add(1)
        } else {
            req.to_ms
        };
        if req.from_ms < 0 || to_ms <= req.from_ms {
            return Err(invalid(
                "bad-period",
                "the period is from_ms (inclusive) to to_ms (exclusive), from_ms < to_ms".into(),
            ));
        }
        let facts = state.reporting.facts(&state.store, req.from_ms, to_ms)?;
        let table = tabulate(&facts, &dimensions, threshold)
            .map_err(|e| invalid("bad-grouping", e.to_string()))?;
        Ok(pb::GetStatisticsResponse {
            node: state.node_id.to_string(),
            group_by: dimensions.iter().map(|d| d.name().to_owned()).collect(),
            from_ms: req.from_ms,
            to_ms,
            threshold: u32::try_from(threshold).unwrap_or(u32::MAX),
            entries: table
                .entries
                .into_iter()
                .map(|e| pb::StatisticsEntry {
                    values: e.key.into_iter().map(Option::unwrap_or_default).collect(),
                    count: e.count.unwrap_or(0),
                    withheld: e.count.is_none(),
                })
                .collect(),
            withheld_small: u32::try_from(table.primary).unwrap_or(u32::MAX),
            withheld_complementary: u32::try_from(table.complementary).unwrap_or(u32::MAX),
        })
    }
}

impl Statistics {
    /// Counts of referrals sent and received over a period, grouped by the dimensions asked
    /// for, small cells withheld.
    pub async fn get_statistics(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::GetStatisticsRequest,
    ) -> Result<pb::GetStatisticsResponse, ServiceError> {
        let client = self
            .local
            .authorized(auth, "read statistics", &REPORT_ROLES)
            .await?;
        let state = Arc::clone(&self.node);
        // Counting reads every record: off the async workers.
        let api = Statistics::new(state);
        let answered = tokio::task::spawn_blocking(move || api.table(req))
            .await
            .map_err(|e| ServiceError::internal(format!("statistics task failed: {e}")))?;
        match answered {
            Ok(table) => Ok(table),
            Err(status) if status.kind() == ErrorKind::InvalidArgument => {
                Err(self.local.refuse(&client.name, status).await)
            }
            Err(status) => Err(status),
        }
    }
}

/// The period of the days `from` and `to` (`YYYY-MM-DD`, UTC, both inclusive; either may be
/// empty: from the beginning, until now) as the request's `(from_ms, to_ms)` (`to_ms` 0: now).
/// A malformed day or a last day before the first is refused (not yet recorded: the caller
/// records it), quoting nothing typed.
pub fn period_of_days(from: &str, to: &str) -> Result<(i64, i64), ServiceError> {
    use crate::audit_trail::review::{DAY_MS, day_start_ms};
    let day = |text: &str, what: &str| -> Result<i64, ServiceError> {
        match text.trim() {
            "" => Ok(0),
            text => day_start_ms(text).ok_or_else(|| {
                ServiceError::refused(
                    ErrorKind::InvalidArgument,
                    "bad-period",
                    format!("the {what} day of the period is written YYYY-MM-DD, e.g. 2026-11-01"),
                )
            }),
        }
    };
    let from_ms = day(from, "first")?;
    let to_ms = match day(to, "last")? {
        0 => 0,
        t => t.saturating_add(DAY_MS),
    };
    if to_ms != 0 && to_ms <= from_ms {
        return Err(ServiceError::refused(
            ErrorKind::InvalidArgument,
            "bad-period",
            "the last day of the period is before its first day",
        ));
    }
    Ok((from_ms, to_ms))
}

#[cfg(test)]
mod period_tests {
    use super::*;

    #[test]
    fn a_period_of_days_is_inclusive_and_checked() {
        assert_eq!(period_of_days("", "").ok(), Some((0, 0)));
        let (from, to) = period_of_days("2026-11-01", "2026-11-30").expect("valid");
        assert_eq!(to - from, 30 * 86_400_000);
        for (f, t) in [
            ("2026-13-01", ""),
            ("", "30/11/2026"),
            ("2026-11-02", "2026-11-01"),
        ] {
            let error = period_of_days(f, t).expect_err("refused");
            assert_eq!(error.refusal_reason(), "bad-period");
            assert!(!error.message().contains("30/11"), "{}", error.message());
        }
    }
}
