//! `chorus twin build | train-router | generate`: Twin-Merging from the command line (a twin pack from a
//! base and named experts, its router trained on task-labelled prompts, and per-input merged generation).

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chorus_core::GenerateOptions;
use chorus_engine::twin::{MixMode, RouterTrainConfig, TwinModel, train_router};
use chorus_merge::twin::{TwinOptions, build};
use chorus_merge::{Dtype, Rank};
use clap::{Args, Subcommand};

/// Twin-Merging subcommands.
#[derive(Subcommand)]
pub enum TwinCommand {
    /// Build a twin pack: shared expert (task arithmetic) + per-task SVD factors.
    Build(BuildArgs),
    /// Train the pack's router on task-labelled prompts (JSON lines: {"task": NAME, "text": PROMPT}).
    TrainRouter(TrainArgs),
    /// Generate with the per-input merged model; prints the router weights and the output.
    Generate(GenerateArgs),
}

/// Arguments of `chorus twin build`.
#[derive(Args)]
pub struct BuildArgs {
    /// The pre-trained base (HF folder or GGUF file).
    #[arg(long)]
    pub base: PathBuf,
    /// A fine-tuned expert as NAME=PATH (repeat; the order is the router's task order).
    #[arg(long = "expert", required = true)]
    pub experts: Vec<String>,
    /// Destination folder (an existing non-empty one is replaced only with --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
    /// Task-arithmetic scale of the shared expert.
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 0.3)]
    pub lambda: f64,
    /// Rank = ⌊density · min(m, n)⌋ per matrix (≥ 1 keeps the differences dense).
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 0.1, conflicts_with = "rank")]
    pub density: f64,
    /// A fixed rank per matrix instead of a density.
    #[arg(long)]
    pub rank: Option<usize>,
    /// Regular expression (whole tensor name) excluded from merging; repeatable, e.g. '.*bias.*'.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Element type of the shared weights (float32, float16, bfloat16).
    #[arg(long, default_value = "float32")]
    pub dtype: String,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `chorus twin train-router`.
