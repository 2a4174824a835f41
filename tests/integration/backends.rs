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

/// `native` weights on wgpu are the device decoder (`chorus_gpu::decoder`): every projection in its GGML
/// block format on the device, decoded inside the WGSL matrix products with f32 activations, so its
/// logits equal burn's f32 forward on the dequantized weights up to summation order (|Δ| ≤ 1e-4 of the
/// logit range, every position of the prompt), on the tiny Llama whose projections cover every block type
/// of both layers ([`chorus_models::gguf_write::TINY_QUANT_TYPES`]), with the same greedy tokens; its
/// device weight bytes are at most 1.15 × the file's matrix bytes.
#[test]
fn wgpu_native_weights_run_the_device_decoder() {
    let Some(gpu) = crate::common::wgpu_or_skip("wgpu_native_weights_run_the_device_decoder") else { return };
    let cpu = chorus_engine::device(Backend::Cpu).unwrap();
    let bytes = chorus_models::gguf_write::tiny_llama_quantized(3);
    let want = load_bytes(bytes.clone(), Backend::Cpu, &cpu, WeightMode::F32);
    let got = load_bytes(bytes.clone(), Backend::Wgpu, &gpu, WeightMode::Native);
    assert_eq!(chorus_engine::backend::default_weight_mode(Backend::Wgpu), WeightMode::Native);
    let dec = got.decoder.gpu().expect("native weights on wgpu load the device decoder").device_decoder();
    assert_eq!(got.decoder.quantized_projections(), (9, 9));
    let g = GgufFile::parse("q.gguf", FileBytes::from_vec(bytes)).unwrap();
    // Every matrix of the file (the tied LM head is the embedding's bytes).
    let file_bytes: u64 =
        g.tensors.iter().filter(|t| t.dims.len() == 2).map(|t| g.tensor_bytes(t).unwrap().len() as u64).sum();
    assert!(
        dec.device_weight_bytes() as f64 <= 1.15 * file_bytes as f64,
        "device {} bytes vs file {file_bytes}",
        dec.device_weight_bytes()
    );
    let ids = want.encode(&Prompt::Text("Hello, tiny world!".into())).unwrap();
    let (a, b) = (all_logits(&want, &ids), all_logits(&got, &ids));
    let range = a.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        for (j, (p, q)) in x.iter().zip(y).enumerate() {
            assert!((p - q).abs() <= 1e-4 * range, "position {i} logit {j}: {q} vs f32 {p} (range {range})");
        }
    }
    let (t1, t2) = (want.greedy_trace(&ids, 12, 1).unwrap(), got.greedy_trace(&ids, 12, 1).unwrap());
    let greedy: Vec<u32> = t1.iter().map(|s| s.token).collect();
    assert_eq!(greedy, t2.iter().map(|s| s.token).collect::<Vec<_>>());
    // Greedy generation takes its tokens from the device (argmax there, ids read back): the same tokens,
    // alone and in a left-padded batch with a shorter prompt.
    let opts = chorus_core::GenerateOptions { max_new_tokens: 12, stop_at_eos: false, ..Default::default() };
    let short = ids[..5].to_vec();
    let batch = got.generate_batch(&[ids.clone(), short.clone()], &opts).unwrap();
    assert_eq!(batch[0].tokens, greedy, "device greedy, batch row 0");
    assert_eq!(batch[1].tokens, got.generate_batch(&[short], &opts).unwrap()[0].tokens, "batch row 1 alone");
}

/// Decoding never compiles: after the first tokens, 64 more greedy tokens of SmolLM2 on the device
/// decoder create no pipeline (the cache grows past its first 256 positions on the way: a copy, not a
/// new shape), and each token is one command buffer plus its read-back.
#[test]
fn device_decoding_creates_no_pipelines_after_warm_up() {
    let Some(m) = crate::common::loaded("smollm2", Backend::Wgpu) else { return };
    // Counted by the decoder: other tests share the device and compile their own kernels meanwhile.
    let dec = m.decoder.gpu().expect("device decoder").device_decoder();
    let prompt: Vec<u32> = m.encode(&Prompt::Text("Once upon a time".into())).unwrap();
    // A long prompt so the 64 tokens cross the cache's first capacity (256 positions).
    let ids: Vec<u32> = prompt.iter().copied().cycle().take(220).collect();
    let opts = chorus_core::GenerateOptions { max_new_tokens: 68, stop_at_eos: false, ..Default::default() };
    let mut marks = Vec::new();
    let out = m
        .generate(&ids, &opts, &mut |_, _| {
            let (_, pipelines, submits) = dec.counters();
            marks.push((pipelines, submits))
        })
        .expect("generate");
    assert_eq!(out.tokens.len(), 68);
    let (p4, s4) = marks[3];
    let (p_end, s_end) = *marks.last().unwrap();
    assert_eq!(p_end, p4, "pipelines created while decoding: {:?}", marks.iter().map(|m| m.0).collect::<Vec<_>>());
    let per_token = (s_end - s4) as f64 / (marks.len() - 4) as f64;
    assert!(per_token <= 2.0, "{per_token} submissions per token");
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
