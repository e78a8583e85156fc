//! `kinbridge send`: submit a referral at a running node and wait for the signed receipt.

use std::path::PathBuf;

use anyhow::{Context, bail};
use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tonic::transport::Channel;

use super::NodeAccess;

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

/// What is sent.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    /// A referral of a child to a service or authority.
    Referral,
    /// A case handed over for return and reintegration: the same payload, consent checks and
    /// workflow.
    CaseTransfer,
}

/// The child's sex (identity category).
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SexArg {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Other.
    Other,
}

/// Arguments of `kinbridge send`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    access: NodeAccess,
    /// The submission as JSON in the protobuf JSON mapping: a whole SubmitReferralRequest
    /// (recipient, purpose, kind, consent, referral, ...) or only its ReferralPayload (every
    /// data category). Flags given as well override what the file says (repeatable ones such
    /// as --service and --concern add to it); a consent without
    /// categories, purposes, recipients or validity gets them from the referral, --purpose,
    /// --to and --consent-days. Example: config/referral-example.json.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Recipient node id, e.g. MW-DSW (required unless the file names the recipient).
    #[arg(long)]
    to: Option<String>,
    /// The recipient's unit (e.g. chipata-district); the default is the recipient's intake.
    #[arg(long)]
    to_unit: Option<String>,
    /// A referral (the default) or a case transfer.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// Why the referral is sent (default: service-referral; return-and-reintegration for a
    /// case transfer).
    #[arg(long, value_enum)]
    purpose: Option<PurposeArg>,
    /// The consent (or best-interests decision) the transfer relies on: its reference
    /// (required unless the file holds the consent).
    #[arg(long)]
    consent: Option<String>,
    /// Who gave the consent. With `best-interests`, also give --bid-authority and --legal-basis.
    #[arg(long, value_enum)]
    given_by: Option<GiverArg>,
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
    #[arg(long)]
    case_ref: Option<String>,
    /// Links replies to this case.
    #[arg(long)]
    correlation: Option<String>,
    /// The child's given name(s) (identity category).
    #[arg(long)]
    given_name: Vec<String>,
    /// The child's family name(s) (identity category).
    #[arg(long)]
    family_name: Vec<String>,
    /// The child's sex (identity category).
    #[arg(long, value_enum)]
    sex: Option<SexArg>,
    /// The child's birth date, YYYY-MM-DD (identity category).
    #[arg(long)]
    birth_date: Option<String>,
    /// Estimated birth year, when the date is unknown (identity category).
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
    /// Print the node's answers as JSON lines (protobuf JSON mapping) instead of text.
    #[arg(long)]
    json: bool,
}

/// Keys that only a whole SubmitReferralRequest has (a ReferralPayload has none of them).
const REQUEST_KEYS: [&str; 11] = [
    "recipient",
    "purpose",
    "consent",
    "referral",
    "kind",
    "recipientUnit",
    "recipient_unit",
    "correlationId",
    "correlation_id",
    "ttlSeconds",
    "ttl_seconds",
];

/// Reads `--file`: a whole submission, or a referral payload as the submission's referral.
fn read_file(path: &std::path::Path) -> anyhow::Result<pb::SubmitReferralRequest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --file {}", path.display()))?;
    let what = |e: serde_json::Error| {
        anyhow::anyhow!(
            "--file {}: {e}; the file holds a SubmitReferralRequest or a ReferralPayload in the protobuf JSON mapping (see config/referral-example.json)",
            path.display()
        )
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(what)?;
    let Some(object) = value.as_object() else {
        bail!(
            "--file {}: not a JSON object; see config/referral-example.json",
            path.display()
        );
    };
    if REQUEST_KEYS.iter().any(|k| object.contains_key(*k)) {
        serde_json::from_value(value).map_err(what)
    } else {
        Ok(pb::SubmitReferralRequest {
            referral: Some(serde_json::from_value(value).map_err(what)?),
            ..Default::default()
        })
    }
}

