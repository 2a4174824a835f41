//! Twin-Merging at inference (spec §B.5–B.6): the router MLP (trained with burn autodiff on task-labelled
//! prompts, features = mean last hidden state of the shared model) and a [`TwinModel`] that runs the
//! shared model with every task's exclusive factors attached, mixing them per input row with the
//! router's softmax weights — θ* is never materialised.
//!
//! Choices where the reference is silent or flawed (also in ARCHITECTURE.md): the best epoch is picked on
//! a held-out slice of the *training* prompts (`val_fraction`), never on test data as the reference does;
//! the router and its config live in the pack as `router.safetensors` + `router.json`.

#[cfg(not(target_family = "wasm"))]
use std::path::Path;

use burn::module::{Module, Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
#[cfg(not(target_family = "wasm"))]
use burn::optim::{AdamConfig, GradientsParams};
#[cfg(not(target_family = "wasm"))]
use burn::tensor::Int;
use burn::tensor::{Device, Tensor, TensorData, activation};
use chorus_core::GenerateOptions;
#[cfg(not(target_family = "wasm"))]
use chorus_core::sampling::Rng;
use chorus_merge::TwinPack;
use chorus_models::ModelFiles;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::generate::{GenerateOutput, LoadedModel};

/// Router hyper-parameters (the reference: hidden = 2 × input, dropout 0.5, LeakyReLU 0.01).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Feature width (the shared model's hidden size).
    pub input: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Tasks.
    pub tasks: usize,
    /// Dropout probability while training.
    pub dropout: f64,
}

/// Router training schedule (the reference: Adam lr 5e-4, batch 1024, 50 epochs, best epoch by accuracy).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RouterTrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// Examples per batch.
    pub batch: usize,
    /// Share of each task's examples held out to choose the best epoch.
    pub val_fraction: f64,
    /// Seed of the initialisation, split and order.
    pub seed: u64,
}

impl Default for RouterTrainConfig {
    fn default() -> Self {
        Self { epochs: 50, lr: 5e-4, batch: 1024, val_fraction: 0.1, seed: 0 }
    }
}

/// Linear → BatchNorm → LeakyReLU → Dropout, twice, then Linear to one logit per task (§B.5).
#[derive(Module, Debug)]
pub struct Router {
    l1: Linear,
    bn1: BatchNorm,
    l2: Linear,
    bn2: BatchNorm,
    l3: Linear,
    drop: Dropout,
}

impl Router {
    /// A freshly initialised router.
    pub fn new(cfg: &RouterConfig, device: &Device) -> Self {
        Self {
            l1: LinearConfig::new(cfg.input, cfg.hidden).init(device),
            bn1: BatchNormConfig::new(cfg.hidden).init(device),
            l2: LinearConfig::new(cfg.hidden, cfg.hidden).init(device),
            bn2: BatchNormConfig::new(cfg.hidden).init(device),
            l3: LinearConfig::new(cfg.hidden, cfg.tasks).init(device),
            drop: DropoutConfig::new(cfg.dropout).init(),
        }
    }

