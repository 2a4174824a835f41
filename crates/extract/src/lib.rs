//! Chorus relation extraction (MVRE, spec `mvre_fit5_tst.md` §1): data readers (TACRED-style JSON, SemEval-2010
//! Task 8), the reference's k-shot sampler, the multi-view prompt template with entity markers and m masks,
//! dynamic initialisation, the MVRE model and Global-Local loss, prompt-tuning, checkpoints, micro-F1 over
//! non-NA relations, and a small hand-written relation set built in.

pub mod data;
pub mod error;
pub mod extractor;
pub mod init;
pub mod metrics;
pub mod model;
pub mod template;
pub mod toy;
pub mod train;

pub use error::{Error, Result};
pub use extractor::{Extractor, Options};
