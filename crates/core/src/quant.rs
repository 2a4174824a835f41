//! GGML tensor types and their block layouts: decoding (dequantization) to f32.
//!
//! Layouts follow ggml's `ggml-quants.c` (`dequantize_row_*`); the unit tests in `chorus-tests` compare every
//! decoder with values produced by the `gguf` Python package (`tests/fixtures/make_quant_fixtures.py`).
//! Decoding is done block by block on plain slices so the same code serves the loaders, a future on-GPU
//! dequantizer's reference, and wasm.

use half::{bf16, f16};

use crate::error::{Error, Result};

/// Elements per block of the legacy formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
pub const QK: usize = 32;
/// Elements per super-block of the k-quants.
pub const QK_K: usize = 256;

/// A GGML tensor type, by its on-disk id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit, one f16 scale per 32.
    Q4_0,
    /// 4-bit, f16 scale and min per 32.
    Q4_1,
    /// 5-bit, one f16 scale per 32.
    Q5_0,
    /// 5-bit, f16 scale and min per 32.
    Q5_1,
    /// 8-bit, one f16 scale per 32.
    Q8_0,
    /// 2-bit k-quant: 16 sub-blocks of 16 with 4-bit scales and mins.
    Q2_K,
    /// 3-bit k-quant: 16 sub-blocks of 16 with 6-bit scales (offset by 32).
    Q3_K,
    /// 4-bit k-quant: 8 sub-blocks with 6-bit scales and mins.
    Q4_K,
    /// 5-bit k-quant.
    Q5_K,
    /// 6-bit k-quant: 16 sub-blocks with 8-bit scales.
    Q6_K,
}

