//! Training the two networks (spec §3.3–3.4). The autoencoder: label-smoothed reconstruction (KL to the smoothed
//! target, summed, divided by the non-pad target tokens) plus β × the in-batch content InfoNCE between the
//! latent and a second, dropout-noised encoding of the same sentences; Adam (0.9, 0.98, 1e-9) on the Noam
//! schedule. The style net: the SimSiam-style InfoNCE over frozen, detached latents with Adam. Both keep the
//! epoch with the best dev score.
//!
//! Choices where the spec is silent ([UNV] §3.3/§3.4, written down in ARCHITECTURE.md): the autoencoder's
//! positive "sim" lists are not built — its contrastive term uses `views` extra dropout encodings (the one
//! positive the reference always adds); the style net's same-style and other-style anchors are drawn at random
//! from the training split for each origin and epoch (random content, so f is pushed to encode style rather
//! than topic). Batches are length-bucketed (sorted within windows of 20 batches, then shuffled) to spend less
//! time on padding.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_core::sampling::Rng;
use serde::{Deserialize, Serialize};

use crate::ae::Autoencoder;
use crate::data::Style;
use crate::error::{Error, Result, host_f32};
use crate::siamese::{StyleNet, in_batch_contrast};
use crate::vocab::{BOS, EOS, PAD};

/// Autoencoder training settings (the reference's values unless noted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AeTrainConfig {
    /// Epochs (the reference: 1 over its larger Yelp set).
    pub epochs: usize,
    /// Sentences per update (128).
    pub batch: usize,
    /// Noam warm-up updates (2000).
    pub warmup: usize,
    /// Noam factor (1).
    pub factor: f64,
    /// Label smoothing ε (0.1).
    pub smoothing: f64,
    /// Weight β of the content contrastive loss (0.1; 0 turns it off).
    pub beta: f64,
    /// Temperature τ (0.1).
    pub tau: f64,
    /// Dropout-noised extra encodings used as positives (1).
    pub views: usize,
    /// Shuffling seed.
    pub seed: u64,
}

impl Default for AeTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch: 128,
            warmup: 2000,
            factor: 1.0,
            smoothing: 0.1,
            beta: 0.1,
            tau: 0.1,
            views: 1,
            seed: 7,
        }
    }
}

/// Style-net training settings (the reference's values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetTrainConfig {
    /// Epochs (50).
    pub epochs: usize,
    /// Origins per update (128).
    pub batch: usize,
    /// Adam learning rate (3e-3).
    pub lr: f64,
    /// Temperature τ (0.1).
    pub tau: f64,
    /// Same-style anchors per origin (10).
    pub same: usize,
    /// Other-style anchors per origin (10).
    pub other: usize,
    /// Sampling seed.
    pub seed: u64,
}

impl Default for NetTrainConfig {
    fn default() -> Self {
        Self { epochs: 50, batch: 128, lr: 3e-3, tau: 0.1, same: 10, other: 10, seed: 7 }
    }
}

/// Noam's schedule (burn's): the rate of update `s` (1-based) is
/// `factor · d^-0.5 · min(s^-0.5, s · warmup^-1.5)`; each `step()` advances one update.
pub fn noam(
    d_model: usize,
    warmup: usize,
    factor: f64,
) -> Result<burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler> {
    burn::lr_scheduler::noam::NoamLrSchedulerConfig::new(factor)
        .with_warmup_steps(warmup.max(1))
        .with_model_size(d_model.max(1))
        .init()
        .map_err(|e| Error::Input(format!("learning-rate schedule: {e}")))
}

/// Progress after each update.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Which network: "autoencoder" or "style net".
    pub stage: &'static str,
    /// 1-based epoch.
    pub epoch: usize,
    /// 1-based update.
    pub step: usize,
    /// Total updates.
    pub steps: usize,
    /// This update's loss.
    pub loss: f32,
    /// After an epoch's last update: (mean training loss, dev score).
    pub epoch_end: Option<(f64, f64)>,
}

/// One epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Dev score (autoencoder: reconstruction loss per token, lower is better; style net: accuracy).
    pub dev: f64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Training sentences.
    pub sentences: usize,
    /// Updates.
    pub steps: usize,
    /// Per epoch.
    pub epochs: Vec<EpochReport>,
    /// The epoch kept.
    pub best_epoch: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Encoder input (words, no BOS/EOS), decoder input (BOS + words) and target (words + EOS), each padded to the
