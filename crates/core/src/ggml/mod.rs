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
//! - `types`: [`GgmlType`] (ids, names, sizes) and tensor decoding;
//! - `float`, `legacy`, `kquants`: one [`BlockFormat`] per format (layout, block decoding, the portable
//!   dot product), one file per format family;
//! - `panel`: matrix-matrix products for prefill, weights repacked per call into 16-row panels of byte codes
//!   ([`Panels`], [`GemmKernel`]);
//! - `x86`: the AVX2+FMA+F16C kernels (x86_64 only), and in `x86::avx512` the AVX-512 (F/BW/VL/VNNI) ones
//!   for the legacy formats, Q4_K and Q6_K, all compared with the portable ones by the tests;
//! - `wasm`: the wasm32 simd128 kernels of the browser's CPU path (legacy formats, Q4_K, Q6_K, F32, BF16),
//!   compared with the portable ones by the same tests run under Node (`scripts/test`).

/// Runs `$e` with `$F` naming the [`BlockFormat`] of `$ty` (a [`GgmlType`]): how the type-level queries
/// (block sizes, decoding, activation format) reach the per-format impls.
macro_rules! with_format {
    ($ty:expr, $F:ident => $e:expr) => {
        match $ty {
            $crate::ggml::GgmlType::F32 => {
                type $F = $crate::ggml::float::F32;
                $e
            }
            $crate::ggml::GgmlType::F16 => {
                type $F = $crate::ggml::float::F16;
                $e
            }
            $crate::ggml::GgmlType::BF16 => {
                type $F = $crate::ggml::float::BF16;
                $e
            }
            $crate::ggml::GgmlType::Q4_0 => {
                type $F = $crate::ggml::legacy::Q4_0;
                $e
            }
            $crate::ggml::GgmlType::Q4_1 => {
                type $F = $crate::ggml::legacy::Q4_1;
                $e
            }
            $crate::ggml::GgmlType::Q5_0 => {
                type $F = $crate::ggml::legacy::Q5_0;
                $e
            }
            $crate::ggml::GgmlType::Q5_1 => {
                type $F = $crate::ggml::legacy::Q5_1;
                $e
            }
            $crate::ggml::GgmlType::Q8_0 => {
                type $F = $crate::ggml::legacy::Q8_0;
                $e
            }
            $crate::ggml::GgmlType::Q2_K => {
                type $F = $crate::ggml::kquants::Q2_K;
                $e
            }
            $crate::ggml::GgmlType::Q3_K => {
                type $F = $crate::ggml::kquants::Q3_K;
                $e
            }
            $crate::ggml::GgmlType::Q4_K => {
                type $F = $crate::ggml::kquants::Q4_K;
                $e
            }
            $crate::ggml::GgmlType::Q5_K => {
                type $F = $crate::ggml::kquants::Q5_K;
                $e
            }
            $crate::ggml::GgmlType::Q6_K => {
                type $F = $crate::ggml::kquants::Q6_K;
                $e
            }
        }
    };
}

mod act;
mod float;
mod kquants;
mod legacy;
mod panel;
#[cfg(test)]
mod tests;
mod types;
#[cfg(target_arch = "wasm32")]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use act::Acts;
pub use panel::{GemmKernel, PANEL_ROWS, Panels, sub_block};
pub use types::{GgmlType, QK, QK_K, dequantize, dequantize_block, dequantize_into};

/// One GGML storage format, as ggml-cpu's type traits and candle's `GgmlType` describe one: its block
/// layout, its decoding, and its portable dot product with the activation row it wants. Each format is
/// a zero-sized type in the file of its family (`float`, `legacy`, `kquants`), with its ISA variants
/// beside it (`x86`, `x86::avx512`, `wasm`); [`GgmlType`]'s layout queries, [`dequantize_block`],
/// [`act_format`] and [`Kernel::portable`] all dispatch to it, so a format is one impl and one arm of
/// `with_format!`.
pub(crate) trait BlockFormat {
    /// Values per block (1 for the float types).
    const BLOCK_ELEMS: usize;
    /// Bytes per block.
    const BLOCK_BYTES: usize;
    /// How its dot product wants the activations.
    const ACT: ActFormat;
    /// The activation row its dot product reads (`[f32]`, [`Q8Act`] or [`Q8KAct`]).
    type Act<'a>: ?Sized;

