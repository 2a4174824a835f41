//! The error type of `chorus-style`: every variant names the file and line, or the field at fault.

/// Errors of style-transfer inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or parsing a file failed (names the file and line).
    #[error(transparent)]
    File(#[from] chorus_core::FileError),
    /// An input sentence cannot be used.
    #[error("input: {0}")]
    Input(String),
    /// The compute device failed (a tensor could not be read back).
    #[error("device: {0}")]
    Device(String),
    /// An output that exists (without `force`), overlaps an input, or could not be written.
    #[cfg(not(target_family = "wasm"))]
    #[error(transparent)]
    Output(#[from] chorus_core::output::OutputError),
}

/// A float tensor's values on the host.
pub(crate) fn host_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Device(format!("{e:?}")))
}

/// Result alias for the style crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
