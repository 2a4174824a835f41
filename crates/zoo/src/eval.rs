//! The zoo's evaluation: greedy exact match on each task's test split for the models alone, proxy-tuning
//! (α = 1) and DLF (paper grid and refine), in the paper's single-task and multi-task tables (§A.8), and
//! the seen tasks' small experts merged by chorus-merge (linear, task arithmetic, TIES, DARE).

use std::path::Path;
use std::sync::Arc;

use chorus_core::GenerateOptions;
use chorus_core::fusion::{FusionConfig, MultiRule, Solver};
use chorus_engine::{Backend, FuseOptions, Fusion, FusionSetup, LoadedModel};
use chorus_models::ModelFiles;
use serde::{Deserialize, Serialize};

use crate::demo::member;
use crate::error::{Error, Result};
use crate::family::{Manifest, member_name};
use crate::tasks::{Example, Task};

pub use crate::tasks::TEST_SPLIT;

/// Exact-match accuracy (0–100) of every method on one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    /// Task name.
    pub task: String,
    /// Whether the multi-task fine-tune saw it.
    pub seen: bool,
    /// `method → accuracy`, in table order.
    pub scores: Vec<(String, f64)>,
}

/// The evaluation's result (`chorus zoo eval --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Test examples per task.
    pub per_task: usize,
    /// Single-task rows: large base, small expert, proxy-tuning, DLF paper, DLF refine, large fine-tune.
    pub single: Vec<TaskRow>,
    /// Multi-task rows: large base, DLF with the seen tasks' experts (paper centroid, route), multi-task
    /// large fine-tune.
    pub multi: Vec<TaskRow>,
    /// Merging rows: the small expert of each task, then the seen tasks' small experts merged into one
    /// small model by each method of [`MERGES`].
    #[serde(default)]
    pub merging: Vec<TaskRow>,
}

/// The merges of the merging table: (row name, mergekit YAML body after `models:`' entries' parameters,
/// per-model parameters). Hyper-parameters are the Twin-Merging paper's baselines where it gives them (task
/// arithmetic λ 0.3, TIES keeping 10 % at scaling 0.7 ≈ density 0.1 with λ 0.7, DARE + TA density 0.3 at
/// λ 0.7) and mergekit's defaults otherwise.
pub const MERGES: [(&str, &str, &str); 4] = [
    ("linear (average)", "merge_method: linear\n", "{weight: 1.0}"),
    ("task arithmetic λ=0.3", "merge_method: task_arithmetic\nparameters: {lambda: 0.3}\n", "{weight: 1.0}"),
    ("TIES d=0.1 λ=0.7", "merge_method: ties\nparameters: {lambda: 0.7}\n", "{weight: 1.0, density: 0.1}"),
    ("DARE d=0.3 λ=0.7", "merge_method: dare_linear\nparameters: {lambda: 0.7}\n", "{weight: 1.0, density: 0.3}"),
];

/// The merging table's Twin-Merging rows (λ 0.3): the reference's density 0.1 (rank 6 of the small models'
/// 64) and 0.5, to show what the rank buys on models this small.
pub const TWIN_ROWS: [(&str, chorus_merge::Rank); 2] = [
    ("Twin-Merging d=0.1 λ=0.3", chorus_merge::Rank::Density(0.1)),
    ("Twin-Merging d=0.5 λ=0.3", chorus_merge::Rank::Density(0.5)),
];

