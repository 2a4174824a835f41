//! CPU matrix products over [`QMatrix`] weights (GGML blocks held exactly as `a·q − b` groups): the decode
//! path of the CPU backend for quantized GGUF models. It reads 0.75–1.5 bytes per weight instead of f32's 4,
//! splits output rows across threads (rayon; sequential in wasm), and on x86-64 runs an AVX2+FMA build of
//! the same loop when the processor has it.

use chorus_core::qmatrix::{Q8Row, QMatrix};

/// Output rows per task: 64 rows of a 4864-wide matrix are ~470 KB of weights, so each input row
/// reuses them from cache.
const ROWS_PER_TASK: usize = 64;

/// How [`qmatmul`] treats its input rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    /// f32 inputs: exact against dequantize-then-multiply (up to summation order).
    F32,
    /// Inputs quantized per 16 values to `i8` ([`Q8Row`]) and integer dot products: llama.cpp's
    /// scheme, the fastest, with an activation rounding of at most max|x|/254 per value (a group
    /// holding one very large activation loses its small neighbours).
    Q8,
    /// The same with a second 8-bit plane for the remainder (the remainder in 1/128 steps: rounding ≤ max|x|/32,512 per value):
    /// close to f32 results at most of Q8's speed.
    Q16,
}

impl Activations {
    /// 8-bit planes per input value (0 for f32).
    pub fn planes(self) -> usize {
        match self {
            Activations::F32 => 0,
            Activations::Q8 => 1,
            Activations::Q16 => 2,
        }
    }
}

/// `x · Wᵀ` for `x` of shape `[m, cols]` (row-major); returns `[m, rows]`.
pub fn qmatmul(w: &QMatrix, x: &[f32], m: usize, act: Activations) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    debug_assert_eq!(x.len(), m * cols);
    let input_rows = (0..m).map(|i| &x[i * cols..(i + 1) * cols]);
    match act {
        Activations::F32 => {
            let xs: Vec<Vec<f32>> = input_rows.clone().map(QMatrix::group_sums).collect();
            let xr: Vec<&[f32]> = input_rows.collect();
            split_rows(rows, m, |r0, n, i0, i1, out| {
                let sums: Vec<&[f32]> = xs[i0..i1].iter().map(Vec::as_slice).collect();
                dot_multi(w, r0, n, &xr[i0..i1], &sums, out)
            })
        }
        Activations::Q8 | Activations::Q16 => {
            let q8: Vec<Q8Row> = input_rows.map(|x| Q8Row::new(x, act.planes())).collect();
            split_rows(rows, m, |r0, n, i0, i1, out| {
                let xr: Vec<&Q8Row> = q8[i0..i1].iter().collect();
                dot_q8(w, r0, n, &xr, out)
            })
        }
    }
}

/// Runs `kernel(r0, n, i0, i1, out)` over tasks of [`ROWS_PER_TASK`] output rows (in parallel natively)
/// and input rows in chunks of [`QMatrix::MULTI`] (`out` is `[i1 − i0][n]`); assembles `[m, rows]`.
fn split_rows(rows: usize, m: usize, kernel: impl Fn(usize, usize, usize, usize, &mut [f32]) + Sync) -> Vec<f32> {
    let task = |r0: usize| -> Vec<f32> {
        let n = ROWS_PER_TASK.min(rows - r0);
        let mut part = vec![0f32; m * n];
        for i0 in (0..m).step_by(QMatrix::MULTI) {
            let i1 = (i0 + QMatrix::MULTI).min(m);
            kernel(r0, n, i0, i1, &mut part[i0 * n..i1 * n]);
        }
        part
    };
    let starts: Vec<usize> = (0..rows).step_by(ROWS_PER_TASK).collect();
    #[cfg(not(target_family = "wasm"))]
    let parts: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        starts.par_iter().map(|&r0| task(r0)).collect()
    };
    #[cfg(target_family = "wasm")]
    let parts: Vec<Vec<f32>> = starts.iter().map(|&r0| task(r0)).collect();
    let mut out = vec![0f32; m * rows];
    for (&r0, part) in starts.iter().zip(&parts) {
        let n = ROWS_PER_TASK.min(rows - r0);
        for i in 0..m {
            out[i * rows + r0..i * rows + r0 + n].copy_from_slice(&part[i * n..(i + 1) * n]);
        }
    }
    out
}

