//! manirec's persistence layer.
//!
//! Two stores, each behind one type so that the rest of manirec never names a
//! database engine or a bucket:
//!
//! - [`Store`]: the relational store (SQLite by default, PostgreSQL for
//!   shops past one machine; see `sql` for the seam between them). It owns the
//!   schema and its migrations, the shop mirror (orders, products, images,
//!   accounts), behaviour events, training interactions and small state. Every
//!   idempotency guarantee lives in its constraints and transactions, never in a
//!   caller's memory.
//! - [`Objects`]: the object store (a local folder by default, S3/R2/MinIO by
//!   configuration) for exported files, datasets and model artifacts.
//!
//! The model registry (`model_versions`) records every trained model's
//! artifact, metrics and status (candidate, active, retired).
#![deny(missing_docs)]

mod copy;
mod datasets;
mod db;
mod error;
mod events;
mod experiments;
mod interactions;
mod jobs;
mod models;
mod names;
mod objects;
mod owner;
mod quality;
mod retention;
mod serving;
mod shop;
mod sql;
mod state;
mod sync;
pub mod testing;
mod webhooks;

pub use copy::{CopyReport, TableCopy};
pub use datasets::{
    DatasetSnapshot, DatasetVersion, Exclusion, ScanFilter, ScanStats, TrainingRow,
    REFUNDED_STATUSES,
};
pub use db::{Store, TableCounts};
pub use error::{Error, Result};
pub use events::{device_user, session_user, BehaviorEvent};
pub use experiments::{ArmCounts, Experiment};
pub use interactions::{
    is_anonymous, HistoryRow, Interaction, InteractionKey, OriginRows, ReconcileCounts,
    ReconcileScope, Source, ANONYMOUS_PREFIX,
};
pub use jobs::{JobRun, JobStart, HEARTBEAT_EVERY_MS, HEARTBEAT_STALE_MS};
pub use models::ModelVersion;
pub use names::{
    Actor, DatasetKind, DatasetStatus, ExperimentStatus, Job, JobStatus, ModelStatus, Outcome,
};
pub use objects::{ObjectInfo, Objects};
pub use owner::Orphans;
pub use quality::{QualityCounts, SourceCounts, StoredReport};
pub use retention::{ForgetTarget, RetentionCounts};
pub use serving::{CatalogRule, RecentEvent, RecommendationLog, RuleKind};
pub use shop::{
    Account, BaseProduct, CatalogItem, Category, EndProduct, Image, ItemAttributes, ItemDetails,
    OrderLine, ShopOrder, UpsertCounts,
};
pub use sql::Dialect;
pub use sync::Stitched;
pub use webhooks::{DeliveryOutcome, ProductChange, WebhookDelivery};

/// A database URL without its password, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    sql::postgres::redacted(url)
}

/// Milliseconds since the Unix epoch, the store's clock for bookkeeping columns.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
