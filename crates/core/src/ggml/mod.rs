//! Quantized dot products on the CPU: GGML weight rows against quantized activation rows, like ggml's
//! `ggml_vec_dot_*` kernels, with a portable reference for every type and AVX2 variants chosen at run time.
//!
//! The scheme is ggml's: activations are quantized once per matrix product (to Q8_0 blocks of 32 for the
//! legacy formats, Q8_K super-blocks of 256 for the k-quants, or kept in f32 for float weights), then each
//! weight row is dotted with integer arithmetic per (sub-)block and the block sums are scaled in f32. This
//! reads the weights in their stored form, so the memory traffic per row is the file's bytes, which is what
//! bounds decoding speed on a CPU.
//!
//! - `act`: activation quantization ([`Acts`]);
//! - `float`, `legacy`, `kquants`: the portable kernels, one file per format family;
//! - `panel`: matrix-matrix products for prefill, weights repacked per call into 16-row panels of byte codes
//!   ([`Panels`], [`GemmKernel`]);
//! - `x86`: the AVX2+FMA+F16C kernels (x86_64 only), and in `x86::avx512` the AVX-512 (F/BW/VL/VNNI) ones
//!   for the legacy formats, Q4_K and Q6_K, all compared with the portable ones by the tests.

mod act;
mod float;
mod kquants;
mod legacy;
mod panel;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use crate::quant::GgmlType;
pub use act::Acts;
pub use panel::{GemmKernel, PANEL_ROWS, Panels, sub_block};

use crate::quant::{QK, QK_K, dequantize_block};

/// How a weight type's dot product wants its activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ActFormat {
    /// Plain f32 (float weights).
    #[default]
    F32,
    /// Blocks of 32 i8 with an f32 scale and the scaled code sum (legacy weights).
    Q8_0,
    /// Super-blocks of 256 i8 with an f32 scale and 16 sums of 16 codes (k-quant weights).
    Q8K,
}

impl ActFormat {
    /// Values per activation block (1 for f32).
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 => 1,
            Self::Q8_0 => QK,
            Self::Q8K => QK_K,
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::Q8_0 => "Q8_0",
            Self::Q8K => "Q8_K",
        }
    }
}

/// F32/F16/BF16 -> F32; Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 -> Q8_0; Q2_K..Q6_K -> Q8K.
pub fn act_format(ty: GgmlType) -> ActFormat {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => ActFormat::F32,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => ActFormat::Q8_0,
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => ActFormat::Q8K,
    }
}

/// Bytes of one stored row of `cols` values; None when cols is not a multiple of the block size.
pub fn row_bytes(ty: GgmlType, cols: usize) -> Option<usize> {
    ty.bytes_for(cols)
}

