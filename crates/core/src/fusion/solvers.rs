//! The α solvers: the paper grid, golden-section refinement, coordinate descent and routing.

use serde::Serialize;

use super::config::{AlphaRange, FusionConfig, MultiRule, Solver, lattice};
use super::loss::{Constants, Eval, Evaluator};

/// The solver's answer for one row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// α per expert.
    pub alpha: Vec<f32>,
    /// ℒ and the fused-side KLs at `alpha` (`None` for expert-only, where no fusion happens).
    pub eval: Option<Eval>,
    /// Loss evaluations spent.
    pub evaluations: usize,
}

/// Chooses α for one row.
pub fn solve(cfg: &FusionConfig, ev: &mut impl Evaluator) -> Choice {
    let t = ev.constants().expected_delta.len();
    match cfg.solver {
        Solver::LargeOnly => {
            // KL(P‖P) = 0 in both directions: no pass over the vocabulary needed.
            Choice { alpha: vec![0.0; t], eval: Some(ev.constants().eval(0.0, 0.0)), evaluations: 0 }
        }
        Solver::ExpertOnly => Choice { alpha: vec![0.0; t], eval: None, evaluations: 0 },
        Solver::Static { alpha } => {
            let a = vec![alpha; t];
            let e = ev.eval(&a);
            Choice { alpha: a, eval: Some(e), evaluations: 1 }
        }
        Solver::Paper | Solver::Refine | Solver::Joint if t > 1 && cfg.multi == MultiRule::Route => {
            let k = route(ev.constants());
            // Only expert k may move; the others' lattices shrink to {0}.
            let mut one = cfg.clone();
            one.multi = MultiRule::Centroid;
            one.ranges = (0..t).map(|j| if j == k { cfg.range(j) } else { AlphaRange { lo: 0.0, hi: 0.0 } }).collect();
            search(&one, &mut Routed { inner: ev, k })
        }
        Solver::Paper | Solver::Refine | Solver::Joint => search(cfg, ev),
    }
}

/// The searching solvers over the evaluator's full loss.
fn search(cfg: &FusionConfig, ev: &mut impl Evaluator) -> Choice {
    match cfg.solver {
        Solver::Refine => refine(cfg, ev),
        Solver::Joint => joint(cfg, ev),
        _ => scan(&cfg.grid(ev.constants().expected_delta.len()), ev).0,
    }
}

/// The expert [`MultiRule::Route`] picks: the largest symmetric KL shift from the small base, the
/// first one on ties (so identical experts route to expert 0).
pub fn route(c: &Constants) -> usize {
    let shift = |t: usize| c.kl_expert_base[t] + c.kl_base_expert[t];
    (0..c.kl_expert_base.len()).fold(0, |best, t| if shift(t) > shift(best) { t } else { best })
}

/// An evaluator whose loss keeps only expert `k`'s two terms: the single-task loss of the routed
/// expert, with the fused-side KLs of the full α (the other α_t are 0).
struct Routed<'a, E> {
    inner: &'a mut E,
    k: usize,
}

impl<E: Evaluator> Routed<'_, E> {
    fn own(&self, e: Eval) -> Eval {
        let c = self.inner.constants();
        let (cf, cr) = (c.kl_expert_base[self.k], c.kl_base_expert[self.k]);
        Eval { loss: (e.kl_fused_large - cf).powi(2) + (e.kl_large_fused - cr).powi(2), ..e }
    }
}

impl<E: Evaluator> Evaluator for Routed<'_, E> {
    fn constants(&self) -> &Constants {
        self.inner.constants()
    }

    fn eval(&mut self, alpha: &[f32]) -> Eval {
        let e = self.inner.eval(alpha);
        self.own(e)
    }

    fn eval_all(&mut self, cands: &[Vec<f32>]) -> Vec<Eval> {
        let all = self.inner.eval_all(cands);
        all.into_iter().map(|e| self.own(e)).collect()
    }
}

/// Scans candidates in order; the first strict minimum wins (§A.4). Also returns each candidate's loss.
pub fn scan(cands: &[Vec<f32>], ev: &mut impl Evaluator) -> (Choice, Vec<Eval>) {
    let all = ev.eval_all(cands);
    let mut best: Option<(usize, Eval)> = None;
    for (i, &e) in all.iter().enumerate() {
        // `!(e.loss >= b.loss)` would let NaN win; a NaN loss never replaces a number.
        if best.as_ref().is_none_or(|(_, b)| e.loss < b.loss || (b.loss.is_nan() && !e.loss.is_nan())) {
            best = Some((i, e));
        }
    }
    match best {
        Some((i, e)) => (Choice { alpha: cands[i].clone(), eval: Some(e), evaluations: cands.len() }, all),
        // Only an unvalidated configuration has no candidates: no choice, no fusion (α stays empty).
        None => (Choice { alpha: Vec::new(), eval: None, evaluations: 0 }, all),
    }
}

