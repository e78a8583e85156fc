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
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::audit_service_client::AuditServiceClient;
use tonic::transport::Channel;

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
    /// List a running node's audit entries, decoded, oldest first (read through the export;
    /// entries hold metadata and digests only, never payload data).
    List {
        #[command(flatten)]
        access: NodeAccess,
        #[command(flatten)]
        filter: ListFilter,
        /// Print entries as JSON lines (protobuf JSON mapping, plus their "index").
        #[arg(long)]
        json: bool,
    },
}

/// Which entries `audit list` prints.
#[derive(clap::Args)]
struct ListFilter {
    /// Only entries of this event, e.g. submitted, delivered, received, refused,
    /// referral-status (repeatable).
    #[arg(long)]
    event: Vec<String>,
    /// Only entries about this message id.
    #[arg(long)]
    message: Option<String>,
    /// Only entries from this time on: YYYY-MM-DD (UTC) or RFC 3339.
    #[arg(long)]
    since: Option<String>,
    /// At most this many entries (the oldest that match).
    #[arg(long)]
    limit: Option<usize>,
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
        Command::List {
            access,
            filter,
            json,
        } => list(&access, &filter, json).await,
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

fn audit_client(access: &NodeAccess) -> anyhow::Result<AuditServiceClient<Channel>> {
    Ok(AuditServiceClient::new(access.channel()?))
}

async fn export(access: &NodeAccess, out: &Path) -> anyhow::Result<()> {
    let access = access.resolve()?;
    let mut client = AuditServiceClient::new(access.channel()?);
    let node = match &access.config {
        Some(config) => config.node_id.to_string(),
        // Without a config, the node's signed checkpoint names it (origin kinbridge.audit/<id>).
        None => {
            let note = client
                .get_checkpoint(pb::GetCheckpointRequest::default())
                .await?
                .into_inner()
                .checkpoint;
            let origin = note.lines().next().unwrap_or_default();
            origin
                .strip_prefix("kinbridge.audit/")
                .unwrap_or(origin)
                .to_owned()
        }
    };
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let count =
        kinbridge_grpc::client::export_log(&mut client, &node, BufWriter::new(file)).await?;
    println!(
        "wrote {count} audit entries of {node} and their signed checkpoints to {}",
        out.display()
    );
    Ok(())
}

/// `--event` as an audit event: `submitted`, `referral-status` or `AUDIT_EVENT_SUBMITTED`.
fn parse_event(text: &str) -> anyhow::Result<pb::AuditEvent> {
    let upper = text.to_ascii_uppercase().replace('-', "_");
    let name = if upper.starts_with("AUDIT_EVENT_") {
        upper
    } else {
        format!("AUDIT_EVENT_{upper}")
    };
    match pb::AuditEvent::from_str_name(&name) {
        Some(event) if event != pb::AuditEvent::Unspecified => Ok(event),
        _ => {
            let known: Vec<String> = (1..=64)
                .filter_map(|n| pb::AuditEvent::try_from(n).ok())
                .map(|e| super::show::enum_word(e.as_str_name(), "AUDIT_EVENT_"))
                .collect();
            bail!(
                "--event '{text}' is not an audit event: one of {}",
                known.join(", ")
            )
        }
    }
}

/// `--since` as milliseconds since the epoch.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    match super::stats::day_ms(text, "since") {
        Ok(ms) => Ok(ms),
        Err(_) => bail!(
            "--since '{text}': give a date YYYY-MM-DD (UTC) or an RFC 3339 time such as 2026-11-20T08:00:00Z"
        ),
    }
}

/// One entry as a line a person can read: what, when, about which message, between whom.
fn describe_entry(index: u64, e: &pb::AuditEntry) -> String {
    use super::show::{enum_word, time};
    let event = pb::AuditEvent::try_from(e.event).map_or("?", |v| v.as_str_name());
    let mut line = format!(
        "#{index} {} {}",
        time(e.time_ms),
        enum_word(event, "AUDIT_EVENT_")
    );
    let mut field = |name: &str, value: &str| {
        if !value.is_empty() {
            line.push_str(&format!(" {name}={value}"));
        }
    };
    field("message", &e.message_id);
    if e.kind != 0 {
        let kind = pb::MessageKind::try_from(e.kind).map_or("?", |k| k.as_str_name());
        field("kind", &enum_word(kind, "MESSAGE_KIND_"));
    }
    field("from", &e.sender);
    field("to", &e.recipient);
    if e.purpose != 0 {
        let purpose = pb::Purpose::try_from(e.purpose).map_or("?", |p| p.as_str_name());
        field("purpose", &enum_word(purpose, "PURPOSE_"));
    }
    field("consent", &e.consent_id);
    let categories: Vec<String> = e
        .data_categories
        .iter()
        .map(|c| {
            enum_word(
                pb::DataCategory::try_from(*c).map_or("?", |c| c.as_str_name()),
                "DATA_CATEGORY_",
            )
        })
        .collect();
    field("categories", &categories.join(","));
    field("actor", &e.actor);
    field("peer", &e.peer);
    field("reason", &e.reason);
    field("method", &e.method);
    if e.attempts > 0 {
        field("attempts", &e.attempts.to_string());
    }
    if e.refused_count > 0 {
        field("more_refusals", &e.refused_count.to_string());
    }
    field("custody", &e.custody.join(">"));
    line
}

/// Streams the node's log through the export, decodes each entry and prints those that pass
/// the filter.
async fn list(access: &NodeAccess, filter: &ListFilter, json: bool) -> anyhow::Result<()> {
    use futures::StreamExt;
    use prost::Message;
    let events = filter
        .event
        .iter()
        .map(|e| parse_event(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let since = filter.since.as_deref().map(parse_since).transpose()?;
    let mut client = audit_client(access)?;
    let mut stream = client
        .export_log(pb::ExportLogRequest {})
        .await?
        .into_inner();
    let mut printed = 0usize;
    let limit = filter.limit.unwrap_or(usize::MAX);
    'chunks: while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        for (offset, bytes) in chunk.entries.iter().enumerate() {
            let index = chunk.first_index + offset as u64;
            let entry = pb::AuditEntry::decode(bytes.as_slice())
                .with_context(|| format!("audit entry {index} does not decode"))?;
            let wanted = (events.is_empty() || events.iter().any(|e| *e as i32 == entry.event))
                && filter
                    .message
                    .as_ref()
                    .is_none_or(|m| *m == entry.message_id)
                && since.is_none_or(|s| entry.time_ms >= s);
            if !wanted {
                continue;
            }
            if printed >= limit {
                break 'chunks;
            }
            printed += 1;
            if json {
                let mut value = serde_json::to_value(&entry).context("cannot write JSON")?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("index".into(), index.into());
                }
                println!("{value}");
            } else {
                println!("{}", describe_entry(index, &entry));
            }
        }
    }
    if printed == 0 && !json {
        println!("no audit entry matches");
    }
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
