//! The error type of `chorus-core`: every variant names the field, tensor or value at fault.

/// Errors raised by the core crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A GGML tensor type this build cannot decode.
    #[error("unsupported GGML tensor type {name} (id {id}) for tensor '{tensor}'")]
    UnsupportedQuant {
        /// GGML type id as stored in the file.
        id: u32,
        /// Human name of the type, or "unknown".
        name: &'static str,
        /// Tensor that uses it.
        tensor: String,
    },
    /// The byte length of a tensor does not match its element count and type.
    #[error("tensor '{tensor}': {elements} elements of {ty} need {expected} bytes, found {found}")]
    QuantSize {
        /// Tensor name.
        tensor: String,
        /// GGML type name.
        ty: &'static str,
        /// Element count.
        elements: usize,
        /// Bytes the element count needs.
        expected: usize,
        /// Bytes available.
        found: usize,
    },
    /// A configuration value is missing or out of range.
    #[error("invalid configuration field '{field}': {reason}")]
    Config {
        /// The field at fault.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Sampling options out of range.
    #[error("invalid sampling option '{field}': {reason}")]
    Sampling {
        /// The option at fault.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// Logit-fusion inputs or settings out of range.
    #[error("logit fusion: invalid '{field}': {reason}")]
    Fusion {
        /// The setting or input at fault.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
}

/// Reading or parsing a user's file failed: the one pair of variants the data-reading crates (extract, rank,
/// style) share, each naming the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        reason: String,
    },
    /// A line of a text file does not parse.
    #[error("{file}:{line}: {reason}")]
    Parse {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
