//! Interactions in memory, compactly: strings interned once, rows of fixed size.
//!
//! A row is 48 bytes whatever its ids, so five million interactions take about
//! 240 MB, and sorting and deduplicating them moves integers, not strings. The
//! dictionaries are renumbered in string order before sorting, so that
//! comparing two ids compares the strings they stand for: the output order, and
//! so the files' bytes, depend on the data only, not on the order it was read in.

use std::hash::BuildHasherDefault;

use manirec_store::{DatasetSnapshot, ScanFilter, ScanStats, Store, TrainingRow};
use rustc_hash::{FxHashMap, FxHasher};

use crate::{Progress, Result};

/// Seconds of the deduplication window (pandas' `floor('5min')`).
pub const WINDOW_SECONDS: i64 = 300;

/// Strings, each stored once, numbered.
#[derive(Debug, Default)]
pub struct Dict {
    map: FxHashMap<Box<str>, u32>,
    values: Vec<Box<str>>,
}

impl Dict {
    /// The number of `s`, adding it when new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&n) = self.map.get(s) {
            return n;
        }
        let n = self.values.len() as u32;
        let owned: Box<str> = s.into();
        self.values.push(owned.clone());
        self.map.insert(owned, n);
        n
    }

    /// The string numbered `n`.
    pub fn get(&self, n: u32) -> &str {
        &self.values[n as usize]
    }

    /// Every string, by number.
    pub fn values(&self) -> &[Box<str>] {
        &self.values
    }

    /// Renumbers in string order; returns `old number -> new number`.
    fn sort(&mut self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.values.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.values[a as usize].cmp(&self.values[b as usize]));
        let mut remap = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        let mut values = std::mem::take(&mut self.values);
        let mut sorted: Vec<Box<str>> = Vec::with_capacity(values.len());
        for &old in &order {
            sorted.push(std::mem::take(&mut values[old as usize]));
        }
        self.values = sorted;
        self.map.clear();
        self.map.shrink_to_fit();
        remap
    }
}

/// One interaction, with its strings replaced by dictionary numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Row id in the store: the later written of two equal rows has the larger id.
    pub id: i64,
    /// Unix seconds.
    pub timestamp: i64,
    /// Signal strength.
    pub rating: f64,
    /// Units.
    pub quantity: i64,
    /// In [`Table::users`].
    pub user: u32,
    /// In [`Table::items`].
    pub item: u32,
    /// In [`Table::kinds`].
    pub kind: u16,
    /// In [`Table::sources`].
    pub source: u16,
    /// Simulated rather than observed.
    pub synthetic: bool,
}

/// Interactions read from the store.
#[derive(Debug, Default)]
pub struct Table {
    /// User ids.
    pub users: Dict,
    /// Item ids.
    pub items: Dict,
    /// Interaction types.
    pub kinds: Dict,
    /// Sources.
    pub sources: Dict,
    /// The rows.
    pub rows: Vec<Row>,
}

/// Rows between two progress updates.
const PROGRESS_STEP: u64 = 100_000;

impl Table {
    /// Reads the interactions `filter` selects (refunded orders' rows left out),
    /// in a read transaction of its own.
    pub fn load(
        store: &Store,
        filter: ScanFilter,
        progress: &dyn Progress,
    ) -> Result<(Table, ScanStats)> {
        let snapshot = store.dataset_snapshot()?;
        let loaded = Table::read(&snapshot, filter, progress, |_| {})?;
        snapshot.finish()?;
        Ok(loaded)
    }

    /// Reads the interactions `filter` selects through `snapshot`, dictionaries
    /// renumbered in string order; the rows left out (refunded orders', public
    /// ones unless asked) go to `excluded` when the filter hands them out.
    pub fn read(
        snapshot: &DatasetSnapshot<'_>,
        filter: ScanFilter,
        progress: &dyn Progress,
        mut excluded: impl FnMut(&TrainingRow<'_>),
    ) -> Result<(Table, ScanStats)> {
        // A capacity hint that costs no scan (ids are dense unless rows were deleted).
        let total = if filter.time_range.is_none() && filter.after_id.is_none() {
            snapshot.max_interaction_id()?.max(0)
        } else {
            0
        };
        progress.begin("reading interactions", total as u64);
        let mut table = Table {
            rows: Vec::with_capacity(usize::try_from(total).unwrap_or(0)),
            ..Table::default()
        };
        let mut overflow = None;
        let mut seen = 0u64;
        // Types and sources repeat: remember the last of each instead of hashing.
        let mut last_kind: (Box<str>, u32) = (Box::from("\0"), 0);
        let mut last_source: (Box<str>, u32) = (Box::from("\0"), 0);
        let stats = snapshot.scan(filter, |r: &TrainingRow<'_>| {
            if r.excluded.is_some() {
                excluded(r);
                return;
            }
            if *last_kind.0 != *r.interaction_type {
                last_kind = (
                    r.interaction_type.into(),
                    table.kinds.intern(r.interaction_type),
                );
            }
            if *last_source.0 != *r.source {
                last_source = (r.source.into(), table.sources.intern(r.source));
            }
            let (kind, source) = (last_kind.1, last_source.1);
            let (Ok(kind), Ok(source)) = (u16::try_from(kind), u16::try_from(source)) else {
                overflow.get_or_insert(r.id);
                return;
            };
            table.rows.push(Row {
                id: r.id,
                timestamp: r.timestamp,
                rating: r.rating,
                quantity: r.quantity,
                user: table.users.intern(r.user_id),
                item: table.items.intern(r.item_id),
                kind,
                source,
                synthetic: r.synthetic,
            });
            seen += 1;
            if seen.is_multiple_of(PROGRESS_STEP) {
                progress.advance(PROGRESS_STEP);
            }
        })?;
        progress.end();
        if let Some(id) = overflow {
            return Err(crate::Error::Data(format!(
                "more than 65,536 distinct interaction types or sources (row id {id}); \
                 interaction_type and source are meant to be short vocabularies"
            )));
        }
        table.renumber();
        Ok((table, stats))
    }

