//! Activation quantization: the row-major f32 inputs of a matrix product turned into the block format the
//! weight type's dot product reads ([`ActFormat`]), into buffers reused from one call to the next.

use super::{ActFormat, Q8Act, Q8KAct};
use crate::error::{Error, Result};
use crate::ggml::{QK, QK_K};

/// `rows` rows of `cols` activations in one format; the buffer is reused across calls (no allocation once
/// capacity suffices).
///
/// Storage is one array per field (structure of arrays) so every kernel reads contiguous codes:
/// - F32: `f` (rows·cols);
/// - Q8_0: `q` (rows·cols codes), per block of 32 `d` (scale) and `s` (`d·Σq`, the weight mins' partner);
/// - Q8K: `q`, per super-block of 256 `d`, and per 16 codes `bsums` (their i16 sum, for the k-quants' mins
///   and Q6_K's offset); for the panel kernels (`super::panel`) also the scaled code sums `d·Σq` per 32
///   (in `s`) and per 16 (in `s16`).
#[derive(Default, Clone)]
pub struct Acts {
    pub(super) fmt: ActFormat,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) f: Vec<f32>,
    pub(super) q: Vec<i8>,
    pub(super) d: Vec<f32>,
    pub(super) s: Vec<f32>,
    pub(super) bsums: Vec<i16>,
    pub(super) s16: Vec<f32>,
}

impl std::fmt::Debug for Acts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acts({} × {} {})", self.rows, self.cols, self.fmt.name())
    }
}

impl Acts {
    /// Empty activations (F32, 0 × 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes row-major x (rows*cols). Q8_0: per 32 values f32 d = amax/127, q = round(x/d) (i8), and also
    /// s = d*Σq (needed by Q4_1/Q5_1); Q8K: per 256 values f32 d, q i8, and bsums: i16 sum of each 16 q's
    /// (needed by the K formats' mins / Q6_K offset). F32: copy.
    ///
    /// Errors (leaving the previous contents unspecified but consistent) when `x.len() != rows * cols` or
    /// `cols` is not a multiple of the format's block (32 for Q8_0, 256 for Q8K). Inputs are not checked for
    /// finiteness: a NaN or infinity gives meaningless codes for its block, as in ggml.
    pub fn quantize(&mut self, fmt: ActFormat, x: &[f32], rows: usize, cols: usize) -> Result<()> {
        let be = fmt.block_elems();
        if !cols.is_multiple_of(be) {
            return Err(Error::Config {
                field: "activation cols".into(),
                reason: format!("{cols} is not a multiple of {be}, the {} activation block", fmt.name()),
            });
        }
        if rows.checked_mul(cols) != Some(x.len()) {
            return Err(Error::Config {
                field: "activations".into(),
                reason: format!("{} values given for {rows} rows × {cols} cols", x.len()),
            });
        }
        // Invalidate first, so an early return below could never leave a stale shape over new data.
        (self.fmt, self.rows, self.cols) = (fmt, 0, 0);
        match fmt {
            ActFormat::F32 => {
                self.f.clear();
                self.f.extend_from_slice(x);
            }
            ActFormat::Q8_0 => {
                let nb = x.len() / QK;
                self.q.resize(x.len(), 0);
                self.d.resize(nb, 0.0);
                self.s.resize(nb, 0.0);
                let blocks = x.chunks_exact(QK).zip(self.q.chunks_exact_mut(QK));
                for ((xb, qb), (d, s)) in blocks.zip(self.d.iter_mut().zip(self.s.iter_mut())) {
                    let (db, sum) = quantize_block(xb, qb);
                    *d = db;
                    *s = db * sum as f32;
                }
            }
            ActFormat::Q8K => {
                let nb = x.len() / QK_K;
                self.q.resize(x.len(), 0);
                self.d.resize(nb, 0.0);
                self.bsums.resize(x.len() / 16, 0);
                self.s16.resize(x.len() / 16, 0.0);
                self.s.resize(x.len() / 32, 0.0);
                let blocks = x.chunks_exact(QK_K).zip(self.q.chunks_exact_mut(QK_K));
                let sums = self.bsums.chunks_exact_mut(16).zip(self.s16.chunks_exact_mut(16));
                for (((xb, qb), d), (bs, s16)) in blocks.zip(self.d.iter_mut()).zip(sums) {
                    *d = quantize_block(xb, qb).0;
                    for ((b, s), q16) in bs.iter_mut().zip(s16.iter_mut()).zip(qb.chunks_exact(16)) {
                        // |q| ≤ 127, so 16 of them fit an i16 with room to spare.
                        *b = q16.iter().map(|&v| v as i16).sum();
                        *s = *d * *b as f32;
                    }
                }
                // Per 32 codes: the scale of their super-block (8 runs of 32 each) times their code sum.
                for (k, (s, b)) in self.s.iter_mut().zip(self.bsums.chunks_exact(2)).enumerate() {
                    *s = self.d[k / 8] * (b[0] as i32 + b[1] as i32) as f32;
                }
            }
        }
        (self.rows, self.cols) = (rows, cols);
        Ok(())
    }

    /// The format of the stored activations.
    pub fn format(&self) -> ActFormat {
        self.fmt
    }

    /// Number of activation rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per activation row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i` of F32 activations (empty past the end).
    pub(super) fn f32_row(&self, i: usize) -> &[f32] {
        self.f.get(i * self.cols..(i + 1) * self.cols).unwrap_or(&[])
    }

    /// Row `i` of Q8_0 activations (empty past the end).
    pub(super) fn q8_0_row(&self, i: usize) -> Q8Act<'_> {
        let nb = self.cols / QK;
        Q8Act {
            q: self.q.get(i * self.cols..(i + 1) * self.cols).unwrap_or(&[]),
            d: self.d.get(i * nb..(i + 1) * nb).unwrap_or(&[]),
            s: self.s.get(i * nb..(i + 1) * nb).unwrap_or(&[]),
        }
    }

    /// Row `i` of Q8K activations (empty past the end).
    pub(super) fn q8k_row(&self, i: usize) -> Q8KAct<'_> {
        let (nb, ns) = (self.cols / QK_K, self.cols / 16);
        Q8KAct {
            q: self.q.get(i * self.cols..(i + 1) * self.cols).unwrap_or(&[]),
            d: self.d.get(i * nb..(i + 1) * nb).unwrap_or(&[]),
            bsums: self.bsums.get(i * ns..(i + 1) * ns).unwrap_or(&[]),
        }
    }
}

/// Quantizes one block symmetrically to i8 in −127..=127: d = amax / 127, q = round(x / d). Returns d and Σq.
///
/// −128 is never produced, which the AVX2 kernels' sign trick (`_mm256_sign_epi8` negates the activation)
/// relies on. An all-zero block gets d = 0 and zero codes.
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    // Adding and subtracting 1.5·2²³ rounds to nearest (ties to even) any |t| < 2²², in plain IEEE
    // arithmetic that vectorizes on baseline x86-64 and wasm, unlike `f32::round` (a libm call there).
    const MAGIC: f32 = 12_582_912.0;
    for (qv, &v) in q.iter_mut().zip(x) {
        // |v·id| ≤ 127 up to rounding; the clamp also keeps NaN (→ 0 by `as`) and stray values in range.
        let c = ((v * id + MAGIC) - MAGIC).clamp(-127.0, 127.0) as i8;
        *qv = c;
        sum += c as i32;
    }
    (d, sum)
}
