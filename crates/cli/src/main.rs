//! The `chorus` command: a thin shell over `chorus-engine` (argument parsing, progress, output format).
//! Every failure is printed with its context chain and exits with status 2.

mod bench;
mod commands;
mod demo;
mod eval;
mod extract;
mod fuse;
mod merge;
mod rerank;
mod restyle;
mod twin;
mod zoo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Chorus: many models acting as one.
#[derive(Parser)]
#[command(
    name = "chorus",
    version,
    about = "Chorus: many models acting as one: fused decoding (Dynamic Logit Fusion), merging and \
             Twin-Merging, FiT5 re-ranking, MVRE relation extraction, style transfer, and the zoo they run on."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The embedded default: DLF on the zoo family built into the binary, with α per token.
    Demo(demo::DemoArgs),
    /// Generate text with one model (GGUF file or HF folder), streaming tokens to stdout.
    Generate(commands::GenerateArgs),
    /// Describe a model file: architecture, parameters, tensor types, tokenizer, chat template.
    Inspect(commands::InspectArgs),
    /// Fused decoding: a large model steered by small experts (Dynamic Logit Fusion).
    Fuse(fuse::FuseArgs),
    /// Draw α per token per expert from a `chorus fuse --trace` file (.svg or .png).
    PlotTrace(fuse::PlotTraceArgs),
    /// Evaluations on real data that print paper-style tables.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Benchmarks that print machine-readable JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Merge models offline from a mergekit YAML (linear, task_arithmetic, ties, dare_linear, dare_ties).
    Merge(merge::MergeArgs),
    /// Twin-Merging: build a twin pack, train its router, generate with per-input merged weights.
    #[command(subcommand)]
    Twin(twin::TwinCommand),
    /// FiT5 re-ranking of a first-stage run (TREC files, or one query as JSON); `rerank train` trains FiT5.
    Rerank(Box<rerank::RerankArgs>),
    /// MVRE relation extraction: train (k-shot prompt-tuning), eval (micro-F1), predict, kshot (the table).
    #[command(subcommand)]
    Extract(extract::ExtractCommand),
    /// Text style transfer by latent editing: `restyle --to positive "..."`, `restyle train`, `restyle eval`.
    Restyle(Box<restyle::RestyleArgs>),
    /// The zoo: a tiny model family trained by Chorus, and its evaluation tables.
    #[command(subcommand)]
    Zoo(zoo::ZooCommand),
}

/// Restores the default action of SIGPIPE, which Rust's runtime ignores: a closed stdout
/// (`chorus demo | head -1`) then ends the process quietly, as it does for every Unix filter, instead of
/// `println!` panicking or a write reporting "Broken pipe".
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => demo::demo(a),
        Command::Generate(a) => commands::generate(a),
        Command::Inspect(a) => commands::inspect(a),
        Command::Fuse(a) => fuse::fuse(a),
        Command::PlotTrace(a) => fuse::plot_trace(a),
        Command::Eval(e) => eval::run(e),
        Command::Bench(b) => bench::run(b),
        Command::Merge(a) => merge::merge(a),
        Command::Twin(t) => twin::run(t),
        Command::Rerank(r) => rerank::run(*r),
        Command::Extract(x) => extract::run(x),
        Command::Restyle(r) => restyle::run(*r),
        Command::Zoo(z) => zoo::run(z),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
