//! `chorus rerank`: FiT5 re-ranking of a first-stage run into a TREC run file (or of one query given as
//! JSON), and `chorus rerank train`: FiT5's two-stage training, with MRR@10 / NDCG@10 before and after.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use chorus_models::fit5::{Candidate, FiT5, FiT5Config, OverLong};
use chorus_models::t5::T5;
use chorus_rank::metrics::{mrr_at, ndcg_at};
use chorus_rank::train::{TrainConfig, train, training_lists};
use chorus_rank::trec::{self, Collection, Qrels, Queries, Run};
use chorus_rank::{RerankOptions, Reranker, toy};
use clap::{Args, Subcommand};
use serde::Deserialize;

/// Arguments of `chorus rerank`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RerankArgs {
    #[command(subcommand)]
    pub command: Option<RerankCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `chorus rerank` subcommands.
#[derive(Subcommand)]
pub enum RerankCommand {
    /// Train FiT5 (stage 1 without the score feature, then stage 2 with it) and save it.
    Train(TrainArgs),
}

/// Arguments of re-ranking.
#[derive(Args)]
pub struct RunArgs {
    /// FiT5 folder: config.json, model.safetensors, tokenizer.json (with [CLS]).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Queries: qid<TAB>text.
    #[arg(long, requires_all = ["collection", "run", "out"])]
    pub queries: Option<PathBuf>,
    /// Passages: docid<TAB>text or docid<TAB>title<TAB>text.
    #[arg(long)]
    pub collection: Option<PathBuf>,
    /// First-stage run with scores: TREC (qid Q0 docid rank score tag) or qid docid score.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Output run file (written atomically; an existing one is replaced only with --force).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// One query with inline candidates as JSON ({"query", "candidates": [{"docid","title","text","score"}]});
    /// a file, or - for standard input. Prints the ranking as JSON.
    #[arg(long, conflicts_with_all = ["queries", "collection", "run", "out"])]
    pub json: Option<String>,
    /// Judgements: prints MRR@10 and NDCG@10 of the first stage and of the re-ranked run.
    #[arg(long)]
    pub qrels: Option<PathBuf>,
    /// Turn global attention across candidates off (each candidate scored alone).
    #[arg(long)]
    pub no_global: bool,
    /// Use the stage-1 template (no `score:` feature).
    #[arg(long)]
    pub no_feature: bool,
    /// Candidates re-ranked per query (at most 100); the rest follow in first-stage order.
    #[arg(long, default_value_t = 100)]
    pub depth: usize,
    /// Inputs longer than the model's max_seq_len: truncate-passage, reference (cut the end) or error.
    #[arg(long, default_value = "truncate-passage")]
    pub overlong: String,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    /// Run tag (last column of the run file).
    #[arg(long, default_value = "chorus-fit5")]
    pub tag: String,
}

/// Arguments of `chorus rerank train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Train on the toy ranking set built into the binary, from a fresh tiny FiT5.
    #[arg(long, conflicts_with_all = ["queries", "collection", "run", "qrels"])]
    pub toy: bool,
    /// Start from a FiT5 folder, or from a T5 folder (fresh global layers and head).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Training queries.
    #[arg(long, requires_all = ["collection", "run", "qrels"])]
    pub queries: Option<PathBuf>,
    /// Passages.
    #[arg(long)]
    pub collection: Option<PathBuf>,
    /// First-stage run of the training queries (negatives are taken from it in rank order).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Training judgements (the positive of each list).
    #[arg(long)]
    pub qrels: Option<PathBuf>,
    /// Held-out queries, run and qrels for MRR@10 / NDCG@10 before and after (the toy set brings its own).
    #[arg(long, requires_all = ["eval_run", "eval_qrels"])]
    pub eval_queries: Option<PathBuf>,
    /// Held-out first-stage run.
    #[arg(long)]
    pub eval_run: Option<PathBuf>,
    /// Held-out judgements.
    #[arg(long)]
    pub eval_qrels: Option<PathBuf>,
    /// Output folder of the trained model (config.json, model.safetensors, tokenizer.json); an existing
    /// non-empty folder is replaced only with --force, and never when it is, holds or lies inside an input.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
    /// Stage-1 steps (template without the score feature); 0 skips stage 1. Default 0 (toy: 300).
    #[arg(long)]
    pub stage1_steps: Option<usize>,
    /// Stage-2 steps (with the feature; the reference keeps the 1500-step checkpoint). Default 1500 (toy: 300).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Peak learning rate. Default 2e-5, the reference's for t5-base (toy: 2e-3).
    #[arg(long, value_parser = crate::commands::finite_f64)]
    pub lr: Option<f64>,
    /// Warm-up steps of each stage (reference: 4000 and 1000). Default 1000 (toy: 20).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Query lists per update (reference: 16 and 256). Default 16 (toy: 4).
    #[arg(long)]
    pub lists_per_step: Option<usize>,
    /// Candidates per list: the positive and the first negatives (reference: 100). Default 100 (toy: 10).
    #[arg(long)]
    pub list_size: Option<usize>,
    /// AdamW weight decay.
    #[arg(long, value_parser = crate::commands::finite_f32, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// Seed of the initialisation and of the list order.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    /// Over-long inputs: truncate-passage, reference or error.
    #[arg(long, default_value = "truncate-passage")]
    pub overlong: String,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs `chorus rerank …`.
