//! `chorus eval fuse`: a multiple-choice MMLU slice scored with the large model alone, the expert alone,
//! proxy-tuning (α = 1), DLF (paper grid) and DLF (refine), all from the same forward passes.
//! Experts are prompt-defined: the small base with a subject system prompt, sharing its weights.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chorus_core::fusion::{self, FastEvaluator, FusionConfig, RowLogits, Solver};
use chorus_core::sampling::Rng;
use chorus_engine::{Fusion, FusionSetup, Member};
use clap::{Args, Subcommand};

/// Evaluations.
#[derive(Subcommand)]
pub enum EvalCommand {
    /// MMLU multiple choice: large alone, expert alone, proxy-tuning, DLF (paper), DLF (refine).
    Fuse(EvalFuseArgs),
}

/// Arguments of `chorus eval fuse`.
#[derive(Args)]
pub struct EvalFuseArgs {
    /// Large base (e.g. Qwen2.5-Coder-1.5B-Instruct GGUF).
    #[arg(long)]
    large: PathBuf,
    /// Small base; each subject's expert is this model with a subject system prompt.
    #[arg(long)]
    base: PathBuf,
    /// MMLU JSON lines (question, answer_a..d, correct_answer, topic), from `scripts/fetch-models mmlu`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Subjects (MMLU topics), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "elementary mathematics,conceptual physics,electrical engineering,world religions"
    )]
    subjects: Vec<String>,
    /// Questions per subject (drawn with --seed).
    #[arg(long, default_value_t = 50)]
    per_subject: usize,
    /// Seed of the question draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    device: crate::commands::DeviceArgs,
    #[command(flatten)]
    weights: crate::commands::WeightArgs,
    /// Write the results as JSON here (atomically; an existing file is replaced only with --force).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
}

#[derive(serde::Deserialize, Clone)]
struct Question {
    question: String,
    answer_a: String,
    answer_b: String,
    answer_c: String,
    answer_d: String,
    correct_answer: String,
    topic: String,
}

/// Runs an evaluation.
pub fn run(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Fuse(a) => fuse(a),
    }
}

const METHODS: [(&str, &str); 5] = [
    ("large", "large alone"),
    ("expert", "expert alone"),
    ("proxy", "proxy-tuning (α = 1)"),
    ("paper", "DLF (paper grid)"),
    ("refine", "DLF (refine)"),
];

fn solver_of(key: &str) -> Solver {
    match key {
        "large" => Solver::LargeOnly,
        "expert" => Solver::ExpertOnly,
        "proxy" => Solver::Static { alpha: 1.0 },
        "paper" => Solver::Paper,
        _ => Solver::Refine,
    }
}

