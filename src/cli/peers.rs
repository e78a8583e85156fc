//! `kinbridge peers list`: the peer registry as a running node uses it (admin or auditor role).
//! Peers are added, changed and removed in the config file, then `kinbridge config check` and a
//! restart; this shows what the node made of it and how delivery to each stands.

use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::admin_service_client::AdminServiceClient;

use super::NodeAccess;

/// Arguments of `kinbridge peers`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Each peer: endpoint, tags, trusted keys, what is queued for it, its held checkpoint.
    List {
        #[command(flatten)]
        access: NodeAccess,
        /// Print the node's answer as one JSON line (protobuf JSON mapping) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the chosen peers command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Command::List { access, json } = args.command;
    let mut client = AdminServiceClient::new(access.channel()?);
    let listed = client
        .list_peers(pb::ListPeersRequest {})
        .await?
        .into_inner();
    if json {
        return super::show::json_line(&listed);
    }
    let peers = listed.peers;
    if peers.is_empty() {
        println!("no peer is registered");
    }
    for p in peers {
        println!(
            "{}  {}  tags=[{}]  keys=[{}]",
            p.node_id,
            if p.endpoint.is_empty() {
                "(sends only)"
            } else {
                &p.endpoint
            },
            p.tags.join(","),
            p.trusted_key_ids.join(",")
        );
        if p.queued > 0 {
            let waiting_s = (kinbridge_core::UnixMillis::now().0 - p.oldest_queued_at_ms) / 1000;
            println!(
                "    {} queued, the oldest for {waiting_s} s{}",
                p.queued,
                if p.last_error.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {}", p.last_error)
                }
            );
        } else {
            println!("    nothing queued");
        }
        println!(
            "    held checkpoint of its log: {}",
            if p.held_checkpoint_size == 0 {
                "none yet".to_owned()
            } else {
                format!("size {}", p.held_checkpoint_size)
            }
        );
    }
    Ok(())
}
