//! The zoo's trainable decoder: the runtime's Llama architecture (RMSNorm, rotate-half RoPE, causal
//! multi-head attention, SwiGLU, LM head tied to the embeddings) as a burn module that trains under
//! autodiff, and its export to an HF-layout folder that every Chorus loader (and the browser) reads.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use chorus_core::{Architecture, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hyper-parameters of one zoo model (all members of a family share `vocab_size` and the tokenizer).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZooConfig {
    /// Tokenizer vocabulary (embedding rows).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU width.
    pub intermediate_size: usize,
    /// Decoder blocks.
    pub num_layers: usize,
    /// Attention heads (query and key/value: no GQA at this size).
    pub num_heads: usize,
    /// Longest sequence trained on.
    pub max_positions: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
}

impl ZooConfig {
    /// Checks what the architecture needs; names the field at fault. The runtime's own checks
    /// (`ModelConfig::validate`) do the rest, so a config the zoo accepts is one the loaders accept.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| Err(Error::Config { field: field.into(), reason });
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(
                "num_heads",
                format!("{} heads do not split hidden_size {} evenly", self.num_heads, self.hidden_size),
            );
        }
        self.model_config().validate().map_err(|e| match e {
            chorus_core::Error::Config { field, reason } => Error::Config { field, reason },
            other => Error::Config { field: "config".into(), reason: other.to_string() },
        })
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size.checked_div(self.num_heads).unwrap_or(0)
    }

    /// Parameter count (embeddings counted once: the head is tied).
    pub fn parameters(&self) -> usize {
        self.model_config().parameter_count()
    }

    /// The runtime's view of this model.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: self.num_heads,
            head_dim: self.head_dim(),
            rope_theta: self.rope_theta,
            rms_norm_eps: self.rms_norm_eps,
            max_position_embeddings: self.max_positions,
            tie_word_embeddings: true,
            attention_bias: false,
        }
    }

    /// HF `config.json` of a Llama model with these sizes.
    pub fn hf_config_json(&self, bos: u32, eos: u32) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_heads,
            "head_dim": self.head_dim(),
            "max_position_embeddings": self.max_positions,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": true,
            "attention_bias": false,
            "hidden_act": "silu",
            "bos_token_id": bos,
            "eos_token_id": eos,
            "torch_dtype": "float32",
        })
    }
}

/// Element type of exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// 4 bytes per weight.
    F32,
    /// 2 bytes per weight.
    F16,
}

/// Row-major f32 values and shape of one exported tensor, by HF name.
pub type HfTensors = BTreeMap<String, (Vec<f32>, Vec<usize>)>;

/// One decoder block.
#[derive(Module, Debug)]
pub struct Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    mlp_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A zoo decoder (weights only; the hyper-parameters travel as [`ZooConfig`]).
#[derive(Module, Debug)]
pub struct ZooModel {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    heads: usize,
    rope_theta: f32,
}

impl ZooModel {
    /// A freshly initialised model (normal(0, 0.02) everywhere, as GPT-2/Llama do; unit norms); the
    /// device's seed makes it reproducible.
    pub fn new(cfg: &ZooConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let (h, f) = (cfg.hidden_size, cfg.intermediate_size);
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        let lin =
            |i: usize, o: usize| LinearConfig::new(i, o).with_bias(false).with_initializer(init.clone()).init(device);
        let norm = || RmsNormConfig::new(h).with_epsilon(cfg.rms_norm_eps as f64).init(device);
        let blocks = (0..cfg.num_layers)
            .map(|_| Block {
                attn_norm: norm(),
                q: lin(h, h),
                k: lin(h, h),
                v: lin(h, h),
                o: lin(h, h),
                mlp_norm: norm(),
                gate: lin(h, f),
                up: lin(h, f),
                down: lin(f, h),
            })
            .collect();
        Ok(Self {
            embed: EmbeddingConfig::new(cfg.vocab_size, h).with_initializer(init.clone()).init(device),
            blocks,
            norm: norm(),
            heads: cfg.num_heads,
            rope_theta: cfg.rope_theta,
        })
    }

