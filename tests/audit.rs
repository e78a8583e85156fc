//! The audit log end to end: a real two-node exchange leaves logs that verify offline and
//! reconcile; refusals are logged; proofs served by a node check against its checkpoint;
//! receipts carry checkpoints; peers get proofs but never entries; the CLI tools work on real
//! exports and catch a flipped byte.

mod common;

use common::*;
use kinbridge_audit::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use kinbridge_core::NodeSigningKey;
use kinbridge_core::envelope::danger::seal_unchecked as seal_envelope;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::audit_service_client::AuditServiceClient;

fn run_cli(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = kinbridge().args(args).output().expect("run kinbridge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_real_exchange_leaves_logs_that_verify_and_reconcile() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    let ids: Vec<String> = deliver_referrals(&mut zambia, "MW-DSW", 3)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // A refusal, and an acknowledgement.
    let forged = seal_envelope(
        &draft("ZM-DSW", "MW-DSW"),
        payload(),
        &NodeSigningKey::generate(fed.files("ZM-DSW").signing_key_id()),
    );
    let status = fed
        .peer_client_as("MW-DSW", "ZM-DSW")
        .deliver(pb::DeliverRequest {
            envelope: Some(forged.into()),
        })
        .await
        .expect_err("refused");
    assert_eq!(refusal(&status).1, "bad-signature");
    let mut malawi = fed.local("MW-DSW", "caseworker");
    let first = malawi
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items[0]
        .sequence;
    malawi
        .acknowledge_inbox_item(pb::AcknowledgeInboxItemRequest { sequence: first })
        .await
        .expect("ack");

    let dir = fed.dir.path();
    let (zm_file, mw_file) = (dir.join("zm.jsonl"), dir.join("mw.jsonl"));
    let zm = export_and_verify(&fed.pki, "ZM-DSW", fed.node("ZM-DSW").local_addr, &zm_file).await;
    let mw = export_and_verify(&fed.pki, "MW-DSW", fed.node("MW-DSW").local_addr, &mw_file).await;
    let (zm_entries, mw_entries) = (entries(&zm), entries(&mw));
    assert_eq!(count(&zm_entries, pb::AuditEvent::Submitted), 3);
    assert_eq!(count(&zm_entries, pb::AuditEvent::Sent), 3);
    assert_eq!(count(&zm_entries, pb::AuditEvent::Delivered), 3);
    assert_eq!(count(&mw_entries, pb::AuditEvent::Received), 3);
    assert_eq!(count(&mw_entries, pb::AuditEvent::Acknowledged), 1);
    let refused: Vec<_> = mw_entries
        .iter()
        .filter(|e| e.event == pb::AuditEvent::Refused as i32)
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].reason.as_str(), refused[0].peer.as_str()),
        ("bad-signature", "ZM-DSW")
    );
    // Receipts carried Malawi's checkpoint, and Zambia logged it.
    for e in zm_entries
        .iter()
        .filter(|e| e.event == pb::AuditEvent::Delivered as i32)
    {
        assert!(
            e.peer_checkpoint.starts_with("kinbridge.audit/MW-DSW\n"),
            "{e:?}"
        );
        assert!(ids.contains(&e.message_id));
    }
    // No child's data in any log: the referral's names and case reference appear nowhere.
    for file in [&zm_file, &mw_file] {
        let text = std::fs::read_to_string(file).expect("read");
        for (export, _) in [(&zm, 0), (&mw, 1)] {
            for entry in &export.entries {
                let raw = String::from_utf8_lossy(entry);
                for personal in ["Test", "Child", "TEST-CASE-1", "interim-care"] {
                    assert!(!raw.contains(personal), "'{personal}' in an audit entry");
                }
            }
        }
        assert!(!text.contains("Child"));
    }

    let report =
        kinbridge_audit::reconcile::reconcile("ZM-DSW", &zm.entries, "MW-DSW", &mw.entries);
    assert_eq!(
        (report.matched, report.mismatches.len()),
        (3, 0),
        "{:?}",
        report.mismatches
    );

    // The auditor's CLI on the same files.
    let zm_pub = fed.files("ZM-DSW").signing_pub();
    let mw_pub = fed.files("MW-DSW").signing_pub();
    let (ok, text) = run_cli(&[
        "audit".as_ref(),
        "verify".as_ref(),
        zm_file.as_os_str(),
        "--key".as_ref(),
        zm_pub.as_os_str(),
    ]);
    assert!(
        ok && text.contains("OK:") && text.contains("holds 9 entries"),
        "{text}"
    );
    let (ok, text) = run_cli(&[
        "audit".as_ref(),
        "reconcile".as_ref(),
        zm_file.as_os_str(),
        mw_file.as_os_str(),
        "--key-a".as_ref(),
        zm_pub.as_os_str(),
        "--key-b".as_ref(),
        mw_pub.as_os_str(),
    ]);
    assert!(
        ok && text.contains("3 deliveries matched") && text.contains("0 mismatch"),
        "{text}"
    );
    // Verifying against the wrong node's key fails.
    let (ok, text) = run_cli(&[
        "audit".as_ref(),
        "verify".as_ref(),
        zm_file.as_os_str(),
        "--key".as_ref(),
        mw_pub.as_os_str(),
    ]);
    assert!(!ok && text.contains("FAILED"), "{text}");
    // It names the key given (by its fingerprint) and the key that did sign.
    let mw_files = fed.files("MW-DSW");
    let mw_key = kinbridge_core::PeerKey::from_public_key_pem(
        mw_files.signing_key_id(),
        &std::fs::read_to_string(&mw_pub).expect("pub"),
    )
    .expect("key");
    assert!(
        text.contains(&format!("(fingerprint {})", mw_key.fingerprint()))
            && text.contains("it is signed by kinbridge.audit/ZM-DSW+"),
        "{text}"
    );
    // ... and the file each key given came from, so Malawi's key given by mistake shows.
    assert!(
        text.contains(&format!("--key {} is ", mw_pub.display()))
            && text.contains(&format!("(fingerprint {})", mw_key.fingerprint())),
        "{text}"
    );
    // A byte flipped in entry 4 (line 6) is named.
    let mut lines: Vec<String> = std::fs::read_to_string(&zm_file)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect();
    let at = lines[5].find("\"entry\":\"").expect("entry") + 20;
    let mut bytes = lines[5].clone().into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    lines[5] = String::from_utf8(bytes).expect("utf8");
    let flipped = dir.join("flipped.jsonl");
    std::fs::write(&flipped, lines.join("\n")).expect("write");
    let (ok, text) = run_cli(&[
        "audit".as_ref(),
        "verify".as_ref(),
        flipped.as_os_str(),
        "--key".as_ref(),
        zm_pub.as_os_str(),
    ]);
    assert!(!ok && text.contains("entry 4, line 6"), "{text}");
    // Dropping Malawi's receipt of one message makes reconcile list it.
    let dropped: Vec<Vec<u8>> = mw
        .entries
        .iter()
        .filter(|e| {
            let d = kinbridge_audit::entry::decode(e).expect("entry");
            !(d.event == pb::AuditEvent::Received as i32 && d.message_id == ids[1])
        })
        .cloned()
        .collect();
    let report = kinbridge_audit::reconcile::reconcile("ZM-DSW", &zm.entries, "MW-DSW", &dropped);
    assert_eq!(report.mismatches.len(), 1);
    assert!(report.mismatches[0].to_string().contains(&ids[1]));
    fed.shutdown().await;
}

