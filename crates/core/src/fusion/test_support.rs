//! Helpers shared by the fusion unit tests: a row from slices and `solve` on each evaluator.

use super::{Choice, FastEvaluator, FusionConfig, ReferenceEvaluator, RowLogits, solve};

pub(super) fn row<'a>(l: &'a [f32], s: &'a [f32], e: &'a [&'a [f32]]) -> RowLogits<'a> {
    RowLogits { large: l, base: s, experts: e }
}

pub(super) fn solve_ref(cfg: &FusionConfig, r: RowLogits) -> Choice {
    solve(cfg, &mut ReferenceEvaluator::new(r).unwrap())
}

pub(super) fn solve_fast(cfg: &FusionConfig, r: RowLogits) -> Choice {
    let mut f = FastEvaluator::new();
    f.load(&r).unwrap();
    solve(cfg, &mut f)
}
