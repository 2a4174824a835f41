//! The per-tensor merge arithmetic, with mergekit 0.1.5's semantics (`linear_merge`,
//! `GeneralizedTaskArithmeticMerge`, `sparsify.magnitude`/`bernoulli`, `get_mask(method="sum")`), in f32
//! and in mergekit's operation order so f32 results agree to rounding.
//!
//! Choices where mergekit leaves it to torch (recorded in ARCHITECTURE.md):
//! - Magnitude pruning breaks ties in |δ| by position (lower index kept first); torch's unstable
//!   `argsort` leaves them unspecified.
//! - DARE's keep masks come from a [`Masks`] source: [`SeededMasks`] (Chorus's own RNG, seeded per
//!   model and tensor, so a merge is reproducible and independent of tensor order) or [`ExplicitMasks`]
//!   (masks recorded from mergekit, for the parity test). torch's Bernoulli stream cannot be reproduced.
//! - Arithmetic is always f32 (mergekit computes task-arithmetic methods in the input dtype, e.g. bf16);
//!   inputs are first rounded to the configured `dtype`, outputs rounded to `out_dtype` when written.

use std::collections::HashMap;

use chorus_core::sampling::Rng;

use crate::config::{MergeConfig, Method, Sparsify};
use crate::error::{Error, Result};

/// Source of DARE's keep masks.
pub trait Masks {
    /// The keep mask of model `model`'s delta of `tensor` (`n` entries, each kept with probability
    /// `density`).
    fn mask(&mut self, model: usize, tensor: &str, n: usize, density: f64) -> Result<Vec<bool>>;
}

/// Masks from Chorus's RNG: entry j of model i's delta of a tensor is kept when the j-th uniform draw of
/// the stream seeded by (seed, i, tensor name) is below the density.
#[derive(Debug, Clone, Copy)]
pub struct SeededMasks {
    /// The run's seed (`chorus merge --seed`; mergekit's `--random-seed` has no equivalent stream).
    pub seed: u64,
}