#[tokio::test]
async fn proofs_served_by_a_node_check_against_its_checkpoint() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 5).await;
    let files = fed.files("MW-DSW");
    let mut auditor = kinbridge_grpc::client::audit_client(
        &fed.node("MW-DSW").local_addr.to_string(),
        &files.ca_cert(),
        &files.client_cert("auditor"),
        &files.client_key("auditor"),
    )
    .expect("client");
    let note = auditor
        .get_checkpoint(pb::GetCheckpointRequest {
            min_size: 5,
            wait_ms: 30_000,
        })
        .await
        .expect("checkpoint")
        .into_inner()
        .checkpoint;
    let pem = std::fs::read_to_string(files.signing_pub()).expect("pub");
    let key =
        kinbridge_core::PeerKey::from_public_key_pem(files.signing_key_id(), &pem).expect("key");
    let note_key = kinbridge_audit::NoteKey {
        name: "kinbridge.audit/MW-DSW".into(),
        key: *key.verifying_key(),
    };
    let cp =
        kinbridge_audit::checkpoint::verify_note(&note, &note_key).expect("checkpoint verifies");
    assert!(cp.size >= 5);
    for index in 0..cp.size {
        let proof = auditor
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                index,
                tree_size: cp.size,
            })
            .await
            .expect("proof")
            .into_inner();
        let hashes: Vec<[u8; 32]> = proof
            .hashes
            .iter()
            .map(|h| <[u8; 32]>::try_from(h.as_slice()).expect("32"))
            .collect();
        verify_inclusion(&leaf_hash(&proof.entry), index, cp.size, &hashes, &cp.root)
            .expect("inclusion verifies");
    }
    // Out of range is refused clearly.
    let status = auditor
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            index: cp.size,
            tree_size: cp.size,
        })
        .await
        .expect_err("refused");
    assert_eq!(refusal(&status).1, "out-of-range");

    // A peer gets checkpoints and consistency proofs on the peer port, never entries or exports.
    let zm = fed.files("ZM-DSW");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(zm.node_cert()).expect("cert"),
        std::fs::read(zm.node_key()).expect("key"),
    );
    let channel = kinbridge_grpc::peer_client::peer_channel(
        &format!("https://{}", fed.node("MW-DSW").peer_addr),
        Some("localhost"),
        &std::fs::read(files.ca_cert()).expect("ca"),
        &identity,
    )
    .expect("channel");
    let mut peer = AuditServiceClient::new(channel);
    let first = 2;
    let first_root = {
        let p = peer
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                index: 0,
                tree_size: first,
            })
            .await
            .expect("peer may get proofs")
            .into_inner();
        assert!(p.entry.is_empty(), "peers get no entry contents");
        let note = peer
            .get_checkpoint(pb::GetCheckpointRequest::default())
            .await
            .expect("checkpoint")
            .into_inner()
            .checkpoint;
        assert!(kinbridge_audit::checkpoint::verify_note(&note, &note_key).is_ok());
        auditor
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                index: 0,
                tree_size: 1,
            })
            .await
            .expect("p");
        // The root of the first two entries, from the auditor's view of the entries.
        let a = auditor
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                index: 0,
                tree_size: first,
            })
            .await
            .expect("p")
            .into_inner();
        kinbridge_audit::merkle::node_hash(
            &leaf_hash(&a.entry),
            &<[u8; 32]>::try_from(a.hashes[0].as_slice()).expect("32"),
        )
    };
    let proof = peer
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            first_size: first,
            second_size: cp.size,
        })
        .await
        .expect("consistency proof")
        .into_inner();
    let hashes: Vec<[u8; 32]> = proof
        .hashes
        .iter()
        .map(|h| <[u8; 32]>::try_from(h.as_slice()).expect("32"))
        .collect();
    verify_consistency(first, cp.size, &hashes, &first_root, &cp.root).expect("consistent");
    let status = peer
        .export_log(pb::ExportLogRequest {})
        .await
        .map(|_| ())
        .expect_err("export refused to peers");
    assert_eq!(
        refusal(&status),
        (tonic::Code::PermissionDenied, "local-only".into())
    );
    // A caseworker may not read the log.
    let mut caseworker = kinbridge_grpc::client::audit_client(
        &fed.node("MW-DSW").local_addr.to_string(),
        &files.ca_cert(),
        &files.client_cert("caseworker"),
        &files.client_key("caseworker"),
    )
    .expect("client");
    let status = caseworker
        .get_checkpoint(pb::GetCheckpointRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(refusal(&status).1, "role-denied");
    fed.shutdown().await;
}

