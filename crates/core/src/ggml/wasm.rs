//! wasm32 simd128 kernels (the browser's CPU path), each equal to its portable twin up to f32 summation order.
//!
//! Why by hand: the wasm build is compiled without `+simd128` (a module that needs no SIMD loads
//! everywhere, and the workspace sets no RUSTFLAGS), so the compiler never vectorizes the portable loops
//! there. These bodies enable simd128 per function; every engine that runs WebGPU runs wasm SIMD, and
//! one that lacked it would refuse the module at load rather than misbehave.
//!
//! The integer core: weight codes are unpacked to `i8x16` (nibble masks and shifts; Q5_0/Q5_1 take the
//! portable unpacking, their fifth bit is a bit-gather simd128 has no instruction for), multiplied by the
//! activation codes with `i16x8_extmul_*_i8x16` (exact: |c·q| ≤ 128·127), summed pairwise into i32 lanes
//! and reduced per block, then scaled in f32 per block in the order the portable kernel uses.
//!
//! Safety: the `#[target_feature(enable = "simd128")]` bodies are `unsafe fn`s reached only through the
//! safe wrappers at the bottom; every load slices its 16 bytes first, so nothing reads out of bounds.

use core::arch::wasm32::*;

use super::kquants::scale_min_k4;
use super::legacy::q5_codes;
use super::{GgmlType, Q8Act, Q8KAct, QK, QK_K, h};

/// The 16 bytes of `x` from element `at` on (16 `u8`/`i8` or 4 `f32`).
#[inline]
#[target_feature(enable = "simd128")]
fn load<T: Copy>(x: &[T], at: usize) -> v128 {
    let s = &x[at..at + 16 / size_of::<T>()];
    // SAFETY: `s` spans exactly 16 readable bytes; `v128_load` has no alignment requirement.
    unsafe { v128_load(s.as_ptr().cast()) }
}

/// The i32x4 partial sums of 16 signed weight codes times 16 activation codes.
#[inline]
#[target_feature(enable = "simd128")]
fn dot16(c: v128, q: v128) -> v128 {
    let lo = i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(c, q));
    let hi = i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(c, q));
    i32x4_add(lo, hi)
}

#[inline]
#[target_feature(enable = "simd128")]
fn hsum_i32(v: v128) -> i32 {
    i32x4_extract_lane::<0>(v) + i32x4_extract_lane::<1>(v) + i32x4_extract_lane::<2>(v) + i32x4_extract_lane::<3>(v)
}

#[inline]
#[target_feature(enable = "simd128")]
fn hsum_f32(v: v128) -> f32 {
    f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v) + f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v)
}

/// The low and high nibbles of 16 bytes, minus `bias`, as two i8x16.
#[inline]
#[target_feature(enable = "simd128")]
fn nibbles(b: v128, bias: i8) -> (v128, v128) {
    let m = u8x16_splat(0x0f);
    let k = i8x16_splat(bias);
    (i8x16_sub(v128_and(b, m), k), i8x16_sub(u8x16_shr(b, 4), k))
}

/// Legacy formats: Σ over blocks of d·da·(codes·q) (+ m·s for the formats with a min).
#[target_feature(enable = "simd128")]
unsafe fn legacy_body(ty: GgmlType, w: &[u8], a: &Q8Act) -> f32 {
    let bb = ty.block_bytes();
    let mut acc = 0f32;
    for (i, (b, q)) in w.chunks_exact(bb).zip(a.q.chunks_exact(QK)).enumerate() {
        let (q0, q1) = (load(q, 0), load(q, 16));
        let (sum, min) = match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let off = if ty == GgmlType::Q4_0 { 2 } else { 4 };
                let (lo, hi) = nibbles(load(b, off), if ty == GgmlType::Q4_0 { 8 } else { 0 });
                (i32x4_add(dot16(lo, q0), dot16(hi, q1)), ty == GgmlType::Q4_1)
            }
            GgmlType::Q8_0 => (i32x4_add(dot16(load(b, 2), q0), dot16(load(b, 18), q1)), false),
            _ => {
                // Q5_0 / Q5_1: the portable unpacking, then the vector dot product.
                let c = q5_codes(ty, b);
                let cb: [u8; QK] = c.map(|v| v as u8);
                (i32x4_add(dot16(load(&cb, 0), q0), dot16(load(&cb, 16), q1)), ty == GgmlType::Q5_1)
            }
        };
        acc += h(b, 0) * a.d[i] * hsum_i32(sum) as f32;
        if min {
            acc += h(b, 2) * a.s[i];
        }
    }
    acc
}

