//! Tests of the dot-product kernels: every variant against the portable one, the portable one against an
//! f64 reference over the dequantized operands (which checks the integer algebra, mins and offsets
//! included), and activation quantization.

use super::types::dequantize;
use super::*;
use crate::sampling::Rng;
// Under wasm32 these tests run in Node through wasm-bindgen-test-runner (`scripts/test`), where
// `Kernel::variants` holds the simd128 kernels.
#[cfg(target_family = "wasm")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const ALL: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Column counts exercised per type: 896 (Qwen2.5 0.5B's hidden size) only where it is whole blocks.
fn col_sizes(ty: GgmlType) -> Vec<usize> {
    let mut v = vec![256, 512, 4864];
    if ty.block_elems() <= QK {
        v.push(896);
    }
    if ty.block_elems() == 1 {
        // Float rows need not be a multiple of the SIMD width: exercise the scalar tails.
        v.extend([7, 100, 1001]);
    }
    v
}

fn uniform(rng: &mut Rng) -> f32 {
    rng.next_f64() as f32 * 2.0 - 1.0
}

/// Three activation rows: Gaussian-ish values; the same with all-zero blocks (a whole 256 and a 32); and
/// a row of small values with outliers of ±1e4.
fn activations(cols: usize, rng: &mut Rng) -> Vec<f32> {
    let normal = |rng: &mut Rng| (0..4).map(|_| uniform(rng)).sum::<f32>() * 0.8;
    let mut x: Vec<f32> = (0..cols).map(|_| normal(rng)).collect();
    let mut zeros: Vec<f32> = (0..cols).map(|_| normal(rng)).collect();
    for (i, v) in zeros.iter_mut().enumerate() {
        if i < 256 || (288..320).contains(&i) {
            *v = 0.0;
        }
    }
    let mut outl: Vec<f32> = (0..cols).map(|_| normal(rng) * 1e-2).collect();
    for (k, i) in (0..cols).step_by(37).enumerate() {
        outl[i] = if k % 2 == 0 { 1e4 } else { -1e4 };
    }
    x.extend(zeros);
    x.extend(outl);
    x
}

/// Activation row `i`, dequantized (d·q): exactly the values the integer kernels multiply.
fn dequantized_act(a: &Acts, i: usize) -> Vec<f32> {
    let c = a.cols();
    match a.format() {
        ActFormat::F32 => a.f32_row(i).to_vec(),
        ActFormat::Q8_0 => {
            let r = a.q8_0_row(i);
            (0..c).map(|j| r.d[j / QK] * r.q[j] as f32).collect()
        }
        ActFormat::Q8K => {
            let r = a.q8k_row(i);
            (0..c).map(|j| r.d[j / QK_K] * r.q[j] as f32).collect()
        }
    }
}

/// Σ w·x in f64 and Σ |w·x| (the scale of the rounding error of any f32 evaluation).
fn ref_dot(w: &[f32], x: &[f32]) -> (f64, f64) {
    w.iter().zip(x).fold((0.0, 0.0), |(s, a), (&w, &x)| {
        let p = w as f64 * x as f64;
        (s + p, a + p.abs())
    })
}

fn dequantized_rows(ty: GgmlType, w: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let rb = row_bytes(ty, cols).unwrap();
    let mut out = vec![0f32; rows * cols];
    for (wr, o) in w.chunks_exact(rb).zip(out.chunks_exact_mut(cols)) {
        dequantize_row(ty, wr, o);
    }
    out
}

#[test]
fn act_formats_and_row_bytes() {
    for ty in ALL {
        let f = act_format(ty);
        assert_eq!(Kernel::portable(ty).act_format(), f);
        assert_eq!(f.block_elems() == 1, ty.block_elems() == 1, "{}", ty.name());
        assert_eq!(row_bytes(ty, 4864), Some(4864 / ty.block_elems() * ty.block_bytes()));
    }
    assert_eq!(act_format(GgmlType::Q5_0), ActFormat::Q8_0);
    assert_eq!(act_format(GgmlType::Q2_K), ActFormat::Q8K);
    assert_eq!(row_bytes(GgmlType::Q4_K, 896), None);
    assert_eq!(row_bytes(GgmlType::Q8_0, 896), Some(28 * 34));
    assert_eq!(row_bytes(GgmlType::Q2_K, 256), Some(84));
    assert_eq!(row_bytes(GgmlType::Q3_K, 512), Some(220));
    assert_eq!(row_bytes(GgmlType::BF16, 3), Some(6));
}

