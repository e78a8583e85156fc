//! Accuracy and speed of family-tracing matching, on two CSV files in FEBRL's columns
//! (`rec_id, given_name, surname, …, suburb, …, date_of_birth, …`) with FEBRL's link
//! convention: `rec-N-org` in one file is the same person as `rec-N-dup-K` in the other.
//!
//! Only the fields closest to what a tracing record holds are used: given name and surname (as
//! one bag of name tokens), date of birth and suburb (as the place). Every record of the second
//! file is a query, ranked against every record of the first by Dice similarity of their
//! encodings. The band thresholds are calibrated on the queries of even-numbered entities and
//! evaluated on the odd-numbered ones.
//!
//! Run: `cargo bench -p kinbridge-linkage --bench linkage [-- A.csv B.csv]` (default: FEBRL 4,
//! `../shared/data/febrl4/dataset4a.csv` and `dataset4b.csv` beside the project).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kinbridge_linkage::{Bands, Descriptor, Encoding, LinkageKey, SCHEMA_V1, encode};

const COMMAND: &str = "cargo bench -p kinbridge-linkage --bench linkage";
/// Pairs scoring below this are not looked at when calibrating the bands.
const CALIBRATION_FLOOR: f64 = 0.4;
/// Records a query is answered against in the speed test.
const SCALE: usize = 100_000;

struct Record {
    entity: String,
    /// The `language` column, if the file has one (the multilingual set does).
    language: String,
    descriptor: Descriptor,
}

fn read(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_lowercase())
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("{}: no column '{name}'", path.display()))
    };
    let language = header.iter().position(|c| c == "language");
    let (id, given, surname, dob, suburb) = (
        column("rec_id"),
        column("given_name"),
        column("surname"),
        column("date_of_birth"),
        column("suburb"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let cell = |i: usize| cells.get(i).copied().unwrap_or_default();
            let entity = cell(id)
                .strip_prefix("rec-")
                .and_then(|r| r.split('-').next())
                .unwrap_or_default()
                .to_owned();
            let dob = cell(dob);
            let part = |range: std::ops::Range<usize>| -> Option<u16> {
                dob.get(range).and_then(|s| s.parse().ok())
            };
            let names = format!("{} {}", cell(given), cell(surname));
            Record {
                entity,
                language: language.map(cell).unwrap_or_default().to_owned(),
                descriptor: Descriptor {
                    names: vec![names],
                    sex: None,
                    birth_year: part(0..4),
                    birth_month: part(4..6).and_then(|m| u8::try_from(m).ok()),
                    birth_day: part(6..8).and_then(|d| u8::try_from(d).ok()),
                    place: Some(cell(suburb).to_owned()).filter(|s| !s.is_empty()),
                },
            }
        })
        .collect()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores, {model}")
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

/// The `n` best `(score, index)` of `query` against `records`, best first.
fn top(query: &Encoding, records: &[Encoding], n: usize) -> Vec<(f64, usize)> {
    let mut best: Vec<(f64, usize)> = Vec::with_capacity(n + 1);
    for (i, r) in records.iter().enumerate() {
        let s = query.dice(r);
        if best.len() < n || s > best[best.len() - 1].0 {
            let at = best.partition_point(|(b, _)| *b >= s);
            best.insert(at, (s, i));
            best.truncate(n);
        }
    }
    best
}

