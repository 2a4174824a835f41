//! Plain-Rust reference math: obviously-correct loops (f64 accumulation) that GPU kernels and burn code
//! are tested against. Slow by design; never on a hot path.

/// Per-row statistics of a logits matrix: what greedy decoding and KL computations need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    /// Largest value in the row.
    pub max: f32,
    /// Index of the largest value (lowest index on ties).
    pub argmax: u32,
    /// log Σ exp(x_i), computed as max + log Σ exp(x_i − max).
    pub logsumexp: f32,
}

/// Row statistics of a row-major `rows × cols` matrix (NaN entries ignored).
pub fn row_stats(x: &[f32], rows: usize, cols: usize) -> Vec<RowStats> {
    assert_eq!(x.len(), rows * cols, "row_stats: {rows}x{cols} does not match {} values", x.len());
    x.chunks_exact(cols)
        .map(|r| {
            let arg = crate::sampling::argmax(r);
            let max = r[arg];
            // NaN entries are skipped, as by argmax, so one bad logit does not poison the row.
            let s: f64 = r.iter().filter(|v| !v.is_nan()).map(|&v| ((v - max) as f64).exp()).sum();
            RowStats { max, argmax: arg as u32, logsumexp: max + s.ln() as f32 }
        })
        .collect()
}

/// Softmax of one row, in f64.
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

/// RMSNorm of one row: x / sqrt(mean(x²) + eps) · w.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps as f64).sqrt();
    x.iter().zip(w).map(|(&v, &g)| (v as f64 * r) as f32 * g).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_stats_hand_checked() {
        let s = row_stats(&[0.0, 0.0, 1.0, 1.0], 2, 2);
        assert_eq!(s[0].argmax, 0);
        assert!((s[0].logsumexp - 2f32.ln()).abs() < 1e-6);
        assert!((s[1].logsumexp - (1.0 + 2f32.ln())).abs() < 1e-6);
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
