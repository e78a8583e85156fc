//! `kinbridge demo`: the embedded default. Makes the development PKI if missing, starts the
//! demo federation's nodes on loopback (ports chosen by the OS, data in a temporary
//! directory), submits a referral at Zambia's node for Malawi's, and shows it arriving with
//! its signed receipt, which the demo verifies on its own from Malawi's public key; then it
//! exports both nodes' audit logs, verifies them offline and reconciles them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kinbridge_core::{EnvelopeDigest, Keyring, MessageId, NodeId, PeerKey, verify_receipt};
use kinbridge_node::devpki::{self, DevNodeFiles};
use kinbridge_node::server::{Listeners, RunningNode, spawn};
use kinbridge_proto::v1 as pb;
use tokio::net::TcpListener;

/// Arguments of `kinbridge demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Where the development PKI lives (made if missing).
    #[arg(long, default_value = "certs-dev")]
    certs: PathBuf,
}

/// Runs the demo and exits once the referral is delivered, received and acknowledged.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let nodes = devpki::dev_federation();
    let created = devpki::ensure(&args.certs, &nodes)?;
    println!(
        "1. development PKI in {}: {}",
        args.certs.display(),
        if created.is_empty() {
            "already complete".to_owned()
        } else {
            format!("made {} files", created.len())
        }
    );
    let data = tempfile_dir()?;
    let mut bound = Vec::new();
    for node in &nodes {
        let peer = TcpListener::bind("127.0.0.1:0").await?;
        let local = TcpListener::bind("127.0.0.1:0").await?;
        bound.push((node.clone(), peer, local));
    }
    let endpoints: Vec<(NodeId, SocketAddr)> = bound
        .iter()
        .map(|(n, p, _)| Ok((n.clone(), p.local_addr()?)))
        .collect::<std::io::Result<_>>()?;
    let mut running: Vec<RunningNode> = Vec::new();
    for (node, peer, local) in bound {
        let peers: Vec<_> = endpoints
            .iter()
            .filter(|(n, _)| n != &node)
            .map(|(n, addr)| (n.clone(), Some(format!("https://{addr}"))))
            .collect();
        let (peer_addr, local_addr) = (peer.local_addr()?, local.local_addr()?);
        let config = devpki::node_config(
            &args.certs,
            &node,
            &peers,
            &data.join(node.as_str()),
            peer_addr,
            local_addr,
        );
        let listeners = Listeners {
            peer,
            local,
            metrics: None,
            http: None,
        };
        running.push(spawn(&config, listeners)?);
    }
    println!("2. federation running on loopback over mutual TLS:");
    for n in &running {
        println!(
            "     {:7} peer port {}  local port {}",
            n.node_id.as_str(),
            n.peer_addr,
            n.local_addr
        );
    }
    let result = exchange(&args.certs, &data, &running).await;
    for n in running {
        n.shutdown().await?;
    }
    let _ = std::fs::remove_dir_all(&data);
    result?;
    println!(
        "done: a referral crossed from ZM-DSW to MW-DSW, signed, receipted, and its audit trail verified"
    );
    Ok(())
}

