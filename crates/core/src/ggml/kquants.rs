//! The k-quant formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): their [`BlockFormat`]s (layout, block decoding) and portable dot products with Q8_K activations.
//!
//! Each super-block of 256 is an i32 sum over its sub-blocks of (integer sub-block scale × integer code dot
//! product), times the f16 super-block scale and the activation scale. The mins never touch the codes:
//! with value = d·sc·c − dmin·m, Σ value·q = d·Σ sc·(c·q) − dmin·Σ m·(Σq over the sub-block), and the
//! activation's `bsums` (sums of 16 codes) give the last factor. Q6_K works likewise on its unsigned codes
//! u = c + 32 and subtracts 32·Σ sc·bsum, as ggml does; Q3_K's codes are signed (−4..3) and need no offset.

// The formats' types carry ggml's names (Q4_K, not Q4K).
#![allow(non_camel_case_types)]

use super::{ActFormat, BlockFormat, Q8KAct, QK_K, h};

/// The i32 dot products of 16 codes with 16 activation codes, for the 16 sub-blocks of 16.
fn sub16<T: Copy + Into<i32>>(c: &[T; QK_K], q: &[i8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (j, o) in out.iter_mut().enumerate() {
        *o = (0..16).map(|l| c[16 * j + l].into() * q[16 * j + l] as i32).sum();
    }
    out
}

/// Iterates the super-blocks of a row: (weight block, activation codes, activation scale, bsums).
fn blocks<'a>(w: &'a [u8], bb: usize, a: &Q8KAct<'a>) -> impl Iterator<Item = (&'a [u8], &'a [i8], f32, &'a [i16])> {
    w.chunks_exact(bb)
        .zip(a.q.chunks_exact(QK_K))
        .zip(a.d.iter().zip(a.bsums.chunks_exact(16)))
        .map(|((b, q), (&d, bs))| (b, q, d, bs))
}

/// The unsigned codes of a Q4_K (`qh` = None, codes 0..15) or Q5_K (codes 0..31) block, in element order.
pub(super) fn q45k_codes(ql: &[u8], qh: Option<&[u8]>) -> [u8; QK_K] {
    let mut c = [0u8; QK_K];
    for pair in 0..4 {
        let l = &ql[32 * pair..32 * pair + 32];
        let (b1, b2) = (1u8 << (2 * pair), 1u8 << (2 * pair + 1));
        for i in 0..32 {
            let (h1, h2) = qh.map_or((0, 0), |qh| ((qh[i] & b1 != 0) as u8 * 16, (qh[i] & b2 != 0) as u8 * 16));
            c[64 * pair + i] = (l[i] & 0x0f) + h1;
            c[64 * pair + 32 + i] = (l[i] >> 4) + h2;
        }
    }
    c
}

/// Q4_K / Q5_K: value = d·sc·c − dmin·m, 6-bit scale and min per 32.
fn q45k_dot(w: &[u8], a: &Q8KAct, five: bool) -> f32 {
    let mut acc = 0f32;
    let bb = if five { 176 } else { 144 };
    for (b, q, da, bs) in blocks(w, bb, a) {
        let c = if five { q45k_codes(&b[48..176], Some(&b[16..48])) } else { q45k_codes(&b[16..144], None) };
        let dots = sub16(&c, q);
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &b[4..16]);
            sumi += sc as i32 * (dots[2 * j] + dots[2 * j + 1]);
            summ += m as i32 * (bs[2 * j] as i32 + bs[2 * j + 1] as i32);
        }
        acc += da * (h(b, 0) * sumi as f32 - h(b, 2) * summ as f32);
    }
    acc
}

