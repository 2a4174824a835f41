//! T5 (v1.0 ReLU and v1.1 gated-GELU) as a burn module: encoder, first decoder step and LM head, loaded
//! from HF safetensors, trainable under autodiff (FiT5 fine-tunes it; see [`crate::fit5`]).
//!
//! Faithful to transformers' `modeling_t5`: RMSNorm without mean subtraction, attention **without** the
//! 1/√d scaling, one relative-position bias table per stack (block 0's) shared by every block, the
//! encoder's buckets bidirectional and the decoder's causal, cross-attention without position bias, and the
//! tied LM head scaled by d_model^-0.5. Dropout is not applied (inference, and deterministic fine-tuning).

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::source::SafetensorsSet;

/// Additive score of a masked key: large and finite, so a row with no valid key stays finite.
const MASKED: f32 = -1.0e9;

/// Hyper-parameters of a T5 model (the fields of HF's `T5Config` that the forward pass reads).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct T5Config {
    /// Embedding rows.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Width of one attention head.
    pub d_kv: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Decoder blocks.
    pub num_decoder_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Relative-position buckets.
    pub relative_attention_num_buckets: usize,
    /// Distance beyond which positions share the last bucket.
    pub relative_attention_max_distance: usize,
    /// RMSNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// `wo(gelu_tanh(wi_0 x) · wi_1 x)` (v1.1) instead of `wo(relu(wi x))` (v1.0).
    pub gated_gelu: bool,
    /// LM head = the shared embedding (v1.0) rather than a separate `lm_head.weight` (v1.1).
    pub tie_word_embeddings: bool,
    /// Scale the decoder output by d_model^-0.5 before the LM head (transformers does it when the head is
    /// tied; a config may say otherwise with `scale_decoder_outputs`).
    pub scale_decoder_outputs: bool,
}

impl T5Config {
    /// Reads an HF `config.json` (`file` names it in errors).
    pub fn from_json(file: &str, j: &Json) -> Result<Self> {
        let field = |name: &str, reason: String| Error::Field { file: file.into(), field: name.into(), reason };
        let int = |name: &str| -> Result<usize> {
            j.get(name)
                .ok_or_else(|| field(name, "missing".into()))?
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| field(name, format!("expected a non-negative integer, found {}", j[name])))
        };
        let int_or = |name: &str, default: usize| -> Result<usize> {
            if j.get(name).is_none_or(Json::is_null) { Ok(default) } else { int(name) }
        };
        let num_layers = int("num_layers")?;
        let proj = j.get("feed_forward_proj").and_then(Json::as_str).unwrap_or("relu");
        let gated_gelu = match proj {
            "relu" => false,
            "gated-gelu" => true,
            other => {
                return Err(field(
                    "feed_forward_proj",
                    format!("'{other}' is not supported (supported: relu, gated-gelu)"),
                ));
            }
        };
        let tie = j.get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(true);
        let scale = j.get("scale_decoder_outputs").and_then(Json::as_bool).unwrap_or(tie);
        let cfg = Self {
            vocab_size: int("vocab_size")?,
            d_model: int("d_model")?,
            d_kv: int("d_kv")?,
            d_ff: int("d_ff")?,
            num_layers,
            num_decoder_layers: int_or("num_decoder_layers", num_layers)?,
            num_heads: int("num_heads")?,
            relative_attention_num_buckets: int_or("relative_attention_num_buckets", 32)?,
            relative_attention_max_distance: int_or("relative_attention_max_distance", 128)?,
            layer_norm_epsilon: j.get("layer_norm_epsilon").and_then(Json::as_f64).unwrap_or(1e-6),
            gated_gelu,
            tie_word_embeddings: tie,
            scale_decoder_outputs: scale,
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Rejects sizes the forward pass cannot run; names the field.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |name: &str, reason: &str| {
            Err(Error::Field { file: file.into(), field: name.into(), reason: reason.into() })
        };
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
        ] {
            if v == 0 {
                return bad(name, "must be positive");
            }
        }
        if self.relative_attention_num_buckets < 4 {
            return bad("relative_attention_num_buckets", "needs at least 4 buckets");
        }
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets / 4 {
            return bad("relative_attention_max_distance", "must exceed a quarter of the bucket count");
        }
        Ok(())
    }

    /// Width of all heads together.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }
}

