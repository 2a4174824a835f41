//! The Chorus zoo: a tiny decoder family that Chorus trains itself (a small and a large base, per-task
//! experts and fine-tunes), used as the embedded default for DLF, merging and the browser demos.

pub mod corpus;
pub mod data;
pub mod demo;
pub mod embedded;
pub mod error;
pub mod eval;
pub mod family;
pub mod model;
pub mod tasks;
pub mod tokenizer;
pub mod train;
pub mod twin;

pub use error::{Error, Result};
