//! `kinbridge dev-certs`: make whatever is missing of the development PKI, or issue one more
//! local-client certificate from it (`dev-certs client`: a role, a unit, tags).

use std::path::PathBuf;

use anyhow::{Context, bail};
use kinbridge_core::firewall::Tag;
use kinbridge_core::{NodeId, UnitName};
use kinbridge_node::devpki;
use kinbridge_service::identity::Role;

/// Arguments of `kinbridge dev-certs`.
#[derive(clap::Args)]
pub struct Args {
    /// Issue one local-client certificate instead of completing the PKI.
    #[command(subcommand)]
    command: Option<Command>,
    /// Where to write the PKI.
    #[arg(long, default_value = "certs-dev")]
    out: PathBuf,
    /// Node ids to make material for (default: the demo federation).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Issue a local-client certificate from a node's development local CA, e.g.
    /// `client --node ZM-DSW --name officer1 --role system --tag immigration-enforcement`.
    Client(ClientArgs),
}

/// Arguments of `kinbridge dev-certs client`.
#[derive(clap::Args)]
struct ClientArgs {
    /// The development PKI to issue from (made if missing).
    #[arg(long, default_value = "certs-dev")]
    pki: PathBuf,
    /// The node whose local CA issues the certificate, e.g. ZM-DSW.
    #[arg(long)]
    node: String,
    /// The client's name (letters, digits, '.', '_', '-'), e.g. officer1.
    #[arg(long)]
    name: String,
    /// Its role: caseworker, system, auditor or admin.
    #[arg(long)]
    role: String,
    /// The unit it works in (required for a caseworker), e.g. chipata-district.
    #[arg(long)]
    unit: Option<String>,
    /// A tag (repeatable): child-protection or immigration-enforcement.
    #[arg(long)]
    tag: Vec<String>,
    /// Directory to write `<name>.crt` and `<name>.key` to.
    #[arg(long)]
    out: PathBuf,
}

/// Longest client name accepted.
const MAX_CLIENT_NAME: usize = 64;

/// Makes the missing files and says what it made.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(Command::Client(client)) = &args.command {
        return issue_client(client);
    }
    let nodes = if args.nodes.is_empty() {
        devpki::dev_federation()
    } else {
        args.nodes
            .iter()
            .map(|n| NodeId::new(n))
            .collect::<Result<Vec<_>, _>>()?
    };
    let created = devpki::ensure(&args.out, &nodes)?;
    if created.is_empty() {
        println!(
            "development PKI in {} is complete; nothing to do",
            args.out.display()
        );
    } else {
        println!(
            "made {} files of the development PKI in {}:",
            created.len(),
            args.out.display()
        );
        for path in created {
            println!("  {}", path.display());
        }
    }
    println!(
        "DEVELOPMENT ONLY: nodes refuse this material unless their config says development = true"
    );
    Ok(())
}

/// Checks every field as the node will read it, then issues the certificate.
fn issue_client(args: &ClientArgs) -> anyhow::Result<()> {
    let node = NodeId::new(&args.node).with_context(|| format!("--node '{}'", args.node))?;
    if args.name.is_empty()
        || args.name.len() > MAX_CLIENT_NAME
        || !args
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        bail!(
            "--name '{}': 1 to {MAX_CLIENT_NAME} letters, digits, '.', '_' or '-'",
            args.name
        );
    }
    let role = Role::parse(&args.role).with_context(|| {
        format!(
            "--role '{}': one of caseworker, system, auditor, admin",
            args.role
        )
    })?;
    let unit = args
        .unit
        .as_deref()
        .map(|u| UnitName::new(u).with_context(|| format!("--unit '{u}'")))
        .transpose()?;
    if role == Role::Caseworker && unit.is_none() {
        bail!("--unit is required for a caseworker: it sees only its unit's cases");
    }
    let mut tags = args
        .tag
        .iter()
        .map(|t| Tag::parse(t).with_context(|| "--tag"))
        .collect::<Result<Vec<_>, _>>()?;
    tags.sort();
    tags.dedup();
    devpki::ensure(&args.pki, std::slice::from_ref(&node))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let cert = args.out.join(format!("{}.crt", args.name));
    let key = args.out.join(format!("{}.key", args.name));
    let tag_names: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
    devpki::issue_local_client(
        &args.pki,
        &node,
        &args.name,
        role.as_str(),
        unit.as_ref().map(UnitName::as_str),
        &tag_names,
        &cert,
        &key,
    )?;
    println!(
        "issued local client '{}' of {node}: role {}{}{}",
        args.name,
        role.as_str(),
        unit.map(|u| format!(", unit {u}")).unwrap_or_default(),
        if tag_names.is_empty() {
            String::new()
        } else {
            format!(", tags {}", tag_names.join(", "))
        }
    );
    println!("  certificate {}", cert.display());
    println!("  private key {}", key.display());
    println!(
        "DEVELOPMENT ONLY: nodes refuse this material unless their config says development = true"
    );
    Ok(())
}
