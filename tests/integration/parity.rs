//! GPU kernels against their plain-Rust references in `chorus_core::reference` (Mesa lavapipe in CI).

use chorus_core::reference;
use chorus_core::sampling::Rng;

fn random_matrix(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|_| (rng.next_f64() * 40.0 - 20.0) as f32).collect()
}

#[test]
fn row_stats_gpu_matches_reference() {
    let Some(ctx) = crate::common::gpu_or_skip("row_stats_gpu_matches_reference") else { return };
    let mut rng = Rng::new(5);
    // Edge shapes: one column, fewer columns than the workgroup, not a multiple of 256, a large vocab.
    for (rows, cols) in [(1, 1), (3, 7), (2, 255), (4, 257), (2, 151_936), (17, 1000)] {
        let mut x = random_matrix(&mut rng, rows, cols);
        if cols > 10 {
            // Ties (lowest index must win), −∞ and NaN entries.
            x[3] = 1e3;
            x[5] = 1e3;
            x[cols + 1] = f32::NEG_INFINITY;
            x[cols + 2] = f32::NAN;
        }
        let want = reference::row_stats(&x, rows, cols);
        let got = pollster::block_on(chorus_gpu::row_stats::row_stats(&ctx, &x, rows, cols)).expect("kernel");
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.argmax, w.argmax, "{rows}x{cols} row {r}");
            assert_eq!(g.max, w.max, "{rows}x{cols} row {r}");
            // exp/log accuracy is implementation-defined in WGSL: relative 1e-5 on the sum.
            assert!(
                (g.logsumexp - w.logsumexp).abs() <= 1e-4 * w.logsumexp.abs().max(1.0),
                "{rows}x{cols} row {r}: {} vs {}",
                g.logsumexp,
                w.logsumexp
            );
        }
    }
}

#[test]
fn row_stats_rejects_mismatched_shapes() {
    let Some(ctx) = crate::common::gpu_or_skip("row_stats_rejects_mismatched_shapes") else { return };
    let e = pollster::block_on(chorus_gpu::row_stats::row_stats(&ctx, &[1.0; 5], 2, 3)).unwrap_err();
    assert!(e.to_string().contains("2x3"), "{e}");
}

#[test]
fn custom_kernels_and_burn_share_one_device() {
    use burn::tensor::{Tensor, TensorData};
    let Some(ctx) = crate::common::gpu_or_skip("custom_kernels_and_burn_share_one_device") else { return };
    let dev = crate::common::wgpu_or_skip("custom_kernels_and_burn_share_one_device").expect("same runtime");
    let x: Tensor<2> = Tensor::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]), &dev);
    let y = x.clone().matmul(x.clone()); // [[7, 10], [15, 22]]
    let rows = chorus_models::decoder::to_rows(y.clone()).unwrap();
    let stats = pollster::block_on(chorus_gpu::row_stats::row_stats(&ctx, &rows.concat(), 2, 2)).unwrap();
    assert_eq!((stats[0].argmax, stats[1].max), (1, 22.0));
    // burn keeps working on the shared queue after Chorus's own submission.
    let z = chorus_models::decoder::to_rows(y + x).unwrap();
    assert_eq!(z, vec![vec![8.0, 12.0], vec![18.0, 26.0]]);
}

/// Host reference of one DLF step for every row: the f64 oracle's choice over the same candidates.
fn dlf_reference(
    large: &[f32],
    base: &[f32],
    experts: &[Vec<f32>],
    rows: usize,
    vocab: usize,
    cands: &[Vec<f32>],
    row: usize,
) -> (chorus_core::fusion::Choice, Vec<chorus_core::fusion::Eval>, Vec<f32>) {
    use chorus_core::fusion::{ReferenceEvaluator, RowLogits, fused_logits, scan};
    let _ = rows;
    let at = |x: &[f32]| x[row * vocab..(row + 1) * vocab].to_vec();
    let (l, s) = (at(large), at(base));
    let e: Vec<Vec<f32>> = experts.iter().map(|x| at(x)).collect();
    let er: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
    let r = RowLogits { large: &l, base: &s, experts: &er };
    let mut ev = ReferenceEvaluator::new(r).expect("reference");
    let (choice, evals) = scan(cands, &mut ev);
    let fused = fused_logits(&r, &choice.alpha, false);
    (choice, evals, fused)
}

