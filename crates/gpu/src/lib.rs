//! Chorus GPU layer: the only crate that uses wgpu directly.
//!
//! It owns a [`GpuContext`] (created here, or wrapping the device/queue that burn's wgpu runtime already
//! opened, so custom kernels and burn share one GPU), the shader registry ([`shaders`], the one module that
//! includes files from the top-level `shaders/` folder) and one `async` launcher per kernel. Launchers are
//! async because browser read-backs must be awaited; native callers wrap them in `pollster::block_on`.
//! Every kernel has a plain-Rust reference in `chorus_core::reference` and a parity test.

pub mod bridge;
pub mod context;
pub mod decoder;
pub mod error;
pub mod fusion;
pub mod lowrank;
pub mod qmatmul;
pub mod row_stats;
pub mod shaders;

pub use context::{GpuContext, Pass};
pub use error::{Error, Result};
pub use shaders::{QFormat, ShaderId};
