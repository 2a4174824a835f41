//! AVX2 (+FMA, F16C) kernels for x86_64, each equal to its portable twin up to f32 summation order.
//!
//! The integer core is ggml's: `_mm256_maddubs_epi16` multiplies unsigned weight codes by signed activation
//! codes and adds adjacent pairs into i16 (no overflow: |pair| ≤ 2·128·127 < 2¹⁵), `_mm256_madd_epi16` widens
//! to i32 (with a sub-block scale, or with ones), and signed × signed products first move the weight's sign
//! onto the activation (`_mm256_sign_epi8`), which is exact because activation codes are never −128. Blocks
//! are accumulated in f32 with FMA.
//!
//! The quantized kernels work on several weight rows at once (`*_rows`): `Kernel::dot_rows` always dots
//! consecutive rows with one activation row, so each activation block is loaded (and its shared terms, such
//! as the code sums the offsets need, computed) once for 4 rows, the 4 rows' accumulators are independent
//! dependency chains, and the loop and call overhead is paid once per 4 rows. The remainder runs through the
//! 2- and 1-row instances of the same generic body.
//!
//! Safety: every entry point here is a safe wrapper handed out by `Kernel` only after `has_avx2()` confirmed
//! the CPU features. The float kernels read through `load*` helpers that slice first. The quantized
//! `*_rows` wrappers check once that the weight bytes and the activation arrays have exactly the lengths
//! of `out.len()` rows of the same number of blocks; the `#[target_feature]` bodies then read through raw
//! pointers whose offsets stay inside those checked lengths (each `// SAFETY:` refers to that check).

use std::arch::x86_64::*;

use super::{Q8Act, Q8KAct};
use crate::ggml::{QK, QK_K};

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

// ---- loads of the float kernels (bounds-checked) ----

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load128(b: &[u8]) -> __m128i {
    let b = &b[..16];
    // SAFETY: `b` has exactly 16 readable bytes; `loadu` has no alignment requirement.
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

// ---- raw loads of the quantized kernels (callers guarantee the bytes are in bounds) ----

/// 32 bytes at `p`. SAFETY (caller): `p..p + 32` is readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ld256<T>(p: *const T) -> __m256i {
    // SAFETY: per the caller; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// 16 bytes at `p`. SAFETY (caller): `p..p + 16` is readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ld128<T>(p: *const T) -> __m128i {
    // SAFETY: per the caller.
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// The f16 at `p` as f32 in lane 0 (the other lanes 0). SAFETY (caller): `p..p + 2` is readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> __m128 {
    // SAFETY: per the caller: 2 bytes, read unaligned.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

// ---- arithmetic helpers ----

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    hsum128(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Lane 0 of `v` in all 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast0(v: __m128) -> __m256 {
    _mm256_broadcastss_ps(v)
}

/// Sums adjacent i16 pairs into 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pairs_ps(x: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_madd_epi16(x, _mm256_set1_epi16(1)))
}

/// The 32 4-bit codes of the 16 bytes at `p` in element order: low nibbles (elements 0..16), then high
/// nibbles. One broadcast load and a per-lane variable shift (high lane by 4) instead of load, shift and
/// insert. SAFETY (caller): `p..p + 16` is readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: per the caller.
    let v = _mm256_broadcastsi128_si256(unsafe { ld128(p) });
    _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f))
}

/// Byte i = 0x10 where bit i of the u32 at `p` is set, else 0 (the fifth bits of a Q5_0/Q5_1 block, in
/// place). SAFETY (caller): `p..p + 4` is readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    // SAFETY: per the caller.
    let qh = unsafe { p.cast::<u32>().read_unaligned() };
    // Byte i takes byte i / 8 of qh (the shuffle works per 128-bit lane; every lane holds all of qh) and
    // tests its bit i % 8.
    let shuf = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let v = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
    let m = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, m), m), _mm256_set1_epi8(0x10))
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
    hsum_ps(v) + <super::float::F32 as super::BlockFormat>::dot(wt, xt)
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
    hsum_ps(v) + <super::float::F16 as super::BlockFormat>::dot(wt, xt)
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
    hsum_ps(v) + <super::float::BF16 as super::BlockFormat>::dot(wt, xt)
}

// ---- the multi-row driver ----

