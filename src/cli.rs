//! Command-line parsing, logging setup and dispatch to one module per command.

mod audit;
mod config;
mod consent;
mod demo;
mod dev_certs;
mod inbox;
mod keys;
mod log_caps;
mod node;
mod peers;
mod send;
mod stats;
mod tracing_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kinbridge: a cross-border referral messaging gateway for child protection authorities.
#[derive(Parser)]
#[command(name = "kinbridge", version, about)]
struct Cli {
    /// Write logs as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a node from its config file until SIGINT or SIGTERM.
    Node(node::Args),
    /// Make (or complete) the development PKI for the demo federation.
    DevCerts(dev_certs::Args),
    /// Start the demo federation on loopback and send a referral across a border.
    Demo(demo::Args),
    /// Submit a referral at a running node and wait for the recipient's signed receipt.
    Send(send::Args),
    /// List, watch or acknowledge a running node's inbox.
    Inbox(inbox::Args),
    /// The auditor's tools: export, verify, reconcile, check-peers, checkpoint.
    Audit(audit::Args),
    /// Pass a received referral on to the next node of a route, as its consent allows.
    Forward(consent::ForwardArgs),
    /// Withdraw a consent: delete its data here and on every node it names, with receipts.
    Withdraw(consent::WithdrawArgs),
    /// The node's signing keys: list, rotate, revoke (admin role).
    Keys(keys::Args),
    /// The peer registry as the running node uses it (admin or auditor role).
    Peers(peers::Args),
    /// Check a node's config and every file it names, without starting the node.
    Config(config::Args),
    /// Family tracing: register a record or request, list matches, confirm (caseworker role).
    Tracing(tracing_cmd::Args),
    /// Counts for reporting, grouped by age band, sex, migratory status, purpose, route,
    /// month or outcome, small counts withheld (auditor or admin role).
    Stats(stats::Args),
}

/// Parses the command line, runs the command, and turns an error into exit code 1.
pub fn main() -> ExitCode {
    // Everything kinbridge creates (a node's data directory, sled's files among them, keys,
    // exports of received referrals) is its user's alone, whatever umask it was started with.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Node(_) => "info",
        // The demo tells its own story; the refusal it shows on purpose is not a warning.
        Command::Demo(_) => "error",
        _ => "warn",
    };
    init_tracing(cli.log_json, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => node::run(args).await,
            Command::DevCerts(args) => dev_certs::run(&args),
            Command::Demo(args) => demo::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Inbox(args) => inbox::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Forward(args) => consent::forward(args).await,
            Command::Withdraw(args) => consent::withdraw(args).await,
            Command::Keys(args) => keys::run(args).await,
            Command::Peers(args) => peers::run(args).await,
            Command::Config(args) => config::run(&args),
            Command::Tracing(args) => tracing_cmd::run(args).await,
            Command::Stats(args) => stats::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => {
                    let reason = kinbridge_grpc::status::refusal_code(status)
                        .map(|r| format!(" [{r}]"))
                        .unwrap_or_default();
                    eprintln!(
                        "error: the node answered {:?}{reason}: {}",
                        status.code(),
                        status.message()
                    );
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `default_level`) and by the caps of
/// [`log_caps`] that `RUST_LOG` cannot raise, in colour only on a terminal. Every gRPC
/// request's lines carry its span: port, method and request id.
fn init_tracing(json: bool, default_level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry()
        .with(log_caps::caps())
        .with(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}

/// How to reach a running node's local port with a given role's certificate.
#[derive(clap::Args)]
pub struct NodeAccess {
    /// Config of the node.
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Address of the node's local port (default: `listen.local` of the config).
    #[arg(long)]
    pub node: Option<std::net::SocketAddr>,
    /// Client certificate with the role the command needs: auditor for `audit`, admin for
    /// `keys` (default: the config's [client]).
    #[arg(long, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Its private key.
    #[arg(long, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
}

impl NodeAccess {
    /// A mutual-TLS channel to the node's local port as this certificate's client.
    pub fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        let config = kinbridge_node::NodeConfig::load(&self.config)?;
        let (addr, cert, key) = local_access(
            &config,
            self.node,
            self.cert.as_deref(),
            self.key.as_deref(),
        )?;
        Ok(kinbridge_grpc::client::local_channel(
            &addr,
            &config.tls_ca_certificate,
            &cert,
            &key,
        )?)
    }
}

/// The local-service client for the node configured in `config` (at `node` if given), as
/// the config's `[client]`.
fn local_client_for(
    config: &kinbridge_node::NodeConfig,
    node: Option<std::net::SocketAddr>,
) -> anyhow::Result<
    kinbridge_proto::v1::local_service_client::LocalServiceClient<tonic::transport::Channel>,
> {
    let (addr, cert, key) = local_access(config, node, None, None)?;
    Ok(kinbridge_grpc::client::local_client(
        &addr,
        &config.tls_ca_certificate,
        &cert,
        &key,
    )?)
}

/// Where and as whom to reach the local port of the node of `config`: `node` or the config's
/// `listen.local`, and `cert`/`key` or the config's `[client]`.
fn local_access(
    config: &kinbridge_node::NodeConfig,
    node: Option<std::net::SocketAddr>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<(String, std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = match (cert, key, &config.cli_client) {
        (Some(c), Some(k), _) => (c.to_path_buf(), k.to_path_buf()),
        (_, _, Some(client)) => (client.certificate.clone(), client.private_key.clone()),
        _ => anyhow::bail!(
            "{}: no [client] section and no --cert/--key: the CLI needs a local-client certificate",
            config.source.display()
        ),
    };
    let mut addr = node.unwrap_or(config.local_listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok((addr.to_string(), cert, key))
}