/// The lowest threshold at which `pairs` (score, true match?) above it are at least `precision`
/// true, scanning from the top.
fn threshold_for_precision(pairs: &mut [(f64, bool)], precision: f64) -> f64 {
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut good, mut threshold) = (0usize, 1.0);
    for (n, (score, truth)) in pairs.iter().enumerate() {
        good += usize::from(*truth);
        if good as f64 / (n + 1) as f64 >= precision {
            threshold = *score;
        }
    }
    threshold
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .join("../../../shared/data/febrl4")
        .canonicalize()
        .unwrap_or_else(|_| manifest.join("../../../shared/data/febrl4"));
    // cargo runs a benchmark in its package's folder: a relative path is read from there, or
    // else from the workspace root, where the command was most likely typed.
    let resolve = |p: &str| {
        let path = PathBuf::from(p);
        let from_root = manifest.join("../..").join(&path);
        if path.is_relative() && !path.exists() && from_root.exists() {
            from_root.canonicalize().unwrap_or(from_root)
        } else {
            path
        }
    };
    let (a_path, b_path) = match args.as_slice() {
        [a, b, ..] => (resolve(a), resolve(b)),
        _ => (root.join("dataset4a.csv"), root.join("dataset4b.csv")),
    };
    println!("# kinbridge family-tracing matching benchmark");
    println!(
        "command: {COMMAND} -- {} {}",
        a_path.display(),
        b_path.display()
    );
    println!("machine: {}", machine());
    let (a, b) = (read(&a_path), read(&b_path));
    println!(
        "records: {} and {}; fields: given name + surname (one bag of tokens), date of birth, suburb; schema {}, {} bits",
        a.len(),
        b.len(),
        SCHEMA_V1.id,
        kinbridge_linkage::BITS
    );
    let key = LinkageKey::new([0x4b; 32], 1);
    let started = Instant::now();
    let ea: Vec<Encoding> = a
        .iter()
        .map(|r| encode(&r.descriptor, &SCHEMA_V1, &key))
        .collect();
    let eb: Vec<Encoding> = b
        .iter()
        .map(|r| encode(&r.descriptor, &SCHEMA_V1, &key))
        .collect();
    let encode_rate = (a.len() + b.len()) as f64 / started.elapsed().as_secs_f64();

    let by_entity: HashMap<&str, usize> = a
        .iter()
        .enumerate()
        .map(|(i, r)| (r.entity.as_str(), i))
        .collect();
    // Every query against every record: ranks, and all pairs' scores for the bands.
    let started = Instant::now();
    let (mut at1, mut at5, mut linked) = (0usize, 0usize, 0usize);
    let mut calibration = Vec::new();
    let mut evaluation = Vec::new();
    let mut comparisons = 0u64;
    // Per language: queries, found first, found in the first five.
    let mut by_language: std::collections::BTreeMap<&str, (usize, usize, usize)> =
        std::collections::BTreeMap::new();
    for (q, query) in eb.iter().enumerate() {
        let truth = by_entity.get(b[q].entity.as_str()).copied();
        let ranked = top(query, &ea, 5);
        comparisons += ea.len() as u64;
        let Some(truth) = truth else { continue };
        linked += 1;
        let first = ranked.first().is_some_and(|(_, i)| *i == truth);
        let five = ranked.iter().any(|(_, i)| *i == truth);
        at1 += usize::from(first);
        at5 += usize::from(five);
        let counts = by_language.entry(b[q].language.as_str()).or_default();
        counts.0 += 1;
        counts.1 += usize::from(first);
        counts.2 += usize::from(five);
        let even = b[q]
            .entity
            .parse::<u64>()
            .map_or(true, |n| n.is_multiple_of(2));
        if even {
            // Every pair that could fall in a band, not only the best: a peer reports every
            // record in a band.
            for (i, e) in ea.iter().enumerate() {
                let s = query.dice(e);
                if s >= CALIBRATION_FLOOR {
                    calibration.push((s, i == truth));
                }
            }
        } else {
            evaluation.push((q, truth));
        }
    }
    let compare_secs = started.elapsed().as_secs_f64();

    // Bands: "likely" where at least 99.5% of the calibration pairs above it are true;
    // "possible" where at least a tenth are.
    let likely = threshold_for_precision(&mut calibration.clone(), 0.995);
    let possible = threshold_for_precision(&mut calibration, 0.1).min(likely);
    let bands = Bands { possible, likely };
    // Evaluated over every pair of the evaluation queries, not only the best: a peer reports
    // every record in a band.
    let (mut likely_true, mut likely_all, mut possible_all, mut true_likely) = (0, 0, 0, 0);
    for (q, truth) in &evaluation {
        for (i, e) in ea.iter().enumerate() {
            match bands.of(eb[*q].dice(e)) {
                kinbridge_linkage::Band::Likely => {
                    likely_all += 1;
                    if i == *truth {
                        likely_true += 1;
                        true_likely += 1;
                    }
                }
                kinbridge_linkage::Band::Possible => possible_all += 1,
                kinbridge_linkage::Band::None => {}
            }
        }
    }

    // Speed: one query against SCALE records (the first file's encodings, repeated).
    let big: Vec<Encoding> = ea.iter().cycle().take(SCALE).cloned().collect();
    let mut latencies = Vec::new();
    for query in eb.iter().take(200) {
        let t = Instant::now();
        std::hint::black_box(top(query, &big, 5));
        latencies.push(t.elapsed());
    }
    latencies.sort();

    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| queries with a true link | {linked} |");
    println!("| recall@1 | {:.4} |", at1 as f64 / linked.max(1) as f64);
    println!("| recall@5 | {:.4} |", at5 as f64 / linked.max(1) as f64);
    println!(
        "| bands (calibrated on even entities) | possible ≥ {:.3}, likely ≥ {:.3} |",
        bands.possible, bands.likely
    );
    println!(
        "| precision of \"likely\" (odd entities, every pair) | {:.4} ({likely_true} of {likely_all}) |",
        likely_true as f64 / likely_all.max(1) as f64
    );
    println!(
        "| recall of \"likely\" (odd entities) | {:.4} |",
        true_likely as f64 / evaluation.len().max(1) as f64
    );
    println!("| pairs in \"possible\" (odd entities) | {possible_all} |");
    println!("| encodings/s (one core) | {encode_rate:.0} |");
    println!(
        "| comparisons/s (one core, with ranking) | {:.0} |",
        comparisons as f64 / compare_secs
    );
    println!(
        "| query against {SCALE} records: p50 / p99 ms | {:.2} / {:.2} |",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99)
    );
    if by_language.keys().any(|l| !l.is_empty()) {
        println!();
        println!("| language | queries | recall@1 | recall@5 |");
        println!("|---|---|---|---|");
        for (language, (n, first, five)) in &by_language {
            println!(
                "| {language} | {n} | {:.3} | {:.3} |",
                *first as f64 / (*n).max(1) as f64,
                *five as f64 / (*n).max(1) as f64
            );
        }
    }
}
