//! Family tracing across three countries: a family's tracing request in Malawi finds the
//! child registered in Zambia, without a name or a date of birth crossing a border before both
//! caseworkers confirm the match; then each side's disclosure carries the agreed fields only.
//!
//! Every node reaches its peers through a recording relay: a mutual-TLS server presenting the
//! peer's own node certificate, which notes every envelope and passes it on to the real node as
//! the node that sent it. So the assertions are on the messages exactly as they crossed.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use kinbridge_core::UnixMillis;
use kinbridge_core::family_tracing::check_disclosure;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::peer_service_client::PeerServiceClient;
use kinbridge_proto::v1::peer_service_server::{PeerService, PeerServiceServer};
use kinbridge_proto::v1::tracing_service_client::TracingServiceClient;
use prost::Message;
use tonic::transport::{Certificate, Channel, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

const NODES: [&str; 3] = ["ZM-DSW", "MW-DSW", "ZW-DSD"];

/// An envelope as it crossed: from, to, and its bytes.
#[derive(Clone)]
struct Crossed {
    to: String,
    envelope: pb::Envelope,
}

impl Crossed {
    fn header(&self) -> pb::EnvelopeHeader {
        pb::EnvelopeHeader::decode(self.envelope.header.as_slice()).expect("header")
    }
    fn kind(&self) -> pb::MessageKind {
        pb::MessageKind::try_from(self.header().kind).expect("kind")
    }
}

/// A recording relay in front of one node's peer port.
#[derive(Clone)]
struct Relay {
    target: String,
    /// The real node, as each sender.
    upstream: Arc<HashMap<String, PeerServiceClient<Channel>>>,
    crossed: Arc<Mutex<Vec<Crossed>>>,
}

impl Relay {
    fn sender<T>(&self, request: &Request<T>) -> Result<PeerServiceClient<Channel>, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let node = kinbridge_service::identity::node_id_of(leaf)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        self.upstream
            .get(node.as_str())
            .cloned()
            .ok_or_else(|| Status::permission_denied("not a federation node"))
    }

    fn note(&self, envelopes: &[pb::Envelope]) {
        let mut crossed = self.crossed.lock().expect("crossed");
        for envelope in envelopes {
            crossed.push(Crossed {
                to: self.target.clone(),
                envelope: envelope.clone(),
            });
        }
    }
}

#[tonic::async_trait]
impl PeerService for Relay {
    async fn deliver(
        &self,
        request: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        let mut upstream = self.sender(&request)?;
        let inner = request.into_inner();
        self.note(inner.envelope.as_slice());
        upstream.deliver(inner).await
    }

    async fn deliver_batch(
        &self,
        request: Request<pb::DeliverBatchRequest>,
    ) -> Result<Response<pb::DeliverBatchResponse>, Status> {
        let mut upstream = self.sender(&request)?;
        let inner = request.into_inner();
        self.note(&inner.envelopes);
        upstream.deliver_batch(inner).await
    }
}

