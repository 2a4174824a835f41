//! An exact, uniform in-memory form for GGML-quantized matrices: every value is `a·q − b` with `q` an
//! `i8` and one `(a, b)` pair of f32 per group of 16 consecutive values in a row.
//!
//! All the block formats Chorus decodes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) have this shape
//! with ggml's own f32 arithmetic: Q4_K computes `(d·sc)·q − dmin·m`, Q6_K `(d·sc)·q` per 16 values,
//! the legacy formats `d·q (+ m)`. So [`QMatrix::value`] is bit-identical to [`crate::quant::dequantize`].
//! 4-bit types (Q4_0, Q4_1, Q4_K) keep their codes packed two per byte, 5-bit types (Q5_0, Q5_1, Q5_K)
//! add one high-bit mask per 16 values; Q8_0 and Q6_K hold one `i8` per weight. Decoding is memory-bound, so bytes per weight
//! set the CPU decode speed: 0.75–1.5 bytes here against f32's 4.

use crate::quant::{GgmlType, QK_K, legacy_header, q5_codes, q6k_quants, scale_min_k4};

/// Values per `(a, b)` group (Q6_K's scale granularity; a divisor of every block size).
pub const GROUP: usize = 16;

/// A row-major `rows × cols` matrix of `a·q − b` groups.
#[derive(Debug, Clone)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    q: Codes,
    ab: Vec<[f32; 2]>,
}

/// The integer codes of a matrix.
#[derive(Debug, Clone)]
enum Codes {
    /// One code per value.
    I8(Vec<i8>),
    /// 4- or 5-bit codes: byte `j` of a 16-value group holds the low 4 bits of value `j` in its low nibble
    /// and of value `j + 8` in its high nibble; with `high`, bit `j` of the group's `u16` is bit 4 of value
    /// `j`. The code is `(nibble | high bit << 4) − zero`.
    Packed { nib: Vec<u8>, high: Option<Vec<u16>>, zero: i8 },
}

impl Codes {
    /// Packs i8 codes that all lie in `[−zero, 2^bits − 1 − zero]` (`bits` 4 or 5).
    fn pack(q: &[i8], zero: i8, bits: u32) -> Self {
        let u = |v: i8| (v as i16 + zero as i16) as u8;
        let nib = q
            .chunks_exact(GROUP)
            .flat_map(|g| (0..GROUP / 2).map(move |j| (u(g[j]) & 15) | ((u(g[j + 8]) & 15) << 4)))
            .collect();
        let high = (bits == 5).then(|| {
            q.chunks_exact(GROUP)
                .map(|g| (0..GROUP).fold(0u16, |m, j| m | ((((u(g[j]) >> 4) & 1) as u16) << j)))
                .collect()
        });
        Codes::Packed { nib, high, zero }
    }

    /// Code of value `j` of group `g`.
    fn code(&self, g: usize, j: usize) -> i8 {
        match self {
            Codes::I8(q) => q[g * GROUP + j],
            Codes::Packed { nib, high, zero } => {
                let byte = nib[g * GROUP / 2 + j % (GROUP / 2)];
                let lo = if j < GROUP / 2 { byte & 15 } else { byte >> 4 };
                let hb = high.as_ref().map_or(0, |h| ((h[g] >> j) & 1) as u8);
                (lo | (hb << 4)) as i8 - zero
            }
        }
    }

    /// The stored codes of global group `g` before the zero offset: value = `a·(u − zero) − b`.
    #[inline(always)]
    fn raw(&self, g: usize) -> [i32; GROUP] {
        let mut u = [0i32; GROUP];
        match self {
            Codes::I8(q) => {
                for (o, &v) in u.iter_mut().zip(&q[g * GROUP..(g + 1) * GROUP]) {
                    *o = v as i32;
                }
            }
            Codes::Packed { nib, high, .. } => {
                let hb = high.as_ref().map_or(0, |h| h[g] as i32);
                for j in 0..GROUP / 2 {
                    let byte = nib[g * GROUP / 2 + j] as i32;
                    u[j] = (byte & 15) | ((hb >> j) & 1) << 4;
                    u[j + GROUP / 2] = (byte >> 4) | ((hb >> (j + GROUP / 2)) & 1) << 4;
                }
            }
        }
        u
    }

    /// The offset subtracted from stored codes (0 for byte codes).
    fn zero(&self) -> i8 {
        match self {
            Codes::I8(_) => 0,
            Codes::Packed { zero, .. } => *zero,
        }
    }

    fn unpack(&self) -> Vec<i8> {
        match self {
            Codes::I8(q) => q.clone(),
            Codes::Packed { nib, .. } => {
                let groups = nib.len() / (GROUP / 2);
                (0..groups).flat_map(|g| (0..GROUP).map(move |j| self.code(g, j))).collect()
            }
        }
    }

    /// Bits per code as stored (8, 5 or 4) and the offset: equal keys stack without widening.
    fn key(&self) -> (u32, i8) {
        match self {
            Codes::I8(_) => (8, 0),
            Codes::Packed { high: Some(_), zero, .. } => (5, *zero),
            Codes::Packed { high: None, zero, .. } => (4, *zero),
        }
    }
}

