//! The store's thread. SQLite has one writer at a time; rather than have every
//! request fight for the lock, requests queue here. Event batches queued together
//! are written in one transaction (group commit): one fsync for many requests.

use std::thread::JoinHandle;

use manirec_pipeline::identity::UserKey;
use manirec_pipeline::webhook::{apply, Delivery};
use manirec_pipeline::Rejection;
use manirec_store::{BehaviorEvent, DeliveryOutcome, Store};
use tokio::sync::{mpsc, oneshot};

use crate::ApiError;

/// Most events written in one group commit.
const GROUP_EVENTS: usize = 50_000;

type Call = Box<dyn FnOnce(&mut Store) + Send>;

enum Job {
    Events(
        Vec<BehaviorEvent>,
        oneshot::Sender<Result<(u64, u64), String>>,
    ),
    Call(Call),
}

/// A handle on the store's thread. Cheap to clone; the thread ends when the last
/// handle is dropped, after finishing the queued work.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
}

impl Db {
    /// Starts the thread that owns `store`.
    pub fn start(store: Store) -> (Db, JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(4096);
        let thread = std::thread::Builder::new()
            .name("manirec-db".into())
            .spawn(move || run(store, rx))
            .expect("spawn the store thread");
        (Db { jobs }, thread)
    }

    /// Stores a batch of events; answers `(accepted, duplicates)` once they are durable.
    pub async fn insert_events(&self, events: Vec<BehaviorEvent>) -> Result<(u64, u64), ApiError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Events(events, reply))
            .await
            .map_err(|_| ApiError::unavailable("the store is shutting down"))?;
        answer
            .await
            .map_err(|_| ApiError::unavailable("the store is shutting down"))?
            .map_err(ApiError::internal)
    }

    /// Applies a Shoplazza delivery (webhook or polled order) in one transaction.
    /// The inner `Err` is a payload that is not an order.
    pub async fn apply_delivery(
        &self,
        key: UserKey,
        seed: u64,
        delivery: Delivery,
    ) -> Result<Result<DeliveryOutcome, Rejection>, ApiError> {
        self.call(move |store| apply(store, &key, seed, &delivery))
            .await?
            .map_err(ApiError::internal)
    }

    /// Runs `f` on the store's thread and returns its result.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job: Call = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.jobs
            .send(Job::Call(job))
            .await
            .map_err(|_| ApiError::unavailable("the store is shutting down"))?;
        answer
            .await
            .map_err(|_| ApiError::internal("the store thread stopped"))
    }
}

fn run(mut store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batches = Vec::new();
        let mut calls = Vec::new();
        let mut events = 0;
        let mut take = |job: Job, events: &mut usize| match job {
            Job::Events(e, reply) => {
                *events += e.len();
                batches.push((e, reply));
            }
            Job::Call(c) => calls.push(c),
        };
        take(first, &mut events);
        while events < GROUP_EVENTS {
            match rx.try_recv() {
                Ok(job) => take(job, &mut events),
                Err(_) => break,
            }
        }
        if !batches.is_empty() {
            let slices: Vec<&[BehaviorEvent]> = batches.iter().map(|(e, _)| e.as_slice()).collect();
            match store.insert_event_batches(&slices) {
                Ok(outcomes) => {
                    for ((_, reply), outcome) in batches.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "event batch write failed");
                    for (_, reply) in batches {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
        for call in calls {
            call(&mut store);
        }
    }
}
