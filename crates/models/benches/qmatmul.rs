//! Criterion benchmarks of the CPU projection paths: an integer-coded [`QMatrix`] product (the CPU
//! default for GGUF models) against a plain f32 matrix-vector product over the same dequantized values,
//! at the shape of Qwen2.5-1.5B's fused gate/up projection (17920 × 1536, Q4_K), with f32 and 8-bit inputs, one and
//! two input rows. Throughput is in weights.

use chorus_core::qmatrix::QMatrix;
use chorus_core::quant::{GgmlType, dequantize};
use chorus_core::sampling::Rng;
use chorus_models::qlinear::{Activations, qmatmul};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn random_q4k(rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let ty = GgmlType::Q4_K;
    let mut data: Vec<u8> = (0..rows * cols / 256 * ty.block_bytes()).map(|_| rng.next_u64() as u8).collect();
    for blk in data.chunks_exact_mut(ty.block_bytes()) {
        for at in [0, 2] {
            let s = half::f16::from_f32((rng.next_f64() as f32 - 0.5) * 0.01);
            blk[at..at + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
    data
}

fn bench(c: &mut Criterion) {
    let (rows, cols) = (17920, 1536);
    let mut rng = Rng::new(1);
    let data = random_q4k(rows, cols, &mut rng);
    let q = QMatrix::from_ggml(GgmlType::Q4_K, &data, rows, cols).expect("q4k");
    let f = dequantize(GgmlType::Q4_K, &data, rows * cols, "w").expect("dequantize");
    let x: Vec<f32> = (0..cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let x2: Vec<f32> = x.iter().chain(x.iter().rev()).copied().collect();
    let mut g = c.benchmark_group("cpu_projection_17920x1536");
    g.throughput(Throughput::Elements((rows * cols) as u64));
    g.bench_function("cpu_qmatmul_q4k_m1", |b| b.iter(|| qmatmul(&q, &x, 1, Activations::F32)));
    g.bench_function("cpu_qmatmul_q4k_q8_m1", |b| b.iter(|| qmatmul(&q, &x, 1, Activations::Q8)));
    g.bench_function("cpu_qmatmul_q4k_q16_m1", |b| b.iter(|| qmatmul(&q, &x, 1, Activations::Q16)));
    g.bench_function("cpu_qmatmul_q4k_q8_m2", |b| b.iter(|| qmatmul(&q, &x2, 2, Activations::Q8)));
    g.bench_function("cpu_qmatmul_q4k_m2", |b| b.iter(|| qmatmul(&q, &x2, 2, Activations::F32)));
    g.bench_function("cpu_f32_gemv_m1", |b| {
        b.iter(|| f.chunks_exact(cols).map(|r| r.iter().zip(&x).map(|(w, v)| w * v).sum::<f32>()).collect::<Vec<_>>())
    });
    g.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    super::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
