//! The contract's dataset split, in memory.
//!
//! The datasets stage does the same on files; this copy serves benchmarks, tests
//! and the validation split of [`crate::tune`], so that every number the engine
//! quotes comes from the same rules: dedup on (user, item, timestamp floored to
//! 300 s) keeping the strongest row (the largest weight, the latest of equals),
//! sort by time, first 80 % train, the rest test with synthetic rows dropped.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The prefix of user ids that stand for no one: item-level signals such as
/// design-image views. They count for popularity, never as a user's history.
pub const ANONYMOUS_PREFIX: &str = "anonymous:";

/// Width of the dedup window, seconds (pandas `floor('5min')`).
pub const DEDUP_WINDOW_SECS: i64 = 300;

/// Share of the (deduplicated, time-ordered) rows that go to train.
pub const TRAIN_FRACTION: f64 = 0.8;

/// Whether a user id stands for no one (see [`ANONYMOUS_PREFIX`]).
pub fn is_anonymous(user_id: &str) -> bool {
    user_id.starts_with(ANONYMOUS_PREFIX)
}

/// Whether a user id stands for a visitor known only by a storefront session
/// or device (`session:…`, `device:…`, as the event store names them), not a
/// customer with an account: a first visit is a customer's.
pub fn is_visitor(user_id: &str) -> bool {
    user_id.starts_with("session:") || user_id.starts_with("device:")
}

/// One training interaction, as the dataset files hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// The shop's (hashed) user id, or an `anonymous:` id for item-level signals.
    pub user_id: String,
    /// The product.
    pub item_id: String,
    /// Event weight or rating; summed per (user, item) by [`crate::Signal`].
    pub weight: f32,
    /// Unix seconds.
    pub timestamp: i64,
    /// `purchase`, `view`, `rating`… (informational to the engine).
    pub interaction_type: String,
    /// Simulated rather than observed; never in a test set.
    pub synthetic: bool,
}

impl Interaction {
    /// A real (non-synthetic) interaction of type `rating`, the shape of public data sets.
    pub fn rating(
        user_id: impl Into<String>,
        item_id: impl Into<String>,
        weight: f32,
        timestamp: i64,
    ) -> Self {
        Interaction {
            user_id: user_id.into(),
            item_id: item_id.into(),
            weight,
            timestamp,
            interaction_type: "rating".into(),
            synthetic: false,
        }
    }
}

/// A train/test split and what it took to make it.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// The first [`TRAIN_FRACTION`] of the deduplicated rows, in time order.
    pub train: Vec<Interaction>,
    /// The rest, real rows only, in time order.
    pub test: Vec<Interaction>,
    /// Rows removed by the 5-minute dedup.
    pub deduplicated: usize,
    /// Synthetic rows that fell in the test part and were dropped.
    pub synthetic_dropped: usize,
    /// Timestamp of the first row after the cut (`None` when the test part is empty).
    pub split_timestamp: Option<i64>,
}

/// Dedups on (user, item, timestamp floored to 300 s), keeping the strongest
/// row (the largest weight: a view after a purchase in the same window does not
/// replace it), of equal weights the latest (the last one given when timestamps
/// tie), then sorts by timestamp. Ties keep
/// the input order (a stable sort), as pandas' `sort_values(kind="stable")` does.
/// Returns the rows and how many were removed.
pub fn dedup_sorted(rows: Vec<Interaction>) -> (Vec<Interaction>, usize) {
    let total = rows.len();
    let mut keep: HashMap<(&str, &str, i64), usize> = HashMap::with_capacity(total);
    for (i, r) in rows.iter().enumerate() {
        let key = (
            r.user_id.as_str(),
            r.item_id.as_str(),
            r.timestamp.div_euclid(DEDUP_WINDOW_SECS),
        );
        keep.entry(key)
            .and_modify(|j| {
                let kept = &rows[*j];
                let stronger = r
                    .weight
                    .total_cmp(&kept.weight)
                    .then(r.timestamp.cmp(&kept.timestamp));
                if stronger != std::cmp::Ordering::Less {
                    *j = i;
                }
            })
            .or_insert(i);
    }
    let mut kept = vec![false; total];
    for &i in keep.values() {
        kept[i] = true;
    }
    let mut out: Vec<Interaction> = rows
        .into_iter()
        .zip(kept)
        .filter(|(_, k)| *k)
        .map(|(r, _)| r)
        .collect();
    out.sort_by_key(|r| r.timestamp);
    let removed = total - out.len();
    (out, removed)
}

