//! Prompt-tuning MVRE (spec §1.8): every weight of the masked LM (embedding rows included) is trained, the
//! gates are not; AdamW with eps 1e-8 and weight decay 0.01 on matrices only (the reference exempts names with
//! `bias` or `LayerNorm.weight`, which in BERT/RoBERTa are exactly the 1-D parameters); a linear warm-up over
//! the first epoch's steps from 0, then a linear decay to 0 at the last step (transformers'
//! `get_linear_schedule_with_warmup`, stepped after each update as Lightning does); loss CE(S) + λ·L_GL per
//! batch of shuffled examples; the best epoch by dev micro-F1 is kept (dev is not scored after the first
//! epoch, as the reference's trainer skips it). fp16 is not used: training runs in f32.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_core::sampling::Rng;
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::error::{Error, Result};
use crate::extractor::{Encoded, Evaluation, Extractor, Meta, batch_tensors, predict_with, score};
use crate::model::{ClassLoss, Mvre};

/// Training settings (the reference's values by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs (SemEval 40, TACRED 20).
    pub epochs: usize,
    /// Examples per update.
    pub batch: usize,
    /// Peak learning rate (3e-5 for RoBERTa-large).
    pub lr: f64,
    /// Warm-up epochs (1).
    pub warmup_epochs: usize,
    /// AdamW weight decay on matrices (0.01).
    pub weight_decay: f64,
    /// λ of the Global-Local loss (2.0; 0 turns it off).
    pub lambda: f64,
    /// β of its global term (0.1).
    pub beta: f64,
    /// How the classification loss reads S.
    pub class_loss: ClassLoss,
    /// Shuffling seed (7).
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            batch: 8,
            lr: 3e-5,
            warmup_epochs: 1,
            weight_decay: 0.01,
            lambda: 2.0,
            beta: 0.1,
            class_loss: ClassLoss::CeOnMixture,
            seed: 7,
        }
    }
}

/// The learning rate of update `step` (0-based) out of `total` with `warmup` warm-up updates.
pub fn lr_at(lr: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return lr * step as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    lr * (total.saturating_sub(step) as f64 / span).max(0.0)
}

/// One epoch of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Dev scores after the epoch (when dev is given and scored).
    pub dev: Option<Evaluation>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Training examples.
    pub examples: usize,
    /// Updates.
    pub steps: usize,
    /// Per epoch.
    pub epochs: Vec<EpochReport>,
    /// The epoch whose weights were kept (the last one without dev).
    pub best_epoch: usize,
    /// Prompts cut to `max_len`.
    pub truncated: usize,
}

/// Progress after each update.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// 1-based epoch.
    pub epoch: usize,
    /// 1-based update.
    pub step: usize,
    /// Total updates.
    pub steps: usize,
    /// This update's loss.
    pub loss: f32,
    /// Set once per epoch, after its last update: the epoch's mean loss.
    pub epoch_loss: Option<f64>,
    /// Dev micro-F1 when the epoch ended with a dev score.
    pub dev_f1: Option<f64>,
}

#[derive(Default)]
struct Groups {
    matrices: Vec<ParamId>,
    vectors: Vec<ParamId>,
}

impl ModuleVisitor for Groups {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if D >= 2 { self.matrices.push(p.id) } else { self.vectors.push(p.id) }
    }
}

fn encode_set(ex: &Extractor, data: &[Example], what: &str) -> Result<(Vec<Encoded>, Vec<usize>)> {
    let labels = ex.meta.relations.ids(data)?;
    Ok((ex.encode_set(data, what)?, labels))
}

fn dev_score(model: &Mvre, meta: &Meta, enc: &[Encoded], gold: &[usize], batch: usize) -> Result<Evaluation> {
    let refs: Vec<&Encoded> = enc.iter().collect();
    let names = vec![String::new(); enc.len()];
    let preds = predict_with(&model.valid(), meta, &refs, &names, batch)?;
    let pred: Vec<usize> = preds.iter().map(|p| p.index).collect();
    Ok(score(&pred, gold, meta.relations.na))
}