    /// Renumbers every dictionary in string order.
    pub fn renumber(&mut self) {
        let users = self.users.sort();
        let items = self.items.sort();
        let kinds = self.kinds.sort();
        let sources = self.sources.sort();
        for r in &mut self.rows {
            r.user = users[r.user as usize];
            r.item = items[r.item as usize];
            r.kind = kinds[r.kind as usize] as u16;
            r.source = sources[r.source as usize] as u16;
        }
    }

    /// Sorts by time, then user, item and type (as strings), then id: a total
    /// order, so equal data gives equal files.
    pub fn sort_by_time(&mut self) {
        self.rows
            .sort_unstable_by_key(|r| (r.timestamp, r.user, r.item, r.kind, r.id));
    }

    /// Keeps one row per (user, item, 5-minute window): the strongest signal (the
    /// largest rating: a purchase or an add-to-cart is not replaced by the view
    /// that follows it), and of equal ratings the latest, i.e. the one with the
    /// largest timestamp, and of equal timestamps the one written last.
    /// The rows must be sorted by time ([`Table::sort_by_time`]); their order is
    /// kept. Returns the number of rows removed.
    ///
    /// The window is the timestamp floored to a multiple of 300 s (pandas'
    /// `dt.floor('5min')`), so a group lies within one window and the pass only
    /// remembers the current window's keys.
    pub fn dedup_windows(&mut self) -> u64 {
        let n = self.rows.len();
        let mut keep = vec![true; n];
        let mut current = i64::MIN;
        let mut seen: std::collections::HashMap<(u32, u32), usize, BuildHasherDefault<FxHasher>> =
            Default::default();
        for (i, r) in self.rows.iter().enumerate() {
            let window = r.timestamp.div_euclid(WINDOW_SECONDS);
            if window != current {
                seen.clear();
                current = window;
            }
            match seen.entry((r.user, r.item)) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let j = *o.get();
                    let kept = &self.rows[j];
                    let later = r
                        .rating
                        .total_cmp(&kept.rating)
                        .then((r.timestamp, r.id).cmp(&(kept.timestamp, kept.id)));
                    if later == std::cmp::Ordering::Greater {
                        keep[j] = false;
                        o.insert(i);
                    } else {
                        keep[i] = false;
                    }
                }
            }
        }
        let mut k = 0;
        self.rows.retain(|_| {
            k += 1;
            keep[k - 1]
        });
        (n - self.rows.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(i64, &str, &str, i64, &str)]) -> Table {
        let mut t = Table::default();
        for &(id, user, item, ts, kind) in rows {
            let row = Row {
                id,
                timestamp: ts,
                rating: 1.0,
                quantity: 1,
                user: t.users.intern(user),
                item: t.items.intern(item),
                kind: t.kinds.intern(kind) as u16,
                source: t.sources.intern("realtime") as u16,
                synthetic: false,
            };
            t.rows.push(row);
        }
        t.renumber();
        t.sort_by_time();
        t
    }

    fn ids(t: &Table) -> Vec<i64> {
        t.rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn dictionaries_are_renumbered_in_string_order() {
        let t = table(&[(1, "zed", "b", 5, "view"), (2, "amy", "a", 5, "view")]);
        assert_eq!(t.users.get(0), "amy");
        assert_eq!(ids(&t), [2, 1], "same time: user order decides");
    }

    #[test]
    fn one_row_per_user_item_and_window_the_latest_wins() {
        let mut t = table(&[
            (1, "u", "p", 600, "view"),      // window 600..900
            (2, "u", "p", 899, "view"),      // same window, later: wins
            (3, "u", "p", 900, "view"),      // next window: kept
            (4, "u", "p", 1000, "purchase"), // same window as 3, later: wins
            (5, "u", "q", 600, "view"),      // other item: kept
            (6, "v", "p", 600, "view"),      // other user: kept
            (7, "u", "p", 1000, "view"),     // same time as 4, written later: wins
            (8, "u", "p", -1, "view"),       // before 1970: floors to -300
            (9, "u", "p", -300, "view"),     // same window as 8, earlier: dropped
        ]);
        assert_eq!(t.dedup_windows(), 4);
        let mut kept = ids(&t);
        kept.sort();
        assert_eq!(kept, [2, 5, 6, 7, 8]);
        // Order stays sorted by time.
        assert!(t.rows.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    }

    #[test]
    fn the_strongest_signal_of_a_window_wins_then_the_latest() {
        let mut t = table(&[
            (1, "u", "p", 600, "purchase"),
            (2, "u", "p", 650, "view"), // a later view does not replace the purchase
            (3, "u", "q", 600, "add_to_cart"),
            (4, "u", "q", 700, "add_to_cart"), // equal weight: the later wins
            (5, "u", "q", 800, "view"),
        ]);
        let weight = |kind: &str| match kind {
            "purchase" => 5.0,
            "add_to_cart" => 3.0,
            _ => 1.0,
        };
        for r in t.rows.iter_mut() {
            r.rating = weight(t.kinds.get(r.kind as u32));
        }
        assert_eq!(t.dedup_windows(), 3);
        let mut kept = ids(&t);
        kept.sort();
        assert_eq!(kept, [1, 4]);
    }

    #[test]
    fn exact_duplicates_keep_one() {
        let mut t = table(&[(1, "u", "p", 10, "view"), (2, "u", "p", 10, "view")]);
        assert_eq!(t.dedup_windows(), 1);
        assert_eq!(ids(&t), [2]);
    }
}
