//! Chorus merging: mergekit-compatible offline merges (linear, task arithmetic, TIES, DARE) streamed
//! tensor by tensor from memory-mapped inputs (HF safetensors, GGUF) into sharded safetensors, and
//! Twin-Merging's offline half (shared expert + SVD-factored exclusive knowledge in a twin pack). On wasm32
//! only the pack reader is built: the browser opens packs from fetched bytes, it never merges files.

pub mod config;
pub mod error;
#[cfg(not(target_family = "wasm"))]
pub mod input;
pub mod methods;
#[cfg(not(target_family = "wasm"))]
pub mod run;
pub mod twin;
#[cfg(not(target_family = "wasm"))]
pub mod writer;

pub use config::{Dtype, MergeConfig, Method};
pub use error::{Error, Result};
#[cfg(not(target_family = "wasm"))]
pub use run::{RunOptions, Summary, run};
pub use twin::{Rank, TwinOptions, TwinPack};