/// Defines `$name`, which runs `$body::<N, 1>` (an `unsafe fn(w: *const u8, rb: usize, a: &[_; M], nb)
/// -> [[f32; N]; M]` over N rows at stride `rb` against M activation rows) over all `out.len()` rows of
/// `w`, `$g1` (8 or 1) rows at a time, then 4, 2 and 1; and `$name2`, the same against two activation
/// rows at once with `$body::<N, 2>`, `$g2` (4 or 1) rows at a time (N × 2 accumulators stay in
/// registers), then 2 and 1. Each row's result is computed by the same operations in the same order whatever N
/// and M, so `$name2` equals two calls of `$name` bit for bit. `$has` is the CPU check (`has_avx2()` or
/// `has_avx512()`) that the `Kernel` constructor handing these functions out has passed.
///
/// Why the one-row group differs by type: rows taken N at a time share each activation block's loads,
/// but they read N interleaved streams, and on the 2-core EPYC (2 MB L2, AVX-512) a 512 MB matrix
/// streamed by 2 threads at 27–29 GB/s one row at a time against 19–22 GB/s 8 or 4 at a time for Q4_K,
/// Q6_K and Q8_0 (a plain read: 32–34; `GGML_STREAM=1 cargo bench --bench ggml`). Those types, whose
/// blocks are cheap to decode per byte, take rows one at a time (`$g1` = 1); the 32-value Q4_x/Q5_x
/// blocks, bound by the arithmetic at one row (~19 GB/s), keep groups of 8. The pair entry keeps groups
/// of 4 (`$g2`) in the AVX2 kernels: a prompt's activation rows pass over each claim of weight rows while
/// it sits in L1 (`cpu::matmuls`), so there the arithmetic counts, and prefill-512 of the 1.5B ran at
/// 60–64 tok/s with them against 53–56 one row at a time. The AVX-512 kernels have quad entries for
/// prompts (`quad_entry!`), which leaves their pair entry to fusion's base + expert batch, a stream:
/// there it takes rows one at a time (`$g2` = 1; Q6_K's pair streamed at 16–17 GB/s 4 rows at a time).
macro_rules! rows_entry {
    ($name:ident, $name2:ident, $body:ident, $act:ident, $bb:expr, $ok:expr, $has:expr, $g1:literal, $g2:literal) => {
        pub(in crate::ggml) fn $name(w: &[u8], a: &$act, out: &mut [f32]) {
            debug_assert!($has);
            let nb = a.d.len();
            let rb = nb * $bb;
            // The one length check the raw reads rely on: `out.len()` rows of `nb` blocks of `$bb` bytes, and
            // activation arrays of exactly `nb` blocks. `Kernel::dot_rows` has already checked the same
            // shape, so this never fails from there.
            let ok: fn(&$act, usize) -> bool = $ok;
            assert!(ok(a, nb) && out.len().checked_mul(rb) == Some(w.len()), "x86 rows kernel: bad lengths");
            let (n, p, a) = (out.len(), w.as_ptr(), [*a]);
            let mut r = 0;
            // SAFETY (all calls): the CPU features were checked (`$has`) by the `Kernel` constructor, the
            // only place these functions are handed out; rows r..r + N lie inside `w` (r + N ≤ n and
            // w.len() = n·rb, checked above), and the bodies read only blocks 0..nb of each row and of the
            // activations.
            if $g1 >= 8 {
                while r + 8 <= n {
                    out[r..r + 8].copy_from_slice(&unsafe { $body::<8, 1>(p.add(r * rb), rb, &a, nb) }[0]);
                    r += 8;
                }
            }
            if $g1 >= 4 {
                while r + 4 <= n {
                    out[r..r + 4].copy_from_slice(&unsafe { $body::<4, 1>(p.add(r * rb), rb, &a, nb) }[0]);
                    r += 4;
                }
                if r + 2 <= n {
                    out[r..r + 2].copy_from_slice(&unsafe { $body::<2, 1>(p.add(r * rb), rb, &a, nb) }[0]);
                    r += 2;
                }
            }
            while r < n {
                out[r] = unsafe { $body::<1, 1>(p.add(r * rb), rb, &a, nb) }[0][0];
                r += 1;
            }
        }

        pub(in crate::ggml) fn $name2(w: &[u8], a: &[$act; 2], out: [&mut [f32]; 2]) {
            debug_assert!($has);
            let nb = a[0].d.len();
            let rb = nb * $bb;
            let ok: fn(&$act, usize) -> bool = $ok;
            let [o0, o1] = out;
            // As in the one-row entry, for both activation rows and both outputs.
            assert!(
                ok(&a[0], nb) && ok(&a[1], nb) && o0.len() == o1.len() && o0.len().checked_mul(rb) == Some(w.len()),
                "x86 rows kernel: bad lengths"
            );
            let (n, p) = (o0.len(), w.as_ptr());
            let mut r = 0;
            let mut put = |r: usize, v: &[[f32; 4]; 2], k: usize| {
                o0[r..r + k].copy_from_slice(&v[0][..k]);
                o1[r..r + k].copy_from_slice(&v[1][..k]);
            };
            let pad = |v: [[f32; 2]; 2]| v.map(|x| [x[0], x[1], 0.0, 0.0]);
            // SAFETY: as in the one-row entry (both activation rows have nb blocks, checked above).
            if $g2 >= 4 {
                while r + 4 <= n {
                    put(r, &unsafe { $body::<4, 2>(p.add(r * rb), rb, a, nb) }, 4);
                    r += 4;
                }
                if r + 2 <= n {
                    put(r, &pad(unsafe { $body::<2, 2>(p.add(r * rb), rb, a, nb) }), 2);
                    r += 2;
                }
            }
            while r < n {
                let v = unsafe { $body::<1, 2>(p.add(r * rb), rb, a, nb) };
                put(r, &[[v[0][0], 0.0, 0.0, 0.0], [v[1][0], 0.0, 0.0, 0.0]], 1);
                r += 1;
            }
        }
    };
}

