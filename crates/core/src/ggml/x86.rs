//! AVX2 (+FMA, F16C) kernels for x86_64, each equal to its portable twin up to f32 summation order.
//!
//! The integer core is ggml's: `_mm256_maddubs_epi16` multiplies unsigned weight codes by signed activation
//! codes and adds adjacent pairs into i16 (no overflow: |pair| ≤ 2·128·127 < 2¹⁵), `_mm256_madd_epi16` widens
//! to i32 (with a sub-block scale, or with ones), and signed × signed products first move the weight's sign
//! onto the activation (`_mm256_sign_epi8`), which is exact because activation codes are never −128. Blocks
//! are accumulated in f32 with FMA.
//!
//! Every `*_dot` here is a safe wrapper handed out by `Kernel` only after `has_avx2()` confirmed the CPU
//! features; the `#[target_feature]` bodies read memory only through `load*` helpers that slice first, so
//! an inconsistent length panics at the bounds check instead of reading out of bounds.

use std::arch::x86_64::*;

use super::{Q8Act, Q8KAct};
use crate::quant::{QK, QK_K, scale_min_k4};

/// Defines the safe entry point `$name` over the `#[target_feature]` body `$body`.
macro_rules! entry {
    ($name:ident, $body:ident, $act:ty) => {
        pub(super) fn $name(w: &[u8], a: $act) -> f32 {
            debug_assert!(super::has_avx2());
            // SAFETY: `Kernel::avx2`, the only place these functions are handed out, checks `has_avx2()`
            // (AVX2, FMA and F16C present) first.
            unsafe { $body(w, a) }
        }
    };
}

entry!(f32_dot, f32_avx2, &[f32]);
entry!(f16_dot, f16_avx2, &[f32]);
entry!(bf16_dot, bf16_avx2, &[f32]);
entry!(q4_0_dot, q4_0_avx2, &Q8Act);
entry!(q4_1_dot, q4_1_avx2, &Q8Act);
entry!(q5_0_dot, q5_0_avx2, &Q8Act);
entry!(q5_1_dot, q5_1_avx2, &Q8Act);
entry!(q8_0_dot, q8_0_avx2, &Q8Act);
entry!(q4_k_dot, q4_k_avx2, &Q8KAct);
entry!(q5_k_dot, q5_k_avx2, &Q8KAct);
entry!(q6_k_dot, q6_k_avx2, &Q8KAct);

// ---- loads (the only memory reads) ----

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load256(b: &[u8]) -> __m256i {
    let b = &b[..32];
    // SAFETY: `b` has exactly 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load256_i8(q: &[i8]) -> __m256i {
    let q = &q[..32];
    // SAFETY: as in `load256`.
    unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load256_i16(q: &[i16]) -> __m256i {
    let q = &q[..16];
    // SAFETY: 16 i16 are 32 readable bytes.
    unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load128(b: &[u8]) -> __m128i {
    let b = &b[..16];
    // SAFETY: `b` has exactly 16 readable bytes.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_ps(x: &[f32]) -> __m256 {
    let x = &x[..8];
    // SAFETY: `x` has exactly 8 readable f32.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_ps_bytes(b: &[u8]) -> __m256 {
    let b = &b[..32];
    // SAFETY: 32 readable bytes hold 8 little-endian f32; `loadu` accepts any alignment.
    unsafe { _mm256_loadu_ps(b.as_ptr().cast()) }
}

// ---- arithmetic helpers ----

/// An f16 scale at byte `at` of `b`, converted with F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fp16(b: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Sums adjacent i16 pairs into 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pairs_ps(x: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_madd_epi16(x, _mm256_set1_epi16(1)))
}

/// Unsigned `u` (each byte ≤ 255, here ≤ 63) times signed `s`, summed into 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_us(u: __m256i, s: __m256i) -> __m256 {
    pairs_ps(_mm256_maddubs_epi16(u, s))
}

/// Signed `x` times signed `y` (y never −128), summed into 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_ss(x: __m256i, y: __m256i) -> __m256 {
    dot_us(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// The 32 4-bit codes of 16 bytes in element order: low nibbles (elements 0..16), then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles(qs: &[u8]) -> __m256i {
    let lo = load128(qs);
    let hi = _mm_srli_epi16::<4>(lo);
    _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0f))
}

/// Byte i = 0xFF where bit i of `qh` is set, else 0 (the fifth bits of a Q5_0/Q5_1 block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bits32(qh: u32) -> __m256i {
    // Byte i takes byte i / 8 of qh (the shuffle works per 128-bit lane; every lane holds all of qh) and
    // tests its bit i % 8.
    let shuf = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let v = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
    let m = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(v, m), m)
}

// ---- float weights ----