/// The fusion kernel against the f64 reference: T in 1..4, vocabularies that are not multiples of 256
/// up to Qwen's 151,936, −∞ entries, batches (each row alone gives the same answer: §A.12.11).
#[test]
fn dlf_kernel_matches_reference() {
    use chorus_core::fusion::{FusionConfig, synthetic_logits};
    use chorus_gpu::fusion::FusionKernel;
    let Some(ctx) = crate::common::gpu_or_skip("dlf_kernel_matches_reference") else { return };
    for (case, (rows, vocab, t)) in
        [(1, 1, 1), (2, 300, 2), (3, 1000, 3), (1, 4099, 4), (2, 151_936, 1), (1, 151_936, 3)].into_iter().enumerate()
    {
        let mut large = Vec::new();
        let mut base = Vec::new();
        let mut experts = vec![Vec::new(); t];
        for r in 0..rows {
            let (mut l, s, e) = synthetic_logits(100 + (case * 10 + r) as u64, vocab, t);
            if vocab > 10 {
                l[3 + r] = f32::NEG_INFINITY;
            }
            large.extend(l);
            base.extend(s);
            for (k, x) in e.into_iter().enumerate() {
                experts[k].extend(x);
            }
            if vocab > 10 {
                experts[t - 1][r * vocab + 7] = f32::NEG_INFINITY;
            }
        }
        let cands = FusionConfig::default().grid(t);
        let kernel = FusionKernel::new(&ctx, rows, vocab, t).expect("kernel");
        let er: Vec<&[f32]> = experts.iter().map(Vec::as_slice).collect();
        kernel.write(&large, &base, &er).unwrap();
        let got = pollster::block_on(kernel.run(&cands, false)).expect("run");
        let fused = pollster::block_on(kernel.read_fused()).unwrap();
        for r in 0..rows {
            let (want, evals, want_fused) = dlf_reference(&large, &base, &experts, rows, vocab, &cands, r);
            let g = &got[r];
            let tag = format!("case {case} ({rows}x{vocab}, T={t}) row {r}");
            // Per-candidate losses agree to f32 accuracy.
            for (k, (gl, w)) in g.losses.iter().zip(&evals).enumerate() {
                assert!(
                    (gl[0] as f64 - w.loss).abs() <= 1e-4 * w.loss.max(1e-3),
                    "{tag} cand {k}: loss {} vs {}",
                    gl[0],
                    w.loss
                );
                assert!(gl[1] >= 0.0 && gl[2] >= 0.0, "{tag}: negative KL");
            }
            let galpha = &cands[g.chosen];
            if *galpha != want.alpha {
                // Only a near-tie may flip between f32 tree sums and f64.
                let (a, b) = (evals[g.chosen].loss, want.eval.unwrap().loss);
                assert!((a - b).abs() <= 1e-5 * b.max(1e-6), "{tag}: α {galpha:?} vs {:?}", want.alpha);
            }
            let row_fused = &fused[r * vocab..(r + 1) * vocab];
            let max_diff = row_fused
                .iter()
                .zip(chorus_core::fusion::fused_logits(
                    &chorus_core::fusion::RowLogits {
                        large: &large[r * vocab..(r + 1) * vocab],
                        base: &base[r * vocab..(r + 1) * vocab],
                        experts: &experts.iter().map(|x| &x[r * vocab..(r + 1) * vocab]).collect::<Vec<_>>(),
                    },
                    galpha,
                    false,
                ))
                .map(|(a, b)| if a == &b { 0.0 } else { (a - b).abs() })
                .fold(0f32, f32::max);
            assert!(max_diff <= 1e-4, "{tag}: |Δ fused| = {max_diff}");
            if *galpha == want.alpha {
                assert_eq!(row_fused, want_fused.as_slice(), "{tag}: fused logits");
            }
            assert_eq!(g.token as usize, chorus_core::sampling::argmax(row_fused), "{tag}: greedy token");
            if vocab > 10 {
                assert_eq!(row_fused[3 + r], f32::NEG_INFINITY);
                assert_eq!(row_fused[7], f32::NEG_INFINITY);
            }
            // Batch independence: the row alone gives the same choice.
            if rows > 1 {
                let single = FusionKernel::new(&ctx, 1, vocab, t).unwrap();
                let one = |x: &[f32]| x[r * vocab..(r + 1) * vocab].to_vec();
                let e1: Vec<Vec<f32>> = experts.iter().map(|x| one(x)).collect();
                let e1r: Vec<&[f32]> = e1.iter().map(Vec::as_slice).collect();
                single.write(&one(&large), &one(&base), &e1r).unwrap();
                let alone = pollster::block_on(single.run(&cands, false)).unwrap();
                assert_eq!(alone[0].chosen, g.chosen, "{tag}: batch changed the choice");
            }
        }
    }
}

