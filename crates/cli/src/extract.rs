//! `chorus extract`: MVRE relation extraction — `train` (prompt-tune a BERT/RoBERTa masked LM on k-shot data,
//! keep the best dev epoch, write a checkpoint), `eval` (micro-F1), `predict` (one sentence) and `kshot` (the
//! k-shot protocol over seeds for several view counts, as a table).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chorus_extract::data::{Example, Relations, k_shot, read_examples};
use chorus_extract::init::{Init, Template, parse_templates};
use chorus_extract::model::ClassLoss;
use chorus_extract::template::Form;
use chorus_extract::train::{TrainConfig, TrainReport, train};
use chorus_extract::{Extractor, Options, toy};
use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

/// `chorus extract` subcommands.
#[derive(Subcommand)]
pub enum ExtractCommand {
    /// Prompt-tune MVRE on (k-shot) training data and save the best-dev checkpoint.
    Train(Box<TrainArgs>),
    /// Micro-F1 (non-NA) of a checkpoint on a data set.
    Eval(EvalArgs),
    /// The relation between two entities of one sentence.
    Predict(PredictArgs),
    /// The k-shot protocol: train and test per shot count, seed and view count; prints a table.
    Kshot(Box<KshotArgs>),
}

/// Data and model preparation shared by `train` and `kshot`.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// Base masked LM: an HF folder with config.json, model.safetensors and tokenizer.json (BERT or RoBERTa).
    #[arg(long)]
    pub model: PathBuf,
    /// Use the relation set built into the binary (240/80/120 sentences, 8 relations + no_relation).
    #[arg(long, conflicts_with_all = ["data", "dev", "test", "relations", "templates"])]
    pub toy: bool,
    /// Training data: TACRED-style JSON (array or one object per line) or SemEval-2010 Task 8 text.
    #[arg(long, required_unless_present = "toy")]
    pub data: Option<PathBuf>,
    /// Dev data for model selection (best micro-F1 epoch); without it the last epoch is kept.
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// Test data, scored after training.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// rel2id.json (default: the one beside --data; else the data's relations with NA first).
    #[arg(long)]
    pub relations: Option<PathBuf>,
    /// Relation template sentences for the dynamic-initialisation probe (the reference's template/*.txt).
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Shuffle the k-shot sampler's list once per seed up to --shot-seed (the reference) or once.
    #[arg(long, default_value = "cumulative", value_parser = ["cumulative", "independent"])]
    pub shuffle: String,
    /// Virtual words and masks per relation.
    #[arg(long, default_value_t = 3)]
    pub views: usize,
    /// Prompt form: code (the sentence twice, the released code) or figure (sentence, separator, prompt).
    #[arg(long, default_value = "code", value_parser = ["code", "figure"])]
    pub form: String,
    /// Longest encoded prompt (capped by the model's positions).
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    /// Initialisation of the virtual words: auto, probe, label-words or random.
    #[arg(long, default_value = "auto", value_parser = ["auto", "probe", "label-words", "random"])]
    pub init: String,
    /// Leave the id-0 padding rows out of the label-word means (the reference includes them).
    #[arg(long)]
    pub no_pad_label_words: bool,
    /// Epochs.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Examples per update.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Peak learning rate (the reference: 3e-5 for RoBERTa-large; small models want more).
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 3e-5)]
    pub lr: f64,
    /// Weight of the Global-Local loss (0 turns it off).
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 2.0)]
    pub lambda: f64,
    /// β of the Global-Local loss's global term.
    #[arg(long, value_parser = crate::commands::finite_f64, default_value_t = 0.1)]
    pub beta: f64,
    /// Classification loss: ce-on-mixture (the released code) or neg-log-mixture.
    #[arg(long, default_value = "ce-on-mixture", value_parser = ["ce-on-mixture", "neg-log-mixture"])]
    pub class_loss: String,
    /// Seed of the new rows, the gates and the shuffling.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
}

impl DataArgs {
    /// Every file or folder the run reads (an output may not overlap any of them).
    fn inputs(&self) -> Vec<&Path> {
        std::iter::once(self.model.as_path())
            .chain(
                [&self.data, &self.dev, &self.test, &self.relations, &self.templates]
                    .into_iter()
                    .flatten()
                    .map(PathBuf::as_path),
            )
            .collect()
    }
}

/// Arguments of `chorus extract train`.
#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Examples per relation (k-shot; NA included); all examples when absent.
    #[arg(long)]
    pub shots: Option<usize>,
    /// Seed of the k-shot split.
    #[arg(long, default_value_t = 1)]
    pub shot_seed: u64,
    /// Checkpoint folder to write (an existing non-empty one is replaced only with --force, and never
    /// when it is, holds or lies inside an input).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `chorus extract eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Checkpoint folder written by `chorus extract train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Data to score (TACRED-style JSON or SemEval text).
    #[arg(long, required_unless_present = "toy")]
    pub data: Option<PathBuf>,
    /// Score the built-in test split.
    #[arg(long, conflicts_with = "data")]
    pub toy: bool,
    /// Write one prediction per line (JSON) here, atomically.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `chorus extract predict`.
