//! A dataset by day (UTC): what a manifest remembers of each, and where the
//! 80/20 cut falls among them.
//!
//! A period holds whole 5-minute windows (86,400 s is 288 of them), so
//! deduplicating a period alone gives the rows a deduplication of everything
//! keeps in it. Every file holds one row group (or more, past a million rows)
//! per period, whose bytes depend on that period's rows alone: an increment
//! re-reads and re-encodes the periods that changed and copies the others'
//! row groups from its parent's files.

use std::collections::BTreeMap;
use std::ops::Range;

use manirec_store::{Exclusion, TrainingRow};
use serde::{Deserialize, Serialize};

use super::table::{Row, Table};

/// Seconds of a period: one UTC day. Shorter periods mean less to re-read
/// around the cut and the newest rows (a week re-read 4 % of a year's rows where
/// a day re-reads 0.5 %); longer ones mean fewer, larger row groups.
pub const PERIOD_SECONDS: i64 = 86_400;

/// The start of the period holding `timestamp`.
pub fn period_start(timestamp: i64) -> i64 {
    timestamp.div_euclid(PERIOD_SECONDS) * PERIOD_SECONDS
}

/// Rows after deduplication of one (source, type, synthetic) kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// `existing_data`, `webhook`, `realtime`, …
    pub source: String,
    /// `purchase`, `view`, …
    pub interaction_type: String,
    /// Simulated rather than observed.
    pub synthetic: bool,
    /// Rows.
    pub rows: u64,
}

/// What a manifest records of one period: enough to place the cut and count
/// the files' rows without reading the period again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// Unix seconds, a multiple of [`PERIOD_SECONDS`].
    pub start: i64,
    /// Interactions read (before deduplication).
    pub input_rows: u64,
    /// Interactions of refunded, cancelled or voided orders, left out.
    pub excluded_refunded: u64,
    /// Public interactions left out.
    pub excluded_public: u64,
    /// Rows after deduplication.
    pub rows: u64,
    /// The timestamp of its first row (0 when it has none).
    pub first_timestamp: i64,
    /// Those rows by kind, in (source, type, synthetic) order.
    pub groups: Vec<Group>,
}

impl Period {
    /// Simulated rows after deduplication.
    pub fn synthetic_rows(&self) -> u64 {
        self.groups
            .iter()
            .filter(|g| g.synthetic)
            .map(|g| g.rows)
            .sum()
    }
}

/// Interactions read of one period, before deduplication.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Rows that may be trained on.
    pub input: u64,
    /// Rows of refunded, cancelled or voided orders.
    pub refunded: u64,
    /// Public rows left out.
    pub public: u64,
}

impl Tally {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: Tally) {
        self.input += other.input;
        self.refunded += other.refunded;
        self.public += other.public;
    }

    /// Counts a row left out of the dataset, by why.
    pub fn exclude(&mut self, why: Option<Exclusion>) {
        match why {
            Some(Exclusion::Refunded) => self.refunded += 1,
            Some(Exclusion::Public) => self.public += 1,
            None => {}
        }
    }
}

/// Counts a row left out in the tally of its period.
pub fn tally_excluded(tallies: &mut BTreeMap<i64, Tally>, row: &TrainingRow<'_>) {
    tallies
        .entry(period_start(row.timestamp))
        .or_default()
        .exclude(row.excluded);
}

