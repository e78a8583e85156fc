//! Reporting: a generated population of referrals between two real nodes; the counts each
//! node reports are exact where published, small ones are withheld with their complements, no
//! identifier appears in any output (gRPC, table, CSV, JSON), and the counts agree with each
//! node's audit log.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use kinbridge_core::UnixMillis;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::reporting_service_client::ReportingServiceClient;

/// One generated referral: what the test expects the node to count.
#[derive(Clone)]
struct Case {
    from: &'static str,
    to: &'static str,
    age_band: &'static str,
    sex: &'static str,
    status: &'static str,
    purpose: &'static str,
    outcome: String,
}

fn population() -> Vec<(Case, pb::SubmitReferralRequest)> {
    let mut s: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |below: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % below
    };
    let (year, _, _) = kinbridge_core::reporting::civil(UnixMillis::now().0);
    let mut out = Vec::new();
    for i in 0..110 {
        let (from, to) = if i < 80 {
            ("ZM-DSW", "MW-DSW")
        } else {
            ("MW-DSW", "ZM-DSW")
        };
        // Ages mostly 5-11 and 15-17, a few 0-4: small cells on purpose.
        let (age, age_band) = match next(10) {
            0 => (2, "0-4"),
            1..=5 => (8, "5-11"),
            _ => (16, "15-17"),
        };
        let (sex, sex_name) = if next(2) == 0 {
            (pb::Sex::Female, "female")
        } else {
            (pb::Sex::Male, "male")
        };
        let (status, status_name) = match next(7) {
            0 => (pb::MigratoryStatus::LeftBehind, "left-behind"),
            1..=3 => (pb::MigratoryStatus::Unaccompanied, "unaccompanied"),
            _ => (pb::MigratoryStatus::Separated, "separated"),
        };
        let (purpose, purpose_name) = if next(5) == 0 {
            (pb::Purpose::FamilyReunification, "family-reunification")
        } else {
            (pb::Purpose::ServiceReferral, "service-referral")
        };
        let now = UnixMillis::now();
        let request = pb::SubmitReferralRequest {
            kind: pb::MessageKind::Referral as i32,
            recipient: to.into(),
            purpose: purpose as i32,
            consent: Some(pb::ConsentScope {
                consent_id: format!("CONSENT-ID-{i:04}"),
                given_by: pb::ConsentGiver::Guardian as i32,
                purposes: vec![
                    pb::Purpose::ServiceReferral as i32,
                    pb::Purpose::FamilyReunification as i32,
                ],
                categories: vec![
                    pb::DataCategory::Identity as i32,
                    pb::DataCategory::ProtectionConcerns as i32,
                ],
                recipients: vec![to.into()],
                valid_from_ms: now.plus_ms(-60_000).0,
                expires_at_ms: now.plus_ms(86_400_000).0,
                ..Default::default()
            }),
            correlation_id: format!("CORRELATION-{i:04}"),
            ttl_seconds: 3600,
            referral: Some(pb::ReferralPayload {
                case_reference: format!("CASE-REF-{i:04}"),
                identity: Some(pb::IdentityData {
                    given_names: vec![format!("Childname{i:04}")],
                    sex: sex as i32,
                    birth_date: format!("{}-01-01", year - age),
                    ..Default::default()
                }),
                protection_concerns: Some(pb::ProtectionConcerns {
                    migratory_status: status as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            recipient_unit: String::new(),
        };
        let case = Case {
            from,
            to,
            age_band,
            sex: sex_name,
            status: status_name,
            purpose: purpose_name,
            outcome: "received".into(),
        };
        out.push((case, request));
    }
    out
}

fn value<'a>(c: &'a Case, dimension: &str) -> &'a str {
    match dimension {
        "age_band" => c.age_band,
        "sex" => c.sex,
        "migratory_status" => c.status,
        "purpose" => c.purpose,
        "outcome" => &c.outcome,
        _ => unreachable!("{dimension}"),
    }
}

async fn statistics(fed: &Federation, node: &str, group_by: &[&str]) -> pb::GetStatisticsResponse {
    ReportingServiceClient::new(fed.channel(node, "auditor"))
        .get_statistics(pb::GetStatisticsRequest {
            group_by: group_by.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        })
        .await
        .expect("statistics")
        .into_inner()
}

/// The entry of `table` with `values`.
fn entry<'a>(table: &'a pb::GetStatisticsResponse, values: &[&str]) -> &'a pb::StatisticsEntry {
    table
        .entries
        .iter()
        .find(|e| e.values == values)
        .unwrap_or_else(|| panic!("no entry {values:?}"))
}

