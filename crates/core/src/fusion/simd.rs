//! The fast evaluator's kernels: per-piece max and exp-dot reductions (one α or a grid of them), their
//! AVX2+FMA and AVX-512 builds, `exp_fast`.

/// Which build of the reductions this CPU runs (detected once, capped by `CHORUS_ISA` as the GGML kernels
/// are): 2 = AVX-512 (F/BW/DQ/VL), 1 = AVX2+FMA, 0 = the portable loops.
#[cfg(target_arch = "x86_64")]
fn isa() -> u8 {
    static ISA: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        use std::arch::is_x86_feature_detected as has;
        let cap = crate::ggml::isa_cap();
        if cap >= 2 && has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("fma") {
            2
        } else if cap >= 1 && has!("avx2") && has!("fma") {
            1
        } else {
            0
        }
    })
}

/// Defines `$name`, which runs the inline body `$body` compiled for the widest instruction set [`isa`]
/// allows: the same element-wise code (`exp_fast`) and the same lane sums over a fixed [`LANES`] (the
/// [`Sums`] impls) give the same bits at any vector width, so the choice changes speed only (tested).
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $body:ident, $avx2:ident, $avx512:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub(super) fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            match isa() {
                // SAFETY: `isa()` detected the features each build is compiled for.
                2 => return unsafe { $avx512($($arg),*) },
                // SAFETY: as above.
                1 => return unsafe { $avx2($($arg),*) },
                _ => {}
            }
            $body::<Portable>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2($($arg: $ty),*) -> $ret {
            $body::<Avx>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        unsafe fn $avx512($($arg: $ty),*) -> $ret {
            $body::<Avx>($($arg),*)
        }
    };
}

dispatch!(
    /// max over the piece of `base + a·d`.
    max_shift_piece, max_shift_impl, max_shift_avx2, max_shift_avx512, (base: &[f32], d: &[f32], a: f32) -> f32
);
dispatch!(
    /// (Σ e, Σ e·d) over the piece with e = exp(base + a·d − m).
    exp_dot_shift_piece, exp_dot_shift_impl, exp_dot_shift_avx2, exp_dot_shift_avx512,
    (base: &[f32], d: &[f32], a: f32, m: f32) -> (f64, f64)
);
dispatch!(
    /// [`exp_dot_shift_piece`] for every `alphas[j] = alphas[0] + j·h` at its shift `m[j]`, with one exp per
    /// element for every [`ANCHOR`] candidates instead of one per candidate (see [`exp_dot_grid_impl`]).
    exp_dot_grid_piece, exp_dot_grid_impl, exp_dot_grid_avx2, exp_dot_grid_avx512,
    (base: &[f32], d: &[f32], alphas: &[f32], h: f32, m: &[f32]) -> Vec<(f64, f64)>
);

const LANES: usize = 8;
pub(super) const CHUNK: usize = 1024;

