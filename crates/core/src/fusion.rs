//! Dynamic Logit Fusion (DLF) math: per-step constants, the KL-matching loss, the α solvers and the
//! fused logits, with an f64 reference evaluator (the oracle for the WGSL kernel) and a fast f32 one
//! (the CPU decode path). Spec: `shared/design/dlf_twin.md`, Part A.
//!
//! Notation: L, S, E_t are the large base's, small base's and expert t's logits for one batch row;
//! d_t = E_t − S; P = softmax(L), Q = softmax(S), Q_t = softmax(E_t); fused z = L + Σ_t α_t d_t.
//! The loss is Σ_t (KL(P̃‖P) − KL(Q_t‖Q))² + (KL(P‖P̃) − KL(Q‖Q_t))² (§A.3), evaluated with the
//! closed forms of §A.5 so no P̃ is materialised: with D = Σ α_t d_t and Λ = LSE(L + D) − LSE(L),
//! KL(P̃‖P) = E_P̃[D] − Λ and KL(P‖P̃) = Λ − E_P[D].
//!
//! Choices the paper leaves open (all recorded in ARCHITECTURE.md):
//! - Every KL uses temperature 1 over the raw logits; sampling temperature applies only to the fused
//!   logits afterwards.
//! - Non-finite logits (−∞ masks, NaN) remove the token from the *support*: it is banned in the fused
//!   logits and every distribution is normalised over the tokens all models allow. So a mask shared by
//!   all models keeps α = 0 ⇒ P̃ = P exactly, and no KL can become infinite.
//! - KL values below zero (f32 rounding) are clamped to 0.
//! - `refine` and `joint` start from the paper grid's winner; see [`Solver`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The paper's grid spacing (§A.4).
pub const GRID_STEP: f32 = 0.1;

/// Stand-in for a banned token in the fast evaluator: far enough below any real logit that its
/// exponential is exactly 0, finite so that `base + a·d` never makes NaN.
const BANNED: f32 = -1.0e30;

/// How α is chosen at each step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Solver {
    /// The paper's grid (lo..hi step 0.1, ascending), first strict minimum wins; with several experts
    /// a one-hot search over T × |grid| candidates with the full T-term loss per candidate.
    Paper,
    /// The paper grid, then golden-section search of each expert's one-hot line inside
    /// [a − step, a + step] ∩ [lo, hi] around that expert's best grid point, to `tol`. The grid winner
    /// is kept unless the refined point is strictly better.
    Refine,
    /// All α_t at once: coordinate descent in [lo, hi]^T from the paper grid's winner. The first sweep
    /// scans each coordinate's grid and refines by golden section; up to three more sweeps refine each
    /// coordinate within ±step, stopping early when no α_t moves by more than `tol`.
    Joint,
    /// A fixed α for every expert (proxy-tuning at α = 1).
    Static {
        /// The weight.
        alpha: f32,
    },
    /// The large model alone (α = 0).
    LargeOnly,
    /// The first expert's logits alone.
    ExpertOnly,
}

impl Solver {
    /// Parses the CLI / JSON name (`paper`, `refine`, `joint`, `static`, `large-only`, `expert-only`);
    /// `static` takes `alpha`.
    pub fn parse(name: &str, alpha: Option<f32>) -> Result<Self> {
        Ok(match name {
            "paper" => Self::Paper,
            "refine" => Self::Refine,
            "joint" => Self::Joint,
            "static" => Self::Static { alpha: alpha.unwrap_or(1.0) },
            "large-only" => Self::LargeOnly,
            "expert-only" => Self::ExpertOnly,
            other => {
                return Err(fusion_err(
                    "solver",
                    format!("unknown solver '{other}' (paper, refine, joint, static, large-only, expert-only)"),
                ));
            }
        })
    }

    /// The name [`Self::parse`] accepts.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Paper => "paper",
            Self::Refine => "refine",
            Self::Joint => "joint",
            Self::Static { .. } => "static",
            Self::LargeOnly => "large-only",
            Self::ExpertOnly => "expert-only",
        }
    }
}

