//! Portable dot products of the k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) with Q8_K activations.
//!
//! Each super-block of 256 is an i32 sum over its sub-blocks of (integer sub-block scale × integer code dot
//! product), times the f16 super-block scale and the activation scale. The mins never touch the codes:
//! with value = d·sc·c − dmin·m, Σ value·q = d·Σ sc·(c·q) − dmin·Σ m·(Σq over the sub-block), and the
//! activation's `bsums` (sums of 16 codes) give the last factor. Q6_K works likewise on its unsigned codes
//! u = c + 32 and subtracts 32·Σ sc·bsum, as ggml does; Q3_K's codes are signed (−4..3) and need no offset.

use super::Q8KAct;
use crate::quant::{QK_K, q2k_quants, q3k_quants, q3k_scales, q6k_quants, scale_min_k4};

fn h(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

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

/// Q2_K: value = d·(sc & 15)·c − dmin·(sc >> 4), codes 0..3, one scale byte per 16.
pub(super) fn q2_k_dot(w: &[u8], a: &Q8KAct) -> f32 {
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

/// Q3_K: value = d·sc·c with signed 6-bit scales and codes −4..3, one scale per 16.
pub(super) fn q3_k_dot(w: &[u8], a: &Q8KAct) -> f32 {
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

/// Q4_K.
pub(super) fn q4_k_dot(w: &[u8], a: &Q8KAct) -> f32 {
    q45k_dot(w, a, false)
}

/// Q5_K.
pub(super) fn q5_k_dot(w: &[u8], a: &Q8KAct) -> f32 {
    q45k_dot(w, a, true)
}

/// Q6_K: value = d·sc·(u − 32) with unsigned 6-bit codes u and signed 8-bit scales per 16.
pub(super) fn q6_k_dot(w: &[u8], a: &Q8KAct) -> f32 {
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
