//! The fast f32 evaluator of the CPU decode path: sanitised buffers, threaded pieces, online reductions.

use super::fusion_err;
use super::loss::{Constants, Eval, Evaluator, RowLogits};
use super::simd::{CHUNK, exp_dot_shift_piece, max_shift_piece};
use crate::error::Result;

/// Stand-in for a banned token in the fast evaluator: far enough below any real logit that its
/// exponential is exactly 0, finite so that `base + a·d` never makes NaN.
const BANNED: f32 = -1.0e30;

/// The CPU decode path: f32 vectors with a vectorisable exp (relative error ≈ 1e-7), sums accumulated
/// per 1024-element chunk in f32 and across chunks in f64. Buffers are reused across steps.
#[derive(Default)]
pub struct FastEvaluator {
    /// L with banned tokens at [`BANNED`].
    large: Vec<f32>,
    /// S with banned tokens at [`BANNED`].
    base: Vec<f32>,
    max_large: f32,
    /// d_t with banned tokens at 0.
    deltas: Vec<Vec<f32>>,
    /// Σ_t α_t d_t for non-one-hot candidates.
    scratch: Vec<f32>,
    /// Empty until the first [`FastEvaluator::load`] (an evaluation before it sees zero experts).
    c: Constants,
}

impl FastEvaluator {
    /// An evaluator with no row loaded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads one row and computes its constants.
    pub fn load(&mut self, row: &RowLogits) -> Result<&Constants> {
        let v = row.check()?;
        let t = row.experts.len();
        self.large.clear();
        self.deltas.resize_with(t, Vec::new);
        self.deltas.truncate(t);
        for d in &mut self.deltas {
            d.clear();
        }
        let mut base = std::mem::take(&mut self.base);
        base.clear();
        let all_finite = |x: &[f32]| x.iter().fold(true, |ok, v| ok & v.is_finite());
        let support = if all_finite(row.large) && all_finite(row.base) && row.experts.iter().all(|e| all_finite(e)) {
            // The common case: plain copies and element-wise differences (vectorised).
            self.large.extend_from_slice(row.large);
            base.extend_from_slice(row.base);
            for (d, e) in self.deltas.iter_mut().zip(row.experts) {
                d.extend(e.iter().zip(row.base).map(|(e, s)| e - s));
            }
            v
        } else {
            let mut support = 0;
            for i in 0..v {
                if row.allowed(i) {
                    support += 1;
                    self.large.push(row.large[i]);
                    base.push(row.base[i]);
                    for (d, e) in self.deltas.iter_mut().zip(row.experts) {
                        d.push(e[i] - row.base[i]);
                    }
                } else {
                    self.large.push(BANNED);
                    base.push(BANNED);
                    for d in &mut self.deltas {
                        d.push(0.0);
                    }
                }
            }
            support
        };
        self.base = base;
        let base = &self.base;
        if support == 0 {
            return Err(fusion_err("logits", "no token is allowed by every model (all logits non-finite)".into()));
        }
        self.max_large = max_shift(&self.large, &self.deltas[0], 0.0);
        let max_base = max_shift(base, &self.deltas[0], 0.0);
        let mut c = Constants {
            lse_large: 0.0,
            expected_delta: Vec::with_capacity(t),
            kl_expert_base: Vec::with_capacity(t),
            kl_base_expert: Vec::with_capacity(t),
            support,
        };
        for d in &self.deltas {
            let (sp, spd) = exp_dot_shift(&self.large, d, 0.0, self.max_large);
            let (sq, sqd) = exp_dot_shift(base, d, 0.0, max_base);
            let mt = max_shift(base, d, 1.0);
            let (st, std) = exp_dot_shift(base, d, 1.0, mt);
            c.lse_large = self.max_large as f64 + sp.ln();
            let (lse_s, lse_t) = (max_base as f64 + sq.ln(), mt as f64 + st.ln());
            c.expected_delta.push(spd / sp);
            // KL(Q_t‖Q) = E_{Q_t}[d] − (LSE(E) − LSE(S)); KL(Q‖Q_t) = (LSE(E) − LSE(S)) − E_Q[d].
            c.kl_expert_base.push((std / st - (lse_t - lse_s)).max(0.0));
            c.kl_base_expert.push(((lse_t - lse_s) - sqd / sq).max(0.0));
        }
        self.c = c;
        Ok(&self.c)
    }
}

impl FastEvaluator {
    /// The fused logits of the loaded row (same values as [`fused_logits`](super::fused_logits), from the sanitised
    /// buffers: banned tokens −∞).
    pub fn fused(&self, alpha: &[f32], expert_only: bool) -> Vec<f32> {
        let mut z: Vec<f32> = if expert_only {
            self.base.iter().zip(&self.deltas[0]).map(|(s, d)| s + d).collect()
        } else {
            self.large.clone()
        };
        if !expert_only {
            for (d, &a) in self.deltas.iter().zip(alpha).filter(|(_, a)| **a != 0.0) {
                for (z, &d) in z.iter_mut().zip(d) {
                    *z += a * d;
                }
            }
        }
        for (z, &l) in z.iter_mut().zip(&self.large) {
            if l == BANNED {
                *z = f32::NEG_INFINITY;
            }
        }
        z
    }
}

