//! Reporting speed: `tabulate` (counting with every total and small-cell suppression: primary,
//! complementary and the audit of the table's equations) against counting alone, on 100,000
//! generated facts, for groupings an authority reports.
//!
//! Run: `cargo bench --bench reporting`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kinbridge_core::reporting::{Dimension, Fact, tabulate};

#[allow(dead_code)]
mod common;

const FACTS: usize = 100_000;
const RUNS: usize = 5;

fn facts() -> Vec<Fact> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |below: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % below) as usize
    };
    let pick = |v: &[&str], i: usize| v[i].to_owned();
    let ages = ["0-4", "5-11", "12-14", "15-17", "18+", "unknown"];
    let sexes = ["female", "male", "other", "unknown"];
    let statuses = [
        "unaccompanied",
        "separated",
        "accompanied",
        "left-behind",
        "unknown",
    ];
    let purposes = ["service-referral", "family-tracing", "family-reunification"];
    let routes = [
        "ZM-DSW → MW-DSW",
        "MW-DSW → ZM-DSW",
        "ZM-DSW → ZW-DSD",
        "ZW-DSD → ZM-DSW",
        "MW-DSW → ZW-DSD",
        "ZW-DSD → MW-DSW",
    ];
    let outcomes = [
        "pending",
        "received",
        "accepted",
        "declined:no-capacity",
        "closed:reunified",
    ];
    // Skewed: some combinations are rare, as in real caseloads.
    let mut skew = |n: usize| (next(n as u64) * next(n as u64)) / n.max(1);
    (0..FACTS)
        .map(|_| Fact {
            age_band: pick(&ages, skew(ages.len())),
            sex: pick(&sexes, skew(sexes.len())),
            migratory_status: pick(&statuses, skew(statuses.len())),
            purpose: pick(&purposes, skew(purposes.len())),
            route: pick(&routes, skew(routes.len() * 4) % routes.len()),
            month: format!("2026-{:02}", 1 + skew(48) % 12),
            outcome: pick(&outcomes, skew(outcomes.len())),
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    common::pct(&times, 0.5)
}

fn main() {
    let facts = facts();
    println!("command: cargo bench --bench reporting");
    println!("machine: {}", common::machine());
    println!("{FACTS} facts; median of {RUNS} runs; threshold 5");
    println!();
    println!(
        "| grouping | entries | withheld (small + complementary) | counting only, ms | tabulate, ms | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    let groupings: [&[Dimension]; 5] = [
        &[Dimension::Route],
        &[Dimension::AgeBand, Dimension::Sex],
        &[
            Dimension::AgeBand,
            Dimension::Sex,
            Dimension::MigratoryStatus,
        ],
        &[Dimension::Route, Dimension::Month, Dimension::Purpose],
        &[
            Dimension::AgeBand,
            Dimension::Sex,
            Dimension::MigratoryStatus,
            Dimension::Month,
        ],
    ];
    for dims in groupings {
        let mut baseline = Vec::new();
        let mut full = Vec::new();
        let mut last = None;
        for _ in 0..RUNS {
            let start = Instant::now();
            let mut counts: HashMap<Vec<&str>, u64> = HashMap::new();
            for f in &facts {
                *counts
                    .entry(dims.iter().map(|d| f.value(*d)).collect())
                    .or_default() += 1;
            }
            std::hint::black_box(&counts);
            baseline.push(start.elapsed());
            let start = Instant::now();
            let table = tabulate(&facts, dims, 5).expect("table");
            full.push(start.elapsed());
            last = Some(table);
        }
        let table = last.expect("a run");
        let names: Vec<&str> = dims.iter().map(|d| d.name()).collect();
        let (b, t) = (median(baseline), median(full));
        println!(
            "| {} | {} | {} + {} | {b:.2} | {t:.2} | {:.1} |",
            names.join(" × "),
            table.entries.len(),
            table.primary,
            table.complementary,
            t / b
        );
    }
}
