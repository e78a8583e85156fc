//! Family tracing's local use cases: caseworkers register tracing records and requests, read
//! their matches and review them. Checked and authorised here; the exchange with peers is
//! [`crate::family_tracing`]'s.

use std::sync::Arc;

use kinbridge_core::NodeId;
use kinbridge_core::family_tracing::valid_handle;
use kinbridge_proto::v1 as pb;

use crate::error::{ErrorKind, ServiceError};
use crate::family_tracing::{self, Registration, to_api};
use crate::local::{CASE_ROLES, LocalAuth, LocalCases, Refused};
use crate::node::Node;
use crate::tracing_records::{CaseRecord, blob_key, decode};
use prost::Message;

/// Family tracing's local use cases.
pub struct TracingCases {
    node: Arc<Node>,
    local: LocalCases,
}

impl TracingCases {
    /// The use cases over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            local: LocalCases::new(Arc::clone(&node)),
            node,
        }
    }
}

fn invalid(reason: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::refused(ErrorKind::InvalidArgument, reason, message)
}

impl TracingCases {
    /// Checks a registration; returns the kind, consent, case and peers to query.
    fn check_registration(
        &self,
        req: pb::RegisterTracingCaseRequest,
    ) -> Result<Registration, ServiceError> {
        let state = &self.node;
        if !state.tracing.enabled() {
            return Err(ServiceError::refused(
                ErrorKind::FailedPrecondition,
                "tracing-disabled",
                "this node takes no part in family tracing: its config names no linkage key ([tracing] linkage_keys)",
            ));
        }
        let kind = match pb::TracingCaseKind::try_from(req.kind) {
            Ok(k @ (pb::TracingCaseKind::Record | pb::TracingCaseKind::Request)) => k,
            _ => {
                return Err(invalid(
                    "bad-kind",
                    "kind is TRACING_CASE_KIND_RECORD (a child registered here) or TRACING_CASE_KIND_REQUEST (a family looking for a child)",
                ));
            }
        };
        let consent = req.consent.ok_or_else(|| {
            ServiceError::refused(
                ErrorKind::FailedPrecondition,
                "consent-missing",
                "consent is required: only cases whose consent covers family tracing take part",
            )
        })?;
        if !consent
            .purposes
            .contains(&(pb::Purpose::FamilyTracing as i32))
        {
            return Err(ServiceError::refused(
                ErrorKind::FailedPrecondition,
                "purpose-not-covered",
                "the consent does not cover PURPOSE_FAMILY_TRACING: only cases that consent to tracing take part",
            ));
        }
        let case = req
            .case
            .ok_or_else(|| invalid("no-case", "case is required"))?;
        let named = case.identity.as_ref().is_some_and(|i| {
            i.given_names
                .iter()
                .chain(&i.family_names)
                .chain(&i.other_names)
                .any(|n| !n.trim().is_empty())
        });
        if !named {
            return Err(invalid(
                "no-names",
                "case.identity holds no name: a tracing case is matched on the names the person is known by",
            ));
        }
        let peers = if kind == pb::TracingCaseKind::Record {
            if !req.peers.is_empty() {
                return Err(invalid(
                    "bad-peers",
                    "peers are for a request; a record is matched against the queries peers send",
                ));
            }
            Vec::new()
        } else {
            let names = if req.peers.is_empty() {
                consent.recipients.clone()
            } else {
                req.peers
            };
            let mut peers = Vec::new();
            for name in names {
                let peer = NodeId::new(&name).map_err(|e| invalid("bad-peer", e.to_string()))?;
                if !peers.contains(&peer) {
                    peers.push(peer);
                }
            }
            if peers.is_empty() {
                return Err(invalid(
                    "no-peers",
                    "a request needs peers to query: name them, or name recipients in its consent",
                ));
            }
            peers
        };
        family_tracing::check_registration_reaches(state, kind, &consent, &peers)?;
        Ok(Registration {
            kind,
            consent,
            case,
            peers,
            ttl_seconds: req.ttl_seconds,
        })
    }
}

