//! Chorus merging: mergekit-compatible offline merges (linear, task arithmetic, TIES, DARE) streamed
//! tensor by tensor from memory-mapped inputs (HF safetensors, GGUF) into sharded safetensors, and
//! Twin-Merging's offline half (shared expert + SVD-factored exclusive knowledge in a twin pack).

pub mod config;
pub mod error;
pub mod input;
pub mod methods;
pub mod run;
pub mod twin;
pub mod writer;

pub use config::{Dtype, MergeConfig, Method};
pub use error::{Error, Result};
pub use run::{RunOptions, Summary, run};
pub use twin::{Rank, TwinOptions, TwinPack};
