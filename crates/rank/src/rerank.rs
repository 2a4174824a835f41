//! Re-ranking a first-stage run with FiT5: each query's top candidates (up to 100, the reference's list
//! size) are scored together in one listwise batch and ordered by the "true" logit; candidates below the
//! depth keep their first-stage order under the re-ranked ones. A query that cannot be re-ranked (no text,
//! a document missing from the collection, an over-long input under `--overlong error`) is reported and
//! skipped; every other query's results are kept.

use std::collections::BTreeMap;

use burn::tensor::Device;
use chorus_models::fit5::{Candidate, EncodeError, FeatureBins, FiT5, MAX_CANDIDATES, OverLong, encode_candidates};
use chorus_models::t5::ids_tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::trec::{Collection, Queries, Run};

/// Settings of one re-ranking job.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RerankOptions {
    /// Candidates re-ranked per query (at most [`MAX_CANDIDATES`]).
    pub depth: usize,
    /// Put the first-stage score into the template (`score: <bin>`, the released model's stage 2).
    pub use_feature: bool,
    /// Over-long inputs.
    pub overlong: OverLong,
}

impl Default for RerankOptions {
    fn default() -> Self {
        Self { depth: MAX_CANDIDATES, use_feature: true, overlong: OverLong::default() }
    }
}

/// A re-ranked run and what could not be done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RerankReport {
    /// Query id → (doc id, score) for every query that was re-ranked.
    pub run: Run,
    /// Queries that failed, with the reason.
    pub failures: Vec<(String, String)>,
    /// Candidates whose input was shortened to `max_seq_len`.
    pub truncated: usize,
}

/// A FiT5 model with its tokenizer on a device.
pub struct Reranker {
    /// The model.
    pub model: FiT5,
    /// Its tokenizer (with `[CLS]`).
    pub tokenizer: tokenizers::Tokenizer,
    /// Where it runs.
    pub device: Device,
}

/// Loads `tokenizer.json` from a model folder, naming the file in errors.
pub fn load_tokenizer(path: &std::path::Path) -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_file(path).map_err(|e| {
        chorus_core::FileError::Io { path: path.display().to_string(), reason: format!("tokenizer: {e}") }.into()
    })
}

/// Candidates of one query from the run and the collection; the first missing doc id is an error.
pub fn candidates(
    qid: &str,
    docs: &[(String, f64)],
    collection: &Collection,
    use_feature: bool,
) -> Result<Vec<Candidate>> {
    docs.iter()
        .map(|(d, s)| {
            let doc = collection.get(d).ok_or_else(|| Error::Query {
                qid: qid.into(),
                reason: format!("document '{d}' of the run is not in the collection"),
            })?;
            Ok(Candidate {
                docid: d.clone(),
                title: doc.title.clone(),
                text: doc.text.clone(),
                score: use_feature.then_some(*s),
            })
        })
        .collect()
}

/// A tokenizer with more tokens than the model has embedding rows would index past the table.
pub fn check_vocab(qid: &str, ids: &[Vec<u32>], vocab: usize) -> Result<()> {
    match ids.iter().flatten().find(|&&i| i as usize >= vocab) {
        Some(i) => Err(Error::Query {
            qid: qid.into(),
            reason: format!("token id {i} is outside the model's vocabulary of {vocab} (tokenizer and model disagree)"),
        }),
        None => Ok(()),
    }
}

impl Reranker {
    /// Opens a FiT5 folder (`config.json`, `model.safetensors`, `tokenizer.json`) on `device`.
    pub fn open(dir: &std::path::Path, device: &Device) -> Result<Self> {
        let model = FiT5::open(dir, device)?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        Ok(Self { model, tokenizer, device: device.clone() })
    }

    /// The feature bins of the model.
    pub fn bins(&self) -> FeatureBins {
        self.model.config().bins
    }

    /// "true" logits of one query's candidates (at most [`MAX_CANDIDATES`]), in input order, and the count
    /// of truncated inputs.
    pub fn score(&self, qid: &str, query: &str, cands: &[Candidate], overlong: OverLong) -> Result<(Vec<f32>, usize)> {
        if cands.is_empty() {
            return Ok((Vec::new(), 0));
        }
        if cands.len() > MAX_CANDIDATES {
            return Err(Error::Query {
                qid: qid.into(),
                reason: format!("{} candidates in one list; FiT5 takes at most {MAX_CANDIDATES}", cands.len()),
            });
        }
        let cfg = self.model.config();
        let enc = encode_candidates(&self.tokenizer, query, cands, &cfg.bins, cfg.max_seq_len, overlong)
            .map_err(|e: EncodeError| Error::Query { qid: qid.into(), reason: e.to_string() })?;
        check_vocab(qid, &enc.ids, cfg.t5.vocab_size)?;
        let (ids, mask) = ids_tensor(&enc.ids, &enc.mask, &self.device);
        let z = self.model.forward(ids, mask);
        let v = z
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Query { qid: qid.into(), reason: format!("device read-back: {e:?}") })?;
        Ok((v.chunks_exact(2).map(|r| r[1]).collect(), enc.truncated))
    }

    /// Re-ranks one query: the top `depth` candidates by the model, the rest after them in first-stage
    /// order (scores strictly below the lowest re-ranked one).
    pub fn rerank_query(
        &self,
        qid: &str,
        query: &str,
        docs: &[(String, f64)],
        collection: &Collection,
        opts: &RerankOptions,
    ) -> Result<(Vec<(String, f64)>, usize)> {
        let depth = opts.depth.min(docs.len());
        let cands = candidates(qid, &docs[..depth], collection, opts.use_feature)?;
        let (scores, truncated) = self.score(qid, query, &cands, opts.overlong)?;
        let mut out: Vec<(String, f64)> =
            cands.iter().zip(&scores).map(|(c, &s)| (c.docid.clone(), f64::from(s))).collect();
        let floor = scores.iter().copied().fold(f32::INFINITY, f32::min);
        let floor = if floor.is_finite() { f64::from(floor) } else { 0.0 };
        for (i, (d, _)) in docs[depth..].iter().enumerate() {
            out.push((d.clone(), floor - 1.0 - i as f64));
        }
        Ok((out, truncated))
    }

    /// Re-ranks every query of `run`; `progress(done, total, qid)` after each.
    pub fn rerank(
        &self,
        queries: &Queries,
        collection: &Collection,
        run: &Run,
        opts: &RerankOptions,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<RerankReport> {
        if opts.depth == 0 || opts.depth > MAX_CANDIDATES {
            return Err(Error::Config {
                field: "depth".into(),
                reason: format!("{} is outside 1..={MAX_CANDIDATES}", opts.depth),
            });
        }
        let mut report = RerankReport { run: BTreeMap::new(), failures: Vec::new(), truncated: 0 };
        for (i, (qid, docs)) in run.iter().enumerate() {
            let res = match queries.get(qid) {
                None => Err(Error::Query { qid: qid.clone(), reason: "not in the queries file".into() }),
                Some(q) => self.rerank_query(qid, q, docs, collection, opts),
            };
            match res {
                Ok((ranked, t)) => {
                    report.truncated += t;
                    report.run.insert(qid.clone(), ranked);
                }
                Err(e) => report.failures.push((qid.clone(), e.to_string())),
            }
            progress(i + 1, run.len(), qid);
        }
        Ok(report)
    }
}
