//! The same model on the CPU (both weight forms) and on wgpu, on tiny random Llamas written by
//! `gguf_write` (no download needed): an f32-stored one across backends (identical greedy tokens, logits
//! within 1e-4), and one whose projections are GGML blocks of every type, for the CPU engine against
//! burn's forward on the dequantized f32 weights.

use chorus_engine::{Backend, LoadedModel, Prompt};
use chorus_models::{FileBytes, GgufFile, ModelFiles, WeightMode};

fn load_bytes(bytes: Vec<u8>, backend: Backend, device: &burn::tensor::Device, mode: WeightMode) -> LoadedModel {
    let files = ModelFiles::from_gguf(GgufFile::parse("tiny.gguf", FileBytes::from_vec(bytes)).unwrap()).unwrap();
    LoadedModel::load(files, backend, device, Some(mode), &mut |_, _| {}).unwrap()
}

fn load(backend: Backend, device: &burn::tensor::Device, mode: WeightMode) -> LoadedModel {
    load_bytes(chorus_models::gguf_write::tiny_llama(3), backend, device, mode)
}

/// The logits of every position of `ids` (`[len][vocab]`), one forward pass from an empty cache.
fn all_logits(m: &LoadedModel, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.decoder.new_cache(1);
    let x = m.decoder.forward(&[ids.to_vec()], &[vec![true; ids.len()]], &mut cache, true).unwrap();
    chorus_models::decoder::to_rows(x).unwrap()
}

