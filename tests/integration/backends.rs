//! The same model on the CPU (both weight modes) and on wgpu: identical greedy tokens, logits within
//! 1e-4, on a tiny random Llama written by `gguf_write::tiny_llama` (no download needed).

use chorus_engine::{Backend, LoadedModel, Prompt};
use chorus_models::{FileBytes, GgufFile, ModelFiles, WeightMode};

fn load(backend: Backend, device: &burn::tensor::Device, mode: WeightMode) -> LoadedModel {
    let bytes = chorus_models::gguf_write::tiny_llama(3);
    let files = ModelFiles::from_gguf(GgufFile::parse("tiny.gguf", FileBytes::from_vec(bytes)).unwrap()).unwrap();
    LoadedModel::load(files, backend, device, Some(mode), &mut |_, _| {}).unwrap()
}

#[test]
fn tiny_model_agrees_across_backends() {
    let cpu = chorus_engine::device(Backend::Cpu).unwrap();
    let a = load(Backend::Cpu, &cpu, WeightMode::F32);
    let ids = a.encode(&Prompt::Text("Hello, tiny world!".into())).unwrap();
    assert_eq!(ids.len(), "Hello, tiny world!".len(), "byte-level tokens");
    let want = a.greedy_trace(&ids, 12, 5).unwrap();
    // F32-stored GGUF tensors are not integer-coded: Quantized mode falls back to the same f32 path.
    let b = load(Backend::Cpu, &cpu, WeightMode::Quantized);
    assert_eq!(
        b.greedy_trace(&ids, 12, 5).unwrap().iter().map(|s| s.token).collect::<Vec<_>>(),
        want.iter().map(|s| s.token).collect::<Vec<_>>()
    );
    let Some(gpu) = crate::common::wgpu_or_skip("tiny_model_agrees_across_backends") else { return };
    let g = load(Backend::Wgpu, &gpu, WeightMode::F32);
    let got = g.greedy_trace(&ids, 12, 5).unwrap();
    for (i, (x, y)) in got.iter().zip(&want).enumerate() {
        assert_eq!(x.token, y.token, "step {i}");
        for (p, q) in x.top.iter().zip(&y.top) {
            assert!((p.1 - q.1).abs() <= 1e-4, "step {i}: {p:?} vs {q:?}");
        }
    }
}