/// Q4_K: per super-block d·da·Σ sc·(codes·q) − dmin·da·Σ m·bsums, 6-bit scales and mins per 32.
#[target_feature(enable = "simd128")]
unsafe fn q4_k_body(w: &[u8], a: &Q8KAct) -> f32 {
    let mut acc = 0f32;
    for (i, (b, q)) in w.chunks_exact(144).zip(a.q.chunks_exact(QK_K)).enumerate() {
        let bs = &a.bsums[16 * i..16 * i + 16];
        let mut sumi = i32x4_splat(0);
        let mut summ = 0i32;
        for j in 0..4 {
            // 32 code bytes: their low nibbles are sub-block 2j, their high nibbles sub-block 2j + 1.
            let (l0, h0) = nibbles(load(b, 16 + 32 * j), 0);
            let (l1, h1) = nibbles(load(b, 32 + 32 * j), 0);
            let lo = i32x4_add(dot16(l0, load(q, 64 * j)), dot16(l1, load(q, 64 * j + 16)));
            let hi = i32x4_add(dot16(h0, load(q, 64 * j + 32)), dot16(h1, load(q, 64 * j + 48)));
            let (sc0, m0) = scale_min_k4(2 * j, &b[4..16]);
            let (sc1, m1) = scale_min_k4(2 * j + 1, &b[4..16]);
            sumi = i32x4_add(sumi, i32x4_mul(lo, i32x4_splat(sc0 as i32)));
            sumi = i32x4_add(sumi, i32x4_mul(hi, i32x4_splat(sc1 as i32)));
            summ += m0 as i32 * (bs[4 * j] as i32 + bs[4 * j + 1] as i32);
            summ += m1 as i32 * (bs[4 * j + 2] as i32 + bs[4 * j + 3] as i32);
        }
        acc += a.d[i] * (h(b, 0) * hsum_i32(sumi) as f32 - h(b, 2) * summ as f32);
    }
    acc
}

/// Bits `s..s + 2` of each byte of `qh`, moved to bits 4 and 5 (a Q6_K code's high part); `m2` is 3s.
#[inline]
#[target_feature(enable = "simd128")]
fn high2(qh: v128, s: u32, m2: v128) -> v128 {
    i8x16_shl(v128_and(u8x16_shr(qh, s), m2), 4)
}

/// Q6_K: per super-block d·da·Σ sc·((u − 32)·q) with 6-bit codes u (4 low bits in `ql`, 2 high in `qh`)
/// and signed 8-bit scales per 16.
#[target_feature(enable = "simd128")]
unsafe fn q6_k_body(w: &[u8], a: &Q8KAct) -> f32 {
    let mut acc = 0f32;
    let (m4, m2, k32) = (u8x16_splat(0x0f), u8x16_splat(0x03), i8x16_splat(32));
    for (i, (b, q)) in w.chunks_exact(210).zip(a.q.chunks_exact(QK_K)).enumerate() {
        let mut sumi = i32x4_splat(0);
        for n in 0..2 {
            // Values 128n + l (+32, +64, +96) for l in l0..l0 + 16 share ql[l], ql[l + 32] and qh[l].
            for l0 in [0, 16] {
                let qa = load(b, 64 * n + l0);
                let qb = load(b, 64 * n + l0 + 32);
                let qh = load(b, 128 + 32 * n + l0);
                let codes = [
                    v128_or(v128_and(qa, m4), high2(qh, 0, m2)),
                    v128_or(v128_and(qb, m4), high2(qh, 2, m2)),
                    v128_or(u8x16_shr(qa, 4), high2(qh, 4, m2)),
                    v128_or(u8x16_shr(qb, 4), high2(qh, 6, m2)),
                ];
                for (k, c) in codes.into_iter().enumerate() {
                    let v = 128 * n + 32 * k + l0;
                    let sc = (b[192 + v / 16] as i8) as i32;
                    let d = dot16(i8x16_sub(c, k32), load(q, v));
                    sumi = i32x4_add(sumi, i32x4_mul(d, i32x4_splat(sc)));
                }
            }
        }
        acc += a.d[i] * h(b, 208) * hsum_i32(sumi) as f32;
    }
    acc
}