#[test]
fn tiny_model_agrees_across_backends() {
    let cpu = chorus_engine::device(Backend::Cpu).unwrap();
    let a = load(Backend::Cpu, &cpu, WeightMode::F32);
    let ids = a.encode(&Prompt::Text("Hello, tiny world!".into())).unwrap();
    assert_eq!(ids.len(), "Hello, tiny world!".len(), "byte-level tokens");
    let want = a.greedy_trace(&ids, 12, 5).unwrap();
    assert_eq!(a.decoder.quantized_projections(), (0, 9), "F32 mode dequantizes every projection");
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

/// The CPU engine is a host engine: asking wgpu for `native` weights is an error naming the way out, not
/// a silent run of every projection on the CPU.
#[test]
fn wgpu_refuses_native_weights() {
    let Some(gpu) = crate::common::wgpu_or_skip("wgpu_refuses_native_weights") else { return };
    let bytes = chorus_models::gguf_write::tiny_llama_quantized(3);
    let files =
        || ModelFiles::from_gguf(GgufFile::parse("tiny.gguf", FileBytes::from_vec(bytes.clone())).unwrap()).unwrap();
    let Err(e) = LoadedModel::load(files(), Backend::Wgpu, &gpu, Some(WeightMode::Native), &mut |_, _| {}) else {
        panic!("native weights loaded on wgpu");
    };
    let e = e.to_string();
    assert!(e.contains("native") && e.contains("--weights f32"), "{e}");
    assert!(LoadedModel::load(files(), Backend::Wgpu, &gpu, Some(WeightMode::F32), &mut |_, _| {}).is_ok());
}

/// The CPU engine (`WeightMode::Native`: the file's blocks dotted in place with activations quantized to
/// Q8_0 / Q8_K per matmul, its own decode loop) against burn's forward on the dequantized weights, at
/// every position of the prompt, on both tiny Llamas:
/// - f32-stored tensors (f32 activations, only the summation order differs): |Δ| ≤ 1e-5·M (measured 2.9e-7·M);
/// - every integer-coded type ([`chorus_models::gguf_write::TINY_QUANT_TYPES`]), 8-bit activations
///   (≤ max|x|/254 rounding per value, llama.cpp's scheme): |Δ| ≤ 5e-3·M (measured 1.7e-3·M) and the
///   same greedy tokens.
///
/// Every projection and the tied embedding of the second file are GGML blocks (checked below, so the
/// test cannot pass on a file that silently holds floats), and the engine must read all 9 in place.
///
/// Both files are Llama GGUFs, whose Q/K rows are stored permuted for RoPE on adjacent pairs: the engine
/// uses them as stored (interleaved RoPE), burn un-permutes them (half-split), so agreement also checks
/// that the two conventions are the same model.
#[test]
fn cpu_engine_matches_the_burn_forward() {
    let cpu = chorus_engine::device(Backend::Cpu).unwrap();
    let g =
        GgufFile::parse("q.gguf", FileBytes::from_vec(chorus_models::gguf_write::tiny_llama_quantized(11))).unwrap();
    let names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
    for (i, tys) in chorus_models::gguf_write::TINY_QUANT_TYPES.iter().enumerate() {
        for (name, &ty) in names.iter().zip(tys) {
            assert_eq!(g.tensor(&format!("blk.{i}.{name}.weight")).unwrap().ggml_type(), Some(ty), "blk.{i}.{name}");
        }
    }
    assert_eq!(g.tensor("token_embd.weight").unwrap().ggml_type(), Some(chorus_core::GgmlType::Q8_0));
    for (what, bytes, rel) in [
        ("f32-stored", chorus_models::gguf_write::tiny_llama(5), 1e-5f32),
        ("integer-coded", chorus_models::gguf_write::tiny_llama_quantized(11), 5e-3),
    ] {
        let f = load_bytes(bytes.clone(), Backend::Cpu, &cpu, WeightMode::F32);
        let n = load_bytes(bytes, Backend::Cpu, &cpu, WeightMode::Native);
        assert!(n.decoder.cpu().is_some(), "{what}: Native mode runs the CPU engine");
        assert_eq!(n.decoder.quantized_projections(), (9, 9), "{what}: every projection read in place");
        // A short prompt (the row kernels' quads) and one of 90 tokens (weights packed into panels for the
        // prefill GEMM, `ggml::Panels`, on a CPU that has its kernel).
        let long = "The engine, tiny and fast, packs its weights into panels when a prompt has many tokens.";
        for text in ["The engine, tiny and fast.", long] {
            let ids = f.encode(&Prompt::Text(text.into())).unwrap();
            let want = all_logits(&f, &ids);
            let got = all_logits(&n, &ids);
            assert_eq!((got.len(), got[0].len()), (want.len(), want[0].len()), "{what}: shape");
            let big = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
            let d = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            eprintln!("{what}, {} tokens: max |Δ| native vs burn f32 = {d:e} (max |logit| {big:.2})", ids.len());
            assert!(d <= rel * big, "{what}, {} tokens: max |Δ| = {d} > {rel}·{big}", ids.len());
        }
        let ids = f.encode(&Prompt::Text("The engine, tiny and fast.".into())).unwrap();
        // Decoding step by step from the cache gives the same tokens as burn.
        let tokens = |m: &LoadedModel| m.greedy_trace(&ids, 8, 1).unwrap().iter().map(|s| s.token).collect::<Vec<_>>();
        assert_eq!(tokens(&n), tokens(&f), "{what}: greedy tokens");
    }
}

/// A left-padded batch through the CPU engine equals each prompt alone (padding is skipped, positions
/// count real tokens), for prefill and for every decode step.
#[test]
fn cpu_engine_batches_equal_one_by_one() {
    let cpu = chorus_engine::device(Backend::Cpu).unwrap();
    let n = load_bytes(chorus_models::gguf_write::tiny_llama_quantized(7), Backend::Cpu, &cpu, WeightMode::Native);
    // The batch's 3 × 67 prefill rows and the long prompt alone go through the panel GEMM (`ggml::Panels`),
    // the short prompts alone through the row kernels' quads and pairs.
    let long = "a much longer prompt than the other two, long enough for the panels";
    let prompts: Vec<Vec<u32>> =
        [long, "short", "mid-size one"].iter().map(|p| n.encode(&Prompt::Text(p.to_string())).unwrap()).collect();
    let opts = chorus_core::GenerateOptions { max_new_tokens: 6, stop_at_eos: false, ..Default::default() };
    let batch = n.generate_batch(&prompts, &opts).unwrap();
    for (p, b) in prompts.iter().zip(&batch) {
        let one = n.generate_batch(std::slice::from_ref(p), &opts).unwrap().remove(0);
        assert_eq!(b.tokens, one.tokens, "prompt {p:?}");
    }
    // The raw forward: the last-position logits of a padded row equal those of the row alone.
    let width = prompts[0].len();
    let toks: Vec<Vec<u32>> =
        prompts.iter().map(|p| std::iter::repeat_n(0, width - p.len()).chain(p.iter().copied()).collect()).collect();
    let valid: Vec<Vec<bool>> = prompts
        .iter()
        .map(|p| std::iter::repeat_n(false, width - p.len()).chain(std::iter::repeat_n(true, p.len())).collect())
        .collect();
    let mut cache = n.decoder.new_cache(prompts.len());
    let rows = chorus_models::decoder::to_rows(n.decoder.forward(&toks, &valid, &mut cache, false).unwrap()).unwrap();
    for (r, p) in prompts.iter().enumerate() {
        let alone = all_logits(&n, p);
        let last = alone.last().unwrap();
        let d = rows[r].iter().zip(last).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d <= 1e-4, "row {r}: max |Δ| {d}");
    }
}