/// Defines `$name4`, `$body::<1, 4>` over all `out[0].len()` rows of `w` against four activation rows, one
/// weight row at a time: each block is decoded once for four activation rows, which is what a prompt's
/// tokens need (`cpu::matmuls` passes them over each claim of weight rows while it sits in L1). Equal to
/// four calls of the one-row entry bit for bit (see `rows_entry!`). Lengths are checked as there.
macro_rules! quad_entry {
    ($name4:ident, $body:ident, $act:ident, $bb:expr, $ok:expr, $has:expr) => {
        pub(in crate::ggml) fn $name4(w: &[u8], a: &[$act; 4], out: [&mut [f32]; 4]) {
            debug_assert!($has);
            let nb = a[0].d.len();
            let rb = nb * $bb;
            let ok: fn(&$act, usize) -> bool = $ok;
            let n = out[0].len();
            assert!(
                a.iter().all(|a| ok(a, nb)) && out.iter().all(|o| o.len() == n) && n.checked_mul(rb) == Some(w.len()),
                "x86 rows kernel: bad lengths"
            );
            let p = w.as_ptr();
            let mut out = out;
            for r in 0..n {
                // SAFETY: as in `rows_entry!`: the features were checked (`$has`) by the `Kernel` constructor,
                // row r lies inside `w` (r < n, w.len() = n·rb) and every activation row has nb blocks.
                let v = unsafe { $body::<1, 4>(p.add(r * rb), rb, a, nb) };
                for (o, v) in out.iter_mut().zip(v) {
                    o[r] = v[0];
                }
            }
        }
    };
}

/// How far ahead of the block being read the kernels prefetch, in bytes.
///
/// Why software prefetch: a decode step reads each weight row once; where `*_rows` walks 8 rows block by
/// block every row is its own short stream (864 bytes for a Q4_K row of 1536), which the hardware
/// prefetcher, needing a few lines of one stream to lock on, barely starts before it ends; and where it
/// takes rows one at a time, a claim of 32 rows is still only ~28 KB of stream.
/// The rows of one call are contiguous, so the address `PREFETCH_AHEAD` bytes past the current block is
/// one this thread reads soon (a later row or the next claim of its share). Measured here (2-core AVX2,
/// 512 MB out of cache, 2 threads): Q4_K × 1536 12.1 → 20–23 GB/s, Q6_K 6.9 → 15.5, Q5_0 × 896 9.6 → 19.4,
/// Q4_1 11.4 → 20.0; Qwen2.5 1.5B's decode 19.1 tok/s at 4 KB, 25.8 at 8 KB, 25.1 at 16 KB. On a 2-core
/// AMD EPYC (AVX-512, 2 MB L2 per core, the machine kind), with rows still taken 8 at a time, 32 KB
/// was best (1.5B ~17 tok/s at 8 KB, 21.3 at 32 KB); once the streaming formats took rows one at a time
/// (one sequential stream per thread, see `rows_entry!`) the distance went back down: 1.5B / 0.5B /
/// SmolLM2 decode 23.6–25.5 / 48–52 / 138–160 tok/s at 32 KB, 26–29 / 48–53 / 151–187 at 12 KB, 26–31 /
/// 53–55 / 149–170 at 6 KB (same build otherwise, alternating runs).
const PREFETCH_AHEAD: usize = 8192;

/// Prefetches the lines of the `bb`-byte block at `p` (the pointer may lie past the weights: prefetching
/// never faults, and `wrapping_add` keeps the pointer arithmetic defined).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch_block(p: *const u8, bb: usize) {
    for off in [0, 64, 128, bb - 1] {
        if off < bb {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast::<i8>());
        }
    }
}

fn q8_ok(a: &Q8Act, nb: usize) -> bool {
    a.q.len() == nb * QK && a.s.len() == nb
}