struct Traced {
    fed: Federation,
    crossed: Arc<Mutex<Vec<Crossed>>>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Traced {
    async fn start() -> Self {
        let mut listeners = HashMap::new();
        let mut relay_addrs: HashMap<String, SocketAddr> = HashMap::new();
        for name in NODES {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind relay");
            relay_addrs.insert(name.to_owned(), l.local_addr().expect("addr"));
            listeners.insert(name.to_owned(), l);
        }
        let addrs = relay_addrs.clone();
        let fed = Federation::start_with(&NODES, move |config| {
            for peer in &mut config.peers {
                peer.endpoint = Some(format!("https://{}", addrs[peer.node_id.as_str()]));
            }
        })
        .await;
        let crossed = Arc::new(Mutex::new(Vec::new()));
        let read = |p: std::path::PathBuf| std::fs::read(p).expect("pki file");
        let mut every_ca = Vec::new();
        for name in NODES {
            every_ca.extend(read(fed.files(name).ca_cert()));
        }
        let (mut stops, mut servers) = (Vec::new(), Vec::new());
        for target in NODES {
            let upstream: HashMap<String, PeerServiceClient<Channel>> = NODES
                .iter()
                .filter(|s| **s != target)
                .map(|s| ((*s).to_owned(), fed.peer_client_as(target, s)))
                .collect();
            let relay = Relay {
                target: target.to_owned(),
                upstream: Arc::new(upstream),
                crossed: Arc::clone(&crossed),
            };
            let files = fed.files(target);
            let tls = ServerTlsConfig::new()
                .identity(Identity::from_pem(
                    read(files.node_cert()),
                    read(files.node_key()),
                ))
                .client_ca_root(Certificate::from_pem(every_ca.clone()));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let listener = listeners.remove(target).expect("listener");
            servers.push(tokio::spawn(async move {
                Server::builder()
                    .tls_config(tls)
                    .expect("tls")
                    .add_service(PeerServiceServer::new(relay))
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await
                    .expect("relay");
            }));
            stops.push(stop);
        }
        Self {
            fed,
            crossed,
            stops,
            servers,
        }
    }

    fn crossed(&self) -> Vec<Crossed> {
        self.crossed.lock().expect("crossed").clone()
    }

    fn tracing(&self, node: &str) -> TracingServiceClient<Channel> {
        TracingServiceClient::new(self.fed.channel(node, "caseworker"))
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for server in self.servers {
            server.await.expect("relay task");
        }
        self.fed.shutdown().await;
    }
}

/// A consent to family tracing with `recipients`, of identity, family, location and contact.
fn tracing_consent(id: &str, recipients: &[&str]) -> pb::ConsentScope {
    let now = UnixMillis::now();
    pb::ConsentScope {
        consent_id: id.into(),
        given_by: pb::ConsentGiver::Parent as i32,
        child_views_recorded: true,
        purposes: vec![pb::Purpose::FamilyTracing as i32],
        categories: vec![
            pb::DataCategory::Identity as i32,
            pb::DataCategory::Family as i32,
            pb::DataCategory::Location as i32,
            pb::DataCategory::Contact as i32,
        ],
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        valid_from_ms: now.plus_ms(-86_400_000).0,
        expires_at_ms: now.plus_ms(86_400_000).0,
        ..Default::default()
    }
}

/// The child, as Zambia registered her: more than a disclosure may carry.
fn child_in_zambia() -> pb::ReferralPayload {
    pb::ReferralPayload {
        case_reference: "ZM-LSK-2026-0193".into(),
        identity: Some(pb::IdentityData {
            given_names: vec!["Amina".into()],
            family_names: vec!["Yusuf".into(), "Hassan".into()],
            other_names: vec!["Ameena".into()],
            sex: pb::Sex::Female as i32,
            birth_date: "2014-03-02".into(),
            languages: vec!["sw".into()],
            ..Default::default()
        }),
        contact: Some(pb::ContactData {
            phone: "+260977000193".into(),
            address: "Plot 12 Kalingalinga".into(),
            ..Default::default()
        }),
        location: Some(pb::LocationData {
            current_location: "Kalingalinga interim care".into(),
            place_of_separation: "Mwami border post".into(),
            date_of_separation: "2026-04-11".into(),
        }),
        family: Some(pb::FamilyData {
            members: vec![pb::FamilyMember {
                relationship: "mother".into(),
                names: vec!["Halima Hassan".into()],
                whereabouts_known: false,
                last_known_location: "Mchinji".into(),
            }],
        }),
        health: Some(pb::HealthData {
            conditions: vec!["asthma-inhaler".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The family's request in Malawi: the child as her mother spells her name.
fn family_request_in_malawi() -> pb::ReferralPayload {
    pb::ReferralPayload {
        case_reference: "MW-MCH-2026-0077".into(),
        identity: Some(pb::IdentityData {
            given_names: vec!["Aminah".into()],
            family_names: vec!["Yussuf".into(), "Hassan".into()],
            sex: pb::Sex::Female as i32,
            birth_date: "2014-03-02".into(),
            ..Default::default()
        }),
        contact: Some(pb::ContactData {
            caregiver_name: "Halima Hassan".into(),
            caregiver_phone: "+265888000077".into(),
            ..Default::default()
        }),
        location: Some(pb::LocationData {
            place_of_separation: "Mwami border".into(),
            date_of_separation: "2026-04-11".into(),
            current_location: "Mchinji boma".into(),
        }),
        family: Some(pb::FamilyData {
            members: vec![pb::FamilyMember {
                relationship: "mother".into(),
                names: vec!["Halima Hassan".into()],
                whereabouts_known: true,
                last_known_location: "Mchinji boma".into(),
            }],
        }),
        ..Default::default()
    }
}

/// Another child, registered in Zimbabwe, who matches nobody's request.
fn other_child_in_zimbabwe() -> pb::ReferralPayload {
    pb::ReferralPayload {
        identity: Some(pb::IdentityData {
            given_names: vec!["Tendai".into()],
            family_names: vec!["Moyo".into()],
            sex: pb::Sex::Male as i32,
            birth_date: "2011-09-17".into(),
            ..Default::default()
        }),
        location: Some(pb::LocationData {
            place_of_separation: "Beitbridge".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What must not cross before both caseworkers confirm: every name, the date of birth, every
/// place and contact detail of both cases.
const NEVER_BEFORE_CONFIRMATION: [&str; 14] = [
    "amina",
    "ameena",
    "yusuf",
    "yussuf",
    "hassan",
    "halima",
    "tendai",
    "moyo",
    "2014-03-02",
    "2011-09-17",
    "mwami",
    "kalingalinga",
    "mchinji",
    "+26",
];

/// What never crosses at all: the parts of either case that are not agreed fields.
const NEVER: [&str; 7] = [
    "+260977000193",
    "+265888000077",
    "kalingalinga",
    "mchinji",
    "asthma",
    "zm-lsk-2026-0193",
    "mw-mch-2026-0077",
];

fn contains(haystack: &[u8], needle: &str) -> bool {
    let lower: Vec<u8> = haystack.iter().map(u8::to_ascii_lowercase).collect();
    lower.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn envelope_bytes(e: &pb::Envelope) -> Vec<u8> {
    e.encode_to_vec()
}

async fn register(
    client: &mut TracingServiceClient<Channel>,
    kind: pb::TracingCaseKind,
    consent: pb::ConsentScope,
    case: pb::ReferralPayload,
) -> pb::RegisterTracingCaseResponse {
    client
        .register_tracing_case(pb::RegisterTracingCaseRequest {
            kind: kind as i32,
            consent: Some(consent),
            case: Some(case),
            peers: Vec::new(),
            ttl_seconds: 3600,
        })
        .await
        .expect("register")
        .into_inner()
}

async fn matches(client: &mut TracingServiceClient<Channel>) -> Vec<pb::TracingMatch> {
    client
        .list_tracing_matches(pb::ListTracingMatchesRequest::default())
        .await
        .expect("list matches")
        .into_inner()
        .matches
}

#[tokio::test]
async fn a_family_in_malawi_finds_a_child_in_zambia_without_names_crossing_first() {
    let t = Traced::start().await;
    let (mut zm, mut mw, mut zw) = (
        t.tracing("ZM-DSW"),
        t.tracing("MW-DSW"),
        t.tracing("ZW-DSD"),
    );

    // The child is registered in Zambia, another child in Zimbabwe; no query has come yet.
    let record = register(
        &mut zm,
        pb::TracingCaseKind::Record,
        tracing_consent("ZM-CONSENT-TRACE-1", &["MW-DSW", "ZW-DSD"]),
        child_in_zambia(),
    )
    .await;
    register(
        &mut zw,
        pb::TracingCaseKind::Record,
        tracing_consent("ZW-CONSENT-TRACE-9", &["MW-DSW", "ZM-DSW"]),
        other_child_in_zimbabwe(),
    )
    .await;
    assert!(record.queries.is_empty());

    // The family's request in Malawi queries both peers its consent names.
    let request = register(
        &mut mw,
        pb::TracingCaseKind::Request,
        tracing_consent("MW-CONSENT-TRACE-4", &["ZM-DSW", "ZW-DSD"]),
        family_request_in_malawi(),
    )
    .await;
    let mut queried: Vec<&str> = request.queries.iter().map(|q| q.peer.as_str()).collect();
    queried.sort_unstable();
    assert_eq!(queried, ["ZM-DSW", "ZW-DSD"]);

    // Both peers answer; Zambia's record matches, Zimbabwe's does not.
    eventually("Malawi holds Zambia's match and both notices", || {
        let crossed = t.crossed();
        let mut mw = mw.clone();
        async move {
            let notices = crossed
                .iter()
                .filter(|c| c.kind() == pb::MessageKind::TracingMatchNotice)
                .count();
            notices == 2 && !matches(&mut mw).await.is_empty()
        }
    })
    .await;
    let found = matches(&mut mw).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let at_mw = &found[0];
    assert_eq!(at_mw.peer, "ZM-DSW");
    assert_eq!(at_mw.case_id, request.case_id);
    assert_eq!(at_mw.case_kind, pb::TracingCaseKind::Request as i32);
    assert!(
        at_mw.band == pb::MatchBand::Likely as i32 || at_mw.band == pb::MatchBand::Possible as i32
    );
    assert_eq!(at_mw.state, pb::TracingMatchState::Pending as i32);
    let at_zm = matches(&mut zm).await;
    assert_eq!(at_zm.len(), 1, "{at_zm:?}");
    let at_zm = &at_zm[0];
    assert_eq!(
        (at_zm.peer.as_str(), at_zm.case_id.as_str()),
        ("MW-DSW", record.case_id.as_str())
    );
    assert!(matches(&mut zw).await.is_empty());

    // Nothing that crossed so far holds a name, a date of birth, a place or a contact: not in
    // the headers, not in the payloads. Each tracing payload is exactly its message type
    // (no unknown fields riding along).
    let before = t.crossed();
    assert!(before.len() >= 4, "{} envelopes", before.len());
    for c in &before {
        let bytes = envelope_bytes(&c.envelope);
        for needle in NEVER_BEFORE_CONFIRMATION {
            assert!(
                !contains(&bytes, needle),
                "{:?} to {} holds '{needle}'",
                c.kind(),
                c.to
            );
        }
        let payload = c.envelope.payload.as_slice();
        let exact = match c.kind() {
            pb::MessageKind::TracingRequest => {
                let q = pb::TracingQuery::decode(payload).expect("query");
                assert_eq!(q.schema_id, kinbridge_linkage::SCHEMA.id);
                assert_eq!(q.key_epoch, 1);
                q.encode_to_vec()
            }
            pb::MessageKind::TracingMatchNotice => pb::TracingMatchNotice::decode(payload)
                .expect("notice")
                .encode_to_vec(),
            other => panic!("{other:?} crossed before any confirmation"),
        };
        assert_eq!(
            exact,
            payload,
            "{:?} holds fields beyond its type",
            c.kind()
        );
    }

    // Both caseworkers review: Malawi's first, then Zambia's.
    let confirmed = mw
        .confirm_tracing_match(pb::ConfirmTracingMatchRequest {
            match_id: at_mw.match_id.clone(),
            confirm: true,
        })
        .await
        .expect("confirm at Malawi")
        .into_inner();
    assert!(confirmed.confirmed_here && confirmed.disclosure_message_id.is_empty());
    eventually("Zambia learns Malawi confirmed", || {
        let mut zm = zm.clone();
        async move { matches(&mut zm).await[0].confirmed_by_peer }
    })
    .await;
    // Still no disclosure: Zambia's caseworker has not confirmed.
    assert!(
        t.crossed()
            .iter()
            .all(|c| c.kind() != pb::MessageKind::TracingDisclosure)
    );
    let confirmed = zm
        .confirm_tracing_match(pb::ConfirmTracingMatchRequest {
            match_id: at_zm.match_id.clone(),
            confirm: true,
        })
        .await
        .expect("confirm at Zambia")
        .into_inner();
    assert_eq!(confirmed.state, pb::TracingMatchState::Confirmed as i32);
    assert!(!confirmed.disclosure_message_id.is_empty());

    // Each side receives the other's disclosure.
    for (name, client) in [("Malawi", &mut mw), ("Zambia", &mut zm)] {
        let mut c = client.clone();
        eventually(&format!("{name} holds the peer's disclosure"), || {
            let mut c = c.clone();
            async move { matches(&mut c).await[0].state == pb::TracingMatchState::Disclosed as i32 }
        })
        .await;
        let _ = matches(&mut c).await;
    }
    let at_mw = matches(&mut mw).await.remove(0);
    let from_zm = at_mw.disclosure.expect("Zambia's disclosure");
    let identity = from_zm.identity.as_ref().expect("identity");
    assert_eq!(identity.given_names, ["Amina"]);
    assert_eq!(identity.family_names, ["Yusuf", "Hassan"]);
    assert_eq!(identity.birth_date, "2014-03-02");
    assert!(identity.languages.is_empty());
    let location = from_zm.location.as_ref().expect("location");
    assert_eq!(location.place_of_separation, "Mwami border post");
    assert!(location.current_location.is_empty());
    let mother = &from_zm.family.as_ref().expect("family").members[0];
    assert_eq!(mother.names, ["Halima Hassan"]);
    assert!(mother.last_known_location.is_empty());
    let at_zm = matches(&mut zm).await.remove(0);
    let from_mw = at_zm.disclosure.expect("Malawi's disclosure");
    assert_eq!(
        from_mw.identity.as_ref().expect("identity").given_names,
        ["Aminah"]
    );

    // On the wire: exactly two disclosures, each exactly the agreed fields of its case.
    let disclosures: Vec<Crossed> = t
        .crossed()
        .into_iter()
        .filter(|c| c.kind() == pb::MessageKind::TracingDisclosure)
        .collect();
    assert_eq!(disclosures.len(), 2);
    for c in &disclosures {
        let d = pb::TracingDisclosure::decode(c.envelope.payload.as_slice()).expect("disclosure");
        assert_eq!(d.encode_to_vec(), c.envelope.payload, "unknown fields");
        check_disclosure(&d).expect("agreed fields only");
        let source = if c.to == "MW-DSW" {
            child_in_zambia()
        } else {
            family_request_in_malawi()
        };
        let agreed = kinbridge_core::family_tracing::agreed_fields(&source);
        assert_eq!(d.identity, agreed.identity);
        assert_eq!(d.location, agreed.location);
        assert_eq!(d.family, agreed.family);
        assert_eq!(c.header().purpose, pb::Purpose::FamilyTracing as i32);
    }
    for c in t.crossed() {
        let bytes = envelope_bytes(&c.envelope);
        for needle in NEVER {
            assert!(!contains(&bytes, needle), "{:?} holds '{needle}'", c.kind());
        }
    }

    // Every step is in each node's audit log, and no name is.
    for name in ["ZM-DSW", "MW-DSW"] {
        let node = t.fed.node(name);
        let out = t.fed.dir.path().join(format!("{name}-audit.export"));
        let export = export_and_verify(&t.fed.pki, name, node.local_addr, &out).await;
        let entries = entries(&export);
        assert_eq!(count(&entries, pb::AuditEvent::TracingRegistered), 1);
        assert_eq!(count(&entries, pb::AuditEvent::TracingMatched), 1);
        assert_eq!(count(&entries, pb::AuditEvent::TracingReviewed), 2);
        let audit_dir = t.fed.dir.path().join("data").join(name).join("audit");
        for needle in ["Amina", "Aminah", "Hassan", "2014-03-02"] {
            assert!(
                files_containing(&audit_dir, needle.as_bytes()).is_empty(),
                "{name}'s audit log holds '{needle}'"
            );
        }
    }
    t.stop().await;
}

/// Seals `payload` of `kind` from `from` to `to` as the sending node would, for a test that
/// plays a peer.
fn sealed(
    fed: &Federation,
    from: &str,
    to: &str,
    kind: pb::MessageKind,
    categories: Vec<pb::DataCategory>,
    payload: Vec<u8>,
) -> pb::Envelope {
    let mut d = draft(from, to);
    d.kind = kind;
    d.purpose = pb::Purpose::FamilyTracing;
    d.data_categories = categories;
    let mut consent = tracing_consent("MW-CONSENT-TRACE-4", &[to]);
    consent.categories = vec![
        pb::DataCategory::Identity as i32,
        pb::DataCategory::Family as i32,
        pb::DataCategory::Location as i32,
    ];
    d.consent_id = consent.consent_id.clone();
    d.consent = Some(consent);
    kinbridge_core::envelope::danger::seal_unchecked(&d, payload, &fed.signing_key(from)).into()
}

/// The status of a refusal receipt.
fn refusal_of(receipt: &pb::Receipt) -> (i32, String) {
    let body = pb::ReceiptBody::decode(receipt.body.as_slice()).expect("receipt body");
    (body.status, body.refusal_reason)
}

#[tokio::test]
async fn bad_tracing_messages_are_refused_and_the_node_keeps_serving() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut peer = fed.peer_client_as("ZM-DSW", "MW-DSW");
    let handle = kinbridge_core::family_tracing::random_handle;
    let query = |epoch: u32, bytes: usize| {
        pb::TracingQuery {
            handle: handle(),
            schema_id: kinbridge_linkage::SCHEMA.id.into(),
            key_epoch: epoch,
            encoding: vec![0x5a; bytes],
        }
        .encode_to_vec()
    };
    let identity = vec![pb::DataCategory::Identity];
    let cases = [
        // A query under a linkage key Zambia does not hold.
        (
            pb::MessageKind::TracingRequest,
            identity.clone(),
            query(7, 128),
            "linkage-epoch-unknown",
        ),
        // An encoding of another length than the schema's.
        (
            pb::MessageKind::TracingRequest,
            identity.clone(),
            query(1, 100),
            "bad-encoding",
        ),
        // A notice for a query Zambia never sent.
        (
            pb::MessageKind::TracingMatchNotice,
            Vec::new(),
            pb::TracingMatchNotice {
                query_handle: handle(),
                candidates: Vec::new(),
            }
            .encode_to_vec(),
            "unknown-tracing-query",
        ),
        // A disclosure for a match nobody confirmed (none exists).
        (
            pb::MessageKind::TracingDisclosure,
            identity.clone(),
            pb::TracingDisclosure {
                query_handle: handle(),
                candidate_handle: handle(),
                identity: Some(pb::IdentityData {
                    given_names: vec!["Someone".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_to_vec(),
            "unknown-tracing-match",
        ),
    ];
    for (kind, categories, payload, reason) in cases {
        let envelope = sealed(&fed, "MW-DSW", "ZM-DSW", kind, categories, payload);
        let receipt = peer
            .deliver(pb::DeliverRequest {
                envelope: Some(envelope),
            })
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: a signed refusal, not {e:?}"))
            .into_inner()
            .receipt
            .expect("receipt");
        assert_eq!(
            refusal_of(&receipt),
            (pb::ReceiptStatus::Refused as i32, reason.to_owned()),
            "{kind:?}"
        );
    }
    // A disclosure holding more than the agreed fields never reaches the tracing state.
    let beyond = pb::TracingDisclosure {
        query_handle: handle(),
        candidate_handle: handle(),
        location: Some(pb::LocationData {
            current_location: "somewhere".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let envelope = sealed(
        &fed,
        "MW-DSW",
        "ZM-DSW",
        pb::MessageKind::TracingDisclosure,
        vec![pb::DataCategory::Location],
        beyond.encode_to_vec(),
    );
    let status = peer
        .deliver(pb::DeliverRequest {
            envelope: Some(envelope),
        })
        .await
        .expect_err("malformed");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("agreed"), "{}", status.message());
    assert!(!status.message().contains("somewhere"));

    // Zambia still serves, and logged every refusal.
    let mut zm = TracingServiceClient::new(fed.channel("ZM-DSW", "caseworker"));
    register(
        &mut zm,
        pb::TracingCaseKind::Record,
        tracing_consent("ZM-CONSENT-TRACE-2", &["MW-DSW"]),
        child_in_zambia(),
    )
    .await;
    let out = fed.dir.path().join("zm-audit.export");
    let export = export_and_verify(&fed.pki, "ZM-DSW", fed.node("ZM-DSW").local_addr, &out).await;
    assert_eq!(count(&entries(&export), pb::AuditEvent::Refused), 5);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_withdrawn_record_is_purged_and_matches_no_later_query() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zm = TracingServiceClient::new(fed.channel("ZM-DSW", "caseworker"));
    let mut mw = TracingServiceClient::new(fed.channel("MW-DSW", "caseworker"));
    register(
        &mut zm,
        pb::TracingCaseKind::Record,
        tracing_consent("ZM-CONSENT-TRACE-3", &["MW-DSW"]),
        child_in_zambia(),
    )
    .await;
    let zm_data = fed.dir.path().join("data").join("ZM-DSW");
    assert!(!files_containing(&zm_data, b"Kalingalinga").is_empty());
    let withdrawn = fed
        .local("ZM-DSW", "caseworker")
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: "ZM-CONSENT-TRACE-3".into(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    assert_eq!(withdrawn.purged_here, 1);
    assert_eq!(withdrawn.notices.len(), 1);
    assert!(
        files_containing(&zm_data, b"Kalingalinga").is_empty(),
        "the case's data is gone from Zambia's disk"
    );

    // Malawi's query is answered, with no candidate.
    let request = register(
        &mut mw,
        pb::TracingCaseKind::Request,
        tracing_consent("MW-CONSENT-TRACE-5", &["ZM-DSW"]),
        family_request_in_malawi(),
    )
    .await;
    let mut mw_local = fed.local("MW-DSW", "caseworker");
    let query = wait_delivery(&mut mw_local, &request.queries[0].message_id).await;
    assert_eq!(query.state, pb::DeliveryState::Delivered as i32);
    eventually("Malawi receives Zambia's notice", || {
        let mut mw_local = mw_local.clone();
        async move {
            whole_inbox(&mut mw_local)
                .await
                .iter()
                .any(|i| i.kind == pb::MessageKind::TracingMatchNotice as i32)
        }
    })
    .await;
    assert!(matches(&mut mw).await.is_empty());
    fed.shutdown().await;
}

#[tokio::test]
async fn queries_use_a_new_linkage_key_only_from_its_date() {
    // Zambia already holds epoch 2 of the linkage key, for queries from tomorrow; Malawi holds
    // only epoch 1. Zambia's query goes under epoch 1, and matches.
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW"], |config| {
        if config.node_id.as_str() == "ZM-DSW" {
            let file = config.data_dir.with_extension("linkage-epoch-2.key");
            std::fs::create_dir_all(file.parent().expect("dir")).expect("dir");
            std::fs::write(&file, format!("{}\n", "ab".repeat(32))).expect("key");
            config
                .linkage_keys
                .push(kinbridge_node::config::LinkageKeyConfig {
                    epoch: 2,
                    file,
                    queries_from: Some(UnixMillis::now().plus_ms(86_400_000)),
                });
        }
    })
    .await;
    let mut zm = TracingServiceClient::new(fed.channel("ZM-DSW", "caseworker"));
    let mut mw = TracingServiceClient::new(fed.channel("MW-DSW", "caseworker"));
    register(
        &mut mw,
        pb::TracingCaseKind::Record,
        tracing_consent("MW-CONSENT-TRACE-6", &["ZM-DSW"]),
        family_request_in_malawi(),
    )
    .await;
    let request = register(
        &mut zm,
        pb::TracingCaseKind::Request,
        tracing_consent("ZM-CONSENT-TRACE-7", &["MW-DSW"]),
        child_in_zambia(),
    )
    .await;
    let mut zm_local = fed.local("ZM-DSW", "caseworker");
    let sent = wait_delivery(&mut zm_local, &request.queries[0].message_id).await;
    assert_eq!(
        sent.state,
        pb::DeliveryState::Delivered as i32,
        "{}",
        sent.last_error
    );
    let envelope = sent.envelope.expect("the query as sent");
    let query = pb::TracingQuery::decode(envelope.payload.as_slice()).expect("query");
    assert_eq!(query.key_epoch, 1);
    eventually("Zambia's request matches Malawi's record", || {
        let mut zm = zm.clone();
        async move { !matches(&mut zm).await.is_empty() }
    })
    .await;
    fed.shutdown().await;
}

#[tokio::test]
async fn a_query_answered_after_a_failed_notice_keeps_its_matches() {
    // Zambia's outbox holds one message at most, and one is stuck (to a peer that is down,
    // expiring in a second): the notice answering Malawi's query cannot be queued at first,
    // Malawi's node retries, and the retry is answered with the same match, not a second.
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW", "ZW-DSD"], |config| {
        if config.node_id.as_str() == "ZM-DSW" {
            config.max_queued = 1;
            for peer in &mut config.peers {
                if peer.node_id.as_str() == "ZW-DSD" {
                    peer.endpoint = Some("https://127.0.0.1:9".into());
                }
            }
        }
    })
    .await;
    let mut zm = TracingServiceClient::new(fed.channel("ZM-DSW", "caseworker"));
    let mut mw = TracingServiceClient::new(fed.channel("MW-DSW", "caseworker"));
    register(
        &mut zm,
        pb::TracingCaseKind::Record,
        tracing_consent("ZM-CONSENT-TRACE-8", &["MW-DSW"]),
        child_in_zambia(),
    )
    .await;
    let mut stuck = submit_request("ZW-DSD");
    stuck.ttl_seconds = 1;
    let mut zm_local = fed.local("ZM-DSW", "caseworker");
    zm_local.submit_referral(stuck).await.expect("queued");
    register(
        &mut mw,
        pb::TracingCaseKind::Request,
        tracing_consent("MW-CONSENT-TRACE-9", &["ZM-DSW"]),
        family_request_in_malawi(),
    )
    .await;
    eventually(
        "Malawi holds the match once Zambia's outbox has room",
        || {
            let mut mw = mw.clone();
            async move { !matches(&mut mw).await.is_empty() }
        },
    )
    .await;
    assert_eq!(matches(&mut mw).await.len(), 1);
    assert_eq!(matches(&mut zm).await.len(), 1);
    fed.shutdown().await;
}

/// A registration whose consent could never let a record match is refused, naming what is
/// missing (the proto field and the CLI flag), with an audit entry naming the consent; it is
/// not registered to match nothing. Completed, the same record registers.
#[tokio::test]
async fn a_registration_that_could_never_match_is_refused_naming_what_is_missing() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zm = TracingServiceClient::new(fed.channel("ZM-DSW", "caseworker"));
    let attempt = |consent: pb::ConsentScope| pb::RegisterTracingCaseRequest {
        kind: pb::TracingCaseKind::Record as i32,
        consent: Some(consent),
        case: Some(child_in_zambia()),
        peers: Vec::new(),
        ttl_seconds: 0,
    };
    let mut bid = tracing_consent("ZM-BID-3", &["MW-DSW"]);
    bid.given_by = pb::ConsentGiver::BestInterestsDetermination as i32;
    let status = zm
        .register_tracing_case(attempt(bid.clone()))
        .await
        .expect_err("no authority");
    assert_eq!(
        refusal(&status),
        (
            tonic::Code::InvalidArgument,
            "best-interests-without-authority".into()
        )
    );
    for needle in ["determining_authority", "--bid-authority"] {
        assert!(status.message().contains(needle), "{}", status.message());
    }
    bid.determining_authority = "Chipata District BID Committee".into();
    let status = zm
        .register_tracing_case(attempt(bid.clone()))
        .await
        .expect_err("no legal basis");
    assert_eq!(
        refusal(&status),
        (
            tonic::Code::InvalidArgument,
            "best-interests-without-legal-basis".into()
        )
    );
    assert!(
        status.message().contains("--legal-basis"),
        "{}",
        status.message()
    );
    let status = zm
        .register_tracing_case(attempt(tracing_consent("ZM-TRACE-5", &[])))
        .await
        .expect_err("no recipient");
    assert_eq!(
        refusal(&status),
        (tonic::Code::InvalidArgument, "no-recipients".into())
    );
    let mut expired = tracing_consent("ZM-TRACE-6", &["MW-DSW"]);
    expired.expires_at_ms = UnixMillis::now().plus_ms(-1000).0;
    let status = zm
        .register_tracing_case(attempt(expired))
        .await
        .expect_err("expired");
    assert_eq!(refusal(&status).1, "consent-expired");

    bid.legal_basis = "Children's Code Act 2022, s. 12".into();
    zm.register_tracing_case(attempt(bid))
        .await
        .expect("a complete best-interests determination registers");

    let out = fed.dir.path().join("zm-tracing.jsonl");
    let export = export_and_verify(&fed.pki, "ZM-DSW", fed.node("ZM-DSW").local_addr, &out).await;
    let log = entries(&export);
    let refused = log
        .iter()
        .find(|e| {
            e.event == pb::AuditEvent::Refused as i32
                && e.reason == "best-interests-without-authority"
        })
        .expect("the refusal is audited");
    assert_eq!(refused.consent_id, "ZM-BID-3");
    assert_eq!(refused.purpose, pb::Purpose::FamilyTracing as i32);
    assert_eq!(count(&log, pb::AuditEvent::TracingRegistered), 1);
    fed.shutdown().await;
}

/// A record whose consent expired after it was registered is not reported to a peer whose
/// query resembles it, and the node says so (a WARN and the refusal metric), not silently.
#[tokio::test]
async fn a_record_whose_consent_expired_is_not_reported_and_is_counted() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zm = TracingServiceClient::new(fed.channel("ZM-DSW", "caseworker"));
    let mut mw = TracingServiceClient::new(fed.channel("MW-DSW", "caseworker"));
    let mut consent = tracing_consent("ZM-TRACE-7", &["MW-DSW"]);
    let expires = UnixMillis::now().plus_ms(1500).0;
    consent.expires_at_ms = expires;
    register(
        &mut zm,
        pb::TracingCaseKind::Record,
        consent,
        child_in_zambia(),
    )
    .await;
    eventually("the record's consent has expired", || async move {
        UnixMillis::now().0 > expires
    })
    .await;
    let request = register(
        &mut mw,
        pb::TracingCaseKind::Request,
        tracing_consent("MW-TRACE-8", &["ZM-DSW"]),
        family_request_in_malawi(),
    )
    .await;
    assert_eq!(request.queries.len(), 1);
    let fed_ref = &fed;
    eventually(
        "Zambia counts the record it did not report",
        || async move {
            fed_ref
                .refusals_metric("ZM-DSW", "tracing", "consent-expired")
                .await
                >= 1.0
        },
    )
    .await;
    assert!(matches(&mut zm).await.is_empty());
    assert!(matches(&mut mw).await.is_empty());
    fed.shutdown().await;
}
