//! `kinbridge forward` and `kinbridge withdraw`: pass a received referral on along a route, and
//! withdraw a consent this node originated data under.

use kinbridge_proto::v1 as pb;

use super::NodeAccess;

/// Arguments of `kinbridge forward`.
#[derive(clap::Args)]
pub struct ForwardArgs {
    #[command(flatten)]
    access: NodeAccess,
    /// Sequence number of the inbox item to pass on.
    #[arg(long)]
    seq: u64,
    /// The next node of the route; the consent must name it for onward transfer.
    #[arg(long)]
    to: String,
    /// The next node's unit; the default is its intake.
    #[arg(long, default_value = "")]
    to_unit: String,
    /// Seconds to wait for the next node's receipt (0: do not wait).
    #[arg(long, default_value_t = 30)]
    wait: u32,
    /// Print the node's answers as JSON lines (protobuf JSON mapping) instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `kinbridge withdraw`.
#[derive(clap::Args)]
pub struct WithdrawArgs {
    #[command(flatten)]
    access: NodeAccess,
    /// The consent being withdrawn.
    #[arg(long)]
    consent: String,
    /// Seconds to wait for every node's signed receipt.
    #[arg(long, default_value_t = 30)]
    wait: u32,
}

/// Forwards, reports the new message id and, as `send` does, waits for the next node's
/// signed receipt.
pub async fn forward(args: ForwardArgs) -> anyhow::Result<()> {
    let access = args.access.resolve()?;
    let mut client = access.local_client()?;
    let r = client
        .forward_referral(pb::ForwardReferralRequest {
            sequence: args.seq,
            recipient: args.to.clone(),
            ttl_seconds: 0,
            recipient_unit: args.to_unit.clone(),
        })
        .await?
        .into_inner();
    if args.json {
        super::show::json_line(&r)?;
    } else {
        println!(
            "queued {} for {} (inbox item #{} passed on; chain of custody recorded)",
            r.message_id, args.to, args.seq
        );
    }
    super::send::follow_delivery(
        &mut client,
        &access.node_name(),
        &r.message_id,
        args.wait,
        args.json,
    )
    .await
}

/// Withdraws, then waits for each node's signed receipt.
pub async fn withdraw(args: WithdrawArgs) -> anyhow::Result<()> {
    let access = args.access.resolve()?;
    let mut client = access.local_client()?;
    let r = client
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: args.consent.clone(),
        })
        .await?
        .into_inner();
    println!(
        "consent {} withdrawn at {}: {} payload(s) deleted here",
        args.consent,
        access.node_name(),
        r.purged_here
    );
    let mut missing = 0;
    for notice in &r.notices {
        let d = client
            .get_delivery(pb::GetDeliveryRequest {
                message_id: notice.message_id.clone(),
                wait_ms: args.wait.saturating_mul(1000),
            })
            .await?
            .into_inner();
        if d.state == pb::DeliveryState::Delivered as i32 {
            println!("  {}: deleted; signed receipt held", notice.recipient);
        } else {
            missing += 1;
            println!(
                "  {}: not confirmed yet ({}); the node keeps retrying",
                notice.recipient, d.last_error
            );
        }
    }
    if missing > 0 {
        anyhow::bail!("{missing} node(s) have not confirmed the deletion yet");
    }
    Ok(())
}
