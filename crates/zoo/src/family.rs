//! The zoo family: its members (small and large bases, a small expert and a large fine-tune per task,
//! one multi-task large fine-tune on the seen tasks), their sizes and schedules, and the run that trains
//! and exports them all into one folder, written under a temporary name and renamed into place.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use chorus_models::TextTokenizer;
use serde::{Deserialize, Serialize};

use crate::corpus::{Mix, finetune_examples, pretrain_lines};
use crate::data::{self, Sequence};
use crate::error::{Error, Result};
use crate::model::{StoreDtype, ZooConfig, ZooModel};
use crate::tasks::Task;
use crate::train::{TrainConfig, train};

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilySpec {
    /// Master seed (corpus, initialisation, batch order).
    pub seed: u64,
    /// Tokenizer vocabulary.
    pub vocab_size: usize,
    /// Small model sizes (vocabulary filled in from the tokenizer).
    pub small: ZooConfig,
    /// Large model sizes.
    pub large: ZooConfig,
    /// Tasks with a small expert and a large fine-tune each.
    pub tasks: Vec<Task>,
    /// Tasks the multi-task fine-tune sees (the others are held out).
    pub seen: Vec<Task>,
    /// Pretraining corpus lines and mixture.
    pub corpus_lines: usize,
    /// Mixture of the pretraining corpus.
    pub mix: Mix,
    /// Fine-tuning examples per task.
    pub finetune_examples: usize,
    /// Share of a small expert's fine-tuning data that is replayed pretraining text of the *other* tasks
    /// and the background language (0 = task examples only). Replay keeps an expert close to its base
    /// off its task, so in multi-task DLF an off-task expert's logits barely move from the base's and
    /// carry no false signal. Large fine-tunes (upper bounds) train on their task alone.
    #[serde(default)]
    pub replay: f64,
    /// Pretraining schedules (small, large).
    pub pretrain: [TrainConfig; 2],
    /// Fine-tuning schedules (small expert, large fine-tune, multi-task).
    pub finetune: [TrainConfig; 3],
    /// Stored element type.
    pub dtype: StoreDtype,
}

impl Default for FamilySpec {
    /// The shipped family: a 2-layer, 64-wide small model (≈ 0.13 M parameters) and a 4-layer, 128-wide
    /// large one (≈ 0.9 M, 7×), five tasks (date held out from the multi-task fine-tune), f16 weights.
    fn default() -> Self {
        let cfg = |h: usize, layers: usize| ZooConfig {
            vocab_size: 0,
            hidden_size: h,
            intermediate_size: 3 * h,
            num_layers: layers,
            num_heads: 4,
            max_positions: 64,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
        };
        let tc = |steps: usize, lr: f64, seed: u64| TrainConfig {
            steps,
            batch: 32,
            seq_len: 40,
            lr,
            warmup: (steps / 20).max(1),
            weight_decay: 0.01,
            seed,
        };
        Self {
            seed: 1,
            vocab_size: 320,
            small: cfg(64, 2),
            large: cfg(128, 4),
            tasks: Task::ALL.to_vec(),
            seen: vec![Task::Add, Task::Reverse, Task::Sort, Task::Recall],
            corpus_lines: 40_000,
            mix: Mix::default(),
            finetune_examples: 4000,
            replay: 0.25,
            pretrain: [tc(1500, 3e-3, 11), tc(2500, 2e-3, 12)],
            finetune: [tc(800, 2e-3, 21), tc(600, 2e-3, 22), tc(1000, 2e-3, 23)],
            dtype: StoreDtype::F16,
        }
    }
}

/// One trained member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Folder name inside the family folder (`small-base`, `large-add`, `large-multi`, …).
    pub name: String,
    /// Parameters.
    pub parameters: usize,
    /// Bytes of `model.safetensors`.
    pub bytes: u64,
    /// Last training loss (mean of the final 10 steps).
    pub final_loss: f32,
    /// Wall-clock seconds spent training it.
    pub seconds: f64,
}

/// `family.json`: the spec and what came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// What was asked for.
    pub spec: FamilySpec,
    /// End-of-answer token.
    pub eos: u32,
    /// Members in training order.
    pub members: Vec<Member>,
}

/// Folder of a member: `{size}-{role}` with role `base`, a task name or `multi`.
pub fn member_name(large: bool, role: &str) -> String {
    format!("{}-{role}", if large { "large" } else { "small" })
}

