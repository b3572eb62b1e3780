//! Dataset versions: every training interaction, deduplicated, sorted, split.
//!
//! A build reads one snapshot of `training_interactions` (refunded, cancelled and
//! voided orders' rows left out), keeps one row per (user, item, 5-minute
//! window), the latest, sorts by time and cuts at 80 %: the first 80 % of the
//! rows are `train`, the rest are `test` minus its simulated rows (a simulated
//! row never enters an evaluation). It writes `datasets/<version>/train.parquet`,
//! `test.parquet` and `dropped.parquet` (the simulated rows after the cut), and
//! `.csv` on request, then `manifest.json` with every file's rows and SHA-256,
//! then records the version in the database.
//!
//! Versions follow the design: the first is `v1.0`; a build after new data is an
//! increment, `vN.(M+1)`; `--full` starts a new line, `v(N+1).0`. Every version
//! is complete in itself (train and test of all the data), so a trainer needs one
//! manifest, never a chain. A build whose data equals the latest version's
//! records nothing and answers that version, unless `full` is asked.
//!
//! An increment is built from what changed (see [`periods`]): the rows written
//! since its parent, merged into their days' rows read back from the parent's
//! files; the days the store's change log names, read again; every other day's
//! row groups copied. Its files are the bytes a full build of the same data
//! writes.
//!
//! Published objects are immutable: a version is reserved in the database
//! before its files are written, so two builds never write the same keys, and a
//! version is listed as ready only once its manifest is in the object store.

mod files;
mod periods;
mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use manirec_store::{
    DatasetKind, DatasetSnapshot, DatasetStatus, DatasetVersion, Objects, ScanFilter, Store,
};
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::metadata::ParquetMetaData;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use files::{csv_bytes, encode, parquet_bytes, Format};
pub use periods::{Group, Period, PERIOD_SECONDS};
pub use table::{Dict, Row, Table, WINDOW_SECONDS};

use periods::{Part, Tally};

use crate::export::sha256_hex;
use crate::{Error, Progress, Result};

/// How a build runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// A new major version, even when nothing changed.
    pub full: bool,
    /// Also write train and test as CSV.
    pub csv: bool,
    /// Also take `--source public` interactions (off: public data is for
    /// pre-training, not the shop's datasets).
    pub include_public: bool,
}

/// One file of a dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Object key (contains `train` or `test`).
    pub key: String,
    /// `train` or `test`.
    pub part: String,
    /// `parquet` or `csv`.
    pub format: String,
    /// Data rows.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

/// Counts of a version's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestCounts {
    /// Interactions read (after leaving out refunded orders).
    pub input_rows: u64,
    /// Interactions of refunded, cancelled or voided orders, left out.
    pub excluded_refunded: u64,
    /// Public interactions (`--source public`) left out: they are for
    /// pre-training, and enter a dataset only with `--include-public`.
    #[serde(default)]
    pub excluded_public: u64,
    /// Rows removed by deduplication.
    pub deduplicated: u64,
    /// Simulated rows of the test period, left out of both parts.
    pub test_synthetic_dropped: u64,
    /// Interactions written to the store since the parent version.
    pub new_since_parent: u64,
    /// Rows in the files, by source.
    pub by_source: BTreeMap<String, u64>,
    /// Rows in the files, by interaction type.
    pub by_type: BTreeMap<String, u64>,
    /// Simulated rows in the files (all in train).
    pub synthetic: u64,
}

/// How the rows were made, so that anyone can check or redo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// What one row per group means.
    pub dedup: String,
    /// The window, seconds.
    pub window_seconds: i64,
    /// Sort order of the rows in every file.
    pub order: String,
    /// The split.
    pub split: String,
    /// What was left out.
    pub excluded: String,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            dedup: "one row per (user_id, item_id, timestamp floored to 300 s): the strongest \
                    signal (largest rating), then the latest (largest timestamp, then the last \
                    written) is kept"
                .into(),
            window_seconds: WINDOW_SECONDS,
            order: "timestamp, user_id, item_id, interaction_type".into(),
            split: "the first floor(0.8 * rows) rows are train, the others test; test keeps \
                    non-synthetic rows only; train rows have timestamp <= split_timestamp <= \
                    every test row's"
                .into(),
            excluded: "interactions of orders whose financial_status is refunded, cancelled or \
                       voided"
                .into(),
        }
    }
}

