//! AVX-512 (F, BW, VL, VNNI) kernels for the k-quants that dominate Q4_K_M files (Q4_K and Q6_K) and for
//! the legacy 32-value formats, each equal to its portable twin up to f32 summation order.
//!
//! Why a second x86 variant: on the 2-core EPYC this project is measured on, the AVX2 Q4_K/Q6_K bodies are
//! bound by instruction throughput, not by memory (the 1.5B decode reached ~52 % of the bandwidth roofline
//! where llama.cpp reaches ~69 %). Here one 512-bit register holds two 32-value sub-blocks, so a Q4_K
//! block's 128 code bytes are 2 loads instead of 4, and VNNI's `vpdpwssd` fuses the scale multiply and the
//! accumulate (`madd` + `add`) that AVX2 spends two instructions on. The integer algebra is the AVX2 one
//! (see `super`): `maddubs` of unsigned weight codes by signed activation codes into i16 pairs, then the
//! sub-block scale through `vpdpwssd` into i32.
//!
//! The legacy formats keep 256-bit registers (a block is 32 codes) and gain from VNNI's `vpdpbusd` (u8 × i8
//! products summed in fours straight into i32, instead of `maddubs` + `madd`) and from the fifth bits of
//! Q5_0/Q5_1 arriving as a mask register (`kmov` + one masked add, instead of AVX2's six-instruction
//! byte spread).
//!
//! The activation codes of a super-block are loaded (in the order the weight registers hold their
//! sub-blocks) once per block for all N rows: 32 registers leave room for them.
//!
//! Safety: as in `super`: the entry points come from `rows_entry!`, which checks the lengths once, and are
//! handed out only by `Kernel::avx512` after `has_avx512()`; the bodies read through raw pointers inside
//! the checked lengths.

use std::arch::x86_64::*;

use super::{
    PREFETCH_AHEAD, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, f16_at, hsum_ps, hsum128, k4_scales_mins, ld128, ld256, nibbles,
    prefetch_block, q8_ok, q8k_ok,
};
use crate::ggml::panel::{ActRow, PanelRef};
use crate::ggml::{Q8Act, Q8KAct};
use crate::ggml::{QK, QK_K};

rows_entry!(q4_0_rows, q4_0_rows2, legacy_q4_0, Q8Act, 18, q8_ok, crate::ggml::has_avx512(), 8, 1);
rows_entry!(q4_1_rows, q4_1_rows2, legacy_q4_1, Q8Act, 20, q8_ok, crate::ggml::has_avx512(), 8, 1);
rows_entry!(q5_0_rows, q5_0_rows2, legacy_q5_0, Q8Act, 22, q8_ok, crate::ggml::has_avx512(), 8, 1);
rows_entry!(q5_1_rows, q5_1_rows2, legacy_q5_1, Q8Act, 24, q8_ok, crate::ggml::has_avx512(), 8, 1);
rows_entry!(q8_0_rows, q8_0_rows2, legacy_q8_0, Q8Act, 34, q8_ok, crate::ggml::has_avx512(), 1, 1);
rows_entry!(q4_k_rows, q4_k_rows2, q4_k_body, Q8KAct, 144, q8k_ok, crate::ggml::has_avx512(), 1, 1);
rows_entry!(q6_k_rows, q6_k_rows2, q6_k_body, Q8KAct, 210, q8k_ok, crate::ggml::has_avx512(), 1, 1);
quad_entry!(q4_0_rows4, legacy_q4_0, Q8Act, 18, q8_ok, crate::ggml::has_avx512());
quad_entry!(q4_1_rows4, legacy_q4_1, Q8Act, 20, q8_ok, crate::ggml::has_avx512());
quad_entry!(q5_0_rows4, legacy_q5_0, Q8Act, 22, q8_ok, crate::ggml::has_avx512());
quad_entry!(q5_1_rows4, legacy_q5_1, Q8Act, 24, q8_ok, crate::ggml::has_avx512());
quad_entry!(q8_0_rows4, legacy_q8_0, Q8Act, 34, q8_ok, crate::ggml::has_avx512());
quad_entry!(q4_k_rows4, q4_k_body, Q8KAct, 144, q8k_ok, crate::ggml::has_avx512());
quad_entry!(q6_k_rows4, q6_k_body, Q8KAct, 210, q8k_ok, crate::ggml::has_avx512());