/// Trains the extractor's model (its tensors on the autodiff `device`) on `train`, keeping the epoch with the
/// best micro-F1 on `dev` when given. Every example is encoded first: one that cannot be is an error naming it.
pub fn train(
    mut ex: Extractor,
    train: &[Example],
    dev: Option<&[Example]>,
    cfg: &TrainConfig,
    device: &Device,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Extractor, TrainReport)> {
    if train.is_empty() {
        return Err(Error::config("training data", "no examples"));
    }
    if cfg.epochs == 0 || cfg.batch == 0 {
        return Err(Error::config("epochs/batch", format!("{} epochs of batch {}", cfg.epochs, cfg.batch)));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(Error::config("lr", format!("{}: must be a positive number", cfg.lr)));
    }
    if !device.is_autodiff() {
        return Err(Error::config("device", "training needs an autodiff device"));
    }
    let (enc, labels) = encode_set(&ex, train, "training set")?;
    let dev_set = dev.map(|d| encode_set(&ex, d, "dev set")).transpose()?;
    let truncated = enc.iter().filter(|e| e.truncated).count();
    let per_epoch = enc.len().div_ceil(cfg.batch);
    let total = per_epoch * cfg.epochs;
    let warmup = per_epoch * cfg.warmup_epochs;
    let mut groups = Groups::default();
    ex.model.visit(&mut groups);
    let mut opt_m = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(cfg.weight_decay as f32).init();
    let mut opt_v = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.0).init();
    let mut rng = Rng::new(cfg.seed);
    let mut order: Vec<usize> = (0..enc.len()).collect();
    let mut model = ex.model;
    let mut best: Option<(f64, usize, Mvre)> = None;
    let mut epochs = Vec::with_capacity(cfg.epochs);
    let mut step = 0usize;
    for epoch in 1..=cfg.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut sum = 0.0f64;
        for chunk in order.chunks(cfg.batch) {
            let items: Vec<&Encoded> = chunk.iter().map(|&i| &enc[i]).collect();
            let (ids, pos, mask, mp) = batch_tensors(model.bert(), &items, device);
            let y: Vec<i64> = chunk.iter().map(|&i| labels[i] as i64).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [chunk.len()]), device);
            let (s, _) = model.forward(ids, pos, mask, &mp);
            let loss = model.loss(s, y, cfg.class_loss, cfg.lambda, cfg.beta);
            let value = loss.clone().into_scalar::<f32>();
            if !value.is_finite() {
                return Err(Error::config(
                    "lr",
                    format!(
                        "the loss became {value} at update {} (learning rate {})",
                        step + 1,
                        lr_at(cfg.lr, step, warmup, total)
                    ),
                ));
            }
            let mut grads = loss.backward();
            let gm = GradientsParams::from_params(&mut grads, &model, &groups.matrices);
            let gv = GradientsParams::from_params(&mut grads, &model, &groups.vectors);
            let lr = lr_at(cfg.lr, step, warmup, total);
            model = opt_m.step(lr, model, gm);
            model = opt_v.step(lr, model, gv);
            step += 1;
            sum += f64::from(value);
            progress(&Progress { epoch, step, steps: total, loss: value, epoch_loss: None, dev_f1: None });
        }
        let scored = dev_set.as_ref().filter(|_| epoch > 1 || cfg.epochs == 1);
        let dev_eval = scored.map(|(e, g)| dev_score(&model, &ex.meta, e, g, cfg.batch)).transpose()?;
        let mean = sum / per_epoch as f64;
        progress(&Progress {
            epoch,
            step,
            steps: total,
            loss: mean as f32,
            epoch_loss: Some(mean),
            dev_f1: dev_eval.as_ref().map(|d| d.f1),
        });
        if let Some(d) = &dev_eval
            && best.as_ref().is_none_or(|(f, _, _)| d.f1 > *f)
        {
            best = Some((d.f1, epoch, model.clone()));
        }
        epochs.push(EpochReport { epoch, loss: mean, dev: dev_eval });
    }
    let (best_epoch, model) = match best {
        Some((_, e, m)) => (e, m),
        None => (cfg.epochs, model),
    };
    ex.model = model;
    let report = TrainReport { examples: enc.len(), steps: total, epochs, best_epoch, truncated };
    Ok((ex, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_from_zero_then_decays_to_zero() {
        assert_eq!(lr_at(1.0, 0, 10, 100), 0.0);
        assert!((lr_at(1.0, 5, 10, 100) - 0.5).abs() < 1e-12);
        assert!((lr_at(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert_eq!(lr_at(1.0, 100, 10, 100), 0.0);
        assert!((lr_at(1.0, 0, 0, 4) - 1.0).abs() < 1e-12, "no warm-up");
    }
}