/// How several experts (T > 1) share a step. The paper's rule is [`MultiRule::Centroid`]; the
/// alternative is a choice of ours, recorded in ARCHITECTURE.md.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MultiRule {
    /// The paper (§A.3/§A.4): every one-hot candidate is scored by the full T-term loss, so the fused
    /// shift aims at the centroid of all experts' KL shifts, relevant or not.
    #[default]
    Centroid,
    /// Route each step to the expert whose distribution moved furthest from the small base
    /// (largest KL(Q_t‖Q) + KL(Q‖Q_t), first on ties), then solve that expert's single-task loss; the
    /// other experts get α = 0. Off-task experts that stay close to the base then cannot dilute the
    /// on-task one's shift, which is what the centroid does by construction.
    Route,
}

impl MultiRule {
    /// Parses the CLI / JSON name (`centroid`, `route`).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "centroid" => Ok(Self::Centroid),
            "route" => Ok(Self::Route),
            other => Err(fusion_err("multi", format!("unknown multi-expert rule '{other}' (centroid, route)"))),
        }
    }

    /// The name [`Self::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Centroid => "centroid",
            Self::Route => "route",
        }
    }
}

/// Search range of one expert's α.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlphaRange {
    /// Lower bound (≥ 0).
    pub lo: f32,
    /// Upper bound.
    pub hi: f32,
}

impl Default for AlphaRange {
    /// The paper's [0, 2].
    fn default() -> Self {
        Self { lo: 0.0, hi: 2.0 }
    }
}

/// Solver settings shared by every step and row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionConfig {
    /// How α is chosen.
    pub solver: Solver,
    /// Per-expert ranges; missing entries default to [0, 2].
    pub ranges: Vec<AlphaRange>,
    /// Grid spacing (the paper's 0.1).
    pub step: f32,
    /// Continuous solvers stop when the bracket is narrower than this.
    pub tol: f32,
    /// How several experts share a step (ignored for one expert and for the fixed-α solvers).
    #[serde(default)]
    pub multi: MultiRule,
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self { solver: Solver::Paper, ranges: Vec::new(), step: GRID_STEP, tol: 1e-4, multi: MultiRule::Centroid }
    }
}

impl FusionConfig {
    /// The configuration with `solver` and the paper's defaults otherwise.
    pub fn with_solver(solver: Solver) -> Self {
        Self { solver, ..Self::default() }
    }

    /// Range of expert `t`.
    pub fn range(&self, t: usize) -> AlphaRange {
        self.ranges.get(t).copied().unwrap_or_default()
    }

    /// Rejects ranges, steps and static weights that are not finite or out of order.
    pub fn validate(&self, experts: usize) -> Result<()> {
        if experts == 0 {
            return Err(fusion_err("experts", "DLF needs at least one expert".into()));
        }
        if self.ranges.len() > experts {
            return Err(fusion_err("ranges", format!("{} ranges for {experts} experts", self.ranges.len())));
        }
        if !(self.step.is_finite() && self.step > 0.0) {
            return Err(fusion_err("step", format!("{} is not a positive number", self.step)));
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return Err(fusion_err("tol", format!("{} is not a positive number", self.tol)));
        }
        for t in 0..experts {
            let r = self.range(t);
            if !(r.lo.is_finite() && r.hi.is_finite() && 0.0 <= r.lo && r.lo <= r.hi) {
                return Err(fusion_err("ranges", format!("expert {t}: [{}, {}] is not 0 ≤ lo ≤ hi", r.lo, r.hi)));
            }
            if lattice(r, self.step).is_empty() {
                return Err(fusion_err(
                    "ranges",
                    format!("expert {t}: [{}, {}] holds no multiple of {}", r.lo, r.hi, self.step),
                ));
            }
        }
        if let Solver::Static { alpha } = self.solver
            && !alpha.is_finite()
        {
            return Err(fusion_err("alpha", format!("{alpha} is not finite")));
        }
        Ok(())
    }

