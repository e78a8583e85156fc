//! `kinbridge dev-certs`: make whatever is missing of the development PKI.

use std::path::PathBuf;

use kinbridge_core::NodeId;
use kinbridge_node::devpki;

/// Arguments of `kinbridge dev-certs`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the PKI.
    #[arg(long, default_value = "certs-dev")]
    out: PathBuf,
    /// Node ids to make material for (default: the demo federation).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
}

/// Makes the missing files and says what it made.
pub fn run(args: &Args) -> anyhow::Result<()> {
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