/// batch's longest, as `[B, T]` id tensors; sentences longer than `max_len − 1` words are cut.
pub fn batch_ids(rows: &[&[u32]], max_len: usize, dev: &Device) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2, Int>) {
    let keep = max_len.saturating_sub(1).max(1);
    let t = rows.iter().map(|r| r.len().min(keep)).max().unwrap_or(0).max(1);
    let b = rows.len();
    let (mut src, mut tin, mut tout) = (vec![0i64; b * t], vec![0i64; b * (t + 1)], vec![0i64; b * (t + 1)]);
    for (i, r) in rows.iter().enumerate() {
        let r = &r[..r.len().min(keep)];
        tin[i * (t + 1)] = i64::from(BOS);
        for (j, &w) in r.iter().enumerate() {
            src[i * t + j] = i64::from(w);
            tin[i * (t + 1) + j + 1] = i64::from(w);
            tout[i * (t + 1) + j] = i64::from(w);
        }
        tout[i * (t + 1) + r.len()] = i64::from(EOS);
    }
    let int = |v: Vec<i64>, w: usize| Tensor::<2, Int>::from_data(TensorData::new(v, [b, w]), dev);
    (int(src, t), int(tin, t + 1), int(tout, t + 1))
}

/// The reference's label-smoothed KL loss per non-pad target token (`[B, T, V]` log-probabilities, `[B, T]`
/// targets): the target column holds 1 − ε, every other column but `PAD` ε/(V − 2); pad rows count zero.
pub fn smoothed_loss(lp: Tensor<3>, tgt: Tensor<2, Int>, eps: f64) -> Tensor<1> {
    let [b, t, v] = lp.dims();
    let conf = 1.0 - eps;
    let s = eps / (v as f64 - 2.0);
    // Σ q log q of the smoothed target: the constant that makes the value a KL divergence.
    let c = if eps > 0.0 { conf * conf.ln() + eps * s.ln() } else { 0.0 };
    let y = tgt.clone().reshape([b, t, 1]);
    let lp_y = lp.clone().gather(2, y);
    let lp_sum = lp.clone().sum_dim(2);
    let lp_pad = lp.slice([0..b, 0..t, 0..1]);
    let per = (lp_y * (conf - s) + (lp_sum - lp_pad) * s).neg() + c;
    let keep = tgt.not_equal_elem(PAD as i64).float().reshape([b, t, 1]);
    let n = keep.clone().sum().clamp_min(1.0);
    ((per * keep).sum() / n).reshape([1])
}

fn buckets(lens: &[usize], batch: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    shuffle(&mut order, rng);
    let mut out = Vec::new();
    for window in order.chunks(batch * 20) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| lens[i]);
        out.extend(w.chunks(batch).map(<[usize]>::to_vec));
    }
    shuffle(&mut out, rng);
    out
}

pub(crate) fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
}

fn check(what: &str, epochs: usize, batch: usize, n: usize, dev: &Device) -> Result<()> {
    if n == 0 {
        return Err(Error::Input(format!("{what}: no training sentences")));
    }
    if epochs == 0 || batch == 0 {
        return Err(Error::Input(format!("{what}: {epochs} epochs of batch {batch}")));
    }
    if !dev.is_autodiff() {
        return Err(Error::Input(format!("{what}: training needs an autodiff device")));
    }
    Ok(())
}

fn finite(what: &str, v: f32, step: usize) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::Input(format!("{what}: the loss became {v} at update {step}; lower the learning rate")))
    }
}

/// Reports an epoch's end and keeps the model when `better(best score so far)`.
#[allow(clippy::too_many_arguments)]
fn end_epoch<M: Clone>(
    stage: &'static str,
    (epoch, step, steps): (usize, usize, usize),
    loss: f64,
    dev: f64,
    better: impl Fn(f64) -> bool,
    model: &M,
    best: &mut Option<(f64, usize, M)>,
    epochs: &mut Vec<EpochReport>,
    progress: &mut dyn FnMut(&Progress),
) {
    progress(&Progress { stage, epoch, step, steps, loss: loss as f32, epoch_end: Some((loss, dev)) });
    epochs.push(EpochReport { epoch, loss, dev });
    if best.as_ref().is_none_or(|(b, _, _)| better(*b)) {
        *best = Some((dev, epoch, model.clone()));
    }
}

