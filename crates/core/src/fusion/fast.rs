//! The fast f32 evaluator of the CPU decode path: sanitised buffers, threaded pieces, one pass per grid.

use super::config::{FusionConfig, MultiRule, Solver};
use super::fusion_err;
use super::loss::{Constants, Eval, Evaluator, RowLogits};
use super::simd::{ANCHOR, CHUNK, exp_dot_grid_piece, exp_dot_shift_piece, max_shift_piece};
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
    /// Per expert: the one-hot grid the solver is expected to ask for ([`FastEvaluator::expect_grid`]),
    /// whose maxima and sums [`FastEvaluator::load`] takes in its own two passes over the vocabulary.
    hint: Vec<Option<Grid>>,
    /// Per expert: the hinted grid's `(m, Σe, Σe·d)` for the loaded row, which `eval_all` returns as
    /// [`exp_dot_multi`] would compute them (the same pieces, shifts and order, so bit for bit).
    cached: Vec<Option<Vec<(f32, f64, f64)>>>,
}

/// One expert's evenly spaced one-hot candidates: their α, spacing and the indices with exact maxima.
#[derive(Debug, Clone, PartialEq)]
struct Grid {
    alphas: Vec<f32>,
    h: f32,
    exact: Vec<usize>,
}

impl FastEvaluator {
    /// An evaluator with no row loaded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells the evaluator the candidates the solver will pass to `eval_all` after each
    /// [`FastEvaluator::load`] (the paper's grid), so the load evaluates each expert's evenly spaced
    /// one-hot candidates in its own two passes over the vocabulary instead of leaving two more to
    /// `eval_all`; results are identical either way. Candidates that are not on such a grid, and rows
    /// with another number of experts, are evaluated as without the hint. Kept until changed.
    pub fn expect_grid(&mut self, cands: &[Vec<f32>]) {
        let t = cands.iter().map(Vec::len).max().unwrap_or(0);
        self.hint = (0..t)
            .map(|e| {
                let alphas = one_hot_alphas(cands, e);
                let h = grid_step(&alphas)?;
                let exact = exact_points(alphas.len(), Some(h));
                Some(Grid { alphas, h, exact })
            })
            .collect();
    }

    /// [`FastEvaluator::expect_grid`] with the candidates [`solve`](super::solve) scans for `cfg` and rows
    /// of `experts` experts: the paper solver's grid (unless the route rule narrows it per row); other
    /// solvers choose their candidates as they go, so they get no hint (and any earlier one is dropped).
    pub fn expect_solver(&mut self, cfg: &FusionConfig, experts: usize) {
        if cfg.solver == Solver::Paper && !(experts > 1 && cfg.multi == MultiRule::Route) {
            self.expect_grid(&cfg.grid(experts));
        } else {
            self.hint.clear();
        }
    }

