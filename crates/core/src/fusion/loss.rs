//! One step's row of logits, its α-independent constants, the loss ℒ(α), [`Evaluator`] and the fused logits.

use serde::Serialize;

use super::fusion_err;
use crate::error::Result;

/// The logits of one batch row.
#[derive(Debug, Clone, Copy)]
pub struct RowLogits<'a> {
    /// Large base L.
    pub large: &'a [f32],
    /// Small base S.
    pub base: &'a [f32],
    /// Experts E_t.
    pub experts: &'a [&'a [f32]],
}

impl RowLogits<'_> {
    pub(super) fn check(&self) -> Result<usize> {
        let v = self.large.len();
        if self.experts.is_empty() {
            return Err(fusion_err("experts", "DLF needs at least one expert".into()));
        }
        if self.base.len() != v {
            return Err(fusion_err("base", format!("{} logits, the large model has {v}", self.base.len())));
        }
        for (t, e) in self.experts.iter().enumerate() {
            if e.len() != v {
                return Err(fusion_err("experts", format!("expert {t} has {} logits, the large model {v}", e.len())));
            }
        }
        if v == 0 {
            return Err(fusion_err("large", "empty logits row".into()));
        }
        Ok(v)
    }

    pub(super) fn allowed(&self, v: usize) -> bool {
        self.large[v].is_finite() && self.base[v].is_finite() && self.experts.iter().all(|e| e[v].is_finite())
    }
}

/// The α-independent quantities of one step (§A.5).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Constants {
    /// LSE(L) over the support.
    pub lse_large: f64,
    /// E_P\[d_t\] per expert.
    pub expected_delta: Vec<f64>,
    /// KL(Q_t‖Q) per expert: the forward target.
    pub kl_expert_base: Vec<f64>,
    /// KL(Q‖Q_t) per expert: the reverse target.
    pub kl_base_expert: Vec<f64>,
    /// Tokens every model allows.
    pub support: usize,
}

/// The loss at one α, with its two fused-side KLs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Eval {
    /// ℒ(α).
    pub loss: f64,
    /// KL(P̃‖P).
    pub kl_fused_large: f64,
    /// KL(P‖P̃).
    pub kl_large_fused: f64,
}

impl Constants {
    /// ℒ from the two fused-side KLs (clamped at 0 against rounding).
    pub fn eval(&self, kf: f64, kr: f64) -> Eval {
        let (kf, kr) = (kf.max(0.0), kr.max(0.0));
        let loss = self
            .kl_expert_base
            .iter()
            .zip(&self.kl_base_expert)
            .map(|(cf, cr)| (kf - cf).powi(2) + (kr - cr).powi(2))
            .sum();
        Eval { loss, kl_fused_large: kf, kl_large_fused: kr }
    }

    /// Σ_t α_t E_P\[d_t\] = E_P\[D\].
    pub(super) fn expected_shift(&self, alpha: &[f32]) -> f64 {
        alpha.iter().zip(&self.expected_delta).map(|(&a, e)| a as f64 * e).sum()
    }
}

/// Evaluates ℒ(α) for one row.
pub trait Evaluator {
    /// The step's constants.
    fn constants(&self) -> &Constants;
    /// ℒ at `alpha` (one entry per expert).
    fn eval(&mut self, alpha: &[f32]) -> Eval;
    /// ℒ at each candidate, in order (an evaluator may spread them over threads; the results must be
    /// the ones [`Evaluator::eval`] gives).
    fn eval_all(&mut self, cands: &[Vec<f32>]) -> Vec<Eval> {
        cands.iter().map(|a| self.eval(a)).collect()
    }
}

/// The fused logits L + Σ α_t d_t (banned tokens −∞), or the first expert's logits for expert-only.
pub fn fused_logits(row: &RowLogits, alpha: &[f32], expert_only: bool) -> Vec<f32> {
    (0..row.large.len())
        .map(|v| {
            if !row.allowed(v) {
                f32::NEG_INFINITY
            } else if expert_only {
                row.experts[0][v]
            } else {
                let mut z = row.large[v];
                for (t, &a) in alpha.iter().enumerate() {
                    if a != 0.0 {
                        z += a * (row.experts[t][v] - row.base[v]);
                    }
                }
                z
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::test_support::{row, solve_fast, solve_ref};
    use crate::fusion::{FastEvaluator, FusionConfig, ReferenceEvaluator, Solver, synthetic_logits};

    /// §A.12.1: α = 0 reproduces the large model exactly and both fused-side KLs are 0.
    #[test]
    fn alpha_zero_is_the_large_model() {
        let (l, s, e) = synthetic_logits(1, 500, 2);
        let ex: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let r = row(&l, &s, &ex);
        assert_eq!(fused_logits(&r, &[0.0, 0.0], false), l);
        let ev = ReferenceEvaluator::new(r).unwrap().eval(&[0.0, 0.0]);
        assert_eq!((ev.kl_fused_large, ev.kl_large_fused), (0.0, 0.0));
        let c = solve_ref(&FusionConfig::with_solver(Solver::LargeOnly), r);
        assert_eq!(c.alpha, vec![0.0, 0.0]);
    }

    /// §A.12.2: static α = 1 with one expert is proxy-tuning, L + E − S.
    #[test]
    fn static_one_is_proxy_tuning() {
        let (l, s, e) = synthetic_logits(2, 300, 1);
        let ex = [e[0].as_slice()];
        let r = row(&l, &s, &ex);
        let c = solve_ref(&FusionConfig::with_solver(Solver::Static { alpha: 1.0 }), r);
        assert_eq!(c.alpha, vec![1.0]);
        let z = fused_logits(&r, &c.alpha, false);
        for i in 0..l.len() {
            assert!((z[i] - (l[i] + e[0][i] - s[i])).abs() < 1e-5);
        }
    }

    /// Banned (−∞) tokens stay banned and do not make any KL infinite.
    #[test]
    fn masked_tokens_are_excluded() {
        let (mut l, s, mut e) = synthetic_logits(6, 300, 1);
        l[7] = f32::NEG_INFINITY;
        e[0][11] = f32::NEG_INFINITY;
        let ex = [e[0].as_slice()];
        let r = row(&l, &s, &ex);
        let c = solve_ref(&FusionConfig::default(), r);
        assert!(c.eval.unwrap().loss.is_finite());
        let z = fused_logits(&r, &c.alpha, false);
        assert!(z[7] == f32::NEG_INFINITY && z[11] == f32::NEG_INFINITY);
        assert_eq!(solve_fast(&FusionConfig::default(), r).alpha, c.alpha);
        let mut fe = FastEvaluator::new();
        fe.load(&r).unwrap();
        assert_eq!(fe.fused(&c.alpha, false), z, "fast fused logits equal the reference's");
        let all = vec![f32::NEG_INFINITY; 4];
        assert!(ReferenceEvaluator::new(row(&all, &all, &[all.as_slice()])).is_err());
    }
}
