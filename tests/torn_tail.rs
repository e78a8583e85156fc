//! Filler at the end of a stopped node's audit journals: a real node process is stopped,
//! 4 KiB of zeros are appended to its entries and checkpoints files, and it is started again.
//! It cuts them off with a warning naming the file and the bytes, takes no zero as an entry or
//! a checkpoint, goes on logging, and its exported log verifies offline with the right count.

mod common;

use std::path::Path;

use common::*;
use kinbridge_proto::v1 as pb;

fn append_zeros(path: &Path, n: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(&vec![0u8; n]).expect("append zeros");
    f.sync_all().expect("sync");
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

#[tokio::test]
async fn zeros_after_a_stopped_nodes_journals_are_cut_and_its_log_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = TwoNodes::start(dir.path());
    let mut zambia = nodes.client("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 2).await;
    let before = export_and_verify(
        &nodes.pki,
        "MW-DSW",
        nodes.malawi.local_addr,
        &dir.path().join("before.jsonl"),
    )
    .await;
    assert_eq!(count(&entries(&before), pb::AuditEvent::Received), 2);

    // Stop Malawi, and leave 4 KiB of zeros at the end of both its journals.
    // Blocking off the runtime, so this test's own connections to Malawi can close.
    let malawi = std::mem::replace(&mut nodes.malawi, NodeProcess::placeholder());
    let status = tokio::task::spawn_blocking(move || malawi.terminate())
        .await
        .expect("terminate");
    assert!(status.success(), "Malawi stopped with {status}");
    let audit = dir.path().join("mw/audit");
    let journals = [audit.join("entries.log"), audit.join("checkpoints.log")];
    let intact: Vec<u64> = journals.iter().map(|p| len(p)).collect();
    assert!(intact.iter().all(|n| *n > 0), "both journals hold records");
    for path in &journals {
        append_zeros(path, 4096);
    }

    nodes.start_malawi();
    let after_start: Vec<u64> = journals.iter().map(|p| len(p)).collect();
    assert_eq!(after_start, intact, "the zeros are cut off at start");
    let log = std::fs::read_to_string(dir.path().join("malawi.log")).expect("node log");
    for path in &journals {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{}: cutting off 4096 bytes", path.display())))
            .unwrap_or_else(|| panic!("no warning for {} in:\n{log}", path.display()));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("zeros"), "{line}");
    }

    // Malawi goes on receiving, logging and signing.
    let mut zambia = nodes.client("ZM-DSW", "caseworker");
    let later: Vec<String> = deliver_referrals(&mut zambia, "MW-DSW", 2)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let after = export_and_verify(
        &nodes.pki,
        "MW-DSW",
        nodes.malawi.local_addr,
        &dir.path().join("after.jsonl"),
    )
    .await;
    let logged = entries(&after);
    assert_eq!(
        after.entries[..before.entries.len()],
        before.entries[..],
        "the entries before the stop are kept as they were"
    );
    assert_eq!(count(&logged, pb::AuditEvent::Received), 4);
    for id in &later {
        assert!(
            logged
                .iter()
                .any(|e| &e.message_id == id && e.event == pb::AuditEvent::Received as i32),
            "no RECEIVED entry for {id}"
        );
    }
    assert!(
        logged.iter().all(|e| e.node == "MW-DSW"),
        "every entry was logged by Malawi"
    );
    assert!(after.checkpoints > before.checkpoints);
}
