//! `chorus zoo …`: train the zoo family and print its paper-style evaluation tables.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chorus_zoo::eval::{evaluate, render};
use chorus_zoo::family::{FamilySpec, train_family};
use clap::{Args, Subcommand};

/// The zoo.
#[derive(Subcommand)]
pub enum ZooCommand {
    /// Train the whole family (tokenizer, bases, experts, fine-tunes) into a new folder.
    Train(ZooTrainArgs),
    /// Evaluate a trained family: single-task and multi-task tables.
    Eval(ZooEvalArgs),
    /// Write task-labelled prompts (JSON lines for `chorus twin train-router`) of the seen tasks.
    RouterData(ZooRouterDataArgs),
    /// Build the demo twin pack (the site's Twin-Merging page) from the shipped family, router included.
    TwinPack(ZooTwinPackArgs),
}

/// Arguments of `chorus zoo twin-pack`.
#[derive(Args)]
pub struct ZooTwinPackArgs {
    /// Destination folder (written under a temporary name; an existing non-empty one is replaced, when
    /// the new pack is complete, only with --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `chorus zoo router-data`.
#[derive(Args)]
pub struct ZooRouterDataArgs {
    /// Destination file (JSON lines {"task", "text"}).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Prompts per task.
    #[arg(long, default_value_t = chorus_zoo::twin::ROUTER_PROMPTS)]
    pub per_task: usize,
}

/// Arguments of `chorus zoo train`.
#[derive(Args)]
pub struct ZooTrainArgs {
    /// Destination folder (written under a temporary name and renamed on success; an existing non-empty
    /// folder is replaced only with --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
    /// A JSON family spec (sizes, tasks, schedules); the built-in default when absent.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Print the default spec as JSON and exit.
    #[arg(long)]
    pub print_spec: bool,
}

/// Arguments of `chorus zoo eval`.
#[derive(Args)]
pub struct ZooEvalArgs {
    /// A trained family folder (default: the shipped family in the source tree).
    #[arg(long, default_value = chorus_zoo::embedded::DIR)]
    pub dir: PathBuf,
    /// Test prompts per task.
    #[arg(long, default_value_t = 100)]
    pub per_task: usize,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs a zoo subcommand.
pub fn run(c: ZooCommand) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut log = |l: &str| eprintln!("[{:>5.0}s] {l}", t0.elapsed().as_secs_f64());
    match c {
        ZooCommand::Train(a) => {
            if a.print_spec {
                println!("{}", serde_json::to_string_pretty(&FamilySpec::default())?);
                return Ok(());
            }
            let spec = match &a.spec {
                Some(p) => {
                    let b = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
                    serde_json::from_slice(&b).with_context(|| format!("{}: not a family spec", p.display()))?
                }
                None => FamilySpec::default(),
            };
            let m = train_family(&spec, &a.out, a.force, &mut log)
                .with_context(|| format!("training into {}", a.out.display()))?;
            let total: u64 = m.members.iter().map(|x| x.bytes).sum();
            for x in &m.members {
                eprintln!(
                    "{:<14} {:>9} params {:>9} bytes  loss {:.3}  {:>5.0}s",
                    x.name, x.parameters, x.bytes, x.final_loss, x.seconds
                );
            }
            eprintln!("{} members, {:.1} MB of weights in {}", m.members.len(), total as f64 / 1e6, a.out.display());
        }
        ZooCommand::RouterData(a) => {
            let m = chorus_zoo::embedded::manifest()?;
            let seen = &m.spec.seen;
            let mut text = String::new();
            for (t, p) in chorus_zoo::twin::router_data(seen, m.spec.seed, a.per_task) {
                text.push_str(&serde_json::to_string(&serde_json::json!({ "task": seen[t].name(), "text": p }))?);
                text.push('\n');
            }
            chorus_core::output::write_file(&a.out, text.as_bytes(), a.force)?;
            log(&format!("{} prompts of {} tasks → {}", seen.len() * a.per_task, seen.len(), a.out.display()));
        }
        ZooCommand::TwinPack(a) => {
            let m = chorus_zoo::embedded::manifest()?;
            let dir = std::path::Path::new(chorus_zoo::embedded::DIR);
            chorus_core::output::check(&a.out, &[], a.force)?;
            chorus_core::output::write_dir(&a.out, a.force, |tmp| {
                chorus_zoo::twin::ship_pack(dir, &m, tmp).context("building the demo twin pack")
            })?;
            log(&format!("demo twin pack (density {}) → {}", chorus_zoo::twin::SHIPPED_DENSITY, a.out.display()));
        }
        ZooCommand::Eval(a) => {
            let r =
                evaluate(&a.dir, a.per_task, &mut log).with_context(|| format!("evaluating {}", a.dir.display()))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", render(&r));
            }
        }
    }
    Ok(())
}
