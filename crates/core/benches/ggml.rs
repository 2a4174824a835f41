//! Criterion benchmarks of the quantized dot-product kernels (`chorus_core::ggml`): every weight type ×
//! every variant this CPU runs, one activation row against a whole matrix, as in a decode step. Legacy and
//! float types use Qwen2.5 0.5B's 896 × 896 attention shape, the k-quants 896 × 4864 (the FFN down
//! projection's input width). Throughput is in bytes of stored weights: decoding is bound by reading them.
//!
//! The benchmark models' main formats also get a matrix several times the per-core L2 (4864 × 896 for
//! Q4_1/Q5_0/Q8_0, Qwen2.5 0.5B's FFN up/gate; 4864 × 1536 for Q4_K/Q6_K, Qwen2.5 1.5B's width), so the
//! report shows the kernels streaming from the outer caches as well as the smaller shapes. `GGML_QUICK`,
//! `GGML_STREAM` and `GGML_GEMM` print quick figures instead of running criterion (see [`stream`] and
//! [`gemm`]).

use chorus_core::ggml::{Acts, GemmKernel, GgmlType, Kernel, Panels, act_format, row_bytes};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const TYPES: [GgmlType; 13] = [
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

/// Random code bytes with moderate f16 scales (their values do not change the kernels' speed).
fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut chorus_core::Rng) -> Vec<u8> {
    let n = row_bytes(ty, cols).expect("whole blocks") * rows;
    let mut data: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    let fields: &[usize] = match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => &[],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        _ => &[0],
    };
    let one = half::f16::from_f32(0.01).to_le_bytes();
    for blk in data.chunks_exact_mut(ty.block_bytes()) {
        for &at in fields {
            blk[at..at + 2].copy_from_slice(&one);
        }
    }
    if ty == GgmlType::F32 {
        // Random bytes can be NaN or subnormal floats; keep the f32 case representative.
        for c in data.chunks_exact_mut(4) {
            c.copy_from_slice(&((rng.next_f64() as f32) - 0.5).to_le_bytes());
        }
    }
    data
}

/// The decode models' main formats at their row widths: Q4_K, Q6_K × 1536 (Qwen2.5 1.5B), Q5_0, Q8_0 ×
/// 896 (the 0.5B), Q4_1 × 576 (SmolLM2).
const MAIN_SHAPES: [(GgmlType, usize); 5] = [
    (GgmlType::Q4_K, 1536),
    (GgmlType::Q6_K, 1536),
    (GgmlType::Q5_0, 896),
    (GgmlType::Q8_0, 896),
    (GgmlType::Q4_1, 576),
];

/// `GGML_STREAM=1`: the decode models' main formats (Q4_K, Q6_K × 1536 as in Qwen2.5 1.5B; Q5_0, Q8_0 × 896
/// as in the 0.5B; Q4_1 × 576 as in SmolLM2) in a matrix of ~512 MB, far past the caches, dotted by 2
/// threads over contiguous halves of the rows as a decode step's matmul is, for every variant, with one
/// activation row and with a pair; against a plain 2-thread read of the same bytes. Prints GB/s of weight
/// bytes (best of 5): a variant's distance from the read line is how far decoding is from memory-bound.
/// A thread's part of the streamed product: its weight rows, its outputs for activation rows 0 and 1.
type Part<'a> = dyn Fn(&[u8], &mut [f32], &mut [f32]) + Sync + 'a;

