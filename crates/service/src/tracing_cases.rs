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
        let unit = match state.tracing.get_match(&req.match_id)? {
            Some(m) => state.tracing.case_unit(&m.case_id)?.unwrap_or_default(),
            None => {
                let status = ServiceError::refused(
                    ErrorKind::NotFound,
                    "unknown-tracing-match",
                    format!("no tracing match {} here", printable(&req.match_id)),
                );
                return Err(self.local.refuse(&client.name, status).await);
            }
        };
        if !client.sees(&unit) {
            let status = ServiceError::refused(
                ErrorKind::PermissionDenied,
                "other-unit",
                format!(
                    "tracing match {} belongs to unit '{unit}'; caseworker '{}' works in unit '{}'",
                    req.match_id,
                    client.name,
                    client.unit_str()
                ),
            );
            return Err(self.local.refuse(&client.name, status).await);
        }
        match family_tracing::review(state, &client.name, &req.match_id, req.confirm).await {
            Ok(m) => Ok(to_api(state, &m)?),
            Err(status) if status.kind() != ErrorKind::Unavailable => {
                Err(self.local.refuse(&client.name, status).await)
            }
            Err(status) => Err(status),
        }
    }
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
