//! Errors of the browser API: one enum for everything that can go wrong between the page and the engine,
//! turned into a JavaScript `Error` whose message names the file, field or option at fault.

use wasm_bindgen::{JsCast, JsError, JsValue};

/// What went wrong in a chorus-web call.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// An argument or option object is malformed.
    #[error("{0}")]
    Input(String),
    /// A file could not be downloaded.
    #[error("{url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A downloaded or cached file does not have the SHA-256 it was promised.
    #[error("{url}: sha256 mismatch (expected {want}, got {got})")]
    Integrity {
        /// The URL.
        url: String,
        /// The digest asked for.
        want: String,
        /// The digest of the bytes received.
        got: String,
    },
    /// The engine refused the request or failed.
    #[error(transparent)]
    Engine(#[from] chorus_engine::Error),
    /// A model file does not parse.
    #[error(transparent)]
    Model(#[from] chorus_models::Error),
}

impl From<WebError> for JsValue {
    fn from(e: WebError) -> JsValue {
        JsError::new(&e.to_string()).into()
    }
}

/// Lets `?` turn a [`WebError`] into the `JsError` that async functions return.
pub fn js(e: WebError) -> JsError {
    JsError::new(&e.to_string())
}

/// A readable message for a thrown JavaScript value (an `Error`'s message, or its string form).
pub fn describe(v: &JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}
