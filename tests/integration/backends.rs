//! The same model on the CPU (every weight mode) and on wgpu, on tiny random Llamas written by
//! `gguf_write` (no download needed): an f32-stored one across backends (identical greedy tokens, logits
//! within 1e-4), and one whose projections are integer-coded GGML blocks, for the quantized CPU path
//! against the dequantized f32 weights.

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
    // F32-stored GGUF tensors are not integer-coded: Quantized mode falls back to the same f32 path (the
    // quantized path itself is `quantized_cpu_path_matches_the_dequantized_weights`).
    let b = load(Backend::Cpu, &cpu, WeightMode::Quantized);
    assert_eq!(b.decoder.quantized_projections(), (0, 9), "float-stored tensors stay f32");
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

/// A model whose every projection and tied embedding is stored as GGML blocks (Q4_0, Q4_1, Q5_0, Q5_1,
/// Q8_0, Q4_K, Q5_K, Q6_K: `gguf_write::TINY_QUANT_TYPES`). `WeightMode::F32` dequantizes them to f32
/// tensors, the reference; `WeightMode::Quantized` must keep all 9 projections integer-coded (checked with
/// `Decoder::quantized_projections`, so the test cannot pass on a silent fall-back to f32) and agree with
/// it: the same weights bit for bit and f32 inputs, so only the summation order differs. Tolerances, at
/// every position of the prompt, relative to the largest |logit| M (here ≈ 190; RMS ≈ 13):
/// - `Quantized`: |Δ| ≤ 2e-6·M, some 25 f32 ulps of M (summation order; measured ≈ 4e-7·M), identical
///   greedy tokens;
/// - `Q16` (the CPU default: inputs as two 8-bit planes, ≤ max|x|/32,512 rounding per value):
///   |Δ| ≤ 1e-4·M (measured ≈ 1e-5·M), and Δ ≠ 0 somewhere (integer activations did run).
#[test]
fn quantized_cpu_path_matches_the_dequantized_weights() {
    let cpu = chorus_engine::device(Backend::Cpu).unwrap();
    let bytes = chorus_models::gguf_write::tiny_llama_quantized(11);
    let g = GgufFile::parse("q.gguf", FileBytes::from_vec(bytes.clone())).unwrap();
    let names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
    for (i, tys) in chorus_models::gguf_write::TINY_QUANT_TYPES.iter().enumerate() {
        for (name, &ty) in names.iter().zip(tys) {
            let t = g.tensor(&format!("blk.{i}.{name}.weight")).unwrap();
            assert_eq!(t.ggml_type(), Some(ty), "blk.{i}.{name}");
        }
    }
    assert_eq!(g.tensor("token_embd.weight").unwrap().ggml_type(), Some(chorus_core::GgmlType::Q8_0));
    let f = load_bytes(bytes.clone(), Backend::Cpu, &cpu, WeightMode::F32);
    let q = load_bytes(bytes.clone(), Backend::Cpu, &cpu, WeightMode::Quantized);
    let q16 = load_bytes(bytes, Backend::Cpu, &cpu, WeightMode::Q16);
    assert_eq!(f.decoder.quantized_projections(), (0, 9), "F32 mode dequantizes every projection");
    assert_eq!(q.decoder.quantized_projections(), (9, 9), "Quantized mode keeps every projection integer-coded");
    assert_eq!(q16.decoder.quantized_projections(), (9, 9));

    let ids = f.encode(&Prompt::Text("Quantized, tiny and exact?".into())).unwrap();
    let want = all_logits(&f, &ids);
    let rms =
        (want.iter().flatten().map(|&v| v as f64 * v as f64).sum::<f64>() / (want.len() * want[0].len()) as f64).sqrt();
    assert!((1.0..50.0).contains(&rms), "logits of a sane scale: RMS {rms}");
    let big = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = |got: &[Vec<f32>]| {
        got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
    };
    let (dq, d16) = (max_diff(&all_logits(&q, &ids)), max_diff(&all_logits(&q16, &ids)));
    eprintln!("logits: RMS {rms:.2}, max |logit| {big:.2}; max |Δ| vs dequantized f32: Quantized {dq:e}, Q16 {d16:e}");
    assert!(dq <= 2e-6 * big, "Quantized vs dequantized f32: max |Δ| = {dq} (max |logit| {big})");
    assert!(d16 <= 1e-4 * big && d16 > 0.0, "Q16 vs dequantized f32: max |Δ| = {d16} (max |logit| {big})");

    let tokens = |m: &LoadedModel| m.greedy_trace(&ids, 8, 1).unwrap().iter().map(|s| s.token).collect::<Vec<_>>();
    assert_eq!(tokens(&q), tokens(&f), "greedy tokens, Quantized vs F32");
}