/// Trains every member and exports it under `out` (an existing non-empty `out` is refused unless
/// `force`); `log` receives progress lines. On error nothing is left at `out`, and what was there is kept.
pub fn train_family(spec: &FamilySpec, out: &Path, force: bool, log: &mut dyn FnMut(&str)) -> Result<Manifest> {
    chorus_core::output::check(out, &[], force)?;
    chorus_core::output::write_dir(out, force, |tmp| build(spec, tmp, log))
}

fn build(spec: &FamilySpec, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<Manifest> {
    let io = |path: &Path, e: std::io::Error| Error::Io { path: path.to_path_buf(), reason: e.to_string() };
    let t0 = Instant::now();
    let lines = pretrain_lines(spec.seed, spec.corpus_lines, spec.mix);
    let per_task: Vec<(Task, Vec<crate::tasks::Example>)> =
        spec.tasks.iter().map(|&t| (t, finetune_examples(spec.seed, &[t], spec.finetune_examples))).collect();
    let mut texts = lines.clone();
    texts.extend(per_task.iter().flat_map(|(_, ex)| ex.iter().map(|e| e.text())));
    let z = crate::tokenizer::train(&texts, spec.vocab_size)?;
    log(&format!("tokenizer: {} tokens ({:.0}s)", z.vocab_size, t0.elapsed().as_secs_f64()));
    let tk = TextTokenizer::from_hf_parts("tokenizer.json", &z.json, None, None, None)
        .map_err(|e| Error::Config { field: "tokenizer".into(), reason: e.to_string() })?;
    let pre: Vec<Sequence> = lines.iter().map(|l| data::line(&tk, l)).collect::<Result<_>>()?;
    let ft: Vec<(Task, Vec<Sequence>)> = per_task
        .iter()
        .map(|(t, ex)| Ok((*t, ex.iter().map(|e| data::example(&tk, e)).collect::<Result<Vec<_>>>()?)))
        .collect::<Result<_>>()?;
    let device = Device::flex().autodiff();
    device.seed(spec.seed);
    if !(0.0..1.0).contains(&spec.replay) {
        return Err(Error::Config { field: "replay".into(), reason: format!("{} is not in [0, 1)", spec.replay) });
    }
    let mut members = Vec::new();
    let mut run = |name: String,
                   cfg: &ZooConfig,
                   start: ZooModel,
                   data: &[Sequence],
                   tc: &TrainConfig,
                   log: &mut dyn FnMut(&str)|
     -> Result<ZooModel> {
        let ts = Instant::now();
        let mut losses = Vec::with_capacity(tc.steps);
        let every = (tc.steps / 5).max(1);
        let m = train(start, data, tc, z.eos, &device, &mut |s, l| {
            losses.push(l);
            if (s + 1) % every == 0 {
                log(&format!("{name}: step {}/{} loss {l:.3}", s + 1, tc.steps));
            }
        })?;
        let path = dir.join(&name);
        m.export_as(cfg, &z.json, 0, z.eos, &path, spec.dtype)?;
        let bytes = std::fs::metadata(path.join("model.safetensors")).map_err(|e| io(&path, e))?.len();
        let tail = &losses[losses.len().saturating_sub(10)..];
        members.push(Member {
            name,
            parameters: cfg.parameters(),
            bytes,
            final_loss: tail.iter().sum::<f32>() / tail.len().max(1) as f32,
            seconds: ts.elapsed().as_secs_f64(),
        });
        Ok(m)
    };
    let sized = |c: &ZooConfig| ZooConfig { vocab_size: z.vocab_size, ..*c };
    let (small, large) = (sized(&spec.small), sized(&spec.large));
    let small_base =
        run(member_name(false, "base"), &small, ZooModel::new(&small, &device)?, &pre, &spec.pretrain[0], log)?;
    let large_base =
        run(member_name(true, "base"), &large, ZooModel::new(&large, &device)?, &pre, &spec.pretrain[1], log)?;
    for (t, data) in &ft {
        let expert_data = with_replay(data, &lines, &pre, *t, spec.replay);
        run(member_name(false, t.name()), &small, small_base.clone(), &expert_data, &spec.finetune[0], log)?;
        run(member_name(true, t.name()), &large, large_base.clone(), data, &spec.finetune[1], log)?;
    }
    // Multi-task: the seen tasks' examples interleaved.
    let mut multi: Vec<Sequence> = Vec::new();
    let seen: Vec<&Vec<Sequence>> = ft.iter().filter(|(t, _)| spec.seen.contains(t)).map(|(_, d)| d).collect();
    for i in 0..seen.iter().map(|d| d.len()).max().unwrap_or(0) {
        multi.extend(seen.iter().filter_map(|d| d.get(i).cloned()));
    }
    if !multi.is_empty() {
        run(member_name(true, "multi"), &large, large_base, &multi, &spec.finetune[2], log)?;
    }
    let manifest = Manifest { spec: spec.clone(), eos: z.eos, members };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Io { path: dir.join("family.json"), reason: e.to_string() })?;
    std::fs::write(dir.join("family.json"), json).map_err(|e| io(dir, e))?;
    log(&format!("family trained in {:.0}s", t0.elapsed().as_secs_f64()));
    Ok(manifest)
}