/// A dataset version's manifest (`datasets/<version>/manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `v1.0`, …
    pub version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// How it was built.
    pub kind: DatasetKind,
    /// The version this one follows.
    pub parent: Option<String>,
    /// Rows after deduplication (train + test + dropped synthetic test rows).
    pub rows: u64,
    /// Rows of the train files.
    pub train_rows: u64,
    /// Rows of the test files.
    pub test_rows: u64,
    /// Timestamp of the first row after the cut; `None` for an empty dataset.
    pub split_timestamp: Option<i64>,
    /// The files, with rows and checksums.
    pub files: Vec<ManifestFile>,
    /// Counts by source and type, and what was removed.
    pub counts: ManifestCounts,
    /// How it was made.
    pub recipe: Recipe,
    /// Whether public interactions were taken (`--include-public`).
    #[serde(default)]
    pub include_public: bool,
    /// Every day (UTC) with interactions, oldest first: the files hold one
    /// row group per period, and an increment re-reads only the periods that
    /// changed.
    #[serde(default)]
    pub periods: Vec<Period>,
    /// Seconds of a period (0: a version built before periods).
    #[serde(default)]
    pub period_seconds: i64,
}

/// What `dataset build` did.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetBuild {
    /// The version (new, or the latest when nothing changed).
    pub version: String,
    /// Whether a new version was written.
    pub created: bool,
    /// How it was built.
    pub kind: DatasetKind,
    /// The version it follows.
    pub parent: Option<String>,
    /// Rows after deduplication.
    pub rows: u64,
    /// Rows removed by deduplication.
    pub deduplicated: u64,
    /// Rows of the train part.
    pub train_rows: u64,
    /// Rows of the test part.
    pub test_rows: u64,
    /// Where test starts.
    pub split_timestamp: Option<i64>,
    /// Object key of the manifest.
    pub manifest: String,
    /// The files.
    pub files: Vec<ManifestFile>,
    /// Counts.
    pub counts: ManifestCounts,
    /// Milliseconds per step (parent, read + dedup + sort, encode, write).
    pub timings_ms: BTreeMap<String, u64>,
    /// What was read: the changes since the parent, or everything.
    pub read: ReadSummary,
}

/// How a build read the store.
#[derive(Debug, Clone, Serialize)]
pub struct ReadSummary {
    /// `changes`: only the periods that changed since the parent, and those the
    /// cut moved across; `everything`: every interaction.
    pub strategy: &'static str,
    /// Why everything was read.
    pub why: Option<String>,
    /// Interactions written since the parent (all of them, when everything
    /// was read).
    pub new_rows: u64,
    /// Periods read whole from the store (everything, or those whose rows
    /// were updated or deleted since the parent).
    pub periods_from_store: usize,
    /// Periods rebuilt from the parent's files (and the new rows).
    pub periods_from_parent: usize,
    /// Periods whose row groups were copied from the parent's files.
    pub periods_reused: usize,
}

/// The parent an increment builds on: its manifest and its Parquet files.
struct Base {
    version: DatasetVersion,
    manifest: Manifest,
    train: ParentFile,
    test: ParentFile,
    dropped: ParentFile,
}

impl Base {
    /// Every row the parent holds of a period (train, test and the dropped
    /// simulated test rows), in a table of its own, not yet renumbered.
    fn rows_of(&self, start: i64) -> Result<Table> {
        let mut table = Table::default();
        for file in [&self.train, &self.test, &self.dropped] {
            let groups = file.groups_of(start);
            files::read_groups(groups.file, &file.reader, groups.range, 0, &mut table)?;
        }
        Ok(table)
    }
}

/// One of the parent's Parquet files, with its row groups by period.
struct ParentFile {
    bytes: Bytes,
    /// The footer, page indexes included, parsed once.
    reader: ArrowReaderMetadata,
    groups: BTreeMap<i64, Range<usize>>,
}

impl ParentFile {
    fn parse(bytes: Bytes) -> Result<ParentFile> {
        let metadata = files::parquet_metadata(&bytes)?;
        files::check_encoding(&metadata)?;
        let mut groups: BTreeMap<i64, Range<usize>> = BTreeMap::new();
        for (i, ts) in files::row_group_first_timestamps(&metadata)?
            .into_iter()
            .enumerate()
        {
            let range = groups.entry(periods::period_start(ts)).or_insert(i..i);
            if range.end != i {
                return Err(Error::Data("a period's row groups are not together".into()));
            }
            range.end = i + 1;
        }
        let reader = ArrowReaderMetadata::try_new(Arc::new(metadata), Default::default())
            .map_err(|e| Error::Data(format!("reading a Parquet footer: {e}")))?;
        Ok(ParentFile {
            bytes,
            reader,
            groups,
        })
    }

    fn groups_of(&self, start: i64) -> files::Groups<'_> {
        files::Groups {
            file: &self.bytes,
            metadata: self.reader.metadata(),
            range: self.groups.get(&start).cloned().unwrap_or(0..0),
        }
    }
}