#[test]
fn every_variant_matches_portable() {
    let simd = crate::ggml::simd_or_skip("ggml::every_variant_matches_portable", true);
    let mut rng = Rng::new(11);
    let mut acts = Acts::new();
    // The AVX-512 kernels are compared only on a CPU that has the set; say so where it does not (the
    // AVX2 ones are what CHORUS_REQUIRE_SIMD=1 demands).
    let avx512 = Kernel::cpu_has_avx512();
    if !avx512 {
        eprintln!(
            "NOTE: no AVX-512 F/BW/VL/VNNI here: ggml::every_variant_matches_portable compares the avx2 kernels only"
        );
    }
    for ty in ALL {
        let variants = Kernel::variants(ty);
        assert_eq!(variants[0].0, "portable");
        if simd && !matches!(ty, GgmlType::Q2_K | GgmlType::Q3_K) {
            assert!(variants.iter().any(|(n, _)| *n == "avx2"), "{} has no avx2 variant", ty.name());
        }
        if avx512 && (ty.block_elems() == QK || matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K)) {
            assert!(variants.iter().any(|(n, _)| *n == "avx512"), "{} has no avx512 variant", ty.name());
        }
        #[cfg(target_arch = "wasm32")]
        if ty.block_elems() == QK || matches!(ty, GgmlType::F32 | GgmlType::BF16 | GgmlType::Q4_K | GgmlType::Q6_K) {
            assert!(variants.iter().any(|(n, _)| *n == "simd128"), "{} has no simd128 variant", ty.name());
        }
        for cols in col_sizes(ty) {
            let rows = 5;
            let w = random_weights(ty, rows, cols, &mut rng);
            let wf = dequantized_rows(ty, &w, rows, cols);
            let x = activations(cols, &mut rng);
            acts.quantize(act_format(ty), &x, 3, cols).unwrap();
            for i in 0..3 {
                let xd = dequantized_act(&acts, i);
                let mut want = vec![0f32; rows];
                Kernel::portable(ty).dot_rows(&w, &acts, i, &mut want);
                for (name, k) in &variants {
                    assert_eq!(k.weight_type(), ty);
                    assert_eq!(k.name(), *name);
                    let mut got = vec![f32::NAN; rows];
                    k.dot_rows(&w, &acts, i, &mut got);
                    for r in 0..rows {
                        let (_, mag) = ref_dot(&wf[r * cols..(r + 1) * cols], &xd);
                        let tol = 1e-4 * mag + 1e-5;
                        assert!(
                            ((got[r] - want[r]) as f64).abs() <= tol,
                            "{} {name} cols {cols} act row {i} row {r}: {} vs portable {} (tol {tol})",
                            ty.name(),
                            got[r],
                            want[r]
                        );
                    }
                }
            }
        }
    }
}

/// `dot_rows_pair` and `dot_rows_quad` (two or four activation rows against one weight matrix, each block
/// decoded once) equal `dot_rows` calls bit for bit, for every type, variant and row count (the pair
/// kernels group rows 4, 2 and 1 at a time, the one-row kernels 8, 4, 2, 1 or one by one).
#[test]
fn pairs_and_quads_of_activation_rows_equal_single_calls_exactly() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for_each_type(23, |ty, cols, acts, rng| {
        for rows in [1, 2, 3, 4, 5, 7, 9, 16] {
            let w = random_weights(ty, rows, cols, rng);
            for (name, k) in Kernel::variants(ty) {
                let single: Vec<Vec<f32>> = (0..4)
                    .map(|i| {
                        let mut o = vec![f32::NAN; rows];
                        k.dot_rows(&w, acts, i, &mut o);
                        o
                    })
                    .collect();
                for i in [0, 1] {
                    let (mut pa, mut pb) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
                    k.dot_rows_pair(&w, acts, i, [&mut pa, &mut pb]);
                    assert_eq!(bits(&pa), bits(&single[i]), "{} {name} {rows} rows, pair, act row {i}", ty.name());
                    assert_eq!(
                        bits(&pb),
                        bits(&single[i + 1]),
                        "{} {name} {rows} rows, pair, act row {}",
                        ty.name(),
                        i + 1
                    );
                }
                let mut q: [Vec<f32>; 4] = std::array::from_fn(|_| vec![f32::NAN; rows]);
                let [q0, q1, q2, q3] = &mut q;
                k.dot_rows_quad(&w, acts, 0, [q0, q1, q2, q3]);
                for i in 0..4 {
                    assert_eq!(bits(&q[i]), bits(&single[i]), "{} {name} {rows} rows, quad, act row {i}", ty.name());
                }
            }
        }
    });
}