    /// Logits `[N, T]` for features `[N, input]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.drop.forward(activation::leaky_relu(self.bn1.forward(self.l1.forward(x)), 0.01));
        let x = self.drop.forward(activation::leaky_relu(self.bn2.forward(self.l2.forward(x)), 0.01));
        self.l3.forward(x)
    }

    /// Softmax (temperature 1) of the logits of each feature row, in eval mode: on the simplex.
    #[cfg(not(target_family = "wasm"))]
    pub fn weights(&self, features: &[Vec<f32>], device: &Device) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.weights_async(features, device))
    }

    /// [`Self::weights`] without blocking (the browser).
    pub async fn weights_async(&self, features: &[Vec<f32>], device: &Device) -> Result<Vec<Vec<f32>>> {
        let x = matrix(features, device)?;
        let p = activation::softmax(self.forward(x), 1);
        crate::generate::read_rows(p).await
    }

    #[cfg(not(target_family = "wasm"))]
    fn tensors(&self) -> Vec<(String, Tensor<2>)> {
        let lin = |n: &str, l: &Linear| {
            let mut v = vec![(format!("{n}.weight"), l.weight.val())];
            if let Some(b) = &l.bias {
                v.push((format!("{n}.bias"), b.val().unsqueeze_dim(0)));
            }
            v
        };
        let bn = |n: &str, b: &BatchNorm| {
            vec![
                (format!("{n}.gamma"), b.gamma.val().unsqueeze_dim(0)),
                (format!("{n}.beta"), b.beta.val().unsqueeze_dim(0)),
                (format!("{n}.running_mean"), b.running_mean.value().unsqueeze_dim(0)),
                (format!("{n}.running_var"), b.running_var.value().unsqueeze_dim(0)),
            ]
        };
        [lin("l1", &self.l1), bn("bn1", &self.bn1), lin("l2", &self.l2), bn("bn2", &self.bn2), lin("l3", &self.l3)]
            .concat()
    }

    /// Writes `router.safetensors` and `router.json` into `dir` (each through a temporary file); a router
    /// already there is replaced only with `force`.
    #[cfg(not(target_family = "wasm"))]
    pub fn save(&self, cfg: &RouterConfig, report: &RouterReport, dir: &Path, force: bool) -> Result<()> {
        use chorus_core::output::{OutputError, write_file};
        let (st, js) = (dir.join("router.safetensors"), dir.join("router.json"));
        if !force && let Some(p) = [&st, &js].into_iter().find(|p| p.exists()) {
            return Err(OutputError::Exists { path: p.clone() }.into());
        }
        let mut owned = Vec::new();
        for (name, t) in self.tensors() {
            let shape = t.dims().to_vec();
            let v = t.into_data().try_to_vec::<f32>().map_err(|e| io_err(dir, format!("{e:?}")))?;
            owned.push((name, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()));
        }
        let views = owned
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| io_err(dir, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, None).map_err(|e| io_err(dir, e.to_string()))?;
        let meta = serde_json::json!({ "config": cfg, "training": report });
        write_file(&st, &bytes, true)?;
        Ok(write_file(&js, &serde_json::to_vec_pretty(&meta).unwrap_or_default(), true)?)
    }

    /// Reads a router saved by [`Router::save`]; names the file and tensor at fault.
    #[cfg(not(target_family = "wasm"))]
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, RouterConfig)> {
        let jp = dir.join("router.json");
        let text = std::fs::read(&jp).map_err(|e| io_err(&jp, e.to_string()))?;
        let sp = dir.join("router.safetensors");
        let bytes = std::fs::read(&sp).map_err(|e| io_err(&sp, e.to_string()))?;
        Self::from_bytes(&text, &bytes, device, (&jp.display().to_string(), &sp.display().to_string()))
    }

    /// A router from the bytes of its `router.json` and `router.safetensors`; `names` = (json, weights)
    /// name the files in errors.
    pub fn from_bytes(
        json: &[u8],
        weights: &[u8],
        device: &Device,
        names: (&str, &str),
    ) -> Result<(Self, RouterConfig)> {
        let (jp, sp) = names;
        let bad = |file: &str, reason: String| Error::Request(format!("{file}: {reason}"));
        let j: serde_json::Value = serde_json::from_slice(json).map_err(|e| bad(jp, e.to_string()))?;
        let cfg: RouterConfig =
            serde_json::from_value(j["config"].clone()).map_err(|e| bad(jp, format!("config: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(weights).map_err(|e| bad(sp, e.to_string()))?;
        let mut r = Router::new(&cfg, device);
        let get = |name: &str, shape: &[usize]| -> Result<Tensor<2>> {
            let v = st.tensor(name).map_err(|e| bad(sp, format!("{name}: {e}")))?;
            let want: Vec<usize> = if shape.len() == 1 { vec![1, shape[0]] } else { shape.to_vec() };
            if v.shape() != want.as_slice() || v.dtype() != safetensors::Dtype::F32 {
                return Err(bad(sp, format!("{name}: {:?} {:?}, expected F32 {want:?}", v.dtype(), v.shape())));
            }
            let vals: Vec<f32> =
                v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok(Tensor::from_data(TensorData::new(vals, [want[0], want[1]]), device))
        };
        let (i, h, t) = (cfg.input, cfg.hidden, cfg.tasks);
        let set_lin = |l: &mut Linear, n: &str, inp: usize, out: usize| -> Result<()> {
            l.weight = Param::from_tensor(get(&format!("{n}.weight"), &[inp, out])?);
            l.bias = Some(Param::from_tensor(get(&format!("{n}.bias"), &[out])?.squeeze_dim(0)));
            Ok(())
        };
        set_lin(&mut r.l1, "l1", i, h)?;
        set_lin(&mut r.l2, "l2", h, h)?;
        set_lin(&mut r.l3, "l3", h, t)?;
        for (b, n) in [(&mut r.bn1, "bn1"), (&mut r.bn2, "bn2")] {
            b.gamma = Param::from_tensor(get(&format!("{n}.gamma"), &[h])?.squeeze_dim(0));
            b.beta = Param::from_tensor(get(&format!("{n}.beta"), &[h])?.squeeze_dim(0));
            b.running_mean = RunningState::new(get(&format!("{n}.running_mean"), &[h])?.squeeze_dim(0));
            b.running_var = RunningState::new(get(&format!("{n}.running_var"), &[h])?.squeeze_dim(0));
        }
        Ok((r, cfg))
    }
}

/// How router training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterReport {
    /// Training examples (after the held-out slice).
    pub train_examples: usize,
    /// Held-out examples.
    pub val_examples: usize,
    /// Epoch (1-based) whose weights were kept.
    pub best_epoch: usize,
    /// Held-out accuracy of the kept weights (0–1); `None` when no example could be held out (one per
    /// task): the training accuracy is no estimate of it.
    pub val_accuracy: Option<f64>,
    /// Held-out mean cross-entropy of the kept weights (nats); `None` without a held-out slice.
    pub val_loss: Option<f64>,
    /// Training accuracy of the kept weights (0–1).
    pub train_accuracy: f64,
}

fn matrix(rows: &[Vec<f32>], device: &Device) -> Result<Tensor<2>> {
    let w = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || w == 0 || rows.iter().any(|r| r.len() != w || r.iter().any(|x| !x.is_finite())) {
        return Err(Error::Request(format!("router features must be non-empty rows of {w} finite numbers")));
    }
    Ok(Tensor::from_data(TensorData::new(rows.concat(), [rows.len(), w]), device))
}

#[cfg(not(target_family = "wasm"))]
/// Accuracy (0–1) and mean cross-entropy of the router on labelled features.
fn evaluate(r: &Router, x: &[Vec<f32>], y: &[usize], device: &Device) -> Result<(f64, f64)> {
    if x.is_empty() {
        return Ok((0.0, f64::INFINITY));
    }
    let w = r.weights(x, device)?;
    let ok = w.iter().zip(y).filter(|(p, t)| chorus_core::sampling::argmax(p) == **t).count();
    let ce = w.iter().zip(y).map(|(p, &t)| -(p[t].max(1e-30) as f64).ln()).sum::<f64>() / x.len() as f64;
    Ok((ok as f64 / x.len() as f64, ce))
}

#[cfg(not(target_family = "wasm"))]
/// Trains a router on `features` labelled with task indices `labels` (< `tasks`). Deterministic for a seed.
/// `report(epoch, loss, val_accuracy)` after each epoch.
pub fn train_router(
    features: &[Vec<f32>],
    labels: &[usize],
    tasks: usize,
    tc: &RouterTrainConfig,
    report: &mut dyn FnMut(usize, f32, f64),
) -> Result<(Router, RouterConfig, RouterReport)> {
    if features.len() != labels.len() || features.is_empty() {
        return Err(Error::Request(format!("{} feature rows for {} labels", features.len(), labels.len())));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= tasks) {
        return Err(Error::Request(format!("label {bad} is not one of the {tasks} tasks")));
    }
    if tc.epochs == 0 || tc.batch == 0 || !(0.0..1.0).contains(&tc.val_fraction) || !(tc.lr.is_finite() && tc.lr > 0.0)
    {
        return Err(Error::Request(format!("router training: bad schedule {tc:?}")));
    }
    let input = features[0].len();
    let cfg = RouterConfig { input, hidden: 2 * input, tasks, dropout: 0.5 };
    // A stratified held-out slice: the first ⌈val_fraction · n_t⌉ of each task after a seeded shuffle.
    let mut rng = Rng::new(tc.seed);
    let mut order: Vec<usize> = (0..features.len()).collect();
    shuffle(&mut order, &mut rng);
    let (mut tr, mut va) = (Vec::new(), Vec::new());
    for t in 0..tasks {
        let of_t: Vec<usize> = order.iter().copied().filter(|&i| labels[i] == t).collect();
        let nv = ((of_t.len() as f64) * tc.val_fraction).ceil() as usize;
        let nv = if of_t.len() > 1 { nv.min(of_t.len() - 1) } else { 0 };
        va.extend_from_slice(&of_t[..nv]);
        tr.extend_from_slice(&of_t[nv..]);
    }
    let pick = |idx: &[usize]| -> (Vec<Vec<f32>>, Vec<usize>) {
        (idx.iter().map(|&i| features[i].clone()).collect(), idx.iter().map(|&i| labels[i]).collect())
    };
    let (xv, yv) = pick(&va);
    let (xt, yt) = pick(&tr);
    let device = Device::flex().autodiff();
    device.seed(tc.seed);
    let eval_dev = Device::flex();
    let mut model = Router::new(&cfg, &device);
    let mut opt = AdamConfig::new().init();
    // Best epoch: highest held-out accuracy, ties broken by lower held-out cross-entropy (accuracy alone
    // saturates early on separable tasks and would keep an undertrained, nearly uniform router).
    let mut best: Option<((f64, f64), usize, Router)> = None;
    for epoch in 1..=tc.epochs {
        shuffle(&mut tr, &mut rng);
        let mut last = 0.0;
        for chunk in tr.chunks(tc.batch) {
            // BatchNorm needs two rows to estimate a variance; a lone trailing row is skipped.
            if chunk.len() < 2 {
                continue;
            }
            let (xb, yb) = pick(chunk);
            let x = matrix(&xb, &device)?;
            let y = Tensor::<1, Int>::from_data(
                TensorData::new(yb.iter().map(|&v| v as i64).collect::<Vec<_>>(), [yb.len()]),
                &device,
            );
            let logp = activation::log_softmax(model.forward(x), 1);
            let loss = logp.gather(1, y.unsqueeze_dim(1)).mean().neg();
            last = loss.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = opt.step(tc.lr, model, grads);
        }
        let eval = model.valid();
        // Without a held-out slice (one example per task) there is nothing to choose an epoch on: the last
        // one is kept and no held-out figure is reported.
        let score = if xv.is_empty() { (f64::NAN, f64::NAN) } else { evaluate(&eval, &xv, &yv, &eval_dev)? };
        report(epoch, last, score.0);
        if xv.is_empty() || best.as_ref().is_none_or(|(s, _, _)| score.0 > s.0 || (score.0 == s.0 && score.1 < s.1)) {
            best = Some((score, epoch, eval));
        }
    }
    let ((acc, loss), best_epoch, router) = best.ok_or_else(|| Error::Request("no epoch ran".into()))?;
    let (val_accuracy, val_loss) = if xv.is_empty() { (None, None) } else { (Some(acc), Some(loss)) };
    let (train_accuracy, _) = evaluate(&router, &xt, &yt, &eval_dev)?;
    let rep = RouterReport {
        train_examples: xt.len(),
        val_examples: xv.len(),
        best_epoch,
        val_accuracy,
        val_loss,
        train_accuracy,
    };
    Ok((router, cfg, rep))
}

#[cfg(not(target_family = "wasm"))]
fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// How router weights are applied to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixMode {
    /// Each row its own weights (the reference's per-sample merge, batched).
    Row,
    /// One weight vector per batch: the mean of its rows' router weights, folded into one merged copy of
    /// the weights for the batch (the paper's group-wise variant: θ* is materialised once per batch).
    Group,
}

