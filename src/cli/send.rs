//! `kinbridge send`: submit a referral at a running node and wait for the signed receipt.

use std::path::PathBuf;

use anyhow::bail;
use kinbridge_node::NodeConfig;
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tonic::transport::Channel;

/// Purposes a referral can be sent for.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PurposeArg {
    /// Referral to a service.
    ServiceReferral,
    /// Family tracing.
    FamilyTracing,
    /// Family reunification.
    FamilyReunification,
    /// Best-interests determination.
    BestInterestsDetermination,
    /// Return and reintegration.
    ReturnAndReintegration,
    /// Alternative care.
    AlternativeCare,
}

impl From<PurposeArg> for pb::Purpose {
    fn from(p: PurposeArg) -> Self {
        match p {
            PurposeArg::ServiceReferral => pb::Purpose::ServiceReferral,
            PurposeArg::FamilyTracing => pb::Purpose::FamilyTracing,
            PurposeArg::FamilyReunification => pb::Purpose::FamilyReunification,
            PurposeArg::BestInterestsDetermination => pb::Purpose::BestInterestsDetermination,
            PurposeArg::ReturnAndReintegration => pb::Purpose::ReturnAndReintegration,
            PurposeArg::AlternativeCare => pb::Purpose::AlternativeCare,
        }
    }
}

/// Who gave the consent.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum GiverArg {
    /// The child.
    Child,
    /// A parent.
    Parent,
    /// A guardian.
    Guardian,
    /// A legal representative.
    LegalRepresentative,
    /// No consent could be obtained: a best-interests determination decided.
    BestInterests,
}

impl From<GiverArg> for pb::ConsentGiver {
    fn from(g: GiverArg) -> Self {
        match g {
            GiverArg::Child => pb::ConsentGiver::Child,
            GiverArg::Parent => pb::ConsentGiver::Parent,
            GiverArg::Guardian => pb::ConsentGiver::Guardian,
            GiverArg::LegalRepresentative => pb::ConsentGiver::LegalRepresentative,
            GiverArg::BestInterests => pb::ConsentGiver::BestInterestsDetermination,
        }
    }
}

/// Whether the child travels with caregivers.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum MigratoryArg {
    /// Without any adult caregiver.
    Unaccompanied,
    /// Without its usual caregivers, with other adults.
    Separated,
    /// With its caregivers.
    Accompanied,
    /// Left behind by migrating caregivers.
    LeftBehind,
}

impl From<MigratoryArg> for pb::MigratoryStatus {
    fn from(m: MigratoryArg) -> Self {
        match m {
            MigratoryArg::Unaccompanied => pb::MigratoryStatus::Unaccompanied,
            MigratoryArg::Separated => pb::MigratoryStatus::Separated,
            MigratoryArg::Accompanied => pb::MigratoryStatus::Accompanied,
            MigratoryArg::LeftBehind => pb::MigratoryStatus::LeftBehind,
        }
    }
}

/// Arguments of `kinbridge send`.
#[derive(clap::Args)]
pub struct Args {
    /// Config of the node to submit at; its [client] section names the certificate to use.
    #[arg(long)]
    config: PathBuf,
    /// Address of the node's local port (default: `listen.local` of the config).
    #[arg(long)]
    node: Option<std::net::SocketAddr>,
    /// Recipient node id, e.g. MW-DSW.
    #[arg(long)]
    to: String,
    /// The recipient's unit (e.g. chipata-district); the default is the recipient's intake.
    #[arg(long, default_value = "")]
    to_unit: String,
    /// Why the referral is sent.
    #[arg(long, value_enum, default_value = "service-referral")]
    purpose: PurposeArg,
    /// The consent (or best-interests decision) the transfer relies on: its reference.
    #[arg(long)]
    consent: String,
    /// Who gave the consent. With `best-interests`, also give --bid-authority and --legal-basis.
    #[arg(long, value_enum)]
    given_by: GiverArg,
    /// The authority that made the best-interests determination.
    #[arg(long)]
    bid_authority: Option<String>,
    /// The legal basis of the best-interests determination.
    #[arg(long)]
    legal_basis: Option<String>,
    /// The child's views were heard and recorded.
    #[arg(long)]
    child_views_recorded: bool,
    /// How many days the consent is valid from now.
    #[arg(long, default_value_t = 90)]
    consent_days: u32,
    /// A node the recipient may pass the referral on to (repeatable).
    #[arg(long)]
    onward: Vec<String>,
    /// Your own case reference.
    #[arg(long, default_value = "")]
    case_ref: String,
    /// Links replies to this case.
    #[arg(long, default_value = "")]
    correlation: String,
    /// The child's given name(s) (identity category).
    #[arg(long)]
    given_name: Vec<String>,
    /// The child's family name(s) (identity category).
    #[arg(long)]
    family_name: Vec<String>,
    /// Estimated birth year (identity category).
    #[arg(long)]
    birth_year: Option<u32>,
    /// Migratory status (protection-concerns category).
    #[arg(long, value_enum)]
    migratory_status: Option<MigratoryArg>,
    /// A protection-concern code, e.g. trafficking-risk (repeatable).
    #[arg(long)]
    concern: Vec<String>,
    /// A requested service, e.g. interim-care (repeatable).
    #[arg(long)]
    service: Vec<String>,
    /// Seconds to wait for the recipient's receipt (0: do not wait).
    #[arg(long, default_value_t = 30)]
    wait: u32,
}