    /// Logits `[B, T, V]` for token ids `[B, T]` (causal; every position).
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let mut x = self.embed.forward(ids);
        let [_, _, h] = x.dims();
        let hd = h / self.heads;
        let (cos, sin) = rope(t, hd, self.rope_theta, &device);
        // Additive causal mask: 0 on and below the diagonal, a large negative number above it.
        let mask = Tensor::<2>::ones([t, t], &device).triu(1) * -1.0e9;
        let mask = mask.reshape([1, 1, t, t]);
        for blk in &self.blocks {
            let a = blk.attn_norm.forward(x.clone());
            let split = |y: Tensor<3>| y.reshape([b, t, self.heads, hd]).swap_dims(1, 2);
            let q = rotate(split(blk.q.forward(a.clone())), &cos, &sin);
            let k = rotate(split(blk.k.forward(a.clone())), &cos, &sin);
            let v = split(blk.v.forward(a));
            let scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt() + mask.clone();
            let att = activation::softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, t, h]);
            x = x + blk.o.forward(att);
            let m = blk.mlp_norm.forward(x.clone());
            x = x + blk.down.forward(activation::silu(blk.gate.forward(m.clone())) * blk.up.forward(m));
        }
        let x = self.norm.forward(x);
        // Tied head: logits = x · Eᵀ.
        let e = self.embed.weight.val();
        x.matmul(e.transpose().unsqueeze::<3>())
    }

    /// Mean next-token cross-entropy over the positions where `weights` (`[B, T]`, the weight of
    /// predicting token `t + 1` from position `t`) is non-zero.
    pub fn loss(&self, ids: Tensor<2, Int>, weights: Tensor<2>) -> Tensor<1> {
        let [b, t] = ids.dims();
        let logits = self.forward(ids.clone()).slice([0..b, 0..t - 1]);
        let targets = ids.slice([0..b, 1..t]).unsqueeze_dim::<3>(2);
        let logp = activation::log_softmax(logits, 2);
        let picked = logp.gather(2, targets).squeeze_dim::<2>(2);
        let w = weights.slice([0..b, 0..t - 1]);
        let total = w.clone().sum();
        (picked * w).sum().neg() / total.clamp_min(1e-9)
    }

    /// HF tensors (name → row-major f32 values and shape).
    pub fn hf_tensors(&self) -> Result<HfTensors> {
        let mut out = BTreeMap::new();
        let read = |t: TensorData| t.try_to_vec::<f32>().map_err(|e| Error::Device(format!("{e:?}")));
        let mut put = |name: String, data: TensorData| -> Result<()> {
            let shape = data.shape().to_vec();
            out.insert(name, (read(data)?, shape));
            Ok(())
        };
        // burn's Linear holds [in, out]; HF stores [out, in].
        let lin = |l: &Linear| l.weight.val().transpose().into_data();
        put("model.embed_tokens.weight".into(), self.embed.weight.val().into_data())?;
        for (i, blk) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            put(format!("{p}.input_layernorm.weight"), blk.attn_norm.gamma.val().into_data())?;
            put(format!("{p}.self_attn.q_proj.weight"), lin(&blk.q))?;
            put(format!("{p}.self_attn.k_proj.weight"), lin(&blk.k))?;
            put(format!("{p}.self_attn.v_proj.weight"), lin(&blk.v))?;
            put(format!("{p}.self_attn.o_proj.weight"), lin(&blk.o))?;
            put(format!("{p}.post_attention_layernorm.weight"), blk.mlp_norm.gamma.val().into_data())?;
            put(format!("{p}.mlp.gate_proj.weight"), lin(&blk.gate))?;
            put(format!("{p}.mlp.up_proj.weight"), lin(&blk.up))?;
            put(format!("{p}.mlp.down_proj.weight"), lin(&blk.down))?;
        }
        put("model.norm.weight".into(), self.norm.gamma.val().into_data())?;
        Ok(out)
    }

    /// Writes `config.json`, `model.safetensors` (f32) and `tokenizer.json` into `dir` (created), each
    /// through a temporary file renamed into place, so a failed export leaves no half-written file.
    pub fn export(&self, cfg: &ZooConfig, tokenizer_json: &[u8], bos: u32, eos: u32, dir: &Path) -> Result<()> {
        self.export_as(cfg, tokenizer_json, bos, eos, dir, StoreDtype::F32)
    }

    /// [`Self::export`] with the stored element type (f16 halves the committed size; the evaluation
    /// reads what was stored, so reported numbers are those of the shipped weights).
    pub fn export_as(
        &self,
        cfg: &ZooConfig,
        tokenizer_json: &[u8],
        bos: u32,
        eos: u32,
        dir: &Path,
        dtype: StoreDtype,
    ) -> Result<()> {
        let tensors = self.hf_tensors()?;
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .into_iter()
            .map(|(n, (v, s))| {
                let b = match dtype {
                    StoreDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    StoreDtype::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                };
                (n, b, s)
            })
            .collect();
        let st_dtype = match dtype {
            StoreDtype::F32 => safetensors::Dtype::F32,
            StoreDtype::F16 => safetensors::Dtype::F16,
        };
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(n, b, s)| {
                safetensors::tensor::TensorView::new(st_dtype, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Io { path: dir.join("model.safetensors"), reason: e.to_string() })
            })
            .collect::<Result<_>>()?;
        let st = safetensors::serialize(views, None)
            .map_err(|e| Error::Io { path: dir.join("model.safetensors"), reason: e.to_string() })?;
        let config = serde_json::to_vec_pretty(&cfg.hf_config_json(bos, eos))
            .map_err(|e| Error::Io { path: dir.join("config.json"), reason: e.to_string() })?;
        let files =
            [("config.json", config.as_slice()), ("tokenizer.json", tokenizer_json), ("model.safetensors", &st)];
        // The member's folder is written whole; the family run builds it inside its own temporary folder.
        chorus_models::export::write_files(dir, &files, true)
            .map_err(|e| Error::Io { path: dir.to_path_buf(), reason: e.to_string() })?;
        Ok(())
    }
}

