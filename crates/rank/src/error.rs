//! The error type of `chorus-rank`: every variant names the file and line, the query or the field at fault.

/// Errors of re-ranking inputs, models and training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// File at fault.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A line of a TSV/TREC file is malformed.
    #[error("{file}:{line}: {reason}")]
    Parse {
        /// File at fault.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// One query could not be re-ranked (the others are unaffected).
    #[error("query '{qid}': {reason}")]
    Query {
        /// Query at fault.
        qid: String,
        /// Why.
        reason: String,
    },
    /// A setting is out of range.
    #[error("{field}: {reason}")]
    Config {
        /// Setting at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] chorus_models::Error),
}

/// Result alias for the rank crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