/// Submits and, unless told not to, waits for the receipt.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let mut client = super::local_client_for(&config, args.node)?;
    let identity =
        (!args.given_name.is_empty() || !args.family_name.is_empty() || args.birth_year.is_some())
            .then(|| pb::IdentityData {
                given_names: args.given_name.clone(),
                family_names: args.family_name.clone(),
                estimated_birth_year: args.birth_year.unwrap_or(0),
                ..Default::default()
            });
    let protection_concerns =
        (args.migratory_status.is_some() || !args.concern.is_empty()).then(|| {
            pb::ProtectionConcerns {
                migratory_status: args
                    .migratory_status
                    .map_or(0, |m| pb::MigratoryStatus::from(m) as i32),
                concerns: args.concern.clone(),
                ..Default::default()
            }
        });
    let referral = pb::ReferralPayload {
        case_reference: args.case_ref.clone(),
        requested_services: args.service.clone(),
        identity,
        protection_concerns,
        ..Default::default()
    };
    let categories = kinbridge_core::referral::categories_present(&referral);
    let now = kinbridge_core::UnixMillis::now();
    let consent = pb::ConsentScope {
        consent_id: args.consent.clone(),
        given_by: pb::ConsentGiver::from(args.given_by) as i32,
        determining_authority: args.bid_authority.clone().unwrap_or_default(),
        legal_basis: args.legal_basis.clone().unwrap_or_default(),
        child_views_recorded: args.child_views_recorded,
        purposes: vec![pb::Purpose::from(args.purpose) as i32],
        categories: categories.iter().map(|c| *c as i32).collect(),
        recipients: vec![args.to.clone()],
        onward_recipients: args.onward.clone(),
        valid_from_ms: now.0,
        expires_at_ms: now.plus_ms(i64::from(args.consent_days) * 86_400_000).0,
    };
    let submitted = client
        .submit_referral(pb::SubmitReferralRequest {
            kind: pb::MessageKind::Referral as i32,
            recipient: args.to.clone(),
            purpose: pb::Purpose::from(args.purpose) as i32,
            consent: Some(consent),
            correlation_id: args.correlation.clone(),
            ttl_seconds: 0,
            referral: Some(referral),
            recipient_unit: args.to_unit.clone(),
        })
        .await?
        .into_inner();
    if enforcement_client(&config) {
        // The firewall refuses an enforcement client every read, delivery status included:
        // asking would only turn a sent referral into an error, and the officer would resend.
        println!(
            "sent {} for {} at {}; delivery status is not shown to enforcement clients (the node delivers it and keeps retrying)",
            submitted.message_id, args.to, config.node_id
        );
        return Ok(());
    }
    println!(
        "queued {} for {} at {}",
        submitted.message_id, args.to, config.node_id
    );
    follow_delivery(&mut client, &config, &submitted.message_id, args.wait).await
}

/// Waits up to `wait` seconds (0: not at all) for the recipient's signed receipt of the queued
/// message `message_id` and says what became of it: delivered, still queued (the node keeps
/// retrying: exit 0), or refused or expired (exit non-zero, with the recipient's reason).
pub async fn follow_delivery(
    client: &mut LocalServiceClient<Channel>,
    config: &NodeConfig,
    message_id: &str,
    wait: u32,
) -> anyhow::Result<()> {
    if wait == 0 {
        return Ok(());
    }
    let delivery = client
        .get_delivery(pb::GetDeliveryRequest {
            message_id: message_id.to_owned(),
            wait_ms: wait.saturating_mul(1000),
        })
        .await?
        .into_inner();
    match pb::DeliveryState::try_from(delivery.state) {
        Ok(pb::DeliveryState::Delivered) => {
            println!(
                "delivered to {} after {} attempt(s); signed receipt held and verified by {}",
                delivery.recipient, delivery.attempts, config.node_id
            );
            Ok(())
        }
        Ok(pb::DeliveryState::Queued) => {
            println!(
                "still queued after {} s ({} attempts): {}",
                wait, delivery.attempts, delivery.last_error
            );
            println!("the node keeps retrying; check again with a longer --wait");
            Ok(())
        }
        // The recipient's refusal names its reason code (e.g. unknown-unit) and what to do.
        Ok(pb::DeliveryState::Refused) => {
            bail!("refused, not delivered: {}", delivery.last_error)
        }
        Ok(state) => bail!("{}: {}", state.as_str_name(), delivery.last_error),
        Err(_) => bail!("unknown delivery state {}", delivery.state),
    }
}

/// Whether the CLI's own certificate (the config's `[client]`) is tagged
/// immigration-enforcement, read as the node reads it. An unreadable certificate counts as
/// not enforcement: the node has refused the submission by then anyway.
fn enforcement_client(config: &NodeConfig) -> bool {
    config
        .cli_client
        .as_ref()
        .and_then(|c| kinbridge_grpc::tls::load_certs(&c.certificate).ok())
        .and_then(|certs| certs.into_iter().next())
        .and_then(|leaf| kinbridge_service::identity::local_client_of(&leaf).ok())
        .is_some_and(|client| kinbridge_core::firewall::is_enforcement(&client.tags))
}
