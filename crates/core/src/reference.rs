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

/// `y[t][r] = Σ_c W[r][c] · x[t][c]` in f64 for `n` tokens of `x` (`[n, cols]`), with `W` the `[rows, cols]`
/// matrix stored as `ty` in `w` decoded by [`crate::ggml::dequantize_row`]: the oracle of the device's
/// block-decoding matrix product (`shaders/qmatmul.wgsl`). Returns `[n, rows]`.
pub fn qmatmul(ty: crate::GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], n: usize) -> Vec<f32> {
    let rb = crate::ggml::row_bytes(ty, cols).expect("qmatmul reference: rows of whole blocks");
    assert_eq!(w.len(), rows * rb, "qmatmul reference: {rows} rows of {rb} bytes");
    assert_eq!(x.len(), n * cols, "qmatmul reference: {n} x {cols} activations");
    let mut wf = vec![0f32; cols];
    let mut y = vec![0f32; n * rows];
    for r in 0..rows {
        crate::ggml::dequantize_row(ty, &w[r * rb..(r + 1) * rb], &mut wf);
        for t in 0..n {
            let xs = &x[t * cols..(t + 1) * cols];
            y[t * rows + r] = wf.iter().zip(xs).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
        }
    }
    y
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

/// One output part of a low-rank mixed projection: output columns `out0..out0 + out_n` take the z columns
/// `col0..col0 + col_n` through the `[col_n, out_n]` matrix at offset `b_off` of the packed left factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowRankPart {
    /// First output column.
    pub out0: usize,
    /// Output columns.
    pub out_n: usize,
    /// First column of z.
    pub col0: usize,
    /// Columns of z.
    pub col_n: usize,
    /// Offset of the part's `[col_n, out_n]` left factor in the packed buffer.
    pub b_off: usize,
}

/// Twin-Merging's per-row low-rank merged matmul (kernel `shaders/lowrank_mix.wgsl`):
/// `y[m] = base[m] + Σ_parts ((x[m]·A) ⊙ w[m, seg]) · B_part` for `x` `[rows, inp]`, `a` `[inp, r]`,
/// per-row task weights `w` `[rows, tasks]`, column tasks `seg` `[r]` and `base` `[rows, out]`.
pub fn lowrank_mix(
    x: &[f32],
    a: &[f32],
    w: &[f32],
    seg: &[u32],
    b: &[f32],
    parts: &[LowRankPart],
    base: &[f32],
    rows: usize,
    inp: usize,
    tasks: usize,
) -> Vec<f32> {
    let r = seg.len();
    let out = base.len().checked_div(rows).unwrap_or(0);
    let mut z = vec![0f64; rows * r];
    for m in 0..rows {
        for j in 0..r {
            let dot: f64 = (0..inp).map(|i| x[m * inp + i] as f64 * a[i * r + j] as f64).sum();
            z[m * r + j] = dot * w[m * tasks + seg[j] as usize] as f64;
        }
    }
    let mut y: Vec<f32> = base.to_vec();
    for m in 0..rows {
        for p in parts {
            for o in 0..p.out_n {
                let acc: f64 = (0..p.col_n).map(|j| z[m * r + p.col0 + j] * b[p.b_off + j * p.out_n + o] as f64).sum();
                y[m * out + p.out0 + o] = (y[m * out + p.out0 + o] as f64 + acc) as f32;
            }
        }
    }
    y
}
