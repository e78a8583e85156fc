//! `kinbridge keys`: the node's Ed25519 signing keys, through the admin service of a running
//! node (a client certificate with the admin role; auditors may list).
//!
//! `rotate` makes a new key and publishes it to every peer under the current key; the node
//! signs with the new key once every peer has acknowledged it. `revoke` revokes one of the
//! node's own keys (published to every peer) or, with `--peer`, a peer's key here only (when
//! that peer reports a compromise out of band).

use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::admin_service_client::AdminServiceClient;

use super::NodeAccess;

/// Arguments of `kinbridge keys`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List the node's own keys and the keys it trusts for each peer.
    List {
        #[command(flatten)]
        access: NodeAccess,
        /// Print the node's answer as one JSON line (protobuf JSON mapping) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a new signing key and publish it to every peer.
    Rotate {
        #[command(flatten)]
        access: NodeAccess,
        /// Id of the new key; the default is `<NODE>-<unix seconds>`.
        #[arg(long, default_value = "")]
        key_id: String,
        /// Days the current key stays valid after the rotation.
        #[arg(long, default_value_t = 7)]
        overlap_days: u64,
        /// Days the new key is valid.
        #[arg(long, default_value_t = 730)]
        lifetime_days: u64,
        /// Write the new public key (SPKI PEM) here, for peers configured by hand and for
        /// auditors.
        #[arg(long)]
        public_key_out: Option<std::path::PathBuf>,
    },
    /// Revoke a key: signatures it makes from the revocation time on are refused.
    Revoke {
        #[command(flatten)]
        access: NodeAccess,
        /// The key's id.
        #[arg(long)]
        key_id: String,
        /// Revoke a peer's key here (the peer reported it compromised); without it, one of
        /// this node's own keys is revoked and the revocation sent to every peer.
        #[arg(long)]
        peer: Option<String>,
        /// compromised, superseded or retired.
        #[arg(long)]
        reason: String,
        /// From when (RFC 3339, e.g. 2026-11-20T08:00:00Z): the moment the key may first have
        /// been exposed. The default is now.
        #[arg(long)]
        at: Option<String>,
    },
}

fn when(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn show(k: &pb::KeyInfo) {
    let mut state = Vec::new();
    if k.active {
        state.push("ACTIVE".to_owned());
    }
    if k.revoked_at_ms != 0 {
        state.push(format!(
            "revoked {} ({})",
            when(k.revoked_at_ms),
            k.revocation_reason
        ));
    }
    println!(
        "  {:<10} {:<28} from {:<20} until {:<20} {:<9} {}",
        k.node_id,
        k.key_id,
        when(k.not_before_ms),
        when(k.not_after_ms),
        k.source,
        state.join(", ")
    );
    println!("             fingerprint {}", k.fingerprint);
    if !k.acknowledged_by.is_empty() {
        println!(
            "             acknowledged by {}",
            k.acknowledged_by.join(", ")
        );
    }
}

/// Runs the chosen keys command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::List { access, json } => {
            let mut client = AdminServiceClient::new(access.channel()?);
            let keys = client.list_keys(pb::ListKeysRequest {}).await?.into_inner();
            if json {
                return super::show::json_line(&keys);
            }
            println!("own keys:");
            keys.own.iter().for_each(show);
            println!("peers' keys:");
            keys.peers.iter().for_each(show);
            Ok(())
        }
        Command::Rotate {
            access,
            key_id,
            overlap_days,
            lifetime_days,
            public_key_out,
        } => {
            let mut client = AdminServiceClient::new(access.channel()?);
            let r = client
                .rotate_key(pb::RotateKeyRequest {
                    key_id,
                    overlap_seconds: overlap_days.saturating_mul(86_400),
                    lifetime_seconds: lifetime_days.saturating_mul(86_400),
                })
                .await?
                .into_inner();
            let key = r.key.unwrap_or_default();
            println!(
                "new signing key {} (fingerprint {}) valid until {}",
                key.key_id,
                key.fingerprint,
                when(key.not_after_ms)
            );
            println!(
                "announced to: {}; the node signs with it once each has acknowledged it",
                if r.announced_to.is_empty() {
                    "(no peer)".to_owned()
                } else {
                    r.announced_to.join(", ")
                }
            );
            if let Some(path) = public_key_out {
                std::fs::write(&path, &r.public_key_pem)?;
                println!("public key written to {}", path.display());
            }
            Ok(())
        }
        Command::Revoke {
            access,
            key_id,
            peer,
            reason,
            at,
        } => {
            let revoked_at_ms = match at {
                None => 0,
                Some(text) => {
                    let t = time::OffsetDateTime::parse(
                        &text,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "--at: an RFC 3339 time such as 2026-11-20T08:00:00Z, not '{text}'"
                        )
                    })?;
                    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)?
                }
            };
            let mut client = AdminServiceClient::new(access.channel()?);
            let r = client
                .revoke_key(pb::RevokeKeyRequest {
                    node_id: peer.unwrap_or_default(),
                    key_id,
                    revoked_at_ms,
                    reason,
                })
                .await?
                .into_inner();
            let key = r.key.unwrap_or_default();
            println!(
                "key {} of {} revoked from {} ({})",
                key.key_id,
                key.node_id,
                when(key.revoked_at_ms),
                key.revocation_reason
            );
            if !r.announced_to.is_empty() {
                println!("revocation sent to: {}", r.announced_to.join(", "));
            }
            Ok(())
        }
    }
}
