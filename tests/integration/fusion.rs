//! Fused decoding on a real model (SmolLM2-135M): the §A.12 invariants that hold end to end, batch
//! independence, and the tokenizer check.

use chorus_core::GenerateOptions;
use chorus_core::fusion::{FusionConfig, Solver};
use chorus_engine::{Backend, FuseOptions, FuseOutput, Fusion, FusionSetup, Member};

fn member(name: &str, key: &str, instruction: Option<&str>) -> Member {
    Member {
        name: name.into(),
        model: crate::common::loaded(key, Backend::Cpu).expect("cpu model"),
        instruction: instruction.map(str::to_string),
    }
}

fn run(fusion: &Fusion, prompts: &[&str], solver: Solver, chat: bool) -> Vec<FuseOutput> {
    let opts = FuseOptions {
        generate: GenerateOptions { max_new_tokens: 12, ..Default::default() },
        fusion: FusionConfig::with_solver(solver),
        chat,
    };
    let prompts: Vec<String> = prompts.iter().map(|s| s.to_string()).collect();
    fusion.generate_batch(&prompts, &opts, &mut |_| {}).expect("fused generation")
}

const PROMPT: &str = "Name three colours of the rainbow.";
const EXPERT: &str = "You are a poet. Answer every question with a short rhyme.";

/// §A.12.7 on real logits: with L = S the expert's distribution is reachable, so α = 1 at every step and
/// the fused tokens are the expert's own greedy tokens.
#[test]
fn self_transfer_follows_the_expert() {
    let fusion = Fusion::new(FusionSetup {
        large: member("large", "smollm2", None),
        base: member("base", "smollm2", None),
        experts: vec![member("poet", "smollm2", Some(EXPERT))],
    })
    .unwrap();
    let dlf = run(&fusion, &[PROMPT], Solver::Paper, true).remove(0);
    assert!(!dlf.steps.is_empty());
    for s in &dlf.steps {
        assert_eq!(s.alpha, vec![1.0], "step {}: {:?}", s.step, s);
        assert!(s.loss.unwrap() < 1e-6, "step {}: loss {:?}", s.step, s.loss);
    }
    let expert = run(&fusion, &[PROMPT], Solver::ExpertOnly, true).remove(0);
    assert_eq!(dlf.tokens, expert.tokens);
}

/// §A.12.8 on real logits: an expert identical to the base picks α = 0, and the fused output is exactly
/// the large model's own greedy generation.
#[test]
fn null_expert_is_the_large_model() {
    let large = crate::common::loaded("smollm2", Backend::Cpu).unwrap();
    let fusion = Fusion::new(FusionSetup {
        large: member("large", "smollm2", None),
        base: member("base", "smollm2", Some("Background: ")),
        experts: vec![member("same", "smollm2", Some("Background: "))],
    })
    .unwrap();
    let out = run(&fusion, &[PROMPT], Solver::Paper, false).remove(0);
    assert!(out.steps.iter().all(|s| s.alpha == vec![0.0]));
    let ids = large.encode(&chorus_engine::Prompt::Text(PROMPT.into())).unwrap();
    let alone =
        large.generate(&ids, &GenerateOptions { max_new_tokens: 12, ..Default::default() }, &mut |_, _| {}).unwrap();
    assert_eq!(out.tokens, alone.tokens);
}

/// §A.12.11 end to end: a row's α and tokens do not depend on the other rows of the batch; the trace
/// holds the loss and the four KL values of every step.
#[test]
fn batch_rows_are_independent() {
    let fusion = Fusion::new(FusionSetup {
        large: member("large", "smollm2", None),
        base: member("base", "smollm2", Some("Answer briefly. ")),
        experts: vec![
            member("poet", "smollm2", Some("Answer with a rhyme. ")),
            member("math", "smollm2", Some("You are a mathematician. ")),
        ],
    })
    .unwrap();
    let prompts = ["What is two plus two?", "Describe the sea in one sentence, please, with detail."];
    let both = run(&fusion, &prompts, Solver::Paper, false);
    for (r, p) in prompts.iter().enumerate() {
        let alone = run(&fusion, &[p], Solver::Paper, false).remove(0);
        assert_eq!(alone.tokens, both[r].tokens, "row {r}");
        let a: Vec<_> = alone.steps.iter().map(|s| s.alpha.clone()).collect();
        let b: Vec<_> = both[r].steps.iter().map(|s| s.alpha.clone()).collect();
        assert_eq!(a, b, "row {r}");
    }
    for s in &both[0].steps {
        assert!(s.alpha.iter().filter(|&&a| a != 0.0).count() <= 1, "one-hot");
        assert_eq!(s.evaluations, 42);
        assert_eq!((s.kl_expert_base.len(), s.kl_base_expert.len()), (2, 2));
        assert!(s.kl_fused_large.unwrap() >= 0.0 && s.kl_large_fused.unwrap() >= 0.0);
    }
}

