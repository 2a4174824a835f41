//! The f64 reference evaluator: direct loops, the oracle of the WGSL kernel and of the fast evaluator.

use super::fusion_err;
use super::loss::{Constants, Eval, Evaluator, RowLogits};
use crate::error::Result;

/// The f64 oracle: direct, obviously-correct loops. Slow; used by tests and as the GPU kernel's
/// reference.
pub struct ReferenceEvaluator<'a> {
    row: RowLogits<'a>,
    mask: Vec<bool>,
    c: Constants,
}

impl<'a> ReferenceEvaluator<'a> {
    /// Computes the step constants of `row`.
    pub fn new(row: RowLogits<'a>) -> Result<Self> {
        let v = row.check()?;
        let mask: Vec<bool> = (0..v).map(|i| row.allowed(i)).collect();
        let support = mask.iter().filter(|&&m| m).count();
        if support == 0 {
            return Err(fusion_err("logits", "no token is allowed by every model (all logits non-finite)".into()));
        }
        let lse = |x: &[f32]| lse64(x.iter().zip(&mask).filter(|(_, m)| **m).map(|(&x, _)| x as f64));
        let (lse_l, lse_s) = (lse(row.large), lse(row.base));
        let d = |t: usize, i: usize| row.experts[t][i] as f64 - row.base[i] as f64;
        let mut c = Constants {
            lse_large: lse_l,
            expected_delta: Vec::new(),
            kl_expert_base: Vec::new(),
            kl_base_expert: Vec::new(),
            support,
        };
        for t in 0..row.experts.len() {
            let lse_t = lse(row.experts[t]);
            let (mut ep, mut kf, mut kr) = (0.0, 0.0, 0.0);
            for i in (0..v).filter(|&i| mask[i]) {
                let lp = row.large[i] as f64 - lse_l;
                let lq = row.base[i] as f64 - lse_s;
                let lqt = row.experts[t][i] as f64 - lse_t;
                ep += lp.exp() * d(t, i);
                kf += lqt.exp() * (lqt - lq);
                kr += lq.exp() * (lq - lqt);
            }
            c.expected_delta.push(ep);
            c.kl_expert_base.push(kf.max(0.0));
            c.kl_base_expert.push(kr.max(0.0));
        }
        Ok(Self { row, mask, c })
    }

    /// KL(P̃‖P) and KL(P‖P̃) summed directly from the two distributions (to test the closed forms).
    pub fn direct_kls(&self, alpha: &[f32]) -> (f64, f64) {
        let z: Vec<f64> = self.shifted(alpha);
        let lse_z = lse64(z.iter().zip(&self.mask).filter(|(_, m)| **m).map(|(&x, _)| x));
        let (mut kf, mut kr) = (0.0, 0.0);
        for i in (0..z.len()).filter(|&i| self.mask[i]) {
            let lpt = z[i] - lse_z;
            let lp = self.row.large[i] as f64 - self.c.lse_large;
            kf += lpt.exp() * (lpt - lp);
            kr += lp.exp() * (lp - lpt);
        }
        (kf, kr)
    }

    fn shifted(&self, alpha: &[f32]) -> Vec<f64> {
        (0..self.row.large.len())
            .map(|i| {
                let shift: f64 = alpha
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| **a != 0.0)
                    .map(|(t, &a)| a as f64 * (self.row.experts[t][i] as f64 - self.row.base[i] as f64))
                    .sum();
                self.row.large[i] as f64 + if self.mask[i] { shift } else { 0.0 }
            })
            .collect()
    }
}

impl Evaluator for ReferenceEvaluator<'_> {
    fn constants(&self) -> &Constants {
        &self.c
    }

    fn eval(&mut self, alpha: &[f32]) -> Eval {
        let z = self.shifted(alpha);
        let live = || (0..z.len()).filter(|&i| self.mask[i]);
        let m = live().map(|i| z[i]).fold(f64::NEG_INFINITY, f64::max);
        let (mut s, mut sd) = (0.0, 0.0);
        for i in live() {
            let e = (z[i] - m).exp();
            s += e;
            sd += e * (z[i] - self.row.large[i] as f64);
        }
        let lam = m + s.ln() - self.c.lse_large;
        self.c.eval(sd / s - lam, lam - self.c.expected_shift(alpha))
    }
}

fn lse64(x: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = x.clone().fold(f64::NEG_INFINITY, f64::max);
    m + x.map(|v| (v - m).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::test_support::row;
    use crate::fusion::{FastEvaluator, synthetic_logits};

    /// §A.12.4 and §A.12.12: the closed forms equal the direct sums; every KL and ℒ is ≥ 0; the fast
    /// evaluator agrees with the reference.
    #[test]
    fn closed_forms_match_direct_kl() {
        let (l, s, e) = synthetic_logits(3, 2000, 2);
        let ex: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let r = row(&l, &s, &ex);
        let mut re = ReferenceEvaluator::new(r).unwrap();
        let mut fe = FastEvaluator::new();
        fe.load(&r).unwrap();
        for (a, b) in re.constants().kl_expert_base.iter().zip(&fe.constants().kl_expert_base) {
            assert!((a - b).abs() <= 1e-5 * a.max(1e-3), "{a} vs {b}");
        }
        for alpha in [[0.3f32, 0.0], [0.0, 1.7], [0.5, 0.9], [2.0, 2.0]] {
            let ev = re.eval(&alpha);
            let (kf, kr) = re.direct_kls(&alpha);
            assert!((ev.kl_fused_large - kf).abs() <= 1e-10 * kf.max(1.0), "{alpha:?}: {} vs {kf}", ev.kl_fused_large);
            assert!((ev.kl_large_fused - kr).abs() <= 1e-10 * kr.max(1.0));
            assert!(ev.kl_fused_large >= 0.0 && ev.kl_large_fused >= 0.0 && ev.loss >= 0.0);
            let fv = fe.eval(&alpha);
            assert!((fv.loss - ev.loss).abs() <= 1e-5 * ev.loss.max(1e-3), "{alpha:?}: {} vs {}", fv.loss, ev.loss);
        }
    }
}
