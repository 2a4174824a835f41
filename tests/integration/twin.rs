//! Twin-Merging on wgpu: the decoder's mixed projections run as `shaders/lowrank_mix.wgsl` on burn's
//! buffers, and give the CPU's logits (rows of one batch with different task weights).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Tensor;
use chorus_engine::Backend;
use chorus_engine::twin::TwinModel;
use chorus_engine::twin_gpu::WgpuLowRank;
use chorus_merge::twin::{TwinOptions, build};
use chorus_models::decoder::{Output, to_rows};
use chorus_models::{LowRankConsts, LowRankKernel};

/// Counts the calls that reach the wgpu kernel.
struct Counting(WgpuLowRank, AtomicUsize);

impl LowRankKernel for Counting {
    fn apply(
        &self,
        x: Tensor<2>,
        w: &Tensor<2>,
        base: Tensor<2>,
        op: &LowRankConsts,
    ) -> chorus_models::Result<Tensor<2>> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.apply(x, w, base, op)
    }
}

fn logits(t: &TwinModel, prompts: &[Vec<u32>], mix: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let d = &t.model.decoder;
    let mut cache = d.new_cache(prompts.len());
    let valid = vec![vec![true; prompts[0].len()]; prompts.len()];
    to_rows(d.forward_mixed(prompts, &valid, &mut cache, Output::All, Some(mix)).unwrap()).unwrap()
}

#[test]
fn mixed_forward_on_wgpu_runs_the_kernel_and_matches_the_cpu() {
    let Some(device) = crate::common::wgpu_or_skip("mixed_forward_on_wgpu_runs_the_kernel_and_matches_the_cpu") else {
        return;
    };
    let fam = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/zoo/family");
    let dir = std::env::temp_dir().join(format!("chorus-twin-wgpu-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let experts: Vec<(String, std::path::PathBuf)> =
        ["add", "reverse", "sort"].iter().map(|t| (t.to_string(), fam.join(format!("small-{t}")))).collect();
    let opts = TwinOptions { rank: chorus_merge::Rank::Density(0.25), ..TwinOptions::default() };
    build(&fam.join("small-base"), &experts, &dir, &opts, &mut |_, _, _| {}).unwrap();
    let cpu = TwinModel::load(&dir, Backend::Cpu, &chorus_engine::device(Backend::Cpu).unwrap()).unwrap();
    let mut gpu = TwinModel::load(&dir, Backend::Wgpu, &device).unwrap();
    let counting =
        Arc::new(Counting(WgpuLowRank::new(chorus_engine::backend::gpu_context().unwrap()), AtomicUsize::new(0)));
    gpu.model.decoder.set_lowrank_kernel(Some(counting.clone()));
    let tk = &cpu.model.files.tokenizer;
    let p = tk.encode("add 12 7 =", false).unwrap();
    let q = tk.encode("rev plant =", false).unwrap();
    let n = p.len().min(q.len());
    let prompts = vec![p[..n].to_vec(), q[..n].to_vec()];
    let mix = vec![vec![0.8, 0.1, 0.1], vec![0.05, 0.9, 0.05]];
    let want = logits(&cpu, &prompts, &mix);
    let got = logits(&gpu, &prompts, &mix);
    // Two layers × four projections plus the tied head.
    assert_eq!(counting.1.load(Ordering::Relaxed), 9, "every mixed projection ran the kernel");
    let worst = want.iter().flatten().zip(got.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("twin mixed forward, wgpu kernel vs cpu: max |Δlogit| = {worst:e}");
    assert!(worst < 1e-3, "{worst}");
    std::fs::remove_dir_all(&dir).ok();
}
