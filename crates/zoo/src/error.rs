//! Errors of the zoo: bad configurations, export and I/O failures, each naming what is at fault.

use std::path::PathBuf;

/// Zoo errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model or training configuration that cannot work.
    #[error("zoo config: {field}: {reason}")]
    Config {
        /// The field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing a file.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A tensor could not be read back from the device.
    #[error("device: {0}")]
    Device(String),
    /// An output that exists (without `force`), overlaps an input, or could not be written.
    #[cfg(not(target_family = "wasm"))]
    #[error(transparent)]
    Output(#[from] chorus_core::output::OutputError),
}

/// Result with the zoo's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
