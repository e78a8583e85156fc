//! `kinbridge inbox`: list, watch or acknowledge a running node's inbox, and `inbox show N`
//! for one item's details. The list prints ids, kinds, purposes and data categories: what a
//! caseworker needs to pick an item up; `show` prints the referral as the caller may see it.

use std::path::PathBuf;

use futures::StreamExt;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tonic::transport::Channel;

use super::NodeAccess;

/// Arguments of `kinbridge inbox`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    access: NodeAccess,
    #[command(subcommand)]
    command: Option<Command>,
    /// Include acknowledged items.
    #[arg(long)]
    all: bool,
    /// Acknowledge the item with this sequence number.
    #[arg(long)]
    ack: Option<u64>,
    /// Keep watching for new items.
    #[arg(long)]
    watch: bool,
    /// Write the signed parts of the item with this sequence number to `--out`, for checking
    /// by hand (docs/protocol.md, "Verifying an envelope by hand").
    #[arg(long, requires = "out")]
    export: Option<u64>,
    /// Directory for `--export`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print items as JSON lines (protobuf JSON mapping; without the signed envelope and
    /// receipt, which `--export` writes) instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// One inbox item with its details, as your role and unit may see them: the consent,
    /// the chain of custody and the referral's categories (identity, sex, birth date,
    /// contact, location, protection concerns, services requested, ...).
    Show {
        /// The item's sequence number, as `kinbridge inbox` lists it (#N).
        seq: String,
    },
}

/// Runs the chosen inbox action.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let access = args.access.resolve()?;
    let mut client = access.local_client()?;
    if let Some(Command::Show { seq }) = &args.command {
        let sequence = parse_seq(seq)?;
        let item = item(&mut client, sequence).await?;
        return show(&mut client, item, args.json).await;
    }
    if let Some(sequence) = args.ack {
        client
            .acknowledge_inbox_item(pb::AcknowledgeInboxItemRequest { sequence })
            .await?;
        println!("acknowledged inbox item {sequence}");
        return Ok(());
    }
    if let (Some(sequence), Some(out)) = (args.export, &args.out) {
        return export(&mut client, sequence, out).await;
    }
    if args.watch {
        let mut stream = client
            .watch_inbox(pb::WatchInboxRequest { after_sequence: 0 })
            .await?
            .into_inner();
        while let Some(item) = stream.next().await {
            print_item(item?, args.json)?;
        }
        return Ok(());
    }
    let items = client
        .list_inbox(pb::ListInboxRequest {
            after_sequence: 0,
            limit: 0,
            include_acknowledged: args.all,
        })
        .await?
        .into_inner()
        .items;
    if items.is_empty() && !args.json {
        println!("inbox of {} is empty", access.node_name());
    }
    for item in items {
        print_item(item, args.json)?;
    }
    Ok(())
}

/// An inbox sequence number as given: `3` or `#3`.
pub fn parse_seq(text: &str) -> anyhow::Result<u64> {
    text.trim_start_matches('#').parse().map_err(|_| {
        anyhow::anyhow!(
            "'{text}' is not an inbox sequence number: give the number `kinbridge inbox` lists as #N"
        )
    })
}

/// The inbox item with this sequence number, as the caller may see it.
pub async fn item(
    client: &mut LocalServiceClient<Channel>,
    sequence: u64,
) -> anyhow::Result<pb::InboxItem> {
    client
        .list_inbox(pb::ListInboxRequest {
            after_sequence: sequence.saturating_sub(1),
            limit: 1,
            include_acknowledged: true,
        })
        .await?
        .into_inner()
        .items
        .into_iter()
        .find(|i| i.sequence == sequence)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no inbox item #{sequence} that this client may see (a caseworker sees only its unit's items): list them with `kinbridge inbox --all`"
            )
        })
}

/// The item without its signed envelope and receipt (bytes for machines that verify them,
/// written by `--export`): what `--json` prints.
fn for_json(mut item: pb::InboxItem) -> pb::InboxItem {
    item.envelope = None;
    item.receipt = None;
    item
}

fn print_item(item: pb::InboxItem, json: bool) -> anyhow::Result<()> {
    if json {
        super::show::json_line(&for_json(item))
    } else {
        println!("{}", describe(&item));
        Ok(())
    }
}

