//! Disaggregated counts for reporting, with small-cell suppression.
//!
//! A [`Fact`] holds the non-identifying dimensions of one referral or tracing case as a node
//! saw it (age band, sex, migratory status, purpose, route, month, outcome). [`tabulate`] counts
//! facts grouped by any chosen dimensions into a table with every marginal total (each
//! dimension summed out, at every level, down to the grand total), and suppresses:
//!
//! 1. **Primary**: every entry (cell or total) from 1 to `threshold - 1` is withheld.
//!    Outputs show every withheld entry alike, not which ones are the small ones.
//! 2. **Complementary**: every line of the table (the entries along one dimension, other
//!    coordinates fixed, and their total) that has exactly one withheld entry gets a second
//!    one, the smallest non-zero entry of the line (cells before totals), so that no withheld
//!    entry is the difference of a published total and published cells.
//! 3. **Audit**: the withheld entries are the unknowns of the table's additive equations; an
//!    unknown the equations determine (by any combination of lines, not only one) gets a
//!    further complement, until none is determined.
//!
//! Zero counts are published: a zero withheld as a complement could only move one way.

use std::collections::{BTreeMap, BTreeSet};

use kinbridge_proto::v1 as pb;

/// A dimension a count can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// 0-4, 5-11, 12-14, 15-17, 18+ or unknown.
    AgeBand,
    /// female, male, other or unknown.
    Sex,
    /// unaccompanied, separated, accompanied, left-behind or unknown.
    MigratoryStatus,
    /// service-referral, family-tracing, ...
    Purpose,
    /// origin node → destination node.
    Route,
    /// YYYY-MM (UTC).
    Month,
    /// received, accepted, declined, in-progress, closed (with its outcome code), registered.
    Outcome,
}

impl Dimension {
    /// Every dimension, in the order of the table's columns.
    pub const ALL: [Dimension; 7] = [
        Dimension::AgeBand,
        Dimension::Sex,
        Dimension::MigratoryStatus,
        Dimension::Purpose,
        Dimension::Route,
        Dimension::Month,
        Dimension::Outcome,
    ];

    /// Its name in tables, CSV and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::AgeBand => "age_band",
            Dimension::Sex => "sex",
            Dimension::MigratoryStatus => "migratory_status",
            Dimension::Purpose => "purpose",
            Dimension::Route => "route",
            Dimension::Month => "month",
            Dimension::Outcome => "outcome",
        }
    }

    /// The dimension named `name` (`age_band`, or `age-band` as command-line words are
    /// spelt).
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim().replace('-', "_");
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// The age bands, youngest first, as tables list them (not in text order, where 12-14 would
/// come before 5-11).
pub const AGE_BANDS: [&str; 6] = ["0-4", "5-11", "12-14", "15-17", "18+", "unknown"];

/// The age band of a child `age` years old.
pub fn age_band(age: Option<i64>) -> &'static str {
    match age {
        Some(0..=4) => "0-4",
        Some(5..=11) => "5-11",
        Some(12..=14) => "12-14",
        Some(15..=17) => "15-17",
        Some(18..) => "18+",
        _ => "unknown",
    }
}