/// A twin pack loaded for inference: the shared model with every task's factors attached, and its router.
pub struct TwinModel {
    /// The pack.
    pub pack: TwinPack,
    /// The shared model (deltas attached).
    pub model: LoadedModel,
    /// The router, once trained.
    pub router: Option<Router>,
}

#[cfg(not(target_family = "wasm"))]
fn io_err(path: &Path, reason: String) -> Error {
    Error::Request(format!("{}: {reason}", path.display()))
}

impl TwinModel {
    /// Opens a pack and loads its shared model on `backend` with all tasks' factors attached (and the
    /// router, if the pack has one).
    #[cfg(not(target_family = "wasm"))]
    pub fn load(dir: &Path, backend: Backend, device: &Device) -> Result<Self> {
        let pack = TwinPack::open(dir)?;
        let files = ModelFiles::open(&pack.shared_dir())?;
        let router = if dir.join("router.json").is_file() { Some(Router::load(dir, &Device::flex())?) } else { None };
        let mut twin = Self::from_parts(pack, files, router, backend, device)?;
        pollster::block_on(twin.use_gpu_kernel())?;
        Ok(twin)
    }

    /// On wgpu, runs the mixed projections as the WGSL kernel on burn's buffers (`twin_gpu`) instead of
    /// burn matmuls; does nothing on the CPU. [`Self::load`] calls it; the browser awaits it after
    /// [`Self::from_parts`].
    pub async fn use_gpu_kernel(&mut self) -> Result<()> {
        if self.model.backend == Backend::Wgpu {
            let k = crate::twin_gpu::WgpuLowRank::new(crate::backend::gpu_context_async().await?);
            self.model.decoder.set_lowrank_kernel(Some(std::sync::Arc::new(k)));
        }
        Ok(())
    }

