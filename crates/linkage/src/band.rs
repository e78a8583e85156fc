//! Score bands: what a peer reports of a comparison is a band, never the raw similarity, and
//! the bands' thresholds are calibrated on data with known links (the accuracy benchmark
//! prints them), not relative to the best hit: a lone weak hit stays weak.

/// How strongly an encoding matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Band {
    /// Below the "possible" threshold: not reported.
    None,
    /// Worth a caseworker's look.
    Possible,
    /// Calibrated so that at least 99% of such matches are true.
    Likely,
}

/// The thresholds of the bands, on Dice similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    /// Lowest similarity reported as possible.
    pub possible: f64,
    /// Lowest similarity reported as likely.
    pub likely: f64,
}

/// The bands a node reports with the adopted schema ([`crate::SCHEMA`], `kinbridge-clk-v1`):
/// calibrated on the even-numbered entities of FEBRL 4 by `cargo bench -p kinbridge-linkage
/// --bench linkage` ("likely" where at least 99.5% of pairs are true links, "possible" where at
/// least 10% are), and checked on the odd-numbered ones, where 99.09% of "likely" pairs are true
/// (docs/performance.md). Only valid for that schema: the hardened schemas score on other
/// scales (balanced: possible ≥ 0.712, likely ≥ 0.842), and the schema with phonetic keys,
/// [`crate::SCHEMA_V2`], not adopted, on its own (possible ≥ 0.554, likely ≥ 0.745).
pub const BANDS: Bands = Bands {
    possible: 0.548,
    likely: 0.749,
};

impl Bands {
    /// The band of `similarity`.
    pub fn of(&self, similarity: f64) -> Band {
        if similarity >= self.likely {
            Band::Likely
        } else if similarity >= self.possible {
            Band::Possible
        } else {
            Band::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_thresholds() {
        let b = Bands {
            possible: 0.6,
            likely: 0.8,
        };
        assert_eq!(b.of(0.59), Band::None);
        assert_eq!(b.of(0.6), Band::Possible);
        assert_eq!(b.of(0.8), Band::Likely);
        assert!(Band::Likely > Band::Possible);
    }
}