/// The civil date (year, month, day; UTC) of `ms` milliseconds since the Unix epoch.
pub fn civil(ms: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM` of `ms` (UTC).
pub fn month_of(ms: i64) -> String {
    let (y, m, _) = civil(ms);
    format!("{y:04}-{m:02}")
}

/// The age in whole years at `ms` of a person described by `identity`: from the birth date
/// (`YYYY-MM-DD`, or `YYYY`) or else the estimated birth year.
pub fn age_at(identity: &pb::IdentityData, ms: i64) -> Option<i64> {
    let (y, m, d) = civil(ms);
    let mut parts = identity
        .birth_date
        .split('-')
        .map(|p| p.parse::<i64>().ok());
    match (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten(),
    ) {
        (Some(by), Some(bm), Some(bd)) => {
            let before_birthday = (i64::from(m), i64::from(d)) < (bm, bd);
            Some(y - by - i64::from(before_birthday))
        }
        (Some(by), _, _) => Some(y - by),
        _ if identity.estimated_birth_year > 0 => {
            Some(y - i64::from(identity.estimated_birth_year))
        }
        _ => None,
    }
    .filter(|age| *age >= 0)
}

fn enum_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// The dimensions of a referral `payload` sent for `purpose` from `origin` to `destination`
/// at `at_ms`, with `outcome`.
pub fn fact_of(
    payload: &pb::ReferralPayload,
    purpose: pb::Purpose,
    origin: &str,
    destination: &str,
    at_ms: i64,
    outcome: &str,
) -> Fact {
    let identity = payload.identity.clone().unwrap_or_default();
    let sex = match pb::Sex::try_from(identity.sex) {
        Ok(pb::Sex::Unspecified) | Err(_) => "unknown".to_owned(),
        Ok(s) => enum_name(s.as_str_name(), "SEX_"),
    };
    let status = payload
        .protection_concerns
        .as_ref()
        .and_then(|p| pb::MigratoryStatus::try_from(p.migratory_status).ok())
        .filter(|s| *s != pb::MigratoryStatus::Unspecified)
        .map_or("unknown".to_owned(), |s| {
            enum_name(s.as_str_name(), "MIGRATORY_STATUS_")
        });
    Fact {
        age_band: age_band(age_at(&identity, at_ms)).to_owned(),
        sex,
        migratory_status: status,
        purpose: enum_name(purpose.as_str_name(), "PURPOSE_"),
        route: format!("{origin} → {destination}"),
        month: month_of(at_ms),
        outcome: outcome.to_owned(),
    }
}

/// The non-identifying dimensions of one referral or tracing case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fact {
    /// See [`age_band`].
    pub age_band: String,
    /// female, male, other, unknown.
    pub sex: String,
    /// unaccompanied, separated, accompanied, left-behind, unknown.
    pub migratory_status: String,
    /// e.g. service-referral.
    pub purpose: String,
    /// e.g. ZM-DSW → MW-DSW.
    pub route: String,
    /// YYYY-MM.
    pub month: String,
    /// e.g. accepted, closed:reunified.
    pub outcome: String,
}

impl Fact {
    /// Its value of `dimension`.
    pub fn value(&self, dimension: Dimension) -> &str {
        match dimension {
            Dimension::AgeBand => &self.age_band,
            Dimension::Sex => &self.sex,
            Dimension::MigratoryStatus => &self.migratory_status,
            Dimension::Purpose => &self.purpose,
            Dimension::Route => &self.route,
            Dimension::Month => &self.month,
            Dimension::Outcome => &self.outcome,
        }
    }
}

/// One published entry: a cell or a total, its count or withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// One value per grouped dimension; `None` where that dimension is summed out (a total).
    pub key: Vec<Option<String>>,
    /// The count, or `None` if withheld.
    pub count: Option<u64>,
}

/// A table of counts with its totals, after suppression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The grouped dimensions, in order.
    pub dimensions: Vec<Dimension>,
    /// Cells first (every combination of observed values), then totals; the grand total last.
    pub entries: Vec<Entry>,
    /// Counts from 1 to this minus one are withheld.
    pub threshold: u64,
    /// Entries withheld as small counts.
    pub primary: usize,
    /// Entries withheld so that the small ones cannot be recovered.
    pub complementary: usize,
}

/// Why a table cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Too many entries.
    #[error(
        "grouping by these dimensions makes {0} entries (with totals); at most {MAX_ENTRIES}: group by fewer dimensions or a shorter period"
    )]
    TooLarge(usize),
    /// A dimension named twice.
    #[error("the dimension {0} is named twice")]
    Repeated(&'static str),
    /// A threshold below 2 suppresses nothing.
    #[error("the suppression threshold is at least 2")]
    Threshold,
}

/// Most entries (cells and totals) one table may have.
pub const MAX_ENTRIES: usize = 5_000;

/// Counts `facts` grouped by `dimensions` and suppresses small counts below `threshold`.
pub fn tabulate(
    facts: &[Fact],
    dimensions: &[Dimension],
    threshold: u64,
) -> Result<Table, TableError> {
    if threshold < 2 {
        return Err(TableError::Threshold);
    }
    let mut seen = BTreeSet::new();
    for d in dimensions {
        if !seen.insert(*d) {
            return Err(TableError::Repeated(d.name()));
        }
    }
    // The observed values of each dimension; index `len` is that dimension's total.
    let values = values_seen(facts, dimensions);
    let shape: Vec<usize> = values.iter().map(|v| v.len() + 1).collect();
    let size = shape
        .iter()
        .try_fold(1usize, |acc, n| acc.checked_mul(*n))
        .unwrap_or(usize::MAX);
    if size > MAX_ENTRIES {
        return Err(TableError::TooLarge(size));
    }
    let grid = Grid::new(shape);
    let mut counts = vec![0u64; size];
    let index_of: Vec<BTreeMap<&str, usize>> = values
        .iter()
        .map(|v| v.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect())
        .collect();
    for fact in facts {
        let coords: Vec<usize> = dimensions
            .iter()
            .zip(&index_of)
            .map(|(d, idx)| idx.get(fact.value(*d)).copied().unwrap_or(0))
            .collect();
        // The fact counts in its cell and in every total above it.
        for mask in 0..(1u32 << dimensions.len()) {
            let at: Vec<usize> = coords
                .iter()
                .enumerate()
                .map(|(d, c)| {
                    if mask & (1 << d) != 0 {
                        grid.shape[d] - 1
                    } else {
                        *c
                    }
                })
                .collect();
            counts[grid.flat(&at)] += 1;
        }
    }
    let withheld = suppress(&grid, &counts, threshold);
    let primary = counts.iter().filter(|c| **c > 0 && **c < threshold).count();
    let complementary = withheld.iter().filter(|w| **w).count() - primary;
    // Cells first, then totals by how many dimensions they sum out; the grand total last.
    let mut order: Vec<usize> = (0..size).collect();
    order.sort_by_key(|i| {
        let coords = grid.coords(*i);
        let totals = coords
            .iter()
            .enumerate()
            .filter(|(d, c)| **c == grid.shape[*d] - 1)
            .count();
        (totals, *i)
    });
    let entries = order
        .into_iter()
        .map(|i| Entry {
            key: grid
                .coords(i)
                .iter()
                .enumerate()
                .map(|(d, c)| values[d].get(*c).cloned())
                .collect(),
            count: (!withheld[i]).then_some(counts[i]),
        })
        .collect();
    Ok(Table {
        dimensions: dimensions.to_vec(),
        entries,
        threshold,
        primary,
        complementary,
    })
}

/// The values of each of `dimensions` that `facts` hold, sorted: age bands youngest first,
/// every other dimension in text order.
fn values_seen(facts: &[Fact], dimensions: &[Dimension]) -> Vec<Vec<String>> {
    dimensions
        .iter()
        .map(|d| {
            let mut values: Vec<String> = facts
                .iter()
                .map(|f| f.value(*d).to_owned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if *d == Dimension::AgeBand {
                values.sort_by_key(|v| {
                    AGE_BANDS
                        .iter()
                        .position(|b| b == v)
                        .unwrap_or(AGE_BANDS.len())
                });
            }
            values
        })
        .collect()
}

/// A dense array over the extended table (each dimension's last index is its total).
struct Grid {
    shape: Vec<usize>,
}

impl Grid {
    fn new(shape: Vec<usize>) -> Self {
        Self { shape }
    }

    fn size(&self) -> usize {
        self.shape.iter().product()
    }

    fn flat(&self, coords: &[usize]) -> usize {
        coords
            .iter()
            .zip(&self.shape)
            .fold(0, |acc, (c, n)| acc * n + c)
    }

    fn coords(&self, mut flat: usize) -> Vec<usize> {
        let mut out = vec![0; self.shape.len()];
        for d in (0..self.shape.len()).rev() {
            out[d] = flat % self.shape[d];
            flat /= self.shape[d];
        }
        out
    }

    fn is_total(&self, flat: usize) -> bool {
        self.coords(flat)
            .iter()
            .zip(&self.shape)
            .any(|(c, n)| *c == n - 1)
    }

    /// Every line: the entries along one dimension (other coordinates fixed), the total last.
    fn lines(&self) -> Vec<Vec<usize>> {
        let mut lines = Vec::new();
        for d in 0..self.shape.len() {
            for start in 0..self.size() {
                let coords = self.coords(start);
                if coords[d] != 0 {
                    continue;
                }
                let line = (0..self.shape[d])
                    .map(|i| {
                        let mut c = coords.clone();
                        c[d] = i;
                        self.flat(&c)
                    })
                    .collect();
                lines.push(line);
            }
        }
        lines
    }
}

/// Which entries to withhold: primary, complementary and audited suppression.
fn suppress(grid: &Grid, counts: &[u64], threshold: u64) -> Vec<bool> {
    let mut withheld: Vec<bool> = counts.iter().map(|c| *c > 0 && *c < threshold).collect();
    let lines = grid.lines();
    loop {
        // Complementary: no line with exactly one withheld entry.
        let mut changed = true;
        while changed {
            changed = false;
            for line in &lines {
                if line.iter().filter(|i| withheld[**i]).count() == 1
                    && let Some(c) = complement(grid, counts, &withheld, line)
                {
                    withheld[c] = true;
                    changed = true;
                }
            }
        }
        // Audit, one group of connected withheld entries at a time: each entry the
        // equations still determine gets a further complement on one of its lines, or else on
        // any line of its group. Once every non-zero entry on a group's lines is withheld, the
        // group's equations hold only unknowns and zeros, and then none is determined.
        let mut added = false;
        for group in groups(&withheld, &lines) {
            let group_lines: Vec<&Vec<usize>> = lines
                .iter()
                .filter(|l| l.iter().any(|i| group.contains(i)))
                .collect();
            if group.len() > MAX_AUDITED {
                // Too large to audit: withhold what makes it safe without the audit.
                for line in &group_lines {
                    for i in line.iter().copied() {
                        if counts[i] > 0 && !withheld[i] {
                            withheld[i] = true;
                            added = true;
                        }
                    }
                }
                continue;
            }
            for at in determined(&group, &group_lines) {
                let mut extra = group_lines
                    .iter()
                    .filter(|l| l.contains(&at))
                    .find_map(|l| complement(grid, counts, &withheld, l));
                if extra.is_none() {
                    extra = group_lines
                        .iter()
                        .filter_map(|l| complement(grid, counts, &withheld, l))
                        .min_by_key(|i| (grid.is_total(*i), counts[*i], *i));
                }
                if let Some(c) = extra {
                    withheld[c] = true;
                    added = true;
                }
            }
        }
        if !added {
            return withheld;
        }
    }
}

/// Most withheld entries one connected group may hold for the audit's elimination; a larger
/// group (a sparse table grouped by many dimensions) has every non-zero entry on its lines
/// withheld instead.
pub const MAX_AUDITED: usize = 600;

/// The withheld entries in groups: two are in one group if a line holds both.
fn groups(withheld: &[bool], lines: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..withheld.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for line in lines {
        let mut first = None;
        for i in line.iter().copied().filter(|i| withheld[*i]) {
            match first {
                None => first = Some(i),
                Some(f) => {
                    let (a, b) = (root(&mut parent, f), root(&mut parent, i));
                    parent[a] = b;
                }
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in (0..withheld.len()).filter(|i| withheld[*i]) {
        let r = root(&mut parent, i);
        by_root.entry(r).or_default().push(i);
    }
    by_root.into_values().collect()
}

/// The entry of `line` to withhold beside the ones already withheld: the smallest non-zero
/// published one, cells before totals.
fn complement(grid: &Grid, counts: &[u64], withheld: &[bool], line: &[usize]) -> Option<usize> {
    line.iter()
        .copied()
        .filter(|i| !withheld[*i] && counts[*i] > 0)
        .min_by_key(|i| (grid.is_total(*i), counts[*i], *i))
}

const P: u64 = (1 << 61) - 1;

fn mul(a: u64, b: u64) -> u64 {
    ((u128::from(a) * u128::from(b)) % u128::from(P)) as u64
}

fn sub(a: u64, b: u64) -> u64 {
    (a + P - b) % P
}

fn inverse(a: u64) -> u64 {
    // Fermat: a^(P-2).
    let (mut base, mut exp, mut out) = (a, P - 2, 1u64);
    while exp > 0 {
        if exp & 1 == 1 {
            out = mul(out, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    out
}

/// The withheld entries among `unknowns` (one group) that the table's equations determine.
/// Each line holding one of them gives an equation (its cells sum to its total).
/// An unknown is determined exactly when its unit vector lies in the equations' row space:
/// in reduced row echelon form, its column is a pivot whose row has no other entry. Ranks are
/// taken modulo the prime 2^61 − 1.
fn determined(unknowns: &[usize], lines: &[&Vec<usize>]) -> Vec<usize> {
    let column: BTreeMap<usize, usize> =
        unknowns.iter().enumerate().map(|(c, i)| (*i, c)).collect();
    let mut rows: Vec<Vec<u64>> = Vec::new();
    for line in lines {
        let mut row = vec![0u64; unknowns.len()];
        let mut any = false;
        let total = line[line.len() - 1];
        for i in line.iter() {
            if let Some(c) = column.get(i) {
                row[*c] = if *i == total { P - 1 } else { 1 };
                any = true;
            }
        }
        if any {
            rows.push(row);
        }
    }
    // Reduced row echelon form.
    let mut pivots: Vec<(usize, usize)> = Vec::new();
    let mut r = 0;
    for c in 0..unknowns.len() {
        let Some(p) = (r..rows.len()).find(|i| rows[*i][c] != 0) else {
            continue;
        };
        rows.swap(r, p);
        let inv = inverse(rows[r][c]);
        for v in rows[r].iter_mut() {
            *v = mul(*v, inv);
        }
        let pivot_row = rows[r].clone();
        for (i, row) in rows.iter_mut().enumerate() {
            if i != r && row[c] != 0 {
                let f = row[c];
                for (v, p) in row.iter_mut().zip(&pivot_row) {
                    *v = sub(*v, mul(f, *p));
                }
            }
        }
        pivots.push((r, c));
        r += 1;
        if r == rows.len() {
            break;
        }
    }
    pivots
        .into_iter()
        .filter(|(row, col)| {
            rows[*row]
                .iter()
                .enumerate()
                .all(|(j, v)| j == *col || *v == 0)
        })
        .map(|(_, col)| unknowns[col])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(route: &str, sex: &str, n: usize) -> Vec<Fact> {
        (0..n)
            .map(|_| Fact {
                route: route.into(),
                sex: sex.into(),
                ..Default::default()
            })
            .collect()
    }

    fn count(t: &Table, key: &[Option<&str>]) -> Option<u64> {
        t.entries
            .iter()
            .find(|e| e.key.iter().map(Option::as_deref).eq(key.iter().copied()))
            .expect("entry")
            .count
    }

    #[test]
    fn a_small_cell_and_its_complements_are_withheld() {
        let mut facts = fact("ZM → MW", "female", 3);
        facts.extend(fact("ZM → MW", "male", 40));
        facts.extend(fact("ZM → ZW", "female", 25));
        facts.extend(fact("ZM → ZW", "male", 30));
        let t = tabulate(&facts, &[Dimension::Route, Dimension::Sex], 5).expect("table");
        assert_eq!(count(&t, &[Some("ZM → MW"), Some("female")]), None);
        // Its row and column each hold a second withheld entry, and the rectangle closes.
        assert_eq!(count(&t, &[Some("ZM → MW"), Some("male")]), None);
        assert_eq!(count(&t, &[Some("ZM → ZW"), Some("female")]), None);
        assert_eq!(count(&t, &[Some("ZM → ZW"), Some("male")]), None);
        // Totals stay published.
        assert_eq!(count(&t, &[Some("ZM → MW"), None]), Some(43));
        assert_eq!(count(&t, &[None, None]), Some(98));
        assert_eq!((t.primary, t.complementary), (1, 3));
    }

    #[test]
    fn large_counts_are_exact_and_zero_is_published() {
        let mut facts = fact("A → B", "female", 7);
        facts.extend(fact("A → C", "male", 9));
        let t = tabulate(&facts, &[Dimension::Route, Dimension::Sex], 5).expect("table");
        assert_eq!(count(&t, &[Some("A → B"), Some("female")]), Some(7));
        assert_eq!(count(&t, &[Some("A → B"), Some("male")]), Some(0));
        assert_eq!(count(&t, &[None, Some("male")]), Some(9));
        assert_eq!(t.primary + t.complementary, 0);
    }

    #[test]
    fn a_lone_small_total_is_withheld() {
        let t = tabulate(&fact("A → B", "female", 3), &[], 5).expect("table");
        assert_eq!(t.entries.len(), 1);
        assert_eq!(t.entries[0].count, None);
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(
            tabulate(&[], &[Dimension::Sex, Dimension::Sex], 5),
            Err(TableError::Repeated("sex"))
        );
        assert_eq!(tabulate(&[], &[], 1), Err(TableError::Threshold));
    }

    /// Another table, consistent with everything `t` publishes and with the table's sums, in
    /// which withheld entry `target` has a different value: searched by trying every small
    /// change (−`step`..=`step`) of the withheld entries that keeps every line's sum and every
    /// count non-negative. Independent of the suppression's own audit.
    fn alternative(
        grid: &Grid,
        counts: &[u64],
        withheld: &[bool],
        target: usize,
        step: i64,
    ) -> bool {
        let mut order: Vec<usize> = (0..counts.len()).filter(|i| withheld[*i]).collect();
        order.retain(|i| *i != target);
        order.insert(0, target);
        let lines = grid.lines();
        let mut change = vec![0i64; counts.len()];
        fn consistent(lines: &[Vec<usize>], change: &[i64], assigned: &[bool]) -> bool {
            lines.iter().all(|l| {
                if !l.iter().all(|i| assigned[*i]) {
                    return true;
                }
                let (total, cells) = l.split_last().expect("line");
                cells.iter().map(|i| change[*i]).sum::<i64>() == change[*total]
            })
        }
        fn search(
            k: usize,
            order: &[usize],
            lines: &[Vec<usize>],
            counts: &[u64],
            change: &mut Vec<i64>,
            assigned: &mut Vec<bool>,
            step: i64,
        ) -> bool {
            if k == order.len() {
                return true;
            }
            let at = order[k];
            for delta in -step..=step {
                if k == 0 && delta == 0 {
                    continue;
                }
                if counts[at] as i64 + delta < 0 {
                    continue;
                }
                change[at] = delta;
                assigned[at] = true;
                if consistent(lines, change, assigned)
                    && search(k + 1, order, lines, counts, change, assigned, step)
                {
                    return true;
                }
                assigned[at] = false;
                change[at] = 0;
            }
            false
        }
        // Published entries are fixed: they count as assigned with no change.
        let mut assigned: Vec<bool> = withheld.iter().map(|w| !w).collect();
        search(0, &order, &lines, counts, &mut change, &mut assigned, step)
    }

    /// How many of `facts` an entry with `key` over `dims` counts.
    fn truth(facts: &[Fact], dims: &[Dimension], key: &[Option<String>]) -> u64 {
        facts
            .iter()
            .filter(|f| {
                dims.iter()
                    .zip(key)
                    .all(|(d, k)| k.as_deref().is_none_or(|k| f.value(*d) == k))
            })
            .count() as u64
    }

    /// A reproducible stream of small numbers.
    fn numbers(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut s = seed;
        move |below| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % below
        }
    }

    #[test]
    fn no_withheld_count_can_be_recovered_from_the_published_ones() {
        let mut next = numbers(0x9e37_79b9_7f4a_7c15);
        let (mut checked, mut three_d) = (0, 0);
        for round in 0..200 {
            // Two- and three-dimensional tables of small and large counts.
            let dims: &[Dimension] = if round % 2 == 0 {
                &[Dimension::Route, Dimension::Sex, Dimension::AgeBand]
            } else {
                &[Dimension::Route, Dimension::Sex]
            };
            let (routes, sexes, bands) = (2 + next(2), 2 + next(2), 2);
            let mut facts = Vec::new();
            for r in 0..routes {
                for s in 0..sexes {
                    for b in 0..bands {
                        // Fewer small counts in three dimensions, where one spreads further.
                        let n = match next(if dims.len() == 3 { 8 } else { 4 }) {
                            0 => 0,
                            1 => 1 + next(4),
                            _ => 5 + next(20),
                        };
                        for _ in 0..n {
                            facts.push(Fact {
                                route: format!("R{r}"),
                                sex: format!("S{s}"),
                                age_band: format!("B{b}"),
                                ..Default::default()
                            });
                        }
                    }
                }
            }
            let t = tabulate(&facts, dims, 5).expect("table");
            // Published counts are exact.
            for e in &t.entries {
                let truth = truth(&facts, dims, &e.key);
                match e.count {
                    Some(c) => assert_eq!(c, truth),
                    None => assert!(truth > 0, "a zero is never withheld"),
                }
                if truth > 0 && truth < 5 {
                    assert_eq!(e.count, None, "a small count is withheld");
                }
            }
            // Rebuild the grid to search alternatives.
            let values = values_seen(&facts, dims);
            let grid = Grid::new(values.iter().map(|v| v.len() + 1).collect());
            let mut counts = vec![0u64; grid.size()];
            let mut withheld = vec![false; grid.size()];
            for e in &t.entries {
                let coords: Vec<usize> = e
                    .key
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| match k {
                        Some(k) => v.iter().position(|x| x == k).expect("value"),
                        None => v.len(),
                    })
                    .collect();
                let i = grid.flat(&coords);
                let truth = truth(&facts, dims, &e.key);
                counts[i] = truth;
                withheld[i] = e.count.is_none();
            }
            // Two-dimensional tables' equations have alternatives changing entries by one;
            // three-dimensional ones may need two. The search grows as 5^withheld there, so
            // three-dimensional tables with many withheld entries are left to the audit.
            let step = if dims.len() == 3 { 2 } else { 1 };
            if dims.len() == 3 {
                if withheld.iter().filter(|w| **w).count() > 9 {
                    continue;
                }
                three_d += 1;
            }
            for target in (0..grid.size()).filter(|i| withheld[*i]) {
                assert!(
                    alternative(&grid, &counts, &withheld, target, step),
                    "round {round}: withheld entry {target} is determined by the published ones"
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} withheld entries checked");
        assert!(
            three_d >= 10,
            "only {three_d} three-dimensional tables checked"
        );
    }

    #[test]
    fn a_cell_bridging_two_withheld_blocks_is_protected_by_the_audit() {
        // Two 2x2 blocks of small counts joined by one small cell: every row and column holds
        // two or more withheld cells, yet the bridge is the sum of the blocks' row equations
        // minus their column equations. Only the audit sees it.
        let small = [
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
            (2, 2),
            (2, 3),
            (3, 2),
            (3, 3),
            (1, 2),
        ];
        let mut facts = Vec::new();
        for r in 0..4 {
            for c in 0..4 {
                let n = if small.contains(&(r, c)) { 2 } else { 20 };
                for _ in 0..n {
                    facts.push(Fact {
                        route: format!("R{r}"),
                        sex: format!("S{c}"),
                        ..Default::default()
                    });
                }
            }
        }
        let t = tabulate(&facts, &[Dimension::Route, Dimension::Sex], 5).expect("table");
        assert_eq!(t.primary, 9);
        assert!(t.complementary > 0, "the audit adds a complement");
        let grid = Grid::new(vec![5, 5]);
        let mut counts = vec![0u64; 25];
        let mut withheld = vec![false; 25];
        for e in &t.entries {
            let coords: Vec<usize> = e
                .key
                .iter()
                .map(|k| {
                    k.as_deref()
                        .map_or(4, |k| usize::from(k.as_bytes()[1] - b'0'))
                })
                .collect();
            let i = grid.flat(&coords);
            counts[i] = truth(&facts, &[Dimension::Route, Dimension::Sex], &e.key);
            withheld[i] = e.count.is_none();
        }
        for target in (0..25).filter(|i| withheld[*i]) {
            assert!(
                alternative(&grid, &counts, &withheld, target, 1),
                "{target}"
            );
        }
    }

    #[test]
    fn dates_ages_and_facts() {
        assert_eq!(civil(0), (1970, 1, 1));
        // 2026-11-22T12:00:00Z.
        let at = 1_795_348_800_000;
        assert_eq!(civil(at), (2026, 11, 22));
        assert_eq!(month_of(at), "2026-11");
        assert_eq!(civil(951_782_400_000), (2000, 2, 29));
        let born = |date: &str, year: u32| pb::IdentityData {
            birth_date: date.into(),
            estimated_birth_year: year,
            ..Default::default()
        };
        assert_eq!(age_at(&born("2014-11-22", 0), at), Some(12));
        assert_eq!(age_at(&born("2014-11-23", 0), at), Some(11));
        assert_eq!(age_at(&born("", 2010), at), Some(16));
        assert_eq!(age_at(&born("", 0), at), None);
        assert_eq!(age_at(&born("2030-01-01", 0), at), None);
        let payload = pb::ReferralPayload {
            identity: Some(pb::IdentityData {
                given_names: vec!["Amina".into()],
                sex: pb::Sex::Female as i32,
                estimated_birth_year: 2014,
                ..Default::default()
            }),
            protection_concerns: Some(pb::ProtectionConcerns {
                migratory_status: pb::MigratoryStatus::LeftBehind as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = fact_of(
            &payload,
            pb::Purpose::ServiceReferral,
            "ZM-DSW",
            "MW-DSW",
            at,
            "pending",
        );
        assert_eq!(
            f,
            Fact {
                age_band: "12-14".into(),
                sex: "female".into(),
                migratory_status: "left-behind".into(),
                purpose: "service-referral".into(),
                route: "ZM-DSW → MW-DSW".into(),
                month: "2026-11".into(),
                outcome: "pending".into(),
            }
        );
    }

    #[test]
    fn age_bands() {
        assert_eq!(age_band(Some(0)), "0-4");
        assert_eq!(age_band(Some(11)), "5-11");
        assert_eq!(age_band(Some(14)), "12-14");
        assert_eq!(age_band(Some(17)), "15-17");
        assert_eq!(age_band(Some(30)), "18+");
        assert_eq!(age_band(None), "unknown");
        assert_eq!(age_band(Some(-1)), "unknown");
    }

    #[test]
    fn dimensions_are_named_with_underscores_or_hyphens() {
        assert_eq!(Dimension::parse("age_band"), Some(Dimension::AgeBand));
        assert_eq!(Dimension::parse("age-band"), Some(Dimension::AgeBand));
        assert_eq!(
            Dimension::parse("migratory-status"),
            Some(Dimension::MigratoryStatus)
        );
        assert_eq!(Dimension::parse("age"), None);
    }

    #[test]
    fn age_bands_are_listed_youngest_first_not_in_text_order() {
        let facts: Vec<Fact> = ["15-17", "unknown", "5-11", "18+", "12-14", "0-4"]
            .iter()
            .flat_map(|band| {
                (0..3).map(|_| Fact {
                    age_band: (*band).into(),
                    ..Default::default()
                })
            })
            .collect();
        let table = tabulate(&facts, &[Dimension::AgeBand], 2).expect("table");
        let listed: Vec<&str> = table
            .entries
            .iter()
            .filter_map(|e| e.key[0].as_deref())
            .collect();
        assert_eq!(listed, AGE_BANDS);
    }
}