fn stream(rng: &mut chorus_core::Rng) {
    let threads = 2;
    for (ty, cols) in MAIN_SHAPES {
        let rb = row_bytes(ty, cols).expect("whole blocks");
        let rows = (512 << 20) / rb / threads * threads;
        let w = weights(ty, rows, cols, rng);
        let x: Vec<f32> = (0..2 * cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let mut acts = Acts::new();
        acts.quantize(act_format(ty), &x, 2, cols).expect("whole blocks");
        let gbs = |f: &Part| {
            let (mut out, mut out2) = (vec![0f32; rows], vec![0f32; rows]);
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                std::thread::scope(|s| {
                    let share = rows / threads;
                    for ((wc, oc), oc2) in w.chunks(share * rb).zip(out.chunks_mut(share)).zip(out2.chunks_mut(share)) {
                        s.spawn(move || f(wc, oc, oc2));
                    }
                });
                best = best.min(t.elapsed().as_secs_f64());
            }
            w.len() as f64 / best / 1e9
        };
        let read = gbs(&|wc, oc, _| {
            // Summed as u64 words, which the compiler vectorises: the bytes' read cost alone.
            let s = wc.chunks_exact(8).fold(0u64, |s, c| s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap())));
            oc[0] = s as f32;
        });
        println!(
            "STREAM {:5} {rows}x{cols} ({} MB, {threads} threads): read {read:5.1} GB/s",
            ty.name(),
            w.len() >> 20
        );
        for (name, k) in Kernel::variants(ty).into_iter().filter(|(n, _)| *n != "portable") {
            let one = gbs(&|wc, oc, _| k.dot_rows(wc, &acts, 0, oc));
            let pair = gbs(&|wc, oc, oc2| k.dot_rows_pair(wc, &acts, 0, [oc, oc2]));
            println!("STREAM {:5}   {name:7} one row {one:5.1} GB/s, a pair {pair:5.1} GB/s", ty.name());
        }
    }
}

