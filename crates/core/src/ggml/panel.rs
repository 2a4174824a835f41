//! Matrix-matrix products for prefill: weight rows repacked, per matmul, into panels of 16 rows of unsigned
//! byte codes with an f32 scale and offset per sub-block, then multiplied with many quantized activation
//! rows at once (a GEMM micro-kernel, as llama.cpp's repacked `_8x8` paths and oneDNN's VNNI kernels do).
//!
//! Why a second form beside the row kernels: a row kernel decodes each block (nibble unpacking, the
//! k-quants' 6-bit scales and mins) for every activation row it meets, up to four at a time, and that
//! decoding is most of its instructions. With many rows (a 512-token prompt) it pays to decode every
//! weight once into the form the multiply wants: for each sub-block `s` of S values (S = 32, or 16 for
//! Q2_K, Q3_K and Q6_K, whose scales change every 16) the 16 rows' codes are interleaved four bytes at a
//! time, `codes[s][g][r][0..4]` = values 4g..4g + 4 of row r, so one 64-byte load holds a group of four
//! values for all 16 rows and AVX-512 VNNI's `vpdpbusd` multiplies it by four broadcast activation codes
//! into 16 i32 sums: 64 multiply-adds per instruction and nothing to decode. Every format becomes
//! `value = scale[s][r] · code + off[s][r]` with u8 codes, exactly (see [`decode_block`]), so
//!
//! Σ value·a = Σ_s (scale·da) · Σ code·q + off · (da·Σq)
//!
//! where `da·Σq` per sub-block comes precomputed with the activations ([`Acts`]' `s` and `s16`).
//!
//! The packed form is built per call (it is 1 byte per weight plus 8 per sub-block and row, about twice a
//! Q4 file's bytes, so it is not kept): packing costs about what one activation row's dot products cost,
//! which prefill's hundreds of rows amortise; decode keeps the row kernels. [`GemmKernel::Portable`] is the
//! reference (same operations in the same order, so the AVX-512 kernel equals it bit for bit).

use super::kquants::{q2k_quants, q3k_quants, q3k_scales, q6k_quants, q45k_codes, scale_min_k4};
use super::legacy::{q4_codes, q5_codes};
use super::{ActFormat, Acts, GgmlType, QK, QK_K, act_format, h, row_bytes};
use crate::error::{Error, Result};

/// Weight rows per panel: one 512-bit register of i32 sums.
pub const PANEL_ROWS: usize = 16;

/// Which panel kernel runs [`Panels::gemm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKernel {
    /// Plain Rust, the reference.
    Portable,
    /// AVX-512 F/BW/VL with VNNI (x86_64).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl GemmKernel {
    /// The kernel that beats the row kernels on this CPU, if there is one: AVX-512 VNNI unless
    /// `CHORUS_ISA` caps the instruction sets lower. None means callers keep the row kernels' pairs and
    /// quads (the portable panel loop is a reference, not faster than them).
    pub fn fast() -> Option<GemmKernel> {
        #[cfg(target_arch = "x86_64")]
        if super::has_avx512() && super::isa_cap() >= 2 {
            return Some(GemmKernel::Avx512);
        }
        None
    }

    /// Every kernel usable on this CPU, portable first (for tests and benches).
    pub fn variants() -> Vec<GemmKernel> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut v = vec![GemmKernel::Portable];
        #[cfg(target_arch = "x86_64")]
        if super::has_avx512() {
            v.push(GemmKernel::Avx512);
        }
        v
    }
}

/// Values per sub-block (one scale and offset) of a quantized type's panels; None for float types.
pub fn sub_block(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => None,
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q6_K => Some(16),
        _ => Some(32),
    }
}

/// Weight rows repacked into panels (see the module docs); the buffers are reused from one
/// [`Panels::pack`] to the next.
#[derive(Default, Clone)]
pub struct Panels {
    ty: Option<GgmlType>,
    rows: usize,
    cols: usize,
    sub: usize,
    /// Per panel `cols · 16` bytes: `[s][g][r][4]`.
    codes: Vec<u8>,
    /// Per panel `(cols / sub) · 16` values: `[s][r]`.
    scale: Vec<f32>,
    off: Vec<f32>,
}

impl std::fmt::Debug for Panels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ty = self.ty.map_or("none", |t| t.name());
        write!(f, "Panels({} × {} {ty})", self.rows, self.cols)
    }
}

