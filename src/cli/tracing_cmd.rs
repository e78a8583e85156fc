//! `kinbridge tracing`: family tracing from the command line (caseworker or system role):
//! register a tracing record or request, list the matches, confirm or rule one out.

use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::tracing_service_client::TracingServiceClient;

use super::NodeAccess;
use super::send::GiverArg;

/// Arguments of `kinbridge tracing`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Register a child whose case consents to tracing (--record), or a family looking for a
    /// child (--request: queries go to the peers at once).
    Register(Box<RegisterArgs>),
    /// The matches of this node's tracing cases, newest first, with the peer's disclosure
    /// once both caseworkers confirmed.
    Matches {
        #[command(flatten)]
        access: NodeAccess,
        /// Only this case's matches.
        #[arg(long)]
        case: Option<String>,
        /// Print the node's answer as one JSON line (protobuf JSON mapping) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Confirm a match (the disclosure follows once the other side confirms too), or rule it
    /// out with --rule-out.
    Confirm {
        #[command(flatten)]
        access: NodeAccess,
        /// The match id, as `matches` lists it.
        match_id: String,
        /// This is not the child sought: rule the match out.
        #[arg(long)]
        rule_out: bool,
    },
}

/// The person's sex.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SexArg {
    Female,
    Male,
    Other,
}

#[derive(clap::Args)]
struct RegisterArgs {
    #[command(flatten)]
    access: NodeAccess,
    /// A child registered here.
    #[arg(long, conflicts_with = "request", required_unless_present = "request")]
    record: bool,
    /// A family looking for a child; describe the child sought.
    #[arg(long)]
    request: bool,
    /// The consent's reference.
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
    /// A node the consent lets learn of a match and receive the disclosure (repeatable); a
    /// request queries each.
    #[arg(long, required = true)]
    recipient: Vec<String>,
    /// Your own case reference (stays here).
    #[arg(long, default_value = "")]
    case_ref: String,
    /// The child's given name(s).
    #[arg(long)]
    given_name: Vec<String>,
    /// The child's family name(s).
    #[arg(long)]
    family_name: Vec<String>,
    /// Other names, nicknames, transliterations (repeatable).
    #[arg(long)]
    other_name: Vec<String>,
    /// Sex.
    #[arg(long, value_enum)]
    sex: Option<SexArg>,
    /// Birth date, YYYY-MM-DD.
    #[arg(long)]
    birth_date: Option<String>,
    /// Estimated birth year, when the date is unknown.
    #[arg(long)]
    birth_year: Option<u32>,
    /// Where the child was separated from the family.
    #[arg(long)]
    separated_at: Option<String>,
    /// When, YYYY-MM-DD.
    #[arg(long)]
    separated_on: Option<String>,
    /// A relative, as RELATIONSHIP:NAME, e.g. "mother:Halima Hassan" (repeatable).
    #[arg(long)]
    relative: Vec<String>,
    /// A request: how long its queries stand at the peers, in seconds (0: the node's default).
    #[arg(long, default_value_t = 0)]
    ttl: u32,
}