/// The referral payload: the file's, with what the flags say merged in.
fn merge_payload(args: &Args, payload: &mut pb::ReferralPayload) {
    if let Some(case_ref) = &args.case_ref {
        payload.case_reference = case_ref.clone();
    }
    payload.requested_services.extend(args.service.clone());
    let identity_flags = !args.given_name.is_empty()
        || !args.family_name.is_empty()
        || args.birth_year.is_some()
        || args.birth_date.is_some()
        || args.sex.is_some();
    if identity_flags {
        let identity = payload.identity.get_or_insert_with(Default::default);
        if !args.given_name.is_empty() {
            identity.given_names = args.given_name.clone();
        }
        if !args.family_name.is_empty() {
            identity.family_names = args.family_name.clone();
        }
        if let Some(year) = args.birth_year {
            identity.estimated_birth_year = year;
        }
        if let Some(date) = &args.birth_date {
            identity.birth_date = date.clone();
        }
        if let Some(sex) = args.sex {
            identity.sex = match sex {
                SexArg::Female => pb::Sex::Female,
                SexArg::Male => pb::Sex::Male,
                SexArg::Other => pb::Sex::Other,
            } as i32;
        }
    }
    if args.migratory_status.is_some() || !args.concern.is_empty() {
        let concerns = payload
            .protection_concerns
            .get_or_insert_with(Default::default);
        if let Some(m) = args.migratory_status {
            concerns.migratory_status = pb::MigratoryStatus::from(m) as i32;
        }
        concerns.concerns.extend(args.concern.clone());
    }
}

/// The submission: `--file` (if given) with the flags applied, the consent completed.
fn submission(args: &Args) -> anyhow::Result<pb::SubmitReferralRequest> {
    let mut req = match &args.file {
        Some(path) => read_file(path)?,
        None => pb::SubmitReferralRequest::default(),
    };
    if let Some(to) = &args.to {
        req.recipient = to.clone();
    }
    if req.recipient.is_empty() {
        bail!("--to is required: the recipient node id, e.g. MW-DSW (or \"recipient\" in --file)");
    }
    if let Some(unit) = &args.to_unit {
        req.recipient_unit = unit.clone();
    }
    if let Some(correlation) = &args.correlation {
        req.correlation_id = correlation.clone();
    }
    match args.kind {
        Some(KindArg::Referral) => req.kind = pb::MessageKind::Referral as i32,
        Some(KindArg::CaseTransfer) => req.kind = pb::MessageKind::CaseTransfer as i32,
        None if req.kind == 0 => req.kind = pb::MessageKind::Referral as i32,
        None => {}
    }
    if let Some(purpose) = args.purpose {
        req.purpose = pb::Purpose::from(purpose) as i32;
    } else if req.purpose == 0 {
        req.purpose = if req.kind == pb::MessageKind::CaseTransfer as i32 {
            pb::Purpose::ReturnAndReintegration
        } else {
            pb::Purpose::ServiceReferral
        } as i32;
    }
    let referral = req.referral.get_or_insert_with(Default::default);
    merge_payload(args, referral);
    let categories = kinbridge_core::referral::categories_present(referral);
    let consent = match (req.consent.take(), &args.consent, args.given_by) {
        (Some(consent), _, _) => consent,
        (None, Some(_), Some(_)) => pb::ConsentScope::default(),
        (None, None, _) => bail!(
            "--consent is required: the reference of the consent (or best-interests decision) the transfer relies on (or \"consent\" in --file)"
        ),
        (None, Some(_), None) => bail!(
            "--given-by is required with --consent: child, parent, guardian, legal-representative or best-interests"
        ),
    };
    let mut consent = consent;
    if let Some(id) = &args.consent {
        consent.consent_id = id.clone();
    }
    if let Some(giver) = args.given_by {
        consent.given_by = pb::ConsentGiver::from(giver) as i32;
    }
    if let Some(authority) = &args.bid_authority {
        consent.determining_authority = authority.clone();
    }
    if let Some(basis) = &args.legal_basis {
        consent.legal_basis = basis.clone();
    }
    consent.child_views_recorded |= args.child_views_recorded;
    if consent.purposes.is_empty() {
        consent.purposes = vec![req.purpose];
    }
    if consent.categories.is_empty() {
        consent.categories = categories.iter().map(|c| *c as i32).collect();
    }
    if consent.recipients.is_empty() {
        consent.recipients = vec![req.recipient.clone()];
    }
    consent.onward_recipients.extend(args.onward.clone());
    let now = kinbridge_core::UnixMillis::now();
    if consent.valid_from_ms == 0 {
        consent.valid_from_ms = now.0;
    }
    if consent.expires_at_ms == 0 {
        consent.expires_at_ms = now.plus_ms(i64::from(args.consent_days) * 86_400_000).0;
    }
    req.consent = Some(consent);
    Ok(req)
}

