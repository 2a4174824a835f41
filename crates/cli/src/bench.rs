//! `chorus bench …`: benchmarks that print one JSON object (machine-readable), never timed assertions.

use std::path::PathBuf;

use anyhow::Result;
use chorus_core::GenerateOptions;
use chorus_engine::Prompt;
use clap::{Args, Subcommand};

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Prefill and decode speed of one model, plus peak RSS.
    Generate(BenchGenerateArgs),
    /// Fused (DLF) decode speed and the α search's share of a step, next to the large model alone.
    Fuse(BenchFuseArgs),
    /// Twin-Merging's per-row mixed forward against the shared model's own forward (same pack, same batch).
    Twin(BenchTwinArgs),
    /// FiT5 listwise scoring: milliseconds per query (N candidates × T tokens), with and without global attention.
    Rerank(BenchRerankArgs),
    /// The α search alone on synthetic logits (V = 151,665 by default): per-step milliseconds by solver.
    Search(BenchSearchArgs),
}

/// Arguments of `chorus bench rerank`.
#[derive(Args)]
pub struct BenchRerankArgs {
    /// A FiT5 folder; without it a randomly initialised model of `--size` (speed does not depend on the weights).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// toy, t5-small or t5-base (FiT5-3layer's backbone) when no --model is given.
    #[arg(long, default_value = "toy")]
    pub size: String,
    /// Candidates per query.
    #[arg(long, default_value_t = 100)]
    pub candidates: usize,
    /// Tokens per candidate (default: the model's max_seq_len).
    #[arg(long)]
    pub seq_len: Option<usize>,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    /// Timed queries after one warm-up query.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Arguments of `chorus bench fuse`.
#[derive(Args)]
pub struct BenchFuseArgs {
    #[command(flatten)]
    pub fusion: crate::fuse::FusionArgs,
    /// Prompt.
    #[arg(long, default_value = "Write a Python function that returns the n-th Fibonacci number.")]
    pub prompt: String,
    /// Render the prompt through each model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// New tokens per run (EOS ignored).
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
}

/// Arguments of `chorus bench search`.
#[derive(Args)]
pub struct BenchSearchArgs {
    /// Vocabulary size.
    #[arg(long, default_value_t = 151_665)]
    pub vocab: usize,
    /// Steps timed per (solver, expert count).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
}

/// Arguments of `chorus bench generate`.
#[derive(Args)]
pub struct BenchGenerateArgs {
    /// Model file or folder.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    /// Prompt.
    #[arg(long, default_value = "def fibonacci(n):")]
    pub prompt: String,
    /// New tokens per run (EOS is ignored so every run decodes exactly this many).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[command(flatten)]
    pub weights: crate::commands::WeightArgs,
    /// Batch rows (the prompt repeated).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Token ids to use as the prompt instead of encoding `--prompt` (comma-separated): lets a
    /// comparison with another engine feed both the very same ids.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Repeat the prompt's ids (cyclically) to exactly this many tokens (prefill measurements, e.g. 512).
    #[arg(long)]
    pub prompt_len: Option<usize>,
}

/// Arguments of `chorus bench twin`.
#[derive(Args)]
pub struct BenchTwinArgs {
    /// A twin pack (its router is not needed: rows get fixed, distinct weights).
    #[arg(long)]
    pub pack: std::path::PathBuf,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    /// Prompt (repeated over the batch).
    #[arg(long, default_value = "add 12 7 =")]
    pub prompt: String,
    /// Batch rows.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// New tokens per run (EOS ignored).
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Timed runs per mode after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Generate(a) => generate(a),
        BenchCommand::Fuse(a) => fuse(a),
        BenchCommand::Search(a) => search(a),
        BenchCommand::Twin(a) => twin(a),
        BenchCommand::Rerank(a) => rerank(a),
    }
}

