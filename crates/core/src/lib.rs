//! Chorus core: the pieces every other crate shares and that must build everywhere (native and wasm32).
//!
//! Architecture invariant: this crate depends on neither burn nor wgpu. It holds the configuration types,
//! the error type, the GGML block formats (dequantization), token sampling and the plain-Rust reference
//! math that GPU kernels and burn models are tested against.

pub mod config;
pub mod error;
pub mod fusion;
pub mod ggml;
pub mod hash;
#[cfg(not(target_family = "wasm"))]
pub mod output;
pub mod reference;
pub mod sampling;
pub mod text;

pub use config::{Architecture, GenerateOptions, ModelConfig};
pub use error::{Error, FileError, Result};
pub use ggml::GgmlType;
pub use sampling::{Rng, Sampler};