fn q8k_ok(a: &Q8KAct, nb: usize) -> bool {
    a.q.len() == nb * QK_K && a.bsums.len() == nb * 16
}

rows_entry!(q4_0_rows, q4_0_rows2, legacy_rows_q4_0, Q8Act, 18, q8_ok, super::has_avx2(), 8, 4);
rows_entry!(q4_1_rows, q4_1_rows2, legacy_rows_q4_1, Q8Act, 20, q8_ok, super::has_avx2(), 8, 4);
rows_entry!(q5_0_rows, q5_0_rows2, legacy_rows_q5_0, Q8Act, 22, q8_ok, super::has_avx2(), 8, 4);
rows_entry!(q5_1_rows, q5_1_rows2, legacy_rows_q5_1, Q8Act, 24, q8_ok, super::has_avx2(), 8, 4);
rows_entry!(q8_0_rows, q8_0_rows2, legacy_rows_q8_0, Q8Act, 34, q8_ok, super::has_avx2(), 1, 4);
rows_entry!(q4_k_rows, q4_k_rows2, q4_k_body, Q8KAct, 144, q8k_ok, super::has_avx2(), 1, 4);
rows_entry!(q5_k_rows, q5_k_rows2, q5_k_body, Q8KAct, 176, q8k_ok, super::has_avx2(), 1, 4);
rows_entry!(q6_k_rows, q6_k_rows2, q6_k_body, Q8KAct, 210, q8k_ok, super::has_avx2(), 1, 4);

// ---- legacy formats ----

// The legacy formats, as the const parameter of the shared body (each instance keeps only its branch).
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;

/// One legacy block's 32 codes at `b`, ready for [`legacy_prod`]: unsigned c (0..15 or 0..31) for the 4- and
/// 5-bit formats, the signed codes for Q8_0. Split from the product so a block is decoded once for several
/// activation rows. SAFETY (caller): the block's bytes at `b` are readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn legacy_codes<const T: u8>(b: *const u8) -> __m256i {
    // SAFETY: every read below is inside the block (18, 20, 22, 24 or 34 bytes), per the caller.
    unsafe {
        match T {
            Q4_0 => nibbles(b.add(2)),
            Q4_1 => nibbles(b.add(4)),
            Q5_0 => _mm256_or_si256(nibbles(b.add(6)), fifth_bits(b.add(2))),
            Q5_1 => _mm256_or_si256(nibbles(b.add(8)), fifth_bits(b.add(4))),
            _ => ld256(b.add(2)),
        }
    }
}

/// The 16 i16 lanes of pair products of a block's codes `c` ([`legacy_codes`]) with the activation codes
/// `q`, offsets included. Q4_0 and Q5_0 use unsigned codes c and subtract `off` = maddubs(8 or 16, q),
/// computed once per activation block for all rows: Σ(c − o)·q = Σc·q − o·Σq, exact in i16
/// (|pair| ≤ 2·31·127 + 2·16·127 < 2¹⁵), and cheaper than moving signs around per row (Q8_0, signed codes,
/// still does).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn legacy_prod<const T: u8>(c: __m256i, q: __m256i, off: __m256i) -> __m256i {
    match T {
        Q4_0 | Q5_0 => _mm256_sub_epi16(_mm256_maddubs_epi16(c, q), off),
        Q4_1 | Q5_1 => _mm256_maddubs_epi16(c, q),
        _ => _mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(q, c)),
    }
}