/// transformers' `T5Attention._relative_position_bucket` for one offset `key − query`, computed in f32 as
/// torch does (the log ratio in f32, the constant in f64 then rounded), so bucket edges agree exactly.
pub fn relative_bucket(relative: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut n = num_buckets as i64;
    let mut ret = 0i64;
    let rel = if bidirectional {
        n /= 2;
        if relative > 0 {
            ret += n;
        }
        relative.abs()
    } else {
        -relative.min(0)
    };
    let max_exact = n / 2;
    if rel < max_exact {
        return (ret + rel) as usize;
    }
    let log_ratio = (rel as f32 / max_exact as f32).ln();
    let denom = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
    let large = max_exact + (log_ratio / denom * (n - max_exact) as f32) as i64;
    (ret + large.min(n - 1)) as usize
}

fn tensor2(v: Vec<f32>, shape: [usize; 2], dev: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, shape), dev)
}

fn tensor1(v: Vec<f32>, dev: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), dev)
}

/// A bias-free linear layer with N(0, std) weights (`[in, out]`, burn's layout).
pub(crate) fn init_linear(inp: usize, out: usize, std: f64, bias: bool, dev: &Device) -> Linear {
    let init = burn::nn::Initializer::Normal { mean: 0.0, std };
    burn::nn::LinearConfig::new(inp, out).with_bias(bias).with_initializer(init).init(dev)
}

pub(crate) fn init_norm(d: usize, eps: f64, dev: &Device) -> RmsNorm {
    burn::nn::RmsNormConfig::new(d).with_epsilon(eps).init(dev)
}

/// Tensor lookup by HF name under a prefix, with the shape the config implies.
pub(crate) struct Weights<'a> {
    pub(crate) set: &'a SafetensorsSet,
    pub(crate) file: String,
    pub(crate) prefix: String,
    pub(crate) dev: Device,
}

impl Weights<'_> {
    pub(crate) fn has(&self, name: &str) -> bool {
        self.set.index.contains_key(&format!("{}{name}", self.prefix))
    }

    /// Row-major values of `name`, checked against `shape`.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let file = self.set.shard_of(&full).unwrap_or(&self.file).to_string();
        let (v, s) = self
            .set
            .get(&full)?
            .ok_or_else(|| Error::MissingTensor { file: self.file.clone(), tensor: full.clone() })?;
        if s != shape {
            return Err(Error::Shape { file, tensor: full, expected: shape.to_vec(), found: s });
        }
        Ok(v)
    }

    /// A PyTorch `[out, in]` weight as a burn [`Linear`] (`[in, out]`), with an optional `[out]` bias.
    pub(crate) fn linear(&self, name: &str, out: usize, inp: usize, bias: Option<&str>) -> Result<Linear> {
        let w = self.get(name, &[out, inp])?;
        let w = tensor2(w, [out, inp], &self.dev).transpose();
        let bias = match bias {
            Some(b) => Some(Param::from_tensor(tensor1(self.get(b, &[out])?, &self.dev))),
            None => None,
        };
        Ok(Linear { weight: Param::from_tensor(w), bias })
    }

    pub(crate) fn norm(&self, name: &str, d: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm { gamma: Param::from_tensor(tensor1(self.get(name, &[d])?, &self.dev)), epsilon: eps })
    }

    fn embedding(&self, name: &str, rows: usize, d: usize) -> Result<Embedding> {
        Ok(Embedding { weight: Param::from_tensor(tensor2(self.get(name, &[rows, d])?, [rows, d], &self.dev)) })
    }
}

/// Multi-head attention as T5 computes it: no 1/√d scaling; an optional relative-position table.
#[derive(Module, Debug)]
pub struct Attention {
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    /// `[buckets, heads]`; only block 0 of each stack has one.
    pub(crate) relative: Option<Embedding>,
    pub(crate) heads: usize,
    pub(crate) d_kv: usize,
}