impl FastEvaluator {
    /// ℒ at `alpha`, with `scratch` holding Σ_t α_t d_t for non-one-hot candidates (one per thread).
    fn eval_with(&self, alpha: &[f32], scratch: &mut Vec<f32>) -> Eval {
        let nz: Vec<usize> = (0..alpha.len()).filter(|&t| alpha[t] != 0.0).collect();
        if nz.is_empty() {
            return self.constants().eval(0.0, 0.0);
        }
        let (d, a): (&[f32], f32) = if nz.len() == 1 {
            (&self.deltas[nz[0]], alpha[nz[0]])
        } else {
            scratch.clear();
            scratch.resize(self.large.len(), 0.0);
            for &t in &nz {
                for (s, &x) in scratch.iter_mut().zip(&self.deltas[t]) {
                    *s += alpha[t] * x;
                }
            }
            (scratch, 1.0)
        };
        let (m, s, sd) = exp_dot_online(&self.large, d, a);
        let c = &self.c;
        let lam = m as f64 + s.ln() - c.lse_large;
        c.eval(a as f64 * sd / s - lam, lam - c.expected_shift(alpha))
    }
}

impl Evaluator for FastEvaluator {
    fn constants(&self) -> &Constants {
        &self.c
    }

    fn eval(&mut self, alpha: &[f32]) -> Eval {
        let mut scratch = std::mem::take(&mut self.scratch);
        let e = self.eval_with(alpha, &mut scratch);
        self.scratch = scratch;
        e
    }

    /// Candidates run on the rayon pool natively: a grid step is otherwise 21+ sequential passes over
    /// the vocabulary while the matmul threads sit idle.
    fn eval_all(&mut self, cands: &[Vec<f32>]) -> Vec<Eval> {
        #[cfg(not(target_family = "wasm"))]
        if cands.len() > 1 {
            use rayon::prelude::*;
            let this = &*self;
            return cands.par_iter().map_init(Vec::new, |scratch, a| this.eval_with(a, scratch)).collect();
        }
        cands.iter().map(|a| self.eval(a)).collect()
    }
}

/// `(m, Σ_i e_i, Σ_i e_i·d_i)` with `m = max_i (base_i + a·d_i)` and `e_i = exp(base_i + a·d_i − m)`, in
/// one pass over memory: each chunk's maximum is taken while the chunk is in L1, and the running sums are
/// rescaled (in f64) when the maximum grows. Every term is ≤ 1 when it is added.
fn exp_dot_online(base: &[f32], d: &[f32], a: f32) -> (f32, f64, f64) {
    let (mut m, mut s, mut sd) = (f32::NEG_INFINITY, 0f64, 0f64);
    for (bch, dch) in base.chunks(CHUNK).zip(d.chunks(CHUNK)) {
        let mc = max_shift_piece(bch, dch, a);
        if mc > m {
            if m > f32::NEG_INFINITY {
                let f = (m as f64 - mc as f64).exp();
                s *= f;
                sd *= f;
            }
            m = mc;
        }
        if m == f32::NEG_INFINITY {
            continue;
        }
        let (cs, csd) = exp_dot_shift_piece(bch, dch, a, m);
        s += cs;
        sd += csd;
    }
    (m, s, sd)
}

/// Elements per piece of the vocabulary that one thread reduces (a multiple of [`CHUNK`]). The pieces are
/// fixed, and their partial sums are added in order, so results do not depend on the thread count.
const PIECE: usize = 16 * CHUNK;

/// Applies `f` to each [`PIECE`] of `(base, d)` (in parallel natively: the α search runs while the
/// matmul threads are idle) and returns the results in order.
fn per_piece<T: Send>(base: &[f32], d: &[f32], f: impl Fn(&[f32], &[f32]) -> T + Sync) -> Vec<T> {
    let n = base.len().min(d.len());
    let starts: Vec<usize> = (0..n).step_by(PIECE).collect();
    let piece = |&s: &usize| {
        let e = (s + PIECE).min(n);
        f(&base[s..e], &d[s..e])
    };
    #[cfg(not(target_family = "wasm"))]
    {
        use rayon::prelude::*;
        if starts.len() > 1 {
            return starts.par_iter().map(piece).collect();
        }
    }
    starts.iter().map(piece).collect()
}

/// max_i (base_i + a·d_i).
pub fn max_shift(base: &[f32], d: &[f32], a: f32) -> f32 {
    per_piece(base, d, |b, d| max_shift_piece(b, d, a)).into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// (Σ_i e_i, Σ_i e_i·d_i) with e_i = exp(base_i + a·d_i − m).
pub fn exp_dot_shift(base: &[f32], d: &[f32], a: f32, m: f32) -> (f64, f64) {
    per_piece(base, d, |b, d| exp_dot_shift_piece(b, d, a, m))
        .into_iter()
        .fold((0.0, 0.0), |(s, sd), (ps, psd)| (s + ps, sd + psd))
}