fn refine(cfg: &FusionConfig, ev: &mut impl Evaluator) -> Choice {
    let t = ev.constants().expected_delta.len();
    let cands = cfg.grid(t);
    let (mut best, losses) = scan(&cands, ev);
    let mut evaluations = best.evaluations;
    for k in 0..t {
        // This expert's best grid point (first minimum among its candidates).
        let mine = || cands.iter().zip(&losses).filter(|(c, _)| c.iter().enumerate().all(|(j, &v)| j == k || v == 0.0));
        let Some((c0, e0)) = mine().reduce(|a, b| if b.1.loss < a.1.loss { b } else { a }) else { continue };
        let r = cfg.range(k);
        let (lo, hi) = ((c0[k] - cfg.step).max(r.lo), (c0[k] + cfg.step).min(r.hi));
        let mut at = |a: f32| {
            let mut v = vec![0.0; t];
            v[k] = a;
            ev.eval(&v)
        };
        let (a, e, n) = golden(lo, hi, cfg.tol, &mut at);
        evaluations += n;
        let cur = best.eval.map_or(f64::INFINITY, |b| b.loss);
        if e.loss < e0.loss.min(cur) {
            let mut v = vec![0.0; t];
            v[k] = a;
            best = Choice { alpha: v, eval: Some(e), evaluations: 0 };
        }
    }
    best.evaluations = evaluations;
    best
}

fn joint(cfg: &FusionConfig, ev: &mut impl Evaluator) -> Choice {
    let t = ev.constants().expected_delta.len();
    let (start, _) = scan(&cfg.grid(t), ev);
    let Some(mut cur) = start.eval else { return start };
    let mut alpha = start.alpha;
    let mut evaluations = start.evaluations;
    // The first sweep scans each coordinate's whole grid (the landscape is not convex); later sweeps
    // only polish each coordinate inside ±step, which is where coordinate descent moves once settled.
    for sweep in 0..4 {
        let mut moved = false;
        for k in 0..t {
            let r = cfg.range(k);
            let old = alpha[k];
            let (mut best_a, mut best_e) = (old, cur);
            if sweep == 0 {
                let cands: Vec<Vec<f32>> = lattice(r, cfg.step)
                    .into_iter()
                    .map(|a| {
                        let mut v = alpha.clone();
                        v[k] = a;
                        v
                    })
                    .collect();
                for (v, e) in cands.iter().zip(ev.eval_all(&cands)) {
                    evaluations += 1;
                    if e.loss < best_e.loss {
                        (best_a, best_e) = (v[k], e);
                    }
                }
            }
            let (lo, hi) = ((best_a - cfg.step).max(r.lo), (best_a + cfg.step).min(r.hi));
            let mut at = |a: f32| {
                let mut v = alpha.clone();
                v[k] = a;
                ev.eval(&v)
            };
            let (a, e, n) = golden(lo, hi, cfg.tol, &mut at);
            evaluations += n;
            if e.loss < best_e.loss {
                (best_a, best_e) = (a, e);
            }
            if best_e.loss < cur.loss {
                moved |= (best_a - old).abs() > cfg.tol;
                alpha[k] = best_a;
                cur = best_e;
            }
        }
        if !moved {
            break;
        }
    }
    Choice { alpha, eval: Some(cur), evaluations }
}