/// Mean teacher-forced reconstruction loss per token (no smoothing, no dropout) over `rows`.
pub fn reconstruction_loss(ae: &Autoencoder, rows: &[Vec<u32>], batch: usize, dev: &Device) -> f64 {
    let (mut sum, mut toks) = (0.0f64, 0.0f64);
    for chunk in rows.chunks(batch.max(1)) {
        let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        let (src, tin, tout) = batch_ids(&refs, ae.config().max_len, dev);
        let n = tout.clone().not_equal_elem(PAD as i64).float().sum().into_scalar::<f32>() as f64;
        let lp = ae.decode(ae.latent(src), tin, true);
        let l = smoothed_loss(lp, tout, 0.0).into_scalar::<f32>() as f64;
        sum += l * n;
        toks += n;
    }
    sum / toks.max(1.0)
}

/// Trains `ae` (its tensors on the autodiff `device`) on id rows; keeps the epoch with the lowest dev
/// reconstruction loss (the last one without dev rows).
pub fn train_autoencoder(
    mut ae: Autoencoder,
    train: &[Vec<u32>],
    dev_rows: &[Vec<u32>],
    cfg: &AeTrainConfig,
    device: &Device,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Autoencoder, TrainReport)> {
    check("autoencoder", cfg.epochs, cfg.batch, train.len(), device)?;
    let start = std::time::Instant::now();
    let lens: Vec<usize> = train.iter().map(Vec::len).collect();
    let mut rng = Rng::new(cfg.seed);
    let per_epoch = train.len().div_ceil(cfg.batch);
    let total = per_epoch * cfg.epochs;
    let mut opt = AdamConfig::new().with_beta_1(0.9).with_beta_2(0.98).with_epsilon(1e-9).init();
    let (d, max_len) = (ae.config().d_model, ae.config().max_len);
    let mut best: Option<(f64, usize, Autoencoder)> = None;
    let mut epochs = Vec::new();
    let mut step = 0;
    let mut schedule = noam(d, cfg.warmup, cfg.factor)?;
    for epoch in 1..=cfg.epochs {
        let mut sum = 0.0;
        for idx in buckets(&lens, cfg.batch, &mut rng) {
            step += 1;
            let refs: Vec<&[u32]> = idx.iter().map(|&i| train[i].as_slice()).collect();
            let (src, tin, tout) = batch_ids(&refs, max_len, device);
            let z = ae.latent(src.clone());
            let mut loss = smoothed_loss(ae.decode(z.clone(), tin, true), tout, cfg.smoothing);
            if cfg.beta > 0.0 && cfg.views > 0 && idx.len() > 1 {
                let mut c = Tensor::<1>::zeros([1], device);
                for _ in 0..cfg.views {
                    c = c + in_batch_contrast(z.clone(), ae.latent(src.clone()), cfg.tau);
                }
                loss = loss + c * (cfg.beta / cfg.views as f64);
            }
            let value = loss.clone().into_scalar::<f32>();
            finite("autoencoder", value, step)?;
            let grads = GradientsParams::from_grads(loss.backward(), &ae);
            ae = opt.step(schedule.step().base(), ae, grads);
            sum += f64::from(value);
            progress(&Progress { stage: "autoencoder", epoch, step, steps: total, loss: value, epoch_end: None });
        }
        let mean = sum / per_epoch as f64;
        let dev_loss = if dev_rows.is_empty() {
            mean
        } else {
            reconstruction_loss(&ae.valid(), dev_rows, cfg.batch, &device.clone().inner())
        };
        let better = |b: f64| dev_loss < b || dev_rows.is_empty();
        end_epoch("autoencoder", (epoch, step, total), mean, dev_loss, better, &ae, &mut best, &mut epochs, progress);
    }
    let (_, best_epoch, ae) = best.ok_or_else(|| Error::Input("autoencoder: no epoch ran".into()))?;
    let seconds = start.elapsed().as_secs_f64();
    Ok((ae, TrainReport { sentences: train.len(), steps: total, epochs, best_epoch, seconds }))
}