#[derive(Args)]
pub struct PredictArgs {
    /// Checkpoint folder.
    #[arg(long)]
    pub model: PathBuf,
    /// The sentence.
    #[arg(long)]
    pub text: String,
    /// The subject's words as they appear in the sentence.
    #[arg(long)]
    pub subj: String,
    /// The object's words as they appear in the sentence.
    #[arg(long)]
    pub obj: String,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    /// Print JSON (relation, S per relation, P per view).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `chorus extract kshot`.
#[derive(Args)]
pub struct KshotArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Shot counts.
    #[arg(long, value_delimiter = ',', default_value = "1,5,16")]
    pub shots: Vec<usize>,
    /// k-shot seeds.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    /// View counts compared (1 = the single-view baseline on the same code path).
    #[arg(long = "compare-views", value_delimiter = ',', default_value = "3,1")]
    pub compare_views: Vec<usize>,
    /// Ablations at --views, added to the table: no-gl (λ = 0, no Global-Local loss), no-di (random
    /// initialisation of the virtual words instead of dynamic initialisation).
    #[arg(long, value_delimiter = ',', value_parser = ["no-gl", "no-di"])]
    pub ablate: Vec<String>,
    /// Write the table as JSON here, atomically.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Runs a `chorus extract` subcommand.
pub fn run(c: ExtractCommand) -> Result<()> {
    match c {
        ExtractCommand::Train(a) => train_cmd(*a),
        ExtractCommand::Eval(a) => eval_cmd(a),
        ExtractCommand::Predict(a) => predict_cmd(a),
        ExtractCommand::Kshot(a) => kshot_cmd(*a),
    }
}

fn parse<T: serde::de::DeserializeOwned>(flag: &str, v: &str) -> Result<T> {
    serde_json::from_value(Json::String(v.into())).with_context(|| format!("--{flag} '{v}'"))
}

/// Loaded data: train, optional dev and test, relations, templates.
struct Data {
    train: Vec<Example>,
    dev: Option<Vec<Example>>,
    test: Option<Vec<Example>>,
    relations: Relations,
    templates: Vec<Template>,
    source: String,
}

fn read(path: &Path) -> Result<Vec<Example>> {
    read_examples(path).with_context(|| format!("reading {}", path.display()))
}

fn load_data(a: &DataArgs) -> Result<Data> {
    if a.toy {
        let (train, dev, test) = toy::splits()?;
        return Ok(Data {
            train,
            dev: Some(dev),
            test: Some(test),
            relations: toy::relations()?,
            templates: toy::templates()?,
            source: "built-in relation set".into(),
        });
    }
    let Some(path) = &a.data else { bail!("--data is required without --toy") };
    let train = read(path)?;
    let dev = a.dev.as_deref().map(read).transpose()?;
    let test = a.test.as_deref().map(read).transpose()?;
    let beside = path.parent().map(|p| p.join("rel2id.json")).filter(|p| p.exists());
    let relations = match a.relations.clone().or(beside) {
        Some(p) => {
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Relations::parse(&p.display().to_string(), &text)?
        }
        None => Relations::from_examples(&path.display().to_string(), &train)?,
    };
    let templates = match &a.templates {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            parse_templates(&p.display().to_string(), &text)?
        }
        None => Vec::new(),
    };
    Ok(Data { train, dev, test, relations, templates, source: path.display().to_string() })
}

fn options(a: &DataArgs, views: usize) -> Result<Options> {
    Ok(Options {
        views,
        form: parse::<Form>("form", &a.form)?,
        max_len: a.max_len,
        init: parse::<Init>("init", &a.init)?,
        pad_label_words: !a.no_pad_label_words,
        seed: a.seed,
    })
}

fn train_config(a: &DataArgs) -> Result<TrainConfig> {
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr {}: must be a positive number", a.lr);
    }
    if !(a.lambda.is_finite() && a.lambda >= 0.0 && a.beta.is_finite()) {
        bail!("--lambda {} / --beta {}: must be finite, λ ≥ 0", a.lambda, a.beta);
    }
    Ok(TrainConfig {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        warmup_epochs: 1,
        weight_decay: 0.01,
        lambda: a.lambda,
        beta: a.beta,
        class_loss: parse::<ClassLoss>("class-loss", &a.class_loss)?,
        seed: a.seed,
    })
}

