//! `kinbridge audit`: the auditor's tools. `export` fetches a node's log into a portable file;
//! `verify` checks such a file offline against the node's public key; `reconcile` checks two
//! countries' files against each other; `check-peers` has a node prove each peer's log
//! consistent with the checkpoint it holds; `checkpoint` prints the latest signed checkpoint.

use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kinbridge_audit::checkpoint::NoteKey;
use kinbridge_audit::export::{Line, VerifiedExport, verify_export};
use kinbridge_audit::reconcile::reconcile;
use kinbridge_core::{KeyId, PeerKey};
use kinbridge_node::NodeConfig;
use kinbridge_proto::v1 as pb;

use super::NodeAccess;

/// Arguments of `kinbridge audit`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Write a running node's audit log (entries and signed checkpoints) to a file.
    Export {
        #[command(flatten)]
        access: NodeAccess,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an export offline: recompute the tree, check every checkpoint's signature and root.
    Verify {
        /// The export file.
        file: PathBuf,
        /// The node's Ed25519 public key (SPKI PEM), obtained from the node's authority. After a
        /// key rotation, give each key the log was signed with: `--key old.pub --key new.pub`.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
    },
    /// Check two nodes' verified exports against each other: every delivery on one side has its
    /// receipt on the other.
    Reconcile {
        /// The first export.
        a: PathBuf,
        /// The second export.
        b: PathBuf,
        /// Public key(s) of the first export's node.
        #[arg(long, required = true)]
        key_a: Vec<PathBuf>,
        /// Public key(s) of the second export's node.
        #[arg(long, required = true)]
        key_b: Vec<PathBuf>,
    },
    /// Have the node ask each peer for a consistency proof from the checkpoint it holds.
    CheckPeers {
        #[command(flatten)]
        access: NodeAccess,
    },
    /// Print the node's latest signed checkpoint.
    Checkpoint {
        #[command(flatten)]
        access: NodeAccess,
    },
}

/// Runs the chosen audit command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Export { access, out } => export(&access, &out).await,
        Command::Verify { file, key } => {
            let v = verify_file(&file, &key, false)?;
            println!(
                "OK: {} holds {} entries of {}; {} signed checkpoint(s) verified; root {}",
                file.display(),
                v.size,
                v.origin,
                v.checkpoints,
                hex::encode(v.root)
            );
            Ok(())
        }
        Command::Reconcile { a, b, key_a, key_b } => {
            let va = verify_file(&a, &key_a, true)?;
            let vb = verify_file(&b, &key_b, true)?;
            let report = reconcile(&va.node, &va.entries, &vb.node, &vb.entries);
            for m in &report.mismatches {
                println!("MISMATCH {m}");
            }
            println!(
                "{} and {}: {} deliveries matched with their signed receipts, {} mismatch(es)",
                va.node,
                vb.node,
                report.matched,
                report.mismatches.len()
            );
            if report.mismatches.is_empty() {
                Ok(())
            } else {
                bail!("the logs do not reconcile")
            }
        }
        Command::CheckPeers { access } => {
            let mut client = audit_client(&access)?;
            let report = client
                .check_peers(pb::CheckPeersRequest {})
                .await?
                .into_inner();
            let mut failed = 0;
            for p in &report.peers {
                let verdict = if p.consistent { "OK  " } else { "FAIL" };
                failed += usize::from(!p.consistent);
                println!("{verdict} {}: {}", p.peer, p.detail);
            }
            if failed > 0 {
                bail!("{failed} peer(s) failed the check")
            } else {
                Ok(())
            }
        }
        Command::Checkpoint { access } => {
            let mut client = audit_client(&access)?;
            let cp = client
                .get_checkpoint(pb::GetCheckpointRequest::default())
                .await?
                .into_inner();
            print!("{}", cp.checkpoint);
            Ok(())
        }
    }
}

fn audit_client(
    access: &NodeAccess,
) -> anyhow::Result<
    kinbridge_proto::v1::audit_service_client::AuditServiceClient<tonic::transport::Channel>,
> {
    Ok(kinbridge_proto::v1::audit_service_client::AuditServiceClient::new(access.channel()?))
}

async fn export(access: &NodeAccess, out: &Path) -> anyhow::Result<()> {
    let config = NodeConfig::load(&access.config)?;
    let mut client = audit_client(access)?;
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let count = kinbridge_grpc::client::export_log(
        &mut client,
        config.node_id.as_str(),
        BufWriter::new(file),
    )
    .await?;
    println!(
        "wrote {count} audit entries of {} and their signed checkpoints to {}",
        config.node_id,
        out.display()
    );
    Ok(())
}

/// Verifies an export with the public keys in `key_files` (each checkpoint must verify under
/// one of them); the key name is the export's origin.
pub fn verify_file(
    file: &Path,
    key_files: &[PathBuf],
    keep_entries: bool,
) -> anyhow::Result<VerifiedExport> {
    let mut keys = Vec::with_capacity(key_files.len());
    for key_file in key_files {
        let pem = std::fs::read_to_string(key_file)
            .with_context(|| format!("cannot read {}", key_file.display()))?;
        let key = PeerKey::from_public_key_pem(KeyId::new("auditor-supplied")?, &pem)
            .with_context(|| format!("{}", key_file.display()))?;
        keys.push(key);
    }
    let open =
        || std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()));
    let origin = match BufReader::new(open()?).lines().next() {
        Some(Ok(first)) => match serde_json::from_str::<Line>(&first) {
            Ok(Line::Header { origin, .. }) => origin,
            _ => bail!(
                "{}: not a kinbridge audit export (no header line)",
                file.display()
            ),
        },
        _ => bail!("{}: empty or unreadable", file.display()),
    };
    let note_keys: Vec<NoteKey> = keys
        .iter()
        .map(|key| NoteKey {
            name: origin.clone(),
            key: *key.verifying_key(),
        })
        .collect();
    verify_export(BufReader::new(open()?), &note_keys, keep_entries).map_err(|e| {
        let mut said = format!("FAILED: {}: {e}", file.display());
        // The keys are named after the log's origin; say which file each one came from, so
        // another node's key given by mistake is recognised as such.
        if said.contains("carries no signature by key") {
            for (key_file, key) in key_files.iter().zip(&note_keys) {
                said.push_str(&format!(
                    "\n  --key {} is {}",
                    key_file.display(),
                    key.describe()
                ));
            }
        }
        anyhow::anyhow!(said)
    })
}
