//! Solver settings: the solver kinds, the multi-expert rule, α ranges and the paper grid.

use serde::{Deserialize, Serialize};

use super::fusion_err;
use crate::error::Result;

/// The paper's grid spacing (§A.4).
pub const GRID_STEP: f32 = 0.1;

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
            // Counted before the grid is built: `--range add=0:1e9` would otherwise allocate 2·10¹⁰ candidates.
            let points = lattice_bounds(r, self.step).map_or(0.0, |(k0, k1)| k1 - k0 + 1.0);
            if points > MAX_GRID_POINTS as f64 {
                return Err(fusion_err(
                    "ranges",
                    format!(
                        "expert {t}: [{}, {}] in steps of {} holds {points:.0} grid points (at most {MAX_GRID_POINTS})",
                        r.lo, r.hi, self.step
                    ),
                ));
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

/// The most grid points one expert's range may hold (the paper's grid has 21).
pub const MAX_GRID_POINTS: usize = 10_000;

/// The first and last multiple index of `step` inside `r` (`None` when they are not finite); computed in
/// f64 through the shortest decimal form, so a step of 0.1 yields the f32 nearest 0.9, not 9 × 0.1f32.
fn lattice_bounds(r: AlphaRange, step: f32) -> Option<(f64, f64)> {
    let dec = |x: f32| x.to_string().parse::<f64>().unwrap_or(x as f64);
    let (lo, hi, s) = (dec(r.lo), dec(r.hi), dec(step));
    let (k0, k1) = ((lo / s - 1e-6).ceil(), (hi / s + 1e-6).floor());
    (k0.is_finite() && k1.is_finite()).then_some((k0, k1))
}

/// Multiples of `step` inside `r`, ascending (see [`lattice_bounds`]); callers keep the count under
/// [`MAX_GRID_POINTS`] through [`FusionConfig::validate`].
pub(super) fn lattice(r: AlphaRange, step: f32) -> Vec<f32> {
    let s = step.to_string().parse::<f64>().unwrap_or(step as f64);
    let Some((k0, k1)) = lattice_bounds(r, step) else { return Vec::new() };
    (k0 as i64..=k1 as i64).map(|k| (k as f64 * s) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_with_too_many_grid_points_is_refused_before_the_grid_is_built() {
        let cfg = FusionConfig { ranges: vec![AlphaRange { lo: 0.0, hi: 1e9 }], ..FusionConfig::default() };
        let e = cfg.validate(1).unwrap_err().to_string();
        assert!(e.contains("grid points") && e.contains("1000000000"), "{e}");
        let ok = FusionConfig { ranges: vec![AlphaRange { lo: 0.0, hi: 100.0 }], ..FusionConfig::default() };
        ok.validate(1).unwrap();
        assert_eq!(ok.grid(1).len(), 1001);
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
}
