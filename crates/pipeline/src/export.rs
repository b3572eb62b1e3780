//! Interaction files written for people and other tools.

use manirec_store::{Source, Store};
use sha2::{Digest, Sha256};

use crate::Result;

/// The columns of the seed's interaction CSV, plus `synthetic` so that simulated
/// rows stay recognisable wherever the file goes.
pub const CSV_HEADER: &str = "user_id,item_id,rating,timestamp,interaction_type,synthetic";

/// The interactions of `source` (all when `None`) as CSV, ordered by time, and
/// the number of data rows. Same store, same bytes.
pub fn interactions_csv(store: &Store, source: Option<Source>) -> Result<(Vec<u8>, u64)> {
    write_csv(|f| store.for_each_interaction(source, f))
}

/// Every interaction written after `created_after` (Unix ms; all when `None`) as CSV.
pub fn interactions_csv_since(store: &Store, created_after: Option<i64>) -> Result<(Vec<u8>, u64)> {
    write_csv(|f| store.for_each_interaction_since(None, created_after, f))
}

type RowVisitor<'a> = &'a mut dyn FnMut(&manirec_store::Interaction) -> manirec_store::Result<()>;

fn write_csv(
    scan: impl FnOnce(RowVisitor<'_>) -> manirec_store::Result<()>,
) -> Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut rows = 0;
    out.extend_from_slice(CSV_HEADER.as_bytes());
    out.push(b'\n');
    scan(&mut |row| {
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

fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
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
struct Rating(f64);

impl std::fmt::Display for Rating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            write!(f, "{:.1}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}