fn rerank(a: BenchRerankArgs) -> Result<()> {
    use chorus_models::fit5::{FiT5, FiT5Config};
    use chorus_models::t5::{T5Config, ids_tensor};
    let backend: chorus_engine::Backend = a.device.backend;
    let device = chorus_engine::device(backend)?;
    let mut model = match &a.model {
        Some(dir) => FiT5::open(dir, &device)?,
        None => {
            let t5 = |d: usize, ff: usize, layers: usize, heads: usize| T5Config {
                vocab_size: 32128,
                d_model: d,
                d_kv: 64,
                d_ff: ff,
                num_layers: layers,
                num_decoder_layers: layers,
                num_heads: heads,
                relative_attention_num_buckets: 32,
                relative_attention_max_distance: 128,
                layer_norm_epsilon: 1e-6,
                gated_gelu: false,
                tie_word_embeddings: true,
                scale_decoder_outputs: true,
            };
            let cfg = match a.size.as_str() {
                "toy" => chorus_rank::toy::config(),
                "t5-small" => FiT5Config { t5: t5(512, 2048, 6, 8), max_seq_len: 200, ..chorus_rank::toy::config() },
                "t5-base" => FiT5Config {
                    t5: t5(768, 3072, 12, 12),
                    num_global_layers: 3,
                    max_seq_len: 200,
                    ..chorus_rank::toy::config()
                },
                other => anyhow::bail!("--size '{other}': use toy, t5-small or t5-base"),
            };
            device.seed(0);
            FiT5::new(&cfg, &device)?
        }
    };
    let cfg = model.config().clone();
    let (n, t) = (a.candidates.clamp(1, 100), a.seq_len.unwrap_or(cfg.max_seq_len).max(2));
    let mut rng = chorus_core::sampling::Rng::new(1);
    let ids: Vec<Vec<u32>> = (0..n)
        .map(|_| (0..t).map(|_| 3 + (rng.next_u64() % (cfg.t5.vocab_size as u64 - 3)) as u32).collect())
        .collect();
    let mask = vec![vec![1u32; t]; n];
    let mut out = serde_json::Map::new();
    for global in [true, false] {
        model.set_global(global);
        let mut ms = Vec::new();
        for r in 0..=a.runs.max(1) {
            let (x, m) = ids_tensor(&ids, &mask, &device);
            let t0 = std::time::Instant::now();
            let z = model.forward(x, m).into_data();
            let dt = t0.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(z.num_elements() == 2 * n, "scores of {} candidates", z.num_elements() / 2);
            if r > 0 {
                ms.push(dt);
            }
        }
        ms.sort_by(f64::total_cmp);
        let med = ms[ms.len() / 2];
        eprintln!("global={global}: {med:.1} ms per query of {n} x {t}");
        out.insert(
            if global { "global" } else { "local" }.into(),
            serde_json::json!({ "ms_per_query": med, "candidates_per_s": n as f64 / (med / 1000.0) }),
        );
    }
    let j = serde_json::json!({
        "bench": "rerank",
        "model": a.model.as_ref().map_or(a.size.clone(), |p| p.display().to_string()),
        "backend": backend.name(),
        "candidates": n,
        "seq_len": t,
        "d_model": cfg.t5.d_model,
        "encoder_layers": cfg.t5.num_layers,
        "global_layers": cfg.num_global_layers,
        "runs": a.runs.max(1),
        "modes": out,
    });
    println!("{j}");
    Ok(())
}

fn twin(a: BenchTwinArgs) -> Result<()> {
    use chorus_engine::twin::TwinModel;
    let backend: chorus_engine::Backend = a.device.backend;
    let device = chorus_engine::device(backend)?;
    let tm = TwinModel::load(&a.pack, backend, &device)?;
    let t = tm.pack.meta.tasks.len();
    let ids = tm.model.files.tokenizer.encode(&a.prompt, false)?;
    let batch = vec![ids.clone(); a.batch.max(1)];
    // Row r leans on task r mod T: every row has its own weights, as in a mixed batch.
    let rows: Vec<Vec<f32>> = (0..batch.len())
        .map(|r| (0..t).map(|k| if k == r % t { 0.7 } else { 0.3 / (t.max(2) - 1) as f32 }).collect())
        .collect();
    let mean: Vec<f32> = (0..t).map(|k| rows.iter().map(|w| w[k]).sum::<f32>() / rows.len() as f32).collect();
    let t0 = std::time::Instant::now();
    let merged = tm.model.decoder.merged(&mean)?;
    let merge_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let opts = GenerateOptions { max_new_tokens: a.new_tokens, stop_at_eos: false, ..Default::default() };
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = serde_json::Map::new();
    let shared = &tm.model.decoder;
    for (name, dec, mix) in
        [("shared", shared, None), ("per_row", shared, Some(rows.as_slice())), ("group", &merged, None)]
    {
        tm.model.generate_on(dec, &batch, mix, &GenerateOptions { max_new_tokens: 2, ..opts.clone() })?;
        let (mut pre, mut dec_ms) = (Vec::new(), Vec::new());
        for _ in 0..a.runs.max(1) {
            let o = tm.model.generate_on(dec, &batch, mix, &opts)?;
            pre.push(o[0].prefill_ms);
            dec_ms.push(o[0].decode_ms / o[0].tokens.len().saturating_sub(1).max(1) as f64);
        }
        let (p, d) = (median(&mut pre), median(&mut dec_ms));
        eprintln!("{name}: prefill {p:.2} ms, {d:.3} ms per decode step");
        out.insert(name.into(), serde_json::json!({ "prefill_ms": p, "decode_ms_per_step": d }));
    }
    let ratio =
        |k: &str, f: &str| out[k][f].as_f64().unwrap_or(0.0) / out["shared"][f].as_f64().unwrap_or(1.0).max(1e-12);
    let j = serde_json::json!({
        "bench": "twin",
        "pack": a.pack.display().to_string(),
        "backend": tm.model.backend.name(),
        "tasks": t,
        "batch": batch.len(),
        "prompt_tokens": ids.len(),
        "new_tokens": a.new_tokens,
        "parameters": tm.model.decoder.config.parameter_count(),
        "modes": out,
        "group_merge_ms": merge_ms,
        "per_row_vs_shared": { "prefill": ratio("per_row", "prefill_ms"), "decode": ratio("per_row", "decode_ms_per_step") },
        "group_vs_shared": { "prefill": ratio("group", "prefill_ms"), "decode": ratio("group", "decode_ms_per_step") },
    });
    println!("{j}");
    Ok(())
}

