//! GGML tensor types (ids, names, block sizes) and tensor decoding (dequantization) to f32.
//!
//! Each format's layout and block decoder is its [`super::BlockFormat`] impl in the file of its family;
//! this file dispatches to them. Layouts follow ggml's `ggml-quants.c` (`dequantize_row_*`); the unit tests
//! in `chorus-tests` compare every decoder with values produced by the `gguf` Python package
//! (`tests/fixtures/make_quant_fixtures.py`).

use half::{bf16, f16};

use super::BlockFormat;
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
        with_format!(self, F => F::BLOCK_ELEMS)
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        with_format!(self, F => F::BLOCK_BYTES)
    }

    /// Bytes needed for `elements` values, or `None` when `elements` is not a whole number of blocks.
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        let be = self.block_elems();
        elements.is_multiple_of(be).then(|| elements / be * self.block_bytes())
    }
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
    with_format!(ty, F => F::dequantize(b, y))
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
