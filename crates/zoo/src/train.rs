//! The training loop shared by pretraining and fine-tuning: AdamW (gradient norm clipped to 1), linear
//! warm-up then cosine decay to a tenth of the peak rate, batches drawn with a seeded generator, the
//! loss reported through a callback (the CLI draws progress from it).

use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Device;
use chorus_core::sampling::Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Sequence, batch};
use crate::error::{Error, Result};
use crate::model::ZooModel;

/// One training run's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence (longer ones are cut).
    pub seq_len: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps (linear from 0).
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Seed of the batch order.
    pub seed: u64,
}

impl TrainConfig {
    /// Learning rate at `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
    }
}

/// Trains `model` on `data` (on an autodiff device); `report(step, loss)` after every step.
pub fn train(
    mut model: ZooModel,
    data: &[Sequence],
    cfg: &TrainConfig,
    pad: u32,
    device: &Device,
    report: &mut dyn FnMut(usize, f32),
) -> Result<ZooModel> {
    if data.is_empty() || cfg.batch == 0 || cfg.seq_len < 2 {
        return Err(Error::Config {
            field: "train".into(),
            reason: format!("{} sequences, batch {}, seq_len {}", data.len(), cfg.batch, cfg.seq_len),
        });
    }
    let mut opt = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let mut rng = Rng::new(cfg.seed);
    for step in 0..cfg.steps {
        let picked: Vec<Sequence> =
            (0..cfg.batch).map(|_| data[(rng.next_u64() % data.len() as u64) as usize].clone()).collect();
        // Padding to the batch's longest sequence, not to seq_len: pads sit after every real token (causal,
        // weight 0), so the loss is the same and short fine-tuning examples cost a fraction of the time.
        let len = picked.iter().map(|s| s.ids.len()).max().unwrap_or(2).clamp(2, cfg.seq_len);
        let (ids, w) = batch(&picked, len, pad, device);
        let loss = model.loss(ids, w);
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(cfg.lr_at(step), model, grads);
        report(step, value);
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ZooConfig;

    fn run(seed: u64) -> Vec<f32> {
        let device = Device::flex().autodiff();
        device.seed(9);
        let cfg = ZooConfig {
            vocab_size: 12,
            hidden_size: 16,
            intermediate_size: 32,
            num_layers: 1,
            num_heads: 2,
            max_positions: 16,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
        };
        let m = ZooModel::new(&cfg, &device).unwrap();
        // Counting sequences: the next token is always the previous plus one.
        let data: Vec<Sequence> = (0..6)
            .map(|s| {
                let ids: Vec<u32> = (0..8).map(|i| ((s + i) % 12) as u32).collect();
                Sequence { weights: (0..8).map(|i| if i < 7 { 1.0 } else { 0.0 }).collect(), ids }
            })
            .collect();
        let tc = TrainConfig { steps: 40, batch: 4, seq_len: 8, lr: 1e-2, warmup: 5, weight_decay: 0.0, seed };
        let mut losses = Vec::new();
        train(m, &data, &tc, 0, &device, &mut |_, l| losses.push(l)).unwrap();
        losses
    }

    #[test]
    fn training_is_deterministic_and_learns_a_pattern() {
        let a = run(1);
        assert_eq!(a, run(1), "same seeds, same losses");
        let head: f32 = a[..5].iter().sum::<f32>() / 5.0;
        let tail: f32 = a[a.len() - 5..].iter().sum::<f32>() / 5.0;
        assert!(tail < 0.3 * head, "loss {head} -> {tail}");
    }

    #[test]
    fn schedule_warms_up_and_decays_to_a_tenth() {
        let tc = TrainConfig { steps: 100, batch: 1, seq_len: 2, lr: 1.0, warmup: 10, weight_decay: 0.0, seed: 0 };
        assert!((tc.lr_at(0) - 0.1).abs() < 1e-12 && (tc.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((tc.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((tc.lr_at(100) - 0.1).abs() < 1e-9);
        assert!(tc.lr_at(50) < tc.lr_at(20));
    }
}
