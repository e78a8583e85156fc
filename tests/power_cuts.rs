//! Power cuts: two real node processes, Zambia sending to Malawi, each with its data directory
//! on its own fault file system (crates/faultfs: writes are lost unless fsynced). While several
//! callers submit referrals at Zambia, at a random instant one side is SIGKILLed and its power
//! cut (a clean cut, a torn last write, or a random subset of the unsynced writes persisted),
//! then restarted on what is left. At the end every acknowledged referral is in Malawi's inbox
//! exactly once, every receipt Zambia holds is one Malawi gave, both audit logs verify and
//! reconcile, and the node started every time.
//!
//! Rounds per side: `KINBRIDGE_POWER_CUTS` (default 3, about a minute); the seed is printed and
//! `KINBRIDGE_POWER_CUT_SEED` replays it. The full campaign (docs/durability.md, "Power cuts"):
//! `KINBRIDGE_POWER_CUTS=50 cargo test --test power_cuts -- --nocapture`.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kinbridge_faultfs::{Cut, FaultFs, Faults, Mounted};
use kinbridge_proto::v1 as pb;
use rand::{Rng, SeedableRng};

/// Rounds per side when `KINBRIDGE_POWER_CUTS` is not set: small enough for CI.
const DEFAULT_ROUNDS_PER_SIDE: usize = 3;

/// How long a round may wait, after its random instant, for the victim to hold unsynced writes.
const DIRTY_WAIT: Duration = Duration::from_millis(300);

/// Concurrent SubmitReferral callers at Zambia.
const SUBMITTERS: usize = 4;

/// Delivery has stopped draining if no referral reached Malawi's inbox for this long: three
/// times the delivery worker's longest backoff (30 s, `kinbridge_service::delivery`).
const DRAIN_STALL: Duration = Duration::from_secs(90);

/// The longest the drain may take in all (the full campaign leaves thousands to deliver).
const DRAIN_MAX: Duration = Duration::from_secs(1200);

/// Adds to `inbox` (by message id) the items of the inbox at `mw` after sequence `after`
/// (acknowledged or not), and moves `after` past them.
async fn read_inbox_after(
    mw: &mut kinbridge_proto::v1::local_service_client::LocalServiceClient<
        tonic::transport::Channel,
    >,
    after: &mut u64,
    inbox: &mut HashMap<String, Vec<pb::InboxItem>>,
) {
    for _ in 0..10_000 {
        let page = mw
            .list_inbox(pb::ListInboxRequest {
                after_sequence: *after,
                limit: 1000,
                include_acknowledged: true,
            })
            .await
            .expect("list Malawi's inbox")
            .into_inner()
            .items;
        let Some(last) = page.last() else { break };
        *after = last.sequence;
        for item in page {
            inbox.entry(item.message_id.clone()).or_default().push(item);
        }
    }
}

/// One side's figures for the table.
#[derive(Default)]
struct Side {
    rounds: usize,
    /// Message ids Zambia acknowledged during this side's rounds.
    acknowledged: Vec<String>,
    failed_starts: usize,
    /// Unsynced writes the cuts found (discarded, torn or partly persisted).
    unsynced_at_cuts: u64,
}

/// Starts the node of `config`, once more if it fails; `None` if it failed twice. Each failure
/// counts in `failed` and prints the node's log tail.
fn start_counted(config: &Path, failed: &mut usize) -> Option<NodeProcess> {
    for _ in 0..2 {
        let path = config.to_path_buf();
        match std::panic::catch_unwind(move || NodeProcess::start(&path)) {
            Ok(node) => return Some(node),
            Err(_) => {
                *failed += 1;
                let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                println!("a start failed; log tail:");
                for line in tail.iter().rev() {
                    println!("  {line}");
                }
            }
        }
    }
    None
}