/// N legacy rows of `nb` blocks at stride `rb` from `w`, against the M Q8_0 activation rows `a`.
///
/// The N rows' f16 scales (and mins) of a block are converted with one F16C instruction and multiplied by
/// each activation's [da, s] with one multiply, instead of a conversion and multiply per row; each weight
/// block is decoded once for all M activation rows.
/// SAFETY (caller): AVX2+FMA+F16C are present; `w..w + (N − 1)·rb + nb·bb` is readable; every `a[m]` has
/// `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn legacy_rows<const T: u8, const N: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    a: &[Q8Act; M],
    nb: usize,
) -> [[f32; N]; M] {
    let bb = match T {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 34,
    };
    let min = T == Q4_1 || T == Q5_1;
    // Four rows summed before widening (below) for the 4- and 5-bit formats. Not for Q8_0: its one-row
    // entry takes rows one at a time (`rows_entry!`), and the pair entry, which groups 4, must equal it
    // bit for bit, so its rows keep the one-row order of operations.
    let grouped = N.is_multiple_of(4) && T != Q8_0;
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    // Q4_1 / Q5_1: lane 2r + 1 accumulates row r's m·s, the min term: a block's dot product is
    // d·da·Σc·q + m·(da·Σq), and da·Σq is the activation block's `s`.
    let mut macc = [[_mm256_setzero_ps(); 2]; M];
    let off_code = _mm256_set1_epi8(if T == Q4_0 { 8 } else { 16 });
    for ib in 0..nb {
        let (mut q, mut off, mut das) =
            ([_mm256_setzero_si256(); M], [_mm256_setzero_si256(); M], [_mm256_setzero_ps(); M]);
        for m in 0..M {
            // SAFETY: ib < nb, and `a[m]` has nb blocks of QK codes and nb scales and sums (caller).
            let (qm, da, s) =
                unsafe { (ld256(a[m].q.as_ptr().add(ib * QK)), *a[m].d.get_unchecked(ib), *a[m].s.get_unchecked(ib)) };
            q[m] = qm;
            if T == Q4_0 || T == Q5_0 {
                off[m] = _mm256_maddubs_epi16(off_code, qm);
            }
            // Lanes 2r, 2r + 1 of group r / 4 (after the multiply below): row r's [d·da, m·s].
            das[m] = _mm256_setr_ps(da, s, da, s, da, s, da, s);
        }
        // SAFETY: block ib of rows 0..N is inside the readable range (caller).
        let b0 = unsafe { w.add(ib * bb) };
        // One line per row every block (Q8_0) or every other block (18–24 bytes: two blocks a line).
        if bb >= 32 || ib.is_multiple_of(2) {
            for r in 0..N {
                _mm_prefetch::<_MM_HINT_T0>(b0.wrapping_add(r * rb + PREFETCH_AHEAD).cast::<i8>());
            }
        }
        let mut dm = [[_mm256_setzero_ps(); 2]; M];
        for g in 0..N.div_ceil(4) {
            // SAFETY: as above (rows 4g..min(4g + 4, N)).
            let heads = unsafe { head_f16s(b0.add(4 * g * rb), rb, (N - 4 * g).min(4), min) };
            for m in 0..M {
                dm[m][g] = _mm256_mul_ps(heads, das[m]);
                if min {
                    macc[m][g] = _mm256_add_ps(macc[m][g], dm[m][g]);
                }
            }
        }
        if grouped {
            // Four rows' products summed into one vector before widening: one `madd`, one conversion and one
            // FMA per 4 rows instead of per row. Lane j of each 128-bit half is then row j's half-block sum.
            for g in 0..N / 4 {
                // SAFETY: as above (rows 4g..4g + 4 < N).
                let c: [__m256i; 4] = std::array::from_fn(|j| unsafe { legacy_codes::<T>(b0.add((4 * g + j) * rb)) });
                for m in 0..M {
                    let p: [__m256i; 4] = std::array::from_fn(|j| legacy_prod::<T>(c[j], q[m], off[m]));
                    // Exact in i16: 8 products of |c′| ≤ 31 and |q| ≤ 127 (c′ the code, less its offset) stay
                    // within 2·4·31·127 < 2¹⁵.
                    let h = _mm256_hadd_epi16(_mm256_hadd_epi16(p[0], p[1]), _mm256_hadd_epi16(p[2], p[3]));
                    let sums = _mm256_madd_epi16(h, _mm256_set1_epi16(1));
                    let d = _mm256_permutevar8x32_ps(dm[m][g], _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
                    acc[m][g] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sums), acc[m][g]);
                }
            }
        } else {
            for r in 0..N {
                // SAFETY: as above.
                let c = unsafe { legacy_codes::<T>(b0.add(r * rb)) };
                for m in 0..M {
                    let p = legacy_prod::<T>(c, q[m], off[m]);
                    let d = _mm256_permutevar8x32_ps(dm[m][r / 4], _mm256_set1_epi32(2 * (r % 4) as i32));
                    acc[m][r] = _mm256_fmadd_ps(d, pairs_ps(p), acc[m][r]);
                }
            }
        }
    }
    std::array::from_fn(|m| {
        let mut mins = [0f32; 16];
        if min {
            // SAFETY: `mins` has 16 f32 of room.
            unsafe {
                _mm256_storeu_ps(mins.as_mut_ptr(), macc[m][0]);
                _mm256_storeu_ps(mins.as_mut_ptr().add(8), macc[m][1]);
            }
        }
        if grouped {
            let mut v = [0f32; 16];
            for g in 0..N / 4 {
                // SAFETY: `v` has room for 8 f32 at 8g, g < 2.
                unsafe { _mm256_storeu_ps(v.as_mut_ptr().add(8 * g), acc[m][g]) };
            }
            std::array::from_fn(|r| (v[8 * (r / 4) + r % 4] + v[8 * (r / 4) + r % 4 + 4]) + mins[2 * r + 1])
        } else {
            std::array::from_fn(|r| hsum_ps(acc[m][r]) + mins[2 * r + 1])
        }
    })
}

