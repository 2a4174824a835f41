//! Twin-Merging on the zoo: a twin pack from the small base and the seen tasks' small experts, router
//! training data (task-labelled prompts from the training split), and the merging table's Twin row.

use std::path::Path;

use chorus_core::GenerateOptions;
use chorus_engine::Backend;
use chorus_engine::twin::{MixMode, RouterTrainConfig, TwinModel, train_router};
use chorus_merge::twin::{TwinOptions, TwinSummary, build};

use crate::error::{Error, Result};
use crate::family::{Manifest, member_name};
use crate::tasks::{Example, Task};

/// Split of the task generators used for router training data (disjoint from training 0 and test 2).
pub const ROUTER_SPLIT: u64 = 1;

/// Prompts per seen task the zoo's router is trained on.
pub const ROUTER_PROMPTS: usize = 200;

/// The zoo router's schedule: the reference's lr and epochs, with batches of 64 (its 1024 would be one step
/// per epoch on 800 prompts; it trained on 5500 per task).
pub fn router_schedule() -> RouterTrainConfig {
    RouterTrainConfig { batch: 64, ..RouterTrainConfig::default() }
}

/// Density of the twin pack shipped for the browser demo (`family/twin`): the merging table's best Twin row.
pub const SHIPPED_DENSITY: f64 = 0.5;

/// The shipped twin pack's folder in the source tree (the site's Twin-Merging page loads it).
pub const SHIPPED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/family/twin");

/// Builds the demo twin pack at `out` from the family in `dir`: density [`SHIPPED_DENSITY`], router trained
/// on [`router_data`] with [`router_schedule`]. Deterministic, so the shipped copy can be checked.
pub fn ship_pack(dir: &Path, manifest: &Manifest, out: &Path) -> Result<()> {
    let opts = TwinOptions { rank: chorus_merge::Rank::Density(SHIPPED_DENSITY), ..TwinOptions::default() };
    build_pack(dir, manifest, out, &opts)?;
    // twin.json records where base and experts came from; the shipped pack names the family's members
    // instead of this machine's paths, so every checkout builds the same bytes.
    let p = out.join("twin.json");
    let io = |e: String| Error::Config { field: p.display().to_string(), reason: e };
    let mut meta: chorus_merge::twin::PackMeta =
        serde_json::from_slice(&std::fs::read(&p).map_err(|e| io(e.to_string()))?).map_err(|e| io(e.to_string()))?;
    meta.base = format!("zoo:{}", member_name(false, "base"));
    meta.experts = manifest.spec.seen.iter().map(|t| format!("zoo:{}", member_name(false, t.name()))).collect();
    std::fs::write(&p, serde_json::to_vec_pretty(&meta).map_err(|e| io(e.to_string()))?)
        .map_err(|e| io(e.to_string()))?;
    let data = router_data(&manifest.spec.seen, manifest.spec.seed, ROUTER_PROMPTS);
    train_pack_router(out, &data, &router_schedule())?;
    Ok(())
}

/// Builds a twin pack at `out` from the family in `dir`: its small base and the small experts of the
/// tasks its multi-task fine-tune saw.
pub fn build_pack(dir: &Path, manifest: &Manifest, out: &Path, opts: &TwinOptions) -> Result<TwinSummary> {
    let experts: Vec<(String, std::path::PathBuf)> =
        manifest.spec.seen.iter().map(|t| (t.name().to_string(), dir.join(member_name(false, t.name())))).collect();
    build(&dir.join(member_name(false, "base")), &experts, out, opts, &mut |_, _, _| {})
        .map_err(|e| Error::Config { field: "twin".into(), reason: e.to_string() })
}

/// Task-labelled router prompts: `per_task` prompts of each of `tasks` from [`ROUTER_SPLIT`], as
/// `(task index, prompt)`.
pub fn router_data(tasks: &[Task], seed: u64, per_task: usize) -> Vec<(usize, String)> {
    tasks
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.examples(seed, ROUTER_SPLIT, per_task).into_iter().map(move |e| (i, e.prompt)))
        .collect()
}

fn dev(e: impl std::fmt::Display) -> Error {
    Error::Device(e.to_string())
}

/// Trains the pack's router on `data` (prompts labelled by the pack's task order) and saves it in the pack.
pub fn train_pack_router(pack: &Path, data: &[(usize, String)], tc: &RouterTrainConfig) -> Result<TwinModel> {
    let device = chorus_engine::device(Backend::Cpu).map_err(dev)?;
    let mut twin = TwinModel::load(pack, Backend::Cpu, &device).map_err(dev)?;
    let tk = &twin.model.files.tokenizer;
    let prompts: Vec<Vec<u32>> =
        data.iter().map(|(_, p)| tk.encode(p, false)).collect::<std::result::Result<_, _>>().map_err(dev)?;
    let labels: Vec<usize> = data.iter().map(|(t, _)| *t).collect();
    let feats = twin.features(&prompts).map_err(dev)?;
    let (router, cfg, rep) =
        train_router(&feats, &labels, twin.pack.meta.tasks.len(), tc, &mut |_, _, _| {}).map_err(dev)?;
    router.save(&cfg, &rep, pack, false).map_err(dev)?;
    twin.router = Some(router);
    Ok(twin)
}