/// Golden-section minimisation of `f` on [lo, hi] until the bracket is narrower than `tol`; returns
/// the best point seen, its value and the evaluation count.
fn golden(lo: f32, hi: f32, tol: f32, f: &mut dyn FnMut(f32) -> Eval) -> (f32, Eval, usize) {
    const INV_PHI: f64 = 0.618_033_988_749_895;
    let (mut a, mut b) = (lo as f64, hi as f64);
    let mut c = b - INV_PHI * (b - a);
    let mut d = a + INV_PHI * (b - a);
    let (mut fc, mut fd) = (f(c as f32), f(d as f32));
    let mut n = 2;
    let mut best = if fd.loss < fc.loss { (d, fd) } else { (c, fc) };
    while b - a > tol as f64 {
        if fc.loss <= fd.loss {
            (b, d, fd) = (d, c, fc);
            c = b - INV_PHI * (b - a);
            fc = f(c as f32);
            if fc.loss < best.1.loss {
                best = (c, fc);
            }
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + INV_PHI * (b - a);
            fd = f(d as f32);
            if fd.loss < best.1.loss {
                best = (d, fd);
            }
        }
        n += 1;
    }
    (best.0 as f32, best.1, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::test_support::{row, solve_fast, solve_ref};
    use crate::fusion::{FastEvaluator, ReferenceEvaluator, fused_logits, synthetic_logits};

    /// §A.12.3: adding a constant to any model's logits changes neither α nor ℒ nor P̃.
    #[test]
    fn shift_invariance() {
        for seed in 0..5 {
            let (l, s, e) = synthetic_logits(10 + seed, 700, 2);
            let ex: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
            let a = solve_ref(&FusionConfig::default(), row(&l, &s, &ex));
            let l2: Vec<f32> = l.iter().map(|v| v - 3.25).collect();
            let s2: Vec<f32> = s.iter().map(|v| v + 1.5).collect();
            let e2: Vec<Vec<f32>> =
                e.iter().enumerate().map(|(t, r)| r.iter().map(|v| v + t as f32 - 0.75).collect()).collect();
            let ex2: Vec<&[f32]> = e2.iter().map(Vec::as_slice).collect();
            let b = solve_ref(&FusionConfig::default(), row(&l2, &s2, &ex2));
            assert_eq!(a.alpha, b.alpha, "seed {seed}");
            let (la, lb) = (a.eval.unwrap().loss, b.eval.unwrap().loss);
            // The shifted inputs are themselves rounded to f32, hence 1e-5 rather than 1e-15.
            assert!((la - lb).abs() <= 1e-5 * la.max(1e-6), "seed {seed}: {la} vs {lb}");
            let pa = crate::reference::softmax(&fused_logits(&row(&l, &s, &ex), &a.alpha, false));
            let pb = crate::reference::softmax(&fused_logits(&row(&l2, &s2, &ex2), &b.alpha, false));
            for (x, y) in pa.iter().zip(&pb) {
                assert!((x - y).abs() < 1e-6);
            }
        }
    }

    /// §A.12.5 and §A.12.6: both fused-side KLs grow with α, and the grid argmin sits next to or inside
    /// the bracket [min(α₁*, α₂*), max(α₁*, α₂*)].
    #[test]
    fn monotone_and_bracketed() {
        for seed in 0..6 {
            let (l, s, e) = synthetic_logits(20 + seed, 800, 1);
            let ex = [e[0].as_slice()];
            let mut re = ReferenceEvaluator::new(row(&l, &s, &ex)).unwrap();
            let evs: Vec<Eval> = (0..=40).map(|k| re.eval(&[k as f32 * 0.05])).collect();
            for w in evs.windows(2) {
                assert!(w[1].kl_fused_large >= w[0].kl_fused_large - 1e-12);
                assert!(w[1].kl_large_fused >= w[0].kl_large_fused - 1e-12);
            }
            let (cf, cr) = (re.constants().kl_expert_base[0], re.constants().kl_base_expert[0]);
            let root = |re: &mut ReferenceEvaluator, fwd: bool, target: f64| {
                let (mut a, mut b) = (0.0f32, 2.0f32);
                let f = |re: &mut ReferenceEvaluator, x: f32| {
                    let e = re.eval(&[x]);
                    if fwd { e.kl_fused_large } else { e.kl_large_fused }
                };
                if f(re, b) < target {
                    return b;
                }
                for _ in 0..40 {
                    let m = 0.5 * (a + b);
                    if f(re, m) < target { a = m } else { b = m }
                }
                a
            };
            let (a1, a2) = (root(&mut re, true, cf), root(&mut re, false, cr));
            let (lo, hi) = (a1.min(a2), a1.max(a2));
            let c = solve(&FusionConfig::default(), &mut re);
            let a = c.alpha[0];
            assert!(a >= lo - 0.1 - 1e-6 && a <= hi + 0.1 + 1e-6, "seed {seed}: {a} outside [{lo}, {hi}] ± 0.1");
        }
    }

    /// §A.12.7: with L = S the expert's own distribution is reachable, ℒ(1) = 0 and α = 1 is chosen.
    #[test]
    fn self_transfer_picks_one() {
        let (_, s, e) = synthetic_logits(4, 600, 1);
        let ex = [e[0].as_slice()];
        let r = row(&s, &s, &ex);
        for c in [solve_ref(&FusionConfig::default(), r), solve_fast(&FusionConfig::default(), r)] {
            assert!((c.alpha[0] - 1.0).abs() < 1e-6, "{:?}", c.alpha);
            assert!(c.eval.unwrap().loss < 1e-9);
        }
        let z = fused_logits(&r, &[1.0], false);
        for (a, b) in z.iter().zip(&e[0]) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    /// §A.12.8: an expert equal to the base leaves ℒ constant, so the first candidate (α = 0) wins.
    #[test]
    fn null_expert_picks_zero() {
        let (l, s, _) = synthetic_logits(5, 400, 0);
        let ex = [s.as_slice(), s.as_slice()];
        let r = row(&l, &s, &ex);
        for solver in [Solver::Paper, Solver::Refine, Solver::Joint] {
            let c = solve_ref(&FusionConfig::with_solver(solver), r);
            assert_eq!(c.alpha, vec![0.0, 0.0], "{solver:?}");
            assert_eq!(fused_logits(&r, &c.alpha, false), l);
        }
    }

    /// §A.12.9 and §A.12.10: multi-expert search is one-hot over T × |grid| candidates; ranges hold
    /// and the answer is on the 0.1 lattice.
    #[test]
    fn one_hot_and_ranges() {
        for seed in 0..4 {
            let (l, s, e) = synthetic_logits(30 + seed, 900, 3);
            let ex: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
            let c = solve_ref(&FusionConfig::default(), row(&l, &s, &ex));
            assert_eq!(c.evaluations, 63);
            assert!(c.alpha.iter().filter(|&&a| a != 0.0).count() <= 1);
            let ranges =
                vec![AlphaRange { lo: 0.3, hi: 1.2 }, AlphaRange { lo: 0.5, hi: 0.5 }, AlphaRange { lo: 1.0, hi: 2.0 }];
            let cfg = FusionConfig { ranges: ranges.clone(), ..Default::default() };
            cfg.validate(3).unwrap();
            let c = solve_ref(&cfg, row(&l, &s, &ex));
            assert_eq!(c.evaluations, 10 + 1 + 11);
            let t = c.alpha.iter().position(|&a| a != 0.0).unwrap();
            let a = c.alpha[t];
            assert!(a >= ranges[t].lo && a <= ranges[t].hi);
            assert!(((a * 10.0).round() - a * 10.0).abs() < 1e-5);
        }
    }

    /// `route` sends the step to the expert that moved furthest from the base and then solves exactly
    /// that expert's single-task problem: an expert equal to the base is never chosen and changes
    /// nothing, unlike the centroid, which it pulls towards zero shift.
    #[test]
    fn route_solves_the_furthest_experts_own_problem() {
        let (l, s, e) = synthetic_logits(50, 800, 2);
        for solver in [Solver::Paper, Solver::Refine, Solver::Joint] {
            let single = solve_ref(&FusionConfig::with_solver(solver), row(&l, &s, &[e[1].as_slice()]));
            let ex = [s.as_slice(), e[1].as_slice(), e[0].as_slice()];
            let cfg = FusionConfig { multi: MultiRule::Route, ..FusionConfig::with_solver(solver) };
            let routed = solve_ref(&cfg, row(&l, &s, &ex));
            assert_eq!(routed.alpha, vec![0.0, single.alpha[0], 0.0], "{solver:?}");
            assert!((routed.eval.unwrap().loss - single.eval.unwrap().loss).abs() < 1e-9, "{solver:?}");
            let fast = solve_fast(&cfg, row(&l, &s, &ex));
            assert_eq!(fast.alpha.iter().position(|&a| a != 0.0), Some(1), "{solver:?}");
            let centroid = solve_ref(&FusionConfig::with_solver(solver), row(&l, &s, &ex));
            assert!(centroid.alpha[1] <= routed.alpha[1], "{solver:?}: {centroid:?} vs {routed:?}");
        }
        // Expert 1 of synthetic_logits has the larger σ, so the larger shift.
        let mut f = FastEvaluator::new();
        let c = f.load(&row(&l, &s, &[e[0].as_slice(), e[1].as_slice()])).unwrap();
        assert_eq!(route(c), 1);
        assert_eq!(MultiRule::parse("route").unwrap().name(), "route");
        assert!(MultiRule::parse("mean").unwrap_err().to_string().contains("mean"));
    }

    /// The continuous solvers never do worse than the grid, and the fast evaluator picks the same α.
    #[test]
    fn refine_and_joint_improve_on_the_grid() {
        for seed in 0..4 {
            let (l, s, e) = synthetic_logits(40 + seed, 1000, 2);
            let ex: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
            let r = row(&l, &s, &ex);
            let p = solve_ref(&FusionConfig::default(), r).eval.unwrap().loss;
            for solver in [Solver::Refine, Solver::Joint] {
                let c = solve_ref(&FusionConfig::with_solver(solver), r);
                assert!(c.eval.unwrap().loss <= p, "{solver:?}");
                assert!(c.alpha.iter().all(|&a| (0.0..=2.0).contains(&a)));
            }
            let (a, b) = (solve_ref(&FusionConfig::default(), r), solve_fast(&FusionConfig::default(), r));
            if a.alpha != b.alpha {
                // Only a near-tie may flip between f64 and f32 sums.
                let (la, lb) = (a.eval.unwrap().loss, b.eval.unwrap().loss);
                assert!((la - lb).abs() <= 1e-5 * la.max(1e-6), "seed {seed}: {a:?} vs {b:?}");
            }
        }
    }

    /// The continuous solvers must beat the grid *strictly* where the optimum lies between grid points.
    /// Constructed so: S = 0 over 64 tokens; the expert moves 30 tokens up and 30 down by ε = 0.25
    /// (d = ±ε) and leaves 4 neutral (d = 0); L = S except for the neutral tokens at +2.32, so they hold
    /// 40% of P but 6% of Q. Then Var_P(d) < Var_Q(d) and, to second order, both KL terms of ℒ vanish
    /// at α* = √(Var_Q(d) / Var_P(d)) ≈ 1.25; the ± symmetry cancels the third-order terms, so the
    /// true minimum is close to 0 midway between 1.2 and 1.3, where the grid's best has ~700× the loss.
    #[test]
    fn refine_and_joint_strictly_beat_the_grid_between_grid_points() {
        let (eps, lift) = (0.25f32, 2.32f32);
        let s = vec![0.0f32; 64];
        let l: Vec<f32> = (0..64).map(|i| if i >= 60 { lift } else { 0.0 }).collect();
        let e: Vec<f32> = (0..64)
            .map(|i| match i {
                0..30 => eps,
                30..60 => -eps,
                _ => 0.0,
            })
            .collect();
        let ex = [e.as_slice()];
        let r = row(&l, &s, &ex);
        let off_grid = |a: f32| ((a * 10.0).round() - a * 10.0).abs() / 10.0;
        // The continuous optimum, by a fine scan of the f64 reference loss over the whole range.
        let mut re = ReferenceEvaluator::new(r).unwrap();
        let (a_star, l_star) = (0..=20_000)
            .map(|k| k as f32 * 1e-4)
            .map(|a| (a, re.eval(&[a]).loss))
            .fold((0.0, f64::INFINITY), |b, c| if c.1 < b.1 { c } else { b });
        assert!(off_grid(a_star) > 0.04, "the optimum α* = {a_star} lies between grid points");
        let grid = solve_ref(&FusionConfig::default(), r);
        let g = grid.eval.unwrap().loss;
        assert!(off_grid(grid.alpha[0]) < 1e-6 && g > 100.0 * l_star, "grid {grid:?} vs α* = {a_star} ({l_star})");
        for solver in [Solver::Refine, Solver::Joint] {
            let cfg = FusionConfig::with_solver(solver);
            for (name, c) in [("reference", solve_ref(&cfg, r)), ("fast", solve_fast(&cfg, r))] {
                let a = c.alpha[0];
                // Judged by the f64 loss, whichever evaluator steered the search.
                let loss = re.eval(&c.alpha).loss;
                assert!(loss < 0.01 * g, "{solver:?}/{name}: ℒ({a}) = {loss} is not clearly below the grid's {g}");
                assert!(c.eval.unwrap().loss < 0.01 * g, "{solver:?}/{name}: reported {:?}", c.eval);
                assert!((a - a_star).abs() < 2e-3, "{solver:?}/{name}: α = {a}, optimum {a_star}");
                assert!(off_grid(a) > 0.04, "{solver:?}/{name}: α = {a} is off the 0.1 grid");
            }
        }
    }
}
