//! Dynamic Logit Fusion (DLF) math: per-step constants, the KL-matching loss, the α solvers and the
//! fused logits, with an f64 reference evaluator (the oracle for the WGSL kernel) and a fast f32 one
//! (the CPU decode path). Spec: `shared/design/dlf_twin.md`, Part A.
//!
//! Notation: L, S, E_t are the large base's, small base's and expert t's logits for one batch row;
//! d_t = E_t − S; P = softmax(L), Q = softmax(S), Q_t = softmax(E_t); fused z = L + Σ_t α_t d_t.
//! The loss is Σ_t (KL(P̃‖P) − KL(Q_t‖Q))² + (KL(P‖P̃) − KL(Q‖Q_t))² (§A.3), evaluated with the
//! closed forms of §A.5 so no P̃ is materialised: with D = Σ α_t d_t and Λ = LSE(L + D) − LSE(L),
//! KL(P̃‖P) = E_P̃\[D\] − Λ and KL(P‖P̃) = Λ − E_P\[D\].
//!
//! Choices the paper leaves open (all recorded in ARCHITECTURE.md):
//! - Every KL uses temperature 1 over the raw logits; sampling temperature applies only to the fused
//!   logits afterwards.
//! - Non-finite logits (−∞ masks, NaN) remove the token from the *support*: it is banned in the fused
//!   logits and every distribution is normalised over the tokens all models allow. So a mask shared by
//!   all models keeps α = 0 ⇒ P̃ = P exactly, and no KL can become infinite.
//! - KL values below zero (f32 rounding) are clamped to 0.
//! - `refine` and `joint` start from the paper grid's winner; see [`Solver`].
//!
//! Layout: `config` (solver settings, the grid), `loss` (row, constants, ℒ, fused logits), `solvers`
//! (grid, refine, joint, route), `reference` (the f64 oracle), `fast` (the CPU decode evaluator) and
//! `simd` (its kernels). Every public item is re-exported here, so paths stay
//! `chorus_core::fusion::X`.

mod config;
mod fast;
mod loss;
mod reference;
mod simd;
mod solvers;
mod synthetic;
#[cfg(test)]
mod test_support;

pub use config::{AlphaRange, FusionConfig, GRID_STEP, MAX_GRID_POINTS, MultiRule, Solver};
pub use fast::FastEvaluator;
pub use loss::{Constants, Eval, Evaluator, RowLogits, fused_logits};
pub use reference::ReferenceEvaluator;
pub use simd::exp_fast;
pub use solvers::{Choice, route, scan, solve};
pub use synthetic::synthetic_logits;

use crate::error::Error;

fn fusion_err(field: &str, reason: String) -> Error {
    Error::Fusion { field: field.into(), reason }
}