/// The first two f16 of n ≤ 4 blocks at stride `rb` from `b0`, as f32 lanes 2r and 2r + 1 (the others 0);
/// only the first of each when `two` is false (lanes 2r + 1 are then 0).
/// SAFETY (caller): the first 4 bytes of each of the n blocks are readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn head_f16s(b0: *const u8, rb: usize, n: usize, two: bool) -> __m256 {
    // SAFETY: 4 bytes at the start of block r < n, read unaligned (caller).
    let rd = |r: usize| unsafe { b0.add(r * rb).cast::<i32>().read_unaligned() };
    let mut v = _mm_cvtsi32_si128(rd(0));
    if n > 1 {
        v = _mm_insert_epi32::<1>(v, rd(1));
    }
    if n > 2 {
        v = _mm_insert_epi32::<2>(v, rd(2));
    }
    if n > 3 {
        v = _mm_insert_epi32::<3>(v, rd(3));
    }
    if !two {
        // The second f16 is then code bytes: clear it, as random bits would make F16C convert subnormals.
        v = _mm_and_si128(v, _mm_set1_epi32(0xffff));
    }
    _mm256_cvtph_ps(v)
}

/// Defines `$name`, the instance of the shared legacy body `$inner` for format `$t` (each instance keeps
/// only its branch), compiled for `$feat`; used here and by `avx512`.
macro_rules! legacy_body {
    ($name:ident, $t:expr, $inner:ident, $feat:literal) => {
        /// One legacy format's instance of the shared body. SAFETY (caller): as for the body.
        #[target_feature(enable = $feat)]
        unsafe fn $name<const N: usize, const M: usize>(
            w: *const u8,
            rb: usize,
            a: &[Q8Act; M],
            nb: usize,
        ) -> [[f32; N]; M] {
            // SAFETY: the same contract.
            unsafe { $inner::<{ $t }, N, M>(w, rb, a, nb) }
        }
    };
}

legacy_body!(legacy_rows_q4_0, Q4_0, legacy_rows, "avx2,fma,f16c");
legacy_body!(legacy_rows_q4_1, Q4_1, legacy_rows, "avx2,fma,f16c");
legacy_body!(legacy_rows_q5_0, Q5_0, legacy_rows, "avx2,fma,f16c");
legacy_body!(legacy_rows_q5_1, Q5_1, legacy_rows, "avx2,fma,f16c");
legacy_body!(legacy_rows_q8_0, Q8_0, legacy_rows, "avx2,fma,f16c");

// ---- k-quants ----

/// The 12 packed 6-bit scales and mins of a Q4_K/Q5_K block as bytes sc0..sc7, m0..m7 (see
/// `quant::scale_min_k4`), from the block's first 16 bytes `v` (d, dmin, then the 12 scale bytes), with
/// vector shuffles and masks instead of 16 scalar unpacks. With s = the scale bytes (v[4..16]):
/// sc j<4 = s[j] & 63, m j<4 = s[j+4] & 63, sc j≥4 = (s[j+4] & 15) | (s[j−4] >> 6) << 4,
/// m j≥4 = (s[j+4] >> 4) | (s[j] >> 6) << 4.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn k4_scales_mins(v: __m128i) -> __m128i {
    // Dword 0: s[0..4] (sc0..3), 1: s[8..12] (sc4..7, low nibbles), 2: s[4..8] (m0..3), 3: s[8..12] (m4..7,
    // high nibbles).
    let base = _mm_shuffle_epi8(v, _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
    // The top two bits of s[0..4] (for sc4..7) and s[4..8] (for m4..7).
    let top = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11));
    // Shifting whole dwords moves neighbouring bits across bytes; the masks keep only each byte's own field.
    let low = _mm_and_si128(
        _mm_srlv_epi32(base, _mm_setr_epi32(0, 0, 0, 4)),
        _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f),
    );
    _mm_or_si128(low, _mm_and_si128(_mm_srli_epi32::<2>(top), _mm_set1_epi8(0x30)))
}

/// Shuffle picking i16 lane `k` of each 128-bit lane into all of it (for broadcasting a sub-block scale).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pick16(k: i16) -> __m256i {
    _mm256_set1_epi16((2 * k) | ((2 * k + 1) << 8))
}