/// Checks a table against the cases `node` sent or received.
fn check(table: &pb::GetStatisticsResponse, cases: &[Case], node: &str) -> usize {
    let mine: Vec<&Case> = cases
        .iter()
        .filter(|c| c.from == node || c.to == node)
        .collect();
    let mut published = 0;
    for e in &table.entries {
        let truth = mine
            .iter()
            .filter(|c| {
                table.group_by.iter().zip(&e.values).all(|(d, v)| {
                    v.is_empty()
                        || match d.as_str() {
                            "route" => *v == format!("{} → {}", c.from, c.to),
                            "month" => true,
                            _ => value(c, d) == v,
                        }
                })
            })
            .count() as u64;
        if e.withheld {
            assert!(truth > 0, "a zero is never withheld: {e:?}");
        } else {
            assert_eq!(e.count, truth, "{:?} at {node}", e.values);
            published += 1;
        }
        if (1..5).contains(&truth) {
            assert!(e.withheld, "{:?}: {truth} is below 5 and shown", e.values);
        }
    }
    // Along every line (one dimension varying, the others fixed, with its total), a withheld
    // entry never stands alone: it cannot be worked out from the line's total.
    for (d, _) in table.group_by.iter().enumerate() {
        let mut lines: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        for e in &table.entries {
            let mut fixed = e.values.clone();
            fixed[d] = "*".into();
            *lines.entry(fixed).or_default() += usize::from(e.withheld);
        }
        for (line, withheld) in lines {
            assert_ne!(withheld, 1, "line {line:?} has one withheld entry");
        }
    }
    published
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_small_ones_withheld_no_identifier_shown_and_agree_with_the_audit_log() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut cases = Vec::new();
    let mut ids = Vec::new();
    for (case, request) in population() {
        let mut client = fed.local(case.from, "caseworker");
        let id = submit_delivered(&mut client, request).await;
        ids.push(id);
        cases.push(case);
    }
    // Malawi's caseworker accepts a third of what it received and declines a tenth.
    let mut mw = fed.local("MW-DSW", "caseworker");
    let inbox = whole_inbox(&mut mw).await;
    assert_eq!(inbox.len(), 80);
    let mut updates = Vec::new();
    for (n, item) in inbox.iter().enumerate() {
        let (state, code, outcome) = match n % 10 {
            0..=2 => (pb::ReferralState::Accepted, "", "accepted"),
            3 => (
                pb::ReferralState::Declined,
                "no-capacity",
                "declined:no-capacity",
            ),
            _ => continue,
        };
        let update = mw
            .update_referral_status(pb::UpdateReferralStatusRequest {
                sequence: item.sequence,
                state: state as i32,
                code: code.into(),
            })
            .await
            .expect("status update")
            .into_inner();
        updates.push(update.message_id);
        let at = ids
            .iter()
            .position(|id| *id == item.message_id)
            .expect("case");
        cases[at].outcome = outcome.into();
    }
    for id in &updates {
        let d = wait_delivery(&mut mw, id).await;
        assert_eq!(d.state, pb::DeliveryState::Delivered as i32);
    }

    // Every grouping the issue names, at both ends.
    let groupings: [&[&str]; 5] = [
        &["route", "sex"],
        &["age_band", "migratory_status"],
        &["purpose", "outcome"],
        &["route", "age_band", "sex"],
        &[],
    ];
    let mut published = 0;
    let mut withheld = 0;
    for node in ["ZM-DSW", "MW-DSW"] {
        for group_by in groupings {
            let table = statistics(&fed, node, group_by).await;
            assert_eq!(table.threshold, 5);
            published += check(&table, &cases, node);
            withheld += table.entries.iter().filter(|e| e.withheld).count();
        }
    }
    assert!(
        published > 40 && withheld > 5,
        "{published} published, {withheld} withheld"
    );

    // No identifier in any output: not over gRPC, not printed as a table, CSV or JSON.
    let pki = fed.pki.clone();
    let files = fed.files("ZM-DSW");
    let config = fed.dir.path().join("zm.toml");
    std::fs::write(
        &config,
        dev_config_toml(
            &pki,
            "ZM-DSW",
            &fed.dir.path().join("cli"),
            &[("MW-DSW", None)],
        ),
    )
    .expect("config");
    let mut outputs = Vec::new();
    for format in ["table", "csv", "json"] {
        let mut cmd = kinbridge();
        cmd.args([
            "stats",
            "--by",
            "route,age_band,sex,migratory_status,purpose,month,outcome",
        ])
        .args(["--format", format])
        .arg("--config")
        .arg(&config)
        .arg("--node")
        .arg(fed.node("ZM-DSW").local_addr.to_string())
        .arg("--cert")
        .arg(files.client_cert("auditor"))
        .arg("--key")
        .arg(files.client_key("auditor"));
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("task")
            .expect("run kinbridge stats");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shows_withheld = match format {
            "json" => stdout.contains("\"withheld\":true"),
            "csv" => stdout.contains(",x\n"),
            _ => stdout.contains("  x\n"),
        };
        assert!(shows_withheld, "{format}: no withheld count shown");
        outputs.push(stdout);
    }
    let json: serde_json::Value = serde_json::from_str(&outputs[2]).expect("json");
    assert_eq!(json["node"], "ZM-DSW");
    let table = statistics(&fed, "ZM-DSW", &["route", "purpose", "outcome"]).await;
    outputs.push(format!("{table:?}"));
    for output in &outputs {
        for needle in ["Childname", "CASE-REF", "CONSENT-ID", "CORRELATION"] {
            assert!(!output.contains(needle), "'{needle}' in an output");
        }
        for id in &ids {
            assert!(!output.contains(id.as_str()), "a message id in an output");
        }
    }

    // The counts agree with each node's audit log: every referral submitted at Zambia is a
    // `submitted` entry there, every referral received at Malawi a `received` entry.
    for (node, event) in [
        ("ZM-DSW", pb::AuditEvent::Submitted),
        ("MW-DSW", pb::AuditEvent::Received),
    ] {
        let out = fed.dir.path().join(format!("{node}.export"));
        let export = export_and_verify(&fed.pki, node, fed.node(node).local_addr, &out).await;
        let mut logged: BTreeMap<(String, String), u64> = BTreeMap::new();
        for e in entries(&export) {
            if e.event == event as i32 && e.kind == pb::MessageKind::Referral as i32 {
                let purpose = pb::Purpose::try_from(e.purpose)
                    .expect("purpose")
                    .as_str_name()
                    .trim_start_matches("PURPOSE_")
                    .to_ascii_lowercase()
                    .replace('_', "-");
                *logged
                    .entry((format!("{} → {}", e.sender, e.recipient), purpose))
                    .or_default() += 1;
            }
        }
        let table = statistics(&fed, node, &["route", "purpose"]).await;
        let mut compared = BTreeSet::new();
        for e in table.entries.iter().filter(|e| !e.withheld) {
            let (route, purpose) = (&e.values[0], &e.values[1]);
            if route.is_empty() || purpose.is_empty() {
                continue;
            }
            let in_log = logged
                .get(&(route.clone(), purpose.clone()))
                .copied()
                .unwrap_or(0);
            let sent_here = route.starts_with(node);
            if (event == pb::AuditEvent::Submitted) == sent_here {
                assert_eq!(e.count, in_log, "{node} {route} {purpose}");
                compared.insert((route.clone(), purpose.clone()));
            }
        }
        assert!(!compared.is_empty(), "{node}: nothing compared");
    }
    fed.shutdown().await;
}