impl QMatrix {
    /// Converts GGML blocks (`rows × cols` values, row-major) exactly; `None` for types that are not
    /// integer-coded (F32, F16, BF16) or a `cols` that is not a whole number of blocks.
    pub fn from_ggml(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let be = ty.block_elems();
        // Q2_K / Q3_K have no QMatrix coding (their dot products live in `crate::ggml`).
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q2_K | GgmlType::Q3_K)
            || !cols.is_multiple_of(be)
        {
            return None;
        }
        if data.len() != rows * cols / be * ty.block_bytes() {
            return None;
        }
        let mut q = Vec::with_capacity(rows * cols);
        let mut ab = Vec::with_capacity(rows * cols / GROUP);
        for b in data.chunks_exact(ty.block_bytes()) {
            push_block(ty, b, &mut q, &mut ab);
        }
        let q = match ty {
            GgmlType::Q4_0 => Codes::pack(&q, 8, 4),
            GgmlType::Q4_1 | GgmlType::Q4_K => Codes::pack(&q, 0, 4),
            GgmlType::Q5_0 => Codes::pack(&q, 16, 5),
            GgmlType::Q5_1 | GgmlType::Q5_K => Codes::pack(&q, 0, 5),
            _ => Codes::I8(q),
        };
        Some(Self { rows, cols, q, ab })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// One value (reference accessor).
    pub fn value(&self, r: usize, c: usize) -> f32 {
        let i = r * self.cols + c;
        let [a, b] = self.ab[i / GROUP];
        a * self.q.code(i / GROUP, i % GROUP) as f32 - b
    }

    /// Keeps rows in the order given by `order` (row `i` of the result is row `order[i]`).
    pub fn permute_rows(&self, order: &[usize]) -> Self {
        let (c, g) = (self.cols, self.cols / GROUP);
        let mut ab = Vec::with_capacity(self.ab.len());
        for &r in order {
            ab.extend_from_slice(&self.ab[r * g..(r + 1) * g]);
        }
        let q = match &self.q {
            Codes::I8(q) => Codes::I8(order.iter().flat_map(|&r| q[r * c..(r + 1) * c].iter().copied()).collect()),
            Codes::Packed { nib, high, zero } => Codes::Packed {
                nib: order.iter().flat_map(|&r| nib[r * c / 2..(r + 1) * c / 2].iter().copied()).collect(),
                high: high
                    .as_ref()
                    .map(|h| order.iter().flat_map(|&r| h[r * g..(r + 1) * g].iter().copied()).collect()),
                zero: *zero,
            },
        };
        Self { rows: order.len(), cols: c, q, ab }
    }

    /// Stacks matrices with equal column counts on top of each other. Packed parts stay packed when they
    /// all share one code width and offset; otherwise every part is widened to `i8`.
    pub fn vstack(parts: Vec<QMatrix>) -> Option<Self> {
        let cols = parts.first()?.cols;
        if parts.iter().any(|p| p.cols != cols) {
            return None;
        }
        let key = parts[0].q.key();
        let rows = parts.iter().map(|p| p.rows).sum();
        let mut ab = Vec::new();
        let q = if key.0 != 8 && parts.iter().all(|p| p.q.key() == key) {
            let (mut nib_all, mut high_all) = (Vec::new(), Vec::new());
            for p in &parts {
                if let Codes::Packed { nib, high, .. } = &p.q {
                    nib_all.extend_from_slice(nib);
                    high_all.extend_from_slice(high.as_deref().unwrap_or(&[]));
                }
            }
            Codes::Packed { nib: nib_all, high: (key.0 == 5).then_some(high_all), zero: key.1 }
        } else {
            Codes::I8(parts.iter().flat_map(|p| p.q.unpack()).collect())
        };
        for p in parts {
            ab.extend(p.ab);
        }
        Some(Self { rows, cols, q, ab })
    }

    /// `out[r] = Σ_c W[r, c] · x[c]` for the rows `r0..r0 + out.len()`; `xs[g]` must hold the sum of
    /// `x` over group `g`. The per-lane accumulators let the compiler vectorise without reassociating.
    #[inline(always)]
    pub fn dot_rows(&self, r0: usize, x: &[f32], xs: &[f32], out: &mut [f32]) {
        let (c, g) = (self.cols, self.cols / GROUP);
        for (k, o) in out.iter_mut().enumerate() {
            let r = r0 + k;
            let ab = &self.ab[r * g..(r + 1) * g];
            let mut acc = [0f32; GROUP];
            let mut bsum = 0f32;
            match &self.q {
                Codes::I8(q) => {
                    let q = &q[r * c..(r + 1) * c];
                    for ((qg, xg), (&[a, b], &s)) in
                        q.chunks_exact(GROUP).zip(x.chunks_exact(GROUP)).zip(ab.iter().zip(xs))
                    {
                        for i in 0..GROUP {
                            acc[i] += (a * qg[i] as f32) * xg[i];
                        }
                        bsum += b * s;
                    }
                }
                Codes::Packed { nib, high, zero } => {
                    let q = &nib[r * c / 2..(r + 1) * c / 2];
                    const H: usize = GROUP / 2;
                    let z = *zero as f32;
                    for (gi, ((qg, xg), (&[a, b], &s))) in
                        q.chunks_exact(H).zip(x.chunks_exact(GROUP)).zip(ab.iter().zip(xs)).enumerate()
                    {
                        // Fixed-size views let the loop vectorise; the arithmetic is the i8 path's, so
                        // both forms give identical results.
                        let (Ok(qg), Ok(xg)) = (<&[u8; H]>::try_from(qg), <&[f32; GROUP]>::try_from(xg)) else {
                            continue;
                        };
                        let hb = high.as_ref().map_or(0, |h| h[r * g + gi]);
                        let mut codes = [0f32; GROUP];
                        for i in 0..H {
                            let (h0, h1) = (((hb >> i) & 1) as u8, ((hb >> (i + H)) & 1) as u8);
                            codes[i] = ((qg[i] & 15) | (h0 << 4)) as f32 - z;
                            codes[i + H] = ((qg[i] >> 4) | (h1 << 4)) as f32 - z;
                        }
                        for i in 0..GROUP {
                            acc[i] += (a * codes[i]) * xg[i];
                        }
                        bsum += b * s;
                    }
                }
            }
            *o = acc.iter().sum::<f32>() - bsum;
        }
    }