#[inline(always)]
fn max_shift_impl<S: Sums>(base: &[f32], d: &[f32], a: f32) -> f32 {
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
fn exp_dot_shift_impl<S: Sums>(base: &[f32], d: &[f32], a: f32, m: f32) -> (f64, f64) {
    let (mut s, mut sd) = (0f64, 0f64);
    let mut e = [0f32; CHUNK];
    for (bch, dch) in base.chunks(CHUNK).zip(d.chunks(CHUNK)) {
        let n = bch.len().min(dch.len());
        let (bch, dch, e) = (&bch[..n], &dch[..n], &mut e[..n]);
        // An element-wise map (vectorises) and then lane-wise sums (no reassociation needed).
        for ((e, &b), &d) in e.iter_mut().zip(bch).zip(dch) {
            *e = exp_fast(b + a * d - m);
        }
        // SAFETY: `S` is `Avx` only inside the AVX builds (see `Sums`).
        let (cs, csd) = unsafe { S::lane_sums(e, dch) };
        s += cs;
        sd += csd;
    }
    (s, sd)
}

/// A full exp every `ANCHOR` grid candidates; the ones between are a product away from the previous.
pub(super) const ANCHOR: usize = 4;

/// The grid's reductions: e_j = exp(b + α_j·d − m_j) satisfies e_j = e_{j−1} · exp(h·d) · exp(m_{j−1} − m_j)
/// for α_j = α_{j−1} + h, so between anchors (every [`ANCHOR`]-th candidate, an exact exp) each element
/// costs two multiplications instead of an exp: the paper's 20 one-hot candidates per expert take 5 + 1
/// exps per element, not 20. Every e_j ≤ 1 in exact arithmetic (m_j is at least the maximum), so the products
/// cannot overflow; a term that the anchor flushes to 0 (below e^−87) stays 0, which loses only terms
/// below e^(−87 + 3·h·d), negligible against the maximum's 1 while |d| < 100. Relative error per term
/// ≤ ~8e-7 (three products and exp(h·d)'s own error), against 1e-7 for the exact exp.
#[inline(always)]
fn exp_dot_grid_impl<S: Sums>(base: &[f32], d: &[f32], alphas: &[f32], h: f32, m: &[f32]) -> Vec<(f64, f64)> {
    let k = alphas.len().min(m.len());
    let mut out = vec![(0f64, 0f64); k];
    // exp(m_{j−1} − m_j), a scalar per candidate (|Δm| ≤ h·max|d|, so it is finite).
    let c: Vec<f32> = (0..k).map(|j| if j == 0 { 1.0 } else { ((m[j - 1] - m[j]) as f64).exp() as f32 }).collect();
    let (mut e, mut r) = ([0f32; CHUNK], [0f32; CHUNK]);
    for (bch, dch) in base.chunks(CHUNK).zip(d.chunks(CHUNK)) {
        let n = bch.len().min(dch.len());
        let (bch, dch, e, r) = (&bch[..n], &dch[..n], &mut e[..n], &mut r[..n]);
        for (r, &d) in r.iter_mut().zip(dch) {
            *r = exp_fast(h * d);
        }
        for j in 0..k {
            let (cs, csd) = if j % ANCHOR == 0 {
                let (a, mj) = (alphas[j], m[j]);
                for ((e, &b), &d) in e.iter_mut().zip(bch).zip(dch) {
                    *e = exp_fast(b + a * d - mj);
                }
                // SAFETY: as in `exp_dot_shift_impl`.
                unsafe { S::lane_sums(e, dch) }
            } else {
                // SAFETY: as above.
                unsafe { S::step_lane_sums(e, r, dch, c[j]) }
            };
            out[j].0 += cs;
            out[j].1 += csd;
        }
    }
    out
}

/// The chunk reductions of the search: (Σ e_i, Σ e_i·d_i) in f32 per lane ([`LANES`] lanes, lane
/// `i % LANES`, a remainder into lane 0 after the rest), the lanes added in f64 in order; and the grid's
/// step between anchors, e_i ← e_i·(r_i·c), with those sums of the new e in the same pass. [`Portable`]
/// writes them as lane arrays, which LLVM's SLP vectoriser only half vectorises (lanes built one insert
/// at a time); [`Avx`] is the same operations in one 256-bit register, so the same bits.
///
/// Safety: `Avx`'s functions may run only on a CPU with AVX (they are reached only from the AVX builds,
/// whose features `isa()` detected); `Portable`'s have no requirement.
trait Sums {
    unsafe fn lane_sums(e: &[f32], d: &[f32]) -> (f64, f64);
    unsafe fn step_lane_sums(e: &mut [f32], r: &[f32], d: &[f32], c: f32) -> (f64, f64);
}

/// The reference lane sums.
struct Portable;

impl Sums for Portable {
    #[inline(always)]
    unsafe fn lane_sums(e: &[f32], d: &[f32]) -> (f64, f64) {
        let n = e.len().min(d.len());
        let (mut es, mut eds) = ([0f32; LANES], [0f32; LANES]);
        for (ec, dc) in e[..n].chunks_exact(LANES).zip(d[..n].chunks_exact(LANES)) {
            for k in 0..LANES {
                es[k] += ec[k];
                eds[k] += ec[k] * dc[k];
            }
        }
        let tail = n - n % LANES;
        for (&ev, &dv) in e[tail..n].iter().zip(&d[tail..n]) {
            es[0] += ev;
            eds[0] += ev * dv;
        }
        (es.iter().map(|&v| v as f64).sum::<f64>(), eds.iter().map(|&v| v as f64).sum::<f64>())
    }

    #[inline(always)]
    unsafe fn step_lane_sums(e: &mut [f32], r: &[f32], d: &[f32], c: f32) -> (f64, f64) {
        let n = e.len().min(r.len());
        for (e, &r) in e[..n].iter_mut().zip(&r[..n]) {
            *e *= r * c;
        }
        // SAFETY: the portable sums have no requirement.
        unsafe { Self::lane_sums(&e[..n], d) }
    }
}

/// The lane sums in `__m256` registers (x86_64 with AVX).
#[cfg(target_arch = "x86_64")]
struct Avx;

#[cfg(target_arch = "x86_64")]
impl Sums for Avx {
    #[inline(always)]
    unsafe fn lane_sums(e: &[f32], d: &[f32]) -> (f64, f64) {
        use std::arch::x86_64::*;
        let n = e.len().min(d.len());
        let tail = n - n % LANES;
        // SAFETY (the loads): `i + LANES <= tail <= n`, within both slices; the caller guarantees AVX.
        let (mut es, mut eds) = unsafe { (_mm256_setzero_ps(), _mm256_setzero_ps()) };
        for i in (0..tail).step_by(LANES) {
            unsafe {
                let ev = _mm256_loadu_ps(e.as_ptr().add(i));
                let dv = _mm256_loadu_ps(d.as_ptr().add(i));
                es = _mm256_add_ps(es, ev);
                eds = _mm256_add_ps(eds, _mm256_mul_ps(ev, dv));
            }
        }
        Self::finish(es, eds, &e[tail..n], &d[tail..n])
    }

    #[inline(always)]
    unsafe fn step_lane_sums(e: &mut [f32], r: &[f32], d: &[f32], c: f32) -> (f64, f64) {
        use std::arch::x86_64::*;
        let n = e.len().min(r.len()).min(d.len());
        let tail = n - n % LANES;
        // SAFETY (the loads and stores): `i + LANES <= tail <= n`, within all three slices; AVX as above.
        let (mut es, mut eds, cv) = unsafe { (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_set1_ps(c)) };
        for i in (0..tail).step_by(LANES) {
            unsafe {
                let ev = _mm256_mul_ps(
                    _mm256_loadu_ps(e.as_ptr().add(i)),
                    _mm256_mul_ps(_mm256_loadu_ps(r.as_ptr().add(i)), cv),
                );
                _mm256_storeu_ps(e.as_mut_ptr().add(i), ev);
                let dv = _mm256_loadu_ps(d.as_ptr().add(i));
                es = _mm256_add_ps(es, ev);
                eds = _mm256_add_ps(eds, _mm256_mul_ps(ev, dv));
            }
        }
        for (e, &r) in e[tail..n].iter_mut().zip(&r[tail..n]) {
            *e *= r * c;
        }
        Self::finish(es, eds, &e[tail..n], &d[tail..n])
    }
}

#[cfg(target_arch = "x86_64")]
impl Avx {
    /// The lanes out of the registers, the remainder into lane 0, the lanes added in f64 in order.
    #[inline(always)]
    fn finish(es: std::arch::x86_64::__m256, eds: std::arch::x86_64::__m256, e: &[f32], d: &[f32]) -> (f64, f64) {
        let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
        // SAFETY: both arrays hold LANES = 8 f32; `storeu` has no alignment requirement. AVX as above.
        unsafe {
            std::arch::x86_64::_mm256_storeu_ps(a.as_mut_ptr(), es);
            std::arch::x86_64::_mm256_storeu_ps(b.as_mut_ptr(), eds);
        }
        for (&ev, &dv) in e.iter().zip(d) {
            a[0] += ev;
            b[0] += ev * dv;
        }
        (a.iter().map(|&v| v as f64).sum::<f64>(), b.iter().map(|&v| v as f64).sum::<f64>())
    }
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

    /// The grid's products stay as close to f64 arithmetic as an exact f32 exp per candidate does (1e-5
    /// relative), for spacings and differences of the sizes real logits have, including an element that
    /// the anchors flush to 0 and that becomes the maximum.
    #[test]
    fn grid_sums_match_one_exp_per_candidate() {
        let (mut l, s, e) = crate::fusion::synthetic_logits(3, 5000, 1);
        let mut d: Vec<f32> = e[0].iter().zip(&s).map(|(e, s)| 3.0 * (e - s)).collect();
        (l[17], d[17]) = (l.iter().copied().fold(f32::MIN, f32::max) - 95.0, 60.0);
        for (a0, h, k) in [(0.1f32, 0.1f32, 20usize), (0.0, 0.25, 9), (0.5, 0.05, 3)] {
            let alphas: Vec<f32> = (0..k).map(|j| a0 + j as f32 * h).collect();
            let m: Vec<f32> = alphas.iter().map(|&a| max_shift_impl::<Portable>(&l, &d, a)).collect();
            let got = exp_dot_grid_impl::<Portable>(&l, &d, &alphas, h, &m);
            for j in 0..k {
                // Against f64 arithmetic at the same α and shift, next to the f32 exact-exp kernel
                // (whose own error is the rounding of b + α·d in f32: ~2e-6 for an exponent near 25).
                let (a, mj) = (alphas[j] as f64, m[j] as f64);
                let terms = l.iter().zip(&d).map(|(&b, &d)| ((b as f64 + a * d as f64 - mj).exp(), d as f64));
                let (s64, sd64) = terms.fold((0.0, 0.0), |(s, sd), (e, d)| (s + e, sd + e * d));
                let one = exp_dot_shift_impl::<Portable>(&l, &d, alphas[j], m[j]);
                // Σe·d against Σe·max|d| (the terms' size): it may cancel to near 0.
                let scale = s64 * d.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
                for (name, (s, sd)) in [("grid", got[j]), ("exact exp", one)] {
                    let (es, esd) = ((s - s64).abs() / s64, (sd - sd64).abs() / scale);
                    assert!(es < 1e-5 && esd < 1e-5, "{name} at α = {a}: Σe {es:e}, Σe·d {esd:e} off");
                }
            }
        }
    }

    /// The AVX2+FMA and AVX-512 builds of the reductions equal the portable loops bit for bit: they are the
    /// same inline code compiled for 256- and 512-bit vectors, and Rust never contracts `b + a·d` into an FMA, so no
    /// value may differ. Lengths cover partial lanes and chunks; banned tokens (−1e30) are included.
    #[test]
    // Off x86_64 the kernel block below is compiled out and the early return is the whole body.
    #[cfg_attr(not(target_arch = "x86_64"), allow(clippy::needless_return))]
    fn avx2_kernels_equal_the_portable_loops() {
        if !crate::ggml::simd_or_skip("fusion::simd::tests::avx2_kernels_equal_the_portable_loops", true) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl");
            if !avx512 {
                eprintln!("NOTE: no AVX-512 F/BW/DQ/VL here: the fusion reductions' avx512 builds are not compared");
            }
            let (mut l, s, e) = crate::fusion::synthetic_logits(7, 3000, 1);
            let d: Vec<f32> = e[0].iter().zip(&s).map(|(e, s)| e - s).collect();
            (l[5], l[2049]) = (-1.0e30, -1.0e30);
            for n in [1, 7, 8, 9, 1023, 1024, 1025, 3000] {
                let (b, d) = (&l[..n], &d[..n]);
                for a in [0.0f32, 0.35, 1.0, 2.0] {
                    let m = max_shift_impl::<Portable>(b, d, a);
                    // SAFETY: `simd_or_skip` just detected AVX2 and FMA.
                    let got = unsafe { max_shift_avx2(b, d, a) };
                    assert_eq!(got.to_bits(), m.to_bits(), "max, n = {n}, a = {a}");
                    if avx512 {
                        // SAFETY: `avx512` is the detection of the features this build needs.
                        let got = unsafe { max_shift_avx512(b, d, a) };
                        assert_eq!(got.to_bits(), m.to_bits(), "avx512 max, n = {n}, a = {a}");
                    }
                    assert_eq!(max_shift_piece(b, d, a).to_bits(), m.to_bits(), "dispatch, n = {n}");
                    let want = exp_dot_shift_impl::<Portable>(b, d, a, m);
                    // SAFETY: as above.
                    let got = unsafe { exp_dot_shift_avx2(b, d, a, m) };
                    assert_eq!((got.0.to_bits(), got.1.to_bits()), (want.0.to_bits(), want.1.to_bits()), "n = {n}");
                    if avx512 {
                        // SAFETY: as above.
                        let got = unsafe { exp_dot_shift_avx512(b, d, a, m) };
                        assert_eq!((got.0.to_bits(), got.1.to_bits()), (want.0.to_bits(), want.1.to_bits()), "avx512");
                    }
                    let via = exp_dot_shift_piece(b, d, a, m);
                    assert_eq!((via.0.to_bits(), via.1.to_bits()), (want.0.to_bits(), want.1.to_bits()), "dispatch");
                }
                let alphas: Vec<f32> = (1..=20).map(|j| j as f32 * 0.1).collect();
                let m: Vec<f32> = alphas.iter().map(|&a| max_shift_impl::<Portable>(b, d, a)).collect();
                let want = exp_dot_grid_impl::<Portable>(b, d, &alphas, 0.1, &m);
                // SAFETY: as above.
                let got = unsafe { exp_dot_grid_avx2(b, d, &alphas, 0.1, &m) };
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!((g.0.to_bits(), g.1.to_bits()), (w.0.to_bits(), w.1.to_bits()), "grid, n = {n}");
                }
                if avx512 {
                    // SAFETY: as above.
                    let got = unsafe { exp_dot_grid_avx512(b, d, &alphas, 0.1, &m) };
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!((g.0.to_bits(), g.1.to_bits()), (w.0.to_bits(), w.1.to_bits()), "avx512 grid");
                    }
                }
            }
        }
    }
}
