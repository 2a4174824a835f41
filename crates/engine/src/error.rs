//! The error type of `chorus-engine`.

/// Errors raised by engine use cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running a model failed.
    #[error(transparent)]
    Models(#[from] chorus_models::Error),
    /// Invalid options (sampling, configuration).
    #[error(transparent)]
    Core(#[from] chorus_core::Error),
    /// The requested backend is unavailable.
    #[error("backend '{backend}' is unavailable: {reason}")]
    Backend {
        /// Backend name.
        backend: String,
        /// Why.
        reason: String,
    },
    /// The prompt does not fit in the model's context.
    #[error("prompt of {prompt_tokens} tokens does not fit the context of {context} tokens of {model}")]
    Context {
        /// Model path.
        model: String,
        /// Prompt length in tokens.
        prompt_tokens: usize,
        /// The model's context length.
        context: usize,
    },
    /// A twin pack could not be read.
    #[error(transparent)]
    Merge(#[from] chorus_merge::Error),
    /// Invalid request (empty prompt, empty batch).
    #[error("invalid request: {0}")]
    Request(String),
    /// An output that exists (without `force`), overlaps an input, or could not be written.
    #[cfg(not(target_family = "wasm"))]
    #[error(transparent)]
    Output(#[from] chorus_core::output::OutputError),
}

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
