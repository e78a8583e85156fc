//! `kinbridge config check --config FILE`: reads the config and loads every certificate and key
//! it names, as a node would at start, without opening the store or binding a port, so it can
//! run beside the node it checks. Every error names the file, the key and what is expected.

use std::path::PathBuf;

use kinbridge_node::NodeConfig;
use kinbridge_node::metrics::{EXPIRY_WARNING, certificate_not_after};
use kinbridge_node::server::check_material;

/// Arguments of `kinbridge config`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check a config file and the material it names; print what a node would start with.
    Check {
        /// The node's TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs the chosen config command.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let Command::Check { config } = &args.command;
    let config = NodeConfig::load(config)?;
    let material =
        check_material(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config.source.display()))?;
    let now = kinbridge_core::UnixMillis::now().0 / 1000;
    let mut warnings = 0;
    let mut certificates = vec![
        (
            "identity.certificate".to_owned(),
            config.tls_certificate.clone(),
        ),
        (
            "identity.ca_certificate".to_owned(),
            config.tls_ca_certificate.clone(),
        ),
        (
            "local_clients.ca_certificate".to_owned(),
            config.local_client_ca.clone(),
        ),
    ];
    for (i, peer) in config.peers.iter().enumerate() {
        certificates.push((
            format!("peers[{i}].ca_certificate"),
            peer.ca_certificate.clone(),
        ));
    }
    for (key, path) in &certificates {
        let Some(not_after) = certificate_not_after(path) else {
            continue;
        };
        let days = (not_after - now) / 86_400;
        if not_after <= now {
            anyhow::bail!(
                "{}: {key}: a valid certificate; {} expired {} day(s) ago",
                config.source.display(),
                path.display(),
                -days
            );
        }
        if not_after - now <= EXPIRY_WARNING.as_secs() as i64 {
            warnings += 1;
            println!(
                "warning: {}: {key}: {} expires in {days} day(s); renew it",
                config.source.display(),
                path.display()
            );
        }
    }
    println!(
        "OK: {} is a valid config for node {}{}",
        config.source.display(),
        config.node_id,
        if config.development {
            " (development: accepts the development PKI)"
        } else {
            ""
        }
    );
    println!(
        "  listens: peer={} local={}{}{}",
        config.peer_listen,
        config.local_listen,
        config
            .metrics_listen
            .map(|m| if config.metrics_insecure_plain_http {
                format!(" metrics={m} (plain HTTP: insecure_plain_http)")
            } else {
                format!(" metrics={m} (HTTPS, client certificate required)")
            })
            .unwrap_or_default(),
        config
            .http_listen
            .map(|h| format!(" http={h} (JSON API, HTTPS, client certificate required)"))
            .unwrap_or_default()
    );
    println!(
        "  signing key: {} (fingerprint {})",
        material.signing_key.id(),
        kinbridge_core::PeerKey::new(
            material.signing_key.id().clone(),
            material.signing_key.verifying_key(),
            None,
            None
        )
        .map(|k| k.fingerprint())
        .unwrap_or_default()
    );
    let epochs: Vec<String> = config
        .linkage_keys
        .iter()
        .map(|k| k.epoch.to_string())
        .collect();
    println!(
        "  family tracing: {}",
        if epochs.is_empty() {
            "off (no linkage key)".to_owned()
        } else {
            format!("linkage key epoch(s) {}", epochs.join(", "))
        }
    );
    println!("  own tags: {}", tag_list(&config.tags));
    for peer in &config.peers {
        println!("  peer {}: tags {}", peer.node_id, tag_list(&peer.tags));
    }
    let peers: Vec<String> = config.peers.iter().map(|p| p.node_id.to_string()).collect();
    println!(
        "  peers: {}; intake unit: {}; {} warning(s)",
        if peers.is_empty() {
            "(none)".to_owned()
        } else {
            peers.join(", ")
        },
        config.intake_unit,
        warnings
    );
    Ok(())
}

/// Normalised tags, and whether the firewall treats their holder as enforcement.
fn tag_list(tags: &[kinbridge_core::firewall::Tag]) -> String {
    let names: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
    format!(
        "[{}]{}",
        names.join(", "),
        if kinbridge_core::firewall::is_enforcement(tags) {
            " (immigration enforcement: the firewall sends it nothing for child protection)"
        } else {
            ""
        }
    )
}