#[derive(Args)]
pub struct TrainArgs {
    /// The twin pack (the router is written into it).
    #[arg(long)]
    pub pack: PathBuf,
    /// Replace a router the pack already has.
    #[arg(long)]
    pub force: bool,
    /// JSON lines {"task": NAME, "text": PROMPT}; NAME is one of the pack's tasks.
    #[arg(long)]
    pub data: PathBuf,
    /// Epochs (the best one on a held-out tenth is kept).
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Learning rate (Adam).
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 5e-4)]
    pub lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `chorus twin generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// The twin pack (with a trained router).
    #[arg(long)]
    pub pack: PathBuf,
    /// Prompt (repeat for a batch: each row gets its own router weights).
    #[arg(long = "prompt", required = true)]
    pub prompts: Vec<String>,
    /// One weight vector for the whole batch (the mean of its rows') instead of one per row.
    #[arg(long)]
    pub group: bool,
    /// Tokens to generate.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a twin subcommand.
pub fn run(c: TwinCommand) -> Result<()> {
    match c {
        TwinCommand::Build(a) => build_cmd(a),
        TwinCommand::TrainRouter(a) => train_cmd(a),
        TwinCommand::Generate(a) => generate_cmd(a),
    }
}

fn build_cmd(a: BuildArgs) -> Result<()> {
    let experts = a
        .experts
        .iter()
        .map(|e| match e.split_once('=') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), PathBuf::from(p))),
            _ => bail!("--expert {e:?}: expected NAME=PATH"),
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(dtype) = Dtype::parse(&a.dtype) else {
        bail!("--dtype {:?}: expected float32, float16 or bfloat16", a.dtype);
    };
    let rank = match a.rank {
        Some(r) => Rank::Fixed(r),
        None => Rank::Density(a.density),
    };
    let opts = TwinOptions {
        lambda: a.lambda,
        rank,
        exclude: a.exclude.clone(),
        dtype,
        force: a.force,
        ..TwinOptions::default()
    };
    let bar = crate::merge::tensor_bar();
    let mut progress = |done: usize, total: usize, name: &str| crate::merge::tick(&bar, done, total, name);
    let s = build(&a.base, &experts, &a.out, &opts, &mut progress)
        .with_context(|| format!("building a twin pack at {}", a.out.display()))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        eprintln!(
            "twin pack {}: {} tasks, {} tensors ({} excluded), shared {:.1} MB, factors {:.1} MB ({:.1} % of dense), {:.2} s",
            s.out.display(),
            s.tasks,
            s.tensors,
            s.excluded,
            s.shared_bytes as f64 / 1e6,
            s.twin_bytes as f64 / 1e6,
            100.0 * s.twin_bytes as f64 / s.dense_equivalent_bytes.max(1) as f64,
            s.seconds
        );
    }
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    task: String,
    text: String,
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    let (st, js) = (a.pack.join("router.safetensors"), a.pack.join("router.json"));
    if !a.force
        && let Some(p) = [&st, &js].into_iter().find(|p| p.exists())
    {
        bail!("{}: the pack already has a router; pass --force to replace it", p.display());
    }
    let device = chorus_engine::device(chorus_engine::Backend::Cpu)?;
    let mut twin = TwinModel::load(&a.pack, chorus_engine::Backend::Cpu, &device)
        .with_context(|| format!("loading the twin pack {}", a.pack.display()))?;
    let tasks = twin.pack.meta.tasks.clone();
    let f = std::fs::File::open(&a.data).with_context(|| format!("opening {}", a.data.display()))?;
    let (mut prompts, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}", a.data.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).with_context(|| format!("{}: line {}", a.data.display(), i + 1))?;
        let Some(t) = tasks.iter().position(|n| *n == l.task) else {
            bail!("{}: line {}: task {:?} is not one of the pack's tasks {tasks:?}", a.data.display(), i + 1, l.task);
        };
        prompts.push(twin.model.files.tokenizer.encode(&l.text, false)?);
        labels.push(t);
    }
    if prompts.is_empty() {
        bail!("{}: no examples", a.data.display());
    }
    eprintln!("features of {} prompts from the shared model", prompts.len());
    let feats = twin.features(&prompts)?;
    let tc =
        RouterTrainConfig { epochs: a.epochs, lr: a.lr, batch: a.batch, seed: a.seed, ..RouterTrainConfig::default() };
    let bar = indicatif::ProgressBar::new(a.epochs as u64);
    let (router, cfg, rep) = train_router(&feats, &labels, tasks.len(), &tc, &mut |e, loss, acc| {
        bar.set_position(e as u64);
        bar.set_message(if acc.is_nan() {
            format!("loss {loss:.3}")
        } else {
            format!("loss {loss:.3} held-out acc {acc:.3}")
        });
    })?;
    bar.finish_and_clear();
    router.save(&cfg, &rep, &a.pack, a.force)?;
    twin.router = Some(router);
    if a.json {
        println!("{}", serde_json::to_string(&rep)?);
    } else {
        let held_out = match (rep.val_accuracy, rep.val_loss) {
            (Some(acc), Some(loss)) => {
                format!("held-out accuracy {:.1} % and loss {loss:.3} ({} examples)", 100.0 * acc, rep.val_examples)
            }
            _ => "no held-out examples (one per task): last epoch kept".into(),
        };
        eprintln!(
            "router: epoch {} of {} kept, {held_out}, training {:.1} % ({})",
            rep.best_epoch,
            a.epochs,
            100.0 * rep.train_accuracy,
            rep.train_examples
        );
    }
    Ok(())
}

fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let backend: chorus_engine::Backend = a.device.backend;
    let device = chorus_engine::device(backend)?;
    let twin = TwinModel::load(&a.pack, backend, &device)
        .with_context(|| format!("loading the twin pack {}", a.pack.display()))?;
    let prompts = a
        .prompts
        .iter()
        .map(|p| twin.model.files.tokenizer.encode(p, false))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let opts = GenerateOptions { max_new_tokens: a.max_new_tokens, ..Default::default() };
    let mode = if a.group { MixMode::Group } else { MixMode::Row };
    let (outs, weights) = twin.generate(&prompts, mode, &opts)?;
    let tasks = &twin.pack.meta.tasks;
    if a.json {
        let rows: Vec<serde_json::Value> = a
            .prompts
            .iter()
            .zip(&outs)
            .zip(&weights)
            .map(|((p, o), w)| {
                let w: serde_json::Map<String, serde_json::Value> =
                    tasks.iter().zip(w).map(|(t, x)| (t.clone(), serde_json::json!(x))).collect();
                serde_json::json!({ "prompt": p, "weights": w, "output": o.text, "tokens": o.tokens.len() })
            })
            .collect();
        println!("{}", serde_json::to_string(&serde_json::json!({ "mode": mode, "rows": rows }))?);
    } else {
        for ((p, o), w) in a.prompts.iter().zip(&outs).zip(&weights) {
            let ws: Vec<String> = tasks.iter().zip(w).map(|(t, x)| format!("{t} {x:.3}")).collect();
            println!("{p}{}\n  router: {}", o.text, ws.join(", "));
        }
    }
    Ok(())
}
