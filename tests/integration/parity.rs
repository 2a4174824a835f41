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