    /// A twin model from an opened pack, its shared model's files and (optionally) its router: what
    /// [`Self::load`] does after reading the folder, and what the browser does with fetched bytes.
    pub fn from_parts(
        pack: TwinPack,
        files: ModelFiles,
        router: Option<(Router, RouterConfig)>,
        backend: Backend,
        device: &Device,
    ) -> Result<Self> {
        let mut model =
            LoadedModel::load(files, backend, device, Some(chorus_models::WeightMode::F32), &mut |_, _| {})?;
        let tasks = pack.meta.tasks.clone();
        model.decoder.attach_deltas(tasks.len(), &mut |t, name| {
            pack.exclusive(&tasks[t], name).map_err(|e| chorus_models::Error::Device(e.to_string()))
        })?;
        let router = match router {
            Some((r, cfg)) => {
                if cfg.tasks != pack.meta.tasks.len() || cfg.input != model.decoder.config.hidden_size {
                    return Err(Error::Request(format!(
                        "{}: router for {} tasks of width {}, the pack has {} tasks of width {}",
                        pack.dir.join("router.json").display(),
                        cfg.tasks,
                        cfg.input,
                        pack.meta.tasks.len(),
                        model.decoder.config.hidden_size
                    )));
                }
                Some(r)
            }
            None => None,
        };
        Ok(Self { pack, model, router })
    }