impl Masks for SeededMasks {
    fn mask(&mut self, model: usize, tensor: &str, n: usize, density: f64) -> Result<Vec<bool>> {
        // FNV-1a of the name: a tensor's stream depends on its name, not on where it sits in the files.
        let mut rng = Rng::new(
            self.seed ^ chorus_core::hash::fnv1a_str(tensor) ^ (model as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        Ok((0..n).map(|_| rng.next_f64() < density).collect())
    }
}

/// Masks given in advance, by (model index, tensor name).
#[derive(Debug, Clone, Default)]
pub struct ExplicitMasks {
    /// The masks.
    pub masks: HashMap<(usize, String), Vec<bool>>,
}

impl Masks for ExplicitMasks {
    fn mask(&mut self, model: usize, tensor: &str, n: usize, _density: f64) -> Result<Vec<bool>> {
        let m = self.masks.get(&(model, tensor.to_string())).ok_or_else(|| Error::Input {
            model: format!("model {model}"),
            tensor: tensor.into(),
            reason: "no explicit DARE mask given for this tensor".into(),
        })?;
        if m.len() != n {
            return Err(Error::Input {
                model: format!("model {model}"),
                tensor: tensor.into(),
                reason: format!("explicit mask has {} entries, the tensor {n}", m.len()),
            });
        }
        Ok(m.clone())
    }
}

/// Merges one tensor. `inputs` are the mixed models' values (config order, base excluded), `base` the
/// base's (required for every method but linear); all already rounded to the config's `dtype`. The input
/// buffers are consumed and reused (deltas are formed in place, the result is written into the first), so a
/// merge holds T + 1 copies of a tensor, not 2T + 2.
pub fn merge_tensor(
    cfg: &MergeConfig,
    tensor: &str,
    base: Option<&[f32]>,
    mut inputs: Vec<Vec<f32>>,
    masks: &mut dyn Masks,
) -> Result<Vec<f32>> {
    let n = inputs.first().map_or(0, Vec::len);
    let weights: Vec<f32> = cfg.models.iter().map(|m| m.weight as f32).collect();
    if inputs.is_empty() || inputs.len() != weights.len() || inputs.iter().any(|x| x.len() != n) {
        return Err(Error::Input {
            model: "*".into(),
            tensor: tensor.into(),
            reason: format!("{} inputs for {} models, or unequal lengths", inputs.len(), weights.len()),
        });
    }
    if cfg.method == Method::Linear {
        // mergekit: result = 0; result += x_i · w_i in order; / Σ w. 0 + a = a, so start from x_0 · w_0.
        let d: f32 = if cfg.normalize { weights.iter().sum() } else { 1.0 };
        let (first, rest) = inputs.split_at_mut(1);
        par_chunks(&mut first[0], |j0, out| {
            for (k, o) in out.iter_mut().enumerate() {
                let mut acc = *o * weights[0];
                for (x, &w) in rest.iter().zip(&weights[1..]) {
                    acc += x[j0 + k] * w;
                }
                *o = if cfg.normalize { acc / d } else { acc };
            }
        });
        inputs.truncate(1);
        return Ok(inputs.pop().unwrap_or_default());
    }
    let base = base.filter(|b| b.len() == n).ok_or_else(|| Error::Input {
        model: "base_model".into(),
        tensor: tensor.into(),
        reason: format!("{} needs the base's tensor, of the models' length", cfg.method.name()),
    })?;
    // Deltas, sparsified and weighted. Each model's is independent: one thread per model, except for
    // random masks, whose source is a `&mut` stream.
    let prepare = |i: usize, d: &mut Vec<f32>, keep: Option<Vec<bool>>| {
        d.iter_mut().zip(base).for_each(|(a, b)| *a -= b);
        let keep = match cfg.method.sparsify() {
            Sparsify::Magnitude => Some(magnitude_mask(d, cfg.models[i].density)),
            _ => keep,
        };
        if let Some(keep) = keep {
            mask_in_place(d, &keep, cfg.rescale);
        }
        let w = weights[i];
        d.iter_mut().for_each(|v| *v *= w);
    };
    if matches!(cfg.method.sparsify(), Sparsify::Random) {
        for (i, d) in inputs.iter_mut().enumerate() {
            let density = cfg.models[i].density;
            let keep = if density < 1.0 { Some(masks.mask(i, tensor, n, density)?) } else { None };
            prepare(i, d, keep);
        }
    } else {
        std::thread::scope(|s| {
            for (i, d) in inputs.iter_mut().enumerate() {
                let prepare = &prepare;
                s.spawn(move || prepare(i, d, None));
            }
        });
    }
    let consensus = cfg.method.consensus();
    let (first, rest) = inputs.split_at_mut(1);
    par_chunks(&mut first[0], |j0, out| {
        for (k, o) in out.iter_mut().enumerate() {
            let j = j0 + k;
            let d0 = *o;
            let delta = |i: usize| if i == 0 { d0 } else { rest[i - 1][j] };
            let (mut mixed, mut divisor) = (0.0f32, 0.0f32);
            if consensus {
                let sum: f32 = (0..weights.len()).map(delta).sum();
                let majority = if sum >= 0.0 { 1.0 } else { -1.0 };
                for (i, &w) in weights.iter().enumerate() {
                    if sign(delta(i)) == majority {
                        mixed += delta(i);
                        divisor += w;
                    }
                }
                if divisor == 0.0 {
                    divisor = 1.0;
                }
            } else {
                for (i, &w) in weights.iter().enumerate() {
                    mixed += delta(i);
                    divisor += w;
                }
                if divisor.abs() < 1e-8 {
                    divisor = 1.0;
                }
            }
            if cfg.normalize {
                mixed /= divisor;
            }
            if cfg.lambda != 1.0 {
                mixed *= cfg.lambda as f32;
            }
            // Every delta at j has been read: the first buffer can hold the result.
            *o = base[j] + mixed;
        }
    });
    inputs.truncate(1);
    Ok(inputs.pop().unwrap_or_default())
}

/// Runs `f(first index, chunk)` over `out` split into one contiguous chunk per available core (small
/// tensors stay on the calling thread). Each element's result depends only on its own index, so the
/// result does not depend on the split.
fn par_chunks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let chunk = out.len().div_ceil(threads).max(1 << 16);
    if out.len() <= chunk {
        f(0, out);
        return;
    }
    std::thread::scope(|s| {
        for (c, part) in out.chunks_mut(chunk).enumerate() {
            let f = &f;
            s.spawn(move || f(c * chunk, part));
        }
    });
}

/// torch's `sign`: 0 for 0.
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The ⌊density·n⌋ (at least one) largest |x|, ties by position (what a stable descending sort keeps);
/// all for density ≥ 1, none for ≤ 0. Linear time through a selection, one f32 copy of memory.
pub fn magnitude_mask(x: &[f32], density: f64) -> Vec<bool> {
    let n = x.len();
    if density >= 1.0 {
        return vec![true; n];
    }
    if density <= 0.0 || n == 0 {
        return vec![false; n];
    }
    let k = ((density * n as f64) as usize).clamp(1, n);
    let mut mags: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    // The k-th largest magnitude: everything above it is kept, then equal ones in index order.
    let (_, &mut t, _) = mags.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
    drop(mags);
    let above = x.iter().filter(|v| v.abs().total_cmp(&t).is_gt()).count();
    let mut ties_left = k - above;
    x.iter()
        .map(|v| match v.abs().total_cmp(&t) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal if ties_left > 0 => {
                ties_left -= 1;
                true
            }
            _ => false,
        })
        .collect()
}