/// Exact-match accuracy of the twin model (router weights per prompt) on each task's `tests`, and the mean
/// router weight each task's prompts got.
pub fn score(twin: &TwinModel, tests: &[(Task, Vec<Example>)], mode: MixMode) -> Result<Vec<(f64, Vec<f32>)>> {
    let tk = &twin.model.files.tokenizer;
    let opts = GenerateOptions { max_new_tokens: 16, ..Default::default() };
    tests
        .iter()
        .map(|(_, ex)| {
            let prompts: Vec<Vec<u32>> =
                ex.iter().map(|e| tk.encode(&e.prompt, false)).collect::<std::result::Result<_, _>>().map_err(dev)?;
            let (outs, w) = twin.generate(&prompts, mode, &opts).map_err(dev)?;
            let ok = ex.iter().zip(&outs).filter(|(e, o)| e.is_correct(&o.text)).count();
            let n = w.len().max(1) as f32;
            let mean: Vec<f32> =
                (0..twin.pack.meta.tasks.len()).map(|t| w.iter().map(|r| r[t]).sum::<f32>() / n).collect();
            Ok((100.0 * ok as f64 / ex.len().max(1) as f64, mean))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_engine::LoadedModel;
    use chorus_merge::Rank;
    use chorus_models::decoder::Output;
    use chorus_models::{ModelFiles, SafetensorsSet};

    fn family() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("family")
    }

    fn manifest() -> Manifest {
        serde_json::from_slice(&std::fs::read(family().join("family.json")).unwrap()).unwrap()
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("chorus-zoo-twin-{tag}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        d
    }

    fn logits(m: &LoadedModel, prompts: &[Vec<u32>], mix: Option<&[Vec<f32>]>) -> Vec<Vec<f32>> {
        let t = prompts[0].len();
        assert!(prompts.iter().all(|p| p.len() == t));
        let mut cache = m.decoder.new_cache(prompts.len());
        let valid = vec![vec![true; t]; prompts.len()];
        let x = m.decoder.forward_mixed(prompts, &valid, &mut cache, Output::All, mix).unwrap();
        chorus_models::decoder::to_rows(x).unwrap()
    }

    /// A plain model in the weight mode `TwinModel` runs in (burn's f32 forward, which the per-row deltas
    /// attach to), so that comparisons with the pack are of the same engine, not of the CPU engine's
    /// summation order against burn's.
    fn load(dir: &Path) -> LoadedModel {
        let device = chorus_engine::device(Backend::Cpu).unwrap();
        let mode = Some(chorus_models::WeightMode::F32);
        LoadedModel::load(ModelFiles::open(dir).unwrap(), Backend::Cpu, &device, mode, &mut |_, _| {}).unwrap()
    }

    /// θ* written out densely (the reference's per-sample merge), for comparison with the factored forward.
    fn materialise(twin: &TwinModel, w: &[f32], out: &Path) {
        let shared = SafetensorsSet::open_dir(&twin.pack.shared_dir()).unwrap();
        let tensors: Vec<(String, Vec<usize>)> =
            twin.pack.meta.tensors.iter().map(|t| (t.name.clone(), t.shape.clone())).collect();
        std::fs::create_dir_all(out).unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(twin.pack.shared_dir().join(f), out.join(f)).unwrap();
        }
        let plan = chorus_merge::writer::ShardPlan::new(&tensors, chorus_merge::Dtype::Float32, u64::MAX);
        let mut wr = chorus_merge::writer::ShardWriter::new(plan, out);
        for (name, _) in &tensors {
            let s = shared.get(name).unwrap().unwrap().0;
            wr.write(name, &twin.pack.merged(name, &s, w).unwrap()).unwrap();
        }
        wr.finish().unwrap();
    }

    /// Every file under `dir`, relative path → bytes.
    fn files_under(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().display().to_string();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    /// The pack the site ships (`family/twin`) is exactly what `ship_pack` builds from the shipped family:
    /// regenerate it with `chorus zoo twin-pack --out crates/zoo/family/twin` after retraining the family.
    #[test]
    fn shipped_twin_pack_is_reproducible() {
        let out = tmp("ship");
        ship_pack(&family(), &manifest(), &out).unwrap();
        let (want, got) = (files_under(Path::new(SHIPPED_DIR)), files_under(&out));
        assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "file lists differ");
        for (name, bytes) in &want {
            assert!(got[name] == *bytes, "{name} differs from a fresh build (regenerate with `chorus zoo twin-pack`)");
        }
        std::fs::remove_dir_all(&out).ok();
    }

    fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn per_row_mixing_equals_each_rows_materialised_model() {
        let (dir, man) = (family(), manifest());
        let root = tmp("rows");
        let opts = TwinOptions { rank: Rank::Density(0.25), ..TwinOptions::default() };
        build_pack(&dir, &man, &root.join("pack"), &opts).unwrap();
        let device = chorus_engine::device(Backend::Cpu).unwrap();
        let twin = TwinModel::load(&root.join("pack"), Backend::Cpu, &device).unwrap();
        let tk = &twin.model.files.tokenizer;
        let p = tk.encode("add 12 7 =", false).unwrap();
        let q = tk.encode("rev plant =", false).unwrap();
        let n = p.len().min(q.len());
        let prompts = vec![p[..n].to_vec(), q[..n].to_vec(), p[..n].to_vec()];
        let ws = vec![vec![1.0, 0.0, 0.0, 0.0], vec![0.1, 0.6, 0.2, 0.1], vec![0.25; 4]];
        let mixed = logits(&twin.model, &prompts, Some(&ws));
        for (r, w) in ws.iter().enumerate() {
            let out = root.join(format!("theta{r}"));
            materialise(&twin, w, &out);
            let dense = logits(&load(&out), &prompts[r..r + 1], None);
            let rows = &mixed[r * n..(r + 1) * n];
            let d = max_diff(rows, &dense);
            assert!(d < 2e-3, "row {r}: factored vs materialised θ* differ by {d}");
        }
        // Group-wise: one merged copy for a weight vector gives what per-row mixing gives every row.
        let merged = twin.model.decoder.merged(&ws[1]).unwrap();
        let mut cache = merged.new_cache(prompts.len());
        let valid = vec![vec![true; n]; prompts.len()];
        let x = merged.forward_mixed(&prompts, &valid, &mut cache, Output::All, None).unwrap();
        let grouped = chorus_models::decoder::to_rows(x).unwrap();
        let same = vec![ws[1].clone(); prompts.len()];
        let d = max_diff(&grouped, &logits(&twin.model, &prompts, Some(&same)));
        assert!(d < 2e-3, "merged copy vs per-row mixing: {d}");
        // No weights: the shared model exactly.
        let shared = logits(&load(&twin.pack.shared_dir()), &prompts, None);
        assert_eq!(logits(&twin.model, &prompts, None), shared);
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn one_hot_full_rank_runs_the_expert_and_router_weights_are_on_the_simplex() {
        let (dir, man) = (family(), manifest());
        let root = tmp("onehot");
        let opts = TwinOptions { rank: Rank::Density(1.0), ..TwinOptions::default() };
        build_pack(&dir, &man, &root.join("pack"), &opts).unwrap();
        let device = chorus_engine::device(Backend::Cpu).unwrap();
        let twin = TwinModel::load(&root.join("pack"), Backend::Cpu, &device).unwrap();
        let tk = &twin.model.files.tokenizer;
        let p = tk.encode("sort 5 3 9 1 =", false).unwrap();
        for (t, task) in man.spec.seen.iter().enumerate() {
            let mut w = vec![0.0; man.spec.seen.len()];
            w[t] = 1.0;
            let got = logits(&twin.model, std::slice::from_ref(&p), Some(&[w]));
            let want = logits(&load(&dir.join(member_name(false, task.name()))), std::slice::from_ref(&p), None);
            let d = max_diff(&got, &want);
            assert!(d < 2e-3, "{}: {d}", task.name());
        }
        // Router: trained on a few prompts, deterministic, weights on the simplex.
        let data = router_data(&man.spec.seen, man.spec.seed, 24);
        let tc = RouterTrainConfig { epochs: 5, batch: 32, ..RouterTrainConfig::default() };
        let a = train_pack_router(&root.join("pack"), &data, &tc).unwrap();
        let prompts: Vec<Vec<u32>> = data.iter().take(6).map(|(_, s)| tk.encode(s, false).unwrap()).collect();
        let wa = a.route(&prompts).unwrap();
        for w in &wa {
            assert!(w.iter().all(|&x| x >= 0.0) && (w.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{w:?}");
        }
        let b = TwinModel::load(&root.join("pack"), Backend::Cpu, &device).unwrap();
        assert_eq!(b.route(&prompts).unwrap(), wa, "a saved router routes as it did before saving");
        std::fs::remove_dir_all(&root).ok();
        let again = tmp("onehot2");
        build_pack(&dir, &man, &again.join("pack"), &opts).unwrap();
        let c = train_pack_router(&again.join("pack"), &data, &tc).unwrap();
        assert_eq!(c.route(&prompts).unwrap(), wa, "same seed, same router");
        std::fs::remove_dir_all(&again).ok();
    }
}
