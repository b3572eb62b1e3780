/// Errors of the persistence layer. No variant names an engine: SQLite's and
/// PostgreSQL's errors are sorted into what a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened or reached (missing folder,
    /// permissions, not a database, server down, wrong password).
    #[error("cannot open database {target}: {reason}")]
    Open {
        /// The file or the URL (without its password).
        target: String,
        /// What the engine said.
        reason: String,
    },
    /// The database was written by a newer manirec.
    #[error("database schema version {found} is newer than this manirec understands ({known}); upgrade manirec")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
    /// A query that must find a row found none.
    #[error("no such row")]
    NotFound,
    /// A write broke a constraint (a duplicate key, a missing parent row, a check).
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The database is busy (locked past the timeout, a serialization conflict,
    /// a deadlock): the same call may succeed if tried again.
    #[error("database busy: {0}; try again")]
    Busy(String),
    /// The connection to the database was lost.
    #[error("database connection lost: {0}")]
    Unavailable(String),
    /// The engine refused a statement (a bug in manirec: please report it).
    #[error("database error: {0}")]
    Query(String),
    /// A column did not hold what the store expected of it.
    #[error("column {column}: {reason}")]
    Decode {
        /// 0-based column index.
        column: usize,
        /// What was expected and found.
        reason: String,
    },
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

impl Error {
    /// Whether trying the same call again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Busy(_) | Error::Unavailable(_))
    }
}

/// Result of the persistence layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