/// F32 rows: Σ w·x with two f32x4 accumulators, then the scalar tail.
#[target_feature(enable = "simd128")]
unsafe fn f32_body(w: &[u8], x: &[f32]) -> f32 {
    let n = (w.len() / 4).min(x.len());
    let (mut s0, mut s1) = (f32x4_splat(0.0), f32x4_splat(0.0));
    let mut j = 0;
    while j + 8 <= n {
        s0 = f32x4_add(s0, f32x4_mul(load(w, 4 * j), load(x, j)));
        s1 = f32x4_add(s1, f32x4_mul(load(w, 4 * j + 16), load(x, j + 4)));
        j += 8;
    }
    let mut acc = hsum_f32(f32x4_add(s0, s1));
    for k in j..n {
        acc += f32::from_le_bytes([w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3]]) * x[k];
    }
    acc
}

/// BF16 rows: each value is the high half of an f32, so widening is a 16-bit shift.
#[target_feature(enable = "simd128")]
unsafe fn bf16_body(w: &[u8], x: &[f32]) -> f32 {
    let n = (w.len() / 2).min(x.len());
    let (mut s0, mut s1) = (f32x4_splat(0.0), f32x4_splat(0.0));
    let mut j = 0;
    while j + 8 <= n {
        let v = load(w, 2 * j);
        let lo = i32x4_shl(u32x4_extend_low_u16x8(v), 16);
        let hi = i32x4_shl(u32x4_extend_high_u16x8(v), 16);
        s0 = f32x4_add(s0, f32x4_mul(lo, load(x, j)));
        s1 = f32x4_add(s1, f32x4_mul(hi, load(x, j + 4)));
        j += 8;
    }
    let mut acc = hsum_f32(f32x4_add(s0, s1));
    for k in j..n {
        acc += half::bf16::from_le_bytes([w[2 * k], w[2 * k + 1]]).to_f32() * x[k];
    }
    acc
}

// ---- the safe entry points `Kernel::simd128` hands out ----

macro_rules! legacy_entry {
    ($name:ident, $ty:expr) => {
        pub(super) fn $name(w: &[u8], a: &Q8Act) -> f32 {
            // SAFETY: the body only needs simd128, which a wasm engine either has or refuses the module for.
            unsafe { legacy_body($ty, w, a) }
        }
    };
}

legacy_entry!(q4_0_dot, GgmlType::Q4_0);
legacy_entry!(q4_1_dot, GgmlType::Q4_1);
legacy_entry!(q5_0_dot, GgmlType::Q5_0);
legacy_entry!(q5_1_dot, GgmlType::Q5_1);
legacy_entry!(q8_0_dot, GgmlType::Q8_0);

pub(super) fn q4_k_dot(w: &[u8], a: &Q8KAct) -> f32 {
    // SAFETY: as in `legacy_entry!`.
    unsafe { q4_k_body(w, a) }
}

pub(super) fn q6_k_dot(w: &[u8], a: &Q8KAct) -> f32 {
    // SAFETY: as in `legacy_entry!`.
    unsafe { q6_k_body(w, a) }
}

pub(super) fn f32_dot(w: &[u8], x: &[f32]) -> f32 {
    // SAFETY: as in `legacy_entry!`.
    unsafe { f32_body(w, x) }
}

pub(super) fn bf16_dot(w: &[u8], x: &[f32]) -> f32 {
    // SAFETY: as in `legacy_entry!`.
    unsafe { bf16_body(w, x) }
}