/// The signed 6-bit values (−32..31) of one Q6_K block, in element order.
pub(super) fn q6k_quants(b: &[u8], q: &mut [i8; QK_K]) {
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let o = half * 128;
        for l in 0..32 {
            q[o + l] = (((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32) as i8;
            q[o + l + 32] = (((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32) as i8;
            q[o + l + 64] = (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32) as i8;
            q[o + l + 96] = (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32) as i8;
        }
    }
}

/// The 2-bit codes (0..3) of one Q2_K block, in element order.
///
/// Each 128-value half reads 32 code bytes four times (bit pairs 0-1, 2-3, 4-5, 6-7); each read yields two
/// 16-value sub-blocks, the first from bytes 0..16, the second from bytes 16..32 (ggml's `dequantize_row_q2_K`).
pub(super) fn q2k_quants(b: &[u8], q: &mut [u8; QK_K]) {
    for half in 0..2 {
        let qs = &b[16 + half * 32..16 + half * 32 + 32];
        for j in 0..4 {
            let o = half * 128 + j * 32;
            for l in 0..32 {
                q[o + l] = (qs[l] >> (2 * j)) & 3;
            }
        }
    }
}

/// The signed 3-bit values (−4..3) of one Q3_K block, in element order.
///
/// Same code order as Q2_K; the high bit comes from `hmask` (bit `m` of byte `l` for the m-th 32-value run), and
/// a *clear* bit means −4 (ggml stores the high bit inverted relative to an offset code).
pub(super) fn q3k_quants(b: &[u8], q: &mut [i8; QK_K]) {
    let hmask = &b[..32];
    for half in 0..2 {
        let qs = &b[32 + half * 32..32 + half * 32 + 32];
        for j in 0..4 {
            let o = half * 128 + j * 32;
            let bit = 1u8 << (half * 4 + j);
            for l in 0..32 {
                let low = ((qs[l] >> (2 * j)) & 3) as i8;
                q[o + l] = if hmask[l] & bit != 0 { low } else { low - 4 };
            }
        }
    }
}

/// The 16 signed sub-block scales (−32..31) of a Q3_K block, unpacked from its 12 bytes at offset 96.
///
/// Scale `i` keeps its low 4 bits in byte `i` (i < 8) or the high nibble of byte `i − 8`, and its high 2 bits
/// in bits `2·(i / 4)` of byte `8 + i % 4`; the stored 6-bit value is offset by 32.
pub(super) fn q3k_scales(b: &[u8]) -> [i8; 16] {
    let s = &b[96..108];
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = ((low | (high << 4)) as i32 - 32) as i8;
    }
    out
}

/// The 6-bit scale and min of sub-block `j` packed in the 12 scale bytes of Q4_K / Q5_K.
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q2_K: scales[16], qs[64], d, dmin.
pub(super) struct Q2_K;

impl BlockFormat for Q2_K {
    const BLOCK_ELEMS: usize = QK_K;
    const BLOCK_BYTES: usize = QK_K / 16 + QK_K / 4 + 4;
    const ACT: ActFormat = ActFormat::Q8K;
    type Act<'a> = Q8KAct<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        let (d, dmin) = (h(b, 80), h(b, 82));
        let mut q = [0u8; QK_K];
        q2k_quants(b, &mut q);
        // Sub-block v / 16: low nibble of its scale byte scales the code, high nibble the min.
        for v in 0..QK_K {
            let sc = b[v / 16];
            y[v] = d * (sc & 0x0f) as f32 * q[v] as f32 - dmin * (sc >> 4) as f32;
        }
    }

    fn dot(w: &[u8], a: &Q8KAct<'_>) -> f32 {
        let mut acc = 0f32;
        let mut c = [0u8; QK_K];
        for (b, q, da, bs) in blocks(w, 84, a) {
            q2k_quants(b, &mut c);
            let dots = sub16(&c, q);
            let (mut sumi, mut summ) = (0i32, 0i32);
            for j in 0..16 {
                sumi += (b[j] & 0x0f) as i32 * dots[j];
                summ += (b[j] >> 4) as i32 * bs[j] as i32;
            }
            acc += da * (h(b, 80) * sumi as f32 - h(b, 82) * summ as f32);
        }
        acc
    }
}

/// Q3_K: hmask[32], qs[64], scales[12], d.
pub(super) struct Q3_K;

impl BlockFormat for Q3_K {
    const BLOCK_ELEMS: usize = QK_K;
    const BLOCK_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2;
    const ACT: ActFormat = ActFormat::Q8K;
    type Act<'a> = Q8KAct<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = h(b, 108);
        let mut q = [0i8; QK_K];
        q3k_quants(b, &mut q);
        let sc = q3k_scales(b);
        for v in 0..QK_K {
            y[v] = d * sc[v / 16] as f32 * q[v] as f32;
        }
    }

    fn dot(w: &[u8], a: &Q8KAct<'_>) -> f32 {
        let mut acc = 0f32;
        let mut c = [0i8; QK_K];
        for (b, q, da, _) in blocks(w, 110, a) {
            q3k_quants(b, &mut c);
            let sc = q3k_scales(b);
            let dots = sub16(&c, q);
            let sumi: i32 = (0..16).map(|j| sc[j] as i32 * dots[j]).sum();
            acc += da * h(b, 108) * sumi as f32;
        }
        acc
    }
}