pub fn run(a: RerankArgs) -> Result<()> {
    match a.command {
        Some(RerankCommand::Train(t)) => train_cmd(t),
        None => rerank_cmd(a.run),
    }
}

fn overlong(s: &str) -> Result<OverLong> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| anyhow::anyhow!("--overlong '{s}': use truncate-passage, reference or error"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    query: String,
    candidates: Vec<Candidate>,
}

fn rerank_cmd(a: RunArgs) -> Result<()> {
    let Some(model_dir) = a.model.as_deref() else { bail!("--model DIR is required (or use `chorus rerank train`)") };
    let dev = a.device.device()?;
    let mut rr =
        Reranker::open(model_dir, &dev).with_context(|| format!("loading FiT5 from {}", model_dir.display()))?;
    if a.no_global {
        rr.model.set_global(false);
    }
    let opts = RerankOptions { depth: a.depth, use_feature: !a.no_feature, overlong: overlong(&a.overlong)? };
    if let Some(src) = &a.json {
        return json_mode(&rr, src, &opts);
    }
    let (Some(qp), Some(cp), Some(rp), Some(out)) = (&a.queries, &a.collection, &a.run, &a.out) else {
        bail!("give --queries, --collection, --run and --out (or --json for one query)");
    };
    let inputs: Vec<&Path> = [model_dir, qp, cp, rp].into_iter().chain(a.qrels.as_deref()).collect();
    chorus_core::output::check(out, &inputs, a.force)?;
    let queries = trec::load(qp, trec::parse_queries)?;
    let collection = trec::load(cp, trec::parse_collection)?;
    let first = trec::load(rp, trec::parse_run)?;
    let qrels = a.qrels.as_deref().map(|p| trec::load(p, trec::parse_qrels)).transpose()?;
    let t0 = Instant::now();
    let report = rr.rerank(&queries, &collection, &first, &opts, &mut |done, total, _| {
        if done % 50 == 0 || done == total {
            eprintln!("reranked {done}/{total} queries ({:.1}s)", t0.elapsed().as_secs_f64());
        }
    })?;
    chorus_core::output::write_file(out, trec::format_run(&report.run, &a.tag).as_bytes(), a.force)?;
    let mut summary = serde_json::json!({
        "queries": first.len(),
        "reranked": report.run.len(),
        "failed": report.failures.len(),
        "truncated_inputs": report.truncated,
        "global": rr.model.config().use_global,
        "seconds": t0.elapsed().as_secs_f64(),
        "out": out.display().to_string(),
    });
    if let Some(j) = &qrels {
        let kept: Run =
            first.iter().filter(|(q, _)| report.run.contains_key(*q)).map(|(q, v)| (q.clone(), v.clone())).collect();
        summary["first_stage"] = metrics(&kept, j);
        summary["reranked_metrics"] = metrics(&report.run, j);
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    for (_, why) in &report.failures {
        eprintln!("error: {why}");
    }
    if !report.failures.is_empty() {
        bail!(
            "{} of {} queries could not be re-ranked (listed above); {} holds the other {}",
            report.failures.len(),
            first.len(),
            out.display(),
            report.run.len()
        );
    }
    Ok(())
}

fn metrics(run: &Run, qrels: &Qrels) -> serde_json::Value {
    serde_json::json!({ "mrr@10": mrr_at(run, qrels, 10), "ndcg@10": ndcg_at(run, qrels, 10) })
}

fn json_mode(rr: &Reranker, src: &str, opts: &RerankOptions) -> Result<()> {
    let text = if src == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the JSON request from standard input")?;
        s
    } else {
        std::fs::read_to_string(src).with_context(|| format!("reading {src}"))?
    };
    let req: JsonRequest = serde_json::from_str(&text).with_context(|| format!("{src}: not a rerank request"))?;
    let mut cands = req.candidates;
    if !opts.use_feature {
        cands.iter_mut().for_each(|c| c.score = None);
    }
    let (scores, truncated) = rr.score("json", &req.query, &cands, opts.overlong)?;
    let mut ranked: Vec<(String, f64)> =
        cands.iter().zip(&scores).map(|(c, &s)| (c.docid.clone(), f64::from(s))).collect();
    trec::trec_order(&mut ranked);
    let results: Vec<serde_json::Value> = ranked
        .iter()
        .enumerate()
        .map(|(i, (d, s))| serde_json::json!({ "rank": i + 1, "docid": d, "score": s }))
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "query": req.query,
            "global": rr.model.config().use_global,
            "truncated_inputs": truncated,
            "results": results,
        }))?
    );
    Ok(())
}