/// Up to [`QMatrix::MULTI`] quantized input rows against output rows `r0..r0 + n` (`out` is `[rows][n]`).
fn dot_q8(w: &QMatrix, r0: usize, n: usize, xs: &[&Q8Row], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the feature the kernel is compiled for was just detected.
        unsafe { w.dot_rows_q8_avx2(r0, n, xs, out) };
        return;
    }
    for (i, x) in xs.iter().enumerate() {
        w.dot_rows_q8(r0, x, &mut out[i * n..(i + 1) * n]);
    }
}

/// Up to [`QMatrix::MULTI`] input rows against output rows `r0..r0 + n` (`out` is `[rows][n]`): one
/// decode of each weight group serves several rows (a batch-of-one uses the single-row kernel).
fn dot_multi(w: &QMatrix, r0: usize, n: usize, xs: &[&[f32]], sums: &[&[f32]], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if xs.len() > 1 && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features the kernel is compiled for were just detected.
        unsafe { w.dot_rows_multi_avx2(r0, n, xs, sums, out) };
        return;
    }
    for (i, (x, s)) in xs.iter().zip(sums).enumerate() {
        dot(w, r0, x, s, &mut out[i * n..(i + 1) * n]);
    }
}

fn dot(w: &QMatrix, r0: usize, x: &[f32], xs: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features this function is compiled for were just detected.
        unsafe { dot_avx2(w, r0, x, xs, out) };
        return;
    }
    w.dot_rows(r0, x, xs, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &QMatrix, r0: usize, x: &[f32], xs: &[f32], out: &mut [f32]) {
    // The same (inline) loop compiled with 256-bit vectors; intrinsics for packed 4-bit codes.
    // SAFETY: this function's own target features are the ones `dot_rows_avx2` needs.
    unsafe { w.dot_rows_avx2(r0, x, xs, out) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::GgmlType;

    /// A `rows × cols` matrix of random `ty` blocks with moderate f16 scales.
    fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut chorus_core::Rng) -> QMatrix {
        let mut data: Vec<u8> = (0..ty.bytes_for(rows * cols).unwrap()).map(|_| rng.next_u64() as u8).collect();
        let fields: &[usize] = match ty {
            GgmlType::Q6_K => &[208],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            _ => &[0],
        };
        for blk in data.chunks_exact_mut(ty.block_bytes()) {
            for &at in fields {
                let s = half::f16::from_f32((rng.next_f64() as f32 - 0.5) * 0.1);
                blk[at..at + 2].copy_from_slice(&s.to_le_bytes());
            }
        }
        QMatrix::from_ggml(ty, &data, rows, cols).unwrap()
    }

    /// `qmatmul` (threaded tasks, up to four input rows per kernel call, the AVX2 kernels where the processor
    /// has them) equals the portable single-row loops bit for bit, for every activation mode and for batches
    /// that leave partial tasks and partial row groups. Without AVX2 only the assembly is checked: the
    /// kernel comparison would be portable against portable, which `simd_or_skip` reports.
    #[test]
    fn qmatmul_equals_the_portable_row_loops() {
        let simd = chorus_core::qmatrix::simd_or_skip("qlinear::tests::qmatmul_equals_the_portable_row_loops", true);
        let mut rng = chorus_core::Rng::new(17);
        for ty in [GgmlType::Q4_0, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_0] {
            let (rows, cols) = (ROWS_PER_TASK + 7, 256);
            let w = random_matrix(ty, rows, cols, &mut rng);
            for m in [1, 3, 6] {
                let x: Vec<f32> = (0..m * cols).map(|_| (rng.next_f64() as f32 - 0.5) * 4.0).collect();
                for act in [Activations::F32, Activations::Q8, Activations::Q16] {
                    let got = qmatmul(&w, &x, m, act);
                    for i in 0..m {
                        let xi = &x[i * cols..(i + 1) * cols];
                        let mut want = vec![0f32; rows];
                        match act {
                            Activations::F32 => w.dot_rows(0, xi, &QMatrix::group_sums(xi), &mut want),
                            _ => w.dot_rows_q8(0, &Q8Row::new(xi, act.planes()), &mut want),
                        }
                        assert_eq!(
                            &got[i * rows..(i + 1) * rows],
                            &want[..],
                            "{} {act:?} m={m} row {i} (avx2+fma: {simd})",
                            ty.name()
                        );
                    }
                }
            }
        }
    }
}