impl Panels {
    /// Empty panels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Weight rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Repacks `rows` stored rows of `cols` values of type `ty` (`w`, `rows · row_bytes` bytes). Rows past
    /// the last full panel are padded with zero codes, scales and offsets.
    ///
    /// Errors when `ty` is a float type or `w`'s length does not match.
    pub fn pack(&mut self, ty: GgmlType, w: &[u8], rows: usize, cols: usize) -> Result<()> {
        let sub = sub_block(ty).ok_or_else(|| Error::Config {
            field: "panel weight type".into(),
            reason: format!("{} weights are not quantized; panels hold block formats only", ty.name()),
        })?;
        let rb = row_bytes(ty, cols).filter(|&rb| rows.checked_mul(rb) == Some(w.len()));
        let Some(rb) = rb else {
            return Err(Error::Config {
                field: "panel weights".into(),
                reason: format!("{} bytes for {rows} rows of {cols} {} values", w.len(), ty.name()),
            });
        };
        self.ty = None;
        let panels = rows.div_ceil(PANEL_ROWS);
        let nsub = cols / sub;
        self.codes.resize(panels * cols * PANEL_ROWS, 0);
        self.scale.resize(panels * nsub * PANEL_ROWS, 0.0);
        self.off.resize(panels * nsub * PANEL_ROWS, 0.0);
        if !rows.is_multiple_of(PANEL_ROWS) {
            // The padding rows of the last panel: zero, so their sums are 0 (and nothing reads them back).
            let p = panels - 1;
            self.codes[p * cols * PANEL_ROWS..].fill(0);
            self.scale[p * nsub * PANEL_ROWS..].fill(0.0);
            self.off[p * nsub * PANEL_ROWS..].fill(0.0);
        }
        let (be, bb) = (ty.block_elems(), ty.block_bytes());
        let subs = be / sub;
        let mut c = [0u8; QK_K];
        let (mut sc, mut of) = ([0f32; 16], [0f32; 16]);
        if rb > 0 {
            for (r, wr) in w.chunks_exact(rb).enumerate() {
                let (p, rr) = (r / PANEL_ROWS, r % PANEL_ROWS);
                let codes = &mut self.codes[p * cols * PANEL_ROWS..(p + 1) * cols * PANEL_ROWS];
                let scale = &mut self.scale[p * nsub * PANEL_ROWS..(p + 1) * nsub * PANEL_ROWS];
                let off = &mut self.off[p * nsub * PANEL_ROWS..(p + 1) * nsub * PANEL_ROWS];
                for (ib, b) in wr.chunks_exact(bb).enumerate() {
                    decode_block(ty, b, &mut c[..be], &mut sc[..subs], &mut of[..subs]);
                    for k in 0..subs {
                        let s = ib * subs + k;
                        scale[s * PANEL_ROWS + rr] = sc[k];
                        off[s * PANEL_ROWS + rr] = of[k];
                        let dst = &mut codes[s * sub * PANEL_ROWS..(s + 1) * sub * PANEL_ROWS];
                        for (g, four) in c[k * sub..(k + 1) * sub].chunks_exact(4).enumerate() {
                            let at = (g * PANEL_ROWS + rr) * 4;
                            dst[at..at + 4].copy_from_slice(four);
                        }
                    }
                }
            }
        }
        (self.ty, self.rows, self.cols, self.sub) = (Some(ty), rows, cols, sub);
        Ok(())
    }

    /// The value stored for row `r`, column `j` (`scale · code + off`), for tests of the packing.
    #[cfg(test)]
    pub(super) fn value(&self, r: usize, j: usize) -> f32 {
        let (p, rr, s) = (r / PANEL_ROWS, r % PANEL_ROWS, j / self.sub);
        let nsub = self.cols / self.sub;
        let g = (j % self.sub) / 4;
        let code = self.codes[p * self.cols * PANEL_ROWS + (s * self.sub / 4 + g) * PANEL_ROWS * 4 + rr * 4 + j % 4];
        let at = (p * nsub + s) * PANEL_ROWS + rr;
        self.scale[at] * code as f32 + self.off[at]
    }

