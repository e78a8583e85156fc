//! Store tests on a real sled directory.

use super::*;

/// Opens the store in `dir` again after the previous `Store` was dropped: sled's own flusher
/// thread may hold the directory's lock a moment longer, so the open is retried while the
/// lock is taken, for at most two seconds.
pub(crate) fn reopen(dir: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(StoreError::Open { reason, .. })
                if reason.contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reopen: {e:?}"),
        }
    }
}

fn record(sender: &str, id: &str, digest: u8) -> InboxRecord {
    InboxRecord {
        sender: sender.into(),
        message_id: id.into(),
        envelope_digest: vec![digest; 32],
        ..Default::default()
    }
}

#[tokio::test]
async fn receive_dedups_and_detects_replays_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let first = store
            .receive(&record("ZM-DSW", "m1", 1))
            .await
            .expect("receive");
        assert!(matches!(first, ReceiveOutcome::Stored(_)));
        let again = store
            .receive(&record("ZM-DSW", "m1", 1))
            .await
            .expect("receive");
        assert!(matches!(again, ReceiveOutcome::Duplicate(_)));
        let replay = store
            .receive(&record("ZM-DSW", "m1", 2))
            .await
            .expect("receive");
        assert!(matches!(replay, ReceiveOutcome::Replay));
        let other_sender = store
            .receive(&record("ZW-DSW", "m1", 3))
            .await
            .expect("receive");
        assert!(matches!(other_sender, ReceiveOutcome::Stored(_)));
        let page = store.inbox_page(0, 10, false, |_| true).expect("page");
        assert_eq!(page.len(), 2);
        assert!(store.acknowledge(page[0].0).await.expect("ack"));
    }
    let store = reopen(dir.path());
    assert_eq!(
        store
            .inbox_page(0, 10, false, |_| true)
            .expect("page")
            .len(),
        1
    );
    assert_eq!(
        store.inbox_page(0, 10, true, |_| true).expect("page").len(),
        2
    );
}

#[tokio::test]
async fn outbox_queue_follows_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let queued = OutboxRecord {
        state: kinbridge_proto::v1::DeliveryState::Queued as i32,
        ..Default::default()
    };
    store.enqueue("a", queued.clone()).await.expect("enqueue");
    store.enqueue("b", queued).await.expect("enqueue");
    let pending = store.pending(10).expect("pending");
    assert_eq!(
        pending
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    let mut done = pending[0].1.clone();
    done.state = kinbridge_proto::v1::DeliveryState::Delivered as i32;
    store.outbox_update("a", &done).await.expect("update");
    assert_eq!(store.pending(10).expect("pending").len(), 1);
    assert_eq!(
        store.outbox_get("a").expect("get").map(|r| r.state),
        Some(done.state)
    );
}

#[tokio::test]
async fn first_receipts_get_distinct_sequences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let a = store
        .receive(&record("ZM-DSW", "a", 1))
        .await
        .expect("receive");
    let b = store
        .receive(&record("ZM-DSW", "b", 2))
        .await
        .expect("receive");
    match (a, b) {
        (ReceiveOutcome::Stored(x), ReceiveOutcome::Stored(y)) => {
            assert!(x >= 1 && y > x, "{x} then {y}")
        }
        other => panic!("both must be stored: {other:?}"),
    }
    assert_eq!(
        store
            .inbox_page(0, 10, false, |_| true)
            .expect("page")
            .len(),
        2
    );
}

#[tokio::test]
async fn a_final_outbox_state_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let queued = OutboxRecord {
        state: kinbridge_proto::v1::DeliveryState::Queued as i32,
        ..Default::default()
    };
    store.enqueue("a", queued).await.expect("enqueue");
    let stale = store.pending(10).expect("pending")[0].1.clone();
    let mut delivered = stale.clone();
    delivered.state = kinbridge_proto::v1::DeliveryState::Delivered as i32;
    assert!(store.outbox_update("a", &delivered).await.expect("update"));
    // A late attempt working from the stale queued snapshot must not undo the delivery.
    let mut late = stale;
    late.last_error = "tcp connect error".into();
    assert!(!store.outbox_update("a", &late).await.expect("update"));
    assert_eq!(
        store.outbox_get("a").expect("get").map(|r| r.state),
        Some(delivered.state)
    );
}

