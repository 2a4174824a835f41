//! The error type of `chorus-models`: every variant names the file and, where it applies, the tensor,
//! field or shape at fault.

/// Errors raised while reading model files, building tokenizers or running models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    // The cause is part of the message (not a `source`), so chains printed by anyhow do not repeat it.
    #[error("{path}: {err}")]
    Io {
        /// File at fault.
        path: String,
        /// Underlying error.
        err: std::io::Error,
    },
    /// A GGUF file is truncated, corrupt or uses a feature this reader does not support.
    #[error("{file}: invalid GGUF: {reason}")]
    Gguf {
        /// File at fault.
        file: String,
        /// What is wrong, with the offset or key where known.
        reason: String,
    },
    /// A safetensors file or its index is invalid.
    #[error("{file}: invalid safetensors: {reason}")]
    Safetensors {
        /// File at fault.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A JSON file (config.json, tokenizer.json, index) could not be parsed.
    #[error("{file}: {reason}")]
    Json {
        /// File at fault.
        file: String,
        /// Parser message.
        reason: String,
    },
    /// A required metadata or config field is missing or has the wrong type.
    #[error("{file}: field '{field}': {reason}")]
    Field {
        /// File at fault.
        file: String,
        /// Field name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The architecture is not one the runtime implements.
    #[error("{file}: unknown architecture '{name}' (supported: qwen2, llama)")]
    UnknownArchitecture {
        /// File at fault.
        file: String,
        /// Architecture as written in the file.
        name: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{file}: missing tensor '{tensor}'")]
    MissingTensor {
        /// File at fault.
        file: String,
        /// Tensor name as looked up in the file.
        tensor: String,
    },
    /// A tensor's shape disagrees with the configuration.
    #[error("{file}: tensor '{tensor}' has shape {found:?}, the config implies {expected:?}")]
    Shape {
        /// File at fault.
        file: String,
        /// Tensor name.
        tensor: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's storage type cannot be decoded.
    #[error("{file}: tensor '{tensor}' has unsupported dtype {dtype}")]
    Dtype {
        /// File at fault.
        file: String,
        /// Tensor name.
        tensor: String,
        /// Stored type.
        dtype: String,
    },
    /// The tokenizer is missing or cannot be built.
    #[error("{file}: tokenizer: {reason}")]
    Tokenizer {
        /// File at fault.
        file: String,
        /// What went wrong.
        reason: String,
    },
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// An error from the core crate (dequantization, config validation).
    #[error("{file}: {err}")]
    Core {
        /// File at fault.
        file: String,
        /// Underlying error.
        err: chorus_core::Error,
    },
    /// Reading a tensor back from the device failed.
    #[error("device read-back failed: {0}")]
    Device(String),
    /// An output that exists (without `force`), overlaps an input, or could not be written.
    #[cfg(not(target_family = "wasm"))]
    #[error(transparent)]
    Output(#[from] chorus_core::output::OutputError),
}

/// Result alias for the models crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
