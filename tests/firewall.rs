//! The firewall holds on every path, whatever the spelling: every method of every service on
//! the local port, taken from the descriptors, as an enforcement-tagged client; tags in any
//! case in certificates and configs, unknown ones refused by name; state-only status updates
//! to an enforcement sender; `kinbridge send` and `kinbridge dev-certs client` for officers.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kinbridge_proto::v1 as pb;
use prost::Message;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Thailand's immigration police: an enforcement authority in the federation.
const ENFORCEMENT: &str = "TH-IMM";

/// The methods an enforcement-tagged local client may call: submitting (referring a child to
/// child protection), health, reflection, and the log's checkpoints and proofs (hashes only).
/// Every other method, including any added later, must answer PERMISSION_DENIED `firewall`.
const ENFORCEMENT_MAY_CALL: [&str; 8] = [
    "/kinbridge.v1.LocalService/SubmitReferral",
    "/kinbridge.v1.AuditService/GetCheckpoint",
    "/kinbridge.v1.AuditService/GetInclusionProof",
    "/kinbridge.v1.AuditService/GetConsistencyProof",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Every method of every service in the descriptors the node serves from, as a gRPC path.
fn every_method() -> Vec<String> {
    let mut paths = Vec::new();
    for set in [
        kinbridge_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set).expect("descriptor set");
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    // Reflection's descriptors are not in these sets; it is served all the same.
    paths.push("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".into());
    paths.push("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".into());
    paths
}

/// Calls `path` with one empty request message (valid for every proto3 message), as a
/// stream, which serves unary and streaming methods alike; the refusal if any.
async fn call_raw(channel: &Channel, path: &str) -> Option<tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let call = async {
        grpc.ready().await.expect("channel ready");
        grpc.streaming(
            tonic::Request::new(futures::stream::iter(vec![()])),
            PathAndQuery::try_from(path.to_owned()).expect("path"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
    };
    tokio::time::timeout(WAIT, call)
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within {WAIT:?}"))
        .err()
}

/// Issues a client certificate of `node`'s local CA carrying `tags` exactly as written.
fn tagged_client(fed: &Federation, node: &str, name: &str, tags: &[&str]) -> (PathBuf, PathBuf) {
    let dir = fed.dir.path().join("tagged");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    kinbridge_node::devpki::issue_local_client(
        &fed.pki,
        &node_id(node),
        name,
        "system",
        None,
        tags,
        &cert,
        &key,
    )
    .expect("issue");
    (cert, key)
}

fn channel_with(fed: &Federation, node: &str, cert: &Path, key: &Path) -> Channel {
    kinbridge_grpc::client::local_channel(
        &fed.node(node).local_addr.to_string(),
        &fed.files(node).ca_cert(),
        cert,
        key,
    )
    .expect("channel")
}

async fn refusals_logged(fed: &Federation, node: &str, file: &str) -> Vec<pb::AuditEntry> {
    let export = export_and_verify(
        &fed.pki,
        node,
        fed.node(node).local_addr,
        &fed.dir.path().join(file),
    )
    .await;
    entries(&export)
        .into_iter()
        .filter(|e| e.event == pb::AuditEvent::Refused as i32)
        .collect()
}

#[tokio::test]
async fn an_enforcement_client_is_refused_every_method_that_is_not_submit_or_metadata() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    // Something in Malawi's inbox, so a read would have something to return.
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 1).await;
    // A border police terminal linked to Malawi's node, its tag in capitals.
    let (cert, key) = tagged_client(
        &fed,
        "MW-DSW",
        "border-police-1",
        &["IMMIGRATION-ENFORCEMENT"],
    );
    let police = channel_with(&fed, "MW-DSW", &cert, &key);

    let methods = every_method();
    for must in [
        "/kinbridge.v1.TracingService/ListTracingMatches",
        "/kinbridge.v1.TracingService/ConfirmTracingMatch",
        "/kinbridge.v1.AuditService/ExportLog",
        "/kinbridge.v1.LocalService/GetReferralStatus",
        "/kinbridge.v1.ReportingService/GetStatistics",
    ] {
        assert!(methods.iter().any(|m| m == must), "{must} not enumerated");
    }
    for service in kinbridge_grpc::LOCAL_SERVICES {
        assert!(
            methods
                .iter()
                .any(|m| m.starts_with(&format!("/{service}/"))),
            "the local service {service} has no enumerated method"
        );
    }
    let mut refused = 0;
    let mut refused_paths = Vec::new();
    for path in &methods {
        let status = call_raw(&police, path).await;
        if ENFORCEMENT_MAY_CALL.contains(&path.as_str()) {
            if let Some(status) = &status {
                assert_ne!(refusal(status).1, "firewall", "{path}: {status:?}");
            }
        } else {
            let status = status.unwrap_or_else(|| panic!("{path}: answered an enforcement client"));
            assert_eq!(
                refusal(&status),
                (Code::PermissionDenied, "firewall".into()),
                "{path}: {status:?}"
            );
            assert!(
                status.message().contains("immigration-enforcement")
                    && !status.message().starts_with("firewall"),
                "{path}: {}",
                status.message()
            );
            refused += 1;
            refused_paths.push(path.clone());
        }
    }
    assert!(refused >= 20, "only {refused} methods refused");
    // It may still refer a child to child protection.
    let mut police_local =
        kinbridge_proto::v1::local_service_client::LocalServiceClient::new(police.clone());
    police_local
        .submit_referral(submit_request("ZM-DSW"))
        .await
        .expect("an enforcement client may refer a child");
    // Each refusal is in Malawi's audit log, under the client's name.
    let logged = refusals_logged(&fed, "MW-DSW", "mw.jsonl").await;
    let firewall = logged
        .iter()
        .filter(|e| e.reason == "firewall" && e.actor == "border-police-1")
        .count();
    assert_eq!(firewall, refused, "{logged:?}");
    // Each entry names the method refused, so an auditor sees what was tried.
    let mut logged_paths: Vec<String> = logged
        .iter()
        .filter(|e| e.reason == "firewall" && e.actor == "border-police-1")
        .map(|e| e.method.clone())
        .collect();
    logged_paths.sort();
    refused_paths.sort();
    assert_eq!(logged_paths, refused_paths);
    // A refusal by a service (its role may not read proofs) names the method too.
    let by_role: Vec<_> = logged
        .iter()
        .filter(|e| e.reason == "role-denied" && e.actor == "border-police-1")
        .collect();
    assert!(!by_role.is_empty(), "{logged:?}");
    for e in by_role {
        assert!(
            e.method.starts_with("/kinbridge.v1.AuditService/Get"),
            "{e:?}"
        );
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn a_certificate_with_an_unknown_tag_reaches_nothing_and_is_told_why() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let (cert, key) = tagged_client(
        &fed,
        "MW-DSW",
        "border-police-2",
        &["immigration-enforcment"],
    );
    let typo = channel_with(&fed, "MW-DSW", &cert, &key);
    for path in [
        "/kinbridge.v1.LocalService/ListInbox",
        "/kinbridge.v1.TracingService/ListTracingMatches",
        "/kinbridge.v1.LocalService/SubmitReferral",
    ] {
        let status = call_raw(&typo, path).await.expect("refused");
        assert_eq!(
            refusal(&status),
            (Code::Unauthenticated, "not-a-client-certificate".into()),
            "{path}: {status:?}"
        );
        assert!(
            status.message().contains("'immigration-enforcment'")
                && status.message().contains("immigration-enforcement"),
            "{}",
            status.message()
        );
    }
    // Health still answers: it says nothing about any case.
    assert!(
        call_raw(&typo, "/grpc.health.v1.Health/Check")
            .await
            .is_none()
    );
    let logged = refusals_logged(&fed, "MW-DSW", "mw.jsonl").await;
    // Audited under the name the local CA issued the certificate to.
    assert!(
        logged
            .iter()
            .filter(|e| e.reason == "not-a-client-certificate")
            .all(|e| e.actor == "border-police-2"),
        "{logged:?}"
    );
    assert_eq!(
        logged
            .iter()
            .filter(|e| e.reason == "not-a-client-certificate")
            .count(),
        3,
        "{logged:?}"
    );
    fed.shutdown().await;
}

/// Every node knows TH-IMM as immigration enforcement, and TH-IMM knows itself as such.
fn tag_enforcement(config: &mut kinbridge_node::NodeConfig) {
    let enforcement = vec![kinbridge_core::firewall::Tag::ImmigrationEnforcement];
    for peer in &mut config.peers {
        if peer.node_id.as_str() == ENFORCEMENT {
            peer.tags = enforcement.clone();
        }
    }
    if config.node_id.as_str() == ENFORCEMENT {
        config.tags = enforcement;
    }
}

fn update(sequence: u64, state: pb::ReferralState, code: &str) -> pb::UpdateReferralStatusRequest {
    pb::UpdateReferralStatusRequest {
        sequence,
        state: state as i32,
        code: code.into(),
    }
}

#[tokio::test]
async fn an_enforcement_sender_learns_the_state_of_its_referral_never_the_outcome() {
    let fed = Federation::start_with(&["ZM-DSW", "MW-DSW", ENFORCEMENT], tag_enforcement).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let mut police = fed.local(ENFORCEMENT, "caseworker");
    let mut malawi = fed.local("MW-DSW", "caseworker");
    // The immigration police hand a child to Zambia's child protection; so does Malawi.
    let from_police = submit_delivered(&mut police, submit_request("ZM-DSW")).await;
    let from_malawi = submit_delivered(&mut malawi, submit_request("ZM-DSW")).await;
    let items = open_inbox(&mut zambia).await;
    let seq = |id: &str| {
        items
            .iter()
            .find(|i| i.message_id == id)
            .map(|i| i.sequence)
            .expect("in Zambia's inbox")
    };
    const OUTCOME: &str = "placed-with-aunt-in-mae-sot";
    for id in [&from_police, &from_malawi] {
        for (state, code) in [
            (pb::ReferralState::Accepted, ""),
            (pb::ReferralState::InProgress, ""),
            (pb::ReferralState::Closed, OUTCOME),
        ] {
            let update_id = zambia
                .update_referral_status(update(seq(id), state, code))
                .await
                .expect("update")
                .into_inner()
                .message_id;
            assert_eq!(
                wait_delivery(&mut zambia, &update_id).await.state,
                pb::DeliveryState::Delivered as i32
            );
        }
    }
    let history = |status: pb::GetReferralStatusResponse| -> Vec<(i32, String)> {
        status
            .history
            .into_iter()
            .map(|c| (c.state, c.code))
            .collect()
    };
    let closed = |code: &str| {
        vec![
            (pb::ReferralState::Received as i32, String::new()),
            (pb::ReferralState::Accepted as i32, String::new()),
            (pb::ReferralState::InProgress as i32, String::new()),
            (pb::ReferralState::Closed as i32, code.to_owned()),
        ]
    };
    // The police node holds the states, without the outcome.
    let at_police = police
        .get_referral_status(pb::GetReferralStatusRequest {
            referral_id: from_police.clone(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(history(at_police), closed(""));
    // Child protection in Malawi hears the outcome, and Zambia keeps it for itself.
    let at_malawi = malawi
        .get_referral_status(pb::GetReferralStatusRequest {
            referral_id: from_malawi,
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(history(at_malawi), closed(OUTCOME));
    let at_zambia = zambia
        .get_referral_status(pb::GetReferralStatusRequest {
            referral_id: from_police,
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(history(at_zambia), closed(OUTCOME));
    // Nowhere in the police node's store, inbox, payloads or audit log.
    let police_data = fed.dir.path().join("data").join(ENFORCEMENT);
    assert!(files_containing(&police_data, b"mae-sot").is_empty());
    let malawi_data = fed.dir.path().join("data").join("MW-DSW");
    assert!(!files_containing(&malawi_data, b"mae-sot").is_empty());
    fed.shutdown().await;
}

/// Runs a command to completion, bounded by `WAIT`.

// Multi-threaded: the CLI process is waited for on one thread while the nodes serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_sends_with_a_dev_certs_client_and_is_told_it_was_sent() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let out_dir = fed.dir.path().join("officers");
    let dev_certs = |tag: &str| {
        let mut cmd = kinbridge();
        cmd.args([
            "dev-certs",
            "client",
            "--node",
            "MW-DSW",
            "--name",
            "officer1",
        ])
        .args(["--role", "system", "--unit", "mwanza-border", "--tag", tag])
        .arg("--pki")
        .arg(&fed.pki)
        .arg("--out")
        .arg(&out_dir);
        run_bounded(cmd)
    };
    // A misspelt tag is refused by name; nothing is issued.
    let typo = dev_certs("immigration-enforcment");
    assert!(!typo.status.success());
    assert!(
        text(&typo.stderr).contains("'immigration-enforcment'"),
        "{}",
        text(&typo.stderr)
    );
    assert!(!out_dir.join("officer1.crt").exists());
    let made = dev_certs("Immigration-Enforcement");
    assert!(made.status.success(), "{}", text(&made.stderr));
    assert!(text(&made.stdout).contains("tags immigration-enforcement"));
    // The certificate says what the node reads.
    let certs = kinbridge_grpc::tls::load_certs(&out_dir.join("officer1.crt")).expect("cert");
    let client = kinbridge_service::identity::local_client_of(&certs[0]).expect("a valid client");
    assert_eq!(client.name, "officer1");
    assert_eq!(client.unit_str(), "mwanza-border");
    assert_eq!(
        client.tags,
        vec![kinbridge_core::firewall::Tag::ImmigrationEnforcement]
    );

    // The officer's CLI: Malawi's config with the officer's certificate as its [client].
    let files = fed.files("MW-DSW");
    let toml = dev_config_toml(
        &fed.pki,
        "MW-DSW",
        &fed.dir.path().join("unused"),
        &[("ZM-DSW", None)],
    )
    .replace(
        &files.client_cert("caseworker").display().to_string(),
        &out_dir.join("officer1.crt").display().to_string(),
    )
    .replace(
        &files.client_key("caseworker").display().to_string(),
        &out_dir.join("officer1.key").display().to_string(),
    );
    let config = fed.dir.path().join("officer.toml");
    std::fs::write(&config, toml).expect("config");
    let mut send = kinbridge();
    send.args(["send", "--to", "ZM-DSW", "--consent", "TH-POLICE-1"])
        .args([
            "--given-by",
            "best-interests",
            "--bid-authority",
            "Mwanza border committee",
        ])
        .args([
            "--legal-basis",
            "Child Care, Protection and Justice Act 2010",
        ])
        .args([
            "--case-ref",
            "MW-POL-9",
            "--migratory-status",
            "unaccompanied",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--node")
        .arg(fed.node("MW-DSW").local_addr.to_string());
    let out = run_bounded(send);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("delivery status is not shown to enforcement clients"),
        "{stdout}"
    );
    let message_id = stdout.split_whitespace().nth(1).expect("id").to_owned();
    // And the referral reaches Zambia's child protection, once.
    let zambia = fed.local("ZM-DSW", "caseworker");
    eventually("the officer's referral in Zambia's inbox", || {
        let mut zambia = zambia.clone();
        let message_id = message_id.clone();
        async move {
            let items = open_inbox(&mut zambia).await;
            items.len() == 1 && items[0].message_id == message_id
        }
    })
    .await;
    fed.shutdown().await;
}

#[test]
fn config_check_shows_normalised_tags_and_refuses_an_unknown_one_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("certs-dev");
    kinbridge_node::devpki::ensure(&pki, &[node_id("ZM-DSW"), node_id(ENFORCEMENT)]).expect("pki");
    let toml = dev_config_toml(
        &pki,
        "ZM-DSW",
        &dir.path().join("data"),
        &[(ENFORCEMENT, None)],
    );
    let check = |tags: &str| {
        let path = dir.path().join("zm.toml");
        std::fs::write(
            &path,
            toml.replace("tags = [\"child-protection\"]", &format!("tags = [{tags}]")),
        )
        .expect("config");
        let mut cmd = kinbridge();
        cmd.args(["config", "check", "--config"]).arg(&path);
        (run_bounded(cmd), path)
    };
    let (out, _) = check("\"Immigration-Enforcement\"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "peer {ENFORCEMENT}: tags [immigration-enforcement] (immigration enforcement"
        )),
        "{stdout}"
    );
    let (out, path) = check("\"child-protection\", \"IMMIGRATION_ENFORCMENT\"");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&path.display().to_string())
            && stderr.contains("peers[0].tags[1]")
            && stderr.contains("'IMMIGRATION_ENFORCMENT'"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_enforcement_client_cannot_scrape_the_metrics() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 1).await;
    let files = fed.files("MW-DSW");
    let addr = fed.node("MW-DSW").metrics_addr.expect("metrics listener");
    // A monitoring role, as Prometheus would use, but tagged enforcement (any spelling).
    let (cert, key) = tagged_client(
        &fed,
        "MW-DSW",
        "border-monitor",
        &["Immigration_Enforcement"],
    );
    let (code, body) =
        kinbridge_node::metrics::scrape(addr, &files.ca_cert(), &cert, &key, "/metrics")
            .await
            .expect("an answer");
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("border-monitor")
            && body.contains("immigration-enforcement")
            && !body.contains("kinbridge_messages_total"),
        "{body}"
    );
    // The same role without the tag reads them.
    let (cert, key) = tagged_client(&fed, "MW-DSW", "monitor", &["child-protection"]);
    let (code, body) =
        kinbridge_node::metrics::scrape(addr, &files.ca_cert(), &cert, &key, "/metrics")
            .await
            .expect("an answer");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("kinbridge_messages_total"), "{body}");
    fed.shutdown().await;
}
