//! Portable dot products of the legacy 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with Q8_0
//! activations: an exact i32 dot product per block, scaled by both blocks' scales in f32.
//!
//! For the formats with a min (Q4_1, Q5_1) the weight is d·c + m with unsigned codes c, so a block's dot
//! product is d·da·Σc·q + m·(da·Σq), and `da·Σq` is the activation block's precomputed `s`.

use super::Q8Act;
use crate::quant::{GgmlType, QK, q5_codes};

fn h(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

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

/// Q4_0: value = d·(c − 8).
pub(super) fn q4_0_dot(w: &[u8], a: &Q8Act) -> f32 {
    let mut acc = 0f32;
    for ((b, q), &da) in w.chunks_exact(18).zip(a.q.chunks_exact(QK)).zip(a.d) {
        acc += h(b, 0) * da * idot(&q4_codes(&b[2..18], 8), q) as f32;
    }
    acc
}

/// Q4_1: value = d·c + m.
pub(super) fn q4_1_dot(w: &[u8], a: &Q8Act) -> f32 {
    let mut acc = 0f32;
    for ((b, q), (&da, &s)) in w.chunks_exact(20).zip(a.q.chunks_exact(QK)).zip(a.d.iter().zip(a.s)) {
        acc += h(b, 0) * da * idot(&q4_codes(&b[4..20], 0), q) as f32 + h(b, 2) * s;
    }
    acc
}

/// Q5_0: value = d·(c − 16), the fifth bit from `qh`.
pub(super) fn q5_0_dot(w: &[u8], a: &Q8Act) -> f32 {
    let mut acc = 0f32;
    for ((b, q), &da) in w.chunks_exact(22).zip(a.q.chunks_exact(QK)).zip(a.d) {
        acc += h(b, 0) * da * idot(&q5_codes(GgmlType::Q5_0, b), q) as f32;
    }
    acc
}

/// Q5_1: value = d·c + m.
pub(super) fn q5_1_dot(w: &[u8], a: &Q8Act) -> f32 {
    let mut acc = 0f32;
    for ((b, q), (&da, &s)) in w.chunks_exact(24).zip(a.q.chunks_exact(QK)).zip(a.d.iter().zip(a.s)) {
        acc += h(b, 0) * da * idot(&q5_codes(GgmlType::Q5_1, b), q) as f32 + h(b, 2) * s;
    }
    acc
}

/// Q8_0: value = d·c.
pub(super) fn q8_0_dot(w: &[u8], a: &Q8Act) -> f32 {
    let mut acc = 0f32;
    for ((b, q), &da) in w.chunks_exact(34).zip(a.q.chunks_exact(QK)).zip(a.d) {
        let sum: i32 = b[2..34].iter().zip(q).map(|(&c, &q)| (c as i8) as i32 * q as i32).sum();
        acc += h(b, 0) * da * sum as f32;
    }
    acc
}