/// Models with different tokenizers cannot be fused: the error names both.
#[test]
fn tokenizer_mismatch_names_both_models() {
    let err = Fusion::new(FusionSetup {
        large: member("large", "qwen0.5b", None),
        base: member("base", "smollm2", None),
        experts: vec![member("e", "smollm2", None)],
    })
    .err()
    .expect("mismatch must be rejected")
    .to_string();
    assert!(err.contains("tokenizer mismatch") && err.contains("large") && err.contains("base"), "{err}");
    assert!(err.contains("qwen") && err.contains("SmolLM2"), "{err}");
}

/// The wgpu path (logits copied on the device into the fusion kernel, only the choice read back) makes
/// the same choices as the CPU path on the same f32 weights (lavapipe in CI).
#[test]
fn device_fusion_matches_host_fusion() {
    use chorus_models::WeightMode;
    let Some(gpu) = crate::common::loaded_with("smollm2", Backend::Wgpu, None) else { return };
    let cpu = crate::common::loaded_with("smollm2", Backend::Cpu, Some(WeightMode::F32)).unwrap();
    let setup = |m: &std::sync::Arc<chorus_engine::LoadedModel>| FusionSetup {
        large: Member { name: "large".into(), model: m.clone(), instruction: None },
        base: Member { name: "base".into(), model: m.clone(), instruction: Some("Answer briefly. ".into()) },
        experts: vec![
            Member { name: "poet".into(), model: m.clone(), instruction: Some("Answer with a rhyme. ".into()) },
            Member { name: "math".into(), model: m.clone(), instruction: Some("You are a mathematician. ".into()) },
        ],
    };
    let opts = FuseOptions {
        // Every decode step is a new sequence length, i.e. new kernels for lavapipe to compile: 3 steps.
        generate: GenerateOptions { max_new_tokens: 3, ..Default::default() },
        fusion: FusionConfig::default(),
        chat: false,
    };
    let prompts = vec!["What is two plus two?".to_string(), "The sea is".to_string()];
    let mut saw_fused = false;
    let on_gpu = Fusion::new(setup(&gpu))
        .unwrap()
        .generate_batch(&prompts, &opts, &mut |ev| saw_fused |= ev.fused.is_some())
        .unwrap();
    assert!(!saw_fused, "greedy decoding on wgpu keeps the fused logits on the device");
    assert!(on_gpu.iter().all(|o| o.host_steps == 0 && o.host_reason.is_none()), "no step read logits back");
    // A solver without a device kernel is reported, not hidden.
    let refine = FuseOptions {
        generate: GenerateOptions { max_new_tokens: 1, ..Default::default() },
        fusion: FusionConfig::with_solver(Solver::Refine),
        chat: false,
    };
    let r = Fusion::new(setup(&gpu)).unwrap().generate_batch(&prompts[..1], &refine, &mut |_| {}).unwrap().remove(0);
    assert_eq!(r.host_steps, r.steps.len());
    assert!(r.host_reason.as_deref().is_some_and(|w| w.contains("refine")), "{:?}", r.host_reason);
    let on_cpu = Fusion::new(setup(&cpu)).unwrap().generate_batch(&prompts, &opts, &mut |_| {}).unwrap();
    // host_steps counts the batch's steps: at least each row's own.
    assert!(on_cpu.iter().all(|o| o.host_reason.is_none() && o.host_steps >= o.steps.len() && o.host_steps > 0));
    for (g, c) in on_gpu.iter().zip(&on_cpu) {
        assert_eq!(g.tokens, c.tokens);
        for (sg, sc) in g.steps.iter().zip(&c.steps) {
            assert_eq!(sg.alpha, sc.alpha, "step {}", sg.step);
            let (lg, lc) = (sg.loss.unwrap(), sc.loss.unwrap());
            assert!((lg - lc).abs() <= 1e-3 * lc.max(1e-3), "step {}: loss {lg} vs {lc}", sg.step);
            assert_eq!(sg.evaluations, 42);
        }
    }
}
