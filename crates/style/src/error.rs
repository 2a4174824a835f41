//! The error type of `chorus-style`: every variant names the file and line, or the field at fault.

/// Errors of style-transfer inputs.
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
    /// A record is malformed.
    #[error("{file}:{line}: {reason}")]
    Parse {
        /// File at fault.
        file: String,
        /// 1-based line of the record's start.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An input sentence cannot be used.
    #[error("input: {0}")]
    Input(String),
    /// The compute device failed (a tensor could not be read back).
    #[error("device: {0}")]
    Device(String),
}

/// A float tensor's values on the host.
pub(crate) fn host_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Device(format!("{e:?}")))
}

/// Result alias for the style crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
