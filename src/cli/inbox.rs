//! `kinbridge inbox`: list, watch or acknowledge a running node's inbox. Prints ids, kinds,
//! purposes and data categories: what a caseworker needs to pick an item up, not its content.

use std::path::PathBuf;

use futures::StreamExt;
use kinbridge_node::NodeConfig;
use kinbridge_proto::v1 as pb;

/// Arguments of `kinbridge inbox`.
#[derive(clap::Args)]
pub struct Args {
    /// Config of the node whose inbox to read.
    #[arg(long)]
    config: PathBuf,
    /// Address of the node's local port (default: `listen.local` of the config).
    #[arg(long)]
    node: Option<std::net::SocketAddr>,
    /// Include acknowledged items.
    #[arg(long)]
    all: bool,
    /// Acknowledge the item with this sequence number.
    #[arg(long)]
    ack: Option<u64>,
    /// Keep watching for new items.
    #[arg(long)]
    watch: bool,
    /// Write the signed parts of the item with this sequence number to `--out`, for checking
    /// by hand (docs/protocol.md, "Verifying an envelope by hand").
    #[arg(long, requires = "out")]
    export: Option<u64>,
    /// Directory for `--export`.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs the chosen inbox action.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let mut client = super::local_client_for(&config, args.node)?;
    if let Some(sequence) = args.ack {
        client
            .acknowledge_inbox_item(pb::AcknowledgeInboxItemRequest { sequence })
            .await?;
        println!("acknowledged inbox item {sequence}");
        return Ok(());
    }
    if let (Some(sequence), Some(out)) = (args.export, &args.out) {
        return export(&mut client, sequence, out).await;
    }
    if args.watch {
        let mut stream = client
            .watch_inbox(pb::WatchInboxRequest { after_sequence: 0 })
            .await?
            .into_inner();
        while let Some(item) = stream.next().await {
            println!("{}", describe(&item?));
        }
        return Ok(());
    }
    let items = client
        .list_inbox(pb::ListInboxRequest {
            after_sequence: 0,
            limit: 0,
            include_acknowledged: args.all,
        })
        .await?
        .into_inner()
        .items;
    if items.is_empty() {
        println!("inbox of {} is empty", config.node_id);
    }
    for item in &items {
        println!("{}", describe(item));
    }
    Ok(())
}

/// Writes the envelope's and receipt's signed bytes as separate files.
async fn export(
    client: &mut kinbridge_proto::v1::local_service_client::LocalServiceClient<
        tonic::transport::Channel,
    >,
    sequence: u64,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let items = client
        .list_inbox(pb::ListInboxRequest {
            after_sequence: sequence.saturating_sub(1),
            limit: 1,
            include_acknowledged: true,
        })
        .await?
        .into_inner()
        .items;
    let item = items
        .into_iter()
        .find(|i| i.sequence == sequence)
        .ok_or_else(|| anyhow::anyhow!("no inbox item with sequence {sequence}"))?;
    let envelope = item.envelope.unwrap_or_default();
    let receipt = item.receipt.unwrap_or_default();
    std::fs::create_dir_all(out)?;
    let files = [
        ("header.bin", &envelope.header),
        ("signature.bin", &envelope.signature),
        ("payload.bin", &envelope.payload),
        ("payload-salt.bin", &envelope.payload_salt),
        ("receipt-body.bin", &receipt.body),
        ("receipt-signature.bin", &receipt.signature),
    ];
    for (name, bytes) in files {
        std::fs::write(out.join(name), bytes)?;
    }
    println!(
        "wrote the signed parts of inbox item #{sequence} ({}) to {}",
        item.message_id,
        out.display()
    );
    Ok(())
}

/// One line per item.
pub fn describe(item: &pb::InboxItem) -> String {
    let kind = pb::MessageKind::try_from(item.kind).map_or("?", |k| k.as_str_name());
    let purpose = pb::Purpose::try_from(item.purpose).map_or("?", |p| p.as_str_name());
    let categories: Vec<_> = item
        .data_categories
        .iter()
        .map(|c| pb::DataCategory::try_from(*c).map_or("?", |c| c.as_str_name()))
        .collect();
    format!(
        "#{} {} from {} {} {} consent={} categories=[{}]{}",
        item.sequence,
        item.message_id,
        item.sender,
        kind,
        purpose,
        item.consent_id,
        categories.join(","),
        if item.acknowledged {
            " (acknowledged)"
        } else {
            ""
        }
    )
}