/// One training run from the base model; returns the trained extractor, its report and the test score.
struct Run {
    ex: Extractor,
    report: TrainReport,
    test: Option<chorus_extract::extractor::Evaluation>,
    seconds: f64,
}

fn train_once(a: &DataArgs, d: &Data, train_set: &[Example], views: usize, label: &str) -> Result<Run> {
    let plain = a.device.device()?;
    let ad = plain.clone().autodiff();
    let opts = options(a, views)?;
    let cfg = train_config(a)?;
    let t0 = Instant::now();
    let ex = Extractor::prepare(&a.model, d.relations.clone(), &d.templates, &opts, &ad)
        .with_context(|| format!("preparing {} for MVRE", a.model.display()))?;
    let mut t_epoch = Instant::now();
    let (ex, report) = train(ex, train_set, d.dev.as_deref(), &cfg, &ad, &mut |p| {
        if let Some(loss) = p.epoch_loss {
            let dev = p.dev_f1.map_or(String::new(), |f| format!(", dev F1 {f:.4}"));
            let secs = t_epoch.elapsed().as_secs_f64();
            eprintln!("{label}epoch {}/{}: loss {loss:.4}{dev} ({secs:.1}s)", p.epoch, cfg.epochs);
            t_epoch = Instant::now();
        }
    })
    .context("training")?;
    let mut ex = ex;
    ex.model = burn::module::Module::valid(&ex.model);
    let test =
        d.test.as_deref().map(|t| ex.evaluate(t, 16).map(|(e, _)| e)).transpose().context("scoring the test set")?;
    Ok(Run { ex, report, test, seconds: t0.elapsed().as_secs_f64() })
}

fn sample(d: &Data, a: &DataArgs, shots: Option<usize>, seed: u64) -> Vec<Example> {
    match shots {
        Some(k) => k_shot(&d.train, k, seed, a.shuffle == "cumulative"),
        None => d.train.clone(),
    }
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    chorus_core::output::check(&a.out, &a.data.inputs(), a.force)?;
    let d = load_data(&a.data)?;
    let set = sample(&d, &a.data, a.shots, a.shot_seed);
    if set.is_empty() {
        bail!("--shots {:?}: no training examples", a.shots);
    }
    eprintln!(
        "training on {} examples ({}), {} relations, m = {}",
        set.len(),
        d.source,
        d.relations.len(),
        a.data.views
    );
    let mut run = train_once(&a.data, &d, &set, a.data.views, "")?;
    let best_dev = run.report.epochs.iter().find(|e| e.epoch == run.report.best_epoch).and_then(|e| e.dev.clone());
    let summary = json!({
        "out": a.out.display().to_string(),
        "data": d.source,
        "shots": a.shots,
        "shot_seed": a.shot_seed,
        "examples": set.len(),
        "views": a.data.views,
        "init": run.ex.meta.init,
        "head_initialised": run.ex.meta.head_initialised,
        "config": train_config(&a.data)?,
        "report": run.report,
        "dev": best_dev,
        "test": run.test,
        "seconds": run.seconds,
    });
    run.ex.meta.training = Some(summary.clone());
    run.ex.save(&a.out, a.force).with_context(|| format!("saving the checkpoint to {}", a.out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let f = |v: &Json| v["f1"].as_f64().map_or("-".into(), |x| format!("{x:.4}"));
        println!(
            "trained {} examples for {} updates in {:.1}s; best epoch {}: dev F1 {}, test F1 {}; saved {}",
            set.len(),
            run.report.steps,
            run.seconds,
            run.report.best_epoch,
            f(&summary["dev"]),
            f(&summary["test"]),
            a.out.display()
        );
    }
    Ok(())
}

fn open(model: &Path, device: crate::commands::DeviceArgs) -> Result<Extractor> {
    let dev = device.device()?;
    Extractor::open(model, &dev).with_context(|| format!("opening the MVRE checkpoint {}", model.display()))
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    if let Some(p) = &a.predictions {
        let inputs: Vec<&Path> = std::iter::once(a.model.as_path()).chain(a.data.as_deref()).collect();
        chorus_core::output::check(p, &inputs, a.force)?;
    }
    let ex = open(&a.model, a.device)?;
    let (name, data) = match &a.data {
        Some(p) => (p.display().to_string(), read(p)?),
        None => ("built-in test split".to_string(), toy::splits()?.2),
    };
    let t0 = Instant::now();
    let (e, preds) = ex.evaluate(&data, 16).with_context(|| format!("scoring {name}"))?;
    if let Some(p) = &a.predictions {
        let mut text = String::new();
        for (pr, ex) in preds.iter().zip(&data) {
            text.push_str(&serde_json::to_string(
                &json!({"id": pr.id, "gold": ex.relation, "pred": pr.relation, "scores": pr.scores}),
            )?);
            text.push('\n');
        }
        chorus_core::output::write_file(p, text.as_bytes(), a.force)?;
    }
    let out = json!({"data": name, "eval": e, "seconds": t0.elapsed().as_secs_f64()});
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{name}: {} examples, micro-F1 {:.4} (P {:.4}, R {:.4}), accuracy {:.4}",
            e.examples, e.f1, e.precision, e.recall, e.accuracy
        );
    }
    Ok(())
}