    /// Loads one row and computes its constants.
    pub fn load(&mut self, row: &RowLogits) -> Result<&Constants> {
        let v = row.check()?;
        let t = row.experts.len();
        self.deltas.resize_with(t, Vec::new);
        self.deltas.truncate(t);
        self.cached = vec![None; t];
        // The hinted grids' exact points, per expert (none without a hint for this many experts).
        let grids: Vec<Option<Grid>> = if self.hint.len() == t { self.hint.clone() } else { vec![None; t] };
        let anchors: Vec<Vec<f32>> = grids
            .iter()
            .map(|g| g.as_ref().map_or(Vec::new(), |g| g.exact.iter().map(|&j| g.alphas[j]).collect()))
            .collect();
        let mut base = std::mem::take(&mut self.base);
        // Two parallel passes (each a wake of the rayon pool) for all of the step's constants: the copies
        // with the maxima, then the sums at those shifts; pieces are added in order.
        let (support, maxima) = match fill_finite(row, v, &mut self.large, &mut base, &mut self.deltas, &anchors) {
            Some(maxima) => (v, maxima),
            None => {
                // Some logit is not finite (a banned token): the element-wise pass with the stand-ins, then
                // the maxima over the sanitised buffers.
                let support = fill_sanitised(row, v, &mut self.large, &mut base, &mut self.deltas);
                let (large, deltas) = (&self.large, &self.deltas);
                let maxima = per_range(v_len(large, &base, deltas), |r| {
                    let ds: Vec<&[f32]> = deltas.iter().map(|d| &d[r.clone()]).collect();
                    piece_maxima(&large[r.clone()], &base[r], &ds, &anchors)
                });
                (support, maxima)
            }
        };
        self.base = base;
        let base = &self.base;
        if support == 0 {
            return Err(fusion_err("logits", "no token is allowed by every model (all logits non-finite)".into()));
        }
        let (large, deltas) = (&self.large, &self.deltas);
        let max_of = |j: usize| maxima.iter().map(|p| p[j]).fold(f32::NEG_INFINITY, f32::max);
        let (max_large, max_base) = (max_of(0), max_of(1));
        let mts: Vec<f32> = (0..t).map(|i| max_of(2 + i)).collect();
        // The grids' shifts from their anchors' maxima (after the 2 + t maxima above, expert by expert).
        let mut at = 2 + t;
        let shifts: Vec<Vec<f32>> = grids
            .iter()
            .map(|g| {
                let Some(g) = g else { return Vec::new() };
                let exact_max: Vec<f32> = (at..at + g.exact.len()).map(max_of).collect();
                at += g.exact.len();
                grid_shifts(&g.exact, &exact_max, g.alphas.len())
            })
            .collect();
        let sums = per_range(v_len(large, base, deltas), |r| {
            let (l, b) = (&large[r.clone()], &base[r.clone()]);
            let mut out = Vec::with_capacity(3 * t);
            for (d, &mt) in deltas.iter().zip(&mts) {
                let d = &d[r.clone()];
                out.extend([
                    exp_dot_shift_piece(l, d, 0.0, max_large),
                    exp_dot_shift_piece(b, d, 0.0, max_base),
                    exp_dot_shift_piece(b, d, 1.0, mt),
                ]);
            }
            for ((g, m), d) in grids.iter().zip(&shifts).zip(deltas) {
                if let Some(g) = g {
                    out.extend(exp_dot_grid_piece(l, &d[r.clone()], &g.alphas, g.h, m));
                }
            }
            out
        });
        let sum_of = |j: usize| sums.iter().fold((0f64, 0f64), |(s, sd), p| (s + p[j].0, sd + p[j].1));
        let mut at = 3 * t;
        for ((g, m), cached) in grids.iter().zip(&shifts).zip(&mut self.cached) {
            if let Some(g) = g {
                *cached = Some((0..g.alphas.len()).map(|j| (m[j], sum_of(at + j).0, sum_of(at + j).1)).collect());
                at += g.alphas.len();
            }
        }
        self.max_large = max_large;
        let mut c = Constants {
            lse_large: 0.0,
            expected_delta: Vec::with_capacity(t),
            kl_expert_base: Vec::with_capacity(t),
            kl_base_expert: Vec::with_capacity(t),
            support,
        };
        for (i, &mt) in mts.iter().enumerate() {
            let ((sp, spd), (sq, sqd), (st, std)) = (sum_of(3 * i), sum_of(3 * i + 1), sum_of(3 * i + 2));
            c.lse_large = max_large as f64 + sp.ln();
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
        self.eval_at(alpha, a, exp_dot_multi(&self.large, d, &[a])[0])
    }

    /// ℒ at `alpha` from the sums of L + a·d (`d` the candidate's direction, `a` its step along it).
    fn eval_at(&self, alpha: &[f32], a: f32, (m, s, sd): (f32, f64, f64)) -> Eval {
        let c = &self.c;
        let lam = m as f64 + s.ln() - c.lse_large;
        c.eval(a as f64 * sd / s - lam, lam - c.expected_shift(alpha))
    }

    /// The expert `t` on which `alpha` is one-hot (its only non-zero entry), if it is.
    fn one_hot(alpha: &[f32]) -> Option<usize> {
        let mut nz = alpha.iter().enumerate().filter(|(_, a)| **a != 0.0);
        match (nz.next(), nz.next()) {
            (Some((t, _)), None) => Some(t),
            _ => None,
        }
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

    /// The one-hot candidates of each expert (the paper's grid: 20 non-zero per expert) are reduced
    /// together in two passes over the vocabulary ([`exp_dot_multi`]), with one exp per element for
    /// every [`ANCHOR`] candidates; the rest run on the rayon pool natively. Results equal
    /// [`Evaluator::eval`]'s to ~1e-6 relative (exactly for candidates that are not on a grid).
    fn eval_all(&mut self, cands: &[Vec<f32>]) -> Vec<Eval> {
        let mut out: Vec<Option<Eval>> = vec![None; cands.len()];
        for t in 0..self.deltas.len() {
            let idx: Vec<usize> = (0..cands.len()).filter(|&i| Self::one_hot(&cands[i]) == Some(t)).collect();
            if idx.len() < 2 {
                continue;
            }
            let alphas: Vec<f32> = idx.iter().map(|&i| cands[i][t]).collect();
            // The load's sums when these are the hinted grid (the common case: the paper solver).
            let cached = self.cached.get(t).and_then(Option::as_ref);
            let hinted = self.hint.get(t).and_then(Option::as_ref).is_some_and(|g| g.alphas == alphas);
            let sums = match cached.filter(|_| hinted) {
                Some(c) => c.clone(),
                None => exp_dot_multi(&self.large, &self.deltas[t], &alphas),
            };
            for (&i, sums) in idx.iter().zip(sums) {
                out[i] = Some(self.eval_at(&cands[i], cands[i][t], sums));
            }
        }
        let rest: Vec<usize> = (0..cands.len()).filter(|&i| out[i].is_none()).collect();
        #[cfg(not(target_family = "wasm"))]
        if rest.len() > 1 {
            use rayon::prelude::*;
            let this = &*self;
            let evals: Vec<Eval> =
                rest.par_iter().map_init(Vec::new, |scratch, &i| this.eval_with(&cands[i], scratch)).collect();
            for (&i, e) in rest.iter().zip(evals) {
                out[i] = Some(e);
            }
        }
        for i in rest {
            if out[i].is_none() {
                out[i] = Some(self.eval(&cands[i]));
            }
        }
        out.into_iter().map(|e| e.expect("every candidate evaluated above")).collect()
    }
}

/// For each `a_k` of `alphas`: `(m_k, Σ_i e_i, Σ_i e_i·d_i)` with `m_k = max_i (base_i + a_k·d_i)` and
/// `e_i = exp(base_i + a_k·d_i − m_k)` (every term ≤ 1). Two passes over memory for all of `alphas`: the
/// maxima, then the sums, each piece (16 K elements of both inputs) staying in L2 while every `a_k` passes
/// over it. Equally spaced `alphas` (a grid: the paper's 0.1..2 for one expert) take one exp per element
/// for every [`ANCHOR`] of them ([`exp_dot_grid_piece`]: the search is exp-bound, 20 exps per element
/// before). Pieces and their order are fixed (see [`per_piece`]), so results do not depend on the thread
/// count.
fn exp_dot_multi(base: &[f32], d: &[f32], alphas: &[f32]) -> Vec<(f32, f64, f64)> {
    let k = alphas.len();
    let step = grid_step(alphas);
    let exact = exact_points(k, step);
    let maxima = per_piece(base, d, |b, d| exact.iter().map(|&j| max_shift_piece(b, d, alphas[j])).collect::<Vec<_>>());
    let at: Vec<f32> =
        (0..exact.len()).map(|x| maxima.iter().map(|p| p[x]).fold(f32::NEG_INFINITY, f32::max)).collect();
    let m = grid_shifts(&exact, &at, k);
    let sums = per_piece(base, d, |b, d| match step {
        Some(h) => exp_dot_grid_piece(b, d, alphas, h, &m),
        None => alphas.iter().zip(&m).map(|(&a, &m)| exp_dot_shift_piece(b, d, a, m)).collect::<Vec<_>>(),
    });
    (0..k)
        .map(|j| {
            let (s, sd) = sums.iter().fold((0f64, 0f64), |(s, sd), p| (s + p[j].0, sd + p[j].1));
            (m[j], s, sd)
        })
        .collect()
}

/// The candidates whose shift is an exact maximum: on a grid (spacing `step`) only the anchors (every
/// [`ANCHOR`]-th) and the last, otherwise all `k`.
fn exact_points(k: usize, step: Option<f32>) -> Vec<usize> {
    match step {
        Some(_) => (0..k).filter(|j| j % ANCHOR == 0 || *j == k - 1).collect(),
        None => (0..k).collect(),
    }
}

/// The shifts of `k` candidates from the exact maxima `at` of the points `exact`, linearly interpolated
/// between them. m(α) = max_i (b_i + α·d_i) is convex, so the interpolation is an upper bound: terms stay
/// ≤ 1, and the result does not depend on the shift (it cancels in m + ln Σe).
fn grid_shifts(exact: &[usize], at: &[f32], k: usize) -> Vec<f32> {
    (0..k)
        .map(|j| {
            let x = exact.partition_point(|&e| e < j);
            if exact[x] == j {
                return at[x];
            }
            let (lo, hi) = (exact[x - 1], exact[x]);
            let t = (j - lo) as f32 / (hi - lo) as f32;
            at[x - 1] + t * (at[x] - at[x - 1])
        })
        .collect()
}

/// The non-zero α of the candidates one-hot on expert `t`, in order (what `eval_all` batches).
fn one_hot_alphas(cands: &[Vec<f32>], t: usize) -> Vec<f32> {
    cands.iter().filter(|c| FastEvaluator::one_hot(c) == Some(t)).map(|c| c[t]).collect()
}

/// The spacing `h` of `alphas` when they are at least 3, increasing and `alphas[j] = alphas[0] + j·h` to
/// within f32 rounding (a lattice of decimal steps is, as f32, only nearly equally spaced).
fn grid_step(alphas: &[f32]) -> Option<f32> {
    let k = alphas.len();
    if k < 3 {
        return None;
    }
    let (a0, h) = (alphas[0] as f64, (alphas[k - 1] as f64 - alphas[0] as f64) / (k - 1) as f64);
    let tol = 1e-6 * (a0.abs() + h * k as f64);
    let even = alphas.iter().enumerate().all(|(j, &a)| (a as f64 - (a0 + j as f64 * h)).abs() <= tol);
    (h > 0.0 && even).then_some(h as f32)
}

/// The maxima of one piece of the buffers: of L, of S, of S + d_t for each expert's piece in `ds`, then
/// of L + a·d_t for each `a` of `anchors[t]` (a hinted grid's exact points), expert by expert.
fn piece_maxima(l: &[f32], b: &[f32], ds: &[&[f32]], anchors: &[Vec<f32>]) -> Vec<f32> {
    // a = 0 ignores d, so L and S serve as their own.
    let mut m = vec![max_shift_piece(l, l, 0.0), max_shift_piece(b, b, 0.0)];
    m.extend(ds.iter().map(|d| max_shift_piece(b, d, 1.0)));
    for (d, a) in ds.iter().zip(anchors) {
        m.extend(a.iter().map(|&a| max_shift_piece(l, d, a)));
    }
    m
}

/// One piece of the buffers being filled: its first index, its parts of L, S and of every d_t.
type Piece<'a> = (usize, &'a mut [f32], &'a mut [f32], Vec<&'a mut [f32]>);

/// The common case of [`FastEvaluator::load`], every logit finite: the buffers take L, S and d_t = E_t − S
/// piece by piece in parallel ([`PIECE`]s, as [`per_range`] cuts them), each piece's finiteness checked and
/// its maxima ([`piece_maxima`]'s) taken while it is in cache: one pass over memory instead of a serial
/// check, a serial copy and a parallel maxima pass. None when some logit is not finite (the buffers are
/// then overwritten by [`fill_sanitised`]).
fn fill_finite(
    row: &RowLogits,
    v: usize,
    large: &mut Vec<f32>,
    base: &mut Vec<f32>,
    deltas: &mut [Vec<f32>],
    anchors: &[Vec<f32>],
) -> Option<Vec<Vec<f32>>> {
    // Lengths only: every element is overwritten below (a no-op when the previous row had this size).
    large.resize(v, 0.0);
    base.resize(v, 0.0);
    for d in deltas.iter_mut() {
        d.resize(v, 0.0);
    }
    let mut dchunks: Vec<_> = deltas.iter_mut().map(|d| d.chunks_mut(PIECE)).collect();
    let pieces: Vec<Piece> = large
        .chunks_mut(PIECE)
        .zip(base.chunks_mut(PIECE))
        .enumerate()
        .map(|(k, (l, b))| (k * PIECE, l, b, dchunks.iter_mut().filter_map(|c| c.next()).collect()))
        .collect();
    let fill = |(at, l, b, mut ds): Piece| {
        let r = at..at + l.len();
        let finite = |x: &[f32]| x.iter().fold(true, |ok, v| ok & v.is_finite());
        l.copy_from_slice(&row.large[r.clone()]);
        b.copy_from_slice(&row.base[r.clone()]);
        let mut ok = finite(l) && finite(b);
        for (d, e) in ds.iter_mut().zip(row.experts) {
            let e = &e[r.clone()];
            ok &= finite(e);
            for ((d, &e), &s) in d.iter_mut().zip(e).zip(&*b) {
                *d = e - s;
            }
        }
        let ds: Vec<&[f32]> = ds.iter().map(|d| &**d).collect();
        ok.then(|| piece_maxima(l, b, &ds, anchors))
    };
    #[cfg(not(target_family = "wasm"))]
    {
        use rayon::prelude::*;
        pieces.into_par_iter().map(fill).collect()
    }
    #[cfg(target_family = "wasm")]
    {
        pieces.into_iter().map(fill).collect()
    }
}

/// The rare case of [`FastEvaluator::load`]: element by element, banned tokens (a non-finite logit in any
/// model) at [`BANNED`] in L and S and 0 in every d_t. Returns the support (tokens allowed).
fn fill_sanitised(
    row: &RowLogits,
    v: usize,
    large: &mut Vec<f32>,
    base: &mut Vec<f32>,
    deltas: &mut [Vec<f32>],
) -> usize {
    large.clear();
    base.clear();
    for d in deltas.iter_mut() {
        d.clear();
    }
    let mut support = 0;
    for i in 0..v {
        if row.allowed(i) {
            support += 1;
            large.push(row.large[i]);
            base.push(row.base[i]);
            for (d, e) in deltas.iter_mut().zip(row.experts) {
                d.push(e[i] - row.base[i]);
            }
        } else {
            large.push(BANNED);
            base.push(BANNED);
            for d in deltas.iter_mut() {
                d.push(0.0);
            }
        }
    }
    support
}

/// Elements per piece of the vocabulary that one thread reduces (a multiple of [`CHUNK`]). The pieces are
/// fixed, and their partial sums are added in order, so results do not depend on the thread count.
const PIECE: usize = 16 * CHUNK;

/// Applies `f` to each [`PIECE`] of `(base, d)` (in parallel natively: the α search runs while the
/// matmul threads are idle) and returns the results in order.
fn per_piece<T: Send>(base: &[f32], d: &[f32], f: impl Fn(&[f32], &[f32]) -> T + Sync) -> Vec<T> {
    per_range(base.len().min(d.len()), |r| f(&base[r.clone()], &d[r]))
}

/// The common length of the loaded buffers.
fn v_len(large: &[f32], base: &[f32], deltas: &[Vec<f32>]) -> usize {
    deltas.iter().fold(large.len().min(base.len()), |n, d| n.min(d.len()))
}

/// Applies `f` to each [`PIECE`] range of `0..n` (in parallel natively) and returns the results in order.
fn per_range<T: Send>(n: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    let starts: Vec<usize> = (0..n).step_by(PIECE).collect();
    let piece = |&s: &usize| f(s..(s + PIECE).min(n));
    #[cfg(not(target_family = "wasm"))]
    {
        use rayon::prelude::*;
        if starts.len() > 1 {
            return starts.par_iter().map(piece).collect();
        }
    }
    starts.iter().map(piece).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::synthetic_logits;
    use crate::fusion::test_support::row;

    /// One evaluator reused across rows (as in decoding) gives each row the constants a fresh one gives:
    /// an all-finite row (the parallel fill), then one with a banned token in its last piece (the fill
    /// gives up after writing the other pieces; the sanitising path rebuilds every buffer), then a
    /// finite one again; and the banned row's fused logits equal the reference's.
    #[test]
    fn reused_evaluator_loads_each_row_as_a_fresh_one() {
        let v = 3 * PIECE + 5;
        let (l, s, e) = synthetic_logits(31, v, 2);
        let (mut lb, mut eb) = (l.clone(), e.clone());
        lb[v - 2] = f32::NEG_INFINITY;
        eb[1][3 * PIECE] = f32::NAN;
        let ex = [e[0].as_slice(), e[1].as_slice()];
        let exb = [eb[0].as_slice(), eb[1].as_slice()];
        let rows = [row(&l, &s, &ex), row(&lb, &s, &exb), row(&l, &s, &ex)];
        let mut reused = FastEvaluator::new();
        for (k, r) in rows.iter().enumerate() {
            let got = format!("{:?}", reused.load(r).unwrap());
            let want = format!("{:?}", FastEvaluator::new().load(r).unwrap());
            assert_eq!(got, want, "row {k}");
            let support = reused.load(r).unwrap().support;
            assert_eq!(support, if k == 1 { v - 2 } else { v }, "row {k}");
        }
        reused.load(&rows[1]).unwrap();
        let alpha = [0.7, 1.3];
        let (got, want) = (reused.fused(&alpha, false), crate::fusion::fused_logits(&rows[1], &alpha, false));
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w || (g - w).abs() <= 1e-4 * w.abs().max(1.0), "token {i}: {g} vs {w}");
        }
    }

    /// With the paper's grid announced ([`FastEvaluator::expect_grid`]), the load's passes give `eval_all`
    /// exactly the results it computes without the hint, on a finite row, a row with banned tokens and
    /// with candidates off the hinted grid; a hint for another number of experts is ignored.
    #[test]
    fn a_hinted_grid_is_evaluated_in_the_load_bit_for_bit() {
        let v = 3 * PIECE + 77;
        let (l, s, e) = synthetic_logits(41, v, 2);
        let mut lb = l.clone();
        lb[5] = f32::NEG_INFINITY;
        let ex = [e[0].as_slice(), e[1].as_slice()];
        let mut grid: Vec<Vec<f32>> = (0..21).map(|k| vec![k as f32 * 0.1, 0.0]).collect();
        grid.extend((0..21).map(|k| vec![0.0, k as f32 * 0.1]));
        let mut off = grid.clone();
        off.extend([vec![0.4, 0.4], vec![0.0, 2.5]]);
        for r in [row(&l, &s, &ex), row(&lb, &s, &ex)] {
            for cands in [&grid, &off] {
                let mut plain = FastEvaluator::new();
                plain.load(&r).unwrap();
                let want = format!("{:?}", plain.eval_all(cands));
                let mut hinted = FastEvaluator::new();
                hinted.expect_grid(&grid);
                let c = format!("{:?}", hinted.load(&r).unwrap());
                assert_eq!(c, format!("{:?}", plain.constants()), "constants");
                assert!(hinted.cached.iter().all(Option::is_some), "the load evaluated both grids");
                assert_eq!(format!("{:?}", hinted.eval_all(cands)), want);
            }
        }
        let mut other = FastEvaluator::new();
        other.expect_grid(&[vec![0.1, 0.0, 0.0], vec![0.2, 0.0, 0.0], vec![0.3, 0.0, 0.0]]);
        other.load(&row(&l, &s, &ex)).unwrap();
        assert!(other.cached.iter().all(Option::is_none));
    }

    /// The batched grid path equals one-by-one evaluation (to the grid kernel's ~1e-6), for one-hot,
    /// zero and mixed candidates, and picks the same α.
    #[test]
    fn eval_all_equals_eval_for_every_candidate() {
        let (l, s, e) = synthetic_logits(11, 40_000, 2);
        let ex: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let mut ev = FastEvaluator::new();
        ev.load(&row(&l, &s, &ex)).unwrap();
        let mut cands: Vec<Vec<f32>> = (0..21).map(|k| vec![k as f32 * 0.1, 0.0]).collect();
        cands.extend((0..21).map(|k| vec![0.0, 2.0 - k as f32 * 0.1]));
        cands.extend([vec![0.5, 0.7], vec![1.5, 0.2], vec![0.0, 0.0]]);
        let all = ev.eval_all(&cands);
        // 1e-5 relative, or 5e-7 absolute: a KL is a difference of sums of order 1, each good to ~1e-7.
        let close = |g: f64, w: f64| (g - w).abs() <= 1e-5 * w.abs() + 5e-7;
        let (mut best_all, mut best_one) = (0, 0);
        for (i, (a, got)) in cands.iter().zip(&all).enumerate() {
            let want = ev.eval(a);
            assert!(close(got.loss, want.loss), "α = {a:?}: {got:?} vs {want:?}");
            assert!(
                close(got.kl_fused_large, want.kl_fused_large) && close(got.kl_large_fused, want.kl_large_fused),
                "KLs at α = {a:?}: {got:?} vs {want:?}"
            );
            if FastEvaluator::one_hot(a).is_none() {
                assert_eq!(got, &want, "off the grid, α = {a:?}");
            }
            best_all = if got.loss < all[best_all].loss { i } else { best_all };
            best_one = if want.loss < ev.eval(&cands[best_one]).loss { i } else { best_one };
        }
        assert_eq!(best_all, best_one);
    }
}
