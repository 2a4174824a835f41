//! The decoder runtime against transformers' float32 forward pass on the same GGUF weights: identical
//! greedy tokens and top-5 logits within 1e-3 on the CPU (dequantized f32 weights) and wgpu backends; the
//! CPU default (the CPU engine, 8-bit inputs) within a looser, stated bound.

use chorus_core::GenerateOptions;
use chorus_engine::{Backend, LoadedModel, Prompt, StopReason};
use chorus_models::WeightMode;

use crate::common::{GoldenCase, GoldenStep};

/// Logit tolerance against the PyTorch reference (f32, different summation orders over 24–30 layers).
const TOL: f32 = 1e-3;

/// Logit tolerance of [`WeightMode::Native`], teacher-forced (measured worst cases are printed), the CPU default (the CPU engine): llama.cpp's activations, Q8_0 per 32 values
/// for the legacy formats and Q8_K per 256 for the k-quants (≤ max|x|/254 of the block per value).
/// Measured: SmolLM2 0.63, Qwen2.5-Coder-0.5B 0.25.
const TOL_NATIVE: f32 = 1.0;

/// `steps` greedy steps of case `c` (KV-cached one-token decoding): the reference's token at every step and
/// every reference top-5 logit within [`TOL`] (looked up in our top 20, so that near-equal logits that swapped
/// places are still compared by id). Returns the largest difference.
fn check_greedy(what: &str, m: &LoadedModel, c: &GoldenCase, steps: usize) -> f32 {
    let trace = m.greedy_trace(&c.ids, steps, 20).expect("trace");
    assert_eq!(trace.len(), steps);
    let mut worst = 0f32;
    for (i, (got, want)) in trace.iter().zip(&c.steps).enumerate() {
        assert_eq!(got.token, want.token, "{what} {:?} greedy step {i}", c.prompt);
        for (j, &(id, logit)) in want.top.iter().enumerate() {
            let ours = got.top.iter().find(|t| t.0 == id).map_or(f32::NAN, |t| t.1);
            assert!((ours - logit).abs() <= TOL, "{what} {:?} step {i} top{j} id {id}: {ours} vs {logit}", c.prompt);
            worst = worst.max((ours - logit).abs());
        }
    }
    worst
}

/// Every golden case greedily to its end on the CPU in an exact mode (the dequantized f32 weights).
fn check_goldens_cpu(key: &str, mode: WeightMode) {
    let m = crate::common::loaded_with(key, Backend::Cpu, Some(mode)).expect("cpu");
    let worst = crate::common::golden(key)
        .cases
        .iter()
        .map(|c| check_greedy(&format!("{key}/Cpu/{mode:?}"), &m, c, c.steps.len()))
        .fold(0f32, f32::max);
    eprintln!("{key}/Cpu/{mode:?}: largest top-5 logit difference {worst:.2e}");
}

#[test]
fn smollm2_cpu_f32_weights_match_transformers() {
    check_goldens_cpu("smollm2", WeightMode::F32);
}

/// The CPU engine on the reference's own token sequence (teacher-forced: one rounding
/// difference must not send the comparison down another continuation): every reference top-5 logit
/// within the mode's tolerance, and the same argmax wherever the reference's top-2 margin exceeds twice
/// that. Returns the largest difference.
fn check_teacher_forced(key: &str, mode: WeightMode, tol: f32) -> f32 {
    let m = crate::common::loaded_with(key, Backend::Cpu, Some(mode)).expect("cpu");
    let g = crate::common::golden(key);
    let mut worst = 0f32;
    for c in &g.cases {
        let mut ids = c.ids.clone();
        ids.extend(c.steps.iter().map(|s| s.token));
        let mut cache = m.decoder.new_cache(1);
        let logits = m.decoder.forward(&[ids.clone()], &[vec![true; ids.len()]], &mut cache, true).expect("forward");
        let rows = chorus_models::decoder::to_rows(logits).expect("rows");
        for (i, want) in c.steps.iter().enumerate() {
            let row = &rows[c.ids.len() - 1 + i];
            for &(id, logit) in &want.top {
                let d = (row[id as usize] - logit).abs();
                assert!(d <= tol, "{key}/{mode:?} {:?} step {i} id {id}: {} vs {logit}", c.prompt, row[id as usize]);
                worst = worst.max(d);
            }
            if want.top[0].1 - want.top[1].1 > 2.0 * tol {
                let got = chorus_core::sampling::argmax(row) as u32;
                assert_eq!(got, want.token, "{key}/{mode:?} {:?} step {i}", c.prompt);
            }
        }
    }
    eprintln!("{key}/Cpu/{mode:?}: largest top-5 logit difference {worst:.4}");
    // Rounding must actually happen: a difference this small would mean the f32 path ran.
    assert!(worst > 1e-5, "{key}/{mode:?}: integer inputs gave f32-exact logits ({worst})");
    worst
}