/// Merges the seen tasks' small experts of the family in `dir` with each of [`MERGES`] (into a temporary
/// folder) and scores each merged model alone on `tests` (per task).
fn merging_rows(
    dir: &Path,
    manifest: &Manifest,
    tests: &[(Task, Vec<Example>)],
    experts: &[(Task, f64)],
) -> Result<Vec<TaskRow>> {
    let mut rows: Vec<TaskRow> = tests
        .iter()
        .zip(experts)
        .map(|((t, _), (_, e))| TaskRow {
            task: t.name().into(),
            seen: manifest.spec.seen.contains(t),
            scores: vec![("small expert".into(), *e)],
        })
        .collect();
    let tmp = std::env::temp_dir().join(format!("chorus-zoo-merge-{}", std::process::id()));
    std::fs::remove_dir_all(&tmp).ok();
    std::fs::create_dir_all(&tmp).map_err(|e| Error::Io { path: tmp.clone(), reason: e.to_string() })?;
    let result = (|| -> Result<()> {
        for (k, (name, head, params)) in MERGES.iter().enumerate() {
            let mut yml = format!("{head}base_model: {}\nmodels:\n", dir.join(member_name(false, "base")).display());
            for t in &manifest.spec.seen {
                yml.push_str(&format!(
                    "  - model: {}\n    parameters: {params}\n",
                    dir.join(member_name(false, t.name())).display()
                ));
            }
            if head.starts_with("merge_method: linear\n") {
                yml = yml.replace(&format!("base_model: {}\n", dir.join(member_name(false, "base")).display()), "");
            }
            let merr =
                |e: chorus_merge::Error| Error::Config { field: format!("merging/{name}"), reason: e.to_string() };
            let cfg = chorus_merge::MergeConfig::from_yaml(&yml, Path::new(name), Path::new("")).map_err(merr)?;
            let out = tmp.join(format!("m{k}"));
            let opts = chorus_merge::RunOptions {
                force: false,
                shard_bytes: u64::MAX,
                masks: &mut chorus_merge::methods::SeededMasks { seed: manifest.spec.seed },
                progress: &mut |_, _, _| {},
            };
            chorus_merge::run(&cfg, &out, opts).map_err(merr)?;
            let model = load(&out)?;
            for (row, (_, ex)) in rows.iter_mut().zip(tests) {
                row.scores.push((name.to_string(), alone(&model, ex)?));
            }
        }
        // Twin-Merging: the same experts as a twin pack, its router trained on the seen tasks' prompts
        // (router split), weights per test prompt.
        let data = crate::twin::router_data(&manifest.spec.seen, manifest.spec.seed, crate::twin::ROUTER_PROMPTS);
        for (k, (name, rank)) in TWIN_ROWS.iter().enumerate() {
            let pack = tmp.join(format!("twin{k}"));
            let topts = chorus_merge::TwinOptions { lambda: 0.3, rank: *rank, ..Default::default() };
            crate::twin::build_pack(dir, manifest, &pack, &topts)?;
            let twin = crate::twin::train_pack_router(&pack, &data, &crate::twin::router_schedule())?;
            let scored = crate::twin::score(&twin, tests, chorus_engine::twin::MixMode::Row)?;
            for (row, (acc, _)) in rows.iter_mut().zip(scored) {
                row.scores.push((name.to_string(), acc));
            }
        }
        Ok(())
    })();
    std::fs::remove_dir_all(&tmp).ok();
    result.map(|()| rows)
}

fn load(dir: &Path) -> Result<Arc<LoadedModel>> {
    let err = |e: String| Error::Io { path: dir.to_path_buf(), reason: e };
    let files = ModelFiles::open(dir).map_err(|e| err(e.to_string()))?;
    let device = chorus_engine::device(Backend::Cpu).map_err(|e| err(e.to_string()))?;
    Ok(Arc::new(LoadedModel::load(files, Backend::Cpu, &device, None, &mut |_, _| {}).map_err(|e| err(e.to_string()))?))
}

fn opts() -> GenerateOptions {
    GenerateOptions { max_new_tokens: 16, ..Default::default() }
}

fn accuracy(tests: &[Example], outputs: &[String]) -> f64 {
    let ok = tests.iter().zip(outputs).filter(|(e, o)| e.is_correct(o)).count();
    100.0 * ok as f64 / tests.len().max(1) as f64
}

fn alone(m: &LoadedModel, tests: &[Example]) -> Result<f64> {
    let prompts: Vec<Vec<u32>> = tests
        .iter()
        .map(|e| m.files.tokenizer.encode(&e.prompt, false))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Device(e.to_string()))?;
    let outs = m.generate_batch(&prompts, &opts()).map_err(|e| Error::Device(e.to_string()))?;
    Ok(accuracy(tests, &outs.into_iter().map(|o| o.text).collect::<Vec<_>>()))
}

fn fused(setup: &FusionSetup, solver: Solver, multi: MultiRule, tests: &[Example]) -> Result<f64> {
    let f = Fusion::new(setup.clone()).map_err(|e| Error::Device(e.to_string()))?;
    let o = FuseOptions {
        generate: opts(),
        fusion: FusionConfig { multi, ..FusionConfig::with_solver(solver) },
        chat: false,
    };
    let prompts: Vec<String> = tests.iter().map(|e| e.prompt.clone()).collect();
    let outs = f.generate_batch(&prompts, &o, &mut |_| {}).map_err(|e| Error::Device(e.to_string()))?;
    Ok(accuracy(tests, &outs.into_iter().map(|o| o.text).collect::<Vec<_>>()))
}