/// Submits and, unless told not to, waits for the receipt.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let request = submission(&args)?;
    let access = args.access.resolve()?;
    let mut client = access.local_client()?;
    let node = access.node_name();
    let to = request.recipient.clone();
    let submitted = client.submit_referral(request).await?.into_inner();
    if args.json {
        super::show::json_line(&submitted)?;
    }
    if enforcement_client(&access.cert) {
        // The firewall refuses an enforcement client every read, delivery status included:
        // asking would only turn a sent referral into an error, and the officer would resend.
        if !args.json {
            println!(
                "sent {} for {to} at {node}; delivery status is not shown to enforcement clients (the node delivers it and keeps retrying)",
                submitted.message_id
            );
        }
        return Ok(());
    }
    if !args.json {
        println!("queued {} for {to} at {node}", submitted.message_id);
    }
    follow_delivery(
        &mut client,
        &node,
        &submitted.message_id,
        args.wait,
        args.json,
    )
    .await
}

/// Waits up to `wait` seconds (0: not at all) for the recipient's signed receipt of the queued
/// message `message_id` and says what became of it: delivered, still queued (the node keeps
/// retrying: exit 0), or refused or expired (exit non-zero, with the recipient's reason).
pub async fn follow_delivery(
    client: &mut LocalServiceClient<Channel>,
    node: &str,
    message_id: &str,
    wait: u32,
    json: bool,
) -> anyhow::Result<()> {
    if wait == 0 {
        return Ok(());
    }
    let mut delivery = client
        .get_delivery(pb::GetDeliveryRequest {
            message_id: message_id.to_owned(),
            wait_ms: wait.saturating_mul(1000),
        })
        .await?
        .into_inner();
    if json {
        // The envelope carries the payload: scripts get the state and the signed receipt.
        delivery.envelope = None;
        super::show::json_line(&delivery)?;
        return match pb::DeliveryState::try_from(delivery.state) {
            Ok(pb::DeliveryState::Refused | pb::DeliveryState::Expired) => {
                bail!("not delivered: {}", delivery.last_error)
            }
            _ => Ok(()),
        };
    }
    match pb::DeliveryState::try_from(delivery.state) {
        Ok(pb::DeliveryState::Delivered) => {
            println!(
                "delivered to {} after {} attempt(s); signed receipt held and verified by {}",
                delivery.recipient, delivery.attempts, node
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

/// Whether the client certificate `cert` is tagged immigration-enforcement, read as the node
/// reads it. An unreadable certificate counts as not enforcement: the node has refused the
/// submission by then anyway.
fn enforcement_client(cert: &std::path::Path) -> bool {
    kinbridge_grpc::tls::load_certs(cert)
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .and_then(|leaf| kinbridge_service::identity::local_client_of(&leaf).ok())
        .is_some_and(|client| kinbridge_core::firewall::is_enforcement(&client.tags))
}