/// `GGML_GEMM=1`: one thread's prefill work unit, 32 weight rows (the engine's claim) against 512
/// activation rows, for the decode models' main formats: the best row kernel four activation rows at a
/// time, against packing the rows into panels plus every panel kernel. Prints G multiply-adds per second
/// (best of 5) and the packing's share.
fn gemm(rng: &mut chorus_core::Rng) {
    let (rows, m) = (32, 512);
    // Also Qwen2.5 1.5B's FFN down projection input width (8960), past L1 per panel.
    for (ty, cols) in MAIN_SHAPES.into_iter().chain([(GgmlType::Q4_K, 8960)]) {
        let w = weights(ty, rows, cols, rng);
        let x: Vec<f32> = (0..m * cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let mut acts = Acts::new();
        acts.quantize(act_format(ty), &x, m, cols).expect("whole blocks");
        let mut out: Vec<Vec<f32>> = (0..m).map(|_| vec![0f32; rows]).collect();
        let best = |f: &mut dyn FnMut()| {
            (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::MAX, f64::min)
        };
        let macs = (rows * cols * m) as f64;
        let k = Kernel::best(ty);
        let quad = best(&mut || {
            for q in out.chunks_exact_mut(4) {
                let [a, b, c, d] = q else { unreachable!() };
                k.dot_rows_quad(&w, &acts, 0, [a, b, c, d]);
            }
        });
        let mut p = Panels::new();
        let pack = best(&mut || p.pack(ty, &w, rows, cols).expect("packs"));
        let mut line = format!(
            "GEMM {:5} {rows}x{cols} x {m} rows: {} quads {:6.1} GMAC/s; pack {:5.2} ns/value",
            ty.name(),
            k.name(),
            macs / quad / 1e9,
            pack / (rows * cols) as f64 * 1e9
        );
        for g in GemmKernel::variants() {
            let t = best(&mut || {
                p.pack(ty, &w, rows, cols).expect("packs");
                for q in out.chunks_exact_mut(4) {
                    let [a, b, c, d] = q else { unreachable!() };
                    p.gemm(g, &acts, 0, [a, b, c, d]);
                }
            });
            line += &format!(", pack+{g:?} {:6.1} GMAC/s ({:.0} % packing)", macs / t / 1e9, 100.0 * pack / t);
        }
        println!("{line}");
    }
}

fn bench(c: &mut Criterion) {
    let mut rng = chorus_core::Rng::new(7);
    if std::env::var("GGML_STREAM").is_ok() {
        return stream(&mut rng);
    }
    if std::env::var("GGML_GEMM").is_ok() {
        return gemm(&mut rng);
    }
    let mut g = c.benchmark_group("ggml_dot_rows");
    g.sample_size(20);
    let large = [
        (GgmlType::Q4_1, 4864, 896),
        (GgmlType::Q5_0, 4864, 896),
        (GgmlType::Q8_0, 4864, 896),
        (GgmlType::Q4_K, 4864, 1536),
        (GgmlType::Q6_K, 4864, 1536),
    ];
    let shapes = TYPES.iter().map(|&ty| (ty, 896, if ty.block_elems() == 256 { 4864 } else { 896 }));
    let small = [
        (GgmlType::Q8_0, 128, 896),
        (GgmlType::Q4_1, 128, 896),
        (GgmlType::Q5_0, 128, 896),
        (GgmlType::Q6_K, 64, 1536),
    ];
    let small = small.into_iter().filter(|_| std::env::var("GGML_QUICK").is_ok());
    for (ty, rows, cols) in shapes.chain(large).chain(small) {
        let w = weights(ty, rows, cols, &mut rng);
        if let Ok(pat) = std::env::var("GGML_QUICK") {
            if !ty.name().starts_with(&pat[..]) && pat != "all" {
                continue;
            }
            let x: Vec<f32> = (0..cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let mut acts = Acts::new();
            acts.quantize(act_format(ty), &x, 1, cols).expect("whole blocks");
            let mut out = vec![0f32; rows];
            let k = Kernel::best(ty);
            let mut best = f64::MAX;
            for _ in 0..400 {
                let t = std::time::Instant::now();
                k.dot_rows(&w, &acts, 0, &mut out);
                best = best.min(t.elapsed().as_secs_f64());
            }
            // The same matrix against 4 activation rows, as pairs and as one quad: GB/s of weights × rows.
            let x4: Vec<f32> = (0..4 * cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let mut a4 = Acts::new();
            a4.quantize(act_format(ty), &x4, 4, cols).expect("whole blocks");
            let mut o: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; rows]);
            let (mut pair, mut quad) = (f64::MAX, f64::MAX);
            for _ in 0..200 {
                let [o0, o1, o2, o3] = &mut o;
                let t = std::time::Instant::now();
                k.dot_rows_pair(&w, &a4, 0, [&mut *o0, &mut *o1]);
                k.dot_rows_pair(&w, &a4, 2, [&mut *o2, &mut *o3]);
                pair = pair.min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                k.dot_rows_quad(&w, &a4, 0, [o0, o1, o2, o3]);
                quad = quad.min(t.elapsed().as_secs_f64());
            }
            let g = |t: f64| 4.0 * w.len() as f64 / t / 1e9;
            println!(
                "QUICK {:5} {rows}x{cols}: {:6.1} GB/s; 4 rows as pairs {:6.1}, as a quad {:6.1}",
                ty.name(),
                w.len() as f64 / best / 1e9,
                g(pair),
                g(quad)
            );
            continue;
        }
        let x: Vec<f32> = (0..cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let mut acts = Acts::new();
        acts.quantize(act_format(ty), &x, 1, cols).expect("whole blocks");
        let mut out = vec![0f32; rows];
        g.throughput(Throughput::Bytes(w.len() as u64));
        for (name, k) in Kernel::variants(ty) {
            g.bench_function(BenchmarkId::new(format!("{}_{rows}x{cols}", ty.name()), name), |b| {
                b.iter(|| k.dot_rows(&w, &acts, 0, &mut out))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("ggml_quantize_acts");
    for (fmt, cols) in [(chorus_core::ggml::ActFormat::Q8_0, 896), (chorus_core::ggml::ActFormat::Q8K, 4864)] {
        let x: Vec<f32> = (0..cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let mut acts = Acts::new();
        g.throughput(Throughput::Elements(cols as u64));
        g.bench_function(format!("{fmt:?}_{cols}"), |b| b.iter(|| acts.quantize(fmt, &x, 1, cols).expect("blocks")));
    }
    g.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    super::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
