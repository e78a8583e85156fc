//! Every operation of the JSON face: its method and path, what it does with case data (for the
//! firewall), the protobuf messages it reads and answers (in the protobuf JSON mapping), and
//! the one use case it calls. The router and the OpenAPI document are both made from
//! [`OPERATIONS`], so neither can drift from the other.
//!
//! A request is the operation's request message: the JSON body of a `POST`, with each path
//! parameter (and, for a `GET`, each query parameter) setting the field of the same name, as
//! gRPC–HTTP transcoding binds them.

use std::sync::Arc;

use futures::future::BoxFuture;
use kinbridge_core::firewall::LocalAccess;
use kinbridge_proto::v1 as pb;
use kinbridge_service::audit_trail::{AuditCaller, AuditTrail};
use kinbridge_service::local::{LocalAuth, LocalCases};
use kinbridge_service::statistics::Statistics;
use kinbridge_service::tracing_cases::TracingCases;
use kinbridge_service::{Node, ServiceError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

/// The use cases the JSON face calls.
pub struct Cases {
    local: LocalCases,
    tracing: TracingCases,
    statistics: Statistics,
    audit: AuditTrail,
}

impl Cases {
    /// The use cases over `node`.
    pub fn new(node: &Arc<Node>) -> Self {
        Self {
            local: LocalCases::new(Arc::clone(node)),
            tracing: TracingCases::new(Arc::clone(node)),
            statistics: Statistics::new(Arc::clone(node)),
            audit: AuditTrail::new(Arc::clone(node)),
        }
    }

    /// The local use cases (refusals the face records go through them).
    pub fn local(&self) -> &LocalCases {
        &self.local
    }
}

/// What an operation answers.
pub enum Reply {
    /// One JSON document.
    One(Value),
    /// JSON lines, one message each, as they come (`application/x-ndjson`).
    Lines(mpsc::Receiver<Result<Value, ServiceError>>),
}

/// An HTTP method the face serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Reads: the request from the path and the query.
    Get,
    /// Acts: the request from the JSON body and the path.
    Post,
}

impl Verb {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// Why an operation did not answer: its request did not decode (the face records that
/// refusal), or the use case refused or failed (and recorded what it refused).
pub enum Failure {
    /// The request is not the operation's request message.
    Request(ServiceError),
    /// The use case's error.
    UseCase(ServiceError),
}

/// What a use case is called with: the use cases, the caller the certificate proved, the
/// request as JSON, and the idempotency key if the request carried one.
pub type Call = fn(
    Arc<Cases>,
    Option<LocalAuth>,
    Value,
    Option<String>,
) -> BoxFuture<'static, Result<Reply, Failure>>;

/// One operation of the JSON face.
pub struct Operation {
    /// Its OpenAPI `operationId`.
    pub id: &'static str,
    /// Its method.
    pub verb: Verb,
    /// Its path, parameters in braces (`/v1/inbox/{sequence}`): each names a field of the
    /// request message.
    pub path: &'static str,
    /// One line for the document.
    pub summary: &'static str,
    /// What it does with case data: the firewall's class.
    pub access: LocalAccess,
    /// The request message (full protobuf name).
    pub request: &'static str,
    /// The answer message (full protobuf name).
    pub response: &'static str,
    /// The status of a success.
    pub created: bool,
    /// Whether it answers JSON lines.
    pub lines: bool,
    /// Whether it takes an `Idempotency-Key`.
    pub idempotent: bool,
    /// The use case.
    pub call: Call,
}

/// Decodes the request `value` as message `T`, or a refusal naming what is wrong (never the
/// value itself, which may hold a child's data).
pub fn decode<T: DeserializeOwned>(value: Value, message: &str) -> Result<T, ServiceError> {
    serde_json::from_value(value).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a field of the wrong type, an unknown enum value or a malformed value",
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "malformed JSON"
            }
            serde_json::error::Category::Io => "unreadable input",
        };
        ServiceError::invalid(
            "malformed",
            format!(
                "the request is not a {message} in the protobuf JSON mapping ({what}); see the node's OpenAPI document at /v1/openapi.json"
            ),
        )
    })
}

/// `message` as JSON.
pub fn encode<T: Serialize>(message: &T) -> Value {
    serde_json::to_value(message).unwrap_or(Value::Null)
}

/// One JSON answer from `result`.
fn one<T: Serialize>(result: Result<T, ServiceError>) -> Result<Reply, ServiceError> {
    result.map(|m| Reply::One(encode(&m)))
}

/// JSON lines from a stream of messages.
fn lines<T: Serialize + Send + 'static>(
    mut messages: mpsc::Receiver<Result<T, ServiceError>>,
) -> Reply {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(message) = messages.recv().await {
            if tx.send(message.map(|m| encode(&m))).await.is_err() {
                return;
            }
        }
    });
    Reply::Lines(rx)
}