/// 64 bytes at `p`. SAFETY (caller): `p..p + 64` is readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn ld512<T>(p: *const T) -> __m512i {
    // SAFETY: per the caller; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// A `vpermw` index putting i16 lane `a` of the source in the low 256 bits and lane `b` in the high ones.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn halves16(a: i16, b: i16) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi16(a), _mm256_set1_epi16(b))
}

/// A `vpermw` index putting i16 lane `first + L` of the source in 128-bit lane L (L = 0..4).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn quarters16(first: i64) -> __m512i {
    // Each 128-bit lane holds 8 copies of one i16 index: 0x0001_0001_0001_0001 times it, per 64 bits.
    let rep = |k: i64| (first + k) * 0x0001_0001_0001_0001;
    _mm512_setr_epi64(rep(0), rep(0), rep(1), rep(1), rep(2), rep(2), rep(3), rep(3))
}

/// Q4_K, N rows against M activation rows. Each 32-byte run of codes j (values 64j..64j + 64: low nibbles,
/// then high) is broadcast to both 256-bit halves and shifted by 0 in the low half and 4 in the high one:
/// one register of 64 codes in element order, so the activation codes are read straight (as the
/// multiply's memory operand), and each half gets its sub-block's scale from one `vpermw`. Mins as in
/// the AVX2 body: through the bsums.
/// SAFETY (caller): AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C are present; `w..w + (N − 1)·rb + nb·144` is
/// readable; every `a[m]` has `nb` super-blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_k_body<const N: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    a: &[Q8KAct; M],
    nb: usize,
) -> [[f32; N]; M] {
    let low4 = _mm512_set1_epi8(0x0f);
    let nib_shift = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
    // Scale lanes for run j: sub-blocks 2j (low half) and 2j + 1 (high half).
    let sidx = [halves16(0, 1), halves16(2, 3), halves16(4, 5), halves16(6, 7)];
    let mut acc = [[_mm512_setzero_ps(); N]; M];
    let mut macc = [[_mm_setzero_ps(); N]; M];
    for ib in 0..nb {
        let (mut q, mut q8s, mut dav) = ([std::ptr::null(); M], [_mm_setzero_si128(); M], [_mm_setzero_ps(); M]);
        for m in 0..M {
            // SAFETY: ib < nb and `a[m]` has nb super-blocks (caller).
            let (qm, da, bs) = unsafe {
                (a[m].q.as_ptr().add(ib * QK_K), *a[m].d.get_unchecked(ib), ld256(a[m].bsums.as_ptr().add(16 * ib)))
            };
            q[m] = qm;
            q8s[m] = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256::<1>(bs));
            dav[m] = _mm_set1_ps(da);
        }
        for r in 0..N {
            // SAFETY: block ib of row r is readable (caller); all offsets below are inside its 144 bytes.
            let b = unsafe { w.add(r * rb + ib * 144) };
            prefetch_block(b.wrapping_add(PREFETCH_AHEAD), 144);
            let head = unsafe { ld128(b) };
            let dmin = _mm_cvtph_ps(head);
            let ms = _mm256_cvtepu8_epi16(k4_scales_mins(head));
            let mut dd = [_mm_setzero_ps(); M];
            for m in 0..M {
                dd[m] = _mm_mul_ps(dmin, dav[m]);
                let mins = _mm_madd_epi16(_mm256_extracti128_si256::<1>(ms), q8s[m]);
                macc[m][r] = _mm_fmadd_ps(_mm_permute_ps::<0x55>(dd[m]), _mm_cvtepi32_ps(mins), macc[m][r]);
            }
            let msz = _mm512_castsi256_si512(ms);
            let mut sumi = [_mm512_setzero_si512(); M];
            for (j, &si) in sidx.iter().enumerate() {
                // SAFETY: code bytes 16 + 32j.. + 32 of the block.
                let bits = _mm512_broadcast_i64x4(unsafe { ld256(b.add(16 + 32 * j)) });
                let c = _mm512_and_si512(_mm512_srlv_epi16(bits, nib_shift), low4);
                let s = _mm512_permutexvar_epi16(si, msz);
                for m in 0..M {
                    // SAFETY: activation codes 64j.. + 64 of this super-block.
                    let qv = unsafe { ld512(q[m].add(64 * j)) };
                    sumi[m] = _mm512_dpwssd_epi32(sumi[m], _mm512_maddubs_epi16(c, qv), s);
                }
            }
            for m in 0..M {
                acc[m][r] = _mm512_fmadd_ps(_mm512_broadcastss_ps(dd[m]), _mm512_cvtepi32_ps(sumi[m]), acc[m][r]);
            }
        }
    }
    std::array::from_fn(|m| std::array::from_fn(|r| _mm512_reduce_add_ps(acc[m][r]) - hsum128(macc[m][r])))
}

