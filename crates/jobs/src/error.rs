//! The jobs' one error type. It names causes, not HTTP statuses: the server
//! maps it to its envelope (`crates/server/src/error.rs`), the command line
//! prints it.

/// What can go wrong running a job or reaching the store's thread.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store's thread no longer takes work: the process is stopping.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The store's thread (or a reader) dropped a call without answering.
    #[error("the store thread stopped")]
    StoreStopped,
    /// A group commit of events failed (every batch in it gets this).
    #[error("event batch write failed: {0}")]
    EventWrite(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] manirec_store::Error),
    /// A pipeline stage failed (its variants say whose fault it is).
    #[error(transparent)]
    Pipeline(#[from] manirec_pipeline::Error),
    /// The shop's API (orders, products) could not be used (unreachable, refused, no JSON).
    #[error("{0}")]
    ShopApi(String),
    /// An HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// A job's thread panicked or was cancelled.
    #[error("a job stopped before it finished: {0}")]
    Panicked(String),
}

/// Result of a job.
pub type Result<T, E = Error> = std::result::Result<T, E>;