impl Attention {
    pub(crate) fn new(cfg: &T5Config, relative: bool, dev: &Device) -> Self {
        let (d, inner) = (cfg.d_model, cfg.inner_dim());
        // transformers' T5 init: q ~ N(0, (d·d_kv)^-½), k/v ~ N(0, d^-½), o ~ N(0, inner^-½).
        let std_q = ((d * cfg.d_kv) as f64).powf(-0.5);
        let std_kv = (d as f64).powf(-0.5);
        let std_o = (inner as f64).powf(-0.5);
        let relative = relative.then(|| {
            burn::nn::EmbeddingConfig::new(cfg.relative_attention_num_buckets, cfg.num_heads)
                .with_initializer(burn::nn::Initializer::Normal { mean: 0.0, std: std_kv })
                .init(dev)
        });
        Self {
            q: init_linear(d, inner, std_q, false, dev),
            k: init_linear(d, inner, std_kv, false, dev),
            v: init_linear(d, inner, std_kv, false, dev),
            o: init_linear(inner, d, std_o, false, dev),
            relative,
            heads: cfg.num_heads,
            d_kv: cfg.d_kv,
        }
    }

    pub(crate) fn load(w: &Weights<'_>, p: &str, cfg: &T5Config, relative: bool) -> Result<Self> {
        let (d, inner) = (cfg.d_model, cfg.inner_dim());
        let relative = if relative {
            Some(w.embedding(
                &format!("{p}.relative_attention_bias.weight"),
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
            )?)
        } else {
            None
        };
        Ok(Self {
            q: w.linear(&format!("{p}.q.weight"), inner, d, None)?,
            k: w.linear(&format!("{p}.k.weight"), inner, d, None)?,
            v: w.linear(&format!("{p}.v.weight"), inner, d, None)?,
            o: w.linear(&format!("{p}.o.weight"), d, inner, None)?,
            relative,
            heads: cfg.num_heads,
            d_kv: cfg.d_kv,
        })
    }

    /// The position bias `[1, H, Tq, Tk]` of this (block-0) layer.
    fn position_bias(&self, tq: usize, tk: usize, bidirectional: bool, cfg: &T5Config, dev: &Device) -> Tensor<4> {
        let Some(rel) = &self.relative else {
            return Tensor::zeros([1, self.heads, tq, tk], dev);
        };
        let mut buckets = Vec::with_capacity(tq * tk);
        // The query sits at the end of the key sequence when the decoder has fewer queries than keys.
        let offset = tk as i64 - tq as i64;
        for i in 0..tq {
            for j in 0..tk {
                let r = j as i64 - (i as i64 + offset);
                buckets.push(relative_bucket(
                    r,
                    bidirectional,
                    cfg.relative_attention_num_buckets,
                    cfg.relative_attention_max_distance,
                ) as i64);
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(buckets, [1, tq * tk]), dev);
        rel.forward(ids).reshape([tq, tk, self.heads]).permute([2, 0, 1]).unsqueeze::<4>()
    }

    /// `x: [B, Tq, d]` attends to `kv: [B, Tk, d]`; `bias: [B or 1, H, Tq or 1, Tk]` is added to the scores.
    pub(crate) fn forward(&self, x: Tensor<3>, kv: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [b, tq, _] = x.dims();
        let [_, tk, _] = kv.dims();
        let (h, dk) = (self.heads, self.d_kv);
        let q = self.q.forward(x).reshape([b, tq, h, dk]).swap_dims(1, 2);
        let k = self.k.forward(kv.clone()).reshape([b, tk, h, dk]).swap_dims(1, 2);
        let v = self.v.forward(kv).reshape([b, tk, h, dk]).swap_dims(1, 2);
        let scores = q.matmul(k.swap_dims(2, 3)) + bias;
        let att = activation::softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, tq, h * dk]);
        self.o.forward(att)
    }
}