impl TracingCases {
    /// Registers a tracing record (a child here) or request (a family looking for a child)
    /// and, for a request, sends its encoded query to the peers named.
    #[tracing::instrument(skip_all, fields(client))]
    pub async fn register_tracing_case(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::RegisterTracingCaseRequest,
    ) -> Result<pb::RegisterTracingCaseResponse, ServiceError> {
        let client = self
            .local
            .authorized(auth, "register tracing cases", &CASE_ROLES)
            .await?;
        tracing::Span::current().record("client", client.name.as_str());
        let about = Refused::of("", pb::Purpose::FamilyTracing as i32, req.consent.as_ref());
        let registration = match self.check_registration(req) {
            Ok(checked) => checked,
            Err(status) => return Err(self.local.refuse_about(&client.name, status, about).await),
        };
        let registered =
            family_tracing::register(&self.node, &client.name, client.unit_str(), registration)
                .await;
        match registered {
            Ok((case_id, queries)) => Ok(pb::RegisterTracingCaseResponse { case_id, queries }),
            Err(status) if status.kind() != ErrorKind::Unavailable => {
                Err(self.local.refuse(&client.name, status).await)
            }
            Err(status) => Err(status),
        }
    }

    /// The matches of the caller's unit's cases (of one case, if named).
    pub async fn list_tracing_matches(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::ListTracingMatchesRequest,
    ) -> Result<pb::ListTracingMatchesResponse, ServiceError> {
        let client = self
            .local
            .authorized(auth, "read tracing matches", &CASE_ROLES)
            .await?;
        let case_id = req.case_id;
        let mut matches = Vec::new();
        for (m, unit) in self.node.tracing.all_matches()? {
            if (case_id.is_empty() || m.case_id == case_id) && client.sees(&unit) {
                matches.push(to_api(&self.node, &m)?);
            }
        }
        Ok(pb::ListTracingMatchesResponse { matches })
    }

    /// A caseworker's review of a match: confirmed (disclosure follows once both sides
    /// confirm) or rejected.
    pub async fn confirm_tracing_match(
        &self,
        auth: Option<&LocalAuth>,
        req: pb::ConfirmTracingMatchRequest,
    ) -> Result<pb::TracingMatch, ServiceError> {
        let client = self
            .local
            .authorized(auth, "review tracing matches", &CASE_ROLES)
            .await?;
        let state = &self.node;
        self.visible_match(&client, &req.match_id).await?;
        match family_tracing::review(state, &client.name, &req.match_id, req.confirm).await {
            Ok(m) => Ok(to_api(state, &m)?),
            Err(status) if status.kind() != ErrorKind::Unavailable => {
                Err(self.local.refuse(&client.name, status).await)
            }
            Err(status) => Err(status),
        }
    }
}

/// A tracing case as its caseworker's list shows it: what identifies it to its own unit.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingCaseSummary {
    /// Its id here.
    pub case_id: String,
    /// A record or a request.
    pub kind: pb::TracingCaseKind,
    /// When it was registered.
    pub registered_at_ms: i64,
    /// Whether its data was purged (consent withdrawn); then no reference and no names.
    pub purged: bool,
    /// The authority's own case reference.
    pub case_reference: String,
    /// The names of the person the case is about (given and family names, then the others).
    pub names: Vec<String>,
    /// A request's peers queried.
    pub peers: Vec<String>,
    /// The consent it relies on.
    pub consent_id: String,
}

/// One tracing match as its page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingMatchView {
    /// The match as the local API shows it, with the peer's disclosure once received.
    pub matched: pb::TracingMatch,
    /// This node's case in the match.
    pub case: Option<TracingCaseSummary>,
    /// This node's own agreed fields, as it discloses them, once both caseworkers confirmed
    /// (none before, nor once the case's data is purged).
    pub ours: Option<pb::TracingDisclosure>,
}

impl TracingCases {
    /// The match `match_id` if `client` may see it: an unknown id or another unit's match is
    /// refused (audited).
    async fn visible_match(
        &self,
        client: &crate::identity::LocalClient,
        match_id: &str,
    ) -> Result<crate::family_tracing::MatchRecord, ServiceError> {
        let state = &self.node;
        let Some(m) = state.tracing.get_match(match_id)? else {
            let status = ServiceError::refused(
                ErrorKind::NotFound,
                "unknown-tracing-match",
                format!("no tracing match {} here", printable(match_id)),
            );
            return Err(self.local.refuse(&client.name, status).await);
        };
        let unit = state.tracing.case_unit(&m.case_id)?.unwrap_or_default();
        if !client.sees(&unit) {
            let status = ServiceError::refused(
                ErrorKind::PermissionDenied,
                "other-unit",
                format!(
                    "tracing match {match_id} belongs to unit '{unit}'; caseworker '{}' works in unit '{}'",
                    client.name,
                    client.unit_str()
                ),
            );
            return Err(self.local.refuse(&client.name, status).await);
        }
        Ok(m)
    }

