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
mod referral;
mod send;
mod show;
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
    /// List, watch or acknowledge a running node's inbox; `inbox show N` for one item's details.
    Inbox(inbox::Args),
    /// Work a received referral (accept, decline, start, close) and read its status at
    /// either end (caseworker role).
    Referral(referral::Args),
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
            Command::Referral(args) => referral::run(args).await,
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
                    if let Some(hint) =
                        kinbridge_grpc::status::refusal_code(status).and_then(refusal_hint)
                    {
                        eprintln!("hint: {hint}");
                    }
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// What the person at the command line can do about a refusal, by its reason code.
fn refusal_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "other-unit" => {
            "a caseworker works only its own unit's cases: use the certificate of a caseworker of that unit (--cert/--key), or ask that unit"
        }
        "role-denied" => {
            "present a certificate with a role that may do this (--cert/--key): caseworker for cases, auditor for audit, admin for keys"
        }
        "unknown-inbox-item" | "unknown-referral" => {
            "list the inbox with `kinbridge inbox --all` and give the item's #N, at the node the referral was sent to"
        }
        _ => return None,
    })
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

/// How to reach a running node's local port, and as whom: a node config (`--config`), or
/// none when `--node`, `--ca`, `--cert` and `--key` are all given. Each option overrides what
/// the config says, so one config file (or none) serves several identities. The options are
/// global to the command: they may come before or after its subcommand.
#[derive(clap::Args)]
pub struct NodeAccess {
    /// Config of the node (its `listen.local`, `identity.ca_certificate` and `[client]`);
    /// not needed when --node, --ca, --cert and --key are given.
    #[arg(long, global = true)]
    pub config: Option<std::path::PathBuf>,
    /// Address of the node's local port, host:port (default: `listen.local` of the config).
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// Client certificate to present: a caseworker's for case work, the auditor's for
    /// `audit`, the admin's for `keys` (default: the config's [client]).
    #[arg(long, global = true, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Its private key.
    #[arg(long, global = true, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// The CA certificate that issued the node's TLS certificate (default: the config's
    /// `identity.ca_certificate`).
    #[arg(long, global = true)]
    pub ca: Option<std::path::PathBuf>,
}

/// Where and as whom a command reaches a node's local port, resolved from [`NodeAccess`].
pub struct Access {
    /// host:port of the local port.
    pub addr: String,
    /// The CA to trust for the node's certificate.
    pub ca: std::path::PathBuf,
    /// The client certificate presented.
    pub cert: std::path::PathBuf,
    /// Its private key.
    pub key: std::path::PathBuf,
    /// The node's config, when one was given.
    pub config: Option<kinbridge_node::NodeConfig>,
}

impl Access {
    /// The node as the output names it: its id from the config, or else its address.
    pub fn node_name(&self) -> String {
        self.config
            .as_ref()
            .map_or_else(|| self.addr.clone(), |c| c.node_id.to_string())
    }

    /// A mutual-TLS channel to the node's local port as this certificate's client.
    pub fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        Ok(kinbridge_grpc::client::local_channel(
            &self.addr, &self.ca, &self.cert, &self.key,
        )?)
    }

    /// The local-service client on that channel.
    pub fn local_client(
        &self,
    ) -> anyhow::Result<
        kinbridge_proto::v1::local_service_client::LocalServiceClient<tonic::transport::Channel>,
    > {
        Ok(kinbridge_proto::v1::local_service_client::LocalServiceClient::new(self.channel()?))
    }
}

impl NodeAccess {
    /// Resolves the options against the config (when given): the address (`--node` or
    /// `listen.local`, an unspecified IP taken as loopback), the CA, and the identity.
    pub fn resolve(&self) -> anyhow::Result<Access> {
        let config = self
            .config
            .as_deref()
            .map(kinbridge_node::NodeConfig::load)
            .transpose()?;
        let missing = |what: &str| {
            anyhow::anyhow!(
                "no --config and no {what}: give --config <node.toml>, or all of --node host:port, --ca <node CA certificate>, --cert and --key"
            )
        };
        let addr = match (&self.node, &config) {
            (Some(node), _) => node.clone(),
            (None, Some(c)) => c.local_listen.to_string(),
            (None, None) => return Err(missing("--node")),
        };
        let addr = match addr.parse::<std::net::SocketAddr>() {
            Ok(mut sa) if sa.ip().is_unspecified() => {
                sa.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                sa.to_string()
            }
            _ => addr,
        };
        let ca = match (&self.ca, &config) {
            (Some(ca), _) => ca.clone(),
            (None, Some(c)) => c.tls_ca_certificate.clone(),
            (None, None) => return Err(missing("--ca")),
        };
        let (cert, key) = match (&self.cert, &self.key, &config) {
            (Some(c), Some(k), _) => (c.clone(), k.clone()),
            (_, _, Some(c)) => match &c.cli_client {
                Some(client) => (client.certificate.clone(), client.private_key.clone()),
                None => anyhow::bail!(
                    "{}: no [client] section and no --cert/--key: the CLI needs a local-client certificate",
                    c.source.display()
                ),
            },
            _ => return Err(missing("--cert/--key")),
        };
        Ok(Access {
            addr,
            ca,
            cert,
            key,
            config,
        })
    }

    /// A mutual-TLS channel to the node's local port as this certificate's client.
    pub fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        self.resolve()?.channel()
    }
}
