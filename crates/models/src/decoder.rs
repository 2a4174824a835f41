//! The decoder-only transformer (Qwen2 and Llama families) in burn, with a KV cache and batched,
//! left-padded inputs.
//!
//! Conventions: projection weights are held transposed (`[in, out]`) so every projection is one
//! `x · W` matmul on a `[B·T, in]` matrix; q/k/v and gate/up are fused into one matmul each. RoPE is the
//! HF half-split form (loaders convert GGUF Llama rows). Attention groups query heads by their KV head
//! (`[B, kv, rep·T, d]`) so GQA never copies the cache. Masked scores use a large finite negative
//! rather than −∞ so a fully masked (padding) query row stays finite instead of turning into NaN.

use burn::tensor::{Device, Tensor, TensorData, activation};
use chorus_core::ModelConfig;

use crate::cpu::{CpuCache, CpuModel, CpuOutput};
use crate::error::{Error, Result};
use crate::gpu::{GpuModel, GpuModelCache};
use crate::lowrank::{Delta, DeltaSource, EmbedDeltas, LowRankAdd, LowRankKernel, vector_deltas};
use crate::source::ModelFiles;

/// Additive score for masked (future or padding) keys.
const MASKED: f32 = -1.0e30;

/// Largest weight block, in elements, held in one device buffer (64 MiB of f32). WebGPU guarantees only
/// 128 MiB per storage binding and lavapipe refuses a 545 MB buffer (Qwen's 151,936 × 896 LM head), so
/// wider matrices are split along their output columns.
pub const MAX_BLOCK_ELEMS: usize = 1 << 24;

/// The form a model's weights take, what `--weights` parses into (`auto`: the backend's default, the
/// engine's `default_weight_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightMode {
    /// Dequantized f32 tensors on the burn device: any backend, any source format, and the only form that
    /// takes Twin-Merging's task deltas (the wgpu default).
    F32,
    /// The CPU engine ([`crate::cpu`]): the file's blocks (or F16/BF16/F32 rows) used in place from the
    /// memory map, activations quantized once per matmul as llama.cpp does (Q8_0 / Q8_K), and a decode
    /// loop of its own instead of burn's ops (the CPU default, native and in the browser).
    Native,
}

impl WeightMode {
    /// The name `--weights` takes.
    pub fn name(self) -> &'static str {
        match self {
            WeightMode::F32 => "f32",
            WeightMode::Native => "native",
        }
    }
}

impl std::fmt::Display for WeightMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WeightMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(WeightMode::F32),
            "native" => Ok(WeightMode::Native),
            "quantized" | "q" | "q16" | "q8" => Err(format!(
                "weights {s:?} (the old integer-coded burn path) is gone: `native` runs the file's blocks in place"
            )),
            other => Err(format!("weights {other:?}: expected native or f32")),
        }
    }
}

/// `y = x · W (+ b)` with `W` held as column blocks of `[in, out_i]` on the device.
#[derive(Clone)]
struct Linear {
    w: Vec<Tensor<2>>,
    b: Option<Tensor<1>>,
    /// Task deltas mixed per row (Twin-Merging); `None` for a plain model.
    lr: Option<LowRankAdd>,
}

impl Linear {
    /// From row-major `[out, in]` weights (PyTorch layout).
    fn new(rows: &[f32], out: usize, inp: usize, b: Option<Tensor<1>>, dev: &Device) -> Self {
        let per = (MAX_BLOCK_ELEMS / inp.max(1)).clamp(1, out.max(1));
        let w = (0..out)
            .step_by(per)
            .map(|r0| {
                let n = per.min(out - r0);
                tensor2(transpose(&rows[r0 * inp..(r0 + n) * inp], n, inp), [inp, n], dev)
            })
            .collect();
        Self { w, b, lr: None }
    }

    /// This projection with the attached deltas folded in for one weight vector `w` (`[T]`); unchanged
    /// when it has none.
    fn merged(&self, w: &Tensor<1>) -> Self {
        let Some(lr) = &self.lr else { return self.clone() };
        let d = lr.dense(w);
        let mut c0 = 0;
        let blocks = self
            .w
            .iter()
            .map(|blk| {
                let n = blk.dims()[1];
                let merged = blk.clone() + d.clone().narrow(1, c0, n);
                c0 += n;
                merged
            })
            .collect();
        Self { w: blocks, b: self.b.clone(), lr: None }
    }