    /// [`Self::dot_rows`] with AVX2 intrinsics (the auto-vectorised nibble loop is slower than reading twice
    /// the bytes): [`Self::dot_rows_multi_avx2`] with one input row. Results are identical to
    /// [`Self::dot_rows`]: the same products and sums in the same order, without FMA contraction.
    ///
    /// # Safety
    /// The processor must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows_avx2(&self, r0: usize, x: &[f32], xs: &[f32], out: &mut [f32]) {
        // Byte codes: the inline loop compiled for AVX2 streams them fastest one row at a time. Packed
        // codes: the multi-row kernel with one row (one copy of the group decoding).
        if let Codes::I8(_) = &self.q {
            self.dot_rows(r0, x, xs, out);
            return;
        }
        // SAFETY: the caller guarantees the features this function and the callee are compiled for.
        unsafe { self.dot_rows_multi_avx2(r0, out.len(), &[x], &[xs], out) }
    }

    /// Rows of inputs that [`Self::dot_rows_multi_avx2`] takes at once.
    pub const MULTI: usize = 4;

    /// [`Self::dot_rows`] for up to [`Self::MULTI`] input rows at once: each weight group is decoded once
    /// and used for every row (batched decoding: prompt-defined experts run next to their base).
    /// `out` is `[xs.len()][n]`. Results are identical to [`Self::dot_rows`] row by row.
    ///
    /// # Safety
    /// The processor must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows_multi_avx2(&self, r0: usize, n: usize, xs: &[&[f32]], sums: &[&[f32]], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let m = xs.len().min(Self::MULTI);
        let (c, g) = (self.cols, self.cols / GROUP);
        let mask = _mm_set1_epi8(0x0f);
        let bits_lo = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let bits_hi = _mm256_setr_epi32(256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
        let sixteen = _mm256_set1_epi32(16);
        for k in 0..n {
            let r = r0 + k;
            let ab = &self.ab[r * g..(r + 1) * g];
            let mut acc0 = [_mm256_setzero_ps(); Self::MULTI];
            let mut acc1 = [_mm256_setzero_ps(); Self::MULTI];
            let mut bsum = [0f32; Self::MULTI];
            for (gi, &[a, b]) in ab.iter().enumerate() {
                // The group's codes as floats: values 0..8 and 8..16.
                let (lo, hi) = match &self.q {
                    Codes::I8(q) => {
                        // SAFETY: the row holds `c` codes; group `gi` starts 16·gi into it.
                        let v = unsafe { _mm_loadu_si128(q.as_ptr().add(r * c + gi * GROUP) as *const __m128i) };
                        (
                            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)),
                            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))),
                        )
                    }
                    Codes::Packed { nib, high, zero } => {
                        // SAFETY: 8 bytes of group `gi` of row `r`.
                        let codes =
                            unsafe { _mm_loadl_epi64(nib.as_ptr().add(r * c / 2 + gi * GROUP / 2) as *const __m128i) };
                        let mut lo_i = _mm256_cvtepu8_epi32(_mm_and_si128(codes, mask));
                        let mut hi_i = _mm256_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(codes, 4), mask));
                        if let Some(h) = high {
                            let hb = _mm256_set1_epi32(h[r * g + gi] as i32);
                            let on_lo = _mm256_cmpeq_epi32(_mm256_and_si256(hb, bits_lo), bits_lo);
                            let on_hi = _mm256_cmpeq_epi32(_mm256_and_si256(hb, bits_hi), bits_hi);
                            lo_i = _mm256_add_epi32(lo_i, _mm256_and_si256(on_lo, sixteen));
                            hi_i = _mm256_add_epi32(hi_i, _mm256_and_si256(on_hi, sixteen));
                        }
                        let z = _mm256_set1_ps(*zero as f32);
                        (_mm256_sub_ps(_mm256_cvtepi32_ps(lo_i), z), _mm256_sub_ps(_mm256_cvtepi32_ps(hi_i), z))
                    }
                };
                let av = _mm256_set1_ps(a);
                let (wlo, whi) = (_mm256_mul_ps(av, lo), _mm256_mul_ps(av, hi));
                for i in 0..m {
                    // SAFETY: every input row holds `c` floats; group `gi` is 16 of them.
                    let (x0, x1) = unsafe {
                        let p = xs[i].as_ptr().add(gi * GROUP);
                        (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                    };
                    acc0[i] = _mm256_add_ps(acc0[i], _mm256_mul_ps(wlo, x0));
                    acc1[i] = _mm256_add_ps(acc1[i], _mm256_mul_ps(whi, x1));
                    bsum[i] += b * sums[i][gi];
                }
            }
            for i in 0..m {
                let mut acc = [0f32; GROUP];
                // SAFETY: `acc` holds 16 floats.
                unsafe {
                    _mm256_storeu_ps(acc.as_mut_ptr(), acc0[i]);
                    _mm256_storeu_ps(acc.as_mut_ptr().add(8), acc1[i]);
                }
                out[i * n + k] = acc.iter().sum::<f32>() - bsum[i];
            }
        }
    }

    /// `out[r] ≈ Σ_c W[r, c] · x[c]` for the rows `r0..r0 + out.len()` with the input quantized to
    /// [`Q8Row`]: integer products in groups of four, each lane scaled by `a·d` in f32 (llama.cpp's
    /// scheme for quantized weights). The portable reference of [`Self::dot_rows_q8_avx2`].
    pub fn dot_rows_q8(&self, r0: usize, x: &Q8Row, out: &mut [f32]) {
        let g = self.cols / GROUP;
        let z = self.q.zero() as f32;
        for (k, o) in out.iter_mut().enumerate() {
            let base = (r0 + k) * g;
            let (mut acc, mut bl) = ([0f32; 8], [0f32; 8]);
            for gi in 0..g {
                self.q8_group(base, gi, x, &mut acc);
            }
            self.q8_bias(base, 0, x, &mut bl);
            *o = q8_finish(&acc, &bl, z);
        }
    }

    /// Group `gi` of the row starting at group `base` into the lanes of `acc` (lanes 0–3 for even
    /// groups, 4–7 for odd ones, as the AVX2 kernel lays out a pair of groups).
    #[inline(always)]
    fn q8_group(&self, base: usize, gi: usize, x: &Q8Row, acc: &mut [f32; 8]) {
        let u = self.q.raw(base + gi);
        let a = self.ab[base + gi][0];
        for l in 0..LANES_PER_GROUP {
            let mut s = 0i32;
            for (p, q) in x.q.iter().enumerate() {
                let xq = &q[gi * GROUP..(gi + 1) * GROUP];
                let mut sp = 0i32;
                for j in l * LANE..(l + 1) * LANE {
                    sp += u[j] * xq[j] as i32;
                }
                s += if p == 0 && x.q.len() == 2 { PLANE_RATIO * sp } else { sp };
            }
            acc[(gi % 2) * LANES_PER_GROUP + l] += (a * x.d4[gi * LANES_PER_GROUP + l]) * s as f32;
        }
    }

    /// The `a·s` and `b·s` lanes of groups `from..` of one row (group `gi` in lanes `2·(gi mod 4)` and
    /// `2·(gi mod 4) + 1`, as the AVX2 kernel reads four `(a, b)` pairs at once).
    #[inline(always)]
    fn q8_bias(&self, base: usize, from: usize, x: &Q8Row, bl: &mut [f32; 8]) {
        for gi in from..self.cols / GROUP {
            let [a, b] = self.ab[base + gi];
            let s = x.s2[2 * gi];
            bl[2 * (gi % 4)] += a * s;
            bl[2 * (gi % 4) + 1] += b * s;
        }
    }

    /// [`Self::dot_rows_q8`] for up to [`Self::MULTI`] input rows at once with AVX2 (`maddubs`: unsigned
    /// codes × signed inputs, signs moved onto the inputs for byte codes). `out` is `[xs.len()][n]`.
    /// Results are identical to [`Self::dot_rows_q8`]: integer sums are exact and the f32 steps are the
    /// same operations in the same order, without FMA contraction.
    ///
    /// # Safety
    /// The processor must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_rows_q8_avx2(&self, r0: usize, n: usize, xs: &[&Q8Row], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let m = xs.len().min(Self::MULTI);
        let g = self.cols / GROUP;
        let z = self.q.zero() as f32;
        let mask = _mm_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let ratio = _mm256_set1_epi16(PLANE_RATIO as i16);
        let pick_a = _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2);
        // Bit j of a group's u16 high-bit mask is value j's fifth bit: spread bytes 0/1 (group 0) over
        // the low lane and 2/3 (group 1) over the high lane, then test one bit per byte.
        let spread = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let bit = _mm256_setr_epi8(
            1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16,
            32, 64, -128,
        );
        let sixteen = _mm256_set1_epi8(16);
        let ab = self.ab.as_ptr() as *const f32;
        for k in 0..n {
            let base = (r0 + k) * g;
            let mut acc = [_mm256_setzero_ps(); Self::MULTI];
            for gi in (0..g - g % 2).step_by(2) {
                // Two groups' codes as bytes, in value order: group gi in the low lane.
                let (w, signs) = match &self.q {
                    Codes::I8(q) => {
                        // SAFETY: groups gi and gi + 1 of this row are 32 codes inside `q`.
                        let v = unsafe { _mm256_loadu_si256(q.as_ptr().add((base + gi) * GROUP) as *const __m256i) };
                        (_mm256_abs_epi8(v), Some(v))
                    }
                    Codes::Packed { nib, high, .. } => {
                        // SAFETY: groups gi and gi + 1 of this row are 16 bytes inside `nib`.
                        let b = unsafe { _mm_loadu_si128(nib.as_ptr().add((base + gi) * GROUP / 2) as *const __m128i) };
                        let lo = _mm_and_si128(b, mask);
                        let hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
                        let mut w = _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi));
                        if let Some(h) = high {
                            let hb = h[base + gi] as u32 | (h[base + gi + 1] as u32) << 16;
                            let v = _mm256_shuffle_epi8(_mm256_set1_epi32(hb as i32), spread);
                            let on = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
                            w = _mm256_or_si256(w, _mm256_and_si256(on, sixteen));
                        }
                        (w, None)
                    }
                };
                // SAFETY: (a, b) pairs of groups gi and gi + 1 are four floats inside `ab`.
                let pair = unsafe { _mm_loadu_ps(ab.add(2 * (base + gi))) };
                let av = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(pair), pick_a);
                for i in 0..m {
                    let x = xs[i];
                    let plane = |q: &[i8]| {
                        // SAFETY: every plane holds `cols` codes; groups gi and gi + 1 are 32 of them.
                        let xv = unsafe { _mm256_loadu_si256(q.as_ptr().add(gi * GROUP) as *const __m256i) };
                        let xv = match signs {
                            Some(s) => _mm256_sign_epi8(xv, s),
                            None => xv,
                        };
                        _mm256_maddubs_epi16(w, xv)
                    };
                    let sums = match x.q.as_slice() {
                        [q] => _mm256_madd_epi16(plane(q), ones),
                        [q, q2] => {
                            _mm256_add_epi32(_mm256_madd_epi16(plane(q), ratio), _mm256_madd_epi16(plane(q2), ones))
                        }
                        _ => continue,
                    };
                    // SAFETY: 4 units per group.
                    let dv = unsafe { _mm256_loadu_ps(x.d4.as_ptr().add(gi * LANES_PER_GROUP)) };
                    let scale = _mm256_mul_ps(av, dv);
                    acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(scale, _mm256_cvtepi32_ps(sums)));
                }
            }
            for i in 0..m {
                let x = xs[i];
                let (mut lanes, mut bl) = ([0f32; 8], [0f32; 8]);
                // SAFETY: both arrays hold 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[i]) };
                if g % 2 == 1 {
                    self.q8_group(base, g - 1, x, &mut lanes);
                }
                let mut bacc = _mm256_setzero_ps();
                for gi in (0..g - g % 4).step_by(4) {
                    // SAFETY: four (a, b) pairs and four doubled sums from group gi on.
                    let (v, s) = unsafe {
                        (_mm256_loadu_ps(ab.add(2 * (base + gi))), _mm256_loadu_ps(x.s2.as_ptr().add(2 * gi)))
                    };
                    bacc = _mm256_add_ps(bacc, _mm256_mul_ps(v, s));
                }
                // SAFETY: as above.
                unsafe { _mm256_storeu_ps(bl.as_mut_ptr(), bacc) };
                self.q8_bias(base, g - g % 4, x, &mut bl);
                out[i * n + k] = q8_finish(&lanes, &bl, z);
            }
        }
    }

    /// Group sums of one input row, as [`Self::dot_rows`] needs them.
    pub fn group_sums(x: &[f32]) -> Vec<f32> {
        x.chunks_exact(GROUP).map(|g| g.iter().sum()).collect()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let codes = match &self.q {
            Codes::I8(q) => q.len(),
            Codes::Packed { nib, high, .. } => nib.len() + high.as_ref().map_or(0, |h| h.len() * 2),
        };
        codes + self.ab.len() * 8
    }

    /// Bits per stored code: 4 (Q4_0, Q4_1, Q4_K), 5 (Q5_0, Q5_1, Q5_K) or 8 (Q8_0, Q6_K).
    pub fn code_bits(&self) -> u32 {
        self.q.key().0
    }

    /// Whether the codes are packed below a byte per value.
    pub fn is_packed(&self) -> bool {
        self.code_bits() < 8
    }
}

