//! The log on real files: durability across reopen, checkpoints, and refusal of an altered log.

use super::*;
use kinbridge_core::KeyId;

fn setup() -> (tempfile::TempDir, NodeId, NodeSigningKey, Vec<NoteKey>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeId::new("ZM-DSW").expect("node");
    let key = NodeSigningKey::generate(KeyId::new("k1").expect("key id"));
    let keys = vec![NoteKey {
        name: origin_of(&node),
        key: key.verifying_key(),
    }];
    (dir, node, key, keys)
}

#[test]
fn entries_and_checkpoints_survive_reopen() {
    let (dir, node, key, keys) = setup();
    let root;
    {
        let log = AuditLog::open(dir.path(), &node, &keys).expect("open");
        for i in 0..10u8 {
            assert_eq!(log.append(vec![i; 20]).expect("append"), u64::from(i));
        }
        assert_eq!(log.size(), 0, "nothing is visible before it is durable");
        assert_eq!(log.commit_blocking(), Ok(10));
        let cp = log.sign_checkpoint(&key).expect("sign");
        assert_eq!(cp.size, 10);
        root = cp.root;
        log.append(vec![42; 5]).expect("append");
        assert_eq!(log.commit_blocking(), Ok(11));
    }
    let log = AuditLog::open(dir.path(), &node, &keys).expect("reopen");
    assert_eq!(log.size(), 11);
    assert_eq!(log.root(10).expect("root"), root);
    assert_eq!(
        log.read_entries(9, 11).expect("read"),
        vec![vec![9u8; 20], vec![42u8; 5]]
    );
    let cp = log.sign_checkpoint(&key).expect("sign");
    assert_eq!(cp.size, 11);
    assert_eq!(log.checkpoints().len(), 2);
}

#[test]
fn an_altered_log_is_refused_at_open() {
    let (dir, node, key, keys) = setup();
    {
        let log = AuditLog::open(dir.path(), &node, &keys).expect("open");
        for i in 0..4u8 {
            log.append(vec![i; 8]).expect("append");
        }
        log.commit_blocking().expect("commit");
        log.sign_checkpoint(&key).expect("sign");
    }
    // Rewrite entry 1 with a valid frame: only the checkpoint can tell.
    let path = dir.path().join("entries.log");
    let mut records: Vec<Vec<u8>> =
        crate::journal::parse_frames(&std::fs::read(&path).expect("read"))
            .0
            .into_iter()
            .map(|(_, r)| r)
            .collect();
    records[1] = vec![99; 8];
    std::fs::remove_file(&path).expect("rm");
    let mut journal = Journal::open(&path).expect("journal").journal;
    journal.append(&records).expect("rewrite");
    drop(journal);
    let err = AuditLog::open(dir.path(), &node, &keys)
        .map(|_| ())
        .expect_err("must refuse");
    assert!(
        matches!(err, LogError::Inconsistent { size: 4, .. }),
        "{err}"
    );
}

#[test]
fn zeros_after_both_journals_are_cut_and_the_log_goes_on() {
    let (dir, node, key, keys) = setup();
    {
        let log = AuditLog::open(dir.path(), &node, &keys).expect("open");
        for i in 0..3u8 {
            log.append(vec![i + 1; 8]).expect("append");
        }
        log.commit_blocking().expect("commit");
        log.sign_checkpoint(&key).expect("sign");
    }
    for name in ["entries.log", "checkpoints.log"] {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(name))
            .expect("open");
        std::io::Write::write_all(&mut f, &[0; 4096]).expect("zeros");
    }
    {
        let log = AuditLog::open(dir.path(), &node, &keys).expect("reopen");
        assert_eq!(log.size(), 3, "no zero entry");
        assert_eq!(log.checkpoints().len(), 1, "no zero checkpoint");
        log.append(vec![9; 8]).expect("append");
        assert_eq!(log.commit_blocking(), Ok(4));
        assert_eq!(log.sign_checkpoint(&key).expect("sign").size, 4);
    }
    let log = AuditLog::open(dir.path(), &node, &keys).expect("reopen");
    assert_eq!(log.size(), 4);
    assert_eq!(log.checkpoints().len(), 2);
    assert_eq!(
        log.read_entries(2, 4).expect("read"),
        vec![vec![3u8; 8], vec![9u8; 8]]
    );
}
