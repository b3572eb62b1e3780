//! Dataset versions: every training interaction, deduplicated, sorted, split.
//!
//! A build reads one snapshot of `training_interactions` (refunded, cancelled and
//! voided orders' rows left out), keeps one row per (user, item, 5-minute
//! window), the latest, sorts by time and cuts at 80 %: the first 80 % of the
//! rows are `train`, the rest are `test` minus its simulated rows (a simulated
//! row never enters an evaluation). It writes `datasets/<version>/train.parquet`
//! and `test.parquet` (and `.csv` on request), then `manifest.json` with every
//! file's rows and SHA-256, then records the version in the database.
//!
//! Versions follow the design: the first is `v1.0`; a build after new data is an
//! increment, `vN.(M+1)`; `--full` starts a new line, `v(N+1).0`. Every version
//! is complete in itself (train and test of all the data), so a trainer needs one
//! manifest, never a chain. A build whose data equals the latest version's
//! records nothing and answers that version, unless `full` is asked.
//!
//! Published objects are immutable: a version is reserved in the database
//! before its files are written, so two builds never write the same keys, and a
//! version is listed as ready only once its manifest is in the object store.

mod files;
mod table;

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use manirec_store::{DatasetKind, DatasetStatus, DatasetVersion, Objects, ScanFilter, Store};
use serde::{Deserialize, Serialize};

pub use files::{csv_bytes, encode, parquet_bytes, Format};
pub use table::{Dict, Row, Table, WINDOW_SECONDS};

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
            dedup: "one row per (user_id, item_id, timestamp floored to 300 s); the latest \
                    (largest timestamp, then the last written) is kept"
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
    /// Milliseconds per step (read, dedup + sort, encode, write).
    pub timings_ms: BTreeMap<String, u64>,
}

/// A dataset built in memory, not yet written anywhere.
#[derive(Debug)]
pub struct Built {
    /// Rows read.
    pub table: Table,
    /// Index of the first test row in `table.rows`.
    pub cut: usize,
    /// The test rows (real ones only).
    pub test: Vec<Row>,
    /// Counts for the manifest.
    pub counts: ManifestCounts,
    /// Interaction watermark of the snapshot.
    pub max_id: i64,
    /// Milliseconds of the read and the sort.
    pub timings_ms: BTreeMap<String, u64>,
}

impl Built {
    /// The train rows.
    pub fn train(&self) -> &[Row] {
        &self.table.rows[..self.cut]
    }

    /// Where test starts.
    pub fn split_timestamp(&self) -> Option<i64> {
        self.table.rows.get(self.cut).map(|r| r.timestamp)
    }
}

/// Reads, deduplicates, sorts and splits; `parent_watermark` counts the rows
/// written since the parent version.
pub fn prepare(
    store: &Store,
    parent_watermark: Option<i64>,
    include_public: bool,
    progress: &dyn Progress,
) -> Result<Built> {
    let clock = Instant::now();
    let filter = ScanFilter {
        include_public,
        ..ScanFilter::default()
    };
    let (mut table, stats) = Table::load(store, filter, progress)?;
    let read_ms = clock.elapsed().as_millis() as u64;
    let mut counts = ManifestCounts {
        input_rows: stats.rows,
        excluded_refunded: stats.excluded_refunded,
        excluded_public: stats.excluded_public,
        new_since_parent: match parent_watermark {
            Some(w) => table.rows.iter().filter(|r| r.id > w).count() as u64,
            None => stats.rows,
        },
        ..ManifestCounts::default()
    };
    let clock = Instant::now();
    table.sort_by_time();
    let sort_ms = clock.elapsed().as_millis() as u64;
    counts.deduplicated = table.dedup_windows();
    let cut = table.rows.len() * 4 / 5;
    let test: Vec<Row> = table.rows[cut..]
        .iter()
        .filter(|r| !r.synthetic)
        .copied()
        .collect();
    counts.test_synthetic_dropped = (table.rows.len() - cut - test.len()) as u64;
    let mut by_source = vec![0u64; table.sources.values().len()];
    let mut by_type = vec![0u64; table.kinds.values().len()];
    for r in table.rows[..cut].iter().chain(&test) {
        by_source[r.source as usize] += 1;
        by_type[r.kind as usize] += 1;
        counts.synthetic += u64::from(r.synthetic);
    }
    let named = |dict: &Dict, n: Vec<u64>| -> BTreeMap<String, u64> {
        n.into_iter()
            .enumerate()
            .filter(|&(_, c)| c > 0)
            .map(|(i, c)| (dict.get(i as u32).to_owned(), c))
            .collect()
    };
    counts.by_source = named(&table.sources, by_source);
    counts.by_type = named(&table.kinds, by_type);
    Ok(Built {
        table,
        cut,
        test,
        counts,
        max_id: stats.max_id,
        timings_ms: BTreeMap::from([("read".to_owned(), read_ms), ("sort".to_owned(), sort_ms)]),
    })
}

/// One encoded file, before it is written.
struct Encoded {
    part: &'static str,
    format: Format,
    rows: u64,
    bytes: Vec<u8>,
}

/// Encodes the parts in parallel (Parquet encoding is CPU-bound).
fn encode_parts(built: &Built, csv: bool) -> Result<Vec<Encoded>> {
    let mut jobs: Vec<(&'static str, Format, &[Row])> = vec![
        ("train", Format::Parquet, built.train()),
        ("test", Format::Parquet, &built.test),
    ];
    if csv {
        jobs.push(("train", Format::Csv, built.train()));
        jobs.push(("test", Format::Csv, &built.test));
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(part, format, rows)| {
                scope.spawn(move || {
                    Ok(Encoded {
                        part,
                        format,
                        rows: rows.len() as u64,
                        bytes: encode(&built.table, rows, format)?,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("encoding threads do not panic"))
            .collect()
    })
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
    let built = prepare(
        store,
        parent.as_ref().map(|p| p.max_interaction_id),
        options.include_public,
        progress,
    )?;
    lap("read_dedup_sort_split", &mut timings);
    timings.extend(built.timings_ms.clone());

    progress.begin("encoding files", 0);
    let encoded = encode_parts(&built, options.csv)?;
    progress.end();
    lap("encode", &mut timings);

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
        rows: built.table.rows.len() as i64,
        train_rows: built.cut as i64,
        test_rows: built.test.len() as i64,
        split_timestamp: built.split_timestamp(),
        max_interaction_id: built.max_id,
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
        rows: built.table.rows.len() as u64,
        train_rows: built.cut as u64,
        test_rows: built.test.len() as u64,
        split_timestamp: built.split_timestamp(),
        files,
        counts: built.counts.clone(),
        recipe: Recipe::default(),
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
    record.manifest = Some(manifest_json);
    store.publish_dataset_version(&record)?;
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