    /// The caller's unit's tracing cases (every unit's for the system role), newest first.
    pub async fn list_tracing_cases(
        &self,
        auth: Option<&LocalAuth>,
    ) -> Result<Vec<TracingCaseSummary>, ServiceError> {
        let client = self
            .local
            .authorized(auth, "read tracing cases", &CASE_ROLES)
            .await?;
        let mut out = Vec::new();
        for entry in self.node.tracing.cases.iter() {
            let (_, value) = entry.map_err(kinbridge_store::StoreError::from)?;
            let case = decode::<CaseRecord>("tracing case", &value)?;
            if client.sees(&case.unit) {
                out.push(self.summary(&case)?);
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.registered_at_ms));
        Ok(out)
    }

    /// One match of the caller's unit: its band and state, this node's case, and once both
    /// caseworkers confirmed, this node's agreed fields beside the peer's (once received).
    pub async fn show_tracing_match(
        &self,
        auth: Option<&LocalAuth>,
        match_id: &str,
    ) -> Result<TracingMatchView, ServiceError> {
        let client = self
            .local
            .authorized(auth, "read tracing matches", &CASE_ROLES)
            .await?;
        let m = self.visible_match(&client, match_id).await?;
        let state = &self.node;
        let case = state.tracing.case(&m.case_id)?;
        let ours = match &case {
            Some(c) if m.confirmed() && c.purged_at_ms == 0 => own_agreed_fields(state, c, &m)?,
            _ => None,
        };
        Ok(TracingMatchView {
            matched: to_api(state, &m)?,
            case: case.as_ref().map(|c| self.summary(c)).transpose()?,
            ours,
        })
    }

    /// What the list shows of `case`: its reference and names from the payload store, unless
    /// purged.
    fn summary(&self, case: &CaseRecord) -> Result<TracingCaseSummary, ServiceError> {
        let data = if case.purged_at_ms == 0 {
            self.node.store.get_blob(&blob_key(&case.case_id))?
        } else {
            None
        };
        let payload = data.and_then(|d| pb::ReferralPayload::decode(d.as_slice()).ok());
        let (case_reference, names) = payload.map_or_else(Default::default, |p| {
            let names = p.identity.map_or_else(Vec::new, |i| {
                let full = [i.given_names.join(" "), i.family_names.join(" ")]
                    .join(" ")
                    .trim()
                    .to_owned();
                std::iter::once(full)
                    .chain(i.other_names)
                    .filter(|n| !n.trim().is_empty())
                    .collect()
            });
            (p.case_reference, names)
        });
        Ok(TracingCaseSummary {
            case_id: case.case_id.clone(),
            kind: pb::TracingCaseKind::try_from(case.kind).unwrap_or_default(),
            registered_at_ms: case.registered_at_ms,
            purged: case.purged_at_ms != 0,
            case_reference,
            names,
            peers: case.queries.iter().map(|q| q.peer.clone()).collect(),
            consent_id: case
                .consent
                .as_ref()
                .map(|c| c.consent_id.clone())
                .unwrap_or_default(),
        })
    }
}

/// The agreed fields of this node's `case` in match `m`: exactly what its disclosure
/// carries; none if its data is gone or unreadable.
fn own_agreed_fields(
    state: &Node,
    case: &CaseRecord,
    m: &crate::family_tracing::MatchRecord,
) -> Result<Option<pb::TracingDisclosure>, ServiceError> {
    let Some(data) = state.store.get_blob(&blob_key(&case.case_id))? else {
        return Ok(None);
    };
    Ok(pb::ReferralPayload::decode(data.as_slice())
        .ok()
        .map(|payload| family_tracing::disclosure_of(case, payload, m)))
}

fn printable(s: &str) -> String {
    if valid_handle(s) || uuid_like(s) {
        s.to_owned()
    } else {
        "(not a match id)".to_owned()
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}
