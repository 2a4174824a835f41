//! Errors of the merge crate: each names the file, model, tensor or field at fault.

use std::path::PathBuf;

/// A merge error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The merge configuration is invalid.
    #[error("{}: {field}: {reason}", file.display())]
    Config {
        /// The YAML file.
        file: PathBuf,
        /// Key at fault (`models[1].parameters.density`, `merge_method`, …).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An input model cannot be used (missing tensor, shape or dtype mismatch, unreadable file).
    #[error("{model}: {tensor}: {reason}")]
    Input {
        /// The model's path.
        model: String,
        /// The tensor (or `*` for the whole model).
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// An output that exists (without `force`), overlaps an input, or could not be written.
    #[cfg(not(target_family = "wasm"))]
    #[error(transparent)]
    Output(#[from] chorus_core::output::OutputError),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
