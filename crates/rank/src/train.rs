//! FiT5 training as the reference does it: per query one list of the qrels positive plus the first
//! negatives of the first-stage run in rank order, a two-way cross-entropy on the ("false", "true")
//! logits of every candidate averaged over the list, AdamW with the gradient norm clipped to 1, linear
//! warm-up then linear decay to 0. The two-stage recipe is two calls: stage 1 without the score feature,
//! stage 2 from its result with it (`chorus rerank train --stage1-steps N --steps M`).
//!
//! Runs on any autodiff device (Flex CPU or wgpu). Deviations from the reference, chosen for determinism
//! and written down in ARCHITECTURE.md: no dropout; the first step already uses lr/warmup (transformers'
//! scheduler starts at 0); lists are drawn with a seeded generator instead of a shuffled data loader.

use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_core::sampling::Rng;
use chorus_models::fit5::{Candidate, FeatureBins, FiT5, MAX_CANDIDATES, OverLong, encode_candidates};
use chorus_models::t5::ids_tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rerank::candidates;
use crate::trec::{Collection, Qrels, Queries, Run};

/// One training list: a query, its candidates and their 0/1 labels.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainList {
    /// Query id.
    pub qid: String,
    /// Query text.
    pub query: String,
    /// Candidates (the positive first).
    pub cands: Vec<Candidate>,
    /// 1 for the positive, 0 for the negatives.
    pub labels: Vec<i64>,
}

/// Builds the reference's training lists: for each query with a judged-relevant document in its run, that
/// document (the best-ranked one, qrels collapsed to one positive) and the first `list_size − 1`
/// non-relevant documents in rank order. Returns the lists and the ids of the queries left out (no text,
/// no positive in the run, or a document missing from the collection), with the reason.
pub fn training_lists(
    queries: &Queries,
    collection: &Collection,
    run: &Run,
    qrels: &Qrels,
    list_size: usize,
    use_feature: bool,
) -> (Vec<TrainList>, Vec<(String, String)>) {
    let (mut lists, mut skipped) = (Vec::new(), Vec::new());
    for (qid, docs) in run {
        let Some(query) = queries.get(qid) else {
            skipped.push((qid.clone(), "not in the queries file".into()));
            continue;
        };
        let rel = qrels.get(qid);
        let is_rel = |d: &str| rel.and_then(|r| r.get(d)).is_some_and(|&g| g >= 1);
        let Some(pos) = docs.iter().find(|(d, _)| is_rel(d)) else {
            skipped.push((qid.clone(), "no judged-relevant document in the run".into()));
            continue;
        };
        let mut picked = vec![pos.clone()];
        picked.extend(docs.iter().filter(|(d, _)| !is_rel(d)).take(list_size.saturating_sub(1)).cloned());
        match candidates(qid, &picked, collection, use_feature) {
            Ok(cands) => {
                let labels = (0..cands.len()).map(|i| i64::from(i == 0)).collect();
                lists.push(TrainList { qid: qid.clone(), query: query.clone(), cands, labels });
            }
            Err(e) => skipped.push((qid.clone(), e.to_string())),
        }
    }
    (lists, skipped)
}

/// One training run's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate (reference: 2e-5 for t5-base).
    pub lr: f64,
    /// Linear warm-up steps (reference: 4000 in stage 1, 1000 in stage 2).
    pub warmup: usize,
    /// AdamW weight decay (torch's default 0.01).
    pub weight_decay: f32,
    /// Query lists averaged per update (reference: 16 in stage 1, 256 in stage 2).
    pub lists_per_step: usize,
    /// Seed of the list order.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { steps: 1500, lr: 2e-5, warmup: 1000, weight_decay: 0.01, lists_per_step: 16, seed: 7 }
    }
}

impl TrainConfig {
    /// Learning rate of step `s` (0-based): linear warm-up to `lr`, then linear decay to 0 at `steps`.
    pub fn lr_at(&self, s: usize) -> f64 {
        if s < self.warmup {
            return self.lr * (s + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        self.lr * ((self.steps - s.min(self.steps)) as f64 / span).max(0.0)
    }
}

/// What a training run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Loss of every step (mean over the step's lists).
    pub losses: Vec<f32>,
    /// Candidates whose input was shortened.
    pub truncated: usize,
}

struct Encoded {
    ids: Tensor<2, Int>,
    mask: Tensor<2>,
    labels: Tensor<1, Int>,
}

/// Trains `model` (its tensors on the autodiff `device`) on `lists`; `report(step, loss)` after each step.
pub fn train(
    mut model: FiT5,
    tokenizer: &tokenizers::Tokenizer,
    lists: &[TrainList],
    cfg: &TrainConfig,
    overlong: OverLong,
    device: &Device,
    report: &mut dyn FnMut(usize, f32),
) -> Result<(FiT5, TrainReport)> {
    if lists.is_empty() {
        return Err(Error::Config {
            field: "training data".into(),
            reason: "no query has a judged-relevant document in its run".into(),
        });
    }
    if cfg.steps == 0 || cfg.lists_per_step == 0 {
        return Err(Error::Config {
            field: "steps".into(),
            reason: format!("{} steps of {} lists", cfg.steps, cfg.lists_per_step),
        });
    }
    if !device.is_autodiff() {
        return Err(Error::Config { field: "device".into(), reason: "training needs an autodiff device".into() });
    }
    let mcfg = model.config().clone();
    let bins: FeatureBins = mcfg.bins;
    let mut out = TrainReport::default();
    // Tokenize once: the lists do not change between steps.
    let mut encoded = Vec::with_capacity(lists.len());
    for l in lists {
        if l.cands.len() > MAX_CANDIDATES {
            return Err(Error::Query {
                qid: l.qid.clone(),
                reason: format!("{} candidates > {MAX_CANDIDATES}", l.cands.len()),
            });
        }
        let e = encode_candidates(tokenizer, &l.query, &l.cands, &bins, mcfg.max_seq_len, overlong)
            .map_err(|e| Error::Query { qid: l.qid.clone(), reason: e.to_string() })?;
        crate::rerank::check_vocab(&l.qid, &e.ids, mcfg.t5.vocab_size)?;
        out.truncated += e.truncated;
        let (ids, mask) = ids_tensor(&e.ids, &e.mask, device);
        let n = l.labels.len();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(l.labels.clone(), [n]), device);
        encoded.push(Encoded { ids, mask, labels });
    }
    let mut opt = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let mut rng = Rng::new(cfg.seed);
    for step in 0..cfg.steps {
        let mut total: Option<Tensor<1>> = None;
        for _ in 0..cfg.lists_per_step {
            let e = &encoded[(rng.next_u64() % encoded.len() as u64) as usize];
            let l = model.loss(e.ids.clone(), e.mask.clone(), e.labels.clone());
            total = Some(match total {
                Some(t) => t + l,
                None => l,
            });
        }
        let Some(total) = total else { break };
        let loss = total / cfg.lists_per_step as f64;
        let value = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(Error::Config {
                field: "lr".into(),
                reason: format!("the loss became {value} at step {} (learning rate {})", step + 1, cfg.lr_at(step)),
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(cfg.lr_at(step), model, grads);
        out.losses.push(value);
        report(step, value);
    }
    Ok((model, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_linearly_to_zero() {
        let c = TrainConfig { steps: 100, lr: 1.0, warmup: 10, ..TrainConfig::default() };
        assert!((c.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(55) - 0.5).abs() < 1e-12);
        assert_eq!(c.lr_at(100), 0.0);
    }
}