/// Runs the chosen tracing command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Register(r) => register(*r).await,
        Command::Matches { access, case, json } => {
            let mut client = TracingServiceClient::new(access.channel()?);
            let listed = client
                .list_tracing_matches(pb::ListTracingMatchesRequest {
                    case_id: case.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if json {
                return super::show::json_line(&listed);
            }
            let matches = listed.matches;
            if matches.is_empty() {
                println!("no tracing match");
            }
            for m in &matches {
                print_match(m);
            }
            Ok(())
        }
        Command::Confirm {
            access,
            match_id,
            rule_out,
        } => {
            let mut client = TracingServiceClient::new(access.channel()?);
            let m = client
                .confirm_tracing_match(pb::ConfirmTracingMatchRequest {
                    match_id,
                    confirm: !rule_out,
                })
                .await?
                .into_inner();
            print_match(&m);
            Ok(())
        }
    }
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let mut client = TracingServiceClient::new(args.access.channel()?);
    let identity = pb::IdentityData {
        given_names: args.given_name.clone(),
        family_names: args.family_name.clone(),
        other_names: args.other_name.clone(),
        sex: match args.sex {
            Some(SexArg::Female) => pb::Sex::Female,
            Some(SexArg::Male) => pb::Sex::Male,
            Some(SexArg::Other) => pb::Sex::Other,
            None => pb::Sex::Unspecified,
        } as i32,
        birth_date: args.birth_date.clone().unwrap_or_default(),
        estimated_birth_year: args.birth_year.unwrap_or(0),
        languages: Vec::new(),
    };
    let location =
        (args.separated_at.is_some() || args.separated_on.is_some()).then(|| pb::LocationData {
            place_of_separation: args.separated_at.clone().unwrap_or_default(),
            date_of_separation: args.separated_on.clone().unwrap_or_default(),
            current_location: String::new(),
        });
    let mut members = Vec::new();
    for r in &args.relative {
        let Some((relationship, name)) = r.split_once(':') else {
            anyhow::bail!("--relative takes RELATIONSHIP:NAME, e.g. \"mother:Halima Hassan\"");
        };
        members.push(pb::FamilyMember {
            relationship: relationship.trim().to_owned(),
            names: vec![name.trim().to_owned()],
            ..Default::default()
        });
    }
    let case = pb::ReferralPayload {
        case_reference: args.case_ref.clone(),
        identity: Some(identity),
        location,
        family: (!members.is_empty()).then_some(pb::FamilyData { members }),
        ..Default::default()
    };
    let categories = kinbridge_core::referral::categories_present(&case);
    let now = kinbridge_core::UnixMillis::now();
    let consent = pb::ConsentScope {
        consent_id: args.consent.clone(),
        given_by: pb::ConsentGiver::from(args.given_by) as i32,
        determining_authority: args.bid_authority.clone().unwrap_or_default(),
        legal_basis: args.legal_basis.clone().unwrap_or_default(),
        child_views_recorded: args.child_views_recorded,
        purposes: vec![pb::Purpose::FamilyTracing as i32],
        categories: categories.iter().map(|c| *c as i32).collect(),
        recipients: args.recipient.clone(),
        valid_from_ms: now.0,
        expires_at_ms: now.plus_ms(i64::from(args.consent_days) * 86_400_000).0,
        ..Default::default()
    };
    let kind = if args.record {
        pb::TracingCaseKind::Record
    } else {
        pb::TracingCaseKind::Request
    };
    let registered = client
        .register_tracing_case(pb::RegisterTracingCaseRequest {
            kind: kind as i32,
            consent: Some(consent),
            case: Some(case),
            peers: Vec::new(),
            ttl_seconds: args.ttl,
        })
        .await?
        .into_inner();
    println!("registered tracing case {}", registered.case_id);
    for q in &registered.queries {
        println!("  query {} queued for {}", q.message_id, q.peer);
    }
    Ok(())
}

fn print_match(m: &pb::TracingMatch) {
    let band = pb::MatchBand::try_from(m.band).map_or("?", |b| match b {
        pb::MatchBand::Likely => "likely",
        pb::MatchBand::Possible => "possible",
        pb::MatchBand::Unspecified => "?",
    });
    let state = pb::TracingMatchState::try_from(m.state).map_or("?", |s| match s {
        pb::TracingMatchState::Pending => "pending",
        pb::TracingMatchState::Confirmed => "confirmed",
        pb::TracingMatchState::RuledOut => "ruled-out",
        pb::TracingMatchState::Disclosed => "disclosed",
        pb::TracingMatchState::Unspecified => "?",
    });
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!(
        "{}  case {}  with {}  {band}  {state}  confirmed here: {}, by {}: {}",
        m.match_id,
        m.case_id,
        m.peer,
        yes(m.confirmed_here),
        m.peer,
        yes(m.confirmed_by_peer)
    );
    if let Some(d) = &m.disclosure {
        if let Some(i) = &d.identity {
            let names: Vec<String> = i
                .given_names
                .iter()
                .chain(&i.family_names)
                .cloned()
                .collect();
            let born = if i.birth_date.is_empty() {
                i.estimated_birth_year.to_string()
            } else {
                i.birth_date.clone()
            };
            let also = if i.other_names.is_empty() {
                String::new()
            } else {
                format!(" (also {})", i.other_names.join(", "))
            };
            println!(
                "    disclosed by {}: {}{also}, born {born}",
                m.peer,
                names.join(" ")
            );
        }
        if let Some(l) = &d.location {
            let on = if l.date_of_separation.is_empty() {
                String::new()
            } else {
                format!(" on {}", l.date_of_separation)
            };
            println!("    separated at {}{on}", l.place_of_separation);
        }
        for r in d.family.iter().flat_map(|f| &f.members) {
            println!("    {}: {}", r.relationship, r.names.join(", "));
        }
        println!("    contact: unit {} at {}", d.contact_unit, m.peer);
    }
}