/// `data` plus pretraining sequences that are not examples of `task`, so that they make up `replay` of
/// the result (rounded; the corpus is cycled if it runs short).
fn with_replay(data: &[Sequence], lines: &[String], pre: &[Sequence], task: Task, replay: f64) -> Vec<Sequence> {
    let n = (data.len() as f64 * replay / (1.0 - replay)).round() as usize;
    let prefix = format!("{} ", task.keyword());
    let other: Vec<&Sequence> =
        lines.iter().zip(pre).filter(|(l, _)| !l.starts_with(&prefix)).map(|(_, s)| s).collect();
    let mut out = data.to_vec();
    if !other.is_empty() {
        out.extend(other.iter().cycle().take(n).map(|&s| s.clone()));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A micro family spec (two tasks, a few steps each): trains in well under a second.
    pub(crate) fn micro_spec() -> FamilySpec {
        let cfg = |h: usize| ZooConfig {
            vocab_size: 0,
            hidden_size: h,
            intermediate_size: 2 * h,
            num_layers: 1,
            num_heads: 2,
            max_positions: 48,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
        };
        let tc = TrainConfig { steps: 3, batch: 4, seq_len: 24, lr: 1e-3, warmup: 1, weight_decay: 0.0, seed: 1 };
        FamilySpec {
            seed: 4,
            vocab_size: 300,
            small: cfg(8),
            large: cfg(16),
            tasks: vec![Task::Add, Task::Date],
            seen: vec![Task::Add],
            corpus_lines: 300,
            mix: Mix::default(),
            finetune_examples: 50,
            replay: 0.25,
            pretrain: [tc; 2],
            finetune: [tc; 3],
            dtype: StoreDtype::F16,
        }
    }

    /// Replay adds the requested share of pretraining lines and none of the expert's own task.
    #[test]
    fn replay_mixes_in_other_lines_only() {
        let lines: Vec<String> = ["add 1 2 = 3 ; the fox.\n", "the red fox sees the old tree.\n", "rev abc = cba\n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let seq = |k: u32| Sequence { ids: vec![k], weights: vec![1.0] };
        let pre: Vec<Sequence> = (0..3).map(seq).collect();
        let data: Vec<Sequence> = (10..16).map(seq).collect();
        let out = with_replay(&data, &lines, &pre, Task::Add, 0.25);
        assert_eq!(out.len(), 8);
        assert_eq!(out[6..].iter().map(|s| s.ids[0]).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(with_replay(&data, &lines, &pre, Task::Add, 0.0).len(), 6);
    }

    /// Every member is a loadable HF folder, the manifest lists them, and an existing destination is
    /// refused without touching it.
    #[test]
    fn micro_family_trains_exports_and_refuses_to_overwrite() {
        let spec = micro_spec();
        let out = std::env::temp_dir().join(format!("chorus-zoo-family-{}", std::process::id()));
        std::fs::remove_dir_all(&out).ok();
        let mut lines = Vec::new();
        let m = train_family(&spec, &out, false, &mut |l| lines.push(l.to_string())).unwrap();
        let names: Vec<&str> = m.members.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            ["small-base", "large-base", "small-add", "large-add", "small-date", "large-date", "large-multi"]
        );
        for x in &m.members {
            let files = chorus_models::ModelFiles::open(&out.join(&x.name)).unwrap();
            assert_eq!(files.config.num_layers, 1);
            assert!(x.bytes > 0 && x.final_loss.is_finite());
        }
        assert!(out.join("family.json").exists() && !lines.is_empty());
        let err = train_family(&spec, &out, false, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(out.join("family.json").exists());
        std::fs::remove_dir_all(&out).ok();
    }
}