#[tokio::test]
async fn statistics_are_for_auditors_and_admins_and_bad_requests_are_refused() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let ask = |role: &str, group_by: &[&str], threshold: u32| {
        let mut client = ReportingServiceClient::new(fed.channel("ZM-DSW", role));
        let request = pb::GetStatisticsRequest {
            group_by: group_by.iter().map(|d| (*d).to_owned()).collect(),
            threshold,
            ..Default::default()
        };
        async move { client.get_statistics(request).await }
    };
    let denied = ask("caseworker", &["sex"], 0)
        .await
        .expect_err("caseworker");
    assert_eq!(
        refusal(&denied),
        (tonic::Code::PermissionDenied, "role-denied".into())
    );
    assert!(ask("admin", &["sex"], 0).await.is_ok());
    let cases = [
        (&["name"][..], 0, "bad-dimension"),
        (&["sex", "sex"][..], 0, "bad-grouping"),
        (&["sex"][..], 3, "threshold-too-low"),
    ];
    for (group_by, threshold, reason) in cases {
        let status = ask("auditor", group_by, threshold).await.expect_err(reason);
        assert_eq!(
            refusal(&status),
            (tonic::Code::InvalidArgument, reason.to_owned())
        );
    }
    // A higher threshold is allowed; an empty node reports a zero total.
    let table = ask("auditor", &[], 10).await.expect("table").into_inner();
    assert_eq!(table.threshold, 10);
    assert_eq!(table.entries.len(), 1);
    assert_eq!(
        (table.entries[0].count, table.entries[0].withheld),
        (0, false)
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn tracing_queries_count_with_their_request_s_dimensions_at_the_sender() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut mw = kinbridge_proto::v1::tracing_service_client::TracingServiceClient::new(
        fed.channel("MW-DSW", "caseworker"),
    );
    let (year, _, _) = kinbridge_core::reporting::civil(UnixMillis::now().0);
    let mut queries = Vec::new();
    for i in 0..5 {
        let now = UnixMillis::now();
        let registered = mw
            .register_tracing_case(pb::RegisterTracingCaseRequest {
                kind: pb::TracingCaseKind::Request as i32,
                consent: Some(pb::ConsentScope {
                    consent_id: format!("TRACE-CONSENT-{i}"),
                    given_by: pb::ConsentGiver::Parent as i32,
                    purposes: vec![pb::Purpose::FamilyTracing as i32],
                    categories: vec![
                        pb::DataCategory::Identity as i32,
                        pb::DataCategory::ProtectionConcerns as i32,
                    ],
                    recipients: vec!["ZM-DSW".into()],
                    valid_from_ms: now.plus_ms(-60_000).0,
                    expires_at_ms: now.plus_ms(86_400_000).0,
                    ..Default::default()
                }),
                case: Some(pb::ReferralPayload {
                    identity: Some(pb::IdentityData {
                        given_names: vec![format!("Sought{i}")],
                        sex: pb::Sex::Female as i32,
                        estimated_birth_year: u32::try_from(year - 9).expect("year"),
                        ..Default::default()
                    }),
                    protection_concerns: Some(pb::ProtectionConcerns {
                        migratory_status: pb::MigratoryStatus::Separated as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                peers: Vec::new(),
                ttl_seconds: 3600,
            })
            .await
            .expect("register")
            .into_inner();
        queries.extend(registered.queries.into_iter().map(|q| q.message_id));
    }
    let mut local = fed.local("MW-DSW", "caseworker");
    for id in &queries {
        assert_eq!(
            wait_delivery(&mut local, id).await.state,
            pb::DeliveryState::Delivered as i32
        );
    }
    let dims = ["purpose", "route", "age_band", "sex", "migratory_status"];
    let sent = statistics(&fed, "MW-DSW", &dims).await;
    let cell = entry(
        &sent,
        &[
            "family-tracing",
            "MW-DSW → ZM-DSW",
            "5-11",
            "female",
            "separated",
        ],
    );
    assert_eq!((cell.count, cell.withheld), (5, false));
    // The receiver cannot read a query's dimensions: it counts the queries, as unknown.
    let received = statistics(&fed, "ZM-DSW", &dims).await;
    let cell = entry(
        &received,
        &[
            "family-tracing",
            "MW-DSW → ZM-DSW",
            "unknown",
            "unknown",
            "unknown",
        ],
    );
    assert_eq!((cell.count, cell.withheld), (5, false));
    fed.shutdown().await;
}