/// One input row as the integer kernels ([`QMatrix::dot_rows_q8`]) read it: per 16-value group
/// `x ≈ d·q` with `q` an `i8` in ±127 and `d = max|x| / 127` (ggml's Q8 activations, at a finer group),
/// optionally plus a second plane `q₂` in ±64 for the remainder at a fixed 1/128 of the step, so that
/// `x ≈ (d/128)·(128·q + q₂)` (about 15 bits per value: one large activation in a group no longer wipes
/// out its neighbours), and the group's exact f32 sum for the `b` term.
#[derive(Debug, Clone)]
pub struct Q8Row {
    /// Codes per plane.
    q: Vec<Vec<i8>>,
    /// Each group's unit (`d`, or `d/128` with two planes) four times: one per lane of four products.
    d4: Vec<f32>,
    /// Each group's exact sum twice: one for the `a·z` lane, one for the `b` lane.
    s2: Vec<f32>,
}

/// Weight of the first plane relative to the second.
const PLANE_RATIO: i32 = 128;

impl Q8Row {
    /// Quantizes `x` (a whole number of groups; a trailing partial group is ignored) into `planes`
    /// (1 or 2) planes.
    pub fn new(x: &[f32], planes: usize) -> Self {
        let groups = x.len() / GROUP;
        let planes = planes.clamp(1, 2);
        let mut q = vec![Vec::with_capacity(groups * GROUP); planes];
        let mut d4 = Vec::with_capacity(groups * LANES_PER_GROUP);
        let mut s2 = Vec::with_capacity(groups * 2);
        for g in x.chunks_exact(GROUP) {
            let amax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            // A zero (or non-finite) scale quantizes to zeros; the exact sum still carries inf/NaN.
            let id = if d > 0.0 && d.is_finite() { 1.0 / d } else { 0.0 };
            for &v in g {
                let c = (v * id).round().clamp(-127.0, 127.0);
                q[0].push(c as i8);
                if planes == 2 {
                    // |v·id − c| ≤ 1/2, so the remainder in 1/128 steps lies in ±64.
                    let r = ((v * id - c) * PLANE_RATIO as f32).round().clamp(-64.0, 64.0);
                    q[1].push(r as i8);
                }
            }
            let unit = if planes == 2 { d / PLANE_RATIO as f32 } else { d };
            d4.extend([unit; LANES_PER_GROUP]);
            let s: f32 = g.iter().sum();
            s2.extend([s, s]);
        }
        Self { q, d4, s2 }
    }
}