/// Decodes one stored row (row_bytes bytes) into out (cols values), for embedding lookups.
///
/// `out.len()` is the column count. When `w` is not exactly [`row_bytes`] long (or `out.len()` is not a whole
/// number of blocks) this is a caller bug: it debug-asserts, and in release builds leaves `out` unchanged.
pub fn dequantize_row(ty: GgmlType, w: &[u8], out: &mut [f32]) {
    let ok = row_bytes(ty, out.len()) == Some(w.len());
    debug_assert!(ok, "dequantize_row: {} bytes for {} {} values", w.len(), out.len(), ty.name());
    if !ok {
        return;
    }
    match ty {
        GgmlType::F32 => {
            for (y, c) in out.iter_mut().zip(w.chunks_exact(4)) {
                *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (y, c) in out.iter_mut().zip(w.chunks_exact(2)) {
                *y = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (y, c) in out.iter_mut().zip(w.chunks_exact(2)) {
                *y = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            for (b, y) in w.chunks_exact(ty.block_bytes()).zip(out.chunks_exact_mut(ty.block_elems())) {
                dequantize_block(ty, b, y);
            }
        }
    }
}

/// One Q8_0 activation row: `q` (cols codes), and per block of 32 its scale `d` and `s = d·Σq`.
#[derive(Clone, Copy)]
pub(crate) struct Q8Act<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
}

/// One Q8_K activation row: `q` (cols codes), per super-block of 256 its scale `d`, and per 16 codes their sum.
#[derive(Clone, Copy)]
pub(crate) struct Q8KAct<'a> {
    pub q: &'a [i8],
    pub d: &'a [f32],
    pub bsums: &'a [i16],
}

/// A row kernel: the dot product of one stored weight row with one activation row (`F32`, `Q8_0`, `Q8K`), or a
/// rows kernel (`*Rows`): `out[r]` for every row r of `w` (`out.len()` rows), which lets a SIMD kernel work
/// on several rows per pass. The row kernels walk the row with `chunks_exact` zipped over the activation
/// blocks, so inconsistent lengths shorten the sum but never read out of bounds; the rows kernels assert
/// the lengths once per call. [`Kernel::dot_rows`] checks them first either way.
#[derive(Clone, Copy)]
enum RowFn {
    F32(fn(&[u8], &[f32]) -> f32),
    Q8_0(for<'a> fn(&[u8], &Q8Act<'a>) -> f32),
    Q8K(for<'a> fn(&[u8], &Q8KAct<'a>) -> f32),
    /// Many rows at once, the same against two activation rows at once, and (where there is one) against
    /// four.
    #[cfg(target_arch = "x86_64")]
    Q8_0Rows(Q8_0One, Q8_0Pair, Option<Q8_0Quad>),
    #[cfg(target_arch = "x86_64")]
    Q8KRows(Q8KOne, Q8KPair, Option<Q8KQuad>),
}

// The rows kernels' signatures, by activation format and number of activation rows.
#[cfg(target_arch = "x86_64")]
type Q8_0One = for<'a> fn(&[u8], &Q8Act<'a>, &mut [f32]);
#[cfg(target_arch = "x86_64")]
type Q8KOne = for<'a> fn(&[u8], &Q8KAct<'a>, &mut [f32]);
#[cfg(target_arch = "x86_64")]
type Q8_0Pair = for<'a> fn(&[u8], &[Q8Act<'a>; 2], [&mut [f32]; 2]);
#[cfg(target_arch = "x86_64")]
type Q8_0Quad = for<'a> fn(&[u8], &[Q8Act<'a>; 4], [&mut [f32]; 4]);
#[cfg(target_arch = "x86_64")]
type Q8KPair = for<'a> fn(&[u8], &[Q8KAct<'a>; 2], [&mut [f32]; 2]);
#[cfg(target_arch = "x86_64")]
type Q8KQuad = for<'a> fn(&[u8], &[Q8KAct<'a>; 4], [&mut [f32]; 4]);

/// A dot-product kernel for one weight type and one ISA variant.
#[derive(Clone, Copy)]
pub struct Kernel {
    ty: GgmlType,
    name: &'static str,
    row: RowFn,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernel({}, {})", self.ty.name(), self.name)
    }
}

/// Whether this CPU runs the `avx2` variants (AVX2, FMA and F16C), detected once.
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    })
}

/// Whether this CPU runs the `avx512` variants (AVX-512 F, BW, VL and VNNI, besides the AVX2 set).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    })
}

/// The instruction sets `Kernel::best` may use: all this CPU has, or fewer when `CHORUS_ISA` names a
/// lower one (`portable`, `avx2`), which lets a benchmark compare variants in one build and one run. An
/// unknown value is ignored with a warning on stderr (once).
#[cfg(target_arch = "x86_64")]
fn isa_cap() -> u8 {
    static CAP: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| match std::env::var("CHORUS_ISA").as_deref() {
        Err(_) | Ok("" | "avx512" | "native") => 2,
        Ok("avx2") => 1,
        Ok("portable") => 0,
        Ok(other) => {
            eprintln!("warning: CHORUS_ISA={other:?} is not portable, avx2 or avx512; using all this CPU has");
            2
        }
    })
}

