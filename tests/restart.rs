//! Durability across a real crash: node processes are SIGKILLed and restarted from the same
//! store; what a node receipted is still in its inbox.

mod common;

use common::*;

#[tokio::test]
async fn inbox_survives_sigkill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = TwoNodes::start(dir.path());
    let mut zambia = nodes.client("ZM-DSW", "caseworker");
    let delivered: Vec<_> = deliver_referrals(&mut zambia, "MW-DSW", 5)
        .await
        .into_iter()
        .map(|(id, d)| (id, d.receipt.expect("receipt")))
        .collect();

    nodes.restart_malawi();
    let mut malawi = nodes.client("MW-DSW", "caseworker");
    let items = open_inbox(&mut malawi).await;
    let got: Vec<_> = items
        .iter()
        .map(|i| (i.sequence, i.message_id.clone()))
        .collect();
    assert_eq!(items.len(), delivered.len(), "got {got:?}");
    for ((id, receipt), item) in delivered.iter().zip(&items) {
        assert_eq!(&item.message_id, id, "inbox keeps arrival order");
        assert_eq!(
            item.receipt.as_ref().map(|r| (&r.body, &r.signature)),
            Some((&receipt.body, &receipt.signature)),
            "the stored receipt is the one returned"
        );
        assert_eq!(item.referral, Some(sample_referral()));
    }
}

/// A caseworker who says "item 3" on the phone must keep meaning one item: inbox items are
/// numbered 1, 2, 3, … and go on from the last number after a SIGKILL and restart.
#[tokio::test]
async fn inbox_numbers_go_on_without_a_jump_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = TwoNodes::start(dir.path());
    let mut zambia = nodes.client("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 3).await;
    nodes.restart_malawi();
    let mut zambia = nodes.client("ZM-DSW", "caseworker");
    deliver_referrals(&mut zambia, "MW-DSW", 2).await;
    let mut malawi = nodes.client("MW-DSW", "caseworker");
    let numbers: Vec<u64> = open_inbox(&mut malawi)
        .await
        .iter()
        .map(|i| i.sequence)
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
}