/// Products per f32 lane in the integer kernels (one `madd` lane), and lanes per group.
const LANE: usize = 4;
const LANES_PER_GROUP: usize = GROUP / LANE;

/// The final combination shared by the portable and AVX2 integer kernels (so they agree bit for bit):
/// `acc` holds the `a·d·Σq·x` lanes; `bl` holds `a·s` in even and `b·s` in odd lanes.
#[inline(always)]
fn q8_finish(acc: &[f32; 8], bl: &[f32; 8], z: f32) -> f32 {
    let mut dot = 0f32;
    for v in acc {
        dot += v;
    }
    let (mut a_s, mut b_s) = (0f32, 0f32);
    for l in 0..4 {
        a_s += bl[2 * l];
        b_s += bl[2 * l + 1];
    }
    // value = a·(u − z) − b, so Σ value·x = Σ a·u·x − (Σ b·s + z·Σ a·s).
    dot - (b_s + z * a_s)
}

fn h(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Appends one block's values as `q` and its groups' `(a, b)`.
fn push_block(ty: GgmlType, b: &[u8], q: &mut Vec<i8>, ab: &mut Vec<[f32; 2]>) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (d, m, off) = legacy_header(ty, b);
            let qs = &b[off..off + 16];
            let bias = if ty == GgmlType::Q4_0 { 8 } else { 0 };
            q.extend(qs.iter().map(|&v| ((v & 0x0f) as i32 - bias) as i8));
            q.extend(qs.iter().map(|&v| ((v >> 4) as i32 - bias) as i8));
            ab.extend([[d, -m]; 2]);
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (d, m, _) = legacy_header(ty, b);
            q.extend_from_slice(&q5_codes(ty, b));
            ab.extend([[d, -m]; 2]);
        }
        GgmlType::Q8_0 => {
            q.extend(b[2..34].iter().map(|&v| v as i8));
            ab.extend([[h(b, 0), 0.0]; 2]);
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (d, dmin) = (h(b, 0), h(b, 2));
            let scales = &b[4..16];
            let (qh, ql) = if ty == GgmlType::Q5_K { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
            for pair in 0..4 {
                let l = &ql[pair * 32..pair * 32 + 32];
                for (half, shift) in [(0usize, 0u32), (1, 4)] {
                    let (sc, mn) = scale_min_k4(pair * 2 + half, scales);
                    let (a, bb) = (d * sc as f32, dmin * mn as f32);
                    let bit = 1u8 << (pair * 2 + half);
                    for i in 0..32 {
                        let hi = qh.map_or(0, |qh| if qh[i] & bit != 0 { 16 } else { 0 });
                        q.push((((l[i] >> shift) & 0x0f) + hi) as i8);
                    }
                    ab.extend([[a, bb]; 2]);
                }
            }
        }
        GgmlType::Q6_K => {
            let d = h(b, 208);
            let mut vals = [0i8; QK_K];
            q6k_quants(b, &mut vals);
            q.extend_from_slice(&vals);
            // Scale index of value v is v / 16, one scale per group.
            for g in 0..16 {
                ab.push([d * (b[192 + g] as i8) as f32, 0.0]);
            }
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q2_K | GgmlType::Q3_K => {
            unreachable!("rejected by from_ggml")
        }
    }
}