/// The contract's split: [`dedup_sorted`], then the first `train_fraction` of the
/// rows (rounded down) are train and the rest test, synthetic rows dropped from test.
pub fn temporal_split(rows: Vec<Interaction>, train_fraction: f64) -> Split {
    let (mut rows, deduplicated) = dedup_sorted(rows);
    let cut = ((rows.len() as f64) * train_fraction).floor() as usize;
    let cut = cut.min(rows.len());
    let rest = rows.split_off(cut);
    let split_timestamp = rest.first().map(|r| r.timestamp);
    let before = rest.len();
    let test: Vec<Interaction> = rest.into_iter().filter(|r| !r.synthetic).collect();
    Split {
        synthetic_dropped: before - test.len(),
        train: rows,
        test,
        deduplicated,
        split_timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(u: &str, i: &str, w: f32, t: i64) -> Interaction {
        Interaction::rating(u, i, w, t)
    }

    #[test]
    fn dedup_keeps_the_latest_row_of_each_five_minute_window() {
        let rows = vec![
            row("u", "a", 1.0, 600),
            row("u", "a", 3.0, 899), // same window [600, 900): the later one wins
            row("u", "a", 5.0, 900), // next window: kept
            row("v", "a", 1.0, 650),
        ];
        let (out, removed) = dedup_sorted(rows);
        assert_eq!(removed, 1);
        let kept: Vec<(String, f32, i64)> = out
            .iter()
            .map(|r| (r.user_id.clone(), r.weight, r.timestamp))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("v".into(), 1.0, 650),
                ("u".into(), 3.0, 899),
                ("u".into(), 5.0, 900)
            ]
        );
    }

    #[test]
    fn dedup_keeps_the_strongest_signal_then_the_latest() {
        let rows = vec![
            row("u", "a", 5.0, 600), // a purchase…
            row("u", "a", 1.0, 650), // …then a view in the same window: the purchase stays
            row("u", "b", 3.0, 600),
            row("u", "b", 3.0, 640), // equal weights: the later wins
        ];
        let (out, removed) = dedup_sorted(rows);
        assert_eq!(removed, 2);
        let kept: Vec<(String, f32, i64)> = out
            .iter()
            .map(|r| (r.item_id.clone(), r.weight, r.timestamp))
            .collect();
        assert_eq!(kept, vec![("a".into(), 5.0, 600), ("b".into(), 3.0, 640)]);
    }

    #[test]
    fn split_is_eighty_twenty_in_time_order_and_test_has_no_synthetic_rows() {
        let mut rows: Vec<Interaction> = (0..10)
            .rev()
            .map(|t| row("u", &format!("i{t}"), 1.0, t * 1000))
            .collect();
        rows[0].synthetic = true; // the latest row, falls in test
        rows[9].synthetic = true; // the earliest row, stays in train
        let s = temporal_split(rows, TRAIN_FRACTION);
        assert_eq!(s.train.len(), 8);
        assert!(s.train.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        assert!(s.train[0].synthetic);
        assert_eq!(s.test.len(), 1);
        assert_eq!(s.synthetic_dropped, 1);
        assert_eq!(s.split_timestamp, Some(8000));
        assert!(s.test.iter().all(|r| !r.synthetic));
    }
}