async fn exchange(certs: &Path, data: &Path, running: &[RunningNode]) -> anyhow::Result<()> {
    let (zm, mw) = (&running[0], &running[1]);
    let zm_files = DevNodeFiles::new(certs, &zm.node_id);
    let mw_files = DevNodeFiles::new(certs, &mw.node_id);
    let mut zambia = kinbridge_grpc::client::local_client(
        &zm.local_addr.to_string(),
        &zm_files.ca_cert(),
        &zm_files.client_cert("caseworker"),
        &zm_files.client_key("caseworker"),
    )?;
    let mut malawi = kinbridge_grpc::client::local_client(
        &mw.local_addr.to_string(),
        &mw_files.ca_cert(),
        &mw_files.client_cert("caseworker"),
        &mw_files.client_key("caseworker"),
    )?;
    // A fictional child: the demo prints categories and codes, never the names.
    let referral = pb::ReferralPayload {
        case_reference: "ZM-CHP-2026-0042".into(),
        requested_services: vec!["interim-care".into(), "family-tracing".into()],
        identity: Some(pb::IdentityData {
            given_names: vec!["Chipo".into()],
            family_names: vec!["Banda".into()],
            sex: pb::Sex::Female as i32,
            estimated_birth_year: 2013,
            languages: vec!["Chichewa".into(), "Bemba".into()],
            ..Default::default()
        }),
        protection_concerns: Some(pb::ProtectionConcerns {
            migratory_status: pb::MigratoryStatus::Unaccompanied as i32,
            urgency: pb::Urgency::High as i32,
            concerns: vec!["unaccompanied-minor".into()],
            narrative: String::new(),
        }),
        ..Default::default()
    };
    // The guardian consented, the child's views recorded, to a service referral to Malawi only.
    let now = kinbridge_core::UnixMillis::now();
    let consent = pb::ConsentScope {
        consent_id: "ZM-CONSENT-2026-0042".into(),
        given_by: pb::ConsentGiver::Guardian as i32,
        child_views_recorded: true,
        purposes: vec![pb::Purpose::ServiceReferral as i32],
        categories: vec![
            pb::DataCategory::Identity as i32,
            pb::DataCategory::ProtectionConcerns as i32,
        ],
        recipients: vec![mw.node_id.to_string()],
        valid_from_ms: now.0,
        expires_at_ms: now.plus_ms(90 * 86_400_000).0,
        ..Default::default()
    };
    let submitted = zambia
        .submit_referral(pb::SubmitReferralRequest {
            kind: pb::MessageKind::Referral as i32,
            recipient: mw.node_id.to_string(),
            purpose: pb::Purpose::ServiceReferral as i32,
            consent: Some(consent.clone()),
            correlation_id: "ZM-CHP-2026-0042".into(),
            ttl_seconds: 3600,
            referral: Some(referral.clone()),
            recipient_unit: String::new(),
        })
        .await
        .context("submit at ZM-DSW")?
        .into_inner();
    println!(
        "3. ZM-DSW caseworker submitted referral {} for MW-DSW (categories: IDENTITY, PROTECTION_CONCERNS); it is durably queued",
        submitted.message_id
    );
    // The consent names Malawi only: the same referral for Zimbabwe is refused before it leaves.
    let refused = zambia
        .submit_referral(pb::SubmitReferralRequest {
            kind: pb::MessageKind::Referral as i32,
            recipient: "ZW-DSD".into(),
            purpose: pb::Purpose::ServiceReferral as i32,
            consent: Some(consent.clone()),
            correlation_id: String::new(),
            ttl_seconds: 3600,
            referral: Some(referral.clone()),
            recipient_unit: String::new(),
        })
        .await;
    match refused {
        Err(status) => println!(
            "   (the same child's referral for ZW-DSD is refused at ZM-DSW: {})",
            status.message()
        ),
        Ok(_) => bail!("a referral the consent does not cover was accepted"),
    }
    let delivery = zambia
        .get_delivery(pb::GetDeliveryRequest {
            message_id: submitted.message_id.clone(),
            wait_ms: 20_000,
        })
        .await?
        .into_inner();
    if delivery.state != pb::DeliveryState::Delivered as i32 {
        bail!(
            "the referral was not delivered: state {} ({})",
            delivery.state,
            delivery.last_error
        );
    }
    let receipt = delivery.receipt.context("delivered without a receipt")?;
    let envelope = delivery.envelope.context("delivered without an envelope")?;
    let body = <pb::ReceiptBody as prost::Message>::decode(receipt.body.as_slice())?;
    println!(
        "4. delivered after {} attempt(s); MW-DSW's signed receipt: key {}, envelope digest {}…",
        delivery.attempts,
        body.signing_key_id,
        &hex_prefix(&body.envelope_digest)
    );
    let pem = std::fs::read_to_string(mw_files.signing_pub())?;
    let ring = Keyring::new(vec![PeerKey::from_public_key_pem(
        mw_files.signing_key_id(),
        &pem,
    )?]);
    verify_receipt(
        &receipt.into(),
        &zm.node_id,
        MessageId::new(&submitted.message_id)?,
        EnvelopeDigest::compute(&envelope.header, &envelope.signature),
        &mw.node_id,
        &ring,
    )?;
    println!(
        "5. receipt verified independently against MW-DSW's public key ({})",
        mw_files.signing_pub().display()
    );
    let items = malawi
        .list_inbox(pb::ListInboxRequest {
            after_sequence: 0,
            limit: 10,
            include_acknowledged: false,
        })
        .await?
        .into_inner()
        .items;
    let item = items
        .iter()
        .find(|i| i.message_id == submitted.message_id)
        .context("the referral is not in MW-DSW's inbox")?;
    println!("6. MW-DSW inbox: {}", super::inbox::describe(item));
    malawi
        .acknowledge_inbox_item(pb::AcknowledgeInboxItemRequest {
            sequence: item.sequence,
        })
        .await?;
    println!(
        "7. MW-DSW caseworker acknowledged inbox item #{}",
        item.sequence
    );
    audit_trail(certs, data, zm, mw).await
}

/// Exports both nodes' audit logs as their auditors would, verifies each offline against the
/// node's public key, and reconciles them.
async fn audit_trail(
    certs: &Path,
    data: &Path,
    zm: &RunningNode,
    mw: &RunningNode,
) -> anyhow::Result<()> {
    let mut exports = Vec::new();
    for node in [zm, mw] {
        let files = DevNodeFiles::new(certs, &node.node_id);
        let mut client = kinbridge_grpc::client::audit_client(
            &node.local_addr.to_string(),
            &files.ca_cert(),
            &files.client_cert("auditor"),
            &files.client_key("auditor"),
        )?;
        let path = data.join(format!("{}-audit.jsonl", node.node_id));
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        kinbridge_grpc::client::export_log(&mut client, node.node_id.as_str(), file).await?;
        let verified = super::audit::verify_file(&path, &[files.signing_pub()], true)?;
        let events: Vec<String> = verified
            .entries
            .iter()
            .filter_map(|e| kinbridge_audit::entry::decode(e).ok())
            .map(|e| kinbridge_audit::entry::event_name(&e))
            .collect();
        println!(
            "8. {} auditor exported {} log entries [{}]; verified offline: {} signed checkpoint(s), root {}…",
            node.node_id,
            verified.size,
            events.join(", "),
            verified.checkpoints,
            &hex_prefix(&verified.root)
        );
        exports.push(verified);
    }
    let report = kinbridge_audit::reconcile::reconcile(
        &exports[0].node,
        &exports[0].entries,
        &exports[1].node,
        &exports[1].entries,
    );
    if !report.mismatches.is_empty() {
        for m in &report.mismatches {
            println!("   MISMATCH {m}");
        }
        bail!("the two audit logs do not reconcile");
    }
    println!(
        "9. reconciled ZM-DSW's and MW-DSW's logs: {} delivery matched with its signed receipt, no mismatch",
        report.matched
    );
    Ok(())
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A fresh directory for the demo's stores, removed when the demo ends.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kinbridge-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
