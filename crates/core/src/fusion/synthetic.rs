//! Synthetic logits with the structure of real ones, for property tests and benchmarks.

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