    fn forward(&self, x: Tensor<2>, mix: Option<&Mix>) -> Result<Tensor<2>> {
        let add = match (&self.lr, mix) {
            (Some(lr), Some(m)) if m.kernel.is_none() => Some(lr.forward(x.clone(), &m.w)),
            _ => None,
        };
        let xk = match (&self.lr, mix) {
            (Some(_), Some(Mix { kernel: Some(_), .. })) => Some(x.clone()),
            _ => None,
        };
        let y = if self.w.len() == 1 {
            x.matmul(self.w[0].clone())
        } else {
            Tensor::cat(self.w.iter().map(|w| x.clone().matmul(w.clone())).collect(), 1)
        };
        let y = match (add, xk, &self.lr, mix) {
            (Some(a), _, _, _) => y + a,
            (None, Some(x), Some(lr), Some(Mix { w, kernel: Some(k) })) => k.apply(x, w, y, &lr.consts)?,
            _ => y,
        };
        Ok(match &self.b {
            Some(b) => y + b.clone().unsqueeze_dim(0),
            None => y,
        })
    }
}

#[derive(Clone)]
struct Layer {
    attn_norm: Tensor<1>,
    qkv: Linear,
    o: Linear,
    mlp_norm: Tensor<1>,
    gate_up: Linear,
    down: Linear,
    /// Per-task changes of the two norm weights (`[T, H]`), when mixed.
    attn_norm_d: Option<Tensor<2>>,
    mlp_norm_d: Option<Tensor<2>>,
}

/// Per-row task weights of one forward pass and the device kernel that mixes with them (if any).
struct Mix<'a> {
    w: Tensor<2>,
    kernel: Option<&'a dyn LowRankKernel>,
}

/// What a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Logits of each row's last position, `[B, vocab]`.
    Last,
    /// Logits of every position, `[B·T, vocab]`.
    All,
    /// The final-normed hidden state of every position, `[B·T, hidden]` (router features).
    Hidden,
}

/// A loaded decoder on one burn device.
pub struct Decoder {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Token embeddings stay on the host: a lookup uploads B·T rows instead of keeping a
    /// vocab × hidden table (545 MB for Qwen) in device memory.
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Tensor<1>,
    lm_head: Linear,
    /// RoPE inverse frequencies; cos/sin are computed per call for the positions in use, so nothing is
    /// sized by the model's (file-given) maximum context.
    inv_freq: Vec<f32>,
    device: Device,
    /// Tasks whose deltas are attached (0: a plain model).
    tasks: usize,
    /// Device kernel for the mixed projections (wgpu), instead of burn's matmuls.
    kernel: Option<std::sync::Arc<dyn LowRankKernel>>,
    norm_d: Option<Tensor<2>>,
    embed_d: Option<EmbedDeltas>,
    /// The CPU engine's model when loaded with [`WeightMode::Native`]; the burn fields are then empty.
    cpu: Option<CpuModel>,
    /// The device decoder when loaded by [`Decoder::load_gpu`]; the burn fields are then empty.
    gpu: Option<GpuModel>,
}

/// Keys and values of every layer for the rows of one batch, plus which key positions are real tokens.
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Per row, per cached position: true for a real token, false for left padding.
    valid: Vec<Vec<bool>>,
    /// The CPU engine's cache, for a [`WeightMode::Native`] decoder.
    cpu: Option<CpuCache>,
    /// The device decoder's cache, for a [`Decoder::load_gpu`] decoder.
    gpu: Option<GpuModelCache>,
}

impl KvCache {
    /// Cached positions (the same for every row, padding included).
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows in the batch.
    pub fn batch(&self) -> usize {
        self.valid.len()
    }
}

fn tensor2(v: Vec<f32>, shape: [usize; 2], dev: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, shape), dev)
}

fn tensor1(v: Vec<f32>, dev: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), dev)
}

/// Transposes a row-major `rows × cols` matrix.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    out[c * rows + r] = v[r * cols + c];
                }
            }
        }
    }
    out
}

