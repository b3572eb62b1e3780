//! Interaction files written for people and other tools: the existing-data CSV
//! of `extract`, and `export` (all interactions or the increment since the last
//! export, CSV or Parquet, with a `.meta.json` sidecar: type, since, count,
//! sha256).

use bytes::Bytes;
use manirec_store::{Objects, ScanFilter, Source, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::dataset::Format;
use crate::dataset::{encode, Table};
use crate::{Error, Progress, Result};

/// The columns of the seed's interaction CSV, plus `synthetic` so that simulated
/// rows stay recognisable wherever the file goes.
pub const CSV_HEADER: &str = "user_id,item_id,rating,timestamp,interaction_type,synthetic";

/// The interactions of `source` (all when `None`) as CSV, ordered by time, and
/// the number of data rows. Same store, same bytes.
pub fn interactions_csv(store: &Store, source: Option<Source>) -> Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut rows = 0;
    out.extend_from_slice(CSV_HEADER.as_bytes());
    out.push(b'\n');
    store.for_each_interaction(source, |row| {
        rows += 1;
        // Ids come from the shop; quote the rare one that needs it.
        let line = format!(
            "{},{},{},{},{},{}\n",
            csv_field(&row.key.user_id),
            csv_field(&row.key.item_id),
            Rating(row.rating),
            row.key.timestamp,
            csv_field(&row.key.interaction_type),
            u8::from(row.synthetic)
        );
        out.extend_from_slice(line.as_bytes());
        Ok(())
    })?;
    Ok((out, rows))
}

pub(crate) fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A rating as pandas reads a float: `5.0`, not `5`.
pub(crate) struct Rating(pub(crate) f64);

impl std::fmt::Display for Rating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            write!(f, "{:.1}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// State key of the last export: `{"id": <interaction watermark>, "at_ms": <time>}`.
const EXPORT_WATERMARK: &str = "export.watermark";

/// How `export` runs.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    /// Only the interactions written since the last export.
    pub incremental: bool,
    /// File format.
    pub format: Format,
}

/// What `export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// Object key of the data file.
    pub key: String,
    /// Object key of the metadata sidecar (`<key>.meta.json`).
    pub meta_key: String,
    /// `full` or `incremental`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `csv` or `parquet`.
    pub format: Format,
    /// Data rows.
    pub rows: u64,
    /// SHA-256 of the data file, hex.
    pub sha256: String,
    /// When the previous export was made (RFC 3339), for an increment.
    pub since: Option<String>,
    /// The interaction watermark the increment starts after.
    pub since_id: Option<i64>,
    /// Rows of refunded, cancelled or voided orders, left out.
    pub excluded_refunded: u64,
    /// False for an increment with no rows: nothing is written (no 0-row
    /// files), and `key` names the file that would have been.
    pub written: bool,
}

/// The metadata sidecar written beside every export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportMeta {
    /// `full` or `incremental`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the previous export was made (RFC 3339), for an increment.
    pub since: Option<String>,
    /// The interaction watermark the increment starts after.
    pub since_id: Option<i64>,
    /// Data rows.
    pub count: u64,
    /// SHA-256 of the data file, hex.
    pub sha256: String,
    /// `csv` or `parquet`.
    pub format: String,
    /// Object key of the data file.
    pub key: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The interaction watermark after this export.
    pub watermark: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Watermark {
    id: i64,
    at_ms: i64,
}

/// An export computed on the store, not yet written: [`prepare_export`] reads,
/// [`publish_export`] writes the objects (no store needed, so a server can do it
/// off its store thread), [`commit_export`] moves the watermark.
#[derive(Debug)]
pub struct PreparedExport {
    /// What will have been written.
    pub summary: ExportSummary,
    bytes: Vec<u8>,
    meta: Vec<u8>,
    watermark: Watermark,
}

/// Reads the interactions (all, or those written since the last export) and
/// encodes them, sorted by time, refunded orders' rows left out, as in datasets.
pub fn prepare_export(
    store: &Store,
    options: ExportOptions,
    progress: &dyn Progress,
) -> Result<PreparedExport> {
    let previous: Option<Watermark> = match store.state_get(EXPORT_WATERMARK)? {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            Error::Data(format!(
                "state {EXPORT_WATERMARK} is unreadable ({e}): {text}"
            ))
        })?),
        None => None,
    };
    let since = if options.incremental {
        previous.as_ref()
    } else {
        None
    };
    let filter = ScanFilter {
        after_id: since.map(|w| w.id),
        ..ScanFilter::default()
    };
    let (mut table, stats) = Table::load(store, filter, progress)?;
    table.sort_by_time();
    let bytes = encode(&table, &table.rows, options.format)?;
    let sha256 = sha256_hex(&bytes);
    let now = manirec_store::now_ms();
    let kind = if options.incremental {
        "incremental"
    } else {
        "full"
    };
    let stem = if options.incremental {
        "incremental"
    } else {
        "interactions"
    };
    let key = format!("training-data/{stem}-{now}.{}", options.format.extension());
    let meta_key = format!("{key}.meta.json");
    let rfc3339 = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let meta = ExportMeta {
        kind: kind.into(),
        since: since.map(|w| rfc3339(w.at_ms)),
        since_id: since.map(|w| w.id),
        count: table.rows.len() as u64,
        sha256: sha256.clone(),
        format: options.format.extension().into(),
        key: key.clone(),
        created_at: rfc3339(now),
        watermark: stats.max_id,
    };
    let meta_bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Data(e.to_string()))?;
    Ok(PreparedExport {
        summary: ExportSummary {
            key,
            meta_key,
            kind: kind.into(),
            format: options.format,
            rows: meta.count,
            sha256,
            since: meta.since,
            since_id: meta.since_id,
            excluded_refunded: stats.excluded_refunded,
            written: !(options.incremental && meta.count == 0),
        },
        bytes,
        meta: meta_bytes,
        watermark: Watermark {
            id: stats.max_id,
            at_ms: now,
        },
    })
}

/// Writes a prepared export: the data first, so a sidecar never describes a
/// missing file.
pub async fn publish_export(objects: &Objects, prepared: &PreparedExport) -> Result<()> {
    if !prepared.summary.written {
        return Ok(());
    }
    objects
        .put(&prepared.summary.key, Bytes::from(prepared.bytes.clone()))
        .await?;
    objects
        .put(
            &prepared.summary.meta_key,
            Bytes::from(prepared.meta.clone()),
        )
        .await?;
    Ok(())
}

/// Moves the watermark of the next increment past a published export.
/// An increment that wrote nothing moves nothing: the next one is still
/// "since the last file".
pub fn commit_export(store: &Store, prepared: &PreparedExport) -> Result<()> {
    if !prepared.summary.written {
        return Ok(());
    }
    store.state_set(
        EXPORT_WATERMARK,
        &serde_json::to_string(&prepared.watermark).map_err(|e| Error::Data(e.to_string()))?,
    )?;
    Ok(())
}

/// Exports the interactions (all, or those written since the last export) to
/// `training-data/interactions-<ms>.<ext>` or `training-data/incremental-<ms>.<ext>`,
/// sorted by time, with a `.meta.json` sidecar. Every export moves the watermark
/// of the next increment.
pub async fn export(
    store: &Store,
    objects: &Objects,
    options: ExportOptions,
    progress: &dyn Progress,
) -> Result<ExportSummary> {
    let prepared = prepare_export(store, options, progress)?;
    publish_export(objects, &prepared).await?;
    commit_export(store, &prepared)?;
    Ok(prepared.summary)
}