/// Finds the parent an increment can build on, or says why there is none.
async fn base(
    objects: &Objects,
    options: &BuildOptions,
    parent: Option<&DatasetVersion>,
) -> std::result::Result<Base, String> {
    if options.full {
        return Err("--full".into());
    }
    if options.csv {
        return Err("CSV files are written from every row".into());
    }
    let Some(parent) = parent else {
        return Err("no version yet".into());
    };
    // The manifest object, not the register's copy: only it lists the periods.
    let key = parent
        .manifest_key
        .clone()
        .ok_or_else(|| format!("{} has no manifest", parent.version))?;
    let bytes = objects.get(&key).await.map_err(|e| format!("{key}: {e}"))?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("{key} is unreadable: {e}"))?;
    if manifest.period_seconds != PERIOD_SECONDS {
        return Err(format!(
            "{} was built with another layout (periods of {} s, not {PERIOD_SECONDS} s)",
            parent.version, manifest.period_seconds
        ));
    }
    if manifest.include_public != options.include_public {
        return Err(format!(
            "{} was built {} --include-public",
            parent.version,
            if manifest.include_public {
                "with"
            } else {
                "without"
            }
        ));
    }
    let file = |part: &str| {
        manifest
            .files
            .iter()
            .find(|f| f.part == part && f.format == "parquet")
            .map(|f| f.key.clone())
            .ok_or_else(|| format!("{} has no {part}.parquet", parent.version))
    };
    let keys = (file("train")?, file("test")?, file("dropped")?);
    if manifest.periods.is_empty() && manifest.rows > 0 {
        return Err(format!("{key} lists no periods"));
    }
    let fetch = |key: String| async move {
        let bytes = objects.get(&key).await.map_err(|e| format!("{key}: {e}"))?;
        ParentFile::parse(bytes).map_err(|e| format!("{key}: {e}"))
    };
    let (train, test, dropped) = (
        fetch(keys.0).await?,
        fetch(keys.1).await?,
        fetch(keys.2).await?,
    );
    Ok(Base {
        train,
        test,
        dropped,
        version: parent.clone(),
        manifest,
    })
}

/// The rows a build works from: every period's counts, and the rows of the
/// periods it read (sorted by time and deduplicated), by period start.
struct Assembled {
    periods: Vec<Period>,
    tables: Vec<Table>,
    rows: BTreeMap<i64, (usize, Range<usize>)>,
    new_since_parent: u64,
    max_id: i64,
    max_change_seq: i64,
    read: ReadSummary,
}

impl Assembled {
    fn rows_of(&self, start: i64) -> Option<(&Table, &[Row])> {
        self.rows
            .get(&start)
            .map(|(t, range)| (&self.tables[*t], &self.tables[*t].rows[range.clone()]))
    }
}

/// Reads every interaction.
fn read_everything(
    snapshot: &mut DatasetSnapshot<'_>,
    include_public: bool,
    parent_max_id: Option<i64>,
    why: String,
    progress: &dyn Progress,
) -> Result<Assembled> {
    let filter = ScanFilter {
        include_public,
        with_excluded: true,
        ..ScanFilter::default()
    };
    let (mut table, parts, stats) = Table::read_all(snapshot, filter, progress, |tallies, r| {
        periods::tally_excluded(tallies, r)
    })?;
    let mut tallies: BTreeMap<i64, Tally> = BTreeMap::new();
    for part in parts {
        for (start, tally) in part {
            tallies.entry(start).or_default().add(tally);
        }
    }
    let new_since_parent = match parent_max_id {
        Some(w) => table.rows.iter().filter(|r| r.id > w).count() as u64,
        None => stats.rows,
    };
    table.sort_by_time();
    // Sorted, a period's rows are together: count them a run at a time.
    let mut i = 0;
    while i < table.rows.len() {
        let start = periods::period_start(table.rows[i].timestamp);
        let n = table.rows[i..].partition_point(|r| r.timestamp < start + PERIOD_SECONDS);
        tallies.entry(start).or_default().input += n as u64;
        i += n;
    }
    table.dedup_windows();
    let mut periods = Vec::with_capacity(tallies.len());
    let mut rows = BTreeMap::new();
    for (period, range) in periods::periods_of(&table, &tallies) {
        rows.insert(period.start, (0, range));
        periods.push(period);
    }
    Ok(Assembled {
        read: ReadSummary {
            strategy: "everything",
            why: Some(why),
            new_rows: stats.rows + stats.excluded_refunded + stats.excluded_public,
            periods_from_store: periods.len(),
            periods_from_parent: 0,
            periods_reused: 0,
        },
        periods,
        tables: vec![table],
        rows,
        new_since_parent,
        max_id: stats.max_id,
        max_change_seq: snapshot.max_change_seq()?,
    })
}

