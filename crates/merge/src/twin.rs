//! Twin-Merging, offline half (spec Part B): the shared expert θ_s = θ_0 + λ Σ_t (θ_t − θ_0) over the
//! tensors no exclusion pattern names, and each task's exclusive knowledge v_t = SVD_r(θ_t − θ_s) stored as
//! factors (U_r·S_r, V_r) in a *twin pack*, never as dense matrices. Inference mixes them per input
//! without materialising θ* (see `chorus_models::decoder`'s low-rank adapters).
//!
//! Pack layout (a folder, written under a temporary name and renamed on success):
//! - `shared/`: θ_s as an HF folder (the base's config and tokenizer, sharded safetensors);
//! - `twin/model.safetensors` (sharded like any output): per task `t` and tensor `p`, `t/p.us` `[m, r]` and
//!   `t/p.v` `[n, r]` for a matrix, `t/p.delta` for a vector or a dense (density ≥ 1) matrix;
//! - `twin.json`: [`PackMeta`] (tasks, λ, rank rule, exclusions, per-tensor kind and rank).

use std::path::{Path, PathBuf};
#[cfg(not(target_family = "wasm"))]
use std::time::Instant;

use chorus_models::Delta;
use serde::{Deserialize, Serialize};

use crate::config::Dtype;
use crate::error::{Error, Result};
#[cfg(not(target_family = "wasm"))]
use crate::input::Input;
#[cfg(not(target_family = "wasm"))]
use crate::run::{common_tensors, peak_rss_bytes};
#[cfg(not(target_family = "wasm"))]
use crate::writer::{ShardPlan, ShardWriter};

/// How many singular triplets a matrix keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    /// r = ⌊density · min(m, n)⌋, the reference's rule (density 0.1 for RoBERTa). Density ≥ 1 keeps the
    /// difference dense and exact; density ≤ 0 keeps nothing.
    Density(f64),
    /// A fixed r (capped at min(m, n)), the reference's rule for LoRA tensors (`new_rank = 8`).
    Fixed(usize),
}

impl Rank {
    /// Singular triplets kept for an `m × n` matrix; `None` means "store the difference densely".
    pub fn of(self, m: usize, n: usize) -> Option<usize> {
        let k = m.min(n);
        match self {
            Rank::Density(d) if d >= 1.0 => None,
            Rank::Density(d) if d <= 0.0 => Some(0),
            Rank::Density(d) => Some(((d * k as f64).floor() as usize).min(k)),
            Rank::Fixed(r) => Some(r.min(k)),
        }
    }
}

/// What the pack holds for one tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Kind {
    /// Named by an exclusion pattern: θ_s keeps the base's value and no task changes it.
    Excluded,
    /// A 2-D tensor stored as rank-`rank` factors per task (rank 0: the task's difference is dropped).
    LowRank {
        /// Singular triplets kept.
        rank: usize,
    },
    /// Stored densely per task (vectors, which the reference never compresses, and density ≥ 1).
    Dense,
}

/// One tensor of the pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackTensor {
    /// HF name.
    pub name: String,
    /// Shape (row-major, PyTorch's `[out, in]` for projections).
    pub shape: Vec<usize>,
    /// What is stored.
    #[serde(flatten)]
    pub kind: Kind,
}

/// `twin.json`: how a pack was built and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackMeta {
    /// `chorus-twin/1`.
    pub format: String,
    /// Task names, in router order.
    pub tasks: Vec<String>,
    /// Task-arithmetic scale of the shared expert.
    pub lambda: f64,
    /// Rank rule of the exclusive factors.
    pub rank: Rank,
    /// Exclusion patterns (regular expressions matched against whole tensor names).
    pub exclude: Vec<String>,
    /// Where the base came from (informational).
    pub base: String,
    /// Where each expert came from (informational), in task order.
    pub experts: Vec<String>,
    /// Every tensor of the model.
    pub tensors: Vec<PackTensor>,
}

/// The pack format this build writes and reads.
pub const FORMAT: &str = "chorus-twin/1";

/// Build options.
#[derive(Debug, Clone)]
pub struct TwinOptions {
    /// Task-arithmetic λ of the shared expert (the reference: 0.29 RoBERTa, 0.3 Qwen LoRA).
    pub lambda: f64,
    /// Rank rule.
    pub rank: Rank,
    /// Regular expressions; a tensor whose whole name matches one is excluded.
    pub exclude: Vec<String>,
    /// Element type of the shared model's weights.
    pub dtype: Dtype,
    /// Largest shard, bytes.
    pub shard_bytes: u64,
    /// Replace an existing, non-empty `out` (otherwise refused before any work).
    pub force: bool,
}

