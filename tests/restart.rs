//! Durability across a real crash: node processes are SIGKILLed and restarted from the same
//! store; what a node receipted is still in its inbox.

mod common;

use common::*;
use kinbridge_proto::v1 as pb;

#[tokio::test]
async fn inbox_survives_sigkill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("certs-dev");
    kinbridge_node::devpki::ensure(&pki, &[node_id("ZM-DSW"), node_id("MW-DSW")]).expect("pki");

    // Malawi first: it only receives here, so Zambia needs no endpoint in its registry.
    let mw_config = dir.path().join("malawi.toml");
    std::fs::write(
        &mw_config,
        dev_config_toml(&pki, "MW-DSW", &dir.path().join("mw"), &[("ZM-DSW", None)]),
    )
    .expect("write");
    let malawi = NodeProcess::start(&mw_config);

    let zm_config = dir.path().join("zambia.toml");
    let endpoint = format!("https://{}", malawi.peer_addr);
    std::fs::write(
        &zm_config,
        dev_config_toml(
            &pki,
            "ZM-DSW",
            &dir.path().join("zm"),
            &[("MW-DSW", Some(endpoint))],
        ),
    )
    .expect("write");
    let zambia = NodeProcess::start(&zm_config);

    let zm_files = kinbridge_node::devpki::DevNodeFiles::new(&pki, &node_id("ZM-DSW"));
    let mut zm_client = kinbridge_node::client::local_client(
        &zambia.local_addr.to_string(),
        &zm_files.ca_cert(),
        &zm_files.client_cert("caseworker"),
        &zm_files.client_key("caseworker"),
    )
    .expect("client");
    let mut delivered = Vec::new();
    for _ in 0..5 {
        let id = zm_client
            .submit_referral(submit_request("MW-DSW"))
            .await
            .expect("submit")
            .into_inner()
            .message_id;
        let d = wait_delivery(&mut zm_client, &id).await;
        assert_eq!(
            d.state,
            pb::DeliveryState::Delivered as i32,
            "{}",
            d.last_error
        );
        delivered.push((id, d.receipt.expect("receipt")));
    }

    malawi.kill();
    let malawi = NodeProcess::start(&mw_config);
    let mw_files = kinbridge_node::devpki::DevNodeFiles::new(&pki, &node_id("MW-DSW"));
    let mut mw_client = kinbridge_node::client::local_client(
        &malawi.local_addr.to_string(),
        &mw_files.ca_cert(),
        &mw_files.client_cert("caseworker"),
        &mw_files.client_key("caseworker"),
    )
    .expect("client");
    let items = mw_client
        .list_inbox(pb::ListInboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    let got: Vec<_> = items
        .iter()
        .map(|i| (i.sequence, i.message_id.clone()))
        .collect();
    let want: Vec<_> = delivered.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(items.len(), delivered.len(), "got {got:?} want {want:?}");
    for ((id, receipt), item) in delivered.iter().zip(&items) {
        assert_eq!(&item.message_id, id, "inbox keeps arrival order");
        assert_eq!(
            item.receipt.as_ref(),
            Some(receipt),
            "the stored receipt is the one returned"
        );
        assert_eq!(item.referral, Some(sample_referral()));
    }
    zambia.kill();
    malawi.kill();
}
