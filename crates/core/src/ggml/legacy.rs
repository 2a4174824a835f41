//! The legacy 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): their [`BlockFormat`]s and portable dot products with Q8_0
//! activations: an exact i32 dot product per block, scaled by both blocks' scales in f32.
//!
//! For the formats with a min (Q4_1, Q5_1) the weight is d·c + m with unsigned codes c, so a block's dot
//! product is d·da·Σc·q + m·(da·Σq), and `da·Σq` is the activation block's precomputed `s`.

use super::{ActFormat, BlockFormat, GgmlType, Q8Act, QK, h};

fn idot(c: &[i8; QK], q: &[i8]) -> i32 {
    c.iter().zip(q).map(|(&c, &q)| c as i32 * q as i32).sum()
}

/// The 4-bit codes of a Q4_0/Q4_1 block (`qs` = its 16 code bytes) minus `bias`, in element order.
pub(super) fn q4_codes(qs: &[u8], bias: i8) -> [i8; QK] {
    let mut c = [0i8; QK];
    for j in 0..16 {
        c[j] = (qs[j] & 0x0f) as i8 - bias;
        c[j + 16] = (qs[j] >> 4) as i8 - bias;
    }
    c
}

/// Scale, min (0 for the `_0` formats) and offset of the packed values of a Q4_0/Q4_1/Q5_0/Q5_1 block.
pub(super) fn legacy_header(ty: GgmlType, b: &[u8]) -> (f32, f32, usize) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => (h(b, 0), 0.0, 2),
        _ => (h(b, 0), h(b, 2), 4),
    }
}

/// The 32 integer codes of a Q5_0 (−16..15) or Q5_1 (0..31) block, in element order.
pub(super) fn q5_codes(ty: GgmlType, b: &[u8]) -> [i8; QK] {
    let (_, _, off) = legacy_header(ty, b);
    let qh = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
    let qs = &b[off + 4..off + 20];
    let bias = if ty == GgmlType::Q5_0 { 16 } else { 0 };
    let mut out = [0i8; QK];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as i32;
        let xh1 = ((qh >> (j + 12)) & 0x10) as i32;
        out[j] = (((qs[j] & 0x0f) as i32 | xh0) - bias) as i8;
        out[j + 16] = (((qs[j] >> 4) as i32 | xh1) - bias) as i8;
    }
    out
}

/// Q4_0: one f16 scale and 32 4-bit codes per block, value = d·(c − 8).
pub(super) struct Q4_0;

impl BlockFormat for Q4_0 {
    const BLOCK_ELEMS: usize = QK;
    const BLOCK_BYTES: usize = 2 + QK / 2;
    const ACT: ActFormat = ActFormat::Q8_0;
    type Act<'a> = Q8Act<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = h(b, 0);
        let qs = &b[2..18];
        for j in 0..16 {
            y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
            y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }

    fn dot(w: &[u8], a: &Q8Act<'_>) -> f32 {
        let mut acc = 0f32;
        for ((b, q), &da) in w.chunks_exact(18).zip(a.q.chunks_exact(QK)).zip(a.d) {
            acc += h(b, 0) * da * idot(&q4_codes(&b[2..18], 8), q) as f32;
        }
        acc
    }
}

/// Q4_1: f16 scale and min, 32 4-bit codes, value = d·c + m.
pub(super) struct Q4_1;

impl BlockFormat for Q4_1 {
    const BLOCK_ELEMS: usize = QK;
    const BLOCK_BYTES: usize = 4 + QK / 2;
    const ACT: ActFormat = ActFormat::Q8_0;
    type Act<'a> = Q8Act<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        let (d, m) = (h(b, 0), h(b, 2));
        let qs = &b[4..20];
        for j in 0..16 {
            y[j] = (qs[j] & 0x0f) as f32 * d + m;
            y[j + 16] = (qs[j] >> 4) as f32 * d + m;
        }
    }

    fn dot(w: &[u8], a: &Q8Act<'_>) -> f32 {
        let mut acc = 0f32;
        for ((b, q), (&da, &s)) in w.chunks_exact(20).zip(a.q.chunks_exact(QK)).zip(a.d.iter().zip(a.s)) {
            acc += h(b, 0) * da * idot(&q4_codes(&b[4..20], 0), q) as f32 + h(b, 2) * s;
        }
        acc
    }
}

/// Decodes a Q5_0 or Q5_1 block: value = d·c + m (m = 0 for Q5_0, whose codes carry the −16).
fn q5_dequantize(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    let (d, m, _) = legacy_header(ty, b);
    for (yj, x) in y.iter_mut().zip(q5_codes(ty, b)) {
        *yj = x as f32 * d + m;
    }
}

/// Q5_0: f16 scale, 32 high bits, 32 4-bit low parts, value = d·(c − 16).
pub(super) struct Q5_0;

impl BlockFormat for Q5_0 {
    const BLOCK_ELEMS: usize = QK;
    const BLOCK_BYTES: usize = 2 + 4 + QK / 2;
    const ACT: ActFormat = ActFormat::Q8_0;
    type Act<'a> = Q8Act<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        q5_dequantize(GgmlType::Q5_0, b, y)
    }

    fn dot(w: &[u8], a: &Q8Act<'_>) -> f32 {
        let mut acc = 0f32;
        for ((b, q), &da) in w.chunks_exact(22).zip(a.q.chunks_exact(QK)).zip(a.d) {
            acc += h(b, 0) * da * idot(&q5_codes(GgmlType::Q5_0, b), q) as f32;
        }
        acc
    }
}

/// Q5_1: f16 scale and min, 32 high bits, 32 4-bit low parts, value = d·c + m.
pub(super) struct Q5_1;

impl BlockFormat for Q5_1 {
    const BLOCK_ELEMS: usize = QK;
    const BLOCK_BYTES: usize = 4 + 4 + QK / 2;
    const ACT: ActFormat = ActFormat::Q8_0;
    type Act<'a> = Q8Act<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        q5_dequantize(GgmlType::Q5_1, b, y)
    }

    fn dot(w: &[u8], a: &Q8Act<'_>) -> f32 {
        let mut acc = 0f32;
        for ((b, q), (&da, &s)) in w.chunks_exact(24).zip(a.q.chunks_exact(QK)).zip(a.d.iter().zip(a.s)) {
            acc += h(b, 0) * da * idot(&q5_codes(GgmlType::Q5_1, b), q) as f32 + h(b, 2) * s;
        }
        acc
    }
}

/// Q8_0: f16 scale and 32 i8 codes, value = d·c.
pub(super) struct Q8_0;

impl BlockFormat for Q8_0 {
    const BLOCK_ELEMS: usize = QK;
    const BLOCK_BYTES: usize = 2 + QK;
    const ACT: ActFormat = ActFormat::Q8_0;
    type Act<'a> = Q8Act<'a>;

    fn dequantize(b: &[u8], y: &mut [f32]) {
        let d = h(b, 0);
        for j in 0..QK {
            y[j] = (b[2 + j] as i8) as f32 * d;
        }
    }

    fn dot(w: &[u8], a: &Q8Act<'_>) -> f32 {
        let mut acc = 0f32;
        for ((b, q), &da) in w.chunks_exact(34).zip(a.q.chunks_exact(QK)).zip(a.d) {
            let sum: i32 = b[2..34].iter().zip(q).map(|(&c, &q)| (c as i8) as i32 * q as i32).sum();
            acc += h(b, 0) * da * sum as f32;
        }
        acc
    }
}