/// Prints one item with its details; for a referral, where its workflow stands.
async fn show(
    client: &mut LocalServiceClient<Channel>,
    item: pb::InboxItem,
    json: bool,
) -> anyhow::Result<()> {
    use super::show::{enum_word, time};
    if json {
        return super::show::json_line(&for_json(item));
    }
    let kind = pb::MessageKind::try_from(item.kind).map_or("?", |k| k.as_str_name());
    let purpose = pb::Purpose::try_from(item.purpose).map_or("?", |p| p.as_str_name());
    let mut out = format!(
        "inbox item #{} {}\n  kind: {}\n  purpose: {}\n  from: {}\n",
        item.sequence,
        item.message_id,
        enum_word(kind, "MESSAGE_KIND_"),
        enum_word(purpose, "PURPOSE_"),
        item.sender,
    );
    if !item.custody.is_empty() {
        out.push_str(&format!(
            "  custody before the sender: {}\n",
            item.custody.join(" > ")
        ));
    }
    if !item.unit.is_empty() {
        out.push_str(&format!("  unit: {}\n", item.unit));
    }
    out.push_str(&format!(
        "  created: {}\n  received: {}\n",
        time(item.created_at_ms),
        time(item.received_at_ms)
    ));
    if !item.correlation_id.is_empty() {
        out.push_str(&format!("  correlation: {}\n", item.correlation_id));
    }
    out.push_str(&format!(
        "  categories: {}\n",
        category_words(&item.data_categories).join(", ")
    ));
    if let Some(c) = &item.consent {
        let giver = pb::ConsentGiver::try_from(c.given_by).map_or("?", |g| g.as_str_name());
        let purposes: Vec<String> = c
            .purposes
            .iter()
            .map(|p| {
                enum_word(
                    pb::Purpose::try_from(*p).map_or("?", |p| p.as_str_name()),
                    "PURPOSE_",
                )
            })
            .collect();
        out.push_str(&format!(
            "  consent: {} given by {}{}\n    purposes: {}\n    categories: {}\n    valid: {} to {}\n",
            c.consent_id,
            enum_word(giver, "CONSENT_GIVER_"),
            if c.child_views_recorded {
                " (child's views recorded)"
            } else {
                ""
            },
            purposes.join(", "),
            category_words(&c.categories).join(", "),
            time(c.valid_from_ms),
            time(c.expires_at_ms),
        ));
        if !c.onward_recipients.is_empty() {
            out.push_str(&format!(
                "    may pass on to: {}\n",
                c.onward_recipients.join(", ")
            ));
        }
    }
    let carries_case = matches!(
        pb::MessageKind::try_from(item.kind),
        Ok(pb::MessageKind::Referral | pb::MessageKind::CaseTransfer)
    );
    if carries_case {
        // The workflow as the node knows it; a client that may not read it is told by the
        // item itself, so a refusal here only leaves the line out.
        if let Ok(status) = client
            .get_referral_status(pb::GetReferralStatusRequest {
                referral_id: item.message_id.clone(),
            })
            .await
        {
            let state = status.into_inner().state;
            let name = pb::ReferralState::try_from(state).map_or("?", |s| s.as_str_name());
            out.push_str(&format!(
                "  workflow: {}\n",
                enum_word(name, "REFERRAL_STATE_")
            ));
        }
    }
    out.push_str(&format!(
        "  acknowledged: {}\n",
        if item.acknowledged { "yes" } else { "no" }
    ));
    if item.purged {
        out.push_str("  the payload was purged (consent withdrawn, or past retention)\n");
    } else if let Some(referral) = &item.referral {
        out.push_str("referral:\n");
        super::show::render(&mut out, &super::show::node(referral)?, 2);
    }
    print!("{out}");
    Ok(())
}

/// Data categories as words, e.g. `protection-concerns`.
fn category_words(categories: &[i32]) -> Vec<String> {
    categories
        .iter()
        .map(|c| {
            super::show::enum_word(
                pb::DataCategory::try_from(*c).map_or("?", |c| c.as_str_name()),
                "DATA_CATEGORY_",
            )
        })
        .collect()
}

/// Writes the envelope's and receipt's signed bytes as separate files.
async fn export(
    client: &mut LocalServiceClient<Channel>,
    sequence: u64,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let items = client
        .list_inbox(pb::ListInboxRequest {
            after_sequence: sequence.saturating_sub(1),
            limit: 1,
            include_acknowledged: true,
        })
        .await?
        .into_inner()
        .items;
    let item = items
        .into_iter()
        .find(|i| i.sequence == sequence)
        .ok_or_else(|| anyhow::anyhow!("no inbox item with sequence {sequence}"))?;
    let envelope = item.envelope.unwrap_or_default();
    let receipt = item.receipt.unwrap_or_default();
    std::fs::create_dir_all(out)?;
    let files = [
        ("header.bin", &envelope.header),
        ("signature.bin", &envelope.signature),
        ("payload.bin", &envelope.payload),
        ("payload-salt.bin", &envelope.payload_salt),
        ("receipt-body.bin", &receipt.body),
        ("receipt-signature.bin", &receipt.signature),
    ];
    for (name, bytes) in files {
        std::fs::write(out.join(name), bytes)?;
    }
    println!(
        "wrote the signed parts of inbox item #{sequence} ({}) to {}",
        item.message_id,
        out.display()
    );
    Ok(())
}

/// One line per item.
pub fn describe(item: &pb::InboxItem) -> String {
    let kind = pb::MessageKind::try_from(item.kind).map_or("?", |k| k.as_str_name());
    let purpose = pb::Purpose::try_from(item.purpose).map_or("?", |p| p.as_str_name());
    let categories: Vec<_> = item
        .data_categories
        .iter()
        .map(|c| pb::DataCategory::try_from(*c).map_or("?", |c| c.as_str_name()))
        .collect();
    format!(
        "#{} {} from {} {} {} consent={} categories=[{}]{}",
        item.sequence,
        item.message_id,
        item.sender,
        kind,
        purpose,
        item.consent_id,
        categories.join(","),
        if item.acknowledged {
            " (acknowledged)"
        } else {
            ""
        }
    )
}
