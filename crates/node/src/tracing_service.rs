//! The tracing service on the local port: caseworkers register tracing records and requests,
//! read their matches and review them. The work is done by [`crate::family_tracing`].

use std::sync::Arc;

use kinbridge_core::NodeId;
use kinbridge_core::family_tracing::valid_handle;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::tracing_service_server::TracingService;
use tonic::{Code, Request, Response, Status};

use crate::family_tracing::{self, Registration, to_api};
use crate::identity::Role;
use crate::local_service::{LocalApi, Refused};
use crate::server::NodeState;
use crate::status::refused;

const CASE_ROLES: [Role; 2] = [Role::Caseworker, Role::System];

/// The `TracingService` implementation.
pub struct TracingApi {
    state: Arc<NodeState>,
    local: LocalApi,
}

impl TracingApi {
    /// A service over the node's state.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self {
            local: LocalApi::new(Arc::clone(&state)),
            state,
        }
    }
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Status {
    refused(Code::InvalidArgument, reason, message)
}

impl TracingApi {
    /// Checks a registration; returns the kind, consent, case and peers to query.
    fn check_registration(
        &self,
        req: pb::RegisterTracingCaseRequest,
    ) -> Result<Registration, Status> {
        let state = &self.state;
        if !state.tracing.enabled() {
            return Err(refused(
                Code::FailedPrecondition,
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
            refused(
                Code::FailedPrecondition,
                "consent-missing",
                "consent is required: only cases whose consent covers family tracing take part",
            )
        })?;
        if !consent
            .purposes
            .contains(&(pb::Purpose::FamilyTracing as i32))
        {
            return Err(refused(
                Code::FailedPrecondition,
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

#[tonic::async_trait]
impl TracingService for TracingApi {
    #[tracing::instrument(skip_all, fields(client))]
    async fn register_tracing_case(
        &self,
        request: Request<pb::RegisterTracingCaseRequest>,
    ) -> Result<Response<pb::RegisterTracingCaseResponse>, Status> {
        let client = self
            .local
            .authorized(&request, "register tracing cases", &CASE_ROLES)
            .await?;
        tracing::Span::current().record("client", client.name.as_str());
        let req = request.into_inner();
        let about = Refused::of("", pb::Purpose::FamilyTracing as i32, req.consent.as_ref());
        let registration = match self.check_registration(req) {
            Ok(checked) => checked,
            Err(status) => return Err(self.local.refuse_about(&client.name, status, about).await),
        };
        let registered =
            family_tracing::register(&self.state, &client.name, client.unit_str(), registration)
                .await;
        match registered {
            Ok((case_id, queries)) => Ok(Response::new(pb::RegisterTracingCaseResponse {
                case_id,
                queries,
            })),
            Err(status) if status.code() != Code::Unavailable => {
                Err(self.local.refuse(&client.name, status).await)
            }
            Err(status) => Err(status),
        }
    }

    async fn list_tracing_matches(
        &self,
        request: Request<pb::ListTracingMatchesRequest>,
    ) -> Result<Response<pb::ListTracingMatchesResponse>, Status> {
        let client = self
            .local
            .authorized(&request, "read tracing matches", &CASE_ROLES)
            .await?;
        let case_id = request.into_inner().case_id;
        let mut matches = Vec::new();
        for (m, unit) in self.state.tracing.all_matches()? {
            if (case_id.is_empty() || m.case_id == case_id) && client.sees(&unit) {
                matches.push(to_api(&self.state, &m)?);
            }
        }
        Ok(Response::new(pb::ListTracingMatchesResponse { matches }))
    }

    async fn confirm_tracing_match(
        &self,
        request: Request<pb::ConfirmTracingMatchRequest>,
    ) -> Result<Response<pb::TracingMatch>, Status> {
        let client = self
            .local
            .authorized(&request, "review tracing matches", &CASE_ROLES)
            .await?;
        let req = request.into_inner();
        let state = &self.state;
        let unit = match state.tracing.get_match(&req.match_id)? {
            Some(m) => state.tracing.case_unit(&m.case_id)?.unwrap_or_default(),
            None => {
                let status = refused(
                    Code::NotFound,
                    "unknown-tracing-match",
                    format!("no tracing match {} here", printable(&req.match_id)),
                );
                return Err(self.local.refuse(&client.name, status).await);
            }
        };
        if !client.sees(&unit) {
            let status = refused(
                Code::PermissionDenied,
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
            Ok(m) => Ok(Response::new(to_api(state, &m)?)),
            Err(status) if status.code() != Code::Unavailable => {
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
