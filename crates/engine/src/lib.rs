//! Chorus engine: the use cases (text generation, fused decoding with Dynamic Logit Fusion), backend
//! selection, and every check on user input that must happen before tensors reach burn (context length,
//! token ids, sampling options), so that bad input is an error, never a panic inside a backend; and
//! Twin-Merging's router and per-input mixed inference.

pub mod backend;
pub mod error;
pub mod fuse;
mod fuse_gpu;
pub mod generate;
pub mod twin;
pub mod twin_gpu;

pub use backend::{Backend, device};
pub use error::{Error, Result};
pub use fuse::{FuseOptions, FuseOutput, Fusion, FusionSetup, Member, StepEvent, StepRecord};
pub use generate::{GenerateOutput, LoadedModel, Prompt, StepTrace, StopReason};
