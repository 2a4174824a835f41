//! The float formats (F32, F16, BF16, little-endian): their [`BlockFormat`]s and portable dot products with f32 activations.

use half::{bf16, f16};

use super::{ActFormat, BlockFormat};

fn halves(w: &[u8], x: &[f32], dec: impl Fn(&[u8]) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let (wc, xc) = (w.chunks_exact(16), x.chunks_exact(8));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (wb, xb) in wc.zip(xc) {
        for k in 0..8 {
            acc[k] += dec(&wb[2 * k..2 * k + 2]) * xb[k];
        }
    }
    let tail: f32 = wt.chunks_exact(2).zip(xt).map(|(c, &x)| dec(c) * x).sum();
    acc.iter().sum::<f32>() + tail
}

/// F32: one little-endian f32 per "block".
pub(super) struct F32;

impl BlockFormat for F32 {
    const BLOCK_ELEMS: usize = 1;
    const BLOCK_BYTES: usize = 4;
    const ACT: ActFormat = ActFormat::F32;
    type Act<'a> = [f32];

    fn dequantize(b: &[u8], y: &mut [f32]) {
        y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }

    fn dot(w: &[u8], x: &[f32]) -> f32 {
        // Eight partial sums, so the compiler can keep them in vector lanes (a single running sum is a serial
        // dependency chain it may not reassociate).
        let mut acc = [0f32; 8];
        let (wc, xc) = (w.chunks_exact(32), x.chunks_exact(8));
        let (wt, xt) = (wc.remainder(), xc.remainder());
        for (wb, xb) in wc.zip(xc) {
            for k in 0..8 {
                let c = &wb[4 * k..4 * k + 4];
                acc[k] += f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * xb[k];
            }
        }
        let tail: f32 =
            wt.chunks_exact(4).zip(xt).map(|(c, &x)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * x).sum();
        acc.iter().sum::<f32>() + tail
    }
}

/// F16: IEEE half.
pub(super) struct F16;

impl BlockFormat for F16 {
    const BLOCK_ELEMS: usize = 1;
    const BLOCK_BYTES: usize = 2;
    const ACT: ActFormat = ActFormat::F32;
    type Act<'a> = [f32];

    fn dequantize(b: &[u8], y: &mut [f32]) {
        y[0] = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }

    fn dot(w: &[u8], x: &[f32]) -> f32 {
        halves(w, x, |c| f16::from_le_bytes([c[0], c[1]]).to_f32())
    }
}

/// BF16: the high half of an f32.
pub(super) struct BF16;

impl BlockFormat for BF16 {
    const BLOCK_ELEMS: usize = 1;
    const BLOCK_BYTES: usize = 2;
    const ACT: ActFormat = ActFormat::F32;
    type Act<'a> = [f32];

    fn dequantize(b: &[u8], y: &mut [f32]) {
        y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32();
    }

    fn dot(w: &[u8], x: &[f32]) -> f32 {
        halves(w, x, |c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
    }
}
