//! Audit-log benchmark: append throughput with group commit against one fsync per entry, and
//! offline verification speed against the bare SHA-256 floor, each baseline measured in the
//! same run. Run: `cargo bench -p kinbridge-audit --bench audit` (set KINBRIDGE_BENCH_ENTRIES
//! to change the verification size, default 1,000,000).

use std::io::{BufReader, BufWriter};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinbridge_audit::checkpoint::{Checkpoint, NoteKey, origin_of};
use kinbridge_audit::entry::{encode, new_entry};
use kinbridge_audit::export::{ExportWriter, verify_export};
use kinbridge_audit::merkle::leaf_hash;
use kinbridge_audit::{AuditLog, MerkleTree};
use kinbridge_core::{KeyId, NodeId, NodeSigningKey};
use kinbridge_proto::v1 as pb;

const COMMAND: &str = "cargo bench -p kinbridge-audit --bench audit";

fn main() {
    let verify_entries: u64 = std::env::var("KINBRIDGE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("# kinbridge audit-log benchmark");
    println!("command: {COMMAND}");
    println!("machine: {} cores, {}", cores(), cpu_model());
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeId::new("ZM-DSW").expect("node");
    let key = Arc::new(NodeSigningKey::generate(
        KeyId::new("bench").expect("key id"),
    ));
    let note_key = NoteKey {
        name: origin_of(&node),
        key: key.verifying_key(),
    };

    println!();
    println!("## append (entries durable on disk before acknowledged)");
    let single = append_rate(
        &dir.path().join("single"),
        &node,
        &note_key,
        1,
        Duration::from_secs(3),
    );
    println!("| writers | entries/s | fsyncs |");
    println!("|---|---|---|");
    println!(
        "| 1 (one fdatasync per entry: baseline) | {:.0} | per entry |",
        single
    );
    for writers in [16, 64] {
        let rate = append_rate(
            &dir.path().join(format!("group{writers}")),
            &node,
            &note_key,
            writers,
            Duration::from_secs(3),
        );
        println!(
            "| {writers} (group commit) | {rate:.0} | shared; {:.1}x the baseline |",
            rate / single
        );
    }

    println!();
    println!("## offline verification of an export of {verify_entries} entries");
    let path = dir.path().join("export.jsonl");
    let entries = write_export(&path, &node, &key, verify_entries);
    let size_mb = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let floor = Instant::now();
    let mut tree = MerkleTree::new();
    for e in &entries {
        tree.push(leaf_hash(e));
    }
    let floor = floor.elapsed();
    drop(entries);
    let start = Instant::now();
    let verified = verify_export(
        BufReader::new(std::fs::File::open(&path).expect("open")),
        std::slice::from_ref(&note_key),
        false,
    )
    .expect("verifies");
    let took = start.elapsed();
    assert_eq!(verified.size, verify_entries);
    println!("| what | seconds | entries/s |");
    println!("|---|---|---|");
    println!(
        "| leaf hashing + tree of the raw entries (floor) | {:.2} | {:.0} |",
        floor.as_secs_f64(),
        verify_entries as f64 / floor.as_secs_f64()
    );
    println!(
        "| `verify_export` of the {size_mb:.0} MB file (parse, base64, hash, decode, {} checkpoints) | {:.2} | {:.0} |",
        verified.checkpoints,
        took.as_secs_f64(),
        verify_entries as f64 / took.as_secs_f64()
    );
    println!(
        "ratio verify / floor: {:.1}x",
        took.as_secs_f64() / floor.as_secs_f64()
    );
}

/// Entries/s with `writers` threads each appending one entry and waiting for it to be durable.
fn append_rate(
    dir: &std::path::Path,
    node: &NodeId,
    note_key: &NoteKey,
    writers: usize,
    run: Duration,
) -> f64 {
    let log =
        Arc::new(AuditLog::open(dir, node, std::slice::from_ref(note_key)).expect("open log"));
    let entry = encode(&sample(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let log = Arc::clone(&log);
            let entry = entry.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < run {
                    log.append(entry.clone()).expect("append");
                    log.commit_blocking().expect("commit");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("writer")).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// A realistic entry: a delivery with all its digests.
fn sample(i: u64) -> pb::AuditEntry {
    let mut e = new_entry(pb::AuditEvent::Delivered, "ZM-DSW");
    e.message_id = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
    e.kind = pb::MessageKind::Referral as i32;
    e.sender = "ZM-DSW".into();
    e.recipient = "MW-DSW".into();
    e.purpose = pb::Purpose::ServiceReferral as i32;
    e.consent_id = format!("ZM-CONSENT-{i}");
    e.payload_digest = vec![1; 32];
    e.envelope_digest = vec![2; 32];
    e.receipt_digest = vec![3; 32];
    e.peer = "MW-DSW".into();
    e.data_categories = vec![1, 5];
    e.attempts = 1;
    e
}

/// Writes an export of `n` entries with a checkpoint every 100,000; returns the entries.
fn write_export(
    path: &std::path::Path,
    node: &NodeId,
    key: &NodeSigningKey,
    n: u64,
) -> Vec<Vec<u8>> {
    let origin = origin_of(node);
    let file = BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut w = ExportWriter::new(file, &origin, node.as_str(), 0).expect("header");
    let mut tree = MerkleTree::new();
    let mut notes = Vec::new();
    let mut entries = Vec::with_capacity(n as usize);
    for i in 0..n {
        let bytes = encode(&sample(i));
        tree.push(leaf_hash(&bytes));
        w.entry(&bytes).expect("entry");
        entries.push(bytes);
        if (i + 1) % 100_000 == 0 || i + 1 == n {
            let root = tree.root(i + 1).expect("root");
            notes.push(
                Checkpoint {
                    origin: &origin,
                    size: i + 1,
                    root,
                }
                .sign(key),
            );
        }
    }
    for note in &notes {
        w.checkpoint(note).expect("checkpoint");
    }
    w.finish().expect("finish");
    entries
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