/// Evaluates a trained family folder on `per_task` test examples per task; `log` gets progress lines.
pub fn evaluate(dir: &Path, per_task: usize, log: &mut dyn FnMut(&str)) -> Result<Report> {
    let manifest: Manifest = {
        let p = dir.join("family.json");
        let b = std::fs::read(&p).map_err(|e| Error::Io { path: p.clone(), reason: e.to_string() })?;
        serde_json::from_slice(&b).map_err(|e| Error::Io { path: p, reason: e.to_string() })?
    };
    let m = |large: bool, role: &str| load(&dir.join(member_name(large, role)));
    let (large_base, small_base) = (m(true, "base")?, m(false, "base")?);
    let experts: Vec<(Task, Arc<LoadedModel>)> =
        manifest.spec.tasks.iter().map(|&t| Ok((t, m(false, t.name())?))).collect::<Result<_>>()?;
    let mut single = Vec::new();
    let mut multi = Vec::new();
    // As in the paper's Table 2: experts of the seen tasks only; held-out tasks have none.
    let all_setup = FusionSetup {
        large: member("large", &large_base),
        base: member("base", &small_base),
        experts: experts
            .iter()
            .filter(|(t, _)| manifest.spec.seen.contains(t))
            .map(|(t, e)| member(t.name(), e))
            .collect(),
    };
    let multi_ft = m(true, "multi")?;
    let mut all_tests = Vec::new();
    let mut expert_scores = Vec::new();
    for (t, expert) in &experts {
        let tests = t.examples(manifest.spec.seed, TEST_SPLIT, per_task);
        let setup = FusionSetup {
            large: member("large", &large_base),
            base: member("base", &small_base),
            experts: vec![member(t.name(), expert)],
        };
        let base = alone(&large_base, &tests)?;
        let expert_score = alone(expert, &tests)?;
        expert_scores.push((*t, expert_score));
        let scores = vec![
            ("large base".to_string(), base),
            ("small expert".to_string(), expert_score),
            ("proxy-tuning".to_string(), fused(&setup, Solver::Static { alpha: 1.0 }, MultiRule::Centroid, &tests)?),
            ("DLF (paper)".to_string(), fused(&setup, Solver::Paper, MultiRule::Centroid, &tests)?),
            ("DLF (refine)".to_string(), fused(&setup, Solver::Refine, MultiRule::Centroid, &tests)?),
            ("large fine-tune".to_string(), alone(&*m(true, t.name())?, &tests)?),
        ];
        log(&format!("{}: {:?}", t.name(), scores));
        let seen = manifest.spec.seen.contains(t);
        single.push(TaskRow { task: t.name().into(), seen, scores });
        let mscores = vec![
            ("large base".to_string(), base),
            ("DLF all experts (paper)".to_string(), fused(&all_setup, Solver::Paper, MultiRule::Centroid, &tests)?),
            ("DLF all experts (route)".to_string(), fused(&all_setup, Solver::Paper, MultiRule::Route, &tests)?),
            ("multi-task fine-tune".to_string(), alone(&multi_ft, &tests)?),
        ];
        log(&format!("{} (multi): {:?}", t.name(), mscores));
        multi.push(TaskRow { task: t.name().into(), seen, scores: mscores });
        all_tests.push((*t, tests));
    }
    log("merging the seen tasks' small experts");
    let merging = merging_rows(dir, &manifest, &all_tests, &expert_scores)?;
    Ok(Report { per_task, single, multi, merging })
}

