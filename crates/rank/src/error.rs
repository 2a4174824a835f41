//! The error type of `chorus-rank`: every variant names the file and line, the query or the field at fault.

/// Errors of re-ranking inputs, models and training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or parsing a file failed (names the file and line).
    #[error(transparent)]
    File(#[from] chorus_core::FileError),
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
    /// An output that exists (without `force`), overlaps an input, or could not be written.
    #[cfg(not(target_family = "wasm"))]
    #[error(transparent)]
    Output(#[from] chorus_core::output::OutputError),
}

/// Result alias for the rank crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