/// Reads one period from the store: its rows sorted and deduplicated, and
/// its counts.
fn read_period(
    snapshot: &DatasetSnapshot<'_>,
    include_public: bool,
    start: i64,
) -> Result<(Table, Period)> {
    let filter = ScanFilter {
        include_public,
        with_excluded: true,
        time_range: Some((start, start + PERIOD_SECONDS)),
        ..ScanFilter::default()
    };
    let mut tally = Tally::default();
    let (mut table, stats) = Table::read(snapshot, filter, |r| tally.exclude(r.excluded))?;
    tally.input = stats.rows;
    table.sort_by_time();
    table.dedup_windows();
    let period = period_of(&table, start, tally);
    Ok((table, period))
}

/// Reads what changed since `base`: the rows written since (in id order, the
/// cheapest read there is), merged into their periods' rows as the parent's
/// files hold them; the periods the change log names, whole from the store; and
/// the periods the cut moved across, from the parent's files.
fn read_changes(
    snapshot: &DatasetSnapshot<'_>,
    include_public: bool,
    base: &Base,
    progress: &dyn Progress,
) -> Result<Assembled> {
    let parent_max_id = base.version.max_interaction_id;
    let mut logged = BTreeSet::new();
    snapshot.changed_timestamps(base.version.max_change_seq, |ts| {
        logged.insert(periods::period_start(ts));
    })?;
    // The rows written since the parent, by period.
    let mut new_tallies: BTreeMap<i64, Tally> = BTreeMap::new();
    let filter = ScanFilter {
        after_id: Some(parent_max_id),
        include_public,
        with_excluded: true,
        ..ScanFilter::default()
    };
    let (new_rows, stats) = Table::read(snapshot, filter, |r| {
        periods::tally_excluded(&mut new_tallies, r)
    })?;
    let mut by_period: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    for r in &new_rows.rows {
        let start = periods::period_start(r.timestamp);
        new_tallies.entry(start).or_default().input += 1;
        by_period.entry(start).or_default().push(r);
    }

    let parent: BTreeMap<i64, &Period> =
        base.manifest.periods.iter().map(|p| (p.start, p)).collect();
    let touched: BTreeSet<i64> = logged.iter().chain(new_tallies.keys()).copied().collect();
    progress.begin("reading changed periods", touched.len() as u64);
    let mut tables = Vec::new();
    let mut rows = BTreeMap::new();
    let mut periods: BTreeMap<i64, Period> = base
        .manifest
        .periods
        .iter()
        .filter(|p| !touched.contains(&p.start))
        .map(|p| (p.start, p.clone()))
        .collect();
    for &start in &touched {
        let (table, period) = if logged.contains(&start) {
            // Rows were updated or deleted: only the store knows the period now.
            read_period(snapshot, include_public, start)?
        } else {
            // Only new rows: the parent's rows of the period plus those.
            let mut table = base.rows_of(start)?;
            for r in by_period.get(&start).into_iter().flatten() {
                table.rows.push(Row {
                    user: table.users.intern(new_rows.users.get(r.user)),
                    item: table.items.intern(new_rows.items.get(r.item)),
                    kind: table.kinds.intern(new_rows.kinds.get(r.kind.into())) as u16,
                    source: table.sources.intern(new_rows.sources.get(r.source.into())) as u16,
                    ..**r
                });
            }
            table.renumber();
            table.sort_by_time();
            table.dedup_windows();
            let mut tally = new_tallies.get(&start).copied().unwrap_or_default();
            if let Some(p) = parent.get(&start) {
                tally.input += p.input_rows;
                tally.refunded += p.excluded_refunded;
                tally.public += p.excluded_public;
            }
            let period = period_of(&table, start, tally);
            (table, period)
        };
        if period.input_rows + period.excluded_refunded + period.excluded_public > 0 {
            rows.insert(start, (tables.len(), 0..table.rows.len()));
            tables.push(table);
            periods.insert(start, period);
        }
        progress.advance(1);
    }
    progress.end();
    let periods: Vec<Period> = periods.into_values().collect();

    // Periods whose rows move between train and test are encoded anew too,
    // from the parent's files (which keep the test period's simulated rows).
    let (_, before) = periods::parts(&base.manifest.periods);
    let before: BTreeMap<i64, Part> = base
        .manifest
        .periods
        .iter()
        .map(|p| p.start)
        .zip(before)
        .collect();
    let (_, after) = periods::parts(&periods);
    for (p, part) in periods.iter().zip(after) {
        let moved = matches!(part, Part::Split(_)) || before.get(&p.start) != Some(&part);
        if moved && !rows.contains_key(&p.start) && p.rows > 0 {
            let mut table = base.rows_of(p.start)?;
            table.renumber();
            table.sort_by_time();
            rows.insert(p.start, (tables.len(), 0..table.rows.len()));
            tables.push(table);
        }
    }
    let from_store = logged.len();
    let from_parent = rows.keys().filter(|s| !logged.contains(s)).count();
    Ok(Assembled {
        read: ReadSummary {
            strategy: "changes",
            why: None,
            new_rows: stats.rows + stats.excluded_refunded + stats.excluded_public,
            periods_from_store: from_store,
            periods_from_parent: from_parent,
            periods_reused: periods
                .iter()
                .filter(|p| p.rows > 0 && !rows.contains_key(&p.start))
                .count(),
        },
        periods,
        tables,
        rows,
        new_since_parent: stats.rows,
        max_id: stats.max_id,
        max_change_seq: snapshot.max_change_seq()?,
    })
}

