use std::path::PathBuf;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened (missing folder, permissions, not a database).
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer manirec.
    #[error("database schema version {found} is newer than this manirec understands ({known}); upgrade manirec")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The object store failed or is misconfigured.
    #[error("object store: {0}")]
    Objects(String),
    /// Another writer got there first (a dataset version already taken).
    #[error("{0}")]
    Conflict(String),
    /// A request the store's state does not allow (an unknown or unfinished model version).
    #[error("{0}")]
    Invalid(String),
    /// A stored JSON value could not be read back.
    #[error("corrupt JSON in the store: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result of the persistence layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