    /// Decodes one block (`BLOCK_BYTES` bytes) into `y` (`BLOCK_ELEMS` values).
    fn dequantize(b: &[u8], y: &mut [f32]);

    /// The portable dot product of one stored row with one activation row of as many values: the
    /// reference every ISA variant is tested against.
    fn dot(w: &[u8], a: &Self::Act<'_>) -> f32;
}

/// The little-endian f16 at `b[at..at + 2]`, as f32 (every block format's scale fields).
#[inline]
fn h(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

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
    with_format!(ty, F => F::ACT)
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
pub(crate) fn isa_cap() -> u8 {
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
        #[cfg(target_arch = "wasm32")]
        if let Some(k) = Self::simd128(ty) {
            return k;
        }
        Self::portable(ty)
    }

    /// The plain-Rust reference kernel; every type has one.
    pub fn portable(ty: GgmlType) -> Kernel {
        let row = match ty {
            GgmlType::F32 => RowFn::F32(float::F32::dot),
            GgmlType::F16 => RowFn::F32(float::F16::dot),
            GgmlType::BF16 => RowFn::F32(float::BF16::dot),
            GgmlType::Q4_0 => RowFn::Q8_0(legacy::Q4_0::dot),
            GgmlType::Q4_1 => RowFn::Q8_0(legacy::Q4_1::dot),
            GgmlType::Q5_0 => RowFn::Q8_0(legacy::Q5_0::dot),
            GgmlType::Q5_1 => RowFn::Q8_0(legacy::Q5_1::dot),
            GgmlType::Q8_0 => RowFn::Q8_0(legacy::Q8_0::dot),
            GgmlType::Q2_K => RowFn::Q8K(kquants::Q2_K::dot),
            GgmlType::Q3_K => RowFn::Q8K(kquants::Q3_K::dot),
            GgmlType::Q4_K => RowFn::Q8K(kquants::Q4_K::dot),
            GgmlType::Q5_K => RowFn::Q8K(kquants::Q5_K::dot),
            GgmlType::Q6_K => RowFn::Q8K(kquants::Q6_K::dot),
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

    /// The wasm simd128 variant, where `ty` has one (the legacy formats, Q4_K, Q6_K, F32 and BF16).
    #[cfg(target_arch = "wasm32")]
    fn simd128(ty: GgmlType) -> Option<Kernel> {
        let row = match ty {
            GgmlType::F32 => RowFn::F32(wasm::f32_dot),
            GgmlType::BF16 => RowFn::F32(wasm::bf16_dot),
            GgmlType::Q4_0 => RowFn::Q8_0(wasm::q4_0_dot),
            GgmlType::Q4_1 => RowFn::Q8_0(wasm::q4_1_dot),
            GgmlType::Q5_0 => RowFn::Q8_0(wasm::q5_0_dot),
            GgmlType::Q5_1 => RowFn::Q8_0(wasm::q5_1_dot),
            GgmlType::Q8_0 => RowFn::Q8_0(wasm::q8_0_dot),
            GgmlType::Q4_K => RowFn::Q8K(wasm::q4_k_dot),
            GgmlType::Q6_K => RowFn::Q8K(wasm::q6_k_dot),
            _ => return None,
        };
        Some(Kernel { ty, name: "simd128", row })
    }

    /// Every variant usable on this CPU for ty, (name, kernel), portable first, then from the narrowest
    /// instruction set up — for tests and benches (`CHORUS_ISA` does not apply here).
    pub fn variants(ty: GgmlType) -> Vec<(&'static str, Kernel)> {
        // Only x86_64 and wasm32 have variants to add.
        #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "wasm32")), allow(unused_mut))]
        let mut v = vec![("portable", Self::portable(ty))];
        #[cfg(target_arch = "x86_64")]
        v.extend(Self::avx2(ty).into_iter().chain(Self::avx512(ty)).map(|k| (k.name, k)));
        #[cfg(target_arch = "wasm32")]
        v.extend(Self::simd128(ty).map(|k| (k.name, k)));
        v
    }

    /// Whether this CPU has the AVX-512 set the `avx512` variants need (false off x86_64).
    pub fn cpu_has_avx512() -> bool {
        #[cfg(target_arch = "x86_64")]
        return has_avx512();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The variant's name: "portable", "avx2", "avx512" or "simd128".
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

/// Test support, shared by the SIMD kernel tests here and in `fusion`: whether this
/// processor runs the AVX2 (with `fma`: AVX2+FMA) kernels, i.e. whether a test comparing them with the
/// portable loops can mean anything here. Without them such a test would compare the portable loop with
/// itself and pass, so this makes the skip visible instead of silent:
/// - it writes `SKIPPED: no avx2 …` with the test's name straight to the process's stderr. libtest captures
///   only what `print!`/`eprint!` write, so under `cargo test` the line appears in the run's log next to the
///   test's `ok` even though the test passed (under `cargo nextest`, which captures whole processes, add
///   `--success-output immediate` or `--no-capture` to see it);
/// - with `CHORUS_REQUIRE_SIMD=1` it panics instead (like `CHORUS_REQUIRE_GPU` for the GPU tests), so a CI
///   machine that must test the kernels cannot turn them into passes.
///
/// A compile-time `#[ignore]` cannot express this: the kernels are chosen at run time
/// (`is_x86_feature_detected!`), and the test binary is built for the baseline x86-64 target.
#[cfg(test)]
pub(crate) fn simd_or_skip(test: &str, fma: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    let has = std::arch::is_x86_feature_detected!("avx2") && (!fma || std::arch::is_x86_feature_detected!("fma"));
    #[cfg(not(target_arch = "x86_64"))]
    let has = false;
    if has {
        return true;
    }
    let what = if fma { "avx2+fma" } else { "avx2" };
    if std::env::var("CHORUS_REQUIRE_SIMD").is_ok_and(|v| v == "1") {
        panic!("{test}: CHORUS_REQUIRE_SIMD=1 but this processor lacks {what}: its AVX2 kernels cannot be tested");
    }
    let line =
        format!("SKIPPED: no {what}: {test}: its AVX2 kernel comparison did not run (CHORUS_REQUIRE_SIMD=1 fails)\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}

/// A uniform value in [-1, 1).
fn uniform(rng: &mut crate::sampling::Rng) -> f32 {
    rng.next_f64() as f32 * 2.0 - 1.0
}

/// Test and benchmark data (the kernel tests here, the device parity tests): `rows` rows of random `ty`
/// weights: random code bytes (every bit pattern is a valid code), with the f16 scale fields replaced by
/// finite, moderate values; float types get random values.
pub fn random_weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut crate::sampling::Rng) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        GgmlType::F32 => return (0..n).flat_map(|_| uniform(rng).to_le_bytes()).collect(),
        GgmlType::F16 => return (0..n).flat_map(|_| half::f16::from_f32(uniform(rng)).to_le_bytes()).collect(),
        GgmlType::BF16 => return (0..n).flat_map(|_| half::bf16::from_f32(uniform(rng)).to_le_bytes()).collect(),
        _ => {}
    }
    let mut data: Vec<u8> =
        (0..ty.bytes_for(n).expect("random_weights: whole blocks")).map(|_| rng.next_u64() as u8).collect();
    let fields: &[usize] = match ty {
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        _ => &[0],
    };
    for blk in data.chunks_exact_mut(ty.block_bytes()) {
        for &at in fields {
            let v = uniform(rng) * 0.05;
            blk[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    data
}