/// A period's counts from its rows (sorted and deduplicated) and what was read.
fn period_of(table: &Table, start: i64, tally: Tally) -> Period {
    periods::periods_of(table, &BTreeMap::from([(start, tally)]))
        .into_iter()
        .next()
        .map(|(p, _)| p)
        .expect("a tally gives a period")
}

/// The rows of a version: where the cut falls, what each file holds, counts.
struct Layout<'a> {
    cut: u64,
    split_timestamp: Option<i64>,
    /// What the train and the test file are made of, in order.
    train: Vec<Piece<'a>>,
    test: Vec<Piece<'a>>,
    /// The simulated rows after the cut, left out of test and kept apart so
    /// that the next increment can rebuild a period from the files alone.
    dropped: Vec<Piece<'a>>,
    counts: ManifestCounts,
    test_rows: u64,
}

/// Part of a file: rows to encode, or a period's row groups in the parent's file.
enum Piece<'a> {
    Fresh(&'a Table, std::borrow::Cow<'a, [Row]>),
    Reused(i64),
}

fn layout(assembled: &Assembled) -> Layout<'_> {
    let (cut, parts) = periods::parts(&assembled.periods);
    let mut train = Vec::new();
    let mut test = Vec::new();
    let mut dropped = Vec::new();
    let mut counts = ManifestCounts {
        new_since_parent: assembled.new_since_parent,
        ..ManifestCounts::default()
    };
    let mut test_rows = 0;
    let mut split_timestamp = None;
    let count = |counts: &mut ManifestCounts, source: &str, kind: &str, synthetic, n| {
        *counts.by_source.entry(source.to_owned()).or_default() += n;
        *counts.by_type.entry(kind.to_owned()).or_default() += n;
        if synthetic {
            counts.synthetic += n;
        }
    };
    for (p, part) in assembled.periods.iter().zip(parts) {
        counts.input_rows += p.input_rows;
        counts.excluded_refunded += p.excluded_refunded;
        counts.excluded_public += p.excluded_public;
        counts.deduplicated += p.input_rows - p.rows;
        if p.rows == 0 {
            continue;
        }
        let loaded = assembled.rows_of(p.start);
        match (part, loaded) {
            (Part::Train, loaded) => {
                for g in &p.groups {
                    count(
                        &mut counts,
                        &g.source,
                        &g.interaction_type,
                        g.synthetic,
                        g.rows,
                    );
                }
                train.push(match loaded {
                    Some((table, rows)) => Piece::Fresh(table, rows.into()),
                    None => Piece::Reused(p.start),
                });
            }
            (Part::Test, loaded) => {
                split_timestamp.get_or_insert(p.first_timestamp);
                for g in p.groups.iter().filter(|g| !g.synthetic) {
                    count(&mut counts, &g.source, &g.interaction_type, false, g.rows);
                }
                counts.test_synthetic_dropped += p.synthetic_rows();
                test_rows += p.rows - p.synthetic_rows();
                match loaded {
                    Some((table, rows)) => {
                        test.push(Piece::Fresh(table, periods::real(rows).into()));
                        dropped.push(Piece::Fresh(table, periods::simulated(rows).into()));
                    }
                    None => {
                        test.push(Piece::Reused(p.start));
                        dropped.push(Piece::Reused(p.start));
                    }
                }
            }
            (Part::Split(k), Some((table, rows))) => {
                split_timestamp = Some(rows[k].timestamp);
                for r in &rows[..k] {
                    let (source, kind) = (
                        table.sources.get(r.source.into()),
                        table.kinds.get(r.kind.into()),
                    );
                    count(&mut counts, source, kind, r.synthetic, 1);
                }
                let real = periods::real(&rows[k..]);
                for r in &real {
                    let (source, kind) = (
                        table.sources.get(r.source.into()),
                        table.kinds.get(r.kind.into()),
                    );
                    count(&mut counts, source, kind, false, 1);
                }
                counts.test_synthetic_dropped += (rows.len() - k - real.len()) as u64;
                test_rows += real.len() as u64;
                train.push(Piece::Fresh(table, rows[..k].into()));
                test.push(Piece::Fresh(table, real.into()));
                dropped.push(Piece::Fresh(table, periods::simulated(&rows[k..]).into()));
            }
            (Part::Split(_), None) => unreachable!("a split period is always read"),
        }
    }
    Layout {
        cut,
        split_timestamp,
        train,
        test,
        dropped,
        counts,
        test_rows,
    }
}

