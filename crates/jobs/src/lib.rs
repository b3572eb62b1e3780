//! manirec's jobs: everything that runs on the store without an HTTP request
//! asking for it, or that `serve`, the admin API and the command line share.
//!
//! - [`Jobs`] is the context: the store's thread ([`Db`]), the object store and
//!   the [`JobsConfig`]. Its methods are the jobs: [`Jobs::sync`],
//!   [`Jobs::tick`] (poll → sync → trigger), [`Jobs::retrain`] (the weekly
//!   loop), [`Jobs::report`], [`Jobs::retention`], [`Jobs::poll`], and
//!   [`Jobs::run_scheduler`], which runs them on their periods inside `serve`.
//! - [`Db`] is the one thread that owns the store's writing connection:
//!   callers queue work on it, and event batches that queue together are
//!   written in one transaction (group commit).
//! - [`Observer`] is how whoever serves hears that what it serves changed (a
//!   promotion, an experiment started or settled), without this crate knowing
//!   who that is.
//! - [`notify`] and [`poll`] are the outgoing HTTP (the retrain notice,
//!   Shoplazza's orders API).
//!
//! This crate knows no incoming HTTP and no wire shapes: errors are
//! [`Error`], results are the pipeline's structs.
#![deny(missing_docs)]

mod db;
mod error;
mod jobs;
pub mod notify;
pub mod poll;
pub mod scheduler;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use manirec_pipeline::experiments::ExperimentConfig;
use manirec_pipeline::identity::UserKey;
use manirec_pipeline::retrain::RetrainConfig;
use manirec_pipeline::sync::Weights;
use manirec_pipeline::trigger::TriggerConfig;
use manirec_store::Objects;

pub use db::Db;
pub use error::{Error, Result};
pub use poll::{PollConfig, PollSummary};
pub use scheduler::{Schedule, Tick};

/// What the jobs are configured with.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Key of the user-id hash (emails are hashed before they are stored).
    pub user_key: UserKey,
    /// Seed of the simulated pre-purchase views of webhook and polled orders.
    pub simulation_seed: u64,
    /// Event weights of sync.
    pub weights: Weights,
    /// Retrain trigger thresholds.
    pub trigger: TriggerConfig,
    /// Where retrain notices are POSTed.
    pub notify_url: Option<String>,
    /// How often the scheduler ticks (poll, sync, trigger).
    pub sync_interval: Duration,
    /// The reconciliation poll, when the shop's API is configured.
    pub poll: Option<PollConfig>,
    /// How the weekly loop trains and decides.
    pub retrain: RetrainConfig,
    /// A/B evidence and attribution.
    pub experiments: ExperimentConfig,
    /// How often the scheduled jobs run, and retention's age.
    pub schedule: Schedule,
}

impl JobsConfig {
    /// Defaults for everything but the key.
    pub fn new(user_key: UserKey) -> Self {
        JobsConfig {
            user_key,
            simulation_seed: 42,
            weights: Weights::default(),
            trigger: TriggerConfig::default(),
            notify_url: None,
            sync_interval: Duration::from_secs(3600),
            poll: None,
            retrain: RetrainConfig::default(),
            experiments: ExperimentConfig::default(),
            schedule: Schedule::default(),
        }
    }
}

/// A future an [`Observer`] returns.
pub type Pending<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Hears of job outcomes that matter to whoever serves recommendations.
pub trait Observer: Send + Sync {
    /// The registry, the running experiment or the catalogue rules may have
    /// changed: reload what depends on them. Awaited before the job returns.
    fn serving_changed(&self) -> Pending<'_>;

    /// Sync turned `events` events into interactions.
    fn synced(&self, events: u64) {
        let _ = events;
    }
}

/// The observer of a [`Jobs`] that has none.
struct Nobody;

impl Observer for Nobody {
    fn serving_changed(&self) -> Pending<'_> {
        Box::pin(std::future::ready(()))
    }
}

/// The jobs' context. Cheap to clone; the store's thread ends when the last
/// clone (and every clone of its [`Db`]) is dropped.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    objects: Objects,
    config: JobsConfig,
    observer: OnceLock<Arc<dyn Observer>>,
}

impl Jobs {
    /// Jobs over a running [`Db`] and the object store.
    pub fn new(config: JobsConfig, db: Db, objects: Objects) -> Self {
        Jobs {
            inner: Arc::new(Inner {
                db,
                objects,
                config,
                observer: OnceLock::new(),
            }),
        }
    }

    /// Sets who hears of changes to what serves (once; later calls are ignored).
    /// The observer must not own this `Jobs` (hold a weak reference), or
    /// neither is ever dropped.
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        let _ = self.inner.observer.set(observer);
    }

    fn observer(&self) -> &dyn Observer {
        match self.inner.observer.get() {
            Some(o) => o.as_ref(),
            None => &Nobody,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &JobsConfig {
        &self.inner.config
    }

    /// The store's thread.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The object store.
    pub fn objects(&self) -> &Objects {
        &self.inner.objects
    }

    /// The reconciliation poll once, when configured (`None` otherwise).
    pub async fn poll(&self) -> Result<Option<PollSummary>> {
        let config = self.config();
        match &config.poll {
            Some(p) => Ok(Some(
                poll::poll_shop(self.db(), p, &config.user_key, config.simulation_seed).await?,
            )),
            None => Ok(None),
        }
    }
}