fn mount(root: &Path, name: &str) -> Mounted {
    let backing = root.join(format!("{name}.backing"));
    let mnt = root.join(name);
    std::fs::create_dir_all(&backing).expect("backing dir");
    std::fs::create_dir_all(&mnt).expect("mount point");
    // The node refuses a data directory other users may read.
    std::fs::set_permissions(&backing, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    FaultFs::mount(&backing, &mnt).expect("mount the fault file system")
}

fn pick_cut(rng: &mut impl Rng) -> Cut {
    match rng.gen_range(0..3) {
        0 => Cut::Clean,
        1 => Cut::TearLast,
        _ => Cut::Reorder { seed: rng.r#gen() },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_lose_no_acknowledged_referral() {
    if !kinbridge_faultfs::fuse_available_or_skip("power_cuts_lose_no_acknowledged_referral") {
        return;
    }
    let rounds_per_side: usize = std::env::var("KINBRIDGE_POWER_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS_PER_SIDE);
    let seed: u64 = std::env::var("KINBRIDGE_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!(
        "power cuts: seed {seed} (KINBRIDGE_POWER_CUT_SEED={seed} replays it), \
         {rounds_per_side} rounds per side"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    // KINBRIDGE_TEST_DIR keeps the nodes' stores and logs for a look after a failure.
    let root = std::env::var_os("KINBRIDGE_TEST_DIR")
        .map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::create_dir_all(&root).expect("test dir");
    // TwoNodes keeps Zambia's store in zm/ and Malawi's in mw/: each is a fault file system.
    let zm_fs = mount(&root, "zm");
    let mw_fs = mount(&root, "mw");
    let (zm_faults, mw_faults): (Faults, Faults) = (zm_fs.faults(), mw_fs.faults());
    let mut nodes = TwoNodes::start(&root);
    let pki = nodes.pki.clone();
    let (zm_local, mw_local) = (nodes.zambia.local_addr, nodes.malawi.local_addr);
    let client = || client_for(&pki, "ZM-DSW", "caseworker", zm_local);

    let mut sender = Side::default();
    let mut receiver = Side::default();
    let mut gave_up = false;
    for round in 0..2 * rounds_per_side {
        let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|_| {
                let acknowledged = Arc::clone(&acknowledged);
                let mut zm = client();
                let mut stop_rx = stop_rx.clone();
                tokio::spawn(async move {
                    for _ in 0..10_000 {
                        if *stop_rx.borrow() {
                            break;
                        }
                        let mut request = tonic::Request::new(submit_request("MW-DSW"));
                        request.set_timeout(Duration::from_secs(5));
                        tokio::select! {
                            r = zm.submit_referral(request) => match r {
                                Ok(r) => acknowledged.lock().expect("lock").push(r.into_inner().message_id),
                                // Zambia is down or restarting: try again shortly.
                                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                            },
                            _ = stop_rx.changed() => break,
                        }
                    }
                })
            })
            .collect();
        // The random instant.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..500))).await;
        let cut = pick_cut(&mut rng);
        let victim_is_receiver = round % 2 == 0;
        let (side, faults, config) = if victim_is_receiver {
            (&mut receiver, &mw_faults, nodes.mw_config.clone())
        } else {
            (&mut sender, &zm_faults, nodes.zm_config.clone())
        };
        // Then, for up to DIRTY_WAIT, an instant when the victim has written data it has not
        // yet fsynced: a power cut there has something to lose.
        let dirty_deadline = tokio::time::Instant::now() + DIRTY_WAIT;
        while faults.stats().unsynced_writes == 0 && tokio::time::Instant::now() < dirty_deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let victim = if victim_is_receiver {
            &mut nodes.malawi
        } else {
            &mut nodes.zambia
        };
        std::mem::replace(victim, NodeProcess::placeholder()).kill();
        let lost = faults.stats();
        faults.power_cut(cut).expect("power cut");
        side.rounds += 1;
        side.unsynced_at_cuts += lost.unsynced_writes;
        let started = start_counted(&config, &mut side.failed_starts);
        let _ = stop_tx.send(true);
        for submitter in submitters {
            tokio::time::timeout(WAIT, submitter)
                .await
                .expect("submitter stops")
                .expect("submitter");
        }
        let acked = std::mem::take(&mut *acknowledged.lock().expect("lock"));
        println!(
            "round {round}: cut {} ({cut:?}, {} unsynced writes / {} bytes at the cut), {} acknowledged",
            if victim_is_receiver {
                "Malawi"
            } else {
                "Zambia"
            },
            lost.unsynced_writes,
            lost.unsynced_bytes,
            acked.len()
        );
        side.acknowledged.extend(acked);
        match started {
            Some(node) => *victim = node,
            None => {
                gave_up = true;
                break;
            }
        }
    }

    // Let delivery drain: until every acknowledged referral is in Malawi's inbox, or no new
    // one arrived for DRAIN_STALL, or DRAIN_MAX in all.
    let all: Vec<String> = sender
        .acknowledged
        .iter()
        .chain(&receiver.acknowledged)
        .cloned()
        .collect();
    let mut inbox: HashMap<String, Vec<pb::InboxItem>> = HashMap::new();
    let mut deliveries: HashMap<String, pb::GetDeliveryResponse> = HashMap::new();
    if !gave_up {
        let mut mw = client_for(&pki, "MW-DSW", "caseworker", mw_local);
        let start = tokio::time::Instant::now();
        let mut progress = (0, start);
        let mut after = 0;
        loop {
            // Only what arrived since the last look: listing the whole inbox each time would
            // slow Malawi down as it grows.
            read_inbox_after(&mut mw, &mut after, &mut inbox).await;
            let now = tokio::time::Instant::now();
            if all.iter().all(|id| inbox.contains_key(id))
                || now - progress.1 > DRAIN_STALL
                || now - start > DRAIN_MAX
            {
                break;
            }
            if inbox.len() > progress.0 {
                progress = (inbox.len(), now);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("drained in {:?}", start.elapsed());
        // What Zambia holds for each: its state and Malawi's receipt.
        let mut zm = client();
        for id in &all {
            let d = zm
                .get_delivery(pb::GetDeliveryRequest {
                    message_id: id.clone(),
                    wait_ms: if inbox.contains_key(id) { 10_000 } else { 0 },
                })
                .await
                .expect("delivery state")
                .into_inner();
            if d.state == pb::DeliveryState::Delivered as i32 {
                deliveries.insert(id.clone(), d);
            }
        }
    }

    // The table.
    println!(
        "\n{:<9} {:>6} {:>12} {:>9} {:>5} {:>10} {:>13} {:>14}",
        "side",
        "rounds",
        "acknowledged",
        "delivered",
        "lost",
        "duplicated",
        "failed starts",
        "unsynced cut"
    );
    let mut lost_total = 0;
    let mut duplicated_total = 0;
    for (name, side) in [("Zambia", &sender), ("Malawi", &receiver)] {
        let delivered = side
            .acknowledged
            .iter()
            .filter(|id| inbox.contains_key(*id))
            .count();
        let lost = side.acknowledged.len() - delivered;
        let duplicated = side
            .acknowledged
            .iter()
            .filter(|id| inbox.get(*id).is_some_and(|items| items.len() > 1))
            .count();
        lost_total += lost;
        duplicated_total += duplicated;
        println!(
            "{name:<9} {:>6} {:>12} {delivered:>9} {lost:>5} {duplicated:>10} {:>13} {:>14}",
            side.rounds,
            side.acknowledged.len(),
            side.failed_starts,
            side.unsynced_at_cuts
        );
    }
    println!(
        "faultfs: Zambia {:?}\nfaultfs: Malawi {:?}\n",
        zm_faults.stats(),
        mw_faults.stats()
    );

    let failed_starts = sender.failed_starts + receiver.failed_starts;
    assert_eq!(
        failed_starts, 0,
        "a node failed to start after a power cut (seed {seed})"
    );
    assert!(!gave_up);
    assert_eq!(lost_total, 0, "acknowledged referrals lost (seed {seed})");
    assert_eq!(
        duplicated_total, 0,
        "referrals delivered twice (seed {seed})"
    );
    assert!(
        inbox.values().all(|items| items.len() == 1),
        "a message is in Malawi's inbox twice (seed {seed})"
    );
    assert!(
        all.len() >= 2 * rounds_per_side,
        "too few referrals flowed: {}",
        all.len()
    );
    for id in &all {
        let d = deliveries
            .get(id)
            .unwrap_or_else(|| panic!("Zambia holds no receipt for {id} (seed {seed})"));
        let ours = d
            .receipt
            .as_ref()
            .expect("a delivered message has a receipt");
        let theirs = inbox[id][0]
            .receipt
            .as_ref()
            .expect("an inbox item has a receipt");
        assert_eq!(
            (&ours.body, &ours.signature),
            (&theirs.body, &theirs.signature),
            "{id}: the receipt Zambia holds is not the one Malawi gave (seed {seed})"
        );
    }

    // Both logs verify and reconcile: the only allowed difference is a message Zambia queued
    // without acknowledging it (killed mid-submission) and had not finished delivering.
    verify_and_reconcile(
        &pki,
        &root,
        ("ZM-DSW", zm_local),
        ("MW-DSW", mw_local),
        &all,
        &format!("(seed {seed})"),
    )
    .await;
    // And the auditor's CLI verifies the same exports.
    for (node, export) in [("ZM-DSW", "zm.jsonl"), ("MW-DSW", "mw.jsonl")] {
        let key = kinbridge_node::devpki::DevNodeFiles::new(&pki, &node_id(node)).signing_pub();
        let mut verify = kinbridge();
        verify
            .args(["audit", "verify"])
            .arg(root.join(export))
            .arg("--key")
            .arg(key);
        let out = run_bounded(verify);
        assert!(
            out.status.success() && text(&out.stdout).contains("OK:"),
            "kinbridge audit verify of {node}'s export: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    // The nodes go before their file systems.
    drop(nodes);
    drop(zm_fs);
    drop(mw_fs);
}

/// A power cut right after a node's first start, while sled's new store is barely written,
/// leaves a store the node opens. sled 0.34 writes its settings file (`store/conf`) in two
/// writes without an fsync; the store syncs it at open. Before it did, a cut that kept the
/// checksum but not the settings (or tore them) kept the node from ever starting again.
#[test]
fn a_power_cut_after_the_first_start_leaves_a_store_that_opens() {
    if !kinbridge_faultfs::fuse_available_or_skip(
        "a_power_cut_after_the_first_start_leaves_a_store_that_opens",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let pki = root.join("certs-dev");
    kinbridge_node::devpki::ensure(&pki, &[node_id("MW-DSW"), node_id("ZM-DSW")]).expect("pki");
    let cuts = [Cut::TearLast]
        .into_iter()
        .chain((1..=6).map(|seed| Cut::Reorder { seed }));
    for (i, cut) in cuts.enumerate() {
        let name = format!("node{i}");
        let fs = mount(root, &name);
        let toml = dev_config_toml(&pki, "MW-DSW", &root.join(&name), &[("ZM-DSW", None)]);
        let config = root.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("config");
        NodeProcess::start(&config).kill();
        fs.faults().power_cut(cut).expect("power cut");
        let mut failed = 0;
        let node = start_counted(&config, &mut failed);
        assert!(
            node.is_some() && failed == 0,
            "the node did not start after a power cut ({cut:?}) right after its first start"
        );
        drop(node);
        drop(fs);
    }
}
