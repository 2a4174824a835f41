//! The `chorus` command: a thin shell over `chorus-engine` (argument parsing, progress, output format).
//! Every failure is printed with its context chain and exits with status 2.

mod bench;
mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Chorus: many models acting as one.
#[derive(Parser)]
#[command(name = "chorus", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text with one model (GGUF file or HF folder), streaming tokens to stdout.
    Generate(commands::GenerateArgs),
    /// Describe a model file: architecture, parameters, tensor types, tokenizer, chat template.
    Inspect(commands::InspectArgs),
    /// Benchmarks that print machine-readable JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => commands::generate(a),
        Command::Inspect(a) => commands::inspect(a),
        Command::Bench(b) => bench::run(b),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