/// Runs `f` for every type with its test width (896 columns for the 32-value formats, 512 for the
/// k-quants) and 4 activation rows quantized to the type's activation format (the test activations'
/// three kinds, then the first again).
fn for_each_type(seed: u64, mut f: impl FnMut(GgmlType, usize, &Acts, &mut Rng)) {
    let mut rng = Rng::new(seed);
    let mut acts = Acts::new();
    for ty in ALL {
        let cols = if ty.block_elems() <= QK { 896 } else { 512 };
        let mut x = activations(cols, &mut rng);
        x.extend_from_within(..cols);
        acts.quantize(act_format(ty), &x, 4, cols).unwrap();
        f(ty, cols, &acts, &mut rng);
    }
}

/// `dot_rows` over 1, 2, 3, 4, 5, 7 and 16 rows: the SIMD kernels take rows 4 (and 2) at a time with a
/// remainder, so every grouping and remainder path is compared with portable, row by row, and a matrix's
/// result must not depend on how its rows are split into calls.
#[test]
fn every_variant_matches_portable_for_every_row_count() {
    for_each_type(19, |ty, cols, acts, rng| {
        let rb = row_bytes(ty, cols).unwrap();
        for rows in [1, 2, 3, 4, 5, 7, 16] {
            let w = random_weights(ty, rows, cols, rng);
            let wf = dequantized_rows(ty, &w, rows, cols);
            for i in [0, 2] {
                let xd = dequantized_act(acts, i);
                let mut want = vec![0f32; rows];
                Kernel::portable(ty).dot_rows(&w, acts, i, &mut want);
                for (name, k) in Kernel::variants(ty) {
                    let mut got = vec![f32::NAN; rows];
                    k.dot_rows(&w, acts, i, &mut got);
                    for r in 0..rows {
                        // The same row alone (the 1-row path) gives the same value up to summation order.
                        let mut one = [f32::NAN];
                        k.dot_rows(&w[r * rb..(r + 1) * rb], acts, i, &mut one);
                        let (_, mag) = ref_dot(&wf[r * cols..(r + 1) * cols], &xd);
                        let tol = 1e-4 * mag + 1e-5;
                        for (what, v) in [("in a group", got[r]), ("alone", one[0])] {
                            assert!(
                                ((v - want[r]) as f64).abs() <= tol,
                                "{} {name} {rows} rows, act row {i}, row {r} {what}: {v} vs portable {} (tol {tol})",
                                ty.name(),
                                want[r]
                            );
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn portable_matches_f64_reference_of_dequantized_operands() {
    let mut rng = Rng::new(12);
    let mut acts = Acts::new();
    for ty in ALL {
        for cols in col_sizes(ty) {
            let rows = 4;
            let w = random_weights(ty, rows, cols, &mut rng);
            // Through `quant::dequantize` (block by block), independent of `dequantize_row`.
            let wf = dequantize(ty, &w, rows * cols, "w").unwrap();
            let x = activations(cols, &mut rng);
            acts.quantize(act_format(ty), &x, 3, cols).unwrap();
            for i in 0..3 {
                let xd = dequantized_act(&acts, i);
                let mut got = vec![0f32; rows];
                Kernel::portable(ty).dot_rows(&w, &acts, i, &mut got);
                for r in 0..rows {
                    let (want, mag) = ref_dot(&wf[r * cols..(r + 1) * cols], &xd);
                    let tol = 1e-4 * mag + 1e-6;
                    assert!(
                        (got[r] as f64 - want).abs() <= tol,
                        "{} cols {cols} act row {i} row {r}: {} vs f64 {want} (tol {tol})",
                        ty.name(),
                        got[r]
                    );
                }
            }
        }
    }
}

#[test]
fn portable_is_close_to_unquantized_activations() {
    let mut rng = Rng::new(13);
    let mut acts = Acts::new();
    for ty in ALL {
        for cols in col_sizes(ty) {
            let rows = 4;
            let w = random_weights(ty, rows, cols, &mut rng);
            let wf = dequantize(ty, &w, rows * cols, "w").unwrap();
            // The first activation row only: with ±1e4 outliers the small values of their blocks round to 0,
            // an error of the scheme (as in ggml), not of the kernels.
            let x = activations(cols, &mut rng)[..cols].to_vec();
            acts.quantize(act_format(ty), &x, 1, cols).unwrap();
            let mut got = vec![0f32; rows];
            Kernel::best(ty).dot_rows(&w, &acts, 0, &mut got);
            for r in 0..rows {
                let (want, mag) = ref_dot(&wf[r * cols..(r + 1) * cols], &x);
                assert!(
                    (got[r] as f64 - want).abs() <= 0.02 * mag,
                    "{} cols {cols} row {r}: {} vs f32 activations {want} (Σ|w·x| {mag})",
                    ty.name(),
                    got[r]
                );
            }
        }
    }
}

#[test]
fn acts_q8_0_round_trip_and_sums() {
    let mut rng = Rng::new(14);
    let cols = 896;
    let x = activations(cols, &mut rng);
    let mut a = Acts::new();
    a.quantize(ActFormat::Q8_0, &x, 3, cols).unwrap();
    assert_eq!((a.format(), a.rows(), a.cols()), (ActFormat::Q8_0, 3, cols));
    for i in 0..3 {
        let r = a.q8_0_row(i);
        let xr = &x[i * cols..(i + 1) * cols];
        for b in 0..cols / QK {
            let xb = &xr[b * QK..(b + 1) * QK];
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!((r.d[b] - amax / 127.0).abs() <= 1e-7 * amax, "d of block {b}");
            let qb = &r.q[b * QK..(b + 1) * QK];
            assert!(qb.iter().all(|&q| q != -128));
            for (j, (&q, &v)) in qb.iter().zip(xb).enumerate() {
                // Round to nearest: the error is at most half a step.
                assert!((r.d[b] * q as f32 - v).abs() <= 0.5 * r.d[b] * 1.0001 + 1e-30, "block {b} value {j}");
            }
            let sum: i32 = qb.iter().map(|&q| q as i32).sum();
            assert_eq!(r.s[b], r.d[b] * sum as f32);
        }
    }
    // The all-zero blocks of row 1 quantize to zero scale and codes.
    let r = a.q8_0_row(1);
    assert!(r.d[..8].iter().all(|&d| d == 0.0) && r.q[..256].iter().all(|&q| q == 0));
}

#[test]
fn acts_q8k_round_trip_and_bsums() {
    let mut rng = Rng::new(15);
    let cols = 4864;
    let x = activations(cols, &mut rng);
    let mut a = Acts::new();
    a.quantize(ActFormat::Q8K, &x, 3, cols).unwrap();
    for i in 0..3 {
        let r = a.q8k_row(i);
        let xr = &x[i * cols..(i + 1) * cols];
        assert_eq!((r.q.len(), r.d.len(), r.bsums.len()), (cols, cols / 256, cols / 16));
        for b in 0..cols / QK_K {
            let xb = &xr[b * QK_K..(b + 1) * QK_K];
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!((r.d[b] - amax / 127.0).abs() <= 1e-7 * amax);
            for (&q, &v) in r.q[b * QK_K..(b + 1) * QK_K].iter().zip(xb) {
                assert!((r.d[b] * q as f32 - v).abs() <= 0.5 * r.d[b] * 1.0001);
            }
        }
        for (g, &bs) in r.bsums.iter().enumerate() {
            let want: i32 = r.q[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum();
            assert_eq!(bs as i32, want, "bsum {g} of row {i}");
        }
    }
    // F32 is a copy.
    a.quantize(ActFormat::F32, &x, 3, cols).unwrap();
    assert_eq!(a.f32_row(2), &x[2 * cols..]);
}

#[test]
fn acts_reuse_their_buffers() {
    let mut rng = Rng::new(16);
    let x = activations(4864, &mut rng);
    let mut a = Acts::new();
    a.quantize(ActFormat::Q8K, &x, 3, 4864).unwrap();
    let (pq, pd, pb) = (a.q.as_ptr(), a.d.as_ptr(), a.bsums.as_ptr());
    // Smaller and equal shapes fit the capacity already there.
    a.quantize(ActFormat::Q8K, &x[..4864], 1, 4864).unwrap();
    a.quantize(ActFormat::Q8K, &x, 3, 4864).unwrap();
    assert_eq!((a.q.as_ptr(), a.d.as_ptr(), a.bsums.as_ptr()), (pq, pd, pb));
    let cap = a.q.capacity();
    a.quantize(ActFormat::Q8_0, &x, 3, 4864).unwrap();
    assert_eq!((a.q.as_ptr(), a.q.capacity()), (pq, cap));
}

#[test]
fn acts_reject_bad_shapes_with_the_value() {
    let mut a = Acts::new();
    let x = vec![0.5f32; 300];
    let err = a.quantize(ActFormat::Q8_0, &x, 3, 100).unwrap_err().to_string();
    assert!(err.contains("100") && err.contains("32"), "{err}");
    let err = a.quantize(ActFormat::Q8K, &x, 1, 300).unwrap_err().to_string();
    assert!(err.contains("300") && err.contains("256"), "{err}");
    let err = a.quantize(ActFormat::F32, &x, 2, 100).unwrap_err().to_string();
    assert!(err.contains("300 values") && err.contains("2 rows"), "{err}");
    // Any column count is fine for f32, and zero rows are fine everywhere.
    a.quantize(ActFormat::F32, &x, 3, 100).unwrap();
    a.quantize(ActFormat::Q8K, &[], 0, 512).unwrap();
    assert_eq!((a.rows(), a.cols()), (0, 512));
}

#[test]
fn dequantize_row_matches_dequantize_block() {
    let mut rng = Rng::new(17);
    for ty in ALL {
        let cols = 512;
        let w = random_weights(ty, 1, cols, &mut rng);
        let mut row = vec![0f32; cols];
        dequantize_row(ty, &w, &mut row);
        let (be, bb) = (ty.block_elems(), ty.block_bytes());
        let mut blk = vec![0f32; be];
        for (k, b) in w.chunks_exact(bb).enumerate() {
            dequantize_block(ty, b, &mut blk);
            assert_eq!(&row[k * be..(k + 1) * be], &blk[..], "{} block {k}", ty.name());
        }
        assert_eq!(row, dequantize(ty, &w, cols, "w").unwrap(), "{}", ty.name());
    }
}

#[test]
fn best_is_the_last_variant() {
    for ty in ALL {
        let v = Kernel::variants(ty);
        assert_eq!(Kernel::best(ty).name(), v.last().unwrap().0, "{}", ty.name());
        assert_eq!(Kernel::portable(ty).name(), "portable");
    }
}

#[test]
fn zero_columns_give_zero() {
    let mut a = Acts::new();
    a.quantize(ActFormat::Q8_0, &[], 1, 0).unwrap();
    let mut out = [1f32; 3];
    Kernel::best(GgmlType::Q8_0).dot_rows(&[], &a, 0, &mut out);
    assert_eq!(out, [0.0; 3]);
}

/// A caller bug (too few weight bytes) debug-asserts; release builds return without touching `out`.
#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "dot_rows"))]
fn mismatched_lengths_are_caught() {
    let mut rng = Rng::new(18);
    let x = activations(256, &mut rng);
    let mut a = Acts::new();
    a.quantize(ActFormat::Q8K, &x, 3, 256).unwrap();
    let w = random_weights(GgmlType::Q4_K, 2, 256, &mut rng);
    for (_, k) in Kernel::variants(GgmlType::Q4_K) {
        let mut out = [7f32; 3];
        k.dot_rows(&w, &a, 0, &mut out);
        assert_eq!(out, [7.0; 3]);
        let mut out = [7f32; 2];
        k.dot_rows(&w, &a, 3, &mut out);
        Kernel::best(GgmlType::Q4_0).dot_rows(&w, &a, 0, &mut out);
        assert_eq!(out, [7.0; 2]);
    }
}

/// The block formats of [`ALL`] (those panels hold).
fn quantized() -> impl Iterator<Item = GgmlType> {
    ALL.into_iter().filter(|&t| sub_block(t).is_some())
}

/// Packing into panels keeps every value exactly (`scale · code + off` = the dequantized value; only the
/// sign of a zero may differ), for whole and partial panels.
#[test]
fn panels_hold_the_dequantized_values_exactly() {
    let mut rng = Rng::new(31);
    let mut p = Panels::new();
    for ty in quantized() {
        for rows in [1, 16, 19] {
            let cols = if ty.block_elems() <= QK { 96 } else { 512 };
            let w = random_weights(ty, rows, cols, &mut rng);
            let wf = dequantized_rows(ty, &w, rows, cols);
            p.pack(ty, &w, rows, cols).unwrap();
            assert_eq!(p.rows(), rows);
            for r in 0..rows {
                for j in 0..cols {
                    let (got, want) = (p.value(r, j), wf[r * cols + j]);
                    assert!(got == want, "{} {rows} rows: row {r} col {j}: {got} vs {want}", ty.name());
                }
            }
        }
    }
}

/// Every panel kernel equals the portable one bit for bit, for 1 to 4 activation rows at once and row
/// counts with partial panels, and the portable one agrees with the row kernels up to summation order.
#[test]
fn panel_kernels_match_portable_exactly_and_the_row_kernels_closely() {
    let simd = crate::ggml::simd_or_skip("ggml::panel_kernels_match_portable", true);
    let kernels = GemmKernel::variants();
    if simd && Kernel::cpu_has_avx512() {
        assert!(kernels.len() > 1, "no AVX-512 panel kernel on an AVX-512 CPU");
    }
    let mut rng = Rng::new(37);
    let mut acts = Acts::new();
    let mut p = Panels::new();
    for ty in quantized() {
        for cols in col_sizes(ty) {
            let mut x = activations(cols, &mut rng);
            x.extend_from_within(..2 * cols);
            acts.quantize(act_format(ty), &x, 5, cols).unwrap();
            for rows in [3, 16, 37] {
                let w = random_weights(ty, rows, cols, &mut rng);
                let wf = dequantized_rows(ty, &w, rows, cols);
                p.pack(ty, &w, rows, cols).unwrap();
                let mut want = vec![vec![f32::NAN; rows]; 5];
                let [a, b, c, d, e] = &mut want[..] else { unreachable!() };
                p.gemm(GemmKernel::Portable, &acts, 0, [a, b, c, d]);
                p.gemm(GemmKernel::Portable, &acts, 4, [e]);
                for (i, wi) in want.iter().enumerate() {
                    let xd = dequantized_act(&acts, i);
                    let mut rk = vec![0f32; rows];
                    Kernel::portable(ty).dot_rows(&w, &acts, i, &mut rk);
                    for r in 0..rows {
                        let (_, mag) = ref_dot(&wf[r * cols..(r + 1) * cols], &xd);
                        let tol = 1e-4 * mag + 1e-5;
                        assert!(
                            ((wi[r] - rk[r]) as f64).abs() <= tol,
                            "{} cols {cols} rows {rows}: act {i} row {r}: panel {} vs row kernel {} (tol {tol})",
                            ty.name(),
                            wi[r],
                            rk[r]
                        );
                    }
                }
                for &k in &kernels {
                    let mut got = vec![vec![f32::NAN; rows]; 5];
                    let [a, b, c, d, e] = &mut got[..] else { unreachable!() };
                    p.gemm(k, &acts, 0, [a, b]);
                    p.gemm(k, &acts, 2, [c, d, e]);
                    for i in 0..5 {
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got[i]),
                            bits(&want[i]),
                            "{} {k:?} cols {cols} rows {rows} act {i}",
                            ty.name()
                        );
                    }
                    let mut one = vec![f32::NAN; rows];
                    p.gemm(k, &acts, 3, [&mut one]);
                    assert_eq!(one, want[3], "{} {k:?} one row", ty.name());
                }
            }
        }
    }
}

/// Packing float weights or a wrong byte count is an error naming the type or sizes; a gemm against
/// activations of another shape leaves its outputs untouched (in release builds; debug builds assert).
#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "Panels::gemm"))]
fn panels_reject_what_they_cannot_hold() {
    let mut p = Panels::new();
    let e = p.pack(GgmlType::F16, &[0; 64], 1, 32).unwrap_err().to_string();
    assert!(e.contains("F16"), "{e}");
    let e = p.pack(GgmlType::Q4_0, &[0; 17], 1, 32).unwrap_err().to_string();
    assert!(e.contains("17 bytes"), "{e}");
    let mut rng = Rng::new(41);
    let w = random_weights(GgmlType::Q4_K, 2, 256, &mut rng);
    p.pack(GgmlType::Q4_K, &w, 2, 256).unwrap();
    let mut a = Acts::new();
    a.quantize(ActFormat::Q8_0, &activations(256, &mut rng), 3, 256).unwrap();
    for k in GemmKernel::variants() {
        let mut out = [7f32; 2];
        p.gemm(k, &a, 0, [&mut out]);
        assert_eq!(out, [7.0; 2]);
    }
}