/// Q4_K (`FIVE` = false) and Q5_K, N rows against M activation rows: per 64 values, 32 code bytes hold two
/// 32-value sub-blocks (low and high nibbles), each with its own 6-bit scale; the mins go through the
/// activation's bsums with one `madd` per block. Codes and scales are decoded once for all M activation
/// rows. SAFETY (caller): as for [`legacy_rows`], with 144- or 176-byte blocks and Q8_K `a`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45k_rows<const FIVE: bool, const N: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    a: &[Q8KAct; M],
    nb: usize,
) -> [[f32; N]; M] {
    let (bb, ql_at) = if FIVE { (176, 48) } else { (144, 16) };
    let low4 = _mm256_set1_epi8(0x0f);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    let mut macc = [[_mm_setzero_ps(); N]; M];
    for ib in 0..nb {
        let (mut q, mut q8s, mut dav) = ([std::ptr::null(); M], [_mm_setzero_si128(); M], [_mm_setzero_ps(); M]);
        for m in 0..M {
            // SAFETY: ib < nb and `a[m]` has nb super-blocks (caller).
            let (qm, da, bs) = unsafe {
                (a[m].q.as_ptr().add(ib * QK_K), *a[m].d.get_unchecked(ib), ld256(a[m].bsums.as_ptr().add(16 * ib)))
            };
            q[m] = qm;
            // Sums of the bsum pairs: the activation code sum of each 32-value sub-block, shared by all rows.
            q8s[m] = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256::<1>(bs));
            dav[m] = _mm_set1_ps(da);
        }
        for r in 0..N {
            // SAFETY: block ib of row r is readable (caller); all offsets below are inside its bb bytes.
            let b = unsafe { w.add(r * rb + ib * bb) };
            prefetch_block(b.wrapping_add(PREFETCH_AHEAD), bb);
            let head = unsafe { ld128(b) };
            // The f16 pair [d, dmin] is the block's first 4 bytes.
            let dmin = _mm_cvtph_ps(head);
            let ms = _mm256_cvtepu8_epi16(k4_scales_mins(head));
            let mut dd = [_mm_setzero_ps(); M];
            for m in 0..M {
                // [d·da, dmin·da, ..]
                dd[m] = _mm_mul_ps(dmin, dav[m]);
                let mins = _mm_madd_epi16(_mm256_extracti128_si256::<1>(ms), q8s[m]);
                macc[m][r] = _mm_fmadd_ps(_mm_permute_ps::<0x55>(dd[m]), _mm_cvtepi32_ps(mins), macc[m][r]);
            }
            let sc = _mm256_permute2x128_si256::<0x00>(ms, ms);
            // SAFETY: as above (16..48 is Q5_K's qh).
            let hbits = if FIVE { unsafe { ld256(b.add(16)) } } else { _mm256_setzero_si256() };
            let mut sumi = [_mm256_setzero_si256(); M];
            for j in 0..4 {
                // SAFETY: code bytes ql_at + 32j.. + 32 of the block.
                let bits = unsafe { ld256(b.add(ql_at + 32 * j)) };
                let mut lo = _mm256_and_si256(bits, low4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low4);
                if FIVE {
                    // Fifth bits: bit 2j of each qh byte for the low sub-block, bit 2j + 1 for the high one,
                    // moved to bit 4 (the masks drop what the 16-bit shifts carry in from the other byte).
                    let hb = srl16(hbits, 2 * j as i32);
                    let sixteen = _mm256_set1_epi8(16);
                    lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(hb), sixteen));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(hb), sixteen));
                }
                let s1 = _mm256_shuffle_epi8(sc, pick16(2 * j as i16));
                let s2 = _mm256_shuffle_epi8(sc, pick16(2 * j as i16 + 1));
                for m in 0..M {
                    // SAFETY: activation codes 64j..64j + 64 of this super-block.
                    let (q1, q2) = unsafe { (ld256(q[m].add(64 * j)), ld256(q[m].add(64 * j + 32))) };
                    let p1 = _mm256_maddubs_epi16(lo, q1);
                    let p2 = _mm256_maddubs_epi16(hi, q2);
                    sumi[m] = _mm256_add_epi32(
                        sumi[m],
                        _mm256_add_epi32(_mm256_madd_epi16(p1, s1), _mm256_madd_epi16(p2, s2)),
                    );
                }
            }
            for m in 0..M {
                acc[m][r] = _mm256_fmadd_ps(bcast0(dd[m]), _mm256_cvtepi32_ps(sumi[m]), acc[m][r]);
            }
        }
    }
    std::array::from_fn(|m| std::array::from_fn(|r| hsum_ps(acc[m][r]) - hsum128(macc[m][r])))
}

/// `v` shifted right by `n` bits in every 16-bit lane (n a loop constant: it folds to an immediate shift).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn srl16(v: __m256i, n: i32) -> __m256i {
    _mm256_srl_epi16(v, _mm_cvtsi32_si128(n))
}

