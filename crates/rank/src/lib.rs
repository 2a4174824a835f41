//! Chorus re-ranking: TREC-style inputs (queries, collection, first-stage run, qrels) and run files, the IR
//! metrics MRR@10 and NDCG@10, re-ranking a first-stage run with FiT5 (per-query failures reported, never
//! losing the other queries), and FiT5's two-stage training with burn autodiff.

pub mod error;
pub mod metrics;
pub mod rerank;
pub mod toy;
pub mod train;
pub mod trec;

pub use error::{Error, Result};
pub use rerank::{RerankOptions, RerankReport, Reranker};
pub use train::{TrainConfig, TrainReport};