    /// `out[k][r]` = dot(weight row r, activation row `i + k`) for every packed row r (`out[k].len()` =
    /// [`Panels::rows`]), for k in 0..N (N = 1..=4).
    ///
    /// A mismatch (activation format or columns, rows past the end, output lengths, nothing packed) is a
    /// caller bug: it debug-asserts, and in release builds returns with `out` unchanged.
    pub fn gemm<const N: usize>(&self, kern: GemmKernel, acts: &Acts, i: usize, out: [&mut [f32]; N]) {
        let ok = self.ty.is_some_and(|t| act_format(t) == acts.format())
            && (1..=4).contains(&N)
            && acts.cols() == self.cols
            && i + N <= acts.rows()
            && out.iter().all(|o| o.len() == self.rows);
        debug_assert!(ok, "Panels::gemm: {self:?} against rows {i}..{} of {acts:?}", i + N);
        if !ok || self.cols == 0 {
            if ok {
                out.into_iter().for_each(|o| o.fill(0.0));
            }
            return;
        }
        let nsub = self.cols / self.sub;
        let rows = |k: usize| ActRow::of(acts, i + k, self.sub);
        let a: [ActRow; N] = std::array::from_fn(rows);
        let mut out = out;
        for p in 0..self.rows.div_ceil(PANEL_ROWS) {
            let panel = PanelRef {
                codes: &self.codes[p * self.cols * PANEL_ROWS..(p + 1) * self.cols * PANEL_ROWS],
                scale: &self.scale[p * nsub * PANEL_ROWS..(p + 1) * nsub * PANEL_ROWS],
                off: &self.off[p * nsub * PANEL_ROWS..(p + 1) * nsub * PANEL_ROWS],
                sub: self.sub,
            };
            let sums = match kern {
                GemmKernel::Portable => panel_portable(&panel, &a),
                #[cfg(target_arch = "x86_64")]
                GemmKernel::Avx512 => super::x86::avx512::panel_gemm(&panel, &a),
            };
            let (lo, hi) = (p * PANEL_ROWS, ((p + 1) * PANEL_ROWS).min(self.rows));
            for (o, s) in out.iter_mut().zip(&sums) {
                o[lo..hi].copy_from_slice(&s[..hi - lo]);
            }
        }
    }
}

/// One panel's slices: `sub · 16` code bytes and 16 scales and offsets per sub-block.
pub(super) struct PanelRef<'a> {
    pub codes: &'a [u8],
    pub scale: &'a [f32],
    pub off: &'a [f32],
    pub sub: usize,
}

/// One activation row as the panel kernels read it: its codes, and per sub-block the activation scale
/// `d[s >> dshift]` and the scaled code sum `asum[s]`.
#[derive(Clone, Copy)]
pub(super) struct ActRow<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub dshift: u32,
    pub asum: &'a [f32],
}

impl<'a> ActRow<'a> {
    /// Row `i` of `acts` (which the caller checked exists) for sub-blocks of `sub` values.
    fn of(acts: &'a Acts, i: usize, sub: usize) -> Self {
        let c = acts.cols();
        let q = &acts.q[i * c..(i + 1) * c];
        let ns = c / sub;
        match acts.format() {
            ActFormat::Q8_0 => {
                ActRow { q, d: &acts.d[i * ns..(i + 1) * ns], dshift: 0, asum: &acts.s[i * ns..(i + 1) * ns] }
            }
            _ => {
                let nb = c / QK_K;
                let sums = if sub == 16 { &acts.s16 } else { &acts.s };
                let dshift = if sub == 16 { 4 } else { 3 };
                ActRow { q, d: &acts.d[i * nb..(i + 1) * nb], dshift, asum: &sums[i * ns..(i + 1) * ns] }
            }
        }
    }
}

/// The reference panel kernel: per sub-block the exact integer sums of code × activation code, then
/// `acc = fma(isum, scale·da, acc)` and `acc = fma(off, asum, acc)`, the AVX-512 kernel's operations in its
/// order.
pub(super) fn panel_portable<const N: usize>(p: &PanelRef, a: &[ActRow; N]) -> [[f32; PANEL_ROWS]; N] {
    let mut acc = [[0f32; PANEL_ROWS]; N];
    let s_bytes = p.sub * PANEL_ROWS;
    for (s, codes) in p.codes.chunks_exact(s_bytes).enumerate() {
        let (sc, of) = (&p.scale[s * PANEL_ROWS..][..PANEL_ROWS], &p.off[s * PANEL_ROWS..][..PANEL_ROWS]);
        for (m, row) in a.iter().enumerate() {
            let q = &row.q[s * p.sub..(s + 1) * p.sub];
            let (da, asum) = (row.d[s >> row.dshift], row.asum[s]);
            for r in 0..PANEL_ROWS {
                let mut isum = 0i32;
                for (g, q4) in q.chunks_exact(4).enumerate() {
                    let c4 = &codes[(g * PANEL_ROWS + r) * 4..][..4];
                    isum += c4.iter().zip(q4).map(|(&c, &q)| c as i32 * q as i32).sum::<i32>();
                }
                let t = sc[r] * da;
                acc[m][r] = (isum as f32).mul_add(t, acc[m][r]);
                acc[m][r] = of[r].mul_add(asum, acc[m][r]);
            }
        }
    }
    acc
}