/// One encoded file, before it is written.
struct Encoded {
    part: &'static str,
    format: Format,
    rows: u64,
    bytes: Vec<u8>,
}

/// Encodes the fresh pieces of both files in parallel (Parquet encoding is
/// CPU-bound), then splices each file from its pieces and the parent's row
/// groups.
fn encode_parts(layout: &Layout<'_>, base: Option<&Base>) -> Result<Vec<Encoded>> {
    // Each table's dictionaries as Arrow arrays once, not once per period.
    let mut values: Vec<(&Table, files::Values)> = Vec::new();
    for piece in layout
        .train
        .iter()
        .chain(&layout.test)
        .chain(&layout.dropped)
    {
        if let Piece::Fresh(table, _) = piece {
            if !values.iter().any(|(t, _)| std::ptr::eq(*t, *table)) {
                values.push((*table, files::Values::of(table)));
            }
        }
    }
    let values_of = |table: &Table| {
        &values
            .iter()
            .find(|(t, _)| std::ptr::eq(*t, table))
            .expect("every table's values were built")
            .1
    };
    let fresh: Vec<(&Table, &[Row])> = layout
        .train
        .iter()
        .chain(&layout.test)
        .chain(&layout.dropped)
        .filter_map(|piece| match piece {
            Piece::Fresh(table, rows) => Some((*table, &rows[..])),
            Piece::Reused(_) => None,
        })
        .collect();
    // Jobs: runs of consecutive pieces of one table, a few per thread, each
    // encoded as one file with a row group per piece (a file per period would
    // cost its own writer and footer hundreds of times over).
    let threads = rayon::current_num_threads();
    let total: usize = fresh.iter().map(|(_, rows)| rows.len()).sum();
    let target = (total / (threads * 4)).max(1);
    let mut jobs: Vec<Range<usize>> = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, (table, piece)) in fresh.iter().enumerate() {
        if i > start && (rows >= target || !std::ptr::eq(*table, fresh[start].0)) {
            jobs.push(start..i);
            (start, rows) = (i, 0);
        }
        rows += piece.len();
    }
    if start < fresh.len() {
        jobs.push(start..fresh.len());
    }
    let encoded: Vec<(Bytes, ParquetMetaData)> = jobs
        .par_iter()
        .map(|job| {
            let pieces: Vec<&[Row]> = fresh[job.clone()].iter().map(|f| f.1).collect();
            let bytes = Bytes::from(files::parquet_groups(
                values_of(fresh[job.start].0),
                &pieces,
            )?);
            let metadata = files::parquet_metadata(&bytes)?;
            Ok((bytes, metadata))
        })
        .collect::<Result<_>>()?;
    // Each fresh piece's row groups, in order.
    let mut groups = Vec::with_capacity(fresh.len());
    for (job, (bytes, metadata)) in jobs.iter().zip(&encoded) {
        let mut first = 0;
        for (_, rows) in &fresh[job.clone()] {
            let n = files::row_groups_of(rows.len());
            groups.push(files::Groups {
                file: bytes,
                metadata,
                range: first..first + n,
            });
            first += n;
        }
    }
    let mut groups = groups.into_iter();
    let mut splice = |pieces: &[Piece<'_>], parent: Option<&ParentFile>| -> Result<Vec<u8>> {
        let parts: Vec<files::Groups<'_>> = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Fresh(..) => groups.next().expect("row groups for every fresh piece"),
                Piece::Reused(start) => parent
                    .expect("reused pieces come from a parent")
                    .groups_of(*start),
            })
            .collect();
        files::splice(&parts)
    };
    let train = splice(&layout.train, base.map(|b| &b.train))?;
    let test = splice(&layout.test, base.map(|b| &b.test))?;
    let dropped = splice(&layout.dropped, base.map(|b| &b.dropped))?;
    Ok(vec![
        Encoded {
            part: "train",
            format: Format::Parquet,
            rows: layout.cut,
            bytes: train,
        },
        Encoded {
            part: "test",
            format: Format::Parquet,
            rows: layout.test_rows,
            bytes: test,
        },
        Encoded {
            part: "dropped",
            format: Format::Parquet,
            rows: layout.counts.test_synthetic_dropped,
            bytes: dropped,
        },
    ])
}

