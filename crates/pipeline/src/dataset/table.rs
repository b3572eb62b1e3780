//! Interactions in memory, compactly: strings interned once, rows of fixed size.
//!
//! A row is 48 bytes whatever its ids, so five million interactions take about
//! 240 MB, and sorting and deduplicating them moves integers, not strings. The
//! dictionaries are renumbered in string order before sorting, so that
//! comparing two ids compares the strings they stand for: the output order, and
//! so the files' bytes, depend on the data only, not on the order it was read in.

use std::hash::{BuildHasher, BuildHasherDefault};
use std::ops::Range;

use hashbrown::hash_table::{Entry, HashTable};
use manirec_store::{DatasetSnapshot, ScanFilter, ScanStats, Store, TrainingRow};
use rayon::slice::ParallelSliceMut;
use rustc_hash::{FxBuildHasher, FxHasher};

use crate::{Progress, Result};

/// Seconds of the deduplication window (pandas' `floor('5min')`).
pub const WINDOW_SECONDS: i64 = 300;

/// Strings, each stored once, numbered: their bytes one after the other in
/// one buffer, found by hash through a table of numbers. A string costs its
/// bytes and a few words, not two allocations of its own (a full read
/// interns two ids a row, and fresh memory is slow to touch).
#[derive(Debug, Default)]
pub struct Dict {
    /// Every string, in number order.
    text: String,
    /// Where each string ends in `text` (string n starts where n - 1 ends).
    ends: Vec<usize>,
    /// The numbers, by their string's hash; rebuilt after a renumbering.
    numbers: HashTable<u32>,
}

fn hash(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

impl Dict {
    /// The number of `s`, adding it when new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if self.numbers.len() < self.ends.len() {
            self.index();
        }
        let Dict {
            text,
            ends,
            numbers,
        } = self;
        let get = |n: &u32| string(text, ends, *n);
        match numbers.entry(hash(s), |n| get(n) == s, |n| hash(get(n))) {
            Entry::Occupied(number) => *number.get(),
            Entry::Vacant(slot) => {
                let n = ends.len() as u32;
                text.push_str(s);
                ends.push(text.len());
                slot.insert(n);
                n
            }
        }
    }

    /// Finds every string by hash again.
    fn index(&mut self) {
        let mut numbers = HashTable::with_capacity(self.ends.len());
        for n in 0..self.ends.len() as u32 {
            let s = string(&self.text, &self.ends, n);
            numbers.insert_unique(hash(s), n, |n| hash(string(&self.text, &self.ends, *n)));
        }
        self.numbers = numbers;
    }

    /// The string numbered `n`.
    pub fn get(&self, n: u32) -> &str {
        string(&self.text, &self.ends, n)
    }

    /// How many strings there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every string, by number.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.ends.len() as u32).map(|n| self.get(n))
    }

    /// Renumbers in string order; returns `old number -> new number`.
    fn sort(&mut self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.ends.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.get(a).cmp(self.get(b)));
        let mut remap = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        let mut text = String::with_capacity(self.text.len());
        let mut ends = Vec::with_capacity(self.ends.len());
        for &old in &order {
            text.push_str(self.get(old));
            ends.push(text.len());
        }
        // Found again by hash only if another string is interned.
        *self = Dict {
            text,
            ends,
            numbers: HashTable::new(),
        };
        remap
    }
}

/// String `n` of a dictionary's `text` and `ends`.
fn string<'a>(text: &'a str, ends: &[usize], n: u32) -> &'a str {
    let n = n as usize;
    let start = if n == 0 { 0 } else { ends[n - 1] };
    &text[start..ends[n]]
}

/// One interaction, with its strings replaced by dictionary numbers.
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Zeroable)]
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

/// How many connections a read of every interaction uses at once: one per
/// core, at most four (each is a connection and a thread; measured on two).
pub fn read_parts() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Rows from which a sort runs on rayon's threads.
const PARALLEL_SORT_ROWS: usize = 200_000;

/// Where a [`Loader`] puts its rows.
trait Rows {
    fn push(&mut self, row: Row);
}

impl Rows for Vec<Row> {
    fn push(&mut self, row: Row) {
        Vec::push(self, row);
    }
}

/// A part's share of one buffer, filled from its start; it has room for
/// every id of the part's range, so it does not run out unless the buffer
/// could not be allocated.
struct Share<'a> {
    rows: &'a mut [Row],
    len: usize,
    /// A row came that had no room.
    overflowed: bool,
}

