//! `kinbridge node --config FILE`: run one node until SIGINT or SIGTERM. On either it stops
//! accepting, lets calls in flight finish, ends the delivery worker after its current
//! attempt, makes the store durable and exits 0.

use std::path::PathBuf;

use anyhow::Context;
use kinbridge_node::NodeConfig;
use kinbridge_node::server::{Listeners, prepare};

/// Arguments of `kinbridge node`.
#[derive(clap::Args)]
pub struct Args {
    /// The node's TOML config file (see config/ for examples).
    #[arg(long)]
    config: PathBuf,
}

/// Loads the config, checks everything it names, binds, prints a ready line and serves.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let node = prepare(&config)?;
    let listeners = Listeners::bind(&config).await?;
    let peer = listeners
        .peer
        .local_addr()
        .context("peer listener address")?;
    let local = listeners
        .local
        .local_addr()
        .context("local listener address")?;
    let metrics = match listeners.metrics.as_ref() {
        Some(l) => format!(
            " metrics={}://{}/metrics",
            if config.metrics_insecure_plain_http {
                "http"
            } else {
                "https"
            },
            l.local_addr().context("metrics listener address")?
        ),
        None => String::new(),
    };
    let http = match listeners.http.as_ref() {
        Some(l) => format!(
            " http=https://{}/v1/openapi.json",
            l.local_addr().context("HTTP listener address")?
        ),
        None => String::new(),
    };
    // Signal handlers are in place before the ready line: a SIGTERM sent as soon as the line
    // is read drains the node instead of killing it.
    let shutdown = shutdown_signal().context("installing the SIGTERM and SIGINT handlers")?;
    // Tests and scripts wait for this exact line.
    println!(
        "kinbridge node {} ready: peer={peer} local={local}{metrics}{http}",
        node.node_id()
    );
    node.serve(listeners, shutdown).await?;
    println!("kinbridge node {} stopped", config.node_id);
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that completes on
/// either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