#[test]
fn cpu_default_engine_stays_close_to_transformers() {
    assert_eq!(chorus_engine::backend::default_weight_mode(Backend::Cpu), WeightMode::Native);
    for key in ["smollm2", "qwen0.5b"] {
        let m = crate::common::loaded_with(key, Backend::Cpu, Some(WeightMode::Native)).expect("cpu");
        assert!(m.decoder.cpu().is_some(), "{key}: the default runs the CPU engine");
        check_teacher_forced(key, WeightMode::Native, TOL_NATIVE);
    }
}

#[test]
fn qwen_cpu_f32_weights_match_transformers() {
    check_goldens_cpu("qwen0.5b", WeightMode::F32);
}

/// One step's logits against the reference: the greedy token, and every reference top-5 logit within [`TOL`].
fn check_row(what: &str, i: usize, row: &[f32], want: &GoldenStep) -> f32 {
    assert_eq!(chorus_core::sampling::argmax(row) as u32, want.token, "{what} step {i}");
    let mut worst = 0f32;
    for (j, &(id, logit)) in want.top.iter().enumerate() {
        let d = (row[id as usize] - logit).abs();
        assert!(d <= TOL, "{what} step {i} top{j} id {id}: {} vs {logit}", row[id as usize]);
        worst = worst.max(d);
    }
    worst
}

/// The goldens on a device where every new sequence length costs kernel compilations (wgpu on lavapipe
/// compiles per shape; greedy decoding of 4 × 16 steps took ~590 s there): per case, the prompt in one
/// forward (step 0 from its last position), then the reference's 15 continuation tokens appended to the
/// KV cache in a second forward (steps 1–15 from every position: the cached-attention path with a
/// causal offset). Then `greedy_steps` real one-token greedy steps of the first case (the decode path).
/// Teacher forcing on the reference's tokens sees the same contexts as greedy decoding wherever the
/// greedy tokens agree, which `check_row` asserts at every step.
fn check_goldens_chunked(key: &str, backend: Backend, max_cases: usize, greedy_steps: usize) {
    let Some(m) = crate::common::loaded_with(key, backend, Some(WeightMode::F32)) else { return };
    let g = crate::common::golden(key);
    let mut worst = 0f32;
    for c in g.cases.iter().take(max_cases) {
        let what = format!("{key}/{backend:?} {:?}", c.prompt);
        let mut cache = m.decoder.new_cache(1);
        let last = m
            .decoder
            .forward(std::slice::from_ref(&c.ids), &[vec![true; c.ids.len()]], &mut cache, false)
            .expect("prefill");
        let last = chorus_models::decoder::to_rows(last).expect("rows");
        worst = worst.max(check_row(&what, 0, &last[0], &c.steps[0]));
        let cont: Vec<u32> = c.steps[..c.steps.len() - 1].iter().map(|s| s.token).collect();
        let rows = m
            .decoder
            .forward(std::slice::from_ref(&cont), &[vec![true; cont.len()]], &mut cache, true)
            .expect("append");
        let rows = chorus_models::decoder::to_rows(rows).expect("rows");
        assert_eq!(rows.len(), cont.len());
        for (i, (row, want)) in rows.iter().zip(&c.steps[1..]).enumerate() {
            worst = worst.max(check_row(&what, i + 1, row, want));
        }
    }
    worst = worst.max(check_greedy(&format!("{key}/{backend:?}"), &m, &g.cases[0], greedy_steps));
    eprintln!("{key}/{backend:?}: largest top-5 logit difference {worst:.2e}");
}