/// The periods of `table`'s rows (sorted by time and deduplicated), each with
/// the range of its rows; `tallies` gives what was read of each, and adds the
/// periods whose every row was left out.
pub fn periods_of(table: &Table, tallies: &BTreeMap<i64, Tally>) -> Vec<(Period, Range<usize>)> {
    let mut out: Vec<(Period, Range<usize>)> = Vec::with_capacity(tallies.len());
    let rows = &table.rows;
    let mut i = 0;
    let mut starts = tallies.keys().copied().peekable();
    let period = |start: i64, range: Range<usize>| {
        let tally = tallies.get(&start).copied().unwrap_or_default();
        let mut kinds: BTreeMap<(u16, u16, bool), u64> = BTreeMap::new();
        for r in &rows[range.clone()] {
            *kinds.entry((r.source, r.kind, r.synthetic)).or_default() += 1;
        }
        // Dictionaries are in string order, so this is (source, type) order.
        let groups = kinds
            .into_iter()
            .map(|((source, kind, synthetic), n)| Group {
                source: table.sources.get(u32::from(source)).to_owned(),
                interaction_type: table.kinds.get(u32::from(kind)).to_owned(),
                synthetic,
                rows: n,
            })
            .collect();
        let period = Period {
            start,
            input_rows: tally.input,
            excluded_refunded: tally.refunded,
            excluded_public: tally.public,
            rows: range.len() as u64,
            first_timestamp: rows
                .get(range.start)
                .filter(|_| !range.is_empty())
                .map_or(0, |r| r.timestamp),
            groups,
        };
        (period, range)
    };
    while i < rows.len() {
        let start = period_start(rows[i].timestamp);
        // Periods with nothing to train on that come first.
        while let Some(s) = starts.next_if(|&s| s < start) {
            out.push(period(s, i..i));
        }
        starts.next_if_eq(&start);
        let end = i + rows[i..].partition_point(|r| period_start(r.timestamp) == start);
        out.push(period(start, i..end));
        i = end;
    }
    for s in starts {
        out.push(period(s, rows.len()..rows.len()));
    }
    out
}

/// Where a period's rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Every row is train.
    Train,
    /// Every row is test (its real rows; simulated ones are dropped).
    Test,
    /// The cut falls inside: the first `n` rows are train, the rest test.
    Split(usize),
}

/// Where the cut falls: the first `floor(0.8 * rows)` rows of all periods
/// are train. Returns the cut and each period's part.
pub fn parts(periods: &[Period]) -> (u64, Vec<Part>) {
    let total: u64 = periods.iter().map(|p| p.rows).sum();
    let cut = total * 4 / 5;
    let mut before = 0u64;
    let parts = periods
        .iter()
        .map(|p| {
            let part = if before + p.rows <= cut {
                Part::Train
            } else if before >= cut {
                Part::Test
            } else {
                Part::Split((cut - before) as usize)
            };
            before += p.rows;
            part
        })
        .collect();
    (cut, parts)
}

/// The simulated rows of `rows`.
pub fn simulated(rows: &[Row]) -> Vec<Row> {
    rows.iter().filter(|r| r.synthetic).copied().collect()
}

/// The real (not simulated) rows of `rows`.
pub fn real(rows: &[Row]) -> Vec<Row> {
    rows.iter().filter(|r| !r.synthetic).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(start: i64, rows: u64) -> Period {
        Period {
            start,
            input_rows: rows,
            excluded_refunded: 0,
            excluded_public: 0,
            rows,
            first_timestamp: start,
            groups: vec![],
        }
    }

    #[test]
    fn periods_are_whole_dedup_windows_counted_from_the_epoch() {
        assert_eq!(PERIOD_SECONDS % super::super::WINDOW_SECONDS, 0);
        assert_eq!(period_start(0), 0);
        assert_eq!(period_start(PERIOD_SECONDS - 1), 0);
        assert_eq!(period_start(PERIOD_SECONDS), PERIOD_SECONDS);
        assert_eq!(period_start(-1), -PERIOD_SECONDS);
    }

    #[test]
    fn the_cut_falls_inside_the_period_that_holds_the_eightieth_percentile() {
        let p = [period(0, 4), period(1, 5), period(2, 1)];
        // 10 rows: the first 8 are train, 4 of the second period's 5.
        let (cut, parts) = parts(&p);
        assert_eq!(cut, 8);
        assert_eq!(parts, [Part::Train, Part::Split(4), Part::Test]);
        // A cut on a boundary leaves no period split.
        let p = [period(0, 4), period(1, 4), period(2, 2)];
        assert_eq!(parts_of(&p), [Part::Train, Part::Train, Part::Test]);
        // Empty periods (all rows left out) take no rows from either side.
        let p = [period(0, 0), period(1, 5), period(2, 0)];
        assert_eq!(parts_of(&p), [Part::Train, Part::Split(4), Part::Test]);
    }

    fn parts_of(p: &[Period]) -> Vec<Part> {
        parts(p).1
    }
}
