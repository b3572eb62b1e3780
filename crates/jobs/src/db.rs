//! The store's thread. SQLite has one writer at a time; rather than have every
//! request fight for the lock, requests queue here. Event batches queued together
//! are written in one transaction (group commit): one fsync for many requests.
//!
//! Reads that need no writer (a recommendation's user, history and purchases) can
//! go to a small pool of read-only connections instead ([`Db::read`]): WAL lets
//! them run beside the writer and beside each other, so they neither queue behind
//! group commits nor take turns on one thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use manirec_pipeline::identity::UserKey;
use manirec_pipeline::webhook::{apply, Delivery};
use manirec_pipeline::Rejection;
use manirec_store::{BehaviorEvent, DeliveryOutcome, Store};
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

/// Most events written in one group commit.
const GROUP_EVENTS: usize = 50_000;

type Call = Box<dyn FnOnce(&mut Store) + Send>;
type Read = Box<dyn FnOnce(&Store) + Send>;

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
    /// The read-only connections' queue; `None` when the store has no file to
    /// share (in memory), and reads go to the writer's thread.
    reads: Option<mpsc::Sender<Read>>,
}

impl Db {
    /// Starts the thread that owns `store`, and one reader per core when the
    /// store is a file (see [`Db::start_with_readers`]).
    pub fn start(store: Store) -> (Db, JoinHandle<()>) {
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::start_with_readers(store, readers)
    }

    /// Starts the thread that owns `store` and `readers` threads, each with its
    /// own read-only connection to the same file (none for an in-memory store, or
    /// when a reader cannot be opened: reads then run on the store's thread).
    pub fn start_with_readers(store: Store, readers: usize) -> (Db, JoinHandle<()>) {
        let mut connections = Vec::new();
        for _ in 0..readers {
            match store.reader() {
                Ok(Some(reader)) => connections.push(reader),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "no read-only connection; reads queue on the store's thread");
                    connections.clear();
                    break;
                }
            }
        }
        let reads = (!connections.is_empty()).then(|| {
            let (reads, rx) = mpsc::channel::<Read>(4096);
            let rx = Arc::new(Mutex::new(rx));
            for (i, reader) in connections.into_iter().enumerate() {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("manirec-db-read-{i}"))
                    .spawn(move || run_reader(reader, rx))
                    .expect("spawn a reader thread");
            }
            reads
        });
        let (jobs, rx) = mpsc::channel(4096);
        let thread = std::thread::Builder::new()
            .name("manirec-db".into())
            .spawn(move || run(store, rx))
            .expect("spawn the store thread");
        (Db { jobs, reads }, thread)
    }

    /// Runs `f` on a read-only connection, in one read transaction (its queries
    /// see one snapshot: the last commit before it began), and returns its result.
    /// Without readers it runs on the store's thread, like [`Db::call`].
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T> {
        let Some(reads) = &self.reads else {
            return self.call(move |store| f(store)).await;
        };
        let (reply, answer) = oneshot::channel();
        let job: Read = Box::new(move |store| match store.read_snapshot(f) {
            Ok(out) => {
                let _ = reply.send(Ok(out));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        });
        reads.send(job).await.map_err(|_| Error::ShuttingDown)?;
        Ok(answer.await.map_err(|_| Error::StoreStopped)??)
    }

    /// Stores a batch of events; answers `(accepted, duplicates)` once they are durable.
    pub async fn insert_events(&self, events: Vec<BehaviorEvent>) -> Result<(u64, u64)> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Events(events, reply))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        answer
            .await
            .map_err(|_| Error::ShuttingDown)?
            .map_err(Error::EventWrite)
    }

    /// Applies a Shoplazza delivery (webhook or polled order) in one transaction.
    /// The inner `Err` is a payload that is not an order.
    pub async fn apply_delivery(
        &self,
        key: UserKey,
        seed: u64,
        delivery: Delivery,
    ) -> Result<Result<DeliveryOutcome, Rejection>> {
        Ok(self
            .call(move |store| apply(store, &key, seed, &delivery))
            .await??)
    }

    /// Runs `f` on the store's thread and returns its result.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Call = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.jobs
            .send(Job::Call(job))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::StoreStopped)
    }
}

/// A reader: takes the next read from the shared queue until every [`Db`] is gone.
/// A read that panics loses its answer (the caller gets [`Error::StoreStopped`]), not the reader.
fn run_reader(store: Store, rx: Arc<Mutex<mpsc::Receiver<Read>>>) {
    loop {
        let job = {
            let Ok(mut rx) = rx.lock() else { return };
            rx.blocking_recv()
        };
        let Some(job) = job else { return };
        if catch_unwind(AssertUnwindSafe(|| job(&store))).is_err() {
            tracing::error!("a store read panicked");
        }
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