/// T5's feed-forward layer.
#[derive(Module, Debug)]
pub struct Ff {
    wi: Option<Linear>,
    wi_0: Option<Linear>,
    wi_1: Option<Linear>,
    wo: Linear,
}

impl Ff {
    fn new(cfg: &T5Config, dev: &Device) -> Self {
        let (d, f) = (cfg.d_model, cfg.d_ff);
        let si = (d as f64).powf(-0.5);
        let so = (f as f64).powf(-0.5);
        let lin = |i, o, s| Some(init_linear(i, o, s, false, dev));
        if cfg.gated_gelu {
            Self { wi: None, wi_0: lin(d, f, si), wi_1: lin(d, f, si), wo: init_linear(f, d, so, false, dev) }
        } else {
            Self { wi: lin(d, f, si), wi_0: None, wi_1: None, wo: init_linear(f, d, so, false, dev) }
        }
    }

    fn load(w: &Weights<'_>, p: &str, cfg: &T5Config) -> Result<Self> {
        let (d, f) = (cfg.d_model, cfg.d_ff);
        let wo = w.linear(&format!("{p}.wo.weight"), d, f, None)?;
        if cfg.gated_gelu {
            Ok(Self {
                wi: None,
                wi_0: Some(w.linear(&format!("{p}.wi_0.weight"), f, d, None)?),
                wi_1: Some(w.linear(&format!("{p}.wi_1.weight"), f, d, None)?),
                wo,
            })
        } else {
            Ok(Self { wi: Some(w.linear(&format!("{p}.wi.weight"), f, d, None)?), wi_0: None, wi_1: None, wo })
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = match (&self.wi, &self.wi_0, &self.wi_1) {
            (Some(wi), _, _) => activation::relu(wi.forward(x)),
            (None, Some(w0), Some(w1)) => gelu_tanh(w0.forward(x.clone())) * w1.forward(x),
            // Constructors build one of the two shapes; a module assembled otherwise has no FFN input.
            _ => return x.zeros_like(),
        };
        self.wo.forward(hidden)
    }
}

/// transformers' `gelu_new`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
fn gelu_tanh(x: Tensor<3>) -> Tensor<3> {
    let c = (2.0f64 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
    x * 0.5 * (inner.tanh() + 1.0)
}

/// One encoder block: self-attention and feed-forward, each pre-normed with a residual.
#[derive(Module, Debug)]
pub struct EncoderBlock {
    attn_norm: RmsNorm,
    attn: Attention,
    ff_norm: RmsNorm,
    ff: Ff,
}

/// One decoder block: causal self-attention, cross-attention, feed-forward.
#[derive(Module, Debug)]
pub struct DecoderBlock {
    self_norm: RmsNorm,
    self_attn: Attention,
    cross_norm: RmsNorm,
    cross_attn: Attention,
    ff_norm: RmsNorm,
    ff: Ff,
}

/// A T5 encoder-decoder.
#[derive(Module, Debug)]
pub struct T5 {
    shared: Embedding,
    encoder: Vec<EncoderBlock>,
    encoder_norm: RmsNorm,
    decoder: Vec<DecoderBlock>,
    decoder_norm: RmsNorm,
    /// `[d, vocab]` when the head is not tied; always `None` in a backbone without an LM head (FiT5's,
    /// which scores with its own head and never calls [`T5::first_step_logits`]).
    lm_head: Option<Linear>,
    #[module(skip)]
    cfg: T5Config,
}

impl T5 {
    /// A freshly initialised model (transformers' init scheme); the device's seed makes it reproducible.
    pub fn new(cfg: &T5Config, dev: &Device) -> Result<Self> {
        cfg.validate("<config>")?;
        let norm = || init_norm(cfg.d_model, cfg.layer_norm_epsilon, dev);
        let encoder = (0..cfg.num_layers)
            .map(|i| EncoderBlock {
                attn_norm: norm(),
                attn: Attention::new(cfg, i == 0, dev),
                ff_norm: norm(),
                ff: Ff::new(cfg, dev),
            })
            .collect();
        let decoder = (0..cfg.num_decoder_layers)
            .map(|i| DecoderBlock {
                self_norm: norm(),
                self_attn: Attention::new(cfg, i == 0, dev),
                cross_norm: norm(),
                cross_attn: Attention::new(cfg, false, dev),
                ff_norm: norm(),
                ff: Ff::new(cfg, dev),
            })
            .collect();
        let shared = burn::nn::EmbeddingConfig::new(cfg.vocab_size, cfg.d_model)
            .with_initializer(burn::nn::Initializer::Normal { mean: 0.0, std: 1.0 })
            .init(dev);
        let lm_head = (!cfg.tie_word_embeddings)
            .then(|| init_linear(cfg.d_model, cfg.vocab_size, (cfg.d_model as f64).powf(-0.5), false, dev));
        Ok(Self { shared, encoder, encoder_norm: norm(), decoder, decoder_norm: norm(), lm_head, cfg: cfg.clone() })
    }

    /// Loads the weights named as transformers saves them (`shared.weight`, `encoder.block.{i}.layer.{j}…`),
    /// under `prefix` (`""` for a T5 checkpoint, `"t5."` inside FiT5). Every shape is checked against `cfg`.
    pub fn load(set: &SafetensorsSet, file: &str, prefix: &str, cfg: &T5Config, dev: &Device) -> Result<Self> {
        let w = Weights { set, file: file.into(), prefix: prefix.into(), dev: dev.clone() };
        Self::load_from(&w, cfg)
    }

    pub(crate) fn load_from(w: &Weights<'_>, cfg: &T5Config) -> Result<Self> {
        Self::load_parts(w, cfg, true)
    }

    /// The encoder-decoder without an LM head, as HF's `T5Model` (FiT5's backbone): `lm_head.weight` is
    /// neither needed nor read, whatever `tie_word_embeddings` says.
    pub(crate) fn load_backbone(w: &Weights<'_>, cfg: &T5Config) -> Result<Self> {
        Self::load_parts(w, cfg, false)
    }

    /// Drops the untied LM head (a backbone that never produces LM logits holds none).
    pub(crate) fn without_lm_head(mut self) -> Self {
        self.lm_head = None;
        self
    }

    fn load_parts(w: &Weights<'_>, cfg: &T5Config, with_lm_head: bool) -> Result<Self> {
        let (d, eps) = (cfg.d_model, cfg.layer_norm_epsilon);
        // A state dict saved with tied weights may hold only one of the three copies.
        let embed =
            ["shared.weight", "encoder.embed_tokens.weight"].into_iter().find(|n| w.has(n)).unwrap_or("shared.weight");
        let shared = w.embedding(embed, cfg.vocab_size, d)?;
        let mut encoder = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("encoder.block.{i}.layer");
            encoder.push(EncoderBlock {
                attn_norm: w.norm(&format!("{p}.0.layer_norm.weight"), d, eps)?,
                attn: Attention::load(w, &format!("{p}.0.SelfAttention"), cfg, i == 0)?,
                ff_norm: w.norm(&format!("{p}.1.layer_norm.weight"), d, eps)?,
                ff: Ff::load(w, &format!("{p}.1.DenseReluDense"), cfg)?,
            });
        }
        let mut decoder = Vec::with_capacity(cfg.num_decoder_layers);
        for i in 0..cfg.num_decoder_layers {
            let p = format!("decoder.block.{i}.layer");
            decoder.push(DecoderBlock {
                self_norm: w.norm(&format!("{p}.0.layer_norm.weight"), d, eps)?,
                self_attn: Attention::load(w, &format!("{p}.0.SelfAttention"), cfg, i == 0)?,
                cross_norm: w.norm(&format!("{p}.1.layer_norm.weight"), d, eps)?,
                cross_attn: Attention::load(w, &format!("{p}.1.EncDecAttention"), cfg, false)?,
                ff_norm: w.norm(&format!("{p}.2.layer_norm.weight"), d, eps)?,
                ff: Ff::load(w, &format!("{p}.2.DenseReluDense"), cfg)?,
            });
        }
        let lm_head = if cfg.tie_word_embeddings || !with_lm_head {
            None
        } else {
            Some(w.linear("lm_head.weight", cfg.vocab_size, d, None)?)
        };
        Ok(Self {
            shared,
            encoder,
            encoder_norm: w.norm("encoder.final_layer_norm.weight", d, eps)?,
            decoder,
            decoder_norm: w.norm("decoder.final_layer_norm.weight", d, eps)?,
            lm_head,
            cfg: cfg.clone(),
        })
    }

    /// Opens an HF T5 folder (`config.json` + `model.safetensors`).
    #[cfg(not(target_family = "wasm"))]
    pub fn open(dir: &std::path::Path, dev: &Device) -> Result<Self> {
        let (name, j) = read_config(dir)?;
        let cfg = T5Config::from_json(&name, &j)?;
        let set = SafetensorsSet::open_dir(dir)?;
        Self::load(&set, &dir.join("model.safetensors").display().to_string(), "", &cfg, dev)
    }

    /// The configuration.
    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    /// The additive key mask `[B, 1, 1, T]` of a 0/1 attention mask `[B, T]`.
    pub fn key_mask(mask: Tensor<2>) -> Tensor<4> {
        let [b, t] = mask.dims();
        ((mask.neg() + 1.0) * MASKED).reshape([b, 1, 1, t])
    }

    /// Encoder states `[B, T, d]` (after the final norm); `after_block(i, h)` may rewrite the hidden
    /// states after block `i` (FiT5's global layers hook in here).
    pub fn encode_with(
        &self,
        ids: Tensor<2, Int>,
        mask: Tensor<2>,
        after_block: &mut dyn FnMut(usize, Tensor<3>) -> Tensor<3>,
    ) -> Tensor<3> {
        let [_, t] = ids.dims();
        let dev = ids.device();
        let mut h = self.shared.forward(ids);
        let bias = self.encoder[0].attn.position_bias(t, t, true, &self.cfg, &dev) + Self::key_mask(mask);
        for (i, blk) in self.encoder.iter().enumerate() {
            let x = blk.attn_norm.forward(h.clone());
            h = h + blk.attn.forward(x.clone(), x, bias.clone());
            h = h.clone() + blk.ff.forward(blk.ff_norm.forward(h));
            h = after_block(i, h);
        }
        self.encoder_norm.forward(h)
    }

    /// Encoder states `[B, T, d]`.
    pub fn encode(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        self.encode_with(ids, mask, &mut |_, h| h)
    }

    /// The decoder's last hidden state `[B, d]` at its first step (input = the start token 0, as
    /// transformers' `decoder_start_token_id`), attending to `enc: [B, T, d]` under `mask: [B, T]`.
    pub fn decode_first(&self, enc: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
        let [b, _, d] = enc.dims();
        let dev = enc.device();
        let start = Tensor::<2, Int>::zeros([b, 1], &dev);
        let mut h = self.shared.forward(start);
        let self_bias = match self.decoder.first() {
            Some(blk) => blk.self_attn.position_bias(1, 1, false, &self.cfg, &dev),
            None => Tensor::zeros([1, self.cfg.num_heads, 1, 1], &dev),
        };
        let cross_bias = Self::key_mask(mask);
        for blk in &self.decoder {
            let x = blk.self_norm.forward(h.clone());
            h = h + blk.self_attn.forward(x.clone(), x, self_bias.clone());
            let x = blk.cross_norm.forward(h.clone());
            h = h + blk.cross_attn.forward(x, enc.clone(), cross_bias.clone());
            h = h.clone() + blk.ff.forward(blk.ff_norm.forward(h));
        }
        self.decoder_norm.forward(h).reshape([b, d])
    }

    /// LM-head logits `[B, vocab]` of the first decoder step.
    pub fn first_step_logits(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let enc = self.encode(ids, mask.clone());
        let mut h = self.decode_first(enc, mask);
        if self.cfg.scale_decoder_outputs {
            h = h * (self.cfg.d_model as f64).powf(-0.5);
        }
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => h.matmul(self.shared.weight.val().transpose()),
        }
    }

