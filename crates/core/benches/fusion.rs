//! Criterion benchmarks of the DLF α search on the CPU at Qwen2.5's vocabulary (151,665 tokens): step
//! constants, the paper grid (T × 21 loss evaluations) and the refine solver, for 1 and 3 experts.
//! The target is ≤ 3% of a fused decode step (≈ 200 ms for Qwen 1.5B + 0.5B on 2 cores).

use chorus_core::fusion::{FastEvaluator, FusionConfig, RowLogits, Solver, solve, synthetic_logits};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let vocab = 151_665;
    let mut g = c.benchmark_group("dlf_search_v151665");
    g.sample_size(20);
    for t in [1usize, 3] {
        let (l, s, e) = synthetic_logits(1, vocab, t);
        let ex: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let row = RowLogits { large: &l, base: &s, experts: &ex };
        let mut ev = FastEvaluator::new();
        g.bench_function(format!("constants_t{t}"), |b| b.iter(|| ev.load(&row).map(|c| c.support).unwrap()));
        for solver in [Solver::Paper, Solver::Refine] {
            let cfg = FusionConfig::with_solver(solver);
            g.bench_function(format!("{}_t{t}", solver.name()), |b| {
                b.iter(|| {
                    ev.load(&row).unwrap();
                    let choice = solve(&cfg, &mut ev);
                    ev.fused(&choice.alpha, false)
                })
            });
        }
    }
    g.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    super::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