/// Static, large-only and expert-only modes on the kernel; rejected shapes are named.
#[test]
fn dlf_kernel_modes_and_errors() {
    use chorus_core::fusion::synthetic_logits;
    use chorus_gpu::fusion::FusionKernel;
    let Some(ctx) = crate::common::gpu_or_skip("dlf_kernel_modes_and_errors") else { return };
    let (l, s, e) = synthetic_logits(7, 777, 2);
    let k = FusionKernel::new(&ctx, 1, 777, 2).unwrap();
    k.write(&l, &s, &[&e[0], &e[1]]).unwrap();
    let r = pollster::block_on(k.run(&[vec![0.0, 0.0]], false)).unwrap();
    assert_eq!(pollster::block_on(k.read_fused()).unwrap(), l, "α = 0 is the large model");
    assert_eq!((r[0].losses[0][1], r[0].losses[0][2]), (0.0, 0.0));
    pollster::block_on(k.run(&[vec![1.0, 0.0]], false)).unwrap();
    let z = pollster::block_on(k.read_fused()).unwrap();
    assert!(z.iter().enumerate().all(|(i, &v)| (v - (l[i] + e[0][i] - s[i])).abs() < 1e-5), "proxy-tuning");
    let r = pollster::block_on(k.run(&[vec![0.0, 0.0]], true)).unwrap();
    assert_eq!(pollster::block_on(k.read_fused()).unwrap(), e[0], "expert-only");
    assert_eq!(r[0].token as usize, chorus_core::sampling::argmax(&e[0]));
    assert!(k.write(&l[..100], &s, &[&e[0], &e[1]]).unwrap_err().to_string().contains("large"));
    assert!(pollster::block_on(k.run(&[vec![1.0]], false)).is_err());
    assert!(FusionKernel::new(&ctx, 0, 10, 1).is_err());
}

