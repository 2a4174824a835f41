//! `chorus restyle`: gradient-guided contrastive text style transfer — edit sentences towards a sentiment with
//! the model shipped in the binary (or a trained folder), `restyle train` (autoencoder with the content
//! contrastive loss, then the siamese style net, on the Rotten Tomatoes split) and `restyle eval` (the
//! paper-style table: transfer accuracy by a separate classifier, BLEU against the source, perplexity).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use chorus_style::ae::{AeConfig, Autoencoder};
use chorus_style::data::{Sentence, Split, Style, read_rotten_tomatoes, split};
use chorus_style::eval::{Classifier, KneserNey, Row, markdown, score};
use chorus_style::restyle::{Anchors, EditConfig, FORMAT, Meta, Pool, Restyler};
use chorus_style::siamese::{SiameseConfig, StyleNet};
use chorus_style::train::{AeTrainConfig, NetTrainConfig, Progress, train_autoencoder, train_style_net};
use chorus_style::vocab::Vocab;
use clap::{Args, Subcommand};
use serde_json::json;

/// The fixed split keeps sentences of 1 to this many words (the reference's 60 tokens less EOS).
const SPLIT_WORDS: usize = 59;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RestyleArgs {
    #[command(subcommand)]
    pub command: Option<RestyleCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `chorus restyle` subcommands.
#[derive(Subcommand)]
pub enum RestyleCommand {
    /// Train the autoencoder and the style net on the Rotten Tomatoes split and save the model folder.
    Train(Box<TrainArgs>),
    /// The paper-style table on the test split: no editing, editing without the contrastive loss, the full method.
    Eval(Box<EvalArgs>),
}

/// Editing options shared by `restyle` and `restyle eval`.
#[derive(Args, Clone)]
pub struct EditArgs {
    /// Adam learning rate on the latent.
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 0.2)]
    pub lr: f64,
    /// Most editing iterations.
    #[arg(long, default_value_t = 18)]
    pub steps: usize,
    /// Stop after this many changes of the decoded text.
    #[arg(long, default_value_t = 7)]
    pub max_change: usize,
    /// Output the text at this change (0-based; the reference's --pos_c/--neg_c 2).
    #[arg(long, default_value_t = 2)]
    pub pick: usize,
    /// Temperature of the objective.
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 0.1)]
    pub tau: f64,
    /// Source-style anchors.
    #[arg(long, default_value_t = 10)]
    pub same: usize,
    /// Target-style anchors.
    #[arg(long, default_value_t = 10)]
    pub other: usize,
    /// Anchor choice: nearest (pool sentences closest to the input's latent) or random.
    #[arg(long, default_value = "nearest", value_parser = ["nearest", "random"])]
    pub anchors: String,
    /// Seed of random anchors.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
}

impl EditArgs {
    fn config(&self) -> EditConfig {
        EditConfig {
            lr: self.lr,
            max_iter: self.steps,
            max_change: self.max_change,
            pick: self.pick,
            tau: self.tau,
            same: self.same,
            other: self.other,
            anchors: if self.anchors == "random" { Anchors::Random } else { Anchors::Nearest },
            seed: self.seed,
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Model folder from `restyle train` (default: the Rotten Tomatoes model built into the binary).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Target style: positive or negative.
    #[arg(long)]
    pub to: Option<String>,
    /// Print every iteration's text and objective.
    #[arg(long)]
    pub trace: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub edit: EditArgs,
    /// Sentences to restyle.
    pub text: Vec<String>,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Rotten Tomatoes corpus (default: $CHORUS_HOME/data/rotten_tomatoes_corpus_full.csv.bz2).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Output folder (an existing non-empty one is replaced only with --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    /// Words seen at least this often in training enter the vocabulary.
    #[arg(long, default_value_t = 2)]
    pub min_count: usize,
    /// Autoencoder width (the reference: 256).
    #[arg(long, default_value_t = 256)]
    pub d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Feed-forward width (the reference: 1024).
    #[arg(long, default_value_t = 1024)]
    pub d_ff: usize,
    /// Encoder and decoder layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Longest sentence in tokens.
    #[arg(long, default_value_t = 60)]
    pub max_len: usize,
    /// Autoencoder epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Sentences per autoencoder update.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Noam warm-up updates.
    #[arg(long, default_value_t = 2000)]
    pub warmup: usize,
    /// Noam factor.
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 1.0)]
    pub factor: f64,
    /// Weight of the content contrastive loss (0: plain autoencoder, the "without contrastive" ablation).
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 0.1)]
    pub beta: f64,
    /// Dropout-noised extra encodings used as contrastive positives.
    #[arg(long, default_value_t = 1)]
    pub views: usize,
    /// Style-net epochs.
    #[arg(long, default_value_t = 50)]
    pub net_epochs: usize,
    /// Style-net learning rate.
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 3e-3)]
    pub net_lr: f64,
    /// Anchor-pool sentences kept per style.
    #[arg(long, default_value_t = 512)]
    pub pool: usize,
    /// Use only the first N training sentences (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Seed (device, shuffling, anchors).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Store f16 weights (half the size; used for the model shipped in the binary).
    #[arg(long)]
    pub half: bool,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The full model (default: the built-in one).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A model trained without the content contrastive loss (`restyle train --beta 0`): adds its row.
    #[arg(long)]
    pub no_contrast: Option<PathBuf>,
    /// Rotten Tomatoes corpus (default: $CHORUS_HOME/data/rotten_tomatoes_corpus_full.csv.bz2).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Split to score: test or dev.
    #[arg(long, default_value = "test", value_parser = ["test", "dev"])]
    pub split: String,
    /// Score the first N sentences of each style (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Sentences edited together.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Write the table and the outputs as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub edit: EditArgs,
}

