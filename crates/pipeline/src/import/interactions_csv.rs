//! Interaction files: `user_id,item_id,rating,timestamp[,interaction_type[,synthetic]]`.
//!
//! The seed's CSV, and the public data sets manirec pre-trains and benchmarks on:
//! MovieLens `ratings.csv` (`userId,movieId,rating,timestamp`) and `u.data`
//! (tab-separated, no header). The header is optional and read by name; without
//! one, columns are positional. Emails in `user_id` are hashed on the way in.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use manirec_store::{Interaction, InteractionKey, Source, Store};
use serde::Serialize;

use crate::identity::UserKey;
use crate::report::{Problems, Rejection};
use crate::time::parse_timestamp;
use crate::{Error, Progress, Result};

/// Rows per transaction.
const BATCH: usize = 50_000;

/// How an interaction file is read.
#[derive(Debug, Clone)]
pub struct CsvImportOptions {
    /// The source the rows are recorded under.
    pub source: Source,
    /// The type of rows whose file has no `interaction_type` column.
    pub default_type: String,
}

impl Default for CsvImportOptions {
    fn default() -> Self {
        CsvImportOptions {
            source: Source::ExistingData,
            default_type: "rating".into(),
        }
    }
}

/// What an interaction import did.
#[derive(Debug, Default, Serialize)]
pub struct CsvImport {
    /// Data rows read.
    pub rows: u64,
    /// New interactions.
    pub inserted: u64,
    /// Rows already stored (same user, item, timestamp and type).
    pub duplicates: u64,
    /// Rows that could not be read.
    pub rejected: u64,
    /// Why, with the first few line numbers.
    pub problems: Problems,
    /// Said when the file looks like MovieLens (its licence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// MovieLens' licence, repeated whenever a file looks like one of its data sets.
pub const MOVIELENS_WARNING: &str = "this looks like a MovieLens data set: GroupLens' licence \
forbids commercial use without their permission; pre-train a live shop's model on another source \
(or ask GroupLens)";

/// Whether a file is MovieLens by its name (`u.data`, `ratings.csv` …) or header (`movieId`).
fn looks_like_movielens(path: &Path, first_line: &str) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name == "u.data"
        || parent.starts_with("ml-")
        || first_line
            .to_lowercase()
            .replace(['_', ' '], "")
            .contains("movieid")
}

/// Column positions in a file.
#[derive(Debug, Clone, Copy)]
struct Layout {
    user: usize,
    item: usize,
    rating: usize,
    timestamp: usize,
    kind: Option<usize>,
    synthetic: Option<usize>,
}

const POSITIONAL: Layout = Layout {
    user: 0,
    item: 1,
    rating: 2,
    timestamp: 3,
    kind: Some(4),
    synthetic: Some(5),
};

fn layout_from_header(header: &csv::StringRecord) -> Option<Layout> {
    let names: HashMap<String, usize> = header
        .iter()
        .enumerate()
        .map(|(i, n)| (n.trim().to_lowercase().replace(['_', ' '], ""), i))
        .collect();
    let find = |aliases: &[&str]| aliases.iter().find_map(|a| names.get(*a).copied());
    Some(Layout {
        user: find(&["userid", "user", "customer", "customerid"])?,
        item: find(&["itemid", "item", "movieid", "productid"])?,
        rating: find(&["rating", "weight", "score"])?,
        timestamp: find(&["timestamp", "ts", "time", "createdat"])?,
        kind: find(&["interactiontype", "type", "eventtype"]),
        synthetic: find(&["synthetic"]),
    })
}