/// See [`q45k_rows`]. SAFETY (caller): as there.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_body<const N: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    a: &[Q8KAct; M],
    nb: usize,
) -> [[f32; N]; M] {
    // SAFETY: the same contract.
    unsafe { q45k_rows::<false, N, M>(w, rb, a, nb) }
}

/// See [`q45k_rows`]. SAFETY (caller): as there.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_body<const N: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    a: &[Q8KAct; M],
    nb: usize,
) -> [[f32; N]; M] {
    // SAFETY: the same contract.
    unsafe { q45k_rows::<true, N, M>(w, rb, a, nb) }
}

/// Q6_K, N rows against M activation rows: unsigned codes u = c + 32 (0..63) against the activations, then
/// 32·Σ sc·bsum subtracted; codes and scales decoded once for all M activation rows.
/// SAFETY (caller): as for [`legacy_rows`], with 210-byte blocks and Q8_K `a`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_body<const N: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    a: &[Q8KAct; M],
    nb: usize,
) -> [[f32; N]; M] {
    let low4 = _mm256_set1_epi8(0x0f);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    for ib in 0..nb {
        let (mut q, mut bs, mut dav) = ([std::ptr::null(); M], [_mm256_setzero_si256(); M], [_mm_setzero_ps(); M]);
        for m in 0..M {
            // SAFETY: ib < nb and `a[m]` has nb super-blocks (caller).
            unsafe {
                q[m] = a[m].q.as_ptr().add(ib * QK_K);
                bs[m] = ld256(a[m].bsums.as_ptr().add(16 * ib));
                dav[m] = _mm_set_ss(*a[m].d.get_unchecked(ib));
            }
        }
        for r in 0..N {
            // SAFETY: block ib of row r is readable (caller); all offsets below are inside its 210 bytes.
            let b = unsafe { w.add(r * rb + ib * 210) };
            prefetch_block(b.wrapping_add(PREFETCH_AHEAD), 210);
            let sc16 = _mm256_cvtepi8_epi16(unsafe { ld128(b.add(192)) });
            // 32·Σ sc·bsum in i32 lanes: the sign-extended scales against the 16 bsums.
            let mut sumi: [__m256i; M] = std::array::from_fn(|m| {
                let corr = _mm256_madd_epi16(sc16, bs[m]);
                _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(corr))
            });
            for half in 0..2 {
                // SAFETY: bytes 64·half..+64 (ql) and 128 + 32·half..+32 (qh) of the block.
                let (ql0, ql1, qh) =
                    unsafe { (ld256(b.add(64 * half)), ld256(b.add(64 * half + 32)), ld256(b.add(128 + 32 * half))) };
                // This half's 8 scales (i16) in both 128-bit lanes; run k takes scale 2k in its low lane and
                // 2k + 1 in its high lane with one shuffle.
                let sch = if half == 0 {
                    _mm256_permute2x128_si256::<0x00>(sc16, sc16)
                } else {
                    _mm256_permute2x128_si256::<0x11>(sc16, sc16)
                };
                // The four 32-value runs of this half (see `quant::q6k_quants`): low nibbles of ql0 / ql1,
                // then high nibbles, with qh bit pairs 0-1, 2-3, 4-5, 6-7 as bits 4-5. The 16-bit shifts
                // cannot carry between bytes: each shifted field is masked to stay inside its byte.
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
                    let sv = _mm256_shuffle_epi8(sch, pick2(k as i16));
                    for m in 0..M {
                        // SAFETY: activation codes at..at + 32 of this super-block.
                        let p = _mm256_maddubs_epi16(uk, unsafe { ld256(q[m].add(128 * half + 32 * k)) });
                        sumi[m] = _mm256_add_epi32(sumi[m], _mm256_madd_epi16(p, sv));
                    }
                }
            }
            // SAFETY: the f16 scale at 208..210.
            let d = unsafe { f16_at(b.add(208)) };
            for m in 0..M {
                let d = _mm_mul_ss(d, dav[m]);
                acc[m][r] = _mm256_fmadd_ps(bcast0(d), _mm256_cvtepi32_ps(sumi[m]), acc[m][r]);
            }
        }
    }
    std::array::from_fn(|m| std::array::from_fn(|r| hsum_ps(acc[m][r])))
}

/// Shuffle picking i16 lane 2k into the whole low 128-bit lane and lane 2k + 1 into the high one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pick2(k: i16) -> __m256i {
    let (a, b) = (4 * k, 4 * k + 2);
    _mm256_setr_m128i(_mm_set1_epi16(a | ((a + 1) << 8)), _mm_set1_epi16(b | ((b + 1) << 8)))
}

// After `rows_entry!` (macros are in scope from their definition on).
pub(super) mod avx512;
