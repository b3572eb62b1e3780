//! manirec's data pipeline: the shop's data in, clean training interactions out.
//!
//! - [`import`]: the shop's SQLite file or D1 dump into the store's shop mirror,
//!   and interaction CSV files (the seed's format, public data sets) into
//!   training interactions.
//! - [`extract`]: the shop mirror into training interactions (purchases,
//!   simulated views, design-image views), plus the seed's CSV in the object store.
//! - [`dataset`]: dataset versions (merge, 5-minute dedup, temporal split,
//!   Parquet files and a checksummed manifest); [`export`]: interaction files
//!   with a metadata sidecar.
//! - [`quality`]: the daily data-quality report; [`retention`]: deleting old
//!   data and one customer's data (GDPR).
//! - [`training`]: trains a model on a dataset version's files, evaluates it
//!   beside popularity, writes its artifact and registers it (the model registry).
//! - [`identity`]: the keyed hash that replaces emails before anything leaves
//!   the shop mirror.
//!
//! Every stage reports what it did as a serialisable summary, counts what it
//! could not use with a reason, and can be run again without changing the result.
#![deny(missing_docs)]

pub mod dataset;
pub mod experiments;
pub mod export;
pub mod extract;
pub mod identity;
pub mod import;
pub mod orders;
mod progress;
#[cfg(test)]
mod properties;
pub mod quality;
mod report;
pub mod retention;
pub mod retrain;
pub mod serving;
pub mod shoplazza;
pub mod sync;
pub mod time;
pub mod training;
pub mod trigger;
pub mod webhook;

pub use progress::{NoProgress, Progress};
pub use report::{Problems, Rejection, RowProblem};

/// Errors a pipeline stage stops on (row-level problems are counted, not raised).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input file cannot be used at all.
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The data cannot be turned into the asked output.
    #[error("{0}")]
    Data(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] manirec_store::Error),
}

/// Result of a pipeline stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Sweeps the reservations of builds and trainings whose process died
/// ([`manirec_store::Store::sweep_orphans`]) before a new one reserves its
/// number, and says what it swept.
pub(crate) fn sweep_orphans(store: &manirec_store::Store) -> Result<()> {
    let swept = store.sweep_orphans()?;
    if !swept.datasets.is_empty() || !swept.models.is_empty() {
        tracing::warn!(
            datasets = ?swept.datasets,
            models = ?swept.models,
            "removed reservations whose build or training process died"
        );
    }
    Ok(())
}