impl GgmlType {
    /// Maps a GGUF type id; unknown or unsupported ids give `None` (see [`GgmlType::name_of`]).
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2_K,
            11 => Self::Q3_K,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// The on-disk id.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::BF16 => 30,
        }
    }

    /// ggml's name for any type id, supported or not (for error messages and `chorus inspect`).
    pub fn name_of(id: u32) -> &'static str {
        const NAMES: [&str; 31] = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K",
            "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
            "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
        ];
        NAMES.get(id as usize).copied().unwrap_or("unknown")
    }

    /// ggml's name.
    pub fn name(self) -> &'static str {
        Self::name_of(self.id())
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => QK,
            Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 2 + QK / 2,
            Self::Q4_1 => 4 + QK / 2,
            Self::Q5_0 => 2 + 4 + QK / 2,
            Self::Q5_1 => 4 + 4 + QK / 2,
            Self::Q8_0 => 2 + QK,
            // scales[16], qs[64], d, dmin.
            Self::Q2_K => QK_K / 16 + QK_K / 4 + 4,
            // hmask[32], qs[64], scales[12], d.
            Self::Q3_K => QK_K / 8 + QK_K / 4 + 12 + 2,
            Self::Q4_K => 4 + 12 + QK_K / 2,
            Self::Q5_K => 4 + 12 + QK_K / 8 + QK_K / 2,
            Self::Q6_K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// Bytes needed for `elements` values, or `None` when `elements` is not a whole number of blocks.
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        let be = self.block_elems();
        elements.is_multiple_of(be).then(|| elements / be * self.block_bytes())
    }
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Decodes `elements` values of type `ty` from `data` into `out` (cleared first).
///
/// `tensor` only names the tensor in errors.
pub fn dequantize_into(ty: GgmlType, data: &[u8], elements: usize, tensor: &str, out: &mut Vec<f32>) -> Result<()> {
    let expected = ty.bytes_for(elements).ok_or_else(|| Error::QuantSize {
        tensor: tensor.to_string(),
        ty: ty.name(),
        elements,
        expected: elements.div_ceil(ty.block_elems()) * ty.block_bytes(),
        found: data.len(),
    })?;
    if data.len() != expected {
        return Err(Error::QuantSize {
            tensor: tensor.to_string(),
            ty: ty.name(),
            elements,
            expected,
            found: data.len(),
        });
    }
    out.clear();
    out.reserve(elements);
    match ty {
        GgmlType::F32 => out.extend(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        GgmlType::F16 => out.extend(data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::BF16 => out.extend(data.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        _ => {
            let mut block = [0f32; QK_K];
            let n = ty.block_elems();
            for b in data.chunks_exact(ty.block_bytes()) {
                dequantize_block(ty, b, &mut block[..n]);
                out.extend_from_slice(&block[..n]);
            }
        }
    }
    Ok(())
}

/// Decodes `elements` values into a new vector.
pub fn dequantize(ty: GgmlType, data: &[u8], elements: usize, tensor: &str) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    dequantize_into(ty, data, elements, tensor, &mut out)?;
    Ok(out)
}

/// Decodes one block; `b` is exactly `ty.block_bytes()` long and `y` exactly `ty.block_elems()`.
pub fn dequantize_block(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => y[0] = h(b, 0),
        GgmlType::BF16 => y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q4_0 => {
            let d = h(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
                y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            let (d, m) = (h(b, 0), h(b, 2));
            let qs = &b[4..20];
            for j in 0..16 {
                y[j] = (qs[j] & 0x0f) as f32 * d + m;
                y[j + 16] = (qs[j] >> 4) as f32 * d + m;
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (d, m, _) = legacy_header(ty, b);
            for (yj, x) in y.iter_mut().zip(q5_codes(ty, b)) {
                *yj = x as f32 * d + m;
            }
        }
        GgmlType::Q8_0 => {
            let d = h(b, 0);
            for j in 0..QK {
                y[j] = (b[2 + j] as i8) as f32 * d;
            }
        }
        GgmlType::Q2_K => {
            let (d, dmin) = (h(b, 80), h(b, 82));
            let mut q = [0u8; QK_K];
            q2k_quants(b, &mut q);
            // Sub-block v / 16: low nibble of its scale byte scales the code, high nibble the min.
            for v in 0..QK_K {
                let sc = b[v / 16];
                y[v] = d * (sc & 0x0f) as f32 * q[v] as f32 - dmin * (sc >> 4) as f32;
            }
        }
        GgmlType::Q3_K => {
            let d = h(b, 108);
            let mut q = [0i8; QK_K];
            q3k_quants(b, &mut q);
            let sc = q3k_scales(b);
            for v in 0..QK_K {
                y[v] = d * sc[v / 16] as f32 * q[v] as f32;
            }
        }
        GgmlType::Q4_K => {
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
        GgmlType::Q5_K => {
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
        GgmlType::Q6_K => {
            let d = h(b, 208);
            let mut q = [0i8; QK_K];
            q6k_quants(b, &mut q);
            // Value v uses scale v / 16 (ggml: `is = l/16` within each 32-value quarter).
            for v in 0..QK_K {
                y[v] = d * (b[192 + v / 16] as i8) as f32 * q[v] as f32;
            }
        }
    }
}

/// Scale, min (0 for the `_0` formats) and offset of the packed values of a Q4_0/Q4_1/Q5_0/Q5_1 block.
pub(crate) fn legacy_header(ty: GgmlType, b: &[u8]) -> (f32, f32, usize) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => (h(b, 0), 0.0, 2),
        _ => (h(b, 0), h(b, 2), 4),
    }
}

/// The 32 integer codes of a Q5_0 (−16..15) or Q5_1 (0..31) block, in element order.
pub(crate) fn q5_codes(ty: GgmlType, b: &[u8]) -> [i8; QK] {
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

/// The signed 6-bit values (−32..31) of one Q6_K block, in element order.
pub(crate) fn q6k_quants(b: &[u8], q: &mut [i8; QK_K]) {
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
pub(crate) fn q2k_quants(b: &[u8], q: &mut [u8; QK_K]) {
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
pub(crate) fn q3k_quants(b: &[u8], q: &mut [i8; QK_K]) {
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
pub(crate) fn q3k_scales(b: &[u8]) -> [i8; 16] {
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
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_hand_checked_block() {
        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for j in 0..32 {
            b[2 + j] = (j as i8 - 16) as u8;
        }
        let y = dequantize(GgmlType::Q8_0, &b, 32, "t").unwrap();
        assert_eq!(y[0], -8.0);
        assert_eq!(y[31], 7.5);
    }

    #[test]
    fn size_mismatch_names_the_tensor() {
        let err = dequantize(GgmlType::Q4_0, &[0u8; 17], 32, "blk.0.attn_q.weight").unwrap_err();
        assert!(err.to_string().contains("blk.0.attn_q.weight"), "{err}");
        let err = dequantize(GgmlType::Q4_K, &[0u8; 144], 100, "w").unwrap_err();
        assert!(err.to_string().contains("100 elements"), "{err}");
    }

    /// Q2_K and Q3_K have no fixture goldens (`tests/fixtures`); these checksums of one patterned block each
    /// were computed with the `gguf` Python package (0.19, `gguf.quants.dequantize`) from the same bytes:
    /// byte i = (73·i + 41) mod 256, then the f16 scale fields set to 1.0, so every value is an integer.
    #[test]
    fn q2_k_and_q3_k_match_gguf_python() {
        for (ty, fields, weighted, squares, samples) in [
            (GgmlType::Q2_K, &[80usize, 82][..], 142_874i64, 40_631i64, [7i64, -3, 32, 1, -7]),
            (GgmlType::Q3_K, &[108][..], 34_746, 410_634, [-7, -4, -17, 78, -24]),
        ] {
            let mut b: Vec<u8> = (0..ty.block_bytes()).map(|i| ((i * 73 + 41) & 255) as u8).collect();
            for &at in fields {
                b[at..at + 2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
            }
            let y = dequantize(ty, &b, QK_K, "t").unwrap();
            let v: Vec<i64> = y.iter().map(|&x| x as i64).collect();
            assert!(y.iter().zip(&v).all(|(&x, &i)| x == i as f32), "{}: non-integer values", ty.name());
            let w: i64 = v.iter().enumerate().map(|(i, &x)| x * (i as i64 + 1)).sum();
            let sq: i64 = v.iter().map(|&x| x * x).sum();
            assert_eq!((w, sq), (weighted, squares), "{}", ty.name());
            assert_eq!([v[0], v[17], v[100], v[200], v[255]], samples, "{}", ty.name());
        }
    }

    #[test]
    fn block_sizes_match_ggml() {
        let sizes = [
            (GgmlType::Q4_0, 18),
            (GgmlType::Q4_1, 20),
            (GgmlType::Q5_0, 22),
            (GgmlType::Q5_1, 24),
            (GgmlType::Q8_0, 34),
            (GgmlType::Q2_K, 84),
            (GgmlType::Q3_K, 110),
            (GgmlType::Q4_K, 144),
            (GgmlType::Q5_K, 176),
            (GgmlType::Q6_K, 210),
        ];
        for (t, s) in sizes {
            assert_eq!(t.block_bytes(), s, "{}", t.name());
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
    }
}