impl Kernel {
    /// The fastest variant this CPU supports (runtime detection, cached), capped by `CHORUS_ISA`.
    pub fn best(ty: GgmlType) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            let cap = isa_cap();
            if let Some(k) = Self::avx512(ty).filter(|_| cap >= 2) {
                return k;
            }
            if let Some(k) = Self::avx2(ty).filter(|_| cap >= 1) {
                return k;
            }
        }
        Self::portable(ty)
    }

    /// The plain-Rust reference kernel; every type has one.
    pub fn portable(ty: GgmlType) -> Kernel {
        let row = match ty {
            GgmlType::F32 => RowFn::F32(float::f32_dot),
            GgmlType::F16 => RowFn::F32(float::f16_dot),
            GgmlType::BF16 => RowFn::F32(float::bf16_dot),
            GgmlType::Q4_0 => RowFn::Q8_0(legacy::q4_0_dot),
            GgmlType::Q4_1 => RowFn::Q8_0(legacy::q4_1_dot),
            GgmlType::Q5_0 => RowFn::Q8_0(legacy::q5_0_dot),
            GgmlType::Q5_1 => RowFn::Q8_0(legacy::q5_1_dot),
            GgmlType::Q8_0 => RowFn::Q8_0(legacy::q8_0_dot),
            GgmlType::Q2_K => RowFn::Q8K(kquants::q2_k_dot),
            GgmlType::Q3_K => RowFn::Q8K(kquants::q3_k_dot),
            GgmlType::Q4_K => RowFn::Q8K(kquants::q4_k_dot),
            GgmlType::Q5_K => RowFn::Q8K(kquants::q5_k_dot),
            GgmlType::Q6_K => RowFn::Q8K(kquants::q6_k_dot),
        };
        Kernel { ty, name: "portable", row }
    }

    /// The AVX2 variant, when this CPU has AVX2+FMA+F16C and `ty` has one (Q2_K and Q3_K do not).
    #[cfg(target_arch = "x86_64")]
    fn avx2(ty: GgmlType) -> Option<Kernel> {
        if !has_avx2() {
            return None;
        }
        let row = match ty {
            GgmlType::F32 => RowFn::F32(x86::f32_dot),
            GgmlType::F16 => RowFn::F32(x86::f16_dot),
            GgmlType::BF16 => RowFn::F32(x86::bf16_dot),
            GgmlType::Q4_0 => RowFn::Q8_0Rows(x86::q4_0_rows, x86::q4_0_rows2, None),
            GgmlType::Q4_1 => RowFn::Q8_0Rows(x86::q4_1_rows, x86::q4_1_rows2, None),
            GgmlType::Q5_0 => RowFn::Q8_0Rows(x86::q5_0_rows, x86::q5_0_rows2, None),
            GgmlType::Q5_1 => RowFn::Q8_0Rows(x86::q5_1_rows, x86::q5_1_rows2, None),
            GgmlType::Q8_0 => RowFn::Q8_0Rows(x86::q8_0_rows, x86::q8_0_rows2, None),
            GgmlType::Q4_K => RowFn::Q8KRows(x86::q4_k_rows, x86::q4_k_rows2, None),
            GgmlType::Q5_K => RowFn::Q8KRows(x86::q5_k_rows, x86::q5_k_rows2, None),
            GgmlType::Q6_K => RowFn::Q8KRows(x86::q6_k_rows, x86::q6_k_rows2, None),
            GgmlType::Q2_K | GgmlType::Q3_K => return None,
        };
        Some(Kernel { ty, name: "avx2", row })
    }

    /// The AVX-512 variant, when this CPU has AVX-512 F/BW/VL/VNNI (and the AVX2 set) and `ty` has one
    /// (the legacy formats, and Q4_K and Q6_K: the bulk of a Q4_K_M file).
    #[cfg(target_arch = "x86_64")]
    fn avx512(ty: GgmlType) -> Option<Kernel> {
        if !has_avx512() {
            return None;
        }
        use x86::avx512 as k;
        let row = match ty {
            GgmlType::Q4_0 => RowFn::Q8_0Rows(k::q4_0_rows, k::q4_0_rows2, Some(k::q4_0_rows4)),
            GgmlType::Q4_1 => RowFn::Q8_0Rows(k::q4_1_rows, k::q4_1_rows2, Some(k::q4_1_rows4)),
            GgmlType::Q5_0 => RowFn::Q8_0Rows(k::q5_0_rows, k::q5_0_rows2, Some(k::q5_0_rows4)),
            GgmlType::Q5_1 => RowFn::Q8_0Rows(k::q5_1_rows, k::q5_1_rows2, Some(k::q5_1_rows4)),
            GgmlType::Q8_0 => RowFn::Q8_0Rows(k::q8_0_rows, k::q8_0_rows2, Some(k::q8_0_rows4)),
            GgmlType::Q4_K => RowFn::Q8KRows(k::q4_k_rows, k::q4_k_rows2, Some(k::q4_k_rows4)),
            GgmlType::Q6_K => RowFn::Q8KRows(k::q6_k_rows, k::q6_k_rows2, Some(k::q6_k_rows4)),
            _ => return None,
        };
        Some(Kernel { ty, name: "avx512", row })
    }

    /// Every variant usable on this CPU for ty, (name, kernel), portable first, then from the narrowest
    /// instruction set up — for tests and benches (`CHORUS_ISA` does not apply here).
    pub fn variants(ty: GgmlType) -> Vec<(&'static str, Kernel)> {
        // Only x86_64 has variants to add.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut v = vec![("portable", Self::portable(ty))];
        #[cfg(target_arch = "x86_64")]
        v.extend(Self::avx2(ty).into_iter().chain(Self::avx512(ty)).map(|k| (k.name, k)));
        v
    }

    /// Whether this CPU has the AVX-512 set the `avx512` variants need (false off x86_64).
    pub fn cpu_has_avx512() -> bool {
        #[cfg(target_arch = "x86_64")]
        return has_avx512();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The variant's name: "portable", "avx2" or "avx512".
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The weight type this kernel reads.
    pub fn weight_type(&self) -> GgmlType {
        self.ty
    }

    /// The activation format this kernel needs ([`act_format`] of its weight type).
    pub fn act_format(&self) -> ActFormat {
        act_format(self.ty)
    }

    /// `out[r]` = dot(stored weight row r of w, activation row `i` of acts) for r in 0..out.len().
    /// w holds out.len() consecutive rows of acts.cols() values (out.len() * row_bytes bytes).
    ///
    /// A mismatch (activation format, `i` past the last row, `w`'s length, or a column count that is not
    /// whole weight blocks) is a caller bug: it debug-asserts, and in release builds returns with `out`
    /// unchanged, without reading out of bounds.
    pub fn dot_rows(&self, w: &[u8], acts: &Acts, i: usize, out: &mut [f32]) {
        let cols = acts.cols();
        let rb = row_bytes(self.ty, cols);
        let ok = acts.format() == self.act_format()
            && i < acts.rows()
            && rb.is_some_and(|rb| out.len().checked_mul(rb) == Some(w.len()));
        debug_assert!(
            ok,
            "Kernel::dot_rows({}): {} weight bytes for {} rows of {cols}, activation row {i} of {} in {}",
            self.ty.name(),
            w.len(),
            out.len(),
            acts.rows(),
            acts.format().name()
        );
        let Some(rb) = rb.filter(|_| ok) else { return };
        if rb == 0 {
            // No columns: every dot product is the empty sum (and `chunks_exact(0)` would panic).
            out.fill(0.0);
            return;
        }
        let rows = w.chunks_exact(rb);
        match self.row {
            RowFn::F32(f) => {
                let x = acts.f32_row(i);
                for (o, wr) in out.iter_mut().zip(rows) {
                    *o = f(wr, x);
                }
            }
            RowFn::Q8_0(f) => {
                let a = acts.q8_0_row(i);
                for (o, wr) in out.iter_mut().zip(rows) {
                    *o = f(wr, &a);
                }
            }
            RowFn::Q8K(f) => {
                let a = acts.q8k_row(i);
                for (o, wr) in out.iter_mut().zip(rows) {
                    *o = f(wr, &a);
                }
            }
            #[cfg(target_arch = "x86_64")]
            RowFn::Q8_0Rows(f, _, _) => f(w, &acts.q8_0_row(i), out),
            #[cfg(target_arch = "x86_64")]
            RowFn::Q8KRows(f, _, _) => f(w, &acts.q8k_row(i), out),
        }
    }

    /// [`Kernel::dot_rows`] for activation rows `i` and `i + 1` at once, into `out[0]` and `out[1]` (of equal
    /// length). The AVX2 kernels decode each weight block once for both rows, which is what a batch of two
    /// sequences (fusion's base and prompt expert) and a prompt's tokens need; the results equal two
    /// `dot_rows` calls bit for bit. Other variants make those two calls. Mismatches are handled as there.
    pub fn dot_rows_pair(&self, w: &[u8], acts: &Acts, i: usize, out: [&mut [f32]; 2]) {
        let [o0, o1] = out;
        let ok = o0.len() == o1.len() && i + 1 < acts.rows() && acts.format() == self.act_format();
        debug_assert!(ok, "Kernel::dot_rows_pair({}): rows {i}, {} of {}", self.ty.name(), i + 1, acts.rows());
        #[cfg(target_arch = "x86_64")]
        if ok
            && acts.cols() > 0
            && row_bytes(self.ty, acts.cols()).is_some_and(|rb| o0.len().checked_mul(rb) == Some(w.len()))
        {
            match self.row {
                RowFn::Q8_0Rows(_, f, _) => return f(w, &[acts.q8_0_row(i), acts.q8_0_row(i + 1)], [o0, o1]),
                RowFn::Q8KRows(_, f, _) => return f(w, &[acts.q8k_row(i), acts.q8k_row(i + 1)], [o0, o1]),
                _ => {}
            }
        }
        if ok {
            self.dot_rows(w, acts, i, o0);
            self.dot_rows(w, acts, i + 1, o1);
        }
    }

    /// [`Kernel::dot_rows`] for activation rows `i..i + 4` at once, into `out[0..4]` (of equal length). The
    /// AVX-512 kernels decode each weight block once for all four (a prompt's tokens in prefill); the
    /// results equal four `dot_rows` calls bit for bit. Other variants make two [`Kernel::dot_rows_pair`]
    /// calls. Mismatches are handled as there.
    pub fn dot_rows_quad(&self, w: &[u8], acts: &Acts, i: usize, out: [&mut [f32]; 4]) {
        let n = out[0].len();
        let ok = out.iter().all(|o| o.len() == n) && i + 3 < acts.rows() && acts.format() == self.act_format();
        debug_assert!(ok, "Kernel::dot_rows_quad({}): rows {i}..{} of {}", self.ty.name(), i + 4, acts.rows());
        if !ok {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if acts.cols() > 0 && row_bytes(self.ty, acts.cols()).is_some_and(|rb| n.checked_mul(rb) == Some(w.len())) {
            match self.row {
                RowFn::Q8_0Rows(_, _, Some(f)) => return f(w, &std::array::from_fn(|k| acts.q8_0_row(i + k)), out),
                RowFn::Q8KRows(_, _, Some(f)) => return f(w, &std::array::from_fn(|k| acts.q8k_row(i + k)), out),
                _ => {}
            }
        }
        let [o0, o1, o2, o3] = out;
        self.dot_rows_pair(w, acts, i, [o0, o1]);
        self.dot_rows_pair(w, acts, i + 2, [o2, o3]);
    }
}
