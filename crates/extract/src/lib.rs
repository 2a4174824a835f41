//! Chorus relation extraction (MVRE, spec `mvre_fit5_tst.md` §1): data readers (TACRED-style JSON, SemEval-2010
//! Task 8), the reference's k-shot sampler, the multi-view prompt template with entity markers and m masks,
//! the label words of dynamic initialisation, and micro-F1 over non-NA relations.

pub mod data;
pub mod error;
pub mod metrics;
pub mod model;
pub mod template;

pub use error::{Error, Result};