    /// The candidate α vectors of the grid, in scan order: expert-major, ascending multiples of `step`
    /// inside each expert's range, one-hot (α = 0 appears once per expert, as in the paper's T × 21).
    pub fn grid(&self, experts: usize) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        for t in 0..experts {
            for a in lattice(self.range(t), self.step) {
                let mut v = vec![0.0; experts];
                v[t] = a;
                out.push(v);
            }
        }
        out
    }
}

/// Multiples of `step` inside `r`, ascending; computed in f64 so 0.3 is the f32 nearest 0.3.
fn lattice(r: AlphaRange, step: f32) -> Vec<f32> {
    // Through the shortest decimal form, so a step of 0.1 yields the f32 nearest 0.9, not 9 × 0.1f32.
    let dec = |x: f32| x.to_string().parse::<f64>().unwrap_or(x as f64);
    let (lo, hi, s) = (dec(r.lo), dec(r.hi), dec(step));
    let k0 = (lo / s - 1e-6).ceil() as i64;
    let k1 = (hi / s + 1e-6).floor() as i64;
    (k0..=k1).map(|k| (k as f64 * s) as f32).collect()
}

fn fusion_err(field: &str, reason: String) -> Error {
    Error::Fusion { field: field.into(), reason }
}

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
    fn check(&self) -> Result<usize> {
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

    fn allowed(&self, v: usize) -> bool {
        self.large[v].is_finite() && self.base[v].is_finite() && self.experts.iter().all(|e| e[v].is_finite())
    }
}

/// The α-independent quantities of one step (§A.5).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Constants {
    /// LSE(L) over the support.
    pub lse_large: f64,
    /// E_P[d_t] per expert.
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

    /// Σ_t α_t E_P[d_t] = E_P[D].
    fn expected_shift(&self, alpha: &[f32]) -> f64 {
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
    /// The fused logits of the loaded row (same values as [`fused_logits`], from the sanitised
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

fn max_shift_piece(base: &[f32], d: &[f32], a: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features this function is compiled for were just detected.
        return unsafe { max_shift_avx2(base, d, a) };
    }
    max_shift_impl(base, d, a)
}

