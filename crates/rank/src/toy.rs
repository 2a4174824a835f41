//! The toy ranking set shipped in the binary (`crates/rank/toy`, see its README): a small TREC-style set
//! on which FiT5 training measurably lowers the loss and raises MRR@10, and the tiny FiT5 configuration
//! trained on it. It lets `chorus rerank train --toy` and the tests run without MS MARCO.

use chorus_models::fit5::{FeatureBins, FiT5Config};
use chorus_models::t5::T5Config;

use crate::error::Result;
use crate::trec::{Collection, Qrels, Queries, Run, parse_collection, parse_qrels, parse_queries, parse_run};

/// The set's tokenizer (T5-style Unigram with `[CLS]`).
pub const TOKENIZER_JSON: &str = include_str!("../toy/tokenizer.json");
const COLLECTION: &str = include_str!("../toy/collection.tsv");
const TRAIN_QUERIES: &str = include_str!("../toy/train.queries.tsv");
const TRAIN_RUN: &str = include_str!("../toy/train.run");
const TRAIN_QRELS: &str = include_str!("../toy/train.qrels");
const TEST_QUERIES: &str = include_str!("../toy/test.queries.tsv");
const TEST_RUN: &str = include_str!("../toy/test.run");
const TEST_QRELS: &str = include_str!("../toy/test.qrels");

/// One split: queries, first-stage run, qrels.
#[derive(Debug, Clone)]
pub struct Split {
    /// Query id → text.
    pub queries: Queries,
    /// First-stage run.
    pub run: Run,
    /// Judgements.
    pub qrels: Qrels,
}

/// The whole toy set.
#[derive(Debug, Clone)]
pub struct ToySet {
    /// The passages.
    pub collection: Collection,
    /// 256 training queries.
    pub train: Split,
    /// 64 held-out queries.
    pub test: Split,
}

/// Parses the embedded files.
pub fn load() -> Result<ToySet> {
    let split = |q: &str, r: &str, j: &str, name: &str| -> Result<Split> {
        Ok(Split {
            queries: parse_queries(&format!("toy/{name}.queries.tsv"), q)?,
            run: parse_run(&format!("toy/{name}.run"), r)?,
            qrels: parse_qrels(&format!("toy/{name}.qrels"), j)?,
        })
    };
    Ok(ToySet {
        collection: parse_collection("toy/collection.tsv", COLLECTION)?,
        train: split(TRAIN_QUERIES, TRAIN_RUN, TRAIN_QRELS, "train")?,
        test: split(TEST_QUERIES, TEST_RUN, TEST_QRELS, "test")?,
    })
}

/// A tiny FiT5 for the toy set: T5 v1.0 (ReLU, tied), 3 encoder blocks of width 64 with global attention
/// after the last 2, one decoder block; inputs of 40 tokens.
pub fn config() -> FiT5Config {
    let tok = tokenizers::Tokenizer::from_bytes(TOKENIZER_JSON.as_bytes()).ok();
    let id = |t: &str| tok.as_ref().and_then(|k| k.token_to_id(t)).unwrap_or(0) as usize;
    let vocab = tok.as_ref().map_or(0, |k| k.get_vocab_size(true));
    FiT5Config {
        t5: T5Config {
            vocab_size: vocab,
            d_model: 64,
            d_kv: 16,
            d_ff: 128,
            num_layers: 3,
            num_decoder_layers: 1,
            num_heads: 4,
            relative_attention_num_buckets: 16,
            relative_attention_max_distance: 64,
            layer_norm_epsilon: 1e-6,
            gated_gelu: false,
            tie_word_embeddings: true,
            scale_decoder_outputs: true,
        },
        use_global: true,
        num_global_layers: 2,
        max_seq_len: 40,
        false_token_id: id("\u{2581}false"),
        true_token_id: id("\u{2581}true"),
        bins: FeatureBins::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toy_set_parses_and_is_consistent() {
        let t = load().unwrap();
        assert_eq!((t.collection.len(), t.train.queries.len(), t.test.queries.len()), (80, 256, 64));
        for s in [&t.train, &t.test] {
            for (q, docs) in &s.run {
                assert!(s.queries.contains_key(q) && docs.len() == 10);
                assert!(docs.iter().all(|(d, _)| t.collection.contains_key(d)));
                assert!(docs.iter().any(|(d, _)| s.qrels[q].contains_key(d)), "{q} has a relevant candidate");
            }
        }
        let c = config();
        c.validate("toy").unwrap();
        assert!(c.false_token_id > 2 && c.true_token_id > 2 && c.false_token_id != c.true_token_id);
    }
}
