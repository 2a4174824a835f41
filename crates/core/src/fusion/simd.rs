//! The fast evaluator's kernels: per-piece max and exp-dot reductions, their AVX2+FMA builds, `exp_fast`.

pub(super) fn max_shift_piece(base: &[f32], d: &[f32], a: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features this function is compiled for were just detected.
        return unsafe { max_shift_avx2(base, d, a) };
    }
    max_shift_impl(base, d, a)
}

pub(super) fn exp_dot_shift_piece(base: &[f32], d: &[f32], a: f32, m: f32) -> (f64, f64) {
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
pub(super) const CHUNK: usize = 1024;

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

    /// The AVX2+FMA builds of both reductions equal the portable loops bit for bit: they are the same
    /// inline code compiled for 256-bit vectors, and Rust never contracts `b + a·d` into an FMA, so no
    /// value may differ. Lengths cover partial lanes and chunks; banned tokens (−1e30) are included.
    #[test]
    // Off x86_64 the kernel block below is compiled out and the early return is the whole body.
    #[cfg_attr(not(target_arch = "x86_64"), allow(clippy::needless_return))]
    fn avx2_kernels_equal_the_portable_loops() {
        if !crate::qmatrix::simd_or_skip("fusion::simd::tests::avx2_kernels_equal_the_portable_loops", true) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let (mut l, s, e) = crate::fusion::synthetic_logits(7, 3000, 1);
            let d: Vec<f32> = e[0].iter().zip(&s).map(|(e, s)| e - s).collect();
            (l[5], l[2049]) = (-1.0e30, -1.0e30);
            for n in [1, 7, 8, 9, 1023, 1024, 1025, 3000] {
                let (b, d) = (&l[..n], &d[..n]);
                for a in [0.0f32, 0.35, 1.0, 2.0] {
                    let m = max_shift_impl(b, d, a);
                    // SAFETY: `simd_or_skip` just detected AVX2 and FMA.
                    let got = unsafe { max_shift_avx2(b, d, a) };
                    assert_eq!(got.to_bits(), m.to_bits(), "max, n = {n}, a = {a}");
                    assert_eq!(max_shift_piece(b, d, a).to_bits(), m.to_bits(), "dispatch, n = {n}");
                    let want = exp_dot_shift_impl(b, d, a, m);
                    // SAFETY: as above.
                    let got = unsafe { exp_dot_shift_avx2(b, d, a, m) };
                    assert_eq!((got.0.to_bits(), got.1.to_bits()), (want.0.to_bits(), want.1.to_bits()), "n = {n}");
                    let via = exp_dot_shift_piece(b, d, a, m);
                    assert_eq!((via.0.to_bits(), via.1.to_bits()), (want.0.to_bits(), want.1.to_bits()), "dispatch");
                }
            }
        }
    }
}