    /// Named weights in transformers' layout (`[out, in]` for projections), for saving.
    pub fn hf_tensors(&self, prefix: &str, out: &mut Vec<(String, Tensor<2>)>) {
        let lin = |l: &Linear| l.weight.val().transpose();
        let vec = |n: &RmsNorm| n.gamma.val().unsqueeze::<2>();
        let attn = |out: &mut Vec<(String, Tensor<2>)>, p: String, a: &Attention| {
            for (n, l) in [("q", &a.q), ("k", &a.k), ("v", &a.v), ("o", &a.o)] {
                out.push((format!("{p}.{n}.weight"), lin(l)));
            }
            if let Some(r) = &a.relative {
                out.push((format!("{p}.relative_attention_bias.weight"), r.weight.val()));
            }
        };
        let ff = |out: &mut Vec<(String, Tensor<2>)>, p: String, f: &Ff| {
            for (n, l) in [("wi", &f.wi), ("wi_0", &f.wi_0), ("wi_1", &f.wi_1)] {
                if let Some(l) = l {
                    out.push((format!("{p}.{n}.weight"), lin(l)));
                }
            }
            out.push((format!("{p}.wo.weight"), lin(&f.wo)));
        };
        out.push((format!("{prefix}shared.weight"), self.shared.weight.val()));
        for (i, b) in self.encoder.iter().enumerate() {
            let p = format!("{prefix}encoder.block.{i}.layer");
            out.push((format!("{p}.0.layer_norm.weight"), vec(&b.attn_norm)));
            attn(out, format!("{p}.0.SelfAttention"), &b.attn);
            out.push((format!("{p}.1.layer_norm.weight"), vec(&b.ff_norm)));
            ff(out, format!("{p}.1.DenseReluDense"), &b.ff);
        }
        out.push((format!("{prefix}encoder.final_layer_norm.weight"), vec(&self.encoder_norm)));
        for (i, b) in self.decoder.iter().enumerate() {
            let p = format!("{prefix}decoder.block.{i}.layer");
            out.push((format!("{p}.0.layer_norm.weight"), vec(&b.self_norm)));
            attn(out, format!("{p}.0.SelfAttention"), &b.self_attn);
            out.push((format!("{p}.1.layer_norm.weight"), vec(&b.cross_norm)));
            attn(out, format!("{p}.1.EncDecAttention"), &b.cross_attn);
            out.push((format!("{p}.2.layer_norm.weight"), vec(&b.ff_norm)));
            ff(out, format!("{p}.2.DenseReluDense"), &b.ff);
        }
        out.push((format!("{prefix}decoder.final_layer_norm.weight"), vec(&self.decoder_norm)));
        if let Some(h) = &self.lm_head {
            out.push((format!("{prefix}lm_head.weight"), lin(h)));
        }
    }
}

/// Reads `DIR/config.json`: its path (for error messages) and its JSON.
#[cfg(not(target_family = "wasm"))]
pub fn read_config(dir: &std::path::Path) -> Result<(String, Json)> {
    let path = dir.join("config.json");
    let name = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|err| Error::Io { path: name.clone(), err })?;
    let j = serde_json::from_slice(&bytes).map_err(|e| Error::Json { file: name.clone(), reason: e.to_string() })?;
    Ok((name, j))
}

/// A `[B, T]` int tensor of token ids and the matching 0/1 float mask, from equal-length rows.
pub fn ids_tensor(rows: &[Vec<u32>], masks: &[Vec<u32>], dev: &Device) -> (Tensor<2, Int>, Tensor<2>) {
    let b = rows.len();
    let t = rows.first().map_or(0, Vec::len);
    let ids: Vec<i64> = rows.iter().flatten().map(|&i| i as i64).collect();
    let mask: Vec<f32> = masks.iter().flatten().map(|&m| m as f32).collect();
    (Tensor::from_data(TensorData::new(ids, [b, t]), dev), Tensor::from_data(TensorData::new(mask, [b, t]), dev))
}