/// Q4_K: d, dmin, 12 bytes of 6-bit scales and mins per 32, 128 bytes of 4-bit codes.
pub(super) struct Q4_K;

impl BlockFormat for Q4_K {
    const BLOCK_ELEMS: usize = QK_K;
    const BLOCK_BYTES: usize = 4 + 12 + QK_K / 2;
    const ACT: ActFormat = ActFormat::Q8K;
    type Act<'a> = Q8KAct<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        let (d, dmin) = (h(b, 0), h(b, 2));
        let scales = &b[4..16];
        let mut q = &b[16..144];
        let mut is = 0;
        for j in (0..QK_K).step_by(64) {
            let (sc1, m1) = scale_min_k4(is, scales);
            let (sc2, m2) = scale_min_k4(is + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            for l in 0..32 {
                y[j + l] = d1 * (q[l] & 0x0f) as f32 - m1;
                y[j + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
            q = &q[32..];
            is += 2;
        }
    }

    fn dot(w: &[u8], a: &Q8KAct<'_>) -> f32 {
        q45k_dot(w, a, false)
    }
}

/// Q5_K: as Q4_K plus 32 bytes of fifth bits.
pub(super) struct Q5_K;

impl BlockFormat for Q5_K {
    const BLOCK_ELEMS: usize = QK_K;
    const BLOCK_BYTES: usize = 4 + 12 + QK_K / 8 + QK_K / 2;
    const ACT: ActFormat = ActFormat::Q8K;
    type Act<'a> = Q8KAct<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        let (d, dmin) = (h(b, 0), h(b, 2));
        let scales = &b[4..16];
        let qh = &b[16..48];
        let mut ql = &b[48..176];
        let (mut u1, mut u2) = (1u8, 2u8);
        let mut is = 0;
        for j in (0..QK_K).step_by(64) {
            let (sc1, m1) = scale_min_k4(is, scales);
            let (sc2, m2) = scale_min_k4(is + 1, scales);
            let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
            for l in 0..32 {
                let hi1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let hi2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                y[j + l] = d1 * ((ql[l] & 0x0f) + hi1) as f32 - m1;
                y[j + 32 + l] = d2 * ((ql[l] >> 4) + hi2) as f32 - m2;
            }
            ql = &ql[32..];
            is += 2;
            u1 <<= 2;
            u2 <<= 2;
        }
    }

    fn dot(w: &[u8], a: &Q8KAct<'_>) -> f32 {
        q45k_dot(w, a, true)
    }
}

/// Q6_K: ql[128], qh[64], 16 i8 scales, d.
pub(super) struct Q6_K;

impl BlockFormat for Q6_K {
    const BLOCK_ELEMS: usize = QK_K;
    const BLOCK_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
    const ACT: ActFormat = ActFormat::Q8K;
    type Act<'a> = Q8KAct<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = h(b, 208);
        let mut q = [0i8; QK_K];
        q6k_quants(b, &mut q);
        // Value v uses scale v / 16 (ggml: `is = l/16` within each 32-value quarter).
        for v in 0..QK_K {
            y[v] = d * (b[192 + v / 16] as i8) as f32 * q[v] as f32;
        }
    }

    fn dot(w: &[u8], a: &Q8KAct<'_>) -> f32 {
        let mut acc = 0f32;
        let mut c = [0i8; QK_K];
        for (b, q, da, bs) in blocks(w, 210, a) {
            q6k_quants(b, &mut c);
            let u: [u8; QK_K] = std::array::from_fn(|v| (c[v] as i32 + 32) as u8);
            let dots = sub16(&u, q);
            let (mut sumi, mut corr) = (0i32, 0i32);
            for j in 0..16 {
                let sc = (b[192 + j] as i8) as i32;
                sumi += sc * dots[j];
                corr += sc * bs[j] as i32;
            }
            acc += da * h(b, 208) * (sumi - 32 * corr) as f32;
        }
        acc
    }
}