/// Latents `[N, d]` of id rows through an autoencoder in inference mode, in batches.
pub fn latents(ae: &Autoencoder, rows: &[Vec<u32>], batch: usize, dev: &Device) -> Tensor<2> {
    let parts: Vec<Tensor<2>> = rows
        .chunks(batch.max(1))
        .map(|chunk| {
            let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            ae.latent(batch_ids(&refs, ae.config().max_len, dev).0)
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// Indices of `k` random rows of style `want` (not `not`), drawn with replacement when there are too few.
pub(crate) fn draw(by_style: &[Vec<usize>; 2], want: Style, not: Option<usize>, k: usize, rng: &mut Rng) -> Vec<usize> {
    let pool = &by_style[want.label()];
    (0..k)
        .map(|_| {
            loop {
                let i = pool[(rng.next_u64() % pool.len() as u64) as usize];
                if Some(i) != not || pool.len() == 1 {
                    break i;
                }
            }
        })
        .collect()
}

fn gather(lat: &Tensor<2>, idx: &[usize], dev: &Device) -> Tensor<2> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    lat.clone().select(0, Tensor::<1, Int>::from_data(TensorData::new(v, [idx.len()]), dev))
}

/// Style accuracy of the net on latents: a row is right when its mean cosine to `k` random anchors of its own
/// style beats the mean to `k` of the other style (anchors from `pool`).
pub fn net_accuracy(
    net: &StyleNet,
    lat: &Tensor<2>,
    styles: &[Style],
    pool: (&Tensor<2>, &[Style]),
    k: usize,
    seed: u64,
) -> Result<f64> {
    let dev = lat.device();
    let by_style = split_styles(pool.1);
    if by_style.iter().any(Vec::is_empty) || styles.is_empty() {
        return Ok(0.0);
    }
    let mut rng = Rng::new(seed);
    let d = lat.dims()[1];
    let mut right = 0usize;
    for (c, chunk) in styles.chunks(256).enumerate() {
        let rows: Vec<usize> = (c * 256..c * 256 + chunk.len()).collect();
        let z = gather(lat, &rows, &dev);
        let b = rows.len();
        let own: Vec<usize> = chunk.iter().flat_map(|s| draw(&by_style, *s, None, k, &mut rng)).collect();
        let oth: Vec<usize> = chunk.iter().flat_map(|s| draw(&by_style, s.other(), None, k, &mut rng)).collect();
        let (sp, sn) = net.scores(
            z,
            gather(pool.0, &own, &dev).reshape([b, k, d]),
            gather(pool.0, &oth, &dev).reshape([b, k, d]),
            true,
        );
        let margin = (sp.mean_dim(1) - sn.mean_dim(1)).reshape([b]);
        right += host_f32(margin)?.iter().filter(|&&x| x > 0.0).count();
    }
    Ok(right as f64 / styles.len() as f64)
}

fn split_styles(styles: &[Style]) -> [Vec<usize>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for (i, s) in styles.iter().enumerate() {
        out[s.label()].push(i);
    }
    out
}

/// Trains the style net on latents of the training sentences (computed once by the frozen autoencoder);
/// keeps the epoch with the best dev accuracy ([`net_accuracy`] with 10 anchors).
#[allow(clippy::too_many_arguments)]
pub fn train_style_net(
    mut net: StyleNet,
    ae: &Autoencoder,
    train: (&[Vec<u32>], &[Style]),
    dev_set: (&[Vec<u32>], &[Style]),
    cfg: &NetTrainConfig,
    device: &Device,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(StyleNet, TrainReport)> {
    check("style net", cfg.epochs, cfg.batch, train.0.len(), device)?;
    let by_style = split_styles(train.1);
    if by_style.iter().any(Vec::is_empty) {
        return Err(Error::Input("style net: the training sentences must hold both styles".into()));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) || cfg.same == 0 || cfg.other == 0 {
        return Err(Error::Input(format!(
            "style net: lr {} with {} same / {} other anchors",
            cfg.lr, cfg.same, cfg.other
        )));
    }
    let start = std::time::Instant::now();
    let plain = device.clone().inner();
    let frozen = ae.valid();
    let lat = latents(&frozen, train.0, 256, &plain).autodiff();
    let dev_lat = (!dev_set.0.is_empty()).then(|| latents(&frozen, dev_set.0, 256, &plain));
    let d = lat.dims()[1];
    let mut rng = Rng::new(cfg.seed);
    let per_epoch = train.0.len().div_ceil(cfg.batch);
    let total = per_epoch * cfg.epochs;
    let mut opt = AdamConfig::new().init();
    let mut best: Option<(f64, usize, StyleNet)> = None;
    let mut epochs = Vec::new();
    let mut order: Vec<usize> = (0..train.0.len()).collect();
    let mut step = 0;
    for epoch in 1..=cfg.epochs {
        shuffle(&mut order, &mut rng);
        let mut sum = 0.0;
        for chunk in order.chunks(cfg.batch) {
            if chunk.len() < 2 {
                continue; // BatchNorm needs two rows in training.
            }
            step += 1;
            let b = chunk.len();
            let same: Vec<usize> =
                chunk.iter().flat_map(|&i| draw(&by_style, train.1[i], Some(i), cfg.same, &mut rng)).collect();
            let other: Vec<usize> =
                chunk.iter().flat_map(|&i| draw(&by_style, train.1[i].other(), None, cfg.other, &mut rng)).collect();
            let loss = net.loss(
                gather(&lat, chunk, device),
                gather(&lat, &same, device).reshape([b, cfg.same, d]),
                gather(&lat, &other, device).reshape([b, cfg.other, d]),
                cfg.tau,
            );
            let value = loss.clone().into_scalar::<f32>();
            finite("style net", value, step)?;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = opt.step(cfg.lr, net, grads);
            sum += f64::from(value);
            progress(&Progress { stage: "style net", epoch, step, steps: total, loss: value, epoch_end: None });
        }
        let mean = sum / per_epoch as f64;
        let acc = match &dev_lat {
            Some(dl) => net_accuracy(&net.valid(), dl, dev_set.1, (&lat.clone().inner(), train.1), 10, cfg.seed)?,
            None => 0.0,
        };
        let better = |b: f64| acc > b || dev_lat.is_none();
        end_epoch("style net", (epoch, step, total), mean, acc, better, &net, &mut best, &mut epochs, progress);
    }
    let (_, best_epoch, net) = best.ok_or_else(|| Error::Input("style net: no epoch ran".into()))?;
    let seconds = start.elapsed().as_secs_f64();
    Ok((net, TrainReport { sentences: train.0.len(), steps: total, epochs, best_epoch, seconds }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noam_matches_its_closed_form() {
        let d = 256usize;
        let f = |s: f64| 256f64.powf(-0.5) * s.powf(-0.5).min(s * 2000f64.powf(-1.5));
        let mut sched = noam(d, 2000, 1.0).unwrap();
        let lrs: Vec<f64> = (1..=4000).map(|_| sched.step().base()).collect();
        for s in [1usize, 1000, 2000, 4000] {
            assert!((lrs[s - 1] - f(s as f64)).abs() < 1e-15, "step {s}");
        }
        assert!(lrs[1999] > lrs[999] && lrs[1999] > lrs[3999], "peaks at the end of warm-up");
    }

    #[test]
    fn smoothed_loss_matches_a_hand_computation() {
        let dev = Device::flex();
        // V = 4 with uniform log-probabilities: every token's KL is Σ q log q − Σ q log(1/4).
        let lp = Tensor::<3>::full([1, 2, 4], (0.25f32).ln(), &dev);
        let tgt = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 0], [1, 2]), &dev);
        let eps = 0.1f64;
        let s = eps / 2.0;
        let want = (0.9 * 0.9f64.ln() + eps * s.ln()) - (0.9 + 2.0 * s) * 0.25f64.ln();
        let got = f64::from(smoothed_loss(lp, tgt, eps).into_scalar::<f32>());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn batches_hold_bos_eos_and_cut_long_rows() {
        let dev = Device::flex();
        let rows: Vec<&[u32]> = vec![&[5, 6, 7], &[8]];
        let (s, i, o) = batch_ids(&rows, 3, &dev);
        let v = |t: Tensor<2, Int>| t.into_data().convert::<i64>().try_into_vec::<i64>().unwrap();
        assert_eq!(v(s), [5, 6, 8, 0]);
        assert_eq!(v(i), [2, 5, 6, 2, 8, 0]);
        assert_eq!(v(o), [5, 6, 3, 8, 3, 0]);
    }
}
