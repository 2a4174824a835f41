//! f32 vector helpers of the attention loop (q·k scores and the probability-weighted sum of values),
//! with an AVX2+FMA path chosen at run time and a portable one that is also the reference.
//!
//! Why by hand: the workspace is compiled for baseline x86-64 (SSE2) so that the binary runs on any
//! x86-64 CPU; the compiler cannot use 256-bit FMA in these loops without a runtime-dispatched body.

/// Whether the AVX2+FMA bodies may run (checked once).
#[cfg(target_arch = "x86_64")]
fn fast() -> bool {
    static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAST.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// `a · b` over the shorter length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: `fast()` confirmed AVX2 and FMA.
        return unsafe { x86::dot(a, b) };
    }
    dot_portable(a, b)
}

/// `y += w · x` over the shorter length.
#[inline]
pub fn axpy(y: &mut [f32], w: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: `fast()` confirmed AVX2 and FMA.
        unsafe { x86::axpy(y, w, x) };
        return;
    }
    axpy_portable(y, w, x)
}

/// The reference `dot`: eight independent partial sums.
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>()
}

/// The reference `axpy`.
pub fn axpy_portable(y: &mut [f32], w: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += w * x);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 ≤ n ≤ both lengths.
            unsafe {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)), s0);
                s1 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i + 8)), _mm256_loadu_ps(b.as_ptr().add(i + 8)), s1);
            }
            i += 16;
        }
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n.
            unsafe { s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)), s0) };
            i += 8;
        }
        let v = _mm256_add_ps(s0, s1);
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let mut s = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
        for j in i..n {
            s += a[j] * b[j];
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn axpy(y: &mut [f32], w: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let wv = _mm256_set1_ps(w);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n ≤ both lengths.
            unsafe {
                let p = y.as_mut_ptr().add(i);
                _mm256_storeu_ps(p, _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(p)));
            }
            i += 8;
        }
        for j in i..n {
            y[j] += w * x[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatched_helpers_match_the_portable_ones() {
        let mut rng = chorus_core::Rng::new(3);
        for n in [0usize, 1, 7, 8, 15, 16, 17, 64, 100, 128] {
            let a: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let (d, r) = (dot(&a, &b), dot_portable(&a, &b));
            assert!((d - r).abs() <= 1e-5 * (1.0 + r.abs()), "dot n={n}: {d} vs {r}");
            let (mut y1, mut y2) = (b.clone(), b.clone());
            axpy(&mut y1, 0.3, &a);
            axpy_portable(&mut y2, 0.3, &a);
            for (p, q) in y1.iter().zip(&y2) {
                assert!((p - q).abs() <= 1e-6, "axpy n={n}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::env::var("CHORUS_REQUIRE_SIMD").is_ok_and(|v| v == "1") {
            assert!(fast(), "CHORUS_REQUIRE_SIMD=1 but this CPU lacks AVX2+FMA");
        }
    }
}