impl Default for TwinOptions {
    fn default() -> Self {
        Self {
            lambda: 0.3,
            rank: Rank::Density(0.1),
            exclude: Vec::new(),
            dtype: Dtype::Float32,
            shard_bytes: 5_000_000_000,
            force: false,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct TwinSummary {
    /// Pack folder.
    pub out: PathBuf,
    /// Tasks.
    pub tasks: usize,
    /// Tensors in the model.
    pub tensors: usize,
    /// Tensors excluded from merging.
    pub excluded: usize,
    /// Bytes of shared weights written.
    pub shared_bytes: u64,
    /// Bytes of exclusive factors written (all tasks).
    pub twin_bytes: u64,
    /// What the exclusive parts would take stored densely (all tasks, f32), bytes.
    pub dense_equivalent_bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Peak resident set (Linux), bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// Key of a factor in `twin/`.
pub fn factor_name(task: &str, tensor: &str, part: &str) -> String {
    format!("{task}/{tensor}.{part}")
}

/// θ_0 + λ Σ_t (θ_t − θ_0), accumulated in f64.
pub fn shared_tensor(base: &[f32], experts: &[&[f32]], lambda: f64) -> Vec<f32> {
    (0..base.len())
        .map(|i| {
            let b = base[i] as f64;
            (b + lambda * experts.iter().map(|e| e[i] as f64 - b).sum::<f64>()) as f32
        })
        .collect()
}

/// `(us, v, singular values)` of a truncated SVD.
pub type Factors = (Vec<f32>, Vec<f32>, Vec<f64>);

/// Rank-`r` factors of an `m × n` row-major matrix: `us` `[m, r]` = U_r·diag(S_r) and `v` `[n, r]` = V_r, so
/// the matrix ≈ us · vᵀ (Eckart–Young optimal in Frobenius norm). The SVD runs in f64 (faer), which avoids
/// the ill-conditioning failures the reference hit with CUDA's `gesvda` (its issue #8).
pub fn svd_factors(delta: &[f32], m: usize, n: usize, r: usize) -> std::result::Result<Factors, String> {
    let a = faer::Mat::<f64>::from_fn(m, n, |i, j| delta[i * n + j] as f64);
    let svd = a.thin_svd().map_err(|e| format!("SVD did not converge: {e:?}"))?;
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let k = m.min(n);
    let sing: Vec<f64> = (0..k).map(|i| s[i]).collect();
    let r = r.min(k);
    let mut us = vec![0f32; m * r];
    let mut vv = vec![0f32; n * r];
    for i in 0..m {
        for c in 0..r {
            us[i * r + c] = (u[(i, c)] * sing[c]) as f32;
        }
    }
    for j in 0..n {
        for c in 0..r {
            vv[j * r + c] = v[(j, c)] as f32;
        }
    }
    Ok((us, vv, sing))
}

/// `us · vᵀ` for factors of rank `r` (the dense reconstruction, used by tests and group-wise merges).
pub fn reconstruct(us: &[f32], v: &[f32], m: usize, n: usize, r: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for c in 0..r {
                acc += us[i * r + c] as f64 * v[j * r + c] as f64;
            }
            out[i * n + j] = acc as f32;
        }
    }
    out
}

#[cfg(not(target_family = "wasm"))]
fn compile(patterns: &[String]) -> Result<Vec<regex::Regex>> {
    patterns
        .iter()
        .map(|p| {
            regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| Error::Config {
                file: PathBuf::from("--exclude"),
                field: p.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

#[cfg(not(target_family = "wasm"))]
/// Builds a twin pack at `out` (which must not exist) from `base` and the named `experts` (HF folders or
/// GGUF files, all with the base's tensors and shapes). `progress(done, total, tensor)` after each tensor.
pub fn build(
    base: &Path,
    experts: &[(String, PathBuf)],
    out: &Path,
    opts: &TwinOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<TwinSummary> {
    let t0 = Instant::now();
    let bad =
        |field: &str, reason: String| Error::Config { file: PathBuf::from("twin build"), field: field.into(), reason };
    if experts.is_empty() {
        return Err(bad("--expert", "at least one expert is needed".into()));
    }
    let inputs: Vec<&Path> = std::iter::once(base).chain(experts.iter().map(|(_, p)| p.as_path())).collect();
    chorus_core::output::check(out, &inputs, opts.force)?;
    for (i, (name, _)) in experts.iter().enumerate() {
        if name.is_empty() || name.contains('/') || experts[..i].iter().any(|(n, _)| n == name) {
            return Err(bad("--expert", format!("task name {name:?} is empty, has a '/', or is repeated")));
        }
    }
    if !opts.lambda.is_finite() {
        return Err(bad("--lambda", format!("{} is not a finite number", opts.lambda)));
    }
    if let Rank::Density(d) = opts.rank
        && !d.is_finite()
    {
        return Err(bad("--density", format!("{d} is not a finite number")));
    }
    let exclude = compile(&opts.exclude)?;
    let base_in = Input::open(base)?;
    let models: Vec<Input> = experts.iter().map(|(_, p)| Input::open(p)).collect::<Result<_>>()?;
    let refs: Vec<&Input> = models.iter().collect();
    let tensors = common_tensors(&base_in, &refs)?;
    let companions = base_in.companion_files()?;

    let mut entries = Vec::with_capacity(tensors.len());
    let mut factors: Vec<(String, Vec<usize>)> = Vec::new();
    let mut dense_equivalent = 0u64;
    for (name, shape) in &tensors {
        let kind = if exclude.iter().any(|re| re.is_match(name)) {
            Kind::Excluded
        } else if let [m, n] = shape[..] {
            match opts.rank.of(m, n) {
                Some(rank) => Kind::LowRank { rank },
                None => Kind::Dense,
            }
        } else {
            Kind::Dense
        };
        if kind != Kind::Excluded {
            dense_equivalent += (experts.len() * shape.iter().product::<usize>() * 4) as u64;
        }
        for (task, _) in experts {
            match &kind {
                Kind::Excluded | Kind::LowRank { rank: 0 } => {}
                Kind::LowRank { rank } => {
                    factors.push((factor_name(task, name, "us"), vec![shape[0], *rank]));
                    factors.push((factor_name(task, name, "v"), vec![shape[1], *rank]));
                }
                Kind::Dense => factors.push((factor_name(task, name, "delta"), shape.clone())),
            }
        }
        entries.push(PackTensor { name: name.clone(), shape: shape.clone(), kind });
    }
    let meta = PackMeta {
        format: FORMAT.into(),
        tasks: experts.iter().map(|(n, _)| n.clone()).collect(),
        lambda: opts.lambda,
        rank: opts.rank,
        exclude: opts.exclude.clone(),
        base: base.display().to_string(),
        experts: experts.iter().map(|(_, p)| p.display().to_string()).collect(),
        tensors: entries,
    };

    let mut summary = chorus_core::output::write_dir(out, opts.force, |tmp| {
        let shared_dir = tmp.join("shared");
        let twin_dir = tmp.join("twin");
        for d in [&shared_dir, &twin_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::Io { path: d.clone(), reason: e.to_string() })?;
        }
        for (name, bytes) in &companions {
            let p = shared_dir.join(name);
            std::fs::write(&p, bytes).map_err(|e| Error::Io { path: p.clone(), reason: e.to_string() })?;
        }
        let mut shared_w = ShardWriter::new(ShardPlan::new(&tensors, opts.dtype, opts.shard_bytes), &shared_dir);
        // A pack with every tensor excluded (or rank 0) has no factors; the twin folder then stays empty.
        let mut twin_w = (!factors.is_empty())
            .then(|| ShardWriter::new(ShardPlan::new(&factors, Dtype::Float32, opts.shard_bytes), &twin_dir));
        for (k, entry) in meta.tensors.iter().enumerate() {
            let (name, shape) = (&entry.name, &entry.shape);
            let b = base_in.read(name, shape)?;
            // An excluded tensor is the base's and has no exclusive part: the experts' values are not needed.
            let xs: Vec<Vec<f32>> = if entry.kind == Kind::Excluded {
                Vec::new()
            } else {
                models.iter().map(|m| m.read(name, shape)).collect::<Result<_>>()?
            };
            let shared = if entry.kind == Kind::Excluded {
                b
            } else {
                let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
                let mut s = shared_tensor(&b, &refs, opts.lambda);
                // The differences are taken to θ_s as stored, so θ_s + v_t is θ_t up to the factors' error.
                s.iter_mut().for_each(|x| *x = opts.dtype.round(*x));
                s
            };
            shared_w.write(name, &shared)?;
            let stored = matches!(entry.kind, Kind::Dense | Kind::LowRank { rank: 1.. });
            for ((task, _), x) in experts.iter().zip(&xs).filter(|_| stored) {
                let delta: Vec<f32> = x.iter().zip(&shared).map(|(a, s)| a - s).collect();
                match (&entry.kind, twin_w.as_mut()) {
                    (Kind::LowRank { rank }, Some(w)) if *rank > 0 => {
                        let (us, v, _) = svd_factors(&delta, shape[0], shape[1], *rank).map_err(|reason| {
                            Error::Input { model: experts_path(experts, task), tensor: name.clone(), reason }
                        })?;
                        w.write(&factor_name(task, name, "us"), &us)?;
                        w.write(&factor_name(task, name, "v"), &v)?;
                    }
                    (Kind::Dense, Some(w)) => w.write(&factor_name(task, name, "delta"), &delta)?,
                    _ => {}
                }
            }
            for m in std::iter::once(&base_in).chain(&models) {
                m.release(name);
            }
            progress(k + 1, meta.tensors.len(), name);
        }
        let shared_bytes = shared_w.finish()?;
        let twin_bytes = match twin_w {
            Some(w) => w.finish()?,
            None => 0,
        };
        let p = tmp.join("twin.json");
        let text =
            serde_json::to_vec_pretty(&meta).map_err(|e| Error::Io { path: p.clone(), reason: e.to_string() })?;
        std::fs::write(&p, text).map_err(|e| Error::Io { path: p.clone(), reason: e.to_string() })?;
        Ok::<_, Error>(TwinSummary {
            out: out.to_path_buf(),
            tasks: experts.len(),
            tensors: meta.tensors.len(),
            excluded: meta.tensors.iter().filter(|t| t.kind == Kind::Excluded).count(),
            shared_bytes,
            twin_bytes,
            dense_equivalent_bytes: dense_equivalent,
            seconds: 0.0,
            peak_rss_bytes: None,
        })
    })?;
    summary.seconds = t0.elapsed().as_secs_f64();
    summary.peak_rss_bytes = peak_rss_bytes();
    Ok(summary)
}

#[cfg(not(target_family = "wasm"))]
fn experts_path(experts: &[(String, PathBuf)], task: &str) -> String {
    experts.iter().find(|(n, _)| n == task).map_or_else(|| task.to_string(), |(_, p)| p.display().to_string())
}

/// An opened twin pack.
pub struct TwinPack {
    /// The pack folder.
    pub dir: PathBuf,
    /// Its `twin.json`.
    pub meta: PackMeta,
    factors: Option<chorus_models::SafetensorsSet>,
}

impl TwinPack {
    /// Opens a pack folder, checking its format and that every factor its metadata promises is present
    /// with the right shape.
    #[cfg(not(target_family = "wasm"))]
    pub fn open(dir: &Path) -> Result<Self> {
        let p = dir.join("twin.json");
        let text = std::fs::read(&p).map_err(|e| Error::Io { path: p.clone(), reason: e.to_string() })?;
        let twin_dir = dir.join("twin");
        let has_files = std::fs::read_dir(&twin_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
        let factors = if has_files {
            Some(chorus_models::SafetensorsSet::open_dir(&twin_dir).map_err(|e| Error::Input {
                model: twin_dir.display().to_string(),
                tensor: "*".into(),
                reason: e.to_string(),
            })?)
        } else {
            None
        };
        Self::from_parts(dir, &text, factors)
    }

    /// A pack from the bytes of its `twin.json` and its factor shards (already indexed), with the checks
    /// of [`Self::open`]; `dir` only names the pack in errors (the browser has no folder).
    pub fn from_parts(dir: &Path, twin_json: &[u8], factors: Option<chorus_models::SafetensorsSet>) -> Result<Self> {
        let p = dir.join("twin.json");
        let twin_dir = dir.join("twin");
        let meta: PackMeta = serde_json::from_slice(twin_json).map_err(|e| Error::Config {
            file: p.clone(),
            field: "twin.json".into(),
            reason: e.to_string(),
        })?;
        if meta.format != FORMAT {
            return Err(Error::Config {
                file: p,
                field: "format".into(),
                reason: format!("{:?}, expected {FORMAT:?}", meta.format),
            });
        }
        let pack = Self { dir: dir.to_path_buf(), meta, factors };
        // Every promised factor is present with its shape (from the safetensors headers: nothing decoded).
        for t in &pack.meta.tensors {
            let want: Vec<(&str, Vec<usize>)> = match t.kind {
                Kind::Excluded | Kind::LowRank { rank: 0 } => Vec::new(),
                Kind::LowRank { rank } => match t.shape[..] {
                    [m, n] => vec![("us", vec![m, rank]), ("v", vec![n, rank])],
                    _ => {
                        return Err(Error::Config {
                            file: p,
                            field: format!("tensors.{}", t.name),
                            reason: format!("low-rank factors need a matrix, the shape is {:?}", t.shape),
                        });
                    }
                },
                Kind::Dense => vec![("delta", t.shape.clone())],
            };
            for task in &pack.meta.tasks {
                for (part, shape) in &want {
                    let key = factor_name(task, &t.name, part);
                    let found = pack.factors.as_ref().and_then(|f| f.index.get(&key)).map(|e| &e.shape);
                    if found != Some(shape) {
                        return Err(Error::Input {
                            model: twin_dir.display().to_string(),
                            tensor: key,
                            reason: match found {
                                Some(f) => format!("shape {f:?}, twin.json says {shape:?}"),
                                None => "missing".into(),
                            },
                        });
                    }
                }
            }
        }
        Ok(pack)
    }

    /// The shared model's HF folder.
    pub fn shared_dir(&self) -> PathBuf {
        self.dir.join("shared")
    }

    /// The pack's entry for tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&PackTensor> {
        self.meta.tensors.iter().find(|t| t.name == name)
    }

    fn read(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let missing = |reason: String| Error::Input {
            model: self.dir.join("twin").display().to_string(),
            tensor: key.to_string(),
            reason,
        };
        let set = self.factors.as_ref().ok_or_else(|| missing("the pack has no factor files".into()))?;
        let (v, got) = set.get(key).map_err(|e| missing(e.to_string()))?.ok_or_else(|| missing("missing".into()))?;
        if got != shape {
            return Err(missing(format!("shape {got:?}, twin.json says {shape:?}")));
        }
        Ok(v)
    }

    /// Task `task`'s exclusive part of tensor `name`.
    pub fn exclusive(&self, task: &str, name: &str) -> Result<Delta> {
        let t = self.tensor(name).ok_or_else(|| Error::Input {
            model: self.dir.display().to_string(),
            tensor: name.into(),
            reason: "not in twin.json".into(),
        })?;
        Ok(match t.kind {
            Kind::Excluded | Kind::LowRank { rank: 0 } => Delta::None,
            Kind::LowRank { rank } => Delta::LowRank {
                us: self.read(&factor_name(task, name, "us"), &[t.shape[0], rank])?,
                v: self.read(&factor_name(task, name, "v"), &[t.shape[1], rank])?,
                rank,
            },
            Kind::Dense => Delta::Dense(self.read(&factor_name(task, name, "delta"), &t.shape)?),
        })
    }

    /// θ*[name] = θ_s + Σ_t w_t v_t, materialised (group-wise merges and tests; per-input inference never
    /// forms it). `shared` is θ_s[name] as stored.
    pub fn merged(&self, name: &str, shared: &[f32], w: &[f32]) -> Result<Vec<f32>> {
        let t = self.tensor(name).ok_or_else(|| Error::Input {
            model: self.dir.display().to_string(),
            tensor: name.into(),
            reason: "not in twin.json".into(),
        })?;
        let mut out: Vec<f64> = shared.iter().map(|&x| x as f64).collect();
        for (task, &wt) in self.meta.tasks.iter().zip(w) {
            let add =
                |out: &mut Vec<f64>, d: &[f32]| out.iter_mut().zip(d).for_each(|(o, &x)| *o += wt as f64 * x as f64);
            match self.exclusive(task, name)? {
                Delta::None => {}
                Delta::Dense(d) => add(&mut out, &d),
                Delta::LowRank { us, v, rank } => add(&mut out, &reconstruct(&us, &v, t.shape[0], t.shape[1], rank)),
            }
        }
        Ok(out.into_iter().map(|x| x as f32).collect())
    }
}