/// An operation calling `$body` with the request decoded as `$ty`.
macro_rules! call {
    (|$cases:ident, $auth:ident, $req:ident: $ty:ty, $key:ident| $body:expr) => {
        |cases: Arc<Cases>, auth: Option<LocalAuth>, value: Value, key: Option<String>| {
            Box::pin(async move {
                let $req: $ty = decode(value, stringify!($ty)).map_err(Failure::Request)?;
                let $cases = cases.as_ref();
                let $auth = auth.as_ref();
                let $key = key.as_deref();
                let _ = &$key;
                let answered: Result<Reply, ServiceError> = $body;
                answered.map_err(Failure::UseCase)
            })
        }
    };
}

/// Every operation of the JSON face.
pub static OPERATIONS: &[Operation] = &[
    Operation {
        id: "submitReferral",
        verb: Verb::Post,
        path: "/v1/referrals",
        summary: "Submit a referral or case transfer; answers its message id once it is durably queued",
        access: LocalAccess::Submit,
        request: "kinbridge.v1.SubmitReferralRequest",
        response: "kinbridge.v1.SubmitReferralResponse",
        created: true,
        lines: false,
        idempotent: true,
        call: call!(|c, auth, req: pb::SubmitReferralRequest, key| one(c
            .local
            .submit_referral(auth, req, key)
            .await)),
    },
    Operation {
        id: "getDelivery",
        verb: Verb::Get,
        path: "/v1/referrals/{messageId}/delivery",
        summary: "A submitted message's delivery, waiting up to waitMs for it to leave the queue",
        access: LocalAccess::Case,
        request: "kinbridge.v1.GetDeliveryRequest",
        response: "kinbridge.v1.GetDeliveryResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::GetDeliveryRequest, key| one(c
            .local
            .get_delivery(auth, req)
            .await)),
    },
    Operation {
        id: "getReferralStatus",
        verb: Verb::Get,
        path: "/v1/referrals/{referralId}/status",
        summary: "Where a referral stands: its workflow as this node knows it",
        access: LocalAccess::Case,
        request: "kinbridge.v1.GetReferralStatusRequest",
        response: "kinbridge.v1.GetReferralStatusResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::GetReferralStatusRequest, key| one(c
            .local
            .get_referral_status(auth, req)
            .await)),
    },
    Operation {
        id: "listInbox",
        verb: Verb::Get,
        path: "/v1/inbox",
        summary: "A page of the caller's inbox after the cursor afterSequence (the last item's sequence)",
        access: LocalAccess::Case,
        request: "kinbridge.v1.ListInboxRequest",
        response: "kinbridge.v1.ListInboxResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::ListInboxRequest, key| one(c
            .local
            .list_inbox(auth, req)
            .await)),
    },
    Operation {
        id: "getInboxItem",
        verb: Verb::Get,
        path: "/v1/inbox/{sequence}",
        summary: "One inbox item with its details, as the caller's role and unit may see them",
        access: LocalAccess::Case,
        request: "kinbridge.v1.GetInboxItemRequest",
        response: "kinbridge.v1.InboxItem",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::GetInboxItemRequest, key| one(c
            .local
            .show_inbox_item(auth, req.sequence)
            .await)),
    },
    Operation {
        id: "acknowledgeInboxItem",
        verb: Verb::Post,
        path: "/v1/inbox/{sequence}/acknowledge",
        summary: "Mark an inbox item as taken into the caller's case-management system",
        access: LocalAccess::Case,
        request: "kinbridge.v1.AcknowledgeInboxItemRequest",
        response: "kinbridge.v1.AcknowledgeInboxItemResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::AcknowledgeInboxItemRequest, key| one(c
            .local
            .acknowledge_inbox_item(auth, req)
            .await)),
    },
    Operation {
        id: "updateReferralStatus",
        verb: Verb::Post,
        path: "/v1/inbox/{sequence}/status",
        summary: "Move a received referral along its workflow (accept, decline with a reason, start, close with an outcome); the sender is told",
        access: LocalAccess::Case,
        request: "kinbridge.v1.UpdateReferralStatusRequest",
        response: "kinbridge.v1.SubmitReferralResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::UpdateReferralStatusRequest, key| one(c
            .local
            .update_referral_status(auth, req)
            .await)),
    },
    Operation {
        id: "forwardReferral",
        verb: Verb::Post,
        path: "/v1/inbox/{sequence}/forward",
        summary: "Pass a received referral on to another node under the same consent scope",
        access: LocalAccess::Case,
        request: "kinbridge.v1.ForwardReferralRequest",
        response: "kinbridge.v1.SubmitReferralResponse",
        created: true,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::ForwardReferralRequest, key| one(c
            .local
            .forward_referral(auth, req)
            .await)),
    },
    Operation {
        id: "withdrawConsent",
        verb: Verb::Post,
        path: "/v1/consents/{consentId}/withdrawal",
        summary: "Withdraw a consent this node originated data under: delete it here and tell every node it reached",
        access: LocalAccess::Case,
        request: "kinbridge.v1.WithdrawConsentRequest",
        response: "kinbridge.v1.WithdrawConsentResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::WithdrawConsentRequest, key| one(c
            .local
            .withdraw_consent(auth, req)
            .await)),
    },
    Operation {
        id: "registerTracingCase",
        verb: Verb::Post,
        path: "/v1/tracing/cases",
        summary: "Register a tracing record (a child here) or request (a family looking for a child)",
        access: LocalAccess::Case,
        request: "kinbridge.v1.RegisterTracingCaseRequest",
        response: "kinbridge.v1.RegisterTracingCaseResponse",
        created: true,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::RegisterTracingCaseRequest, key| one(c
            .tracing
            .register_tracing_case(auth, req)
            .await)),
    },
    Operation {
        id: "listTracingMatches",
        verb: Verb::Get,
        path: "/v1/tracing/matches",
        summary: "The tracing matches of the caller's unit's cases (of one case, with caseId)",
        access: LocalAccess::Case,
        request: "kinbridge.v1.ListTracingMatchesRequest",
        response: "kinbridge.v1.ListTracingMatchesResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::ListTracingMatchesRequest, key| one(c
            .tracing
            .list_tracing_matches(auth, req)
            .await)),
    },
    Operation {
        id: "reviewTracingMatch",
        verb: Verb::Post,
        path: "/v1/tracing/matches/{matchId}/review",
        summary: "Confirm or rule out a tracing match; the disclosure follows once both ends confirm",
        access: LocalAccess::Case,
        request: "kinbridge.v1.ConfirmTracingMatchRequest",
        response: "kinbridge.v1.TracingMatch",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::ConfirmTracingMatchRequest, key| one(c
            .tracing
            .confirm_tracing_match(auth, req)
            .await)),
    },
    Operation {
        id: "getStatistics",
        verb: Verb::Post,
        path: "/v1/statistics",
        summary: "Counts of referrals over a period, grouped as asked, small cells withheld",
        access: LocalAccess::Aggregate,
        request: "kinbridge.v1.GetStatisticsRequest",
        response: "kinbridge.v1.GetStatisticsResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::GetStatisticsRequest, key| one(c
            .statistics
            .get_statistics(auth, req)
            .await)),
    },
    Operation {
        id: "getCheckpoint",
        verb: Verb::Get,
        path: "/v1/audit/checkpoint",
        summary: "The audit log's latest signed checkpoint",
        access: LocalAccess::NoCaseData,
        request: "kinbridge.v1.GetCheckpointRequest",
        response: "kinbridge.v1.GetCheckpointResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::GetCheckpointRequest, key| one(c
            .audit
            .get_checkpoint(AuditCaller::Local(auth), req)
            .await)),
    },
    Operation {
        id: "getInclusionProof",
        verb: Verb::Get,
        path: "/v1/audit/inclusion-proof",
        summary: "The proof that entry index is in the log of treeSize entries, with the entry",
        access: LocalAccess::NoCaseData,
        request: "kinbridge.v1.GetInclusionProofRequest",
        response: "kinbridge.v1.GetInclusionProofResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::GetInclusionProofRequest, key| one(c
            .audit
            .get_inclusion_proof(AuditCaller::Local(auth), req)
            .await)),
    },
    Operation {
        id: "getConsistencyProof",
        verb: Verb::Get,
        path: "/v1/audit/consistency-proof",
        summary: "The proof that the log of secondSize entries extends the one of firstSize",
        access: LocalAccess::NoCaseData,
        request: "kinbridge.v1.GetConsistencyProofRequest",
        response: "kinbridge.v1.GetConsistencyProofResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::GetConsistencyProofRequest, key| one(c
            .audit
            .get_consistency_proof(AuditCaller::Local(auth), req)
            .await)),
    },
    Operation {
        id: "exportLog",
        verb: Verb::Get,
        path: "/v1/audit/export",
        summary: "The whole audit log up to a fresh checkpoint, as JSON lines of chunks",
        access: LocalAccess::Case,
        request: "kinbridge.v1.ExportLogRequest",
        response: "kinbridge.v1.ExportLogChunk",
        created: false,
        lines: true,
        idempotent: false,
        call: call!(|c, auth, req: pb::ExportLogRequest, key| c
            .audit
            .export_log(AuditCaller::Local(auth), req)
            .await
            .map(lines)),
    },
    Operation {
        id: "checkPeers",
        verb: Verb::Post,
        path: "/v1/audit/peer-checks",
        summary: "Check every peer's audit log against the checkpoint held for it",
        access: LocalAccess::Operations,
        request: "kinbridge.v1.CheckPeersRequest",
        response: "kinbridge.v1.CheckPeersResponse",
        created: false,
        lines: false,
        idempotent: false,
        call: call!(|c, auth, req: pb::CheckPeersRequest, key| one(c
            .audit
            .check_peers(AuditCaller::Local(auth), req)
            .await)),
    },
];

/// The operation at `verb` and the path template `path`, if any.
pub fn find(verb: Verb, path: &str) -> Option<&'static Operation> {
    OPERATIONS
        .iter()
        .find(|op| op.verb == verb && op.path == path)
}