fn exp_dot_shift_piece(base: &[f32], d: &[f32], a: f32, m: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features this function is compiled for were just detected.
        return unsafe { exp_dot_shift_avx2(base, d, a, m) };
    }
    exp_dot_shift_impl(base, d, a, m)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_shift_avx2(base: &[f32], d: &[f32], a: f32) -> f32 {
    max_shift_impl(base, d, a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_dot_shift_avx2(base: &[f32], d: &[f32], a: f32, m: f32) -> (f64, f64) {
    exp_dot_shift_impl(base, d, a, m)
}

const LANES: usize = 8;
const CHUNK: usize = 1024;

#[inline(always)]
fn max_shift_impl(base: &[f32], d: &[f32], a: f32) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let (bc, dc) = (base.chunks_exact(LANES), d.chunks_exact(LANES));
    let (br, dr) = (bc.remainder(), dc.remainder());
    for (b, d) in bc.zip(dc) {
        for k in 0..LANES {
            acc[k] = acc[k].max(b[k] + a * d[k]);
        }
    }
    let tail = br.iter().zip(dr).map(|(&b, &d)| b + a * d).fold(f32::NEG_INFINITY, f32::max);
    acc.iter().copied().fold(tail, f32::max)
}

#[inline(always)]
fn exp_dot_shift_impl(base: &[f32], d: &[f32], a: f32, m: f32) -> (f64, f64) {
    let (mut s, mut sd) = (0f64, 0f64);
    let mut e = [0f32; CHUNK];
    for (bch, dch) in base.chunks(CHUNK).zip(d.chunks(CHUNK)) {
        let n = bch.len().min(dch.len());
        let (bch, dch, e) = (&bch[..n], &dch[..n], &mut e[..n]);
        // An element-wise map (vectorises) and then lane-wise sums (no reassociation needed).
        for ((e, &b), &d) in e.iter_mut().zip(bch).zip(dch) {
            *e = exp_fast(b + a * d - m);
        }
        let (mut es, mut eds) = ([0f32; LANES], [0f32; LANES]);
        for (ec, dc) in e.chunks_exact(LANES).zip(dch.chunks_exact(LANES)) {
            for k in 0..LANES {
                es[k] += ec[k];
                eds[k] += ec[k] * dc[k];
            }
        }
        let tail = n - n % LANES;
        for (&ev, &dv) in e[tail..].iter().zip(&dch[tail..]) {
            es[0] += ev;
            eds[0] += ev * dv;
        }
        s += es.iter().map(|&v| v as f64).sum::<f64>();
        sd += eds.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s, sd)
}

/// e^x for x ≤ 88 with relative error ≈ 1e-7; exactly 0 below −87 (where f32 e^x is subnormal).
/// Branch-free so that the loops above vectorise: Cody–Waite range reduction to |r| ≤ ln2/2, a
/// degree-6 Taylor polynomial, and the power of two assembled in the exponent bits.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer.
    let xc = x.clamp(-87.0, 88.0);
    let biased = xc * LOG2E + ROUND;
    let n = biased - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n sits in the low mantissa bits of `biased`; integer bit arithmetic (no saturating float→int
    // cast) keeps the loop vectorisable.
    let ni = biased.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

/// Synthetic logits with the structure of real ones (shared signal, model noise, expert shifts),
/// for property tests and benchmarks: `(large, base, experts)`, each `vocab` long.
pub fn synthetic_logits(seed: u64, vocab: usize, experts: usize) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = crate::sampling::Rng::new(seed);
    let mut normal = move || {
        // Box–Muller; 1 − u keeps the logarithm finite.
        let (u, v) = (1.0 - rng.next_f64(), rng.next_f64());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let shared: Vec<f32> = (0..vocab).map(|_| 2.5 * normal()).collect();
    let large: Vec<f32> = shared.iter().map(|&g| g + 0.8 * normal() + 1.5).collect();
    let base: Vec<f32> = shared.iter().map(|&g| g + 1.0 * normal() - 0.7).collect();
    let ex = (0..experts)
        .map(|t| {
            let sigma = 0.3 + 0.4 * t as f32;
            base.iter().map(|&s| s + sigma * normal() + 0.2 * t as f32).collect()
        })
        .collect();
    (large, base, ex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_is_accurate() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_fast(x) as f64, (x as f64).exp());
            assert!((got - want).abs() <= 3e-7 * want, "exp({x}) = {got}, want {want}");
            x += 0.0137;
        }
        assert_eq!(exp_fast(-1.0e30), 0.0);
        assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn grid_is_the_papers() {
        let g = FusionConfig::default().grid(1);
        assert_eq!(g.len(), 21);
        assert_eq!(g[0], vec![0.0]);
        assert_eq!(g[3], vec![0.3]);
        assert_eq!(g[20], vec![2.0]);
        assert_eq!(FusionConfig::default().grid(3).len(), 63);
    }

    #[test]
    fn bad_config_is_named() {
        let cfg = FusionConfig { ranges: vec![AlphaRange { lo: 1.0, hi: 0.5 }], ..Default::default() };
        let e = cfg.validate(1).unwrap_err().to_string();
        assert!(e.contains("ranges") && e.contains("expert 0"), "{e}");
        assert!(Solver::parse("bogus", None).unwrap_err().to_string().contains("bogus"));
    }

    fn row<'a>(l: &'a [f32], s: &'a [f32], e: &'a [&'a [f32]]) -> RowLogits<'a> {
        RowLogits { large: l, base: s, experts: e }
    }

    fn solve_ref(cfg: &FusionConfig, r: RowLogits) -> Choice {
        solve(cfg, &mut ReferenceEvaluator::new(r).unwrap())
    }

    fn solve_fast(cfg: &FusionConfig, r: RowLogits) -> Choice {
        let mut f = FastEvaluator::new();
        f.load(&r).unwrap();
        solve(cfg, &mut f)
    }

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