#[target_feature(enable = "avx2,fma,f16c")]
fn f32_avx2(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let (wc, xc) = (w.chunks_exact(128), x.chunks_exact(32));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (wb, xb) in wc.zip(xc) {
        for k in 0..4 {
            acc[k] = _mm256_fmadd_ps(load_ps_bytes(&wb[32 * k..]), load_ps(&xb[8 * k..]), acc[k]);
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum_ps(v) + super::float::f32_dot(wt, xt)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn f16_avx2(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let (wc, xc) = (w.chunks_exact(64), x.chunks_exact(32));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (wb, xb) in wc.zip(xc) {
        for k in 0..4 {
            let wv = _mm256_cvtph_ps(load128(&wb[16 * k..]));
            acc[k] = _mm256_fmadd_ps(wv, load_ps(&xb[8 * k..]), acc[k]);
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum_ps(v) + super::float::f16_dot(wt, xt)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn bf16_avx2(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let (wc, xc) = (w.chunks_exact(64), x.chunks_exact(32));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (wb, xb) in wc.zip(xc) {
        for k in 0..4 {
            // bf16 is the top half of an f32: widen to 32 bits and shift into place.
            let wi = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load128(&wb[16 * k..])));
            acc[k] = _mm256_fmadd_ps(_mm256_castsi256_ps(wi), load_ps(&xb[8 * k..]), acc[k]);
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum_ps(v) + super::float::bf16_dot(wt, xt)
}

// ---- legacy formats ----

/// Iterates (weight block, activation codes, activation scale, activation s) for a legacy row.
#[inline]
fn legacy<'a>(w: &'a [u8], bb: usize, a: &Q8Act<'a>) -> impl Iterator<Item = (&'a [u8], &'a [i8], f32, f32)> {
    w.chunks_exact(bb).zip(a.q.chunks_exact(QK)).zip(a.d.iter().zip(a.s)).map(|((b, q), (&d, &s))| (b, q, d, s))
}

/// The block loop of a legacy kernel: `$block` maps one block to (scale vector, 8 partial products), and the
/// optional `$min` to its scalar min term. Two blocks per turn go to two accumulators, so consecutive blocks'
/// FMAs (and min sums) do not wait on each other's latency.
macro_rules! legacy_sum {
    ($w:expr, $a:expr, $bb:expr, |$b:ident, $q:ident, $da:ident, $s:ident| $block:expr $(, min $min:expr)?) => {{
        let mut it = legacy($w, $bb, $a);
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        #[allow(unused_mut)]
        let (mut m0, mut m1) = (0f32, 0f32);
        loop {
            let Some(($b, $q, $da, $s)) = it.next() else { break };
            let (d, p): (__m256, __m256) = $block;
            acc0 = _mm256_fmadd_ps(d, p, acc0);
            $(m0 += $min;)?
            let Some(($b, $q, $da, $s)) = it.next() else { break };
            let (d, p): (__m256, __m256) = $block;
            acc1 = _mm256_fmadd_ps(d, p, acc1);
            $(m1 += $min;)?
        }
        hsum_ps(_mm256_add_ps(acc0, acc1)) + (m0 + m1)
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_avx2(w: &[u8], a: &Q8Act) -> f32 {
    legacy_sum!(w, a, 18, |b, q, da, _s| {
        let x = _mm256_sub_epi8(nibbles(&b[2..]), _mm256_set1_epi8(8));
        (_mm256_set1_ps(fp16(b, 0) * da), dot_ss(x, load256_i8(q)))
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_avx2(w: &[u8], a: &Q8Act) -> f32 {
    legacy_sum!(w, a, 20, |b, q, da, s| {
        (_mm256_set1_ps(fp16(b, 0) * da), dot_us(nibbles(&b[4..]), load256_i8(q)))
    }, min fp16(b, 2) * s)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_avx2(w: &[u8], a: &Q8Act) -> f32 {
    legacy_sum!(w, a, 22, |b, q, da, _s| {
        let hi = bits32(u32::from_le_bytes([b[2], b[3], b[4], b[5]]));
        // c − 16 with c = low | high·16: where the high bit is clear, low − 16 is low | 0xF0 as an i8.
        let x = _mm256_or_si256(nibbles(&b[6..]), _mm256_andnot_si256(hi, _mm256_set1_epi8(0xf0u8 as i8)));
        (_mm256_set1_ps(fp16(b, 0) * da), dot_ss(x, load256_i8(q)))
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_1_avx2(w: &[u8], a: &Q8Act) -> f32 {
    legacy_sum!(w, a, 24, |b, q, da, s| {
        let hi = bits32(u32::from_le_bytes([b[4], b[5], b[6], b[7]]));
        let x = _mm256_or_si256(nibbles(&b[8..]), _mm256_and_si256(hi, _mm256_set1_epi8(0x10)));
        (_mm256_set1_ps(fp16(b, 0) * da), dot_us(x, load256_i8(q)))
    }, min fp16(b, 2) * s)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_avx2(w: &[u8], a: &Q8Act) -> f32 {
    legacy_sum!(w, a, 34, |b, q, da, _s| { (_mm256_set1_ps(fp16(b, 0) * da), dot_ss(load256(&b[2..]), load256_i8(q))) })
}

// ---- k-quants ----

/// Iterates (weight block, activation codes, activation scale, bsums) for a k-quant row.
#[inline]
fn kblocks<'a>(w: &'a [u8], bb: usize, a: &Q8KAct<'a>) -> impl Iterator<Item = (&'a [u8], &'a [i8], f32, &'a [i16])> {
    w.chunks_exact(bb)
        .zip(a.q.chunks_exact(QK_K))
        .zip(a.d.iter().zip(a.bsums.chunks_exact(16)))
        .map(|((b, q), (&d, bs))| (b, q, d, bs))
}

/// Q4_K (`qh` = None) and Q5_K: per 64 values, 32 code bytes hold two 32-value sub-blocks (low and high
/// nibbles), each with its own 6-bit scale; the mins go through the activation's bsums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q45k(w: &[u8], a: &Q8KAct, five: bool) -> f32 {
    let (mut acc, mut mins) = (_mm256_setzero_ps(), 0f32);
    let (bb, ql_at) = if five { (176, 48) } else { (144, 16) };
    let low4 = _mm256_set1_epi8(0x0f);
    for (b, q, da, bs) in kblocks(w, bb, a) {
        let scales = &b[4..16];
        let hbits = if five { load256(&b[16..]) } else { _mm256_setzero_si256() };
        let mut sumi = _mm256_setzero_si256();
        let mut summ = 0i32;
        for j in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * j, scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
            summ += m1 as i32 * (bs[4 * j] as i32 + bs[4 * j + 1] as i32)
                + m2 as i32 * (bs[4 * j + 2] as i32 + bs[4 * j + 3] as i32);
            let bits = load256(&b[ql_at + 32 * j..]);
            let mut lo = _mm256_and_si256(bits, low4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low4);
            if five {
                // Fifth bits: bit 2j of each qh byte for the low sub-block, bit 2j + 1 for the high one.
                let (b1, b2) = (_mm256_set1_epi8((1u8 << (2 * j)) as i8), _mm256_set1_epi8((1u8 << (2 * j + 1)) as i8));
                let sixteen = _mm256_set1_epi8(16);
                let h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, b1), b1), sixteen);
                let h2 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, b2), b2), sixteen);
                lo = _mm256_or_si256(lo, h1);
                hi = _mm256_or_si256(hi, h2);
            }
            let p1 = _mm256_maddubs_epi16(lo, load256_i8(&q[64 * j..]));
            let p2 = _mm256_maddubs_epi16(hi, load256_i8(&q[64 * j + 32..]));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, _mm256_set1_epi16(sc1 as i16)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p2, _mm256_set1_epi16(sc2 as i16)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16(b, 0) * da), _mm256_cvtepi32_ps(sumi), acc);
        mins += fp16(b, 2) * da * summ as f32;
    }
    hsum_ps(acc) - mins
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_avx2(w: &[u8], a: &Q8KAct) -> f32 {
    q45k(w, a, false)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k_avx2(w: &[u8], a: &Q8KAct) -> f32 {
    q45k(w, a, true)
}

/// Q6_K: unsigned codes u = c + 32 (0..63) against the activations, then 32·Σ sc·bsum subtracted.
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_avx2(w: &[u8], a: &Q8KAct) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let low4 = _mm256_set1_epi8(0x0f);
    for (b, q, da, bs) in kblocks(w, 210, a) {
        let sc = &b[192..208];
        // 32·Σ sc·bsum in i32 lanes: sign-extended scales against the 16 bsums.
        let corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(load128(sc)), load256_i16(bs));
        let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(corr));
        for half in 0..2 {
            let ql0 = load256(&b[64 * half..]);
            let ql1 = load256(&b[64 * half + 32..]);
            let qh = load256(&b[128 + 32 * half..]);
            // The four 32-value runs of this half (see `quant::q6k_quants`): low nibbles of ql0 / ql1, then
            // high nibbles, with qh bit pairs 0-1, 2-3, 4-5, 6-7 as bits 4-5. The 16-bit shifts cannot carry
            // between bytes: each shifted field is masked to stay inside its byte.
            let u = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, low4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(0x03))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, low4),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0c))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4),
                    _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0xc0u8 as i8))),
                ),
            ];
            for (k, &uk) in u.iter().enumerate() {
                let at = 128 * half + 32 * k;
                let p = _mm256_maddubs_epi16(uk, load256_i8(&q[at..]));
                // The low 128-bit lane holds values at..at+16 (scale at/16), the high lane the next 16.
                let s = at / 16;
                let sv =
                    _mm256_set_m128i(_mm_set1_epi16((sc[s + 1] as i8) as i16), _mm_set1_epi16((sc[s] as i8) as i16));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sv));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16(b, 208) * da), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}