/// The train and test parts as CSV, from every row (read in one table).
fn encode_csv(assembled: &Assembled, layout: &Layout<'_>) -> Result<Vec<Encoded>> {
    let [table] = &assembled.tables[..] else {
        return Err(Error::Data("CSV files need every row read at once".into()));
    };
    let cut = layout.cut as usize;
    let test = periods::real(&table.rows[cut..]);
    Ok(vec![
        Encoded {
            part: "train",
            format: Format::Csv,
            rows: cut as u64,
            bytes: csv_bytes(table, &table.rows[..cut]),
        },
        Encoded {
            part: "test",
            format: Format::Csv,
            rows: test.len() as u64,
            bytes: csv_bytes(table, &test),
        },
    ])
}

fn version_name(major: i64, minor: i64) -> String {
    format!("v{major}.{minor}")
}

/// Builds a dataset version (see the module documentation).
pub async fn build(
    store: &Store,
    objects: &Objects,
    options: BuildOptions,
    progress: &dyn Progress,
) -> Result<DatasetBuild> {
    let mut timings = BTreeMap::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut BTreeMap<String, u64>| {
        timings.insert(name.to_owned(), clock.elapsed().as_millis() as u64);
        clock = Instant::now();
    };

    let parent = store.latest_ready_dataset_version()?;
    let base = base(objects, &options, parent.as_ref()).await;
    lap("parent", &mut timings);
    // A build that reads everything reads it on several connections at once.
    let parts = if base.is_ok() { 1 } else { table::read_parts() };
    let mut snapshot = store.dataset_snapshot_in_parts(parts)?;
    // Checked in the snapshot the changes are read from: a build that pruned
    // the log since `base` was chosen is seen here.
    let pruned = snapshot.changes_pruned_through()?;
    let base = base.and_then(|b| {
        if b.version.max_change_seq < pruned {
            Err(format!(
                "the change log since {} is gone (a newer build, or `store copy`)",
                b.version.version
            ))
        } else {
            Ok(b)
        }
    });
    let assembled = match &base {
        Ok(base) => read_changes(&snapshot, options.include_public, base, progress)?,
        Err(why) => read_everything(
            &mut snapshot,
            options.include_public,
            parent.as_ref().map(|p| p.max_interaction_id),
            why.clone(),
            progress,
        )?,
    };
    snapshot.finish()?;
    lap("read_dedup_sort", &mut timings);
    let base = base.ok();

    progress.begin("encoding files", 0);
    let layout = layout(&assembled);
    let mut encoded = encode_parts(&layout, base.as_ref())?;
    if options.csv {
        encoded.extend(encode_csv(&assembled, &layout)?);
    }
    progress.end();
    lap("encode", &mut timings);

    let total_rows: u64 = assembled.periods.iter().map(|p| p.rows).sum();
    let checksums: Vec<String> = encoded.iter().map(|e| sha256_hex(&e.bytes)).collect();
    // The data's identity: the Parquet files' checksums (CSV is another rendering).
    let fingerprint = sha256_hex(
        encoded
            .iter()
            .zip(&checksums)
            .filter(|(e, _)| e.format == Format::Parquet)
            .map(|(e, sum)| format!("{}.parquet {sum}\n", e.part))
            .collect::<String>()
            .as_bytes(),
    );

    if let Some(p) = parent.as_ref() {
        let has_csv = p
            .manifest
            .as_deref()
            .is_some_and(|m| m.contains("\"format\": \"csv\""));
        let same = p.fingerprint.as_deref() == Some(fingerprint.as_str());
        if !options.full && same && (has_csv || !options.csv) {
            let manifest: Manifest = serde_json::from_str(p.manifest.as_deref().unwrap_or("{}"))
                .map_err(|e| {
                    Error::Data(format!("manifest of {} is unreadable: {e}", p.version))
                })?;
            return Ok(DatasetBuild {
                version: p.version.clone(),
                created: false,
                kind: manifest.kind,
                parent: manifest.parent,
                rows: manifest.rows,
                deduplicated: manifest.counts.deduplicated,
                train_rows: manifest.train_rows,
                test_rows: manifest.test_rows,
                split_timestamp: manifest.split_timestamp,
                manifest: p.manifest_key.clone().unwrap_or_default(),
                files: manifest.files,
                counts: manifest.counts,
                timings_ms: timings,
                read: assembled.read,
            });
        }
    }

    crate::sweep_orphans(store)?;
    let latest = store.latest_dataset_version()?;
    let (major, minor, kind) = match (&latest, options.full) {
        (None, _) => (1, 0, DatasetKind::Full),
        (Some(l), true) => (l.major + 1, 0, DatasetKind::Full),
        (Some(l), false) => (l.major, l.minor + 1, DatasetKind::Increment),
    };
    let parent_name = if kind == DatasetKind::Increment {
        parent.as_ref().map(|p| p.version.clone())
    } else {
        None
    };
    let version = version_name(major, minor);
    let created_ms = manirec_store::now_ms();
    let mut record = DatasetVersion {
        version: version.clone(),
        major,
        minor,
        kind,
        parent: parent_name.clone(),
        status: DatasetStatus::Building,
        created_at: created_ms,
        rows: total_rows as i64,
        train_rows: layout.cut as i64,
        test_rows: layout.test_rows as i64,
        split_timestamp: layout.split_timestamp,
        max_interaction_id: assembled.max_id,
        max_change_seq: assembled.max_change_seq,
        fingerprint: Some(fingerprint),
        manifest_key: None,
        manifest: None,
    };
    store.reserve_dataset_version(&record)?;

    let folder = format!("datasets/{version}");
    let files: Vec<ManifestFile> = encoded
        .iter()
        .zip(&checksums)
        .map(|(e, sum)| ManifestFile {
            key: format!("{folder}/{}.{}", e.part, e.format.extension()),
            part: e.part.into(),
            format: e.format.extension().into(),
            rows: e.rows,
            bytes: e.bytes.len() as u64,
            sha256: sum.clone(),
        })
        .collect();
    let manifest = Manifest {
        version: version.clone(),
        created_at: crate::time::rfc3339_ms(created_ms),
        kind,
        parent: parent_name.clone(),
        rows: total_rows,
        train_rows: layout.cut,
        test_rows: layout.test_rows,
        split_timestamp: layout.split_timestamp,
        files,
        counts: layout.counts.clone(),
        recipe: Recipe::default(),
        include_public: options.include_public,
        periods: assembled.periods.clone(),
        period_seconds: PERIOD_SECONDS,
    };
    let manifest_json = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::Data(format!("manifest: {e}")))?;
    let manifest_key = format!("{folder}/manifest.json");

    progress.begin("writing files", encoded.len() as u64 + 1);
    let written = async {
        for (e, f) in encoded.into_iter().zip(&manifest.files) {
            objects.put(&f.key, Bytes::from(e.bytes)).await?;
            progress.advance(1);
        }
        // The manifest last: whoever sees it finds every file it names.
        objects
            .put(&manifest_key, Bytes::from(manifest_json.clone()))
            .await?;
        progress.advance(1);
        Ok::<_, Error>(())
    }
    .await;
    progress.end();
    if let Err(e) = written {
        let _ = store.abandon_dataset_version(&version);
        return Err(e);
    }
    record.manifest_key = Some(manifest_key.clone());
    // The register keeps the manifest without its periods (a few hundred bytes
    // a day of data, which every write of the row would carry); an increment
    // reads them from manifest.json.
    let registered = Manifest {
        periods: Vec::new(),
        ..manifest.clone()
    };
    record.manifest = Some(
        serde_json::to_string_pretty(&registered)
            .map_err(|e| Error::Data(format!("manifest: {e}")))?,
    );
    store.publish_dataset_version(&record)?;
    // The next increment starts from this version: older changes are done with.
    store.prune_dataset_changes(assembled.max_change_seq)?;
    lap("write", &mut timings);

    Ok(DatasetBuild {
        version,
        created: true,
        kind,
        parent: parent_name,
        rows: manifest.rows,
        deduplicated: manifest.counts.deduplicated,
        train_rows: manifest.train_rows,
        test_rows: manifest.test_rows,
        split_timestamp: manifest.split_timestamp,
        manifest: manifest_key,
        files: manifest.files,
        counts: manifest.counts,
        timings_ms: timings,
        read: assembled.read,
    })
}