/// Q6_K, N rows against M activation rows. The 64 `ql` bytes of half h are one register whose low nibbles
/// are runs 0 and 1 and whose high nibbles are runs 2 and 3 (see `quant::q6k_quants`): 64 consecutive
/// values each, so the activation codes load straight, and each 128-bit lane is one 16-value scale. The
/// two high bits come from the half's 32 `qh` bytes in both 256-bit halves, moved into bits 4–5 by a
/// per-half variable shift. Unsigned codes u = c + 32 as in the AVX2 body, less 32·Σ sc·bsum.
/// SAFETY (caller): as for [`q4_k_body`], with 210-byte blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k_body<const N: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    a: &[Q8KAct; M],
    nb: usize,
) -> [[f32; N]; M] {
    let low4 = _mm512_set1_epi8(0x0f);
    let hi2 = _mm512_set1_epi8(0x30);
    // Run 0 wants qh bits 0-1 at 4-5 (<< 4), run 1 bits 2-3 (<< 2), run 2 bits 4-5 (as they are), run 3
    // bits 6-7 (>> 2). The 16-bit shifts carry bits across bytes; `hi2` keeps only each byte's own.
    let shl_lo = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
    let shr_hi = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
    let sidx = [quarters16(0), quarters16(4), quarters16(8), quarters16(12)];
    let mut acc = [[_mm512_setzero_ps(); N]; M];
    for ib in 0..nb {
        let mut q = [[_mm512_setzero_si512(); 4]; M];
        let (mut bs, mut dav) = ([_mm256_setzero_si256(); M], [_mm_setzero_ps(); M]);
        for m in 0..M {
            // SAFETY: ib < nb and `a[m]` has nb super-blocks (caller).
            unsafe {
                let qm = a[m].q.as_ptr().add(ib * QK_K);
                for (k, qk) in q[m].iter_mut().enumerate() {
                    *qk = ld512(qm.add(64 * k));
                }
                bs[m] = ld256(a[m].bsums.as_ptr().add(16 * ib));
                dav[m] = _mm_set_ss(*a[m].d.get_unchecked(ib));
            }
        }
        for r in 0..N {
            // SAFETY: block ib of row r is readable (caller); all offsets below are inside its 210 bytes.
            let b = unsafe { w.add(r * rb + ib * 210) };
            prefetch_block(b.wrapping_add(PREFETCH_AHEAD), 210);
            let sc16 = _mm256_cvtepi8_epi16(unsafe { ld128(b.add(192)) });
            let scz = _mm512_castsi256_si512(sc16);
            let mut sumi: [__m512i; M] = std::array::from_fn(|m| {
                let corr = _mm256_madd_epi16(sc16, bs[m]);
                _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(corr)))
            });
            for half in 0..2 {
                // SAFETY: bytes 64·half.. + 64 (ql) and 128 + 32·half.. + 32 (qh) of the block.
                let (ql, qh) = unsafe { (ld512(b.add(64 * half)), ld256(b.add(128 + 32 * half))) };
                let qh = _mm512_broadcast_i64x4(qh);
                let top_lo = _mm512_and_si512(_mm512_sllv_epi16(qh, shl_lo), hi2);
                let top_hi = _mm512_and_si512(_mm512_srlv_epi16(qh, shr_hi), hi2);
                // (x & 0x0f) | top in one ternary-logic op (0xEA: (A & B) | C).
                let u = [
                    _mm512_ternarylogic_epi32::<0xEA>(ql, low4, top_lo),
                    _mm512_ternarylogic_epi32::<0xEA>(_mm512_srli_epi16::<4>(ql), low4, top_hi),
                ];
                for (j, &uj) in u.iter().enumerate() {
                    let k = 2 * half + j;
                    let s = _mm512_permutexvar_epi16(sidx[k], scz);
                    for m in 0..M {
                        sumi[m] = _mm512_dpwssd_epi32(sumi[m], _mm512_maddubs_epi16(uj, q[m][k]), s);
                    }
                }
            }
            // SAFETY: the f16 scale at 208..210.
            let d = unsafe { f16_at(b.add(208)) };
            for m in 0..M {
                let d = _mm_mul_ss(d, dav[m]);
                acc[m][r] = _mm512_fmadd_ps(_mm512_broadcastss_ps(d), _mm512_cvtepi32_ps(sumi[m]), acc[m][r]);
            }
        }
    }
    std::array::from_fn(|m| std::array::from_fn(|r| _mm512_reduce_add_ps(acc[m][r])))
}