struct Data {
    queries: Queries,
    collection: Collection,
    run: Run,
    qrels: Qrels,
    eval: Option<(Queries, Run, Qrels)>,
}

fn train_data(a: &TrainArgs) -> Result<Data> {
    if a.toy {
        let t = toy::load()?;
        return Ok(Data {
            queries: t.train.queries,
            collection: t.collection,
            run: t.train.run,
            qrels: t.train.qrels,
            eval: Some((t.test.queries, t.test.run, t.test.qrels)),
        });
    }
    let (Some(q), Some(c), Some(r), Some(j)) = (&a.queries, &a.collection, &a.run, &a.qrels) else {
        bail!("give --queries, --collection, --run and --qrels (or --toy)");
    };
    let eval = match (&a.eval_queries, &a.eval_run, &a.eval_qrels) {
        (Some(q), Some(r), Some(j)) => Some((
            trec::load(q, trec::parse_queries)?,
            trec::load(r, trec::parse_run)?,
            trec::load(j, trec::parse_qrels)?,
        )),
        _ => None,
    };
    Ok(Data {
        queries: trec::load(q, trec::parse_queries)?,
        collection: trec::load(c, trec::parse_collection)?,
        run: trec::load(r, trec::parse_run)?,
        qrels: trec::load(j, trec::parse_qrels)?,
        eval,
    })
}

/// The starting model and its tokenizer: a FiT5 folder, a T5 folder (fresh global layers and head), or
/// the toy configuration from scratch.
fn init_model(a: &TrainArgs, dev: &Device) -> Result<(FiT5, Vec<u8>)> {
    let Some(dir) = &a.init else {
        if !a.toy {
            bail!("--init DIR is required unless --toy is given");
        }
        dev.seed(a.seed);
        return Ok((FiT5::new(&toy::config(), dev)?, toy::TOKENIZER_JSON.as_bytes().to_vec()));
    };
    let tj = std::fs::read(dir.join("tokenizer.json")).with_context(|| format!("{}/tokenizer.json", dir.display()))?;
    let (name, j) = chorus_models::t5::read_config(dir)?;
    let cfg = FiT5Config::from_json(&name, &j)?;
    let set = chorus_models::SafetensorsSet::open_dir(dir)?;
    let file = dir.join("model.safetensors").display().to_string();
    let is_fit5 = set.index.keys().any(|k| k.starts_with("t5.") || k.starts_with("module.t5."));
    dev.seed(a.seed);
    let model = if is_fit5 {
        FiT5::load(&set, &file, &cfg, dev)?
    } else {
        FiT5::from_t5(T5::load(&set, &file, "", &cfg.t5, dev)?, &cfg, dev)?
    };
    Ok((model, tj))
}

fn evaluate(
    model: &FiT5,
    tok: &tokenizers::Tokenizer,
    dev: &Device,
    data: &Data,
    ol: OverLong,
    feature: bool,
) -> Result<serde_json::Value> {
    let Some((q, r, j)) = &data.eval else { return Ok(serde_json::Value::Null) };
    let rr = Reranker { model: model.clone(), tokenizer: tok.clone(), device: dev.clone() };
    let opts = RerankOptions { depth: 100, use_feature: feature, overlong: ol };
    let rep = rr.rerank(q, &data.collection, r, &opts, &mut |_, _, _| {})?;
    if let Some((qid, why)) = rep.failures.first() {
        bail!("evaluating query {qid}: {why}");
    }
    Ok(metrics(&rep.run, j))
}

/// The schedule: the reference's values for t5-base, or the toy set's (a 64-wide model from scratch), each
/// overridable.
struct Schedule {
    stage1_steps: usize,
    steps: usize,
    lr: f64,
    warmup: usize,
    lists_per_step: usize,
    list_size: usize,
}