/// Twin-Merging's mixed matmul: several tasks, a fused projection of three parts (one with no factors),
/// different weights per row, widths that are not multiples of the workgroup.
#[test]
fn lowrank_mix_gpu_matches_reference() {
    use chorus_core::reference::LowRankPart;
    let Some(ctx) = crate::common::gpu_or_skip("lowrank_mix_gpu_matches_reference") else { return };
    let mut rng = Rng::new(11);
    for (rows, inp, tasks, outs, ranks) in [
        (1usize, 8usize, 1usize, vec![5usize], vec![vec![2usize]]),
        (5, 70, 3, vec![64, 16, 16], vec![vec![3, 1, 4], vec![2, 0, 1], vec![0, 0, 0]]),
        (9, 130, 4, vec![200], vec![vec![6, 6, 6, 6]]),
    ] {
        let small = |rng: &mut Rng, n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next_f64() - 0.5) as f32).collect() };
        // Columns of z grouped by part, then task (the decoder's layout).
        let (mut seg, mut parts, mut b) = (Vec::new(), Vec::new(), Vec::new());
        let mut out0 = 0;
        for (p, &out_n) in outs.iter().enumerate() {
            let col0 = seg.len();
            for (t, &r) in ranks[p].iter().enumerate() {
                seg.extend(std::iter::repeat_n(t as u32, r));
            }
            let col_n = seg.len() - col0;
            parts.push(LowRankPart { out0, out_n, col0, col_n, b_off: b.len() });
            b.extend(small(&mut rng, col_n * out_n));
            out0 += out_n;
        }
        let out = out0;
        let r = seg.len();
        let x = small(&mut rng, rows * inp);
        let a = small(&mut rng, inp * r);
        let mut w: Vec<f32> = (0..rows * tasks).map(|_| rng.next_f64() as f32).collect();
        w[0] = 0.0;
        let base = random_matrix(&mut rng, rows, out);
        let want = reference::lowrank_mix(&x, &a, &w, &seg, &b, &parts, &base, rows, inp, tasks);
        let op = chorus_gpu::lowrank::LowRankMix {
            x: &x,
            a: &a,
            w: &w,
            seg: &seg,
            b: &b,
            parts: &parts,
            base: &base,
            rows,
            inp,
            tasks,
        };
        let got = pollster::block_on(chorus_gpu::lowrank::lowrank_mix(&ctx, &op)).expect("kernel");
        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
        println!("lowrank_mix {rows}x{inp} -> {out}, {tasks} tasks, r {r}: max |gpu - ref| = {worst:e}");
        assert!(worst < 1e-4, "{rows}x{inp}: {worst}");
    }
    // Shapes that do not fit are refused, not run.
    let bad = chorus_gpu::lowrank::LowRankMix {
        x: &[1.0; 4],
        a: &[1.0; 2],
        w: &[1.0],
        seg: &[1],
        b: &[1.0; 2],
        parts: &[LowRankPart { out0: 0, out_n: 2, col0: 0, col_n: 1, b_off: 0 }],
        base: &[0.0; 2],
        rows: 1,
        inp: 4,
        tasks: 1,
    };
    let e = pollster::block_on(chorus_gpu::lowrank::lowrank_mix(&ctx, &bad)).unwrap_err();
    assert!(e.to_string().contains("lowrank_mix"), "{e}");
}

/// The block-decoding matrix product equals the f64 reference over the dequantized weights, for every
/// format it decodes, decode (1 token), prefill (tokens not a multiple of the kernel's 4) and activations
/// too large for the uniform-buffer variant, a type it expands to F32 on upload (Q3_K), in both layouts
/// (the CPU adapter's rows per invocation and the GPU's lanes per row, forced here on the same adapter).
#[test]
fn qmatmul_gpu_matches_reference_for_every_format() {
    use chorus_core::GgmlType as G;
    let Some(ctx) = crate::common::gpu_or_skip("qmatmul_gpu_matches_reference_for_every_format") else { return };
    let mut rng = Rng::new(23);
    for software in [true, false] {
        let mut ctx = ctx.clone();
        ctx.software = software;
        for ty in
            [G::F32, G::F16, G::BF16, G::Q4_0, G::Q4_1, G::Q5_0, G::Q5_1, G::Q8_0, G::Q4_K, G::Q5_K, G::Q6_K, G::Q3_K]
        {
            for (rows, cols, n) in [(7, 256, 1), (13, 512, 6), (70, 768, 4), (5, 2048, 9)] {
                let w = chorus_core::ggml::random_weights(ty, rows, cols, &mut rng);
                let x = random_matrix(&mut rng, n, cols);
                let want = chorus_core::reference::qmatmul(ty, &w, rows, cols, &x, n);
                let got = pollster::block_on(chorus_gpu::qmatmul::qmatmul(&ctx, ty, &w, rows, cols, &x, n)).unwrap();
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 2e-5 * scale * (cols as f32).sqrt(),
                        "{} {rows}x{cols} n={n} software={software}: y[{i}] = {g}, reference {e}",
                        ty.name()
                    );
                }
            }
        }
    }
}