impl Decoder {
    /// Decodes every weight of `files` and uploads it to `device`. `progress(done, total)` is called
    /// after each tensor.
    pub fn load(
        files: &ModelFiles,
        device: &Device,
        mode: WeightMode,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let c = files.config.clone();
        if mode == WeightMode::Native {
            let cpu = CpuModel::load(files, progress)?;
            return Ok(Self::engine_only(c, device, Some(cpu), None));
        }
        let (h, q, kv, f) = (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        let total = files.expected_tensors().len();
        let mut done = 0usize;
        let mut tick = |n: usize| {
            done += n;
            progress(done, total);
        };

        // [out_i, in] blocks stacked along `out` into one projection.
        let mut fused = |names: &[(String, usize)], inp: usize, bias: Option<Tensor<1>>| -> Result<Linear> {
            let n_out: usize = names.iter().map(|(_, o)| o).sum();
            let mut rows = Vec::new();
            for (name, out) in names {
                rows.extend(files.require(name, &[*out, inp])?);
            }
            tick(names.len());
            Ok(Linear::new(&rows, n_out, inp, bias, device))
        };

        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let qkv_b = if c.attention_bias {
                let mut b = files.require(&format!("{p}.self_attn.q_proj.bias"), &[q])?;
                b.extend(files.require(&format!("{p}.self_attn.k_proj.bias"), &[kv])?);
                b.extend(files.require(&format!("{p}.self_attn.v_proj.bias"), &[kv])?);
                Some(tensor1(b, device))
            } else {
                None
            };
            let qkv = fused(
                &[
                    (format!("{p}.self_attn.q_proj.weight"), q),
                    (format!("{p}.self_attn.k_proj.weight"), kv),
                    (format!("{p}.self_attn.v_proj.weight"), kv),
                ],
                h,
                qkv_b,
            )?;
            let o = fused(&[(format!("{p}.self_attn.o_proj.weight"), h)], q, None)?;
            let gate_up =
                fused(&[(format!("{p}.mlp.gate_proj.weight"), f), (format!("{p}.mlp.up_proj.weight"), f)], h, None)?;
            let down = fused(&[(format!("{p}.mlp.down_proj.weight"), h)], f, None)?;
            let attn_norm = tensor1(files.require(&format!("{p}.input_layernorm.weight"), &[h])?, device);
            let mlp_norm = tensor1(files.require(&format!("{p}.post_attention_layernorm.weight"), &[h])?, device);
            layers.push(Layer { attn_norm, qkv, o, mlp_norm, gate_up, down, attn_norm_d: None, mlp_norm_d: None });
        }
        let embed = files.require("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let head_name = if c.tie_word_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
        let lm_head = fused(&[(head_name.to_string(), c.vocab_size)], h, None)?;
        let norm = tensor1(files.require("model.norm.weight", &[h])?, device);
        let inv_freq = rope_inv_freq(&c);
        Ok(Self {
            config: c,
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
            device: device.clone(),
            tasks: 0,
            kernel: None,
            norm_d: None,
            embed_d: None,
            cpu: None,
            gpu: None,
        })
    }

    /// The CPU engine's model, when loaded with [`WeightMode::Native`].
    pub fn cpu(&self) -> Option<&CpuModel> {
        self.cpu.as_ref()
    }

    /// Uploads `files`' matrices to a GPU in their stored form ([`WeightMode::Native`] on wgpu): the device
    /// decoder of [`crate::gpu`], on `ctx` (the context sharing `device`, burn's wgpu device, whose tensors
    /// the logits are returned as).
    pub fn load_gpu(
        files: &ModelFiles,
        ctx: &chorus_gpu::GpuContext,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let gpu = GpuModel::load(files, ctx, progress)?;
        Ok(Self::engine_only(files.config.clone(), device, None, Some(gpu)))
    }

    /// A decoder run by one of the engines (CPU or device), its burn fields empty.
    fn engine_only(config: ModelConfig, device: &Device, cpu: Option<CpuModel>, gpu: Option<GpuModel>) -> Self {
        Self {
            config,
            embed: Vec::new(),
            layers: Vec::new(),
            norm: tensor1(Vec::new(), device),
            lm_head: Linear { w: Vec::new(), b: None, lr: None },
            inv_freq: Vec::new(),
            device: device.clone(),
            tasks: 0,
            kernel: None,
            norm_d: None,
            embed_d: None,
            cpu,
            gpu,
        }
    }

    /// The device decoder, when loaded by [`Decoder::load_gpu`].
    pub fn gpu(&self) -> Option<&GpuModel> {
        self.gpu.as_ref()
    }

    /// Attaches `tasks` tasks' deltas of every weight (`get(task, HF name)`), to be mixed per input row by
    /// [`Decoder::forward_mixed`]; the shared weights stay as loaded. Replaces earlier attachments.
    pub fn attach_deltas(&mut self, tasks: usize, get: &mut DeltaSource) -> Result<()> {
        if self.cpu.is_some() || self.gpu.is_some() {
            return Err(Error::Device(
                "task deltas are mixed by the burn decoder; load the shared model with --weights f32".into(),
            ));
        }
        let c = self.config.clone();
        let (h, q, kv, f) = (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        let dev = self.device.clone();
        let mut part = |name: String, out: usize, inp: usize| -> Result<(usize, Vec<Delta>)> {
            let ds = (0..tasks).map(|t| get(t, &name)).collect::<Result<Vec<_>>>()?;
            for (t, d) in ds.iter().enumerate() {
                let found = match d {
                    Delta::None => continue,
                    Delta::Dense(v) if v.len() == out * inp => continue,
                    Delta::LowRank { us, v, rank } if us.len() == out * rank && v.len() == inp * rank => continue,
                    Delta::Dense(v) => vec![v.len()],
                    Delta::LowRank { us, v, rank } => vec![us.len() / rank.max(&1), v.len() / rank.max(&1), *rank],
                };
                let file = format!("task {t}'s delta");
                return Err(Error::Shape { file, tensor: name.clone(), expected: vec![out, inp], found });
            }
            Ok((out, ds))
        };
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            let qkv = [
                part(format!("{p}.self_attn.q_proj.weight"), q, h)?,
                part(format!("{p}.self_attn.k_proj.weight"), kv, h)?,
                part(format!("{p}.self_attn.v_proj.weight"), kv, h)?,
            ];
            layer.qkv.lr = LowRankAdd::new(&qkv, h, &dev);
            layer.o.lr = LowRankAdd::new(&[part(format!("{p}.self_attn.o_proj.weight"), h, q)?], q, &dev);
            let gu = [part(format!("{p}.mlp.gate_proj.weight"), f, h)?, part(format!("{p}.mlp.up_proj.weight"), f, h)?];
            layer.gate_up.lr = LowRankAdd::new(&gu, h, &dev);
            layer.down.lr = LowRankAdd::new(&[part(format!("{p}.mlp.down_proj.weight"), h, f)?], f, &dev);
            layer.attn_norm_d = vector_deltas(&part(format!("{p}.input_layernorm.weight"), h, 1)?.1, h, &dev);
            layer.mlp_norm_d = vector_deltas(&part(format!("{p}.post_attention_layernorm.weight"), h, 1)?.1, h, &dev);
        }
        self.norm_d = vector_deltas(&part("model.norm.weight".into(), h, 1)?.1, h, &dev);
        let (_, embed) = part("model.embed_tokens.weight".into(), c.vocab_size, h)?;
        if c.tie_word_embeddings {
            self.lm_head.lr = LowRankAdd::new(&[(c.vocab_size, embed.clone())], h, &dev);
        } else {
            self.lm_head.lr = LowRankAdd::new(&[part("lm_head.weight".into(), c.vocab_size, h)?], h, &dev);
        }
        self.embed_d =
            (!embed.iter().all(|d| matches!(d, Delta::None))).then_some(EmbedDeltas { deltas: embed, hidden: h });
        self.tasks = tasks;
        Ok(())
    }

    /// A copy of this model with θ* = θ_s + Σ_t w_t v_t materialised for one weight vector `w` (the
    /// group-wise variant: one merged model serves a whole batch, so every later forward costs what the
    /// shared model's does). Projection weights are new device tensors; the CPU engine's in-place weights are
    /// refused.
    pub fn merged(&self, w: &[f32]) -> Result<Self> {
        if w.len() != self.tasks || w.iter().any(|x| !x.is_finite()) {
            return Err(Error::Device(format!("merged: {} weights for {} attached tasks", w.len(), self.tasks)));
        }
        if self.cpu.is_some() || self.gpu.is_some() {
            return Err(Error::Device(
                "merged: the CPU engine's in-place weights cannot absorb dense deltas; load with --weights f32".into(),
            ));
        }
        let dev = &self.device;
        let wt = tensor1(w.to_vec(), dev);
        let norm = |base: &Tensor<1>, d: &Option<Tensor<2>>| match d {
            Some(d) => base.clone() + wt.clone().unsqueeze_dim::<2>(0).matmul(d.clone()).reshape([base.dims()[0]]),
            None => base.clone(),
        };
        let layers = self
            .layers
            .iter()
            .map(|l| Layer {
                attn_norm: norm(&l.attn_norm, &l.attn_norm_d),
                qkv: l.qkv.merged(&wt),
                o: l.o.merged(&wt),
                mlp_norm: norm(&l.mlp_norm, &l.mlp_norm_d),
                gate_up: l.gate_up.merged(&wt),
                down: l.down.merged(&wt),
                attn_norm_d: None,
                mlp_norm_d: None,
            })
            .collect();
        let mut embed = self.embed.clone();
        if let Some(ed) = &self.embed_d {
            let h = self.config.hidden_size;
            for (id, row) in embed.chunks_exact_mut(h).enumerate() {
                ed.add(id, w, row);
            }
        }
        Ok(Self {
            config: self.config.clone(),
            embed,
            layers,
            norm: norm(&self.norm, &self.norm_d),
            lm_head: self.lm_head.merged(&wt),
            inv_freq: self.inv_freq.clone(),
            device: self.device.clone(),
            tasks: 0,
            kernel: None,
            norm_d: None,
            embed_d: None,
            cpu: None,
            gpu: None,
        })
    }

    /// Runs the mixed projections through `kernel` (the WGSL kernel on wgpu) instead of burn's matmuls.
    pub fn set_lowrank_kernel(&mut self, kernel: Option<std::sync::Arc<dyn LowRankKernel>>) {
        self.kernel = kernel;
    }

    /// Tasks whose deltas are attached.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// How many projections (each layer's q/k/v, output, gate/up and down, and the LM head) read the
    /// file's blocks in place, of how many: `(all, all)` for the CPU engine, `(0, all)` for f32 tensors.
    /// Lets tests and reports check which form a load really took.
    pub fn quantized_projections(&self) -> (usize, usize) {
        if let Some(cpu) = &self.cpu {
            return (cpu.projections(), cpu.projections());
        }
        if self.gpu.is_some() {
            let all = 4 * self.config.num_layers + 1;
            return (all, all);
        }
        (0, 4 * self.layers.len() + 1)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache {
            layers: (0..self.config.num_layers).map(|_| None).collect(),
            valid: vec![Vec::new(); batch],
            cpu: self.cpu.as_ref().map(|m| m.new_cache(batch)),
            gpu: self.gpu.as_ref().map(|m| m.new_cache(batch)),
        }
    }

    /// Runs `tokens` (`[B][T]`, same T for every row; `valid[b][t]` false marks left padding) through
    /// the model after whatever `cache` holds, appends to the cache, and returns the logits of the last
    /// position of each row (`[B, vocab]`), or of every position (`[B·T, vocab]`) when `all` is set.
    pub fn forward(
        &self,
        tokens: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut KvCache,
        all: bool,
    ) -> Result<Tensor<2>> {
        self.forward_mixed(tokens, valid, cache, if all { Output::All } else { Output::Last }, None)
    }

    /// [`Decoder::forward_mixed`] for callers that can await (the generation loops): the device decoder
    /// awaits its read-back (the only way in the browser); the other forms are synchronous anyway.
    pub async fn forward_mixed_async(
        &self,
        tokens: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut KvCache,
        output: Output,
        mix: Option<&[Vec<f32>]>,
    ) -> Result<Tensor<2>> {
        match &self.gpu {
            Some(gpu) => self.forward_gpu(gpu, tokens, valid, cache, output).await,
            None => self.forward_mixed(tokens, valid, cache, output, mix),
        }
    }

    /// The greedy next token of each row chosen on the device (`Some` only for the device decoder: the other
    /// forms return logits and the caller samples); appends to the cache like a forward. `None` inside
    /// marks a row whose last position is padding.
    pub async fn greedy_next_async(
        &self,
        tokens: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut KvCache,
    ) -> Result<Option<Vec<Option<u32>>>> {
        let Some(gpu) = &self.gpu else { return Ok(None) };
        let gc = cache
            .gpu
            .as_mut()
            .ok_or_else(|| Error::Device("greedy: another decoder's cache given to the device decoder".into()))?;
        let ids = gpu.greedy(tokens, valid, gc).await?;
        for (cv, v) in cache.valid.iter_mut().zip(valid) {
            cv.extend_from_slice(v);
        }
        Ok(Some(ids))
    }

    async fn forward_gpu(
        &self,
        gpu: &GpuModel,
        tokens: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut KvCache,
        output: Output,
    ) -> Result<Tensor<2>> {
        let c = &self.config;
        let (b, t) = (tokens.len(), tokens.first().map_or(0, Vec::len));
        let gc = cache
            .gpu
            .as_mut()
            .ok_or_else(|| Error::Device("forward: another decoder's cache given to the device decoder".into()))?;
        let out = match output {
            Output::Last => CpuOutput::Last,
            Output::All => CpuOutput::All,
            Output::Hidden => CpuOutput::Hidden,
        };
        let v = gpu.forward(tokens, valid, gc, out).await?;
        for (cv, v) in cache.valid.iter_mut().zip(valid) {
            cv.extend_from_slice(v);
        }
        let rows = if output == Output::Last { b } else { b * t };
        Ok(tensor2(v, [rows, if output == Output::Hidden { c.hidden_size } else { c.vocab_size }], &self.device))
    }

    /// [`Decoder::forward`] with each row's task weights `mix[b]` (one per attached task) applied to the
    /// attached deltas: θ*(row) = θ_s + Σ_t w_t v_t without forming θ*. `None` (or no attached deltas) runs
    /// the shared model alone.
    pub fn forward_mixed(
        &self,
        tokens: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut KvCache,
        output: Output,
        mix: Option<&[Vec<f32>]>,
    ) -> Result<Tensor<2>> {
        let all = output != Output::Last;
        let c = &self.config;
        let b = tokens.len();
        let t = tokens.first().map_or(0, Vec::len);
        if b == 0 || t == 0 || b != cache.batch() || valid.len() != b {
            return Err(Error::Device(format!(
                "forward: batch {b} x {t} does not match a cache of {} rows",
                cache.batch()
            )));
        }
        if let Some(gpu) = &self.gpu {
            // The device decoder's read-back must be awaited in the browser: use the async forward there.
            #[cfg(target_family = "wasm")]
            {
                let _ = gpu;
                return Err(Error::Device("the device decoder runs through forward_mixed_async in the browser".into()));
            }
            #[cfg(not(target_family = "wasm"))]
            return pollster::block_on(self.forward_gpu(gpu, tokens, valid, cache, output));
        }
        if let Some(cpu) = &self.cpu {
            let cc = cache
                .cpu
                .as_mut()
                .ok_or_else(|| Error::Device("forward: a burn decoder's cache given to the CPU engine".into()))?;
            let out = match output {
                Output::Last => CpuOutput::Last,
                Output::All => CpuOutput::All,
                Output::Hidden => CpuOutput::Hidden,
            };
            let v = cpu.forward(tokens, valid, cc, out)?;
            for (cv, v) in cache.valid.iter_mut().zip(valid) {
                cv.extend_from_slice(v);
            }
            let rows = if output == Output::Last { b } else { b * t };
            return Ok(tensor2(
                v,
                [rows, if output == Output::Hidden { c.hidden_size } else { c.vocab_size }],
                &self.device,
            ));
        }
        let past = cache.len();
        let s = past + t;
        if s > c.max_position_embeddings {
            return Err(Error::Device(format!(
                "sequence of {s} tokens exceeds the context of {}",
                c.max_position_embeddings
            )));
        }
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let rep = nh / nkv;

        // Positions count real tokens only, as HF does for left-padded batches (cumsum(mask) − 1).
        let mut ids = Vec::with_capacity(b * t);
        let mut pos = Vec::with_capacity(b * t);
        let mut mask = vec![MASKED; b * t * s];
        for r in 0..b {
            if tokens[r].len() != t || valid[r].len() != t {
                return Err(Error::Device(format!("forward: row {r} has {} tokens, expected {t}", tokens[r].len())));
            }
            cache.valid[r].extend_from_slice(&valid[r]);
            let mut p = cache.valid[r][..past].iter().filter(|&&v| v).count() as i64;
            for (j, &id) in tokens[r].iter().enumerate() {
                if id as usize >= c.vocab_size {
                    return Err(Error::Device(format!("token id {id} is outside the vocabulary of {}", c.vocab_size)));
                }
                ids.push(id as i64);
                pos.push(if valid[r][j] { p } else { 0 });
                if valid[r][j] {
                    p += 1;
                }
                let qpos = past + j;
                for k in 0..=qpos {
                    if cache.valid[r][k] {
                        mask[(r * t + j) * s + k] = 0.0;
                    }
                }
            }
        }
        let dev = &self.device;
        let hsz = c.hidden_size;
        let mix = match mix {
            Some(m) if self.tasks > 0 => {
                if m.len() != b || m.iter().any(|w| w.len() != self.tasks || w.iter().any(|x| !x.is_finite())) {
                    return Err(Error::Device(format!(
                        "forward: mixing weights must be {b} rows of {} finite numbers",
                        self.tasks
                    )));
                }
                Some(m)
            }
            _ => None,
        };
        let mut rows = Vec::with_capacity(b * t * hsz);
        for (k, &id) in ids.iter().enumerate() {
            let start = rows.len();
            rows.extend_from_slice(&self.embed[id as usize * hsz..(id as usize + 1) * hsz]);
            if let (Some(ed), Some(m)) = (&self.embed_d, mix) {
                ed.add(id as usize, &m[k / t], &mut rows[start..]);
            }
        }
        // Per-row weights for the B·T token rows and for the B last rows.
        let (w_rows, w_last) = match mix {
            Some(m) => {
                let nt = self.tasks;
                let per_tok: Vec<f32> = (0..b * t).flat_map(|k| m[k / t].iter().copied()).collect();
                let last: Vec<f32> = m.iter().flatten().copied().collect();
                let kernel = self.kernel.as_deref();
                (
                    Some(Mix { w: tensor2(per_tok, [b * t, nt], dev), kernel }),
                    Some(Mix { w: tensor2(last, [b, nt], dev), kernel }),
                )
            }
            None => (None, None),
        };
        let w_rows = w_rows.as_ref();
        let mask: Tensor<5> = Tensor::from_data(TensorData::new(mask, [b, 1, 1, t, s]), dev);
        let (cos, sin) = rope_rows(&pos, &self.inv_freq);
        let cos = Tensor::<4>::from_data(TensorData::new(cos, [b, 1, t, hd / 2]), dev);
        let sin = Tensor::<4>::from_data(TensorData::new(sin, [b, 1, t, hd / 2]), dev);
        let scale = 1.0 / (hd as f64).sqrt();

        let mut x = tensor2(rows, [b * t, hsz], dev); // [B·T, H]
        for (li, layer) in self.layers.iter().enumerate() {
            let hn = rms_norm_mixed(x.clone(), &layer.attn_norm, layer.attn_norm_d.as_ref(), w_rows, c.rms_norm_eps);
            let qkv = layer.qkv.forward(hn, w_rows)?.reshape([b, t, (nh + 2 * nkv) * hd]);
            let q = qkv.clone().narrow(2, 0, nh * hd).reshape([b, t, nh, hd]).swap_dims(1, 2);
            let k = qkv.clone().narrow(2, nh * hd, nkv * hd).reshape([b, t, nkv, hd]).swap_dims(1, 2);
            let v = qkv.narrow(2, (nh + nkv) * hd, nkv * hd).reshape([b, t, nkv, hd]).swap_dims(1, 2);
            let q = rope(q, &cos, &sin);
            let k = rope(k, &cos, &sin);
            let (k, v) = match cache.layers[li].take() {
                Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                None => (k, v),
            };
            cache.layers[li] = Some((k.clone(), v.clone()));
            let qg = q.reshape([b, nkv, rep * t, hd]);
            let scores = qg.matmul(k.swap_dims(2, 3)).mul_scalar(scale).reshape([b, nkv, rep, t, s]) + mask.clone();
            let probs = activation::softmax(scores, 4).reshape([b, nkv, rep * t, s]);
            let attn = probs.matmul(v).reshape([b, nh, t, hd]).swap_dims(1, 2).reshape([b * t, nh * hd]);
            x = x + layer.o.forward(attn, w_rows)?;

            let hn = rms_norm_mixed(x.clone(), &layer.mlp_norm, layer.mlp_norm_d.as_ref(), w_rows, c.rms_norm_eps);
            let gu = layer.gate_up.forward(hn, w_rows)?;
            let f = c.intermediate_size;
            let g = gu.clone().narrow(1, 0, f);
            let u = gu.narrow(1, f, f);
            x = x + layer.down.forward(activation::silu(g) * u, w_rows)?;
        }
        let (x, w) = if all {
            (x, w_rows)
        } else {
            (x.reshape([b, t, c.hidden_size]).narrow(1, t - 1, 1).reshape([b, c.hidden_size]), w_last.as_ref())
        };
        let x = rms_norm_mixed(x, &self.norm, self.norm_d.as_ref(), w, c.rms_norm_eps);
        if output == Output::Hidden {
            return Ok(x);
        }
        self.lm_head.forward(x, w)
    }
}

fn rms_norm(x: Tensor<2>, w: &Tensor<1>, eps: f32) -> Tensor<2> {
    let ms = x.clone().square().mean_dim(1);
    x * ms.add_scalar(eps).sqrt().recip() * w.clone().unsqueeze_dim(0)
}

/// RMSNorm whose weight is `w + mix · D` per row when task changes `D` (`[T, H]`) and row weights `mix`
/// (`[M, T]`) are given.
fn rms_norm_mixed(x: Tensor<2>, w: &Tensor<1>, d: Option<&Tensor<2>>, mix: Option<&Mix>, eps: f32) -> Tensor<2> {
    match (d, mix.map(|m| &m.w)) {
        (Some(d), Some(m)) => {
            let ms = x.clone().square().mean_dim(1);
            let weight = w.clone().unsqueeze_dim(0) + m.clone().matmul(d.clone());
            x * ms.add_scalar(eps).sqrt().recip() * weight
        }
        _ => rms_norm(x, w, eps),
    }
}

/// HF half-split RoPE on `[B, heads, T, d]` with per-row `cos`/`sin` of shape `[B, 1, T, d/2]`.
fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.narrow(3, d / 2, d / 2);
    let a = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let b = x2 * cos.clone() + x1 * sin.clone();
    Tensor::cat(vec![a, b], 3)
}

