use thiserror::Error;

/// Why training, evaluation or (de)serialisation stopped.
#[derive(Debug, Error)]
pub enum Error {
    /// The input cannot train or evaluate anything (empty, no users, no items…).
    #[error("{0}")]
    Input(String),
    /// A configuration value is out of range.
    #[error("invalid {name}: {message}")]
    Config {
        /// The setting.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A numerical step failed (a Gram matrix that is not positive definite).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// Model bytes that are not a manirec model of this format version.
    #[error("bad model artifact: {0}")]
    Artifact(String),
    /// Writing a dump or an artifact failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result of the engine's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