#[tokio::test]
async fn check_peers_passes_and_then_exposes_a_rewritten_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = TwoNodes::start(dir.path());
    let pki = nodes.pki.clone();
    let zm_files = kinbridge_node::devpki::DevNodeFiles::new(&pki, &node_id("ZM-DSW"));
    let mut client = nodes.client("ZM-DSW", "caseworker");
    deliver_referrals(&mut client, "MW-DSW", 4).await;
    let (zm_config, zm_local) = (nodes.zm_config.clone(), nodes.zambia.local_addr);
    let check = |expect_ok: bool| {
        let out = kinbridge()
            .args(["audit", "check-peers", "--config"])
            .arg(&zm_config)
            .arg("--node")
            .arg(zm_local.to_string())
            .arg("--cert")
            .arg(zm_files.client_cert("auditor"))
            .arg("--key")
            .arg(zm_files.client_key("auditor"))
            .output()
            .expect("run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), expect_ok, "{text}");
        text
    };
    // Wait until Malawi has signed a checkpoint covering the four receipts.
    let mw_files = kinbridge_node::devpki::DevNodeFiles::new(&pki, &node_id("MW-DSW"));
    let mut mw_auditor = kinbridge_grpc::client::audit_client(
        &nodes.malawi.local_addr.to_string(),
        &mw_files.ca_cert(),
        &mw_files.client_cert("auditor"),
        &mw_files.client_key("auditor"),
    )
    .expect("client");
    let note = mw_auditor
        .get_checkpoint(pb::GetCheckpointRequest {
            min_size: 4,
            wait_ms: 30_000,
        })
        .await
        .expect("checkpoint")
        .into_inner()
        .checkpoint;
    assert!(note.starts_with("kinbridge.audit/MW-DSW\n4\n"), "{note}");
    // Twice: the first holds Malawi's latest checkpoint; the second proves from it.
    assert!(check(true).contains("OK   MW-DSW"));
    assert!(check(true).contains("OK   MW-DSW: consistent from size 4 to 4"));

    // Malawi's operator rewrites an old entry and discards the signed checkpoints.
    let peer_port = nodes.malawi.peer_addr.port();
    nodes.kill_malawi();
    let audit_dir = dir.path().join("mw/audit");
    let entries_path = audit_dir.join("entries.log");
    let mut records: Vec<Vec<u8>> =
        kinbridge_audit::journal::parse_frames(&std::fs::read(&entries_path).expect("read"))
            .0
            .into_iter()
            .map(|(_, r)| r)
            .collect();
    let mut first = kinbridge_audit::entry::decode(&records[0]).expect("entry");
    first.reason = "rewritten".into();
    records[0] = kinbridge_audit::entry::encode(&first);
    std::fs::remove_file(&entries_path).expect("rm");
    std::fs::remove_file(audit_dir.join("checkpoints.log")).expect("rm");
    let mut journal = kinbridge_audit::journal::Journal::open(&entries_path)
        .expect("journal")
        .journal;
    journal.append(&records).expect("rewrite");
    drop(journal);
    nodes.start_malawi();
    assert_eq!(nodes.malawi.peer_addr.port(), peer_port);

    let text = check(false);
    assert!(text.contains("FAIL MW-DSW: inconsistent"), "{text}");
}