/// N legacy rows (one block of 32 codes at a time) against M Q8_0 activation rows. Per row and block:
/// the unsigned codes (Q8_0: the codes' magnitudes, their signs moved onto the activation) through
/// `vpdpbusd`, less the offset's products (8 or 16 × the activation codes, once per activation block for
/// all rows: exact integers); then d·da, and m·s for Q4_1/Q5_1 from one F16C conversion of [d, m].
/// SAFETY (caller): AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C are present; `w..w + (N − 1)·rb + nb·bb` is
/// readable (bb = 18, 20, 22, 24, 34 by `T`); every `a[m]` has `nb` blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn legacy<const T: u8, const N: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    a: &[Q8Act; M],
    nb: usize,
) -> [[f32; N]; M] {
    let (bb, min) = match T {
        Q4_0 => (18, false),
        Q4_1 => (20, true),
        Q5_0 => (22, false),
        Q5_1 => (24, true),
        _ => (34, false),
    };
    let off = _mm256_set1_epi8(if T == Q4_0 { 8 } else { 16 });
    let sixteen = _mm256_set1_epi8(16);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    // Lane 1: Σ m·s (Q4_1/Q5_1); lane 0 collects d·da products nobody reads.
    let mut macc = [[_mm_setzero_ps(); N]; M];
    for ib in 0..nb {
        let (mut q, mut offp, mut das) =
            ([_mm256_setzero_si256(); M], [_mm256_setzero_si256(); M], [_mm_setzero_ps(); M]);
        for m in 0..M {
            // SAFETY: ib < nb, and `a[m]` has nb blocks of QK codes and nb scales and sums (caller).
            let (qm, da, s) =
                unsafe { (ld256(a[m].q.as_ptr().add(ib * QK)), *a[m].d.get_unchecked(ib), *a[m].s.get_unchecked(ib)) };
            q[m] = qm;
            if T == Q4_0 || T == Q5_0 {
                offp[m] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), off, qm);
            }
            das[m] = _mm_setr_ps(da, s, 0.0, 0.0);
        }
        for r in 0..N {
            // SAFETY: block ib of row r is readable (caller); every read below is inside its bb bytes.
            let b = unsafe { w.add(r * rb + ib * bb) };
            // One line per row every block (Q8_0) or every other block (18–24 bytes: two blocks a line).
            if bb >= 32 || ib.is_multiple_of(2) {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_AHEAD).cast::<i8>());
            }
            // [d, m] (Q4_1/Q5_1) or [d, codes] (the rest: lane 1 then unused; cleared, as random bits would
            // make F16C convert subnormals).
            let head = unsafe { b.cast::<i32>().read_unaligned() };
            let head = if min { head } else { head & 0xffff };
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(head));
            // SAFETY (codes): the code bytes and Q5's fifth bits lie inside the block.
            let c = unsafe {
                match T {
                    Q4_0 => nibbles(b.add(2)),
                    Q4_1 => nibbles(b.add(4)),
                    Q5_0 | Q5_1 => {
                        let at = if T == Q5_0 { 2 } else { 4 };
                        let qh = b.add(at).cast::<u32>().read_unaligned();
                        let n = nibbles(b.add(at + 4));
                        _mm256_mask_add_epi8(n, qh, n, sixteen)
                    }
                    _ => ld256(b.add(2)),
                }
            };
            for m in 0..M {
                let sumi = if T == Q8_0 {
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(c, c), _mm256_sign_epi8(q[m], c))
                } else {
                    let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), c, q[m]);
                    if T == Q4_0 || T == Q5_0 { _mm256_sub_epi32(p, offp[m]) } else { p }
                };
                let d = _mm_mul_ps(dm, das[m]);
                acc[m][r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(d), _mm256_cvtepi32_ps(sumi), acc[m][r]);
                if min {
                    macc[m][r] = _mm_add_ps(macc[m][r], d);
                }
            }
        }
    }
    std::array::from_fn(|m| {
        std::array::from_fn(|r| {
            let mins = if min { _mm_cvtss_f32(_mm_movehdup_ps(macc[m][r])) } else { 0.0 };
            hsum_ps(acc[m][r]) + mins
        })
    })
}

