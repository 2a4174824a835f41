//! Chorus merging: mergekit-compatible offline merges (linear, task arithmetic, TIES, DARE) streamed
//! tensor by tensor from memory-mapped inputs (HF safetensors, GGUF) into sharded safetensors.

pub mod config;
pub mod error;
pub mod input;
pub mod methods;
pub mod run;
pub mod writer;

pub use config::{Dtype, MergeConfig, Method};
pub use error::{Error, Result};
pub use run::{RunOptions, Summary, run};
