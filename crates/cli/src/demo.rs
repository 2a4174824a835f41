//! `chorus demo`: the embedded default. DLF on the zoo family compiled into the binary (no download, no
//! files): for each prompt, the large base alone, the small expert alone and the fused answer, with α per
//! generated token.

use std::io::Write;

use anyhow::{Context, Result};
use chorus_core::GenerateOptions;
use chorus_core::fusion::{FusionConfig, MultiRule, Solver};
use chorus_engine::{Backend, FuseOptions, Fusion, LoadedModel};
use chorus_zoo::demo::Demo;
use chorus_zoo::tasks::{Example, Task};
use clap::Args;

/// Arguments of `chorus demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// A prompt in a zoo task's format (repeatable), e.g. "rev plant =", "sort 5 2 9 1 =",
    /// "get b in a=4 b=7 c=1 =", "add 35 7 =", "date 2024-03-07 =". Default: one held-out test prompt
    /// per task. A prompt of no known task is fused with every expert.
    #[arg(long)]
    prompt: Vec<String>,
    /// How α is chosen: paper (grid 0..2 step 0.1), refine, joint, static (proxy-tuning with --alpha 1).
    #[arg(long, default_value = "paper")]
    solver: String,
    /// The fixed α of --solver static.
    #[arg(long, value_parser = crate::commands::finite_f32)]
    alpha: Option<f32>,
    /// How several experts share a step (prompts of no known task): centroid (the paper) or route.
    #[arg(long, default_value = "centroid")]
    multi: String,
    #[command(flatten)]
    device: crate::commands::DeviceArgs,
    /// Tokens to generate at most per answer.
    #[arg(long, default_value_t = 24)]
    max_new_tokens: usize,
    /// Print one JSON object per prompt instead of the text report.
    #[arg(long)]
    json: bool,
}

fn alone(m: &LoadedModel, prompt: &str, opts: &GenerateOptions) -> Result<String> {
    let ids = m.files.tokenizer.encode(prompt, false)?;
    Ok(m.generate_batch(&[ids], opts)?.remove(0).text)
}

fn line(s: &str) -> String {
    format!("{:?}", s.split('\n').next().unwrap_or(""))
}

/// `chorus demo`.
pub fn demo(a: DemoArgs) -> Result<()> {
    let backend: Backend = a.device.backend;
    let solver = Solver::parse(&a.solver, a.alpha)?;
    let fusion_cfg = FusionConfig { multi: MultiRule::parse(&a.multi)?, ..FusionConfig::with_solver(solver) };
    let t0 = std::time::Instant::now();
    let demo = Demo::load(backend).context("loading the embedded zoo family")?;
    eprintln!(
        "loaded the embedded zoo family ({} experts) in {:.0} ms",
        demo.experts.len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    let examples: Vec<(String, Option<String>)> = if a.prompt.is_empty() {
        demo.default_examples().into_iter().map(|Example { prompt, answer }| (prompt, Some(answer))).collect()
    } else {
        a.prompt.iter().map(|p| (p.clone(), None)).collect()
    };
    let generate = GenerateOptions { max_new_tokens: a.max_new_tokens, ..Default::default() };
    let mut stdout = std::io::stdout().lock();
    for (prompt, want) in &examples {
        let setup = demo.setup(prompt);
        let names: Vec<String> = setup.experts.iter().map(|m| m.name.clone()).collect();
        let fusion = Fusion::new(setup)?;
        let opts = FuseOptions { generate: generate.clone(), fusion: fusion_cfg.clone(), chat: false };
        let out = fusion.generate_batch(std::slice::from_ref(prompt), &opts, &mut |_| {})?.remove(0);
        let large = alone(&demo.large, prompt, &generate)?;
        let expert = match Task::of_prompt(prompt).and_then(|t| demo.expert(t)) {
            Some(e) => Some(alone(e, prompt, &generate)?),
            None => None,
        };
        let alphas: Vec<(String, Vec<f32>)> = out.steps.iter().map(|s| (s.piece.clone(), s.alpha.clone())).collect();
        if a.json {
            let j = serde_json::json!({
                "prompt": prompt, "expected": want, "experts": names, "solver": solver.name(), "multi": fusion_cfg.multi.name(),
                "large_base": large, "small_expert": expert, "fused": out.text,
                "correct": want.as_ref().map(|w| Example { prompt: prompt.clone(), answer: w.clone() }.is_correct(&out.text)),
                "alphas": alphas, "decode_tokens_per_s": out.decode_tokens_per_s,
            });
            writeln!(stdout, "{j}")?;
            continue;
        }
        writeln!(stdout, "{prompt}")?;
        writeln!(stdout, "  large base alone    {}", line(&large))?;
        if let Some(e) = &expert {
            writeln!(stdout, "  small expert alone  {}", line(e))?;
        }
        let verdict = match want {
            Some(w) if (Example { prompt: prompt.clone(), answer: w.clone() }).is_correct(&out.text) => {
                "  ✓".to_string()
            }
            Some(w) => format!("  ✗ (expected {w:?})"),
            None => String::new(),
        };
        writeln!(stdout, "  {:<20}{}{verdict}", format!("DLF ({})", solver.name()), line(&out.text))?;
        let per_token: Vec<String> = alphas
            .iter()
            .map(|(p, a)| format!("{p:?}:{}", a.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join("/")))
            .collect();
        writeln!(stdout, "  α per token ({}): {}", names.join("/"), per_token.join(" "))?;
    }
    Ok(())
}