legacy_body!(legacy_q4_0, Q4_0, legacy, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");
legacy_body!(legacy_q4_1, Q4_1, legacy, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");
legacy_body!(legacy_q5_0, Q5_0, legacy, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");
legacy_body!(legacy_q5_1, Q5_1, legacy, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");
legacy_body!(legacy_q8_0, Q8_0, legacy, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");

/// [`crate::ggml::panel`]'s kernel: one panel of 16 weight rows against N activation rows, 64 u8 × i8
/// multiply-adds per `vpdpbusd` (a group of four codes for all 16 rows against four broadcast activation
/// codes), two independent i32 sums per row to cover the instruction's latency, then the portable
/// kernel's two FMAs per sub-block, so the result equals it bit for bit. Falls back to the portable
/// kernel when this CPU lacks the set or the slices are short (a caller bug), so it is safe to call.
pub(in crate::ggml) fn panel_gemm<const N: usize>(p: &PanelRef, a: &[ActRow; N]) -> [[f32; 16]; N] {
    let sub = p.sub;
    let nsub = if sub == 0 { 0 } else { p.codes.len() / (sub * 16) };
    let ok = crate::ggml::has_avx512()
        && (sub == 16 || sub == 32)
        && p.codes.len() == nsub * sub * 16
        && p.scale.len() >= nsub * 16
        && p.off.len() >= nsub * 16
        && a.iter().all(|r| {
            r.q.len() >= nsub * sub && r.asum.len() >= nsub && (nsub == 0 || r.d.len() > (nsub - 1) >> r.dshift)
        });
    if !ok {
        return crate::ggml::panel::panel_portable(p, a);
    }
    // SAFETY: the set is present (checked above), and every read below is inside the lengths checked.
    unsafe { if sub == 32 { panel_body::<8, N>(p, a, nsub) } else { panel_body::<4, N>(p, a, nsub) } }
}

/// SAFETY (caller): AVX-512 F/BW/VL/VNNI are present; `p` has `nsub` sub-blocks of `4·G` values (codes,
/// scales, offsets) and every `a[m]` covers them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn panel_body<const G: usize, const N: usize>(p: &PanelRef, a: &[ActRow; N], nsub: usize) -> [[f32; 16]; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    let codes = p.codes.as_ptr();
    for s in 0..nsub {
        let mut c = [_mm512_setzero_si512(); G];
        for (g, cg) in c.iter_mut().enumerate() {
            // SAFETY: sub-block s's G groups of 64 bytes lie inside `codes` (caller).
            *cg = unsafe { ld512(codes.add((s * G + g) * 64)) };
        }
        // SAFETY: 16 scales and offsets per sub-block (caller).
        let (sc, of) =
            unsafe { (_mm512_loadu_ps(p.scale.as_ptr().add(16 * s)), _mm512_loadu_ps(p.off.as_ptr().add(16 * s))) };
        for m in 0..N {
            let r = &a[m];
            // SAFETY: the row's codes cover sub-block s, and its d and asum entries exist (caller).
            let (qa, da, asum) =
                unsafe { (r.q.as_ptr().add(s * G * 4), *r.d.get_unchecked(s >> r.dshift), *r.asum.get_unchecked(s)) };
            let (mut i0, mut i1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            let mut g = 0;
            while g < G {
                // SAFETY: activation codes 4g..4g + 8 of the sub-block (G is even).
                let (q0, q1) = unsafe {
                    (qa.add(4 * g).cast::<i32>().read_unaligned(), qa.add(4 * g + 4).cast::<i32>().read_unaligned())
                };
                i0 = _mm512_dpbusd_epi32(i0, c[g], _mm512_set1_epi32(q0));
                i1 = _mm512_dpbusd_epi32(i1, c[g + 1], _mm512_set1_epi32(q1));
                g += 2;
            }
            let t = _mm512_mul_ps(sc, _mm512_set1_ps(da));
            acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), t, acc[m]);
            acc[m] = _mm512_fmadd_ps(of, _mm512_set1_ps(asum), acc[m]);
        }
    }
    let mut out = [[0f32; 16]; N];
    for (o, v) in out.iter_mut().zip(acc) {
        // SAFETY: 16 f32 fit `o`.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    }
    out
}