/// A proof from an empty log proves nothing: `CheckPeers` says so instead of reporting
/// "consistent from size 0 to N", and only the check after it compares two real sizes.
#[tokio::test]
async fn check_peers_does_not_call_a_proof_from_an_empty_log_evidence() {
    let fed = Federation::start(&["ZM-DSW", "MW-DSW"]).await;
    let mut auditor = AuditServiceClient::new(fed.channel("ZM-DSW", "auditor"));
    let mut check = async || {
        auditor
            .check_peers(pb::CheckPeersRequest::default())
            .await
            .expect("check peers")
            .into_inner()
            .peers
            .into_iter()
            .find(|p| p.peer == "MW-DSW")
            .expect("Malawi checked")
    };
    let first = check().await;
    assert!(first.consistent, "{first:?}");
    assert!(
        first.detail.starts_with("first checkpoint held"),
        "{first:?}"
    );
    assert_eq!(
        first.current_size, 0,
        "a new node's log is empty: {first:?}"
    );
    let second = check().await;
    assert!(second.consistent, "{second:?}");
    assert_eq!(second.held_size, 0, "{second:?}");
    assert!(
        second.detail.contains("nothing to compare yet"),
        "{second:?}"
    );
    assert!(
        !second.detail.contains("from size 0"),
        "a proof from size 0 is reported as evidence: {second:?}"
    );
    let mut zambia = fed.local("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 1).await;
    let mut mw_auditor = AuditServiceClient::new(fed.channel("MW-DSW", "auditor"));
    mw_auditor
        .get_checkpoint(pb::GetCheckpointRequest {
            min_size: 1,
            wait_ms: 30_000,
        })
        .await
        .expect("Malawi signs a checkpoint with its entry");
    let third = check().await;
    let fourth = check().await;
    assert!(
        third.consistent && fourth.consistent,
        "{third:?} {fourth:?}"
    );
    assert!(
        fourth.detail.starts_with("consistent from size ") && fourth.held_size > 0,
        "{fourth:?}"
    );
    fed.shutdown().await;
}