/// RoPE tables `[1, 1, T, D]` in HF's rotate-half layout (the frequency of pair `i` at `i` and `i + D/2`).
fn rope(t: usize, d: usize, theta: f32, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let half = d / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(t * d), Vec::with_capacity(t * d));
    for p in 0..t {
        for j in 0..d {
            let i = j % half;
            let inv = 1.0 / (theta as f64).powf(2.0 * i as f64 / d as f64);
            let a = p as f64 * inv;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    let mk = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [t * d]), device).reshape([1, 1, t, d]);
    (mk(cos), mk(sin))
}

/// `x·cos + rotate_half(x)·sin` for `x` of shape `[B, H, T, D]`.
fn rotate(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rot = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rot * sin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::{AdamWConfig, GradientsParams};
    use chorus_models::{Decoder, ModelFiles, WeightMode};

    /// A character-level tokenizer over `vocab` symbols (enough for the loader; ids are fed directly).
    fn char_tokenizer(vocab: usize) -> Vec<u8> {
        let chars: Vec<String> = (0..vocab).map(|i| char::from_u32(0x100 + i as u32).unwrap().to_string()).collect();
        let v: serde_json::Map<String, serde_json::Value> =
            chars.iter().enumerate().map(|(i, c)| (c.clone(), serde_json::json!(i))).collect();
        serde_json::to_vec(&serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": v, "merges": []}
        }))
        .unwrap()
    }

    fn tiny() -> ZooConfig {
        ZooConfig {
            vocab_size: 40,
            hidden_size: 32,
            intermediate_size: 48,
            num_layers: 2,
            num_heads: 4,
            max_positions: 64,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
        }
    }

    /// The exported folder, loaded by the runtime's decoder, gives the training module's logits.
    #[test]
    fn export_loads_in_the_runtime_with_the_same_logits() {
        let device = Device::flex();
        device.seed(3);
        let cfg = tiny();
        let m = ZooModel::new(&cfg, &device).unwrap();
        let dir = std::env::temp_dir().join(format!("chorus-zoo-export-{}", std::process::id()));
        m.export(&cfg, &char_tokenizer(cfg.vocab_size), 0, 1, &dir).unwrap();
        let files = ModelFiles::open(&dir).unwrap();
        assert_eq!(files.config, cfg.model_config());
        let dec = Decoder::load(&files, &device, WeightMode::F32, &mut |_, _| {}).unwrap();
        let ids: Vec<u32> = vec![3, 17, 5, 9, 22, 31, 2, 8, 8, 39];
        let mut cache = dec.new_cache(1);
        let got = dec.forward(std::slice::from_ref(&ids), &[vec![true; ids.len()]], &mut cache, true).unwrap();
        let got = chorus_models::decoder::to_rows(got).unwrap();
        let x = Tensor::<1, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()]),
            &device,
        )
        .reshape([1, ids.len()]);
        let want = m.forward(x).reshape([ids.len(), cfg.vocab_size]).into_data().try_to_vec::<f32>().unwrap();
        for (p, row) in got.iter().enumerate() {
            for (j, &g) in row.iter().enumerate() {
                let w = want[p * cfg.vocab_size + j];
                assert!((g - w).abs() <= 1e-4, "position {p} token {j}: runtime {g} vs module {w}");
            }
        }
        // Stored as f16: the same logits up to the weights' rounding.
        m.export_as(&cfg, &char_tokenizer(cfg.vocab_size), 0, 1, &dir, StoreDtype::F16).unwrap();
        let st = std::fs::metadata(dir.join("model.safetensors")).unwrap().len() as usize;
        assert!(st < cfg.parameters() * 2 + 4096, "f16 file of {st} bytes for {} weights", cfg.parameters());
        let dec = Decoder::load(&ModelFiles::open(&dir).unwrap(), &device, WeightMode::F32, &mut |_, _| {}).unwrap();
        let mut cache = dec.new_cache(1);
        let half = dec.forward(std::slice::from_ref(&ids), &[vec![true; ids.len()]], &mut cache, true).unwrap();
        for (a, b) in chorus_models::decoder::to_rows(half).unwrap().iter().flatten().zip(got.iter().flatten()) {
            assert!((a - b).abs() <= 2e-2, "f16 {a} vs f32 {b}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// AdamW on one repeated sequence drives its loss down (autodiff reaches every parameter).
    #[test]
    fn training_steps_lower_the_loss() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let cfg = tiny();
        let mut m = ZooModel::new(&cfg, &device).unwrap();
        let mut opt = AdamWConfig::new().init();
        let seq: Vec<i64> = (0..16).map(|i| (i * 7 % 40) as i64).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(seq.clone(), [16]), &device).reshape([1, 16]);
        let w = Tensor::<2>::ones([1, 16], &device);
        let first = m.loss(ids.clone(), w.clone()).into_scalar::<f32>();
        for _ in 0..30 {
            let loss = m.loss(ids.clone(), w.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            m = opt.step(1e-2, m, grads);
        }
        let last = m.loss(ids, w).into_scalar::<f32>();
        assert!(last < 0.5 * first, "loss {first} -> {last}");
    }
}