/// One stored block as u8 codes `c` (its values in order) and per sub-block a scale and offset with
/// `value = scale · code + off`, exactly the value `quant::dequantize_block` gives: every product below
/// has at most 11 + 8 significant bits, so only the final sum rounds, once, as there.
///
/// - Q4_0 / Q5_0 / Q8_0: d·(c − 8 | 16 | 128 bias) → code c + bias, offset −bias·d;
/// - Q4_1 / Q5_1: d·c + m;
/// - Q4_K / Q5_K: d·sc·c − dmin·m per 32;
/// - Q2_K: d·(sc & 15)·c − dmin·(sc >> 4) per 16;
/// - Q3_K / Q6_K: d·sc·q with signed q → code q + 4 | 32, offset −(4 | 32)·d·sc per 16.
pub(super) fn decode_block(ty: GgmlType, b: &[u8], c: &mut [u8], scale: &mut [f32], off: &mut [f32]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (d, at) = (h(b, 0), if ty == GgmlType::Q4_0 { 2 } else { 4 });
            for (o, v) in c.iter_mut().zip(q4_codes(&b[at..at + 16], 0)) {
                *o = v as u8;
            }
            scale[0] = d;
            off[0] = if ty == GgmlType::Q4_0 { -8.0 * d } else { h(b, 2) };
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let bias = if ty == GgmlType::Q5_0 { 16 } else { 0 };
            for (o, v) in c.iter_mut().zip(q5_codes(ty, b)) {
                *o = (v as i32 + bias) as u8;
            }
            let d = h(b, 0);
            scale[0] = d;
            off[0] = if ty == GgmlType::Q5_0 { -16.0 * d } else { h(b, 2) };
        }
        GgmlType::Q8_0 => {
            let d = h(b, 0);
            for (o, &v) in c.iter_mut().zip(&b[2..2 + QK]) {
                *o = ((v as i8) as i32 + 128) as u8;
            }
            scale[0] = d;
            off[0] = -128.0 * d;
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let codes = if ty == GgmlType::Q5_K {
                q45k_codes(&b[48..176], Some(&b[16..48]))
            } else {
                q45k_codes(&b[16..144], None)
            };
            c.copy_from_slice(&codes);
            let (d, dmin) = (h(b, 0), h(b, 2));
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &b[4..16]);
                scale[j] = d * sc as f32;
                off[j] = -(dmin * m as f32);
            }
        }
        GgmlType::Q2_K => {
            let mut q = [0u8; QK_K];
            q2k_quants(b, &mut q);
            c.copy_from_slice(&q);
            let (d, dmin) = (h(b, 80), h(b, 82));
            for j in 0..16 {
                scale[j] = d * (b[j] & 0x0f) as f32;
                off[j] = -(dmin * (b[j] >> 4) as f32);
            }
        }
        GgmlType::Q3_K | GgmlType::Q6_K => {
            let mut q = [0i8; QK_K];
            let (d, bias) = if ty == GgmlType::Q3_K {
                q3k_quants(b, &mut q);
                (h(b, 108), 4)
            } else {
                q6k_quants(b, &mut q);
                (h(b, 208), 32)
            };
            for (o, &v) in c.iter_mut().zip(&q) {
                *o = (v as i32 + bias) as u8;
            }
            let sc: [i8; 16] =
                if ty == GgmlType::Q3_K { q3k_scales(b) } else { std::array::from_fn(|j| b[192 + j] as i8) };
            for j in 0..16 {
                scale[j] = d * sc[j] as f32;
                off[j] = -(bias as f32) * scale[j];
            }
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {}
    }
}