fn schedule(a: &TrainArgs) -> Schedule {
    let d = if a.toy {
        Schedule { stage1_steps: 300, steps: 300, lr: 2e-3, warmup: 20, lists_per_step: 4, list_size: 10 }
    } else {
        Schedule { stage1_steps: 0, steps: 1500, lr: 2e-5, warmup: 1000, lists_per_step: 16, list_size: 100 }
    };
    Schedule {
        stage1_steps: a.stage1_steps.unwrap_or(d.stage1_steps),
        steps: a.steps.unwrap_or(d.steps),
        lr: a.lr.unwrap_or(d.lr),
        warmup: a.warmup.unwrap_or(d.warmup),
        lists_per_step: a.lists_per_step.unwrap_or(d.lists_per_step),
        list_size: a.list_size.unwrap_or(d.list_size),
    }
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    let ol = overlong(&a.overlong)?;
    let sch = schedule(&a);
    if sch.list_size < 2 || sch.list_size > 100 {
        bail!("--list-size {}: a list holds the positive and 1 to 99 negatives", sch.list_size);
    }
    if !(sch.lr.is_finite() && sch.lr > 0.0) {
        bail!("--lr {}: must be a positive number", sch.lr);
    }
    let inputs: Vec<&Path> =
        [&a.init, &a.queries, &a.collection, &a.run, &a.qrels, &a.eval_queries, &a.eval_run, &a.eval_qrels]
            .into_iter()
            .filter_map(|p| p.as_deref())
            .collect();
    chorus_core::output::check(&a.out, &inputs, a.force)?;
    let plain = a.device.device()?;
    let ad = plain.clone().autodiff();
    let data = train_data(&a)?;
    let (model, tj) = init_model(&a, &ad)?;
    let tok = tokenizers::Tokenizer::from_bytes(&tj).map_err(|e| anyhow::anyhow!("tokenizer.json: {e}"))?;
    // Evaluated with the template of the last stage that runs (stage 2 reads the feature, stage 1 does not).
    let feature = sch.steps > 0;
    let before = evaluate(&model.valid(), &tok, &plain, &data, ol, feature)?;
    let first_stage = data.eval.as_ref().map_or(serde_json::Value::Null, |(_, r, j)| metrics(r, j));
    let t0 = Instant::now();
    let mut model = model;
    let mut stages = Vec::new();
    for (stage, steps, feature) in [(1, sch.stage1_steps, false), (2, sch.steps, true)] {
        if steps == 0 {
            continue;
        }
        let (lists, skipped) =
            training_lists(&data.queries, &data.collection, &data.run, &data.qrels, sch.list_size, feature);
        for (q, why) in skipped.iter().take(5) {
            eprintln!("stage {stage}: query {q} left out: {why}");
        }
        let cfg = TrainConfig {
            steps,
            lr: sch.lr,
            warmup: sch.warmup.min(steps),
            weight_decay: a.weight_decay,
            lists_per_step: sch.lists_per_step,
            seed: a.seed + stage,
        };
        let every = (steps / 10).max(1);
        let ts = Instant::now();
        let (m, rep) = train(model, &tok, &lists, &cfg, ol, &ad, &mut |s, l| {
            if (s + 1) % every == 0 || s == 0 {
                eprintln!("stage {stage}: step {}/{steps} loss {l:.4} ({:.1}s)", s + 1, ts.elapsed().as_secs_f64());
            }
        })
        .with_context(|| format!("training stage {stage}"))?;
        model = m;
        let head = mean(&rep.losses[..rep.losses.len().min(10)]);
        let tail = mean(&rep.losses[rep.losses.len().saturating_sub(10)..]);
        stages.push(serde_json::json!({
            "stage": stage, "feature": feature, "steps": steps, "lists": lists.len(), "skipped_queries": skipped.len(),
            "loss_first10": head, "loss_last10": tail, "truncated_inputs": rep.truncated,
            "seconds": ts.elapsed().as_secs_f64(),
        }));
    }
    let trained = model.valid();
    let after = evaluate(&trained, &tok, &plain, &data, ol, feature)?;
    save(&trained, &a.out, &tj, a.force)?;
    let summary = serde_json::json!({
        "out": a.out.display().to_string(),
        "backend": a.device.backend,
        "stages": stages,
        "eval": { "first_stage": first_stage, "before": before, "after": after },
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for s in summary["stages"].as_array().into_iter().flatten() {
            println!(
                "stage {}: {} steps, loss {:.4} -> {:.4}",
                s["stage"],
                s["steps"],
                s["loss_first10"].as_f64().unwrap_or(0.0),
                s["loss_last10"].as_f64().unwrap_or(0.0)
            );
        }
        let m = |v: &serde_json::Value| v["mrr@10"].as_f64().map_or("-".into(), |x| format!("{x:.4}"));
        if data.eval.is_some() {
            println!("held-out MRR@10: first stage {}, before {}, after {}", m(&first_stage), m(&before), m(&after));
        }
        println!("saved {}", a.out.display());
    }
    Ok(())
}

fn mean(v: &[f32]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64 }
}

fn save(model: &FiT5, out: &Path, tj: &[u8], force: bool) -> Result<()> {
    model.save(out, tj, force).with_context(|| format!("saving the model to {}", out.display()))
}