pub fn run(a: RestyleArgs) -> Result<()> {
    match a.command {
        Some(RestyleCommand::Train(t)) => train_cmd(*t),
        Some(RestyleCommand::Eval(e)) => eval_cmd(*e),
        None => restyle_cmd(a.run),
    }
}

fn open(model: Option<&Path>, dev: &Device) -> Result<Restyler> {
    match model {
        Some(dir) => Restyler::open(dir, dev).with_context(|| format!("opening the model {}", dir.display())),
        None => Restyler::embedded(dev).context("loading the built-in model"),
    }
}

fn style(s: &str) -> Result<Style> {
    Ok(s.parse::<Style>()?)
}

fn restyle_cmd(a: RunArgs) -> Result<()> {
    let Some(to) = a.to.as_deref() else { bail!("--to positive|negative is required (or use `restyle train|eval`)") };
    let to = style(to)?;
    if a.text.is_empty() {
        bail!("give the sentence(s) to restyle, e.g. chorus restyle --to positive \"the plot is dull\"");
    }
    let dev = a.edit.device.device()?;
    let r = open(a.model.as_deref(), &dev)?;
    let inputs = a
        .text
        .iter()
        .enumerate()
        .map(|(i, t)| r.encode(t).with_context(|| format!("sentence {}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    let edits = r.restyle(&inputs, &vec![to; inputs.len()], &a.edit.config(), &mut |_| {})?;
    if a.json {
        let v = edits
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e)?;
                if !a.trace {
                    v.as_object_mut().map(|o| o.remove("trace"));
                }
                Ok(v)
            })
            .collect::<Result<Vec<serde_json::Value>>>()?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for e in &edits {
        if !e.unknown.is_empty() {
            eprintln!("note: read as <unk>: {}", e.unknown.join(", "));
        }
        if a.trace {
            println!("source         {}", e.source);
            println!("reconstruction {}", e.reconstruction);
            for s in &e.trace {
                let mark = if s.changed { "*" } else { " " };
                println!("iteration {:>2} {mark} J {:>8.3}  {}", s.iteration, s.objective, s.text);
            }
            println!("output         {}", e.output);
        } else {
            println!("{}", e.output);
        }
    }
    Ok(())
}

fn corpus_path(p: Option<&Path>) -> PathBuf {
    p.map(Path::to_path_buf)
        .unwrap_or_else(|| crate::commands::chorus_home().join("data/rotten_tomatoes_corpus_full.csv.bz2"))
}

fn load_split(p: Option<&Path>) -> Result<Split> {
    let path = corpus_path(p);
    if !path.exists() {
        bail!("{} is missing: run `scripts/fetch-models rotten-tomatoes` (or pass --corpus)", path.display());
    }
    let all = read_rotten_tomatoes(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(split(&all, SPLIT_WORDS))
}

fn pool(train: &[Sentence], per_style: usize, seed: u64) -> Pool {
    let mut rng = chorus_core::sampling::Rng::new(seed ^ 0x9e37_79b9);
    let mut p = Pool::default();
    for (style, out) in [(Style::Negative, &mut p.negative), (Style::Positive, &mut p.positive)] {
        let mut idx: Vec<usize> = (0..train.len()).filter(|&i| train[i].style == style).collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        *out = idx.into_iter().take(per_style).map(|i| train[i].words.join(" ")).collect();
    }
    p
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    chorus_core::output::check(&a.out, &[&corpus_path(a.corpus.as_deref())], a.force)?;
    let t0 = Instant::now();
    let s = load_split(a.corpus.as_deref())?;
    let train: Vec<Sentence> =
        if a.limit > 0 { s.train.iter().take(a.limit).cloned().collect() } else { s.train.clone() };
    let vocab = Vocab::build(train.iter().map(|x| x.words.as_slice()), a.min_count);
    eprintln!(
        "corpus: {} train / {} dev / {} test sentences; vocabulary {} words (seen ≥ {}×)",
        train.len(),
        s.dev.len(),
        s.test.len(),
        vocab.len(),
        a.min_count
    );
    let rows = |v: &[Sentence]| -> Vec<Vec<u32>> { v.iter().map(|x| vocab.encode(&x.words).0).collect() };
    let (train_rows, dev_rows) = (rows(&train), rows(&s.dev));
    let plain = a.device.device()?;
    plain.seed(a.seed);
    let ad = plain.clone().autodiff();
    let cfg = AeConfig {
        vocab_size: vocab.len(),
        d_model: a.d_model,
        num_heads: a.heads,
        d_ff: a.d_ff,
        num_layers: a.layers,
        max_len: a.max_len,
        dropout: 0.1,
    };
    let ae = Autoencoder::new(&cfg, &ad)?;
    let ae_cfg = AeTrainConfig {
        epochs: a.epochs,
        batch: a.batch,
        warmup: a.warmup,
        factor: a.factor,
        smoothing: 0.1,
        beta: a.beta,
        tau: 0.1,
        views: a.views,
        seed: a.seed,
    };
    let mut last = Instant::now();
    let mut report = |p: &Progress| {
        if let Some((loss, dev)) = p.epoch_end {
            let what = if p.stage == "autoencoder" { "dev reconstruction loss" } else { "dev style accuracy" };
            eprintln!(
                "{}: epoch {} loss {loss:.4}, {what} {dev:.4} ({:.0}s)",
                p.stage,
                p.epoch,
                t0.elapsed().as_secs_f64()
            );
        } else if last.elapsed().as_secs() >= 30 {
            last = Instant::now();
            eprintln!("{}: update {}/{} loss {:.4}", p.stage, p.step, p.steps, p.loss);
        }
    };
    let (ae, ae_report) = train_autoencoder(ae, &train_rows, &dev_rows, &ae_cfg, &ad, &mut report)?;
    let net_cfg = NetTrainConfig { epochs: a.net_epochs, lr: a.net_lr, seed: a.seed, ..NetTrainConfig::default() };
    let scfg = SiameseConfig::for_latent(a.d_model);
    let net = StyleNet::new(&scfg, &ad);
    let styles = |v: &[Sentence]| -> Vec<Style> { v.iter().map(|x| x.style).collect() };
    let (net, net_report) = train_style_net(
        net,
        &ae,
        (&train_rows, &styles(&train)),
        (&dev_rows, &styles(&s.dev)),
        &net_cfg,
        &ad,
        &mut report,
    )?;
    let training = json!({
        "autoencoder": {"config": ae_cfg, "report": ae_report},
        "style_net": {"config": net_cfg, "report": net_report},
        "corpus": {"train": train.len(), "dev": s.dev.len(), "test": s.test.len(), "min_count": a.min_count},
        "backend": a.device.backend,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    let meta = Meta { format: FORMAT, ae: cfg, net: scfg, pool: pool(&train, a.pool, a.seed), training };
    let r = Restyler::from_parts(ae, net, vocab, meta, &plain)?;
    r.save(&a.out, a.half, a.force).with_context(|| format!("writing {}", a.out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r.meta.training)?);
    }
    eprintln!(
        "saved {} (autoencoder epoch {} dev loss {:.4}; style net epoch {} dev accuracy {:.3}; {:.0}s)",
        a.out.display(),
        ae_report.best_epoch,
        ae_report.epochs[ae_report.best_epoch - 1].dev,
        net_report.best_epoch,
        net_report.epochs[net_report.best_epoch - 1].dev,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    if let Some(p) = &a.out {
        let inputs: Vec<&Path> = [a.model.as_deref(), a.no_contrast.as_deref()].into_iter().flatten().collect();
        chorus_core::output::check(p, &inputs, a.force)?;
    }
    let t0 = Instant::now();
    let s = load_split(a.corpus.as_deref())?;
    let dev = a.edit.device.device()?;
    let full = open(a.model.as_deref(), &dev)?;
    let plain = a.no_contrast.as_deref().map(|p| open(Some(p), &dev)).transpose()?;
    let max_words = full.meta.ae.max_len - 1;
    let part = if a.split == "dev" { &s.dev } else { &s.test };
    let mut data: Vec<Sentence> = Vec::new();
    for st in [Style::Negative, Style::Positive] {
        let it = part.iter().filter(|x| x.style == st && x.words.len() <= max_words).cloned();
        data.extend(if a.limit > 0 { it.take(a.limit).collect::<Vec<_>>() } else { it.collect() });
    }
    let clf = Classifier::train(&s.train, 7);
    let lm = KneserNey::train(&s.train);
    let judge = json!({
        "classifier_test_accuracy": clf.accuracy(part),
        "lm_test_perplexity": lm.perplexity(part.iter().map(|x| x.words.as_slice())),
    });
    eprintln!(
        "{} {} sentences; judges: classifier accuracy {:.3}, language-model perplexity {:.1} on the human text",
        data.len(),
        a.split,
        judge["classifier_test_accuracy"].as_f64().unwrap_or(0.0),
        judge["lm_test_perplexity"].as_f64().unwrap_or(0.0)
    );
    let to: Vec<Style> = data.iter().map(|x| x.style.other()).collect();
    let cfg = a.edit.config();
    let mut rows: Vec<Row> = Vec::new();
    let mut outputs = serde_json::Map::new();
    let sources: Vec<String> = data.iter().map(|x| x.words.join(" ")).collect();
    rows.push(score("source copied (reference point)", &sources, &sources, &to, &clf, &lm));
    for (name, model) in [("full method", Some(&full)), ("editing without the contrastive loss", plain.as_ref())] {
        let Some(m) = model else { continue };
        let t = Instant::now();
        let mut edits = Vec::with_capacity(data.len());
        for (c, chunk) in data.chunks(a.batch.max(1)).enumerate() {
            let inputs = chunk.iter().map(|x| m.encode(&x.words.join(" "))).collect::<Result<Vec<_>, _>>()?;
            let tos: Vec<Style> = chunk.iter().map(|x| x.style.other()).collect();
            edits.extend(m.restyle(&inputs, &tos, &cfg, &mut |_| {})?);
            eprintln!(
                "{name}: {}/{} sentences ({:.0}s)",
                (c * a.batch + chunk.len()).min(data.len()),
                data.len(),
                t.elapsed().as_secs_f64()
            );
        }
        // BLEU against the human text, not the model's reading of it (with <UNK> for unknown words).
        let srcs = &sources;
        let recon: Vec<String> = edits.iter().map(|e| e.reconstruction.clone()).collect();
        let out: Vec<String> = edits.iter().map(|e| e.output.clone()).collect();
        if name == "full method" {
            rows.push(score("autoencoder only (no editing)", srcs, &recon, &to, &clf, &lm));
        }
        rows.push(score(name, srcs, &out, &to, &clf, &lm));
        outputs.insert(name.into(), json!(edits.iter().map(|e| json!({"source": e.source, "to": e.to, "output": e.output, "reconstruction": e.reconstruction})).collect::<Vec<_>>()));
    }
    // The full method's row goes last, as in the paper's tables.
    if let Some(i) = rows.iter().position(|r| r.system == "full method") {
        let r = rows.remove(i);
        rows.push(r);
    }
    let report = json!({"split": a.split, "sentences": data.len(), "judges": judge, "edit": cfg, "rows": rows, "seconds": t0.elapsed().as_secs_f64()});
    if let Some(p) = &a.out {
        let mut full_report = report.clone();
        full_report["outputs"] = serde_json::Value::Object(outputs);
        let bytes = serde_json::to_vec_pretty(&full_report)?;
        chorus_core::output::write_file(p, &bytes, a.force).with_context(|| format!("writing {}", p.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&rows));
    }
    Ok(())
}
