//! Crash safety: while referrals flow, a bounded loop SIGKILLs the receiving or the sending
//! node process at random instants and restarts it, twenty times. After each restart the victim's audit log
//! verifies and holds every event it acknowledged; at the end every acknowledged submission
//! is delivered, in the recipient's inbox exactly once, and the two logs reconcile.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kinbridge_proto::v1 as pb;
use rand::{Rng, SeedableRng};

/// Kill-and-restart rounds, alternating the receiver and the sender.
const ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_instants_loses_no_acknowledged_event() {
    let seed: u64 = std::env::var("KINBRIDGE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    // KINBRIDGE_TEST_DIR keeps the nodes' stores and logs for a look after a failure.
    let root = std::env::var_os("KINBRIDGE_TEST_DIR")
        .map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::create_dir_all(&root).expect("test dir");
    let mut nodes = TwoNodes::start(&root);
    let pki = nodes.pki.clone();
    let (zm_local, mw_local) = (nodes.zambia.local_addr, nodes.malawi.local_addr);
    let client = || client_for(&pki, "ZM-DSW", "caseworker", zm_local);

    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..ROUNDS {
        // Referrals flow: a submitter keeps submitting at Zambia until told to stop.
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let submitter = {
            let acknowledged = Arc::clone(&acknowledged);
            let mut zm = client();
            tokio::spawn(async move {
                for _ in 0..10_000 {
                    if *stop_rx.borrow() {
                        break;
                    }
                    let mut request = tonic::Request::new(submit_request("MW-DSW"));
                    request.set_timeout(Duration::from_secs(5));
                    tokio::select! {
                        r = zm.submit_referral(request) => {
                            if let Ok(r) = r {
                                acknowledged.lock().expect("lock").push(r.into_inner().message_id);
                            }
                        }
                        _ = stop_rx.changed() => break,
                    }
                }
            })
        };
        // The random instant.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..300))).await;
        let victim_is_receiver = round % 2 == 0;
        if victim_is_receiver {
            nodes.restart_malawi();
        } else {
            nodes.restart_zambia();
        }
        let _ = stop_tx.send(true);
        tokio::time::timeout(WAIT, submitter)
            .await
            .expect("submitter stops")
            .expect("submitter");

        // After the restart: the victim's log verifies and holds every event it acknowledged.
        let out = root.join(format!("round{round}.jsonl"));
        if victim_is_receiver {
            // Which messages Zambia holds Malawi's receipt for, asked before the export, so
            // every one of them was receipted before the log was exported.
            let mut zm = client();
            let mut receipted = Vec::new();
            let ids = acknowledged.lock().expect("lock").clone();
            for id in ids {
                let d = zm
                    .get_delivery(pb::GetDeliveryRequest {
                        message_id: id.clone(),
                        wait_ms: 0,
                    })
                    .await
                    .expect("delivery state")
                    .into_inner();
                if d.state == pb::DeliveryState::Delivered as i32 {
                    receipted.push(id);
                }
            }
            let log = entries(&export_and_verify(&pki, "MW-DSW", mw_local, &out).await);
            for id in receipted {
                assert!(
                    log.iter()
                        .any(|e| e.message_id == id && e.event == pb::AuditEvent::Received as i32),
                    "round {round}: Malawi receipted {id} but its log has no RECEIVED entry"
                );
            }
        } else {
            let log = entries(&export_and_verify(&pki, "ZM-DSW", zm_local, &out).await);
            for id in acknowledged.lock().expect("lock").iter() {
                assert!(
                    log.iter().any(|e| &e.message_id == id && e.event == pb::AuditEvent::Submitted as i32),
                    "round {round}: Zambia acknowledged {id} but its log has no SUBMITTED entry"
                );
            }
        }
    }

    // Every acknowledged submission is delivered, and in Malawi's inbox exactly once.
    let ids = acknowledged.lock().expect("lock").clone();
    assert!(
        ids.len() >= ROUNDS,
        "too few referrals flowed: {}",
        ids.len()
    );
    let mut zm = client();
    for id in &ids {
        let d = wait_delivery(&mut zm, id).await;
        assert_eq!(
            d.state,
            pb::DeliveryState::Delivered as i32,
            "{id}: {}",
            d.last_error
        );
    }
    let mut mw = client_for(&pki, "MW-DSW", "caseworker", mw_local);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut after = 0;
    loop {
        let page = mw
            .list_inbox(pb::ListInboxRequest {
                after_sequence: after,
                limit: 1000,
                include_acknowledged: true,
            })
            .await
            .expect("list")
            .into_inner()
            .items;
        let Some(last) = page.last() else { break };
        after = last.sequence;
        for item in page {
            order.push(item.message_id.clone());
            *seen.entry(item.message_id).or_default() += 1;
        }
    }
    for id in &ids {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "{id} must be in Malawi's inbox exactly once"
        );
    }
    // In the order Zambia acknowledged them.
    let positions: Vec<usize> = ids
        .iter()
        .filter_map(|id| order.iter().position(|o| o == id))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "Malawi's inbox is not in submission order"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "no message is in the inbox twice"
    );

    // Both logs verify and reconcile: the only allowed difference is a message Zambia queued
    // without acknowledging it (killed mid-submission) and had not finished delivering.
    verify_and_reconcile(
        &pki,
        &root,
        ("ZM-DSW", zm_local),
        ("MW-DSW", mw_local),
        &ids,
        "",
    )
    .await;
}