#[tokio::test]
async fn a_purge_deletes_the_payload_file_and_marks_the_record() {
    use kinbridge_proto::v1 as pb;
    use prost::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let header = pb::EnvelopeHeader {
        consent_id: "C-9".into(),
        sender: "ZM-DSW".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let envelope = pb::Envelope {
        header,
        signature: vec![1; 64],
        payload: b"PERSONAL-DATA-42".to_vec(),
        payload_salt: vec![2; 32],
    };
    let record = InboxRecord {
        envelope: Some(envelope),
        sender: "ZM-DSW".into(),
        message_id: "m".into(),
        ..Default::default()
    };
    assert!(matches!(
        store.receive(&record).await.expect("receive"),
        ReceiveOutcome::Stored(_)
    ));
    let on_disk = |needle: &[u8]| {
        walk(dir.path())
            .into_iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
    };
    assert!(on_disk(b"PERSONAL-DATA-42"), "stored in the payload store");
    let (seq, stored) = store
        .inbox_page(0, 10, true, |_| true)
        .expect("page")
        .remove(0);
    let full = store
        .with_payload(stored.envelope.clone().expect("envelope"))
        .expect("read")
        .expect("payload");
    assert_eq!(full.payload, b"PERSONAL-DATA-42");

    let purged = store
        .purge_where(|h, _| h.consent_id == "C-9")
        .await
        .expect("purge");
    assert_eq!(purged.len(), 1);
    assert!(!on_disk(b"PERSONAL-DATA-42"), "the bytes are gone");
    let after = store.inbox_get(seq).expect("get").expect("record kept");
    assert!(after.purged_at_ms > 0);
    assert_eq!(
        store
            .with_payload(after.envelope.expect("envelope"))
            .expect("read"),
        None
    );
    // A second purge finds nothing more.
    assert!(
        store
            .purge_where(|h, _| h.consent_id == "C-9")
            .await
            .expect("purge")
            .is_empty()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn an_outbox_change_wakes_only_the_watchers_of_that_message() {
    use futures::FutureExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let queued = |seq| OutboxRecord {
        state: pb::DeliveryState::Queued as i32,
        queue_sequence: seq,
        ..Default::default()
    };
    store.enqueue("a", queued(1)).await.expect("enqueue");
    store.enqueue("b", queued(2)).await.expect("enqueue");
    let mut on_a = store.watch_outbox("a");
    let mut also_on_a = store.watch_outbox("a");
    let mut on_b = store.watch_outbox("b");
    let mut delivered = queued(1);
    delivered.state = pb::DeliveryState::Delivered as i32;
    assert!(store.outbox_update("a", &delivered).await.expect("update"));
    assert!(on_a.changed().now_or_never().is_some(), "a's watcher wakes");
    assert!(also_on_a.changed().now_or_never().is_some());
    assert!(on_b.changed().now_or_never().is_none(), "b's does not");
    // Seen changes do not wake again.
    on_a.seen();
    assert!(on_a.changed().now_or_never().is_none());
    // The last watch of a message leaves nothing behind.
    drop((on_a, also_on_a, on_b));
    assert!(store.watchers().is_empty());
}

#[tokio::test]
async fn the_delivery_scan_reads_only_each_recipients_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("open");
    let to = |recipient: &str, seq| OutboxRecord {
        recipient: recipient.into(),
        state: pb::DeliveryState::Queued as i32,
        queue_sequence: seq,
        ..Default::default()
    };
    store.enqueue("a", to("MW-DSW", 1)).await.expect("enqueue");
    store.enqueue("b", to("ZW-DSD", 2)).await.expect("enqueue");
    store.enqueue("c", to("MW-DSW", 3)).await.expect("enqueue");
    // A queue entry as an earlier release wrote it: the message id alone.
    store
        .outbox
        .insert("d", to("TZ-DSW", 4).encode_to_vec())
        .expect("record");
    store
        .outbox_pending
        .insert(4u64.to_be_bytes(), "d".as_bytes())
        .expect("legacy entry");
    // An earlier release kept no queue by recipient: opening the store builds it.
    drop(store);
    store = reopen(dir.path());
    let heads: Vec<String> = store
        .pending_heads(100)
        .expect("heads")
        .into_iter()
        .map(|(id, r)| format!("{id}:{}", r.recipient))
        .collect();
    assert_eq!(heads, vec!["a:MW-DSW", "b:ZW-DSD", "d:TZ-DSW"]);
    // Once the head is delivered, the next of its recipient leads.
    let mut done = to("MW-DSW", 1);
    done.state = pb::DeliveryState::Delivered as i32;
    store.outbox_update("a", &done).await.expect("update");
    let heads: Vec<String> = store
        .pending_heads(100)
        .expect("heads")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(heads, vec!["b", "c", "d"]);
    assert_eq!(store.pending(100).expect("pending").len(), 3);
    // A recipient's queue is read in order, up to a bound.
    store.enqueue("e", to("MW-DSW", 5)).await.expect("enqueue");
    let lane = |limit| -> Vec<String> {
        store
            .pending_for("MW-DSW", limit)
            .expect("lane")
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(lane(10), vec!["c", "e"]);
    assert_eq!(lane(1), vec!["c"]);
    assert!(store.pending_for("MW", 10).expect("lane").is_empty());
}

#[tokio::test]
async fn a_delivery_outcome_read_before_a_purge_keeps_the_purge_mark() {
    use kinbridge_proto::v1 as pb;
    use prost::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let header = pb::EnvelopeHeader {
        consent_id: "C-7".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let queued = OutboxRecord {
        recipient: "MW-DSW".into(),
        state: pb::DeliveryState::Queued as i32,
        envelope: Some(pb::Envelope {
            header,
            signature: vec![3; 64],
            payload: b"PERSONAL-DATA-77".to_vec(),
            payload_salt: vec![4; 32],
        }),
        ..Default::default()
    };
    store.enqueue("a", queued).await.expect("enqueue");
    // The delivery worker read the record; then a withdrawal purged it.
    let mut read = store.outbox_get("a").expect("get").expect("record");
    let purged = store
        .purge_where(|h, _| h.consent_id == "C-7")
        .await
        .expect("purge");
    assert_eq!(purged.len(), 1);
    // The worker stores the attempt it made with what it read: the purge stays marked.
    read.attempts += 1;
    read.last_error = "unavailable".into();
    assert!(store.outbox_update("a", &read).await.expect("update"));
    let now = store.outbox_get("a").expect("get").expect("record");
    assert_eq!(now.attempts, 1);
    assert!(now.purged_at_ms > 0, "the purge mark was kept");
}

#[tokio::test]
async fn a_settled_message_left_in_the_queue_can_be_taken_out() {
    use kinbridge_proto::v1 as pb;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let record = OutboxRecord {
        recipient: "MW-DSW".into(),
        state: pb::DeliveryState::Queued as i32,
        ..Default::default()
    };
    store.enqueue("a", record).await.expect("enqueue");
    // Settled behind the queue's back.
    let mut settled = store.outbox_get("a").expect("get").expect("record");
    settled.state = pb::DeliveryState::Delivered as i32;
    store
        .outbox
        .insert("a", settled.encode_to_vec())
        .expect("insert");
    assert_eq!(store.pending_for("MW-DSW", 10).expect("lane").len(), 1);
    store.unqueue(&[("a", &settled)]).await.expect("unqueue");
    assert!(store.pending_for("MW-DSW", 10).expect("lane").is_empty());
    assert!(store.pending(10).expect("pending").is_empty());
    assert_eq!(store.queued(), 0);
}

#[tokio::test]
async fn a_submission_key_is_stored_with_its_message_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let once = SubmissionKey {
        key: b"caseworker\0key-1".to_vec(),
        request_digest: [7; 32],
    };
    {
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(store.submitted(&once.key).expect("read"), None);
        let record = OutboxRecord {
            recipient: "MW-DSW".into(),
            state: pb::DeliveryState::Queued as i32,
            ..Default::default()
        };
        store
            .enqueue_once("m-1", record.clone(), Some(&once))
            .await
            .expect("enqueue");
        store
            .enqueue("m-2", record)
            .await
            .expect("enqueue without a key");
        assert_eq!(store.queued(), 2);
    }
    let store = reopen(dir.path());
    let found = store.submitted(&once.key).expect("read").expect("found");
    assert_eq!(found.message_id, "m-1");
    assert_eq!(found.request_digest, [7; 32]);
    assert!(store.outbox_get("m-1").expect("read").is_some());
    assert_eq!(store.submitted(b"caseworker\0key-2").expect("read"), None);
}

fn queued_to(recipient: &str) -> OutboxRecord {
    OutboxRecord {
        recipient: recipient.into(),
        state: pb::DeliveryState::Queued as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn below_the_reserve_growth_is_refused_and_the_rest_still_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .enqueue("before", queued_to("MW-DSW"))
        .await
        .expect("enqueue with room");
    // A reserve larger than any disk: the volume is "full" at once.
    let store = store.with_min_free_bytes(u64::MAX);
    let refused = store
        .enqueue("after", queued_to("MW-DSW"))
        .await
        .expect_err("refused");
    let StoreError::DiskFull { dir: at, free, .. } = &refused else {
        panic!("not a full disk: {refused:?}");
    };
    assert_eq!(at, dir.path());
    assert_eq!(store.free_bytes(), Some(*free));
    let message = refused.to_string();
    assert!(
        message.contains("free space on that volume") && message.contains("resumes by itself"),
        "{message}"
    );
    assert!(store.outbox_get("after").expect("read").is_none());
    assert!(matches!(
        store.receive(&record("ZM-DSW", "m1", 1)).await,
        Err(StoreError::DiskFull { .. })
    ));
    assert!(matches!(
        store.put_blob([1; 32], b"case".to_vec()).await,
        Err(StoreError::DiskFull { .. })
    ));
    // What does not grow the store still goes: a delivery's outcome, an acknowledgement.
    let mut done = store.outbox_get("before").expect("read").expect("queued");
    done.state = pb::DeliveryState::Delivered as i32;
    assert!(store.outbox_update("before", &done).await.expect("update"));
    assert!(!store.failure().is_failed());
    // Space back (here: no reserve): it resumes without a restart.
    let store = store.with_min_free_bytes(0);
    store
        .enqueue("after", queued_to("MW-DSW"))
        .await
        .expect("enqueue again");
}

#[tokio::test]
async fn a_failed_commit_is_never_acknowledged_and_fails_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let mut failed = store.failure().subscribe();
        store
            .enqueue("kept", queued_to("MW-DSW"))
            .await
            .expect("acknowledged");
        store
            .committer
            .fail_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let lost = store
            .enqueue("lost", queued_to("MW-DSW"))
            .await
            .expect_err("the commit failed");
        assert!(matches!(lost, StoreError::Failed(_)), "{lost:?}");
        assert!(lost.to_string().contains("fdatasync failed"), "{lost}");
        assert!(store.failure().is_failed());
        assert!(*failed.borrow_and_update(), "the latch was told");
        // Every later write is refused at once, growth or not, and nothing is flushed again.
        for later in [
            store.enqueue("later", queued_to("MW-DSW")).await.err(),
            store.receive(&record("ZM-DSW", "m1", 1)).await.err(),
            store.set_webhook_cursor("hook", 1).await.err(),
            store.commit().await.err(),
        ] {
            let e = later.expect("refused");
            assert!(
                matches!(&e, StoreError::Failed(m) if m.contains("restart the node")),
                "{e:?}"
            );
        }
        assert!(matches!(store.room(), Err(StoreError::Failed(_))));
    }
    // A restart recovers: what was acknowledged is there, and it takes writes again.
    let store = reopen(dir.path());
    assert!(store.outbox_get("kept").expect("read").is_some());
    assert!(!store.failure().is_failed());
    store
        .enqueue("after-restart", queued_to("MW-DSW"))
        .await
        .expect("writes again");
}