/// The paper-style tables as text, with averages and the ratios DLF/FT and (DLF − base)/(FT − base).
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let table = |s: &mut String, title: &str, rows: &[TaskRow]| {
        let Some(first) = rows.first() else { return };
        s.push_str(&format!("{title} (exact match %, {} test prompts per task)\n", r.per_task));
        s.push_str(&format!("{:<26}", "method"));
        for row in rows {
            s.push_str(&format!("{:>9}", format!("{}{}", row.task, if row.seen { "" } else { "*" })));
        }
        s.push_str(&format!("{:>9}\n", "avg"));
        for (k, (method, _)) in first.scores.iter().enumerate() {
            s.push_str(&format!("{method:<26}"));
            let vals: Vec<f64> = rows.iter().map(|row| row.scores[k].1).collect();
            for v in &vals {
                s.push_str(&format!("{v:>9.1}"));
            }
            s.push_str(&format!("{:>9.1}\n", vals.iter().sum::<f64>() / vals.len() as f64));
        }
    };
    table(&mut s, "Single task", &r.single);
    let avg = |rows: &[TaskRow], name: &str| -> Option<f64> {
        let v: Vec<f64> =
            rows.iter().filter_map(|row| row.scores.iter().find(|(m, _)| m == name).map(|x| x.1)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    if let (Some(d), Some(f), Some(b)) =
        (avg(&r.single, "DLF (paper)"), avg(&r.single, "large fine-tune"), avg(&r.single, "large base"))
    {
        s.push_str(&format!(
            "DLF/FT = {:.1}%   (DLF − base)/(FT − base) = {:.1}%\n\n",
            100.0 * d / f.max(1e-9),
            100.0 * (d - b) / (f - b).max(1e-9)
        ));
    }
    table(
        &mut s,
        "Multi-task (* = held out from the multi-task fine-tune; DLF fuses the seen tasks' experts)",
        &r.multi,
    );
    let seen: Vec<TaskRow> = r.multi.iter().filter(|row| row.seen).cloned().collect();
    if let Some(f) = avg(&seen, "multi-task fine-tune") {
        let ratios: Vec<String> = ["DLF all experts (paper)", "DLF all experts (route)"]
            .iter()
            .filter_map(|m| Some(format!("{m} = {:.1}%", 100.0 * avg(&seen, m)? / f.max(1e-9))))
            .collect();
        s.push_str(&format!("seen tasks, relative to the multi-task fine-tune: {}\n", ratios.join("   ")));
    }
    if !r.merging.is_empty() {
        s.push('\n');
        table(&mut s, "Merging the seen tasks' small experts into one small model", &r.merging);
        // The Twin-Merging paper's normalized score (Eq. 4): merged / the task's own expert, seen tasks.
        let seen: Vec<&TaskRow> = r.merging.iter().filter(|row| row.seen).collect();
        let norm: Vec<String> = r.merging[0].scores[1..]
            .iter()
            .enumerate()
            .map(|(k, (m, _))| {
                let v: Vec<f64> =
                    seen.iter().map(|row| 100.0 * row.scores[k + 1].1 / row.scores[0].1.max(1e-9)).collect();
                format!("{m} {:.1}", v.iter().sum::<f64>() / v.len().max(1) as f64)
            })
            .collect();
        s.push_str(&format!("normalized score (seen tasks, % of each task's expert): {}\n", norm.join("   ")));
    }
    s
}

/// Test prompts per task of the shipped family's fixture (`family/eval.json`).
pub const FIXTURE_PER_TASK: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped family evaluated now agrees with `family/eval.json` (written by
    /// `chorus zoo eval --json > crates/zoo/family/eval.json`), so any change that moves a number (runtime,
    /// fusion solver, loader) shows up here. Up to two prompts per cell may differ: greedy near-ties can flip
    /// with the summation order of another CPU's kernels.
    #[test]
    fn shipped_family_reproduces_its_eval_fixture() {
        let path = Path::new(crate::embedded::DIR).join("eval.json");
        let want: Report = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(want.per_task, FIXTURE_PER_TASK);
        let got = evaluate(Path::new(crate::embedded::DIR), want.per_task, &mut |l| eprintln!("{l}")).unwrap();
        eprintln!("{}", render(&got));
        let tol = 2.0 * 100.0 / want.per_task as f64 + 1e-9;
        let mut diffs = Vec::new();
        for (table, w, g) in [
            ("single", &want.single, &got.single),
            ("multi", &want.multi, &got.multi),
            ("merging", &want.merging, &got.merging),
        ] {
            assert_eq!(w.len(), g.len(), "{table}: rows");
            for (wr, gr) in w.iter().zip(g) {
                assert_eq!((&wr.task, wr.seen), (&gr.task, gr.seen), "{table}: row");
                for ((wm, wv), (gm, gv)) in wr.scores.iter().zip(&gr.scores) {
                    assert_eq!(wm, gm, "{table}/{}: method", wr.task);
                    if (wv - gv).abs() > tol {
                        diffs.push(format!("{table}/{}/{wm}: fixture {wv:.1}, now {gv:.1}", wr.task));
                    }
                }
            }
        }
        assert!(diffs.is_empty(), "the zoo's numbers moved (more than {tol:.0} points):\n{}", diffs.join("\n"));
    }

    /// On a micro family the evaluation runs every method through the real fusion engine and produces
    /// both tables with accuracies in range.
    #[test]
    fn micro_family_evaluates_into_both_tables() {
        let spec = crate::family::tests::micro_spec();
        let out = std::env::temp_dir().join(format!("chorus-zoo-eval-{}", std::process::id()));
        std::fs::remove_dir_all(&out).ok();
        crate::family::train_family(&spec, &out, false, &mut |_| {}).unwrap();
        let r = evaluate(&out, 3, &mut |_| {}).unwrap();
        assert_eq!(r.single.len(), 2);
        assert_eq!(r.single[0].scores.len(), 6);
        assert_eq!(r.multi[1].scores.len(), 4);
        assert_eq!(r.merging[0].scores.len(), 1 + MERGES.len() + TWIN_ROWS.len());
        assert!(r.merging.iter().flat_map(|row| &row.scores).all(|(_, v)| (0.0..=100.0).contains(v)));
        assert!(r.single[0].seen && !r.single[1].seen);
        assert!(r.single.iter().chain(&r.multi).flat_map(|row| &row.scores).all(|(_, v)| (0.0..=100.0).contains(v)));
        let text = render(&r);
        assert!(text.contains("DLF (paper)") && text.contains("date*"), "{text}");
        std::fs::remove_dir_all(&out).ok();
    }
}
