//! `kinbridge stats`: counts of the referrals a node sent and received, grouped by the chosen
//! dimensions, with small-cell suppression, as a table, CSV or JSON (auditor or admin role).

use kinbridge_proto::v1 as pb;
use kinbridge_proto::v1::reporting_service_client::ReportingServiceClient;

use super::NodeAccess;

/// How to print the table.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object.
    Json,
}

/// Arguments of `kinbridge stats`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    access: NodeAccess,
    /// Dimensions to group by, in order, comma-separated: age_band, sex, migratory_status,
    /// purpose, route, month, outcome. None: the total only.
    #[arg(long, value_delimiter = ',')]
    by: Vec<String>,
    /// First day of the period, YYYY-MM-DD (UTC; default: the beginning).
    #[arg(long)]
    from: Option<String>,
    /// Last day of the period, YYYY-MM-DD, inclusive (UTC; default: now).
    #[arg(long)]
    to: Option<String>,
    /// Withhold counts below this (default: the node's; it cannot be lowered).
    #[arg(long, default_value_t = 0)]
    threshold: u32,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// A day YYYY-MM-DD (UTC) as milliseconds since the epoch at its start; `what` names the
/// option in the error.
pub(super) fn day_ms(day: &str, what: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("--{what} takes a date YYYY-MM-DD, not '{day}'");
    let parts: Vec<&str> = day.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let month = m
        .parse::<u8>()
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let date = time::Date::from_calendar_date(
        y.parse().map_err(|_| bad())?,
        month,
        d.parse().map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    Ok(date.midnight().assume_utc().unix_timestamp() * 1000)
}

/// Asks the node for the table and prints it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let from_ms = args
        .from
        .as_deref()
        .map(|d| day_ms(d, "from"))
        .transpose()?;
    let to_ms = args
        .to
        .as_deref()
        .map(|d| day_ms(d, "to").map(|ms| ms + 86_400_000))
        .transpose()?;
    let mut client = ReportingServiceClient::new(args.access.channel()?);
    let table = client
        .get_statistics(pb::GetStatisticsRequest {
            from_ms: from_ms.unwrap_or(0),
            to_ms: to_ms.unwrap_or(0),
            group_by: args.by.clone(),
            threshold: args.threshold,
        })
        .await?
        .into_inner();
    match args.format {
        Format::Table => print_table(&table),
        Format::Csv => print_csv(&table),
        Format::Json => println!("{}", json(&table)),
    }
    Ok(())
}

/// The text of an entry's count: the number, or `x` when withheld. Every withheld count is
/// shown alike: telling the small ones from their complements would narrow both down.
fn count(e: &pb::StatisticsEntry) -> String {
    if e.withheld {
        WITHHELD.to_owned()
    } else {
        e.count.to_string()
    }
}

const WITHHELD: &str = "x";

fn value(v: &str) -> &str {
    if v.is_empty() { "Total" } else { v }
}

fn print_table(table: &pb::GetStatisticsResponse) {
    let mut rows: Vec<Vec<String>> = vec![
        table
            .group_by
            .iter()
            .cloned()
            .chain(["count".to_owned()])
            .collect(),
    ];
    for e in &table.entries {
        rows.push(
            e.values
                .iter()
                .map(|v| value(v).to_owned())
                .chain([count(e)])
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    println!(
        "{}: referrals and case transfers sent and received. {WITHHELD}: withheld, a count under {} or one withheld so that a count under {} cannot be worked out ({} withheld)",
        table.node,
        table.threshold,
        table.threshold,
        table.withheld_small + table.withheld_complementary
    );
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn print_csv(table: &pb::GetStatisticsResponse) {
    let header: Vec<String> = table
        .group_by
        .iter()
        .map(|d| csv_field(d))
        .chain(["count".to_owned()])
        .collect();
    println!("{}", header.join(","));
    for e in &table.entries {
        let row: Vec<String> = e
            .values
            .iter()
            .map(|v| csv_field(value(v)))
            .chain([count(e)])
            .collect();
        println!("{}", row.join(","));
    }
}

fn json(table: &pb::GetStatisticsResponse) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = table
        .entries
        .iter()
        .map(|e| {
            let mut row = serde_json::Map::new();
            for (d, v) in table.group_by.iter().zip(&e.values) {
                let v = if v.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::String(v.clone())
                };
                row.insert(d.clone(), v);
            }
            row.insert(
                "count".into(),
                if e.withheld {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::from(e.count)
                },
            );
            row.insert("withheld".into(), serde_json::Value::Bool(e.withheld));
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::json!({
        "node": table.node,
        "from_ms": table.from_ms,
        "to_ms": table.to_ms,
        "threshold": table.threshold,
        "group_by": table.group_by,
        "withheld_small": table.withheld_small,
        "withheld_complementary": table.withheld_complementary,
        "rows": rows,
    })
}