/// wgpu has no integer-coded matmul: asking it for a block-keeping weight mode is an error naming the
/// mode and the way out, not a silent run of every projection on the CPU.
#[test]
fn wgpu_refuses_integer_coded_weights() {
    let Some(gpu) = crate::common::wgpu_or_skip("wgpu_refuses_integer_coded_weights") else { return };
    let bytes = chorus_models::gguf_write::tiny_llama_quantized(3);
    for mode in [WeightMode::Quantized, WeightMode::Q16, WeightMode::Q8] {
        let files =
            ModelFiles::from_gguf(GgufFile::parse("tiny.gguf", FileBytes::from_vec(bytes.clone())).unwrap()).unwrap();
        let Err(e) = LoadedModel::load(files, Backend::Wgpu, &gpu, Some(mode), &mut |_, _| {}) else {
            panic!("{mode:?} loaded on wgpu");
        };
        let e = e.to_string();
        assert!(e.contains(&format!("{mode:?}")) && e.contains("--weights f32"), "{e}");
    }
    let files = ModelFiles::from_gguf(GgufFile::parse("tiny.gguf", FileBytes::from_vec(bytes)).unwrap()).unwrap();
    assert!(LoadedModel::load(files, Backend::Wgpu, &gpu, Some(WeightMode::F32), &mut |_, _| {}).is_ok());
}

/// The CPU engine (`WeightMode::Native`: the file's blocks dotted in place with activations quantized to
/// Q8_0 / Q8_K per matmul, its own decode loop) against burn's forward on the dequantized weights, at
/// every position of the prompt, on both tiny Llamas:
/// - f32-stored tensors (f32 activations, only the summation order differs): |Δ| ≤ 1e-5·M (measured 2.9e-7·M);
/// - every integer-coded type ([`chorus_models::gguf_write::TINY_QUANT_TYPES`]), 8-bit activations
///   (≤ max|x|/254 rounding per value, llama.cpp's scheme): |Δ| ≤ 5e-3·M (measured 1.7e-3·M) and the
///   same greedy tokens.
///
/// Both files are Llama GGUFs, whose Q/K rows are stored permuted for RoPE on adjacent pairs: the engine
/// uses them as stored (interleaved RoPE), burn un-permutes them (half-split), so agreement also checks
/// that the two conventions are the same model.
#[test]
fn cpu_engine_matches_the_burn_forward() {
    let cpu = chorus_engine::device(Backend::Cpu).unwrap();
    for (what, bytes, rel) in [
        ("f32-stored", chorus_models::gguf_write::tiny_llama(5), 1e-5f32),
        ("integer-coded", chorus_models::gguf_write::tiny_llama_quantized(11), 5e-3),
    ] {
        let f = load_bytes(bytes.clone(), Backend::Cpu, &cpu, WeightMode::F32);
        let n = load_bytes(bytes, Backend::Cpu, &cpu, WeightMode::Native);
        assert!(n.decoder.cpu().is_some(), "{what}: Native mode runs the CPU engine");
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