fn predict_cmd(a: PredictArgs) -> Result<()> {
    let ex = open(&a.model, a.device)?;
    let e = Example::from_text("input", &a.text, &a.subj, &a.obj, "")?;
    let p = ex.predict(std::slice::from_ref(&e), 1)?.remove(0);
    if a.json {
        let names = &ex.meta.relations.names;
        let scores: serde_json::Map<String, Json> =
            names.iter().zip(&p.scores).map(|(n, s)| (n.clone(), json!(s))).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "relation": p.relation, "subject": e.subject(), "object": e.object(), "scores": scores, "views": p.views,
            }))?
        );
    } else {
        println!("{}", p.relation);
    }
    Ok(())
}

fn kshot_cmd(a: KshotArgs) -> Result<()> {
    if let Some(p) = &a.out {
        chorus_core::output::check(p, &a.data.inputs(), a.force)?;
    }
    let d = load_data(&a.data)?;
    if d.dev.is_none() || d.test.is_none() {
        bail!("the k-shot protocol needs --dev (model selection) and --test (the score)");
    }
    // Each variant: its name, view count and settings; all share the data, the seeds and the schedule.
    let mut variants: Vec<(String, usize, DataArgs)> =
        a.compare_views.iter().map(|&m| (format!("m={m}"), m, a.data.clone())).collect();
    for ab in &a.ablate {
        let mut args = a.data.clone();
        let name = match ab.as_str() {
            "no-gl" => {
                args.lambda = 0.0;
                format!("m={} -GL (lambda 0)", a.data.views)
            }
            _ => {
                args.init = "random".into();
                format!("m={} -DI (random init)", a.data.views)
            }
        };
        variants.push((name, a.data.views, args));
    }
    let mut rows = Vec::new();
    let t0 = Instant::now();
    for &k in &a.shots {
        for &seed in &a.seeds {
            let set = sample(&d, &a.data, Some(k), seed);
            for (name, m, args) in &variants {
                let label = format!("[{k}-shot seed {seed} {name}] ");
                let run = train_once(args, &d, &set, *m, &label)?;
                let f1 = run.test.as_ref().map_or(0.0, |t| t.f1);
                eprintln!("{label}test F1 {f1:.4} ({:.0}s, {:.0}s in all)", run.seconds, t0.elapsed().as_secs_f64());
                let best = run.report.epochs.iter().find(|e| e.epoch == run.report.best_epoch);
                rows.push(json!({
                    "shots": k, "seed": seed, "variant": name, "views": m, "examples": set.len(),
                    "init": run.ex.meta.init, "lambda": args.lambda, "best_epoch": run.report.best_epoch,
                    "dev_f1": best.and_then(|e| e.dev.as_ref()).map(|e| e.f1), "test": run.test, "seconds": run.seconds,
                }));
            }
        }
    }
    let mut table = Vec::new();
    for &k in &a.shots {
        for (name, m, _) in &variants {
            let f: Vec<f64> = rows
                .iter()
                .filter(|r| r["shots"] == k && r["variant"] == name.as_str())
                .filter_map(|r| r["test"]["f1"].as_f64())
                .collect();
            let mean = f.iter().sum::<f64>() / f.len().max(1) as f64;
            let sd = (f.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f.len().max(1) as f64).sqrt();
            table.push(json!({
                "shots": k, "variant": name, "views": m, "test_f1_mean": mean, "test_f1_sd": sd, "runs": f.len(),
            }));
        }
    }
    let out = json!({
        "model": a.data.model.display().to_string(), "data": d.source, "seeds": a.seeds,
        "config": train_config(&a.data)?, "init": a.data.init, "table": table, "runs": rows,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if let Some(p) = &a.out {
        chorus_core::output::write_file(p, serde_json::to_string_pretty(&out)?.as_bytes(), a.force)?;
    }
    println!("| shots | variant | test micro-F1 (mean ± sd over {} seeds) |", a.seeds.len());
    println!("|---|---|---|");
    for t in &table {
        println!(
            "| {} | {} | {:.4} ± {:.4} |",
            t["shots"],
            t["variant"].as_str().unwrap_or(""),
            t["test_f1_mean"].as_f64().unwrap_or(0.0),
            t["test_f1_sd"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}