/// RoPE inverse frequencies θ^(−2i/d) in f32, as transformers computes them.
fn rope_inv_freq(c: &ModelConfig) -> Vec<f32> {
    let half = c.head_dim / 2;
    (0..half).map(|i| 1.0 / c.rope_theta.powf((2 * i) as f32 / c.head_dim as f32)).collect()
}

/// cos/sin of position · inverse frequency for each of `pos` (row-major `[pos.len(), inv.len()]`), with
/// transformers' f32 arithmetic: the same values a precomputed table would hold.
fn rope_rows(pos: &[i64], inv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(pos.len() * inv.len());
    let mut sin = Vec::with_capacity(pos.len() * inv.len());
    for &p in pos {
        for &f in inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

/// Reads a `[rows, cols]` tensor back to the host (native: blocking).
pub fn to_rows(x: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [_, cols] = x.dims();
    let v = x
        .try_into_data()
        .map_err(|e| Error::Device(format!("{e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| Error::Device(format!("{e:?}")))?;
    Ok(v.chunks(cols.max(1)).map(<[f32]>::to_vec).collect())
}

/// Reads a `[rows, cols]` tensor back to the host without blocking (required in the browser).
pub async fn to_rows_async(x: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [_, cols] = x.dims();
    let data = x.into_data_async().await.map_err(|e| Error::Device(format!("{e:?}")))?;
    let v = data.try_into_vec::<f32>().map_err(|e| Error::Device(format!("{e:?}")))?;
    Ok(v.chunks(cols.max(1)).map(<[f32]>::to_vec).collect())
}