/// x·mask in place, and with `rescale` scaled so its L1 norm matches x's (mergekit's `RescaleNorm.l1`,
/// skipped when either norm is below 1e-7).
fn mask_in_place(x: &mut [f32], keep: &[bool], rescale: bool) {
    let before: f32 = if rescale { x.iter().map(|v| v.abs()).sum() } else { 0.0 };
    x.iter_mut().zip(keep).for_each(|(v, &k)| {
        if !k {
            *v = 0.0;
        }
    });
    if !rescale {
        return;
    }
    let after: f32 = x.iter().map(|v| v.abs()).sum();
    if before < 1e-7 || after < 1e-7 {
        return;
    }
    let s = before / after;
    x.iter_mut().for_each(|v| *v *= s);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn cfg(y: &str) -> MergeConfig {
        MergeConfig::from_yaml(y, Path::new("t.yml"), Path::new("/")).unwrap()
    }

    /// Tensors large enough to be split across threads merge exactly as the same values do in small,
    /// single-threaded pieces (per-element methods; TIES at density 1 so no global pruning applies).
    #[test]
    fn threaded_merges_equal_piecewise_ones() {
        let n = 300_001;
        let mut rng = chorus_core::sampling::Rng::new(3);
        let mut vals = |k: usize| -> Vec<Vec<f32>> {
            (0..k).map(|_| (0..n).map(|_| (rng.next_f64() - 0.5) as f32).collect()).collect()
        };
        let (base, xs) = (vals(1).remove(0), vals(3));
        let models = "models: [{model: a, parameters: {weight: 1, density: 1}}, {model: b, parameters: {weight: 0.5, density: 1}}, {model: c, parameters: {weight: 2, density: 1}}]\n";
        for head in [
            "merge_method: linear\n",
            "merge_method: task_arithmetic\nbase_model: z\n",
            "merge_method: ties\nbase_model: z\n",
        ] {
            let m = if head.contains("ties") { models.to_string() } else { models.replace(", density: 1", "") };
            let c = cfg(&format!("{head}{m}"));
            let whole = merge_tensor(&c, "w", Some(&base), xs.clone(), &mut SeededMasks { seed: 0 }).unwrap();
            let mut pieces = Vec::new();
            for r in (0..n).step_by(1000) {
                let e = (r + 1000).min(n);
                let part: Vec<Vec<f32>> = xs.iter().map(|x| x[r..e].to_vec()).collect();
                pieces.extend(merge_tensor(&c, "w", Some(&base[r..e]), part, &mut SeededMasks { seed: 0 }).unwrap());
            }
            assert!(whole == pieces, "{head}");
        }
    }

    #[test]
    fn linear_is_the_normalised_weighted_mean() {
        let c = cfg(
            "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 3}}]\n",
        );
        let out =
            merge_tensor(&c, "w", None, vec![vec![1.0, 2.0], vec![5.0, -2.0]], &mut SeededMasks { seed: 0 }).unwrap();
        assert_eq!(out, vec![4.0, -1.0]);
    }

    #[test]
    fn task_arithmetic_adds_scaled_deltas() {
        let c = cfg(
            "merge_method: task_arithmetic\nbase_model: z\nmodels: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 0.5}}]\nparameters: {lambda: 0.5}\n",
        );
        let out = merge_tensor(
            &c,
            "w",
            Some(&[1.0, 1.0]),
            vec![vec![2.0, 1.0], vec![1.0, 5.0]],
            &mut SeededMasks { seed: 0 },
        )
        .unwrap();
        // base + 0.5·(1·δa + 0.5·δb) = 1 + 0.5·(1 + 0), 1 + 0.5·(0 + 2)
        assert_eq!(out, vec![1.5, 2.0]);
    }

    #[test]
    fn ties_keeps_the_top_magnitudes_and_the_elected_sign() {
        let c = cfg(
            "merge_method: ties\nbase_model: z\nmodels: [{model: a, parameters: {weight: 1, density: 0.5}}, {model: b, parameters: {weight: 1, density: 0.5}}, {model: c, parameters: {weight: 1, density: 1}}]\n",
        );
        let base = [0.0f32; 4];
        let a = [3.0f32, -0.1, 0.2, -4.0];
        let b = [-1.0f32, 0.5, -2.0, 0.1];
        let cc = [1.0f32, 1.0, -1.0, -1.0];
        // a keeps 3, −4; b keeps −1, −2; c keeps all. A pruned (zero) entry has sign 0: never elected.
        // j0: 3 − 1 + 1 ≥ 0 → + : (3 + 1)/2 = 2; j1: 0 + 0 + 1 → + : 1/1 = 1
        // j2: 0 − 2 − 1 → − : (−2 − 1)/2 = −1.5; j3: −4 + 0 − 1 → − : (−4 − 1)/2 = −2.5
        let out =
            merge_tensor(&c, "w", Some(&base), vec![a.to_vec(), b.to_vec(), cc.to_vec()], &mut SeededMasks { seed: 0 })
                .unwrap();
        assert_eq!(out, vec![2.0, 1.0, -1.5, -2.5]);
        assert_eq!(magnitude_mask(&[1.0, -1.0, 1.0, 0.5], 0.5), vec![true, true, false, false]);
        assert_eq!(magnitude_mask(&[1.0, 2.0], 0.01), vec![false, true], "at least one entry");
        // Selection agrees with a stable descending sort, ties included.
        let x: Vec<f32> = (0..500).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.5).collect();
        for density in [0.05, 0.3, 0.5, 0.77, 0.999] {
            let k = ((density * x.len() as f64) as usize).max(1);
            let mut order: Vec<usize> = (0..x.len()).collect();
            order.sort_by(|&a, &b| x[b].abs().total_cmp(&x[a].abs()));
            let mut want = vec![false; x.len()];
            order[..k].iter().for_each(|&i| want[i] = true);
            assert_eq!(magnitude_mask(&x, density), want, "density {density}");
        }
    }

    #[test]
    fn dare_drops_and_rescales_to_the_l1_norm() {
        let c = cfg(
            "merge_method: dare_linear\nbase_model: z\nmodels: [{model: a, parameters: {weight: 1, density: 0.5}}]\n",
        );
        let mut m = ExplicitMasks::default();
        m.masks.insert((0, "w".into()), vec![true, false, true, false]);
        let out = merge_tensor(&c, "w", Some(&[0.0; 4]), vec![vec![1.0, 2.0, 3.0, 4.0]], &mut m).unwrap();
        // kept 1 and 3 (L1 4) rescaled to L1 10: ×2.5
        assert_eq!(out, vec![2.5, 0.0, 7.5, 0.0]);
        let err = merge_tensor(&c, "v", Some(&[0.0; 4]), vec![vec![1.0; 4]], &mut m).unwrap_err().to_string();
        assert!(err.contains("no explicit DARE mask"), "{err}");
    }

    #[test]
    fn seeded_masks_are_reproducible_and_have_the_density() {
        let mut s = SeededMasks { seed: 7 };
        let a = s.mask(0, "layer.w", 20_000, 0.3).unwrap();
        assert_eq!(a, s.mask(0, "layer.w", 20_000, 0.3).unwrap());
        assert_ne!(a, s.mask(1, "layer.w", 20_000, 0.3).unwrap());
        let share = a.iter().filter(|&&k| k).count() as f64 / a.len() as f64;
        assert!((share - 0.3).abs() < 0.02, "{share}");
    }
}