impl Rows for Share<'_> {
    fn push(&mut self, row: Row) {
        match self.rows.get_mut(self.len) {
            Some(slot) => {
                *slot = row;
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }
}

/// Builds one [`Table`] (its dictionaries here, its rows in `rows`) from rows
/// handed out one at a time.
struct Loader<R> {
    table: Table,
    rows: R,
    /// Types and sources repeat: the last of each, to skip hashing it.
    last_kind: Option<(Box<str>, u16)>,
    last_source: Option<(Box<str>, u16)>,
    /// The first row whose type or source did not fit 16 bits.
    overflow: Option<i64>,
}

impl<R: Rows> Loader<R> {
    fn new(rows: R) -> Self {
        Loader {
            table: Table::default(),
            rows,
            last_kind: None,
            last_source: None,
            overflow: None,
        }
    }

    fn add(&mut self, r: &TrainingRow<'_>) {
        let Some(kind) = small(
            &mut self.last_kind,
            &mut self.table.kinds,
            r.interaction_type,
        ) else {
            self.overflow.get_or_insert(r.id);
            return;
        };
        let Some(source) = small(&mut self.last_source, &mut self.table.sources, r.source) else {
            self.overflow.get_or_insert(r.id);
            return;
        };
        self.rows.push(Row {
            id: r.id,
            timestamp: r.timestamp,
            rating: r.rating,
            quantity: r.quantity,
            user: self.table.users.intern(r.user_id),
            item: self.table.items.intern(r.item_id),
            kind,
            source,
            synthetic: r.synthetic,
        });
    }

    /// The dictionaries, numbered in first-seen order (not yet renumbered),
    /// and the rows.
    fn finish(self) -> Result<(Table, R)> {
        if let Some(id) = self.overflow {
            return Err(crate::Error::Data(format!(
                "more than 65,536 distinct interaction types or sources (row id {id}); \
                 interaction_type and source are meant to be short vocabularies"
            )));
        }
        Ok((self.table, self.rows))
    }
}

/// The number of `s` in `dict`, remembering the last one looked up in `last`;
/// `None` past 16 bits.
fn small(last: &mut Option<(Box<str>, u16)>, dict: &mut Dict, s: &str) -> Option<u16> {
    if let Some((value, n)) = last {
        if **value == *s {
            return Some(*n);
        }
    }
    let n = u16::try_from(dict.intern(s)).ok()?;
    *last = Some((s.into(), n));
    Some(n)
}

impl Table {
    /// Reads the interactions `filter` selects (refunded orders' rows left out),
    /// in a read transaction of its own: every row on as many connections at
    /// once as [`read_parts`] takes, the rows since a watermark (an increment,
    /// read on the ingesting thread) on the store's own.
    pub fn load(
        store: &Store,
        filter: ScanFilter,
        progress: &dyn Progress,
    ) -> Result<(Table, ScanStats)> {
        let everything = filter.after_id.is_none() && filter.time_range.is_none();
        let parts = if everything { read_parts() } else { 1 };
        let mut snapshot = store.dataset_snapshot_in_parts(parts)?;
        let (table, _, stats) =
            Table::read_all(&mut snapshot, filter, progress, |_: &mut (), _| {})?;
        snapshot.finish()?;
        Ok((table, stats))
    }

    /// Reads the interactions `filter` selects through `snapshot`, dictionaries
    /// renumbered in string order; the rows left out (refunded orders', public
    /// ones unless asked) go to `excluded` when the filter hands them out.
    pub fn read(
        snapshot: &DatasetSnapshot<'_>,
        filter: ScanFilter,
        mut excluded: impl FnMut(&TrainingRow<'_>),
    ) -> Result<(Table, ScanStats)> {
        let mut loader = Loader::new(Vec::new());
        let stats = snapshot.scan(filter, |r| match r.excluded {
            Some(_) => excluded(r),
            None => loader.add(r),
        })?;
        let (mut table, rows) = loader.finish()?;
        table.rows = rows;
        table.renumber();
        Ok((table, stats))
    }

    /// Like [`Table::read`], on every connection of `snapshot` at once (see
    /// [`DatasetSnapshot::scan_parts`]), with progress: the rows left out go to
    /// `excluded` with the state of their part, and the parts' states come back
    /// in id order.
    pub fn read_all<E: Default + Send>(
        snapshot: &mut DatasetSnapshot<'_>,
        filter: ScanFilter,
        progress: &dyn Progress,
        excluded: impl Fn(&mut E, &TrainingRow<'_>) + Sync,
    ) -> Result<(Table, Vec<E>, ScanStats)> {
        // One buffer for every part's rows, shared out by id range. Zeroed
        // memory fresh from the allocator is not touched until a row is
        // written: room left unused costs address space, not memory, and the
        // parts are joined by closing up the gaps in place rather than by
        // copying them into fresh memory (first touches of memory were a
        // sixth of a full build's time).
        let mut buffer: Vec<Row> = Vec::new();
        let mut unallocated = None;
        let mut starts = Vec::new();
        let (loaders, stats) = snapshot.scan_parts(
            filter,
            |rooms| {
                let total = rooms.iter().fold(0u64, |a, &b| a.saturating_add(b));
                progress.begin("reading interactions", total);
                let rooms: Vec<usize> = rooms
                    .iter()
                    .map(|&room| usize::try_from(room).unwrap_or(usize::MAX))
                    .collect();
                match usize::try_from(total)
                    .ok()
                    .and_then(|n| bytemuck::try_zeroed_vec(n).ok())
                {
                    Some(room) => buffer = room,
                    // Every share empty: the first row says so.
                    None => unallocated = Some(total),
                }
                let mut free: &mut [Row] = &mut buffer;
                let mut taken = 0;
                rooms
                    .into_iter()
                    .map(|room| {
                        let room = room.min(free.len());
                        let (share, rest) = std::mem::take(&mut free).split_at_mut(room);
                        free = rest;
                        starts.push(taken);
                        taken += room;
                        (
                            Loader::new(Share {
                                rows: share,
                                len: 0,
                                overflowed: false,
                            }),
                            E::default(),
                        )
                    })
                    .collect()
            },
            |(loader, excluded_state), r| match r.excluded {
                Some(_) => excluded(excluded_state, r),
                None => loader.add(r),
            },
            |n| progress.advance(n),
        )?;
        progress.end();
        let mut states = Vec::with_capacity(loaders.len());
        let mut parts = Vec::with_capacity(loaders.len());
        for ((loader, state), start) in loaders.into_iter().zip(starts) {
            let (table, share) = loader.finish()?;
            if share.overflowed {
                return Err(crate::Error::Data(match unallocated {
                    Some(n) => format!(
                        "no memory for {n} rows of {} bytes (one per interaction id in the \
                         store); free memory, or export the interactions and import them \
                         into a fresh store to renumber their ids",
                        std::mem::size_of::<Row>()
                    ),
                    None => "a part of the scan handed out more rows than ids in its range".into(),
                }));
            }
            parts.push((table, start..start + share.len));
            states.push(state);
        }
        let mut table = Table::merge(buffer, parts)?;
        table.renumber();
        Ok((table, states, stats))
    }

    /// One table of the rows of `parts`, each numbered in its own
    /// dictionaries and held in its range of `buffer`, in the order given;
    /// dictionaries in first-seen order.
    fn merge(mut buffer: Vec<Row>, parts: Vec<(Table, Range<usize>)>) -> Result<Table> {
        let mut parts = parts.into_iter();
        let Some((mut merged, first)) = parts.next() else {
            return Ok(Table::default());
        };
        // The first share starts the buffer.
        let mut end = first.len();
        for (table, range) in parts {
            let remap = |into: &mut Dict, from: &Dict| -> Vec<u32> {
                from.values().map(|v| into.intern(v)).collect()
            };
            let users = remap(&mut merged.users, &table.users);
            let items = remap(&mut merged.items, &table.items);
            let kinds = remap(&mut merged.kinds, &table.kinds);
            let sources = remap(&mut merged.sources, &table.sources);
            for r in &mut buffer[range.clone()] {
                r.user = users[r.user as usize];
                r.item = items[r.item as usize];
                r.kind = kinds[r.kind as usize] as u16;
                r.source = sources[r.source as usize] as u16;
            }
            let len = range.len();
            buffer.copy_within(range, end);
            end += len;
        }
        buffer.truncate(end);
        // Room for ids without a row (deleted, or left out) is given back
        // when it is most of the buffer.
        if buffer.capacity() > 2 * end {
            buffer.shrink_to_fit();
        }
        merged.rows = buffer;
        // Each part fit 16 bits; together they may not.
        for (dict, what) in [
            (&merged.kinds, "interaction types"),
            (&merged.sources, "sources"),
        ] {
            if dict.len() > usize::from(u16::MAX) + 1 {
                return Err(crate::Error::Data(format!(
                    "more than 65,536 distinct {what}; interaction_type and source are \
                     meant to be short vocabularies"
                )));
            }
        }
        Ok(merged)
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
        let key = |r: &Row| (r.timestamp, r.user, r.item, r.kind, r.id);
        // Ids are unique, so the order is total and a parallel sort's result
        // is the sequential one's. A small table (an increment, sorted on the
        // ingesting thread) is not worth waiting for rayon's busy pool.
        if self.rows.len() >= PARALLEL_SORT_ROWS {
            self.rows.par_sort_unstable_by_key(key);
        } else {
            self.rows.sort_unstable_by_key(key);
        }
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
    fn reading_in_parts_gives_the_table_one_connection_gives() {
        use manirec_store::{Interaction, InteractionKey, Source};
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("manirec.db")).unwrap();
        let kinds = ["view", "add_to_cart", "purchase"];
        let rows: Vec<Interaction> = (0..2000i64)
            .map(|i| Interaction {
                key: InteractionKey {
                    // Users and items recur across every part, first seen in
                    // another order than their strings'.
                    user_id: format!("user-{}", (i * 7919) % 101),
                    item_id: format!("item-{}", (i * 104_729) % 211),
                    timestamp: 1_700_000_000 + (i * 37) % 5000,
                    interaction_type: kinds[(i % 3) as usize].into(),
                },
                rating: 1.0 + (i % 3) as f64,
                source: if i % 10 == 0 {
                    Source::Public
                } else {
                    Source::Realtime
                },
                synthetic: i % 13 == 0,
                quantity: 1 + i % 2,
                origin: None,
            })
            .collect();
        store.insert_interactions(&rows).unwrap();
        let filter = ScanFilter {
            with_excluded: true,
            ..ScanFilter::default()
        };
        let read = |parts: usize| {
            let mut snapshot = store.dataset_snapshot_in_parts(parts).unwrap();
            assert_eq!(snapshot.parts(), parts);
            let (table, left_out, stats) = Table::read_all(
                &mut snapshot,
                filter,
                &crate::NoProgress,
                |n: &mut u64, _| *n += 1,
            )
            .unwrap();
            snapshot.finish().unwrap();
            (table, left_out.iter().sum::<u64>(), stats)
        };
        let (one, one_left_out, one_stats) = read(1);
        let (three, three_left_out, three_stats) = read(3);
        assert_eq!(one.rows.len(), 1800);
        assert_eq!(
            (one_left_out, three_left_out),
            (200, 200),
            "the public rows"
        );
        assert_eq!(one_stats, three_stats);
        assert_eq!(one.rows, three.rows);
        for (a, b) in [
            (&one.users, &three.users),
            (&one.items, &three.items),
            (&one.kinds, &three.kinds),
            (&one.sources, &three.sources),
        ] {
            assert!(a.values().eq(b.values()));
        }
        assert!(one.users.values().is_sorted(), "renumbered in string order");
        let mut users = one.users;
        let known = users.get(3).to_owned();
        assert_eq!(users.intern(&known), 3, "found again after renumbering");
        assert_eq!(users.intern("a new user") as usize, users.len() - 1);
    }

    #[test]
    fn a_dictionary_numbers_each_string_once_before_and_after_renumbering() {
        let mut dict = Dict::default();
        let words = ["pear", "", "apple", "péché", "apple", "pear", "fig"];
        let numbers: Vec<u32> = words.iter().map(|w| dict.intern(w)).collect();
        assert_eq!(numbers, [0, 1, 2, 3, 2, 0, 4]);
        assert_eq!(dict.len(), 5);
        assert!(words.iter().zip(&numbers).all(|(w, &n)| dict.get(n) == *w));
        let remap = dict.sort();
        assert_eq!(
            dict.values().collect::<Vec<_>>(),
            ["", "apple", "fig", "pear", "péché"]
        );
        assert!(words
            .iter()
            .zip(&numbers)
            .all(|(w, &n)| dict.get(remap[n as usize]) == *w));
        assert_eq!(dict.intern("fig"), 2, "found again after renumbering");
        assert_eq!(dict.intern("kiwi"), 5);
        assert_eq!(dict.get(5), "kiwi");
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