/// One line of `dataset list`.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// `v1.0`, …
    pub version: String,
    /// How it was built.
    pub kind: DatasetKind,
    /// The version it follows.
    pub parent: Option<String>,
    /// `ready`, or `building` while (or if) a build did not finish.
    pub status: DatasetStatus,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Rows after deduplication.
    pub rows: i64,
    /// Train rows.
    pub train_rows: i64,
    /// Test rows.
    pub test_rows: i64,
    /// Where test starts.
    pub split_timestamp: Option<i64>,
    /// Object key of the manifest.
    pub manifest: Option<String>,
}

/// What `dataset list` shows.
#[derive(Debug, Clone, Serialize)]
pub struct VersionList {
    /// Oldest first.
    pub versions: Vec<VersionInfo>,
}

/// Every dataset version, oldest first.
pub fn list(store: &Store) -> Result<VersionList> {
    Ok(VersionList {
        versions: store
            .dataset_versions()?
            .into_iter()
            .map(|v| VersionInfo {
                created_at: crate::time::rfc3339_ms(v.created_at),
                version: v.version,
                kind: v.kind,
                parent: v.parent,
                status: v.status,
                rows: v.rows,
                train_rows: v.train_rows,
                test_rows: v.test_rows,
                split_timestamp: v.split_timestamp,
                manifest: v.manifest_key,
            })
            .collect(),
    })
}
