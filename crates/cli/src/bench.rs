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
}

/// Arguments of `chorus bench generate`.
#[derive(Args)]
pub struct BenchGenerateArgs {
    /// Model file or folder.
    #[arg(long)]
    pub model: PathBuf,
    /// cpu or wgpu.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Prompt.
    #[arg(long, default_value = "def fibonacci(n):")]
    pub prompt: String,
    /// New tokens per run (EOS is ignored so every run decodes exactly this many).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Weight storage: auto, f32 or quantized.
    #[arg(long, default_value = "auto")]
    pub weights: String,
    /// Batch rows (the prompt repeated).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Generate(a) => generate(a),
    }
}

fn generate(a: BenchGenerateArgs) -> Result<()> {
    let model = crate::commands::load(&a.model, &a.backend, &a.weights)?;
    let ids = model.encode(&Prompt::Text(a.prompt.clone()))?;
    let opts = GenerateOptions { max_new_tokens: a.new_tokens, stop_at_eos: false, ..Default::default() };
    let batch = vec![ids.clone(); a.batch.max(1)];
    model.generate_batch(&batch, &GenerateOptions { max_new_tokens: 2, ..opts.clone() })?;
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
    let j = serde_json::json!({
        "bench": "generate",
        "model": a.model.display().to_string(),
        "backend": model.backend.name(),
        "weights": a.weights,
        "batch": batch.len(),
        "prompt_tokens": ids.len(),
        "new_tokens": a.new_tokens,
        "runs": a.runs.max(1),
        "load_ms": model.load_ms,
        "prefill_tokens_per_s": median(&mut prefill),
        "decode_tokens_per_s": median(&mut decode),
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{j}");
    Ok(())
}

/// Peak resident set size of this process (Linux `VmHWM`), when the platform reports it.
fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