/// The device decoder (wgpu's default: the GGUF's blocks on the device, f32 activations) greedily to
/// the end of every golden case, as the CPU's f32 path does: the same tokens, top-5 logits within [`TOL`].
fn check_goldens_wgpu(key: &str) {
    let Some(m) = crate::common::loaded(key, Backend::Wgpu) else { return };
    assert!(m.decoder.gpu().is_some(), "{key}: wgpu's default runs the device decoder");
    let worst = crate::common::golden(key)
        .cases
        .iter()
        .map(|c| check_greedy(&format!("{key}/Wgpu"), &m, c, c.steps.len()))
        .fold(0f32, f32::max);
    eprintln!("{key}/Wgpu: largest top-5 logit difference {worst:.2e}");
}

#[test]
fn smollm2_wgpu_matches_transformers() {
    check_goldens_wgpu("smollm2");
}

#[test]
fn qwen_wgpu_matches_transformers() {
    check_goldens_wgpu("qwen0.5b");
}

/// burn's wgpu path (`--weights f32`: dequantized tensors, kernels compiled per shape, kept for task
/// deltas) on one case, chunked so that few shapes occur.
#[test]
fn smollm2_wgpu_f32_weights_match_transformers() {
    check_goldens_chunked("smollm2", Backend::Wgpu, 1, 1);
}

#[test]
fn batched_left_padded_generation_equals_one_by_one() {
    let m = crate::common::loaded("smollm2", Backend::Cpu).expect("cpu");
    let prompts: Vec<Vec<u32>> =
        ["The capital of France is", "Once upon a time, in a land far away, there lived a", "1, 2, 3,"]
            .iter()
            .map(|p| m.encode(&Prompt::Text(p.to_string())).unwrap())
            .collect();
    let opts = GenerateOptions { max_new_tokens: 12, stop_at_eos: false, ..Default::default() };
    let batched = m.generate_batch(&prompts, &opts).expect("batch");
    for (p, b) in prompts.iter().zip(&batched) {
        let single = m.generate(p, &opts, &mut |_, _| {}).expect("single");
        assert_eq!(b.tokens, single.tokens, "prompt of {} tokens", p.len());
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_stop_strings_cut() {
    let m = crate::common::loaded("smollm2", Backend::Cpu).expect("cpu");
    let ids = m.encode(&Prompt::Text("Once upon a time".into())).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 16,
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        seed: 11,
        stop_at_eos: false,
        ..Default::default()
    };
    let a = m.generate(&ids, &opts, &mut |_, _| {}).unwrap();
    let b = m.generate(&ids, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    let c = m.generate(&ids, &GenerateOptions { seed: 12, ..opts.clone() }, &mut |_, _| {}).unwrap();
    assert_ne!(a.tokens, c.tokens, "different seeds gave the same 16 tokens");

    // Greedy "The capital of France is" continues " Paris." — stop at "."
    let ids = m.encode(&Prompt::Text("The capital of France is".into())).unwrap();
    let mut streamed = String::new();
    let out = m
        .generate(
            &ids,
            &GenerateOptions { max_new_tokens: 16, stop: vec![".".into()], ..Default::default() },
            &mut |_, d| streamed.push_str(d),
        )
        .unwrap();
    assert_eq!(out.stop_reason, StopReason::StopString);
    assert_eq!(out.text, " Paris");
    assert_eq!(streamed, out.text);
}

#[test]
fn prompts_longer_than_the_context_are_rejected_before_the_model_runs() {
    let m = crate::common::loaded("smollm2", Backend::Cpu).expect("cpu");
    let ctx = m.decoder.config.max_position_embeddings;
    let ids = vec![42u32; ctx + 1];
    let e = m.generate(&ids, &GenerateOptions::default(), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains(&format!("context of {ctx}")), "{e}");
    let e = m.generate(&[u32::MAX], &GenerateOptions::default(), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
}