fn fuse(a: EvalFuseArgs) -> Result<()> {
    if let Some(p) = &a.out {
        chorus_core::output::check(p, &[], a.force)?;
    }
    let data = match &a.data {
        Some(p) => p.clone(),
        None => crate::commands::chorus_home().join("data/mmlu.jsonl"),
    };
    let text = std::fs::read_to_string(&data)
        .with_context(|| format!("cannot read {} (fetch it with scripts/fetch-models mmlu)", data.display()))?;
    let mut all: Vec<Question> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        all.push(serde_json::from_str(line).with_context(|| format!("{} line {}", data.display(), i + 1))?);
    }
    let mut slices: Vec<(String, Vec<Question>)> = Vec::new();
    for s in &a.subjects {
        let mut qs: Vec<Question> = all.iter().filter(|q| &q.topic == s).cloned().collect();
        if qs.is_empty() {
            bail!("subject {s:?} has no questions in {}", data.display());
        }
        // Fisher–Yates with the fixed seed, then the first N.
        let mut rng = Rng::new(a.seed ^ chorus_core::hash::fnv1a_str(s));
        for i in (1..qs.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            qs.swap(i, j);
        }
        qs.truncate(a.per_subject);
        slices.push((s.clone(), qs));
    }
    let total: usize = slices.iter().map(|(_, q)| q.len()).sum();
    eprintln!("loading {} and {}", a.large.display(), a.base.display());
    let large = Arc::new(crate::commands::load(&a.large, &a.device, a.weights)?);
    let base = Arc::new(crate::commands::load(&a.base, &a.device, a.weights)?);
    let tk = &large.files.tokenizer;
    let letters: Vec<u32> = ["A", "B", "C", "D"]
        .iter()
        .map(|l| match tk.encode(l, false)?.as_slice() {
            [id] => Ok(*id),
            other => bail!("letter {l} encodes to {other:?}, not one token"),
        })
        .collect::<Result<_>>()?;

    let mut correct = vec![vec![0usize; METHODS.len()]; slices.len()];
    let mut alpha_sum = vec![vec![0f64; 2]; slices.len()];
    let mut search_ms = 0.0;
    let mut done = 0usize;
    let t0 = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    for (si, (subject, qs)) in slices.iter().enumerate() {
        let expert = Member {
            name: subject.clone(),
            model: base.clone(),
            instruction: Some(format!(
                "You are an expert in {subject}. Answer multiple-choice questions about {subject} with the letter \
                 of the correct option."
            )),
        };
        let fusion = Fusion::new(FusionSetup {
            large: Member { name: "large".into(), model: large.clone(), instruction: None },
            base: Member { name: "base".into(), model: base.clone(), instruction: None },
            experts: vec![expert],
        })?;
        for q in qs {
            let prompt = format!(
                "{}\n\nA. {}\nB. {}\nC. {}\nD. {}\n\nAnswer with only the letter (A, B, C or D) of the correct option.",
                q.question.trim(),
                q.answer_a.trim(),
                q.answer_b.trim(),
                q.answer_c.trim(),
                q.answer_d.trim()
            );
            let rows = fusion.prompt_logits(&prompt, true)?;
            let ex = [rows[2].as_slice()];
            let row = RowLogits { large: &rows[0], base: &rows[1], experts: &ex };
            let want = match q.correct_answer.trim() {
                "A" => 0,
                "B" => 1,
                "C" => 2,
                "D" => 3,
                other => bail!("question {:?}: correct_answer {other:?} is not A-D", q.question),
            };
            let mut ev = FastEvaluator::new();
            for (mi, (key, _)) in METHODS.iter().enumerate() {
                let ts = std::time::Instant::now();
                ev.load(&row)?;
                let cfg = FusionConfig::with_solver(solver_of(key));
                let choice = fusion::solve(&cfg, &mut ev);
                let z = fusion::fused_logits(&row, &choice.alpha, cfg.solver == Solver::ExpertOnly);
                if matches!(*key, "paper" | "refine") {
                    search_ms += ts.elapsed().as_secs_f64() * 1000.0;
                    alpha_sum[si][mi - 3] += choice.alpha[0] as f64;
                }
                let pick = (0..4).fold(0, |b, k| if z[letters[k] as usize] > z[letters[b] as usize] { k } else { b });
                correct[si][mi] += (pick == want) as usize;
            }
            done += 1;
            let eta = t0.elapsed().as_secs_f64() / done as f64 * (total - done) as f64;
            if tty || done.is_multiple_of(10) || done == total {
                eprintln!("[{done}/{total}] {subject}: eta {eta:.0} s");
            }
        }
    }
    let pct = |c: usize, n: usize| 100.0 * c as f64 / n.max(1) as f64;
    print!("{:<24}", "method");
    for (s, qs) in &slices {
        print!(" {:>14}", format!("{} (n={})", short(s), qs.len()));
    }
    println!(" {:>8}", "avg");
    let mut table = Vec::new();
    for (mi, (key, label)) in METHODS.iter().enumerate() {
        print!("{label:<24}");
        let mut per = Vec::new();
        for (si, (_, qs)) in slices.iter().enumerate() {
            let v = pct(correct[si][mi], qs.len());
            per.push(v);
            print!(" {v:>14.1}");
        }
        let avg = per.iter().sum::<f64>() / per.len() as f64;
        println!(" {avg:>8.1}");
        table.push(serde_json::json!({"method": key, "label": label, "accuracy": per, "average": avg}));
    }
    let mean_alpha: Vec<serde_json::Value> = slices
        .iter()
        .enumerate()
        .map(|(si, (s, qs))| {
            serde_json::json!({"subject": s, "paper": alpha_sum[si][0] / qs.len() as f64,
                               "refine": alpha_sum[si][1] / qs.len() as f64})
        })
        .collect();
    let j = serde_json::json!({
        "eval": "fuse-mmlu",
        "large": a.large.display().to_string(),
        "base": a.base.display().to_string(),
        "weights": a.weights.to_string(),
        "backend": a.device.backend,
        "subjects": a.subjects,
        "questions": total,
        "seed": a.seed,
        "table": table,
        "mean_alpha": mean_alpha,
        "search_ms_per_question": search_ms / total.max(1) as f64,
        "wall_s": t0.elapsed().as_secs_f64(),
    });
    eprintln!("mean α: {mean_alpha:?}");
    if let Some(out) = &a.out {
        chorus_core::output::write_file(out, serde_json::to_string_pretty(&j)?.as_bytes(), a.force)?;
    }
    Ok(())
}

fn short(s: &str) -> String {
    s.split_whitespace().map(|w| w.chars().next().unwrap_or('?')).collect::<String>().to_uppercase()
}
