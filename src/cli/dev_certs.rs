//! `kinbridge dev-certs`: make whatever is missing of the development PKI, or issue one more
//! local-client certificate from it (`dev-certs client`: a role, a unit, tags). Each
//! development client certificate is also written as a PKCS#12 file (`<client>.p12`, its key,
//! its certificate and the local CA that issued it, under [`DEV_P12_PASSWORD`]) that a
//! browser imports to open the console.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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

/// The password of every development PKCS#12 file: printed and documented, not a secret (the
/// development PKI's keys sit unencrypted next to these files anyway).
pub const DEV_P12_PASSWORD: &str = "kinbridge-dev";

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
    let mut created = devpki::ensure(&args.out, &nodes)?;
    for node in &nodes {
        let files = devpki::DevNodeFiles::new(&args.out, node);
        for role in devpki::DEV_ROLES {
            let cert = files.client_cert(role);
            let p12 = cert.with_extension("p12");
            if !p12.exists() || created.contains(&cert) {
                write_pkcs12(&cert, &files.client_key(role), &files.local_ca_cert(), &p12)?;
                created.push(p12);
            }
        }
    }
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
        "browsers import the clients' .p12 files (password {DEV_P12_PASSWORD}) to open the console"
    );
    println!(
        "DEVELOPMENT ONLY: nodes refuse this material unless their config says development = true"
    );
    Ok(())
}

/// Writes the certificate `cert` (with the `ca` that issued it) and its private `key` (PEM,
/// PKCS#8) as the PKCS#12 file `out`, readable by its owner only, under [`DEV_P12_PASSWORD`].
pub fn write_pkcs12(cert: &Path, key: &Path, ca: &Path, out: &Path) -> anyhow::Result<()> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let mut chain = Vec::new();
    for path in [cert, ca] {
        for der in kinbridge_grpc::tls::load_certs(path)? {
            chain.push(
                Certificate::from_der(der.as_ref())
                    .with_context(|| format!("{}: not an X.509 certificate", path.display()))?,
            );
        }
    }
    let key_der = kinbridge_grpc::tls::load_private_key(key)?;
    let private = PrivateKey::from_der(key_der.secret_der())
        .with_context(|| format!("{}: not a PKCS#8 private key", key.display()))?;
    let alias = cert
        .file_stem()
        .map_or_else(|| "client".to_owned(), |s| s.to_string_lossy().into_owned());
    let mut store = KeyStore::new();
    store.add_entry(
        &alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(alias.as_str(), private, chain)),
    );
    let bytes = store
        .writer(DEV_P12_PASSWORD)
        .write()
        .with_context(|| format!("cannot encode {} as PKCS#12", cert.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    file.write_all(&bytes)
        .with_context(|| format!("cannot write {}", out.display()))?;
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
    let p12 = args.out.join(format!("{}.p12", args.name));
    let files = devpki::DevNodeFiles::new(&args.pki, &node);
    write_pkcs12(&cert, &key, &files.local_ca_cert(), &p12)?;
    println!("  certificate {}", cert.display());
    println!("  private key {}", key.display());
    println!(
        "  for a browser {} (PKCS#12, password {DEV_P12_PASSWORD})",
        p12.display()
    );
    println!(
        "DEVELOPMENT ONLY: nodes refuse this material unless their config says development = true"
    );
    Ok(())
}