    /// Router features (mean last hidden state of the shared model) of each prompt.
    #[cfg(not(target_family = "wasm"))]
    pub fn features(&self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.model.mean_hidden(prompts)
    }

    /// Router weights of each prompt (on the simplex).
    #[cfg(not(target_family = "wasm"))]
    pub fn route(&self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.route_async(prompts))
    }

    /// [`Self::route`] without blocking (the browser).
    pub async fn route_async(&self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let r = self.router.as_ref().ok_or_else(|| {
            Error::Request(format!("{} has no router yet (run `chorus twin train-router`)", self.pack.dir.display()))
        })?;
        let features = self.model.mean_hidden_async(prompts).await?;
        r.weights_async(&features, &Device::flex()).await
    }

    /// Generates with router weights applied per row (or per batch), returning the outputs and the weights
    /// each row ran with.
    #[cfg(not(target_family = "wasm"))]
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        mode: MixMode,
        opts: &GenerateOptions,
    ) -> Result<(Vec<GenerateOutput>, Vec<Vec<f32>>)> {
        pollster::block_on(self.generate_async(prompts, mode, opts, &mut |_, _, _| {}))
    }

    /// [`Self::generate`] without blocking, with `on_token(row, id, text)` for every token.
    pub async fn generate_async(
        &self,
        prompts: &[Vec<u32>],
        mode: MixMode,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(usize, u32, &str),
    ) -> Result<(Vec<GenerateOutput>, Vec<Vec<f32>>)> {
        let mut w = self.route_async(prompts).await?;
        if mode == MixMode::Group {
            let n = w.len() as f32;
            let mean: Vec<f32> =
                (0..self.pack.meta.tasks.len()).map(|t| w.iter().map(|r| r[t]).sum::<f32>() / n).collect();
            w.iter_mut().for_each(|r| r.clone_from(&mean));
            // One merged model for the batch: every step then costs what the shared model's does.
            let merged = self.model.decoder.merged(&mean)?;
            let out = self.model.generate_on_async(&merged, prompts, None, opts, on_token).await?;
            return Ok((out, w));
        }
        let out = self.model.generate_mixed_async(prompts, Some(&w), opts, on_token).await?;
        Ok((out, w))
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;

    fn features(per_task: usize) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = Rng::new(5);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for t in 0..2 {
            for _ in 0..per_task {
                x.push((0..4).map(|j| if j == t { 2.0 } else { 0.0 } + rng.next_f64() as f32 * 0.1).collect());
                y.push(t);
            }
        }
        (x, y)
    }

    /// With a held-out slice the report carries its accuracy; with one example per task nothing can be
    /// held out and the report says so (`None`) instead of passing the training accuracy off as held-out.
    #[test]
    fn held_out_figures_are_reported_only_when_examples_were_held_out() {
        let tc = RouterTrainConfig { epochs: 3, batch: 8, ..RouterTrainConfig::default() };
        let (x, y) = features(10);
        let (_, _, rep) = train_router(&x, &y, 2, &tc, &mut |_, _, _| {}).unwrap();
        assert_eq!((rep.val_examples, rep.train_examples), (2, 18));
        assert!(rep.val_accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)) && rep.val_loss.is_some(), "{rep:?}");
        let (x, y) = features(1);
        let (_, _, rep) = train_router(&x, &y, 2, &tc, &mut |_, _, _| {}).unwrap();
        assert_eq!((rep.val_examples, rep.val_accuracy, rep.val_loss, rep.best_epoch), (0, None, None, 3), "{rep:?}");
    }
}