/// Test support, shared by the AVX2 tests here, in `fusion` and in `chorus-models`' `qlinear`: whether this
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
#[doc(hidden)]
pub fn simd_or_skip(test: &str, fma: bool) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;
    use crate::sampling::Rng;

    /// Every integer-coded GGML type.
    const INTEGER_TYPES: [GgmlType; 8] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// Random blocks of `ty` (`rows × cols` values) with finite, moderate f16 scales, as in real files.
    fn random_blocks(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
        let n = rows * cols / ty.block_elems();
        let mut data: Vec<u8> = (0..n * ty.block_bytes()).map(|_| rng.next_u64() as u8).collect();
        let scale_at: &[usize] = match ty {
            GgmlType::Q6_K => &[208],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            _ => &[0],
        };
        for blk in data.chunks_exact_mut(ty.block_bytes()) {
            for &at in scale_at {
                let s = half::f16::from_f32((rng.next_f64() as f32 - 0.5) * 0.1);
                blk[at..at + 2].copy_from_slice(&s.to_le_bytes());
            }
        }
        data
    }

    fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> QMatrix {
        QMatrix::from_ggml(ty, &random_blocks(ty, rows, cols, rng), rows, cols).unwrap()
    }

    /// The integer kernels: AVX2 (one to four input rows) equals the portable loop bit for bit, and both
    /// stay within the activation rounding bound (half a step, max|x|/254, per value) of the exact product.
    #[test]
    fn q8_kernels_agree_and_stay_within_the_rounding_bound() {
        // Only the x86-64 blocks below read it; elsewhere the call just reports the skip.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
        let simd = simd_or_skip("qmatrix::tests::q8_kernels_agree_and_stay_within_the_rounding_bound", false);
        let mut rng = Rng::new(21);
        for ty in INTEGER_TYPES {
            // 96 columns leave a partial quad of groups (6 groups) for the bias lanes.
            let cols = if ty.block_elems() == 32 { 96 } else { QK_K };
            let rows = 7;
            let m = random_matrix(ty, rows, cols, &mut rng);
            let xs: Vec<Vec<f32>> =
                (0..4).map(|_| (0..cols).map(|_| (rng.next_f64() as f32 - 0.5) * 4.0).collect()).collect();
            for planes in [1, 2] {
                let q8: Vec<Q8Row> = xs.iter().map(|x| Q8Row::new(x, planes)).collect();
                let mut portable = vec![vec![0f32; rows]; 4];
                for (i, x) in q8.iter().enumerate() {
                    m.dot_rows_q8(0, x, &mut portable[i]);
                    let xmax = xs[i].iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                    for r in 0..rows {
                        let exact: f64 = (0..cols).map(|c| m.value(r, c) as f64 * xs[i][c] as f64).sum();
                        let wabs: f64 = (0..cols).map(|c| (m.value(r, c) as f64).abs()).sum();
                        // Half a step per value; the second plane's step is at most 1/254 of the first's.
                        let step = if planes == 1 { 254.0 } else { 254.0 * 254.0 };
                        let bound = wabs * xmax / step * 1.001 + 1e-5;
                        let err = (portable[i][r] as f64 - exact).abs();
                        assert!(err <= bound, "{} row {r}: {} vs {exact} (bound {bound})", ty.name(), portable[i][r]);
                    }
                }
                #[cfg(target_arch = "x86_64")]
                if simd {
                    for k in 1..=4 {
                        let rows_in: Vec<&Q8Row> = q8[..k].iter().collect();
                        let mut out = vec![0f32; k * (rows - 1)];
                        // SAFETY: the feature was just detected.
                        unsafe { m.dot_rows_q8_avx2(1, rows - 1, &rows_in, &mut out) };
                        for i in 0..k {
                            assert_eq!(
                                &out[i * (rows - 1)..(i + 1) * (rows - 1)],
                                &portable[i][1..],
                                "{} k={k} i={i}",
                                ty.name()
                            );
                        }
                    }
                }
            }
        }
    }

    /// A zero input group and a zero matrix give exact zeros; an infinite input reaches the output.
    #[test]
    fn q8_rows_handle_zero_and_non_finite_groups() {
        let mut rng = Rng::new(5);
        let m = random_matrix(GgmlType::Q8_0, 2, 64, &mut rng);
        let mut out = vec![1f32; 2];
        m.dot_rows_q8(0, &Q8Row::new(&[0.0; 64], 2), &mut out);
        assert_eq!(out, [0.0, 0.0]);
        let mut x = vec![0.5f32; 64];
        x[3] = f32::INFINITY;
        m.dot_rows_q8(0, &Q8Row::new(&x, 2), &mut out);
        assert!(out.iter().all(|v| !v.is_finite()), "{out:?}");
    }

    /// Random blocks of every integer-coded type: a·q − b is bit-identical to ggml's dequantization.
    #[test]
    fn values_are_bit_identical_to_dequantize() {
        let mut rng = Rng::new(9);
        for ty in INTEGER_TYPES {
            let (rows, cols) = (3, 2 * QK_K);
            let data = random_blocks(ty, rows, cols, &mut rng);
            let want = dequantize(ty, &data, rows * cols, "t").unwrap();
            let m = QMatrix::from_ggml(ty, &data, rows, cols).unwrap();
            for r in 0..rows {
                for c in 0..cols {
                    // `==`, not bits: a·0 − (−0) is +0 where ggml may give −0.
                    assert_eq!(m.value(r, c), want[r * cols + c], "{} [{r},{c}]", ty.name());
                }
            }
            // And the fused dot product equals the dequantize-then-dot reference.
            let x: Vec<f32> = (0..cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let xs = QMatrix::group_sums(&x);
            let mut out = vec![0f32; rows];
            m.dot_rows(0, &x, &xs, &mut out);
            for r in 0..rows {
                let exact: f64 = (0..cols).map(|c| want[r * cols + c] as f64 * x[c] as f64).sum();
                assert!(
                    (out[r] as f64 - exact).abs() <= 1e-4 * exact.abs().max(1.0),
                    "{} row {r}: {} vs {exact}",
                    ty.name(),
                    out[r]
                );
            }
        }
    }

    /// Packed and widened forms agree value for value and in the dot product, through vstack (mixed
    /// types widen, equal offsets stay packed) and row permutation.
    #[test]
    fn packed_codes_survive_stacking_and_permutation() {
        // Only the x86-64 blocks below read it; elsewhere the call just reports the skip.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
        let simd = simd_or_skip("qmatrix::tests::packed_codes_survive_stacking_and_permutation", true);
        let mut rng = Rng::new(3);
        let mk = |ty: GgmlType, rows: usize, rng: &mut Rng| {
            let cols = QK_K;
            let mut data: Vec<u8> =
                (0..rows * cols / ty.block_elems() * ty.block_bytes()).map(|_| rng.next_u64() as u8).collect();
            for blk in data.chunks_exact_mut(ty.block_bytes()) {
                let s = half::f16::from_f32(0.01);
                blk[0..2].copy_from_slice(&s.to_le_bytes());
                blk[2..4].copy_from_slice(&s.to_le_bytes());
                if ty == GgmlType::Q6_K {
                    blk[208..210].copy_from_slice(&s.to_le_bytes());
                }
            }
            QMatrix::from_ggml(ty, &data, rows, cols).unwrap()
        };
        let a = mk(GgmlType::Q4_K, 3, &mut rng);
        let b = mk(GgmlType::Q4_K, 2, &mut rng);
        let c = mk(GgmlType::Q6_K, 2, &mut rng);
        let d = mk(GgmlType::Q4_0, 2, &mut rng);
        assert!(a.is_packed() && d.is_packed() && !c.is_packed());
        for ty in [GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q5_K] {
            let p = mk(ty, 3, &mut rng);
            let p2 = mk(ty, 2, &mut rng);
            assert_eq!(p.code_bits(), 5, "{}", ty.name());
            let st = QMatrix::vstack(vec![p.clone(), p2.clone()]).unwrap();
            assert_eq!(st.code_bits(), 5);
            let wide = QMatrix::vstack(vec![p.clone(), c.clone()]).unwrap();
            assert_eq!(wide.code_bits(), 8);
            for col in 0..QK_K {
                assert_eq!(st.value(4, col), p2.value(1, col));
                assert_eq!(wide.value(1, col), p.value(1, col));
            }
            let x: Vec<f32> = (0..QK_K).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let xs = QMatrix::group_sums(&x);
            let (mut o1, mut o2) = (vec![0f32; 3], vec![0f32; 3]);
            p.dot_rows(0, &x, &xs, &mut o1);
            wide.dot_rows(0, &x, &xs, &mut o2);
            assert_eq!(o1, o2, "{}: packed and i8 dot products are identical", ty.name());
            #[cfg(target_arch = "x86_64")]
            if simd {
                let mut o3 = vec![0f32; 3];
                // SAFETY: the features were just detected.
                unsafe { p.dot_rows_avx2(0, &x, &xs, &mut o3) };
                assert_eq!(o1, o3, "{}: the AVX2 kernel equals the portable loop", ty.name());
            }
            #[cfg(target_arch = "x86_64")]
            if simd {
                for mat in [&p, &wide] {
                    let x2: Vec<f32> = (0..QK_K).map(|_| rng.next_f64() as f32 - 0.5).collect();
                    let xs2 = QMatrix::group_sums(&x2);
                    let mut multi = vec![0f32; 2 * 3];
                    // SAFETY: the features were just detected.
                    unsafe { mat.dot_rows_multi_avx2(0, 3, &[&x, &x2], &[&xs, &xs2], &mut multi) };
                    let (mut s1, mut s2) = (vec![0f32; 3], vec![0f32; 3]);
                    mat.dot_rows(0, &x, &xs, &mut s1);
                    mat.dot_rows(0, &x2, &xs2, &mut s2);
                    assert_eq!(&multi[..3], &s1[..], "{}: multi-row kernel, row 0", ty.name());
                    assert_eq!(&multi[3..], &s2[..], "{}: multi-row kernel, row 1", ty.name());
                }
            }
            let perm = st.permute_rows(&[4, 1]);
            for col in 0..QK_K {
                assert_eq!(perm.value(0, col), p2.value(1, col));
                assert_eq!(perm.value(1, col), p.value(1, col));
            }
        }
        let same = QMatrix::vstack(vec![a.clone(), b.clone()]).unwrap();
        assert!(same.is_packed());
        let mixed = QMatrix::vstack(vec![a.clone(), c.clone(), d.clone()]).unwrap();
        assert!(!mixed.is_packed());
        let parts = [&a, &c, &d];
        let mut r = 0;
        for p in parts {
            for pr in 0..p.rows() {
                for col in 0..p.cols() {
                    assert_eq!(mixed.value(r, col), p.value(pr, col));
                }
                r += 1;
            }
        }
        let x: Vec<f32> = (0..QK_K).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let xs = QMatrix::group_sums(&x);
        let (mut o1, mut o2) = (vec![0f32; 3], vec![0f32; 3]);
        same.dot_rows(0, &x, &xs, &mut o1);
        QMatrix::vstack(vec![a.clone(), c.clone()]).unwrap().dot_rows(0, &x, &xs, &mut o2);
        assert_eq!(o1, o2, "packed and i8 dot products are identical");
        #[cfg(target_arch = "x86_64")]
        if simd {
            let mut o3 = vec![0f32; 3];
            // SAFETY: the features were just detected.
            unsafe { same.dot_rows_avx2(0, &x, &xs, &mut o3) };
            assert_eq!(o1, o3, "the AVX2 nibble kernel equals the portable loop");
        }
        let p = same.permute_rows(&[4, 0, 2]);
        for col in 0..QK_K {
            assert_eq!(p.value(0, col), b.value(1, col));
            assert_eq!(p.value(2, col), a.value(2, col));
        }
    }

    #[test]
    fn float_types_are_not_converted() {
        assert!(QMatrix::from_ggml(GgmlType::F16, &[0u8; 64], 1, 32).is_none());
    }
}
