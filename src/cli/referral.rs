//! `kinbridge referral`: work a received referral (accept, decline with a reason, start,
//! close with an outcome: each tells the sender with a signed status update), and read where
//! a referral stands, with its history, at either end.

use anyhow::bail;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tonic::transport::Channel;

use super::NodeAccess;
use super::show::{enum_word, time};

/// Arguments of `kinbridge referral`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    access: NodeAccess,
    #[command(subcommand)]
    command: Command,
    /// Print the node's answers as JSON lines (protobuf JSON mapping) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the sender's receipt of the status update (0: do not wait).
    #[arg(long, global = true, default_value_t = 30)]
    wait: u32,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Accept a received referral: your service takes the case on.
    Accept {
        /// The inbox item (#N as `kinbridge inbox` lists it) or the referral's message id.
        referral: String,
    },
    /// Decline a received referral, with a reason code.
    Decline {
        /// The inbox item (#N) or the referral's message id.
        referral: String,
        /// Why, as a short code, e.g. no-capacity, out-of-area, duplicate.
        #[arg(long)]
        reason: String,
    },
    /// Start work on an accepted referral.
    Start {
        /// The inbox item (#N) or the referral's message id.
        referral: String,
    },
    /// Close a referral in progress, with an outcome code.
    Close {
        /// The inbox item (#N) or the referral's message id.
        referral: String,
        /// How the case ended, as a short code, e.g. reunified, placed-in-care, transferred.
        #[arg(long)]
        outcome: String,
    },
    /// Where a referral stands and its history: at the node that sent it or received it.
    Status {
        /// The referral's message id, or at the receiving node its inbox item (#N).
        referral: String,
    },
}

/// Runs the chosen referral command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let access = args.access.resolve()?;
    let mut client = access.local_client()?;
    let (referral, state, code) = match &args.command {
        Command::Accept { referral } => (referral, pb::ReferralState::Accepted, ""),
        Command::Decline { referral, reason } => {
            (referral, pb::ReferralState::Declined, reason.as_str())
        }
        Command::Start { referral } => (referral, pb::ReferralState::InProgress, ""),
        Command::Close { referral, outcome } => {
            (referral, pb::ReferralState::Closed, outcome.as_str())
        }
        Command::Status { referral } => {
            let referral_id = message_id(&mut client, referral).await?;
            return status(&mut client, referral_id, args.json).await;
        }
    };
    let (sequence, referral_id) = inbox_item(&mut client, referral).await?;
    let update = client
        .update_referral_status(pb::UpdateReferralStatusRequest {
            sequence,
            state: state as i32,
            code: code.to_owned(),
        })
        .await?
        .into_inner();
    if args.json {
        super::show::json_line(&update)?;
    } else {
        println!(
            "referral {referral_id} (inbox item #{sequence}) {}{}; status update {} queued for its sender",
            enum_word(state.as_str_name(), "REFERRAL_STATE_"),
            if code.is_empty() {
                String::new()
            } else {
                format!(" ({code})")
            },
            update.message_id
        );
    }
    super::send::follow_delivery(
        &mut client,
        &access.node_name(),
        &update.message_id,
        args.wait,
        args.json,
    )
    .await
}

/// Whether `text` names an inbox item (`3` or `#3`) rather than a message id.
fn is_sequence(text: &str) -> bool {
    let digits = text.trim_start_matches('#');
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The message id of the referral `text` names: itself, or the inbox item's.
async fn message_id(
    client: &mut LocalServiceClient<Channel>,
    text: &str,
) -> anyhow::Result<String> {
    if is_sequence(text) {
        let sequence = super::inbox::parse_seq(text)?;
        Ok(super::inbox::item(client, sequence).await?.message_id)
    } else {
        Ok(text.to_owned())
    }
}

/// How many inbox pages to look through for a message id before giving up.
const MAX_PAGES: usize = 10_000;

/// The inbox item (sequence, message id) that `text` names: `#N`, or a message id looked up
/// in the inbox as the caller may see it.
async fn inbox_item(
    client: &mut LocalServiceClient<Channel>,
    text: &str,
) -> anyhow::Result<(u64, String)> {
    if is_sequence(text) {
        let sequence = super::inbox::parse_seq(text)?;
        // An item this client may not see is the node's to refuse (and to log): the update
        // goes ahead by its number.
        let id = match super::inbox::item(client, sequence).await {
            Ok(item) => item.message_id,
            Err(_) => format!("in inbox item #{sequence}"),
        };
        return Ok((sequence, id));
    }
    let mut after = 0;
    for _ in 0..MAX_PAGES {
        let items = client
            .list_inbox(pb::ListInboxRequest {
                after_sequence: after,
                limit: 0,
                include_acknowledged: true,
            })
            .await?
            .into_inner()
            .items;
        let Some(last) = items.last() else {
            break;
        };
        after = last.sequence;
        if let Some(item) = items.iter().find(|i| i.message_id == text) {
            return Ok((item.sequence, item.message_id.clone()));
        }
    }
    bail!(
        "no referral {text} in the inbox as this client may see it: give the inbox item #N `kinbridge inbox --all` lists (a referral is worked at the node it was sent to, by a caseworker of its unit)"
    )
}

/// Prints where the referral stands and its history, oldest first.
async fn status(
    client: &mut LocalServiceClient<Channel>,
    referral_id: String,
    json: bool,
) -> anyhow::Result<()> {
    let status = client
        .get_referral_status(pb::GetReferralStatusRequest { referral_id })
        .await?
        .into_inner();
    if json {
        return super::show::json_line(&status);
    }
    let word = |state: i32| {
        enum_word(
            pb::ReferralState::try_from(state).map_or("?", |s| s.as_str_name()),
            "REFERRAL_STATE_",
        )
    };
    let current = status.history.last().map(|c| &c.code);
    println!(
        "referral {}: {}{}",
        status.referral_id,
        word(status.state),
        match current {
            Some(code) if !code.is_empty() => format!(" ({code})"),
            _ => String::new(),
        }
    );
    if status.history.is_empty() {
        println!("  not yet received by its recipient (no signed receipt held)");
    }
    for change in &status.history {
        println!(
            "  {}  {}{}  by {}",
            time(change.at_ms),
            word(change.state),
            if change.code.is_empty() {
                String::new()
            } else {
                format!(" ({})", change.code)
            },
            change.by
        );
    }
    Ok(())
}
