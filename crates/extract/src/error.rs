//! The error type of `chorus-extract`: every variant names the file and line, the example or the field.

/// Errors of relation-extraction inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or parsing a file failed (names the file and line).
    #[error(transparent)]
    File(#[from] chorus_core::FileError),
    /// One example cannot be used (the reference silently drops such examples; Chorus names them).
    #[error("example {id}: {reason}")]
    Example {
        /// Example id or index.
        id: String,
        /// Why.
        reason: String,
    },
    /// Several examples of a set cannot be used; each is named (the first few in full).
    #[error("{set}: {count} example(s) cannot be used: {details}")]
    Examples {
        /// Which set.
        set: String,
        /// How many.
        count: usize,
        /// The first few errors, each naming its example.
        details: String,
    },
    /// A model file or tensor is at fault (loading, shapes, saving).
    #[error(transparent)]
    Model(#[from] chorus_models::Error),
    /// A setting is invalid or inconsistent with the model or the data.
    #[error("{field}: {reason}")]
    Config {
        /// The setting or field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// An output that exists (without `force`), overlaps an input, or could not be written.
    #[cfg(not(target_family = "wasm"))]
    #[error(transparent)]
    Output(#[from] chorus_core::output::OutputError),
}

impl Error {
    /// A configuration error.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }
}

/// Result alias for the extract crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