/// Imports the interaction file at `path`.
pub fn import_interactions(
    store: &mut Store,
    path: &Path,
    key: &UserKey,
    options: &CsvImportOptions,
    progress: &dyn Progress,
) -> Result<CsvImport> {
    let input_error = |message: String| Error::Input {
        path: path.display().to_string(),
        message,
    };
    let mut file =
        std::fs::File::open(path).map_err(|e| input_error(format!("cannot open: {e}")))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| input_error(format!("not a UTF-8 text file: {e}")))?;
    let first_line = text.lines().next().unwrap_or_default();
    let delimiter = if first_line.contains('\t') {
        b'\t'
    } else {
        b','
    };

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = reader.records().peekable();

    // A first row whose rating is not a number is a header.
    let mut layout = POSITIONAL;
    if let Some(Ok(first)) = records.peek() {
        let is_header = first.get(2).is_none_or(|r| r.parse::<f64>().is_err());
        if is_header {
            layout = layout_from_header(first).ok_or_else(|| {
                input_error(format!(
                    "header {:?} lacks user_id, item_id, rating or timestamp",
                    first.iter().collect::<Vec<_>>().join(",")
                ))
            })?;
            records.next();
        }
    }

    let mut summary = CsvImport {
        warning: looks_like_movielens(path, first_line).then(|| MOVIELENS_WARNING.to_string()),
        ..CsvImport::default()
    };
    let mut batch = Vec::with_capacity(BATCH);
    // Customers erased on request do not come back through a file either.
    let forgotten = store.forgotten_users()?;
    progress.begin("importing interactions", text.lines().count() as u64);
    for record in records {
        summary.rows += 1;
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map(|p| p.line())
            .unwrap_or(summary.rows);
        match record
            .map_err(|e| Rejection::new("unreadable CSV", e.to_string()))
            .and_then(|r| parse_record(&r, layout, key, options))
            .and_then(|row| {
                if forgotten.contains(&row.key.user_id) {
                    Err(Rejection::new(
                        "the customer asked to be forgotten",
                        row.key.user_id.clone(),
                    ))
                } else {
                    Ok(row)
                }
            }) {
            Ok(row) => batch.push(row),
            Err(r) => {
                summary.rejected += 1;
                summary
                    .problems
                    .add_detailed(format!("line {line}"), r.reason, r.detail);
            }
        }
        if batch.len() == BATCH {
            flush(store, &mut batch, &mut summary, progress)?;
        }
    }
    flush(store, &mut batch, &mut summary, progress)?;
    progress.end();
    Ok(summary)
}

fn flush(
    store: &mut Store,
    batch: &mut Vec<Interaction>,
    summary: &mut CsvImport,
    progress: &dyn Progress,
) -> Result<()> {
    let (inserted, duplicates) = store.insert_interactions(batch)?;
    summary.inserted += inserted;
    summary.duplicates += duplicates;
    progress.advance(batch.len() as u64);
    batch.clear();
    Ok(())
}

fn parse_record(
    r: &csv::StringRecord,
    layout: Layout,
    key: &UserKey,
    options: &CsvImportOptions,
) -> std::result::Result<Interaction, Rejection> {
    let field = |i: usize, name: &str| {
        r.get(i)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Rejection::from(format!("{name} is missing")))
    };
    let user = field(layout.user, "user_id")?;
    let item = field(layout.item, "item_id")?;
    let rating_text = field(layout.rating, "rating")?;
    let rating: f64 = rating_text
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite())
        .ok_or_else(|| Rejection::new("rating is not a number", rating_text))?;
    let ts_text = field(layout.timestamp, "timestamp")?;
    let timestamp = parse_timestamp(ts_text)
        .ok_or_else(|| Rejection::new("timestamp is not a time", ts_text))?;
    let interaction_type = layout
        .kind
        .and_then(|i| r.get(i))
        .filter(|t| !t.is_empty())
        .unwrap_or(&options.default_type)
        .to_owned();
    let synthetic = match layout.synthetic.and_then(|i| r.get(i)).unwrap_or("") {
        "" | "0" | "false" => false,
        "1" | "true" => true,
        other => return Err(Rejection::new("synthetic is not 0 or 1", other)),
    };
    Ok(Interaction {
        key: InteractionKey {
            user_id: key.user_id(user),
            item_id: item.to_owned(),
            timestamp,
            interaction_type,
        },
        rating,
        source: options.source,
        synthetic,
        quantity: 1,
        origin: None,
    })
}