fn generate(a: BenchGenerateArgs) -> Result<()> {
    let model = crate::commands::load(&a.model, &a.device, a.weights)?;
    let mut ids = match &a.prompt_ids {
        Some(ids) if !ids.is_empty() => ids.clone(),
        Some(_) => anyhow::bail!("--prompt-ids: no ids given"),
        None => model.encode(&Prompt::Text(a.prompt.clone()))?,
    };
    if let Some(n) = a.prompt_len {
        if n == 0 {
            anyhow::bail!("--prompt-len must be at least 1");
        }
        ids = ids.iter().copied().cycle().take(n).collect();
    }
    let opts = GenerateOptions { max_new_tokens: a.new_tokens, stop_at_eos: false, ..Default::default() };
    let batch = vec![ids.clone(); a.batch.max(1)];
    model.generate_batch(&batch, &GenerateOptions { max_new_tokens: 2, ..opts.clone() })?;
    // The device decoder's counters after the warm-up run: what the timed runs add to them.
    let gpu = model.decoder.gpu().map(|g| g.device_decoder());
    let warm = gpu.map(|g| g.counters());
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for i in 0..a.runs.max(1) {
        let out = model.generate_batch(&batch, &opts)?;
        let o = &out[0];
        prefill.push(o.prompt_tokens as f64 * batch.len() as f64 / (o.prefill_ms / 1000.0));
        decode.push(o.decode_tokens_per_s * batch.len() as f64);
        eprintln!(
            "run {}: prefill {:.1} ms, decode {:.2} tok/s",
            i + 1,
            o.prefill_ms,
            o.decode_tokens_per_s * batch.len() as f64
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // Per generated token of the timed runs (the prefill pass of each run included).
    let device = gpu.zip(warm).map(|(g, (f0, p0, s0))| {
        let (f, p, s) = g.counters();
        let tokens = (a.runs.max(1) * a.new_tokens).max(1) as f64;
        serde_json::json!({
            "pipelines_created_after_warmup": p - p0,
            "submits_per_token": (s - s0) as f64 / tokens,
            "forwards": f - f0,
            "device_weight_bytes": g.device_weight_bytes(),
            "formats": g.formats().iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
            "adapter": g.context().adapter,
        })
    });
    let j = serde_json::json!({
        "bench": "generate",
        "model": a.model.display().to_string(),
        "backend": model.backend.name(),
        "weights": a.weights.to_string(),
        "batch": batch.len(),
        "prompt_tokens": ids.len(),
        "new_tokens": a.new_tokens,
        "runs": a.runs.max(1),
        "load_ms": model.load_ms,
        "prefill_tokens_per_s": median(&mut prefill),
        "decode_tokens_per_s": median(&mut decode),
        "peak_rss_bytes": chorus_merge::run::peak_rss_bytes(),
        "engine": if model.decoder.cpu().is_some() {
            "chorus-cpu"
        } else if gpu.is_some() {
            "chorus-gpu"
        } else {
            "burn"
        },
        "threads": model.decoder.cpu().map(|_| chorus_models::cpu::pool::global().threads()),
        "weight_bytes_per_token": model.decoder.cpu().map(|c| c.weight_bytes_per_token()),
        "pipelines_created_after_warmup": device.as_ref().map(|d| d["pipelines_created_after_warmup"].clone()),
        "submits_per_token": device.as_ref().map(|d| d["submits_per_token"].clone()),
        "device_weight_bytes": device.as_ref().map(|d| d["device_weight_bytes"].clone()),
        "device": device,
    });
    println!("{j}");
    Ok(())
}

fn fuse(a: BenchFuseArgs) -> Result<()> {
    use chorus_engine::FuseOptions;
    let cfg = a.fusion.config()?;
    let fusion = a.fusion.load()?;
    let opts = FuseOptions {
        generate: GenerateOptions { max_new_tokens: a.new_tokens, stop_at_eos: false, ..Default::default() },
        fusion: cfg.clone(),
        chat: a.chat,
    };
    let prompts = [a.prompt.clone()];
    fusion.generate_batch(
        &prompts,
        &FuseOptions { generate: GenerateOptions { max_new_tokens: 2, ..opts.generate.clone() }, ..opts.clone() },
        &mut |_| {},
    )?;
    let (mut rate, mut search, mut frac) = (Vec::new(), Vec::new(), Vec::new());
    let (mut host, mut tokens) = ((0, None), Vec::new());
    for i in 0..a.runs.max(1) {
        let o = fusion.generate_batch(&prompts, &opts, &mut |_| {})?.remove(0);
        host = (o.host_steps, o.host_reason.clone());
        tokens = o.tokens.clone();
        let steps = o.steps.len().max(1) as f64;
        let step_ms = o.decode_ms / (steps - 1.0).max(1.0);
        let s = o.search_ms / steps;
        eprintln!(
            "run {}: fused decode {:.2} tok/s, α search {:.2} ms/step ({:.2}% of a step)",
            i + 1,
            o.decode_tokens_per_s,
            s,
            100.0 * s / step_ms
        );
        rate.push(o.decode_tokens_per_s);
        search.push(s);
        frac.push(s / step_ms);
    }
    // The large model alone, same prompt and length, for the ratio.
    let large = &fusion.members()[0].model;
    // Every member's prompt ids, so a peer's loop (scripts/bench_vs_llamacpp) can be fed the same input.
    let prompt_ids =
        (0..fusion.members().len()).map(|i| fusion.encode(i, &a.prompt, a.chat)).collect::<Result<Vec<_>, _>>()?;
    let ids = prompt_ids[0].clone();
    let alone = large.generate_batch(&[ids], &opts.generate)?.remove(0);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let j = serde_json::json!({
        "bench": "fuse",
        "large": a.fusion.large.as_ref().map(|p| p.display().to_string()),
        "base": a.fusion.base.as_ref().map(|p| p.display().to_string()),
        "experts": a.fusion.experts,
        "backend": large.backend.name(),
        "weights": a.fusion.weights.to_string(),
        "solver": cfg.solver.name(),
        "new_tokens": a.new_tokens,
        "runs": a.runs.max(1),
        "fused_decode_tokens_per_s": median(&mut rate),
        "search_ms_per_step": median(&mut search),
        "search_fraction_of_step": median(&mut frac),
        "large_alone_decode_tokens_per_s": alone.decode_tokens_per_s,
        "prompt_ids": prompt_ids,
        "tokens": tokens,
        "host_steps": host.0,
        "host_reason": host.1,
        "peak_rss_bytes": chorus_merge::run::peak_rss_bytes(),
    });
    println!("{j}");
    Ok(())
}

fn search(a: BenchSearchArgs) -> Result<()> {
    use chorus_core::fusion::{FastEvaluator, FusionConfig, RowLogits, Solver, solve, synthetic_logits};
    let mut results = Vec::new();
    for t in [1usize, 2, 3] {
        let (l, s, e) = synthetic_logits(7, a.vocab, t);
        let ex: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let row = RowLogits { large: &l, base: &s, experts: &ex };
        for solver in [Solver::Paper, Solver::Refine, Solver::Joint, Solver::Static { alpha: 1.0 }] {
            let cfg = FusionConfig::with_solver(solver);
            let mut ev = FastEvaluator::new();
            // As the fused decoder does (`chorus_engine::fuse`): the paper grid is evaluated in the load.
            ev.expect_solver(&cfg, t);
            let mut evals = 0;
            let t0 = std::time::Instant::now();
            for _ in 0..a.steps.max(1) {
                ev.load(&row)?;
                let c = solve(&cfg, &mut ev);
                std::hint::black_box(ev.fused(&c.alpha, false));
                evals = c.evaluations;
            }
            let ms = t0.elapsed().as_secs_f64() * 1000.0 / a.steps.max(1) as f64;
            eprintln!("T={t} {:<10} {ms:7.2} ms/step ({evals} loss evaluations)", solver.name());
            results.push(
                serde_json::json!({"experts": t, "solver": solver.name(), "ms_per_step": ms, "evaluations": evals}),
            );
        }
    }
    println!("{}", serde_json::json!({"bench": "search", "vocab": a.vocab, "steps": a.steps, "results": results}));
    Ok(())
}
