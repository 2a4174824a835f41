//! BERT and RoBERTa encoders with the masked-LM head as a trainable burn module (MVRE prompt-tunes it; see
//! issue #8), loaded from HF safetensors.
//!
//! Faithful to transformers' `modeling_bert` / `modeling_roberta`: post-LayerNorm blocks, attention scaled by
//! 1/√d, exact (erf) GELU, learned absolute positions (RoBERTa's start after the padding id, pads keep the
//! padding id), token type 0; the MLM head is dense → GELU → LayerNorm → decoder tied to the word embeddings
//! plus a bias. A checkpoint without a head (sentence-transformers' MiniLM) gets a freshly initialised one and
//! says so ([`Bert::head_initialised`]). Dropout is not applied.

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::source::SafetensorsSet;
use crate::t5::{Weights, init_linear};

/// Additive score of a padding key.
const MASKED: f32 = -1.0e9;

/// Which of the two families (their position ids, names and head differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// BERT (and MiniLM): positions 0..T, `bert.` / `cls.predictions.` names.
    Bert,
    /// RoBERTa: positions from `pad_token_id + 1`, `roberta.` / `lm_head.` names.
    Roberta,
}

/// The fields of HF's `BertConfig` / `RobertaConfig` that the forward pass reads.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BertConfig {
    /// Family.
    pub family: Family,
    /// Word-embedding rows.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// Blocks.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Position-embedding rows.
    pub max_position_embeddings: usize,
    /// Token-type rows.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (BERT 1e-12, RoBERTa 1e-5).
    pub layer_norm_eps: f64,
    /// Padding id (RoBERTa's positions start after it).
    pub pad_token_id: usize,
}

impl BertConfig {
    /// Reads an HF `config.json` (`model_type` bert/roberta; anything else naming BERT's fields is read as BERT).
    pub fn from_json(file: &str, j: &Json) -> Result<Self> {
        let field = |name: &str, reason: String| Error::Field { file: file.into(), field: name.into(), reason };
        let int = |name: &str, default: Option<usize>| -> Result<usize> {
            match j.get(name) {
                None | Some(Json::Null) => default.ok_or_else(|| field(name, "missing".into())),
                Some(v) => {
                    v.as_u64().map(|v| v as usize).ok_or_else(|| field(name, format!("expected an integer, found {v}")))
                }
            }
        };
        let family = match j.get("model_type").and_then(Json::as_str) {
            Some("roberta" | "xlm-roberta" | "camembert") => Family::Roberta,
            _ => Family::Bert,
        };
        if let Some(act) = j.get("hidden_act").and_then(Json::as_str)
            && act != "gelu"
        {
            return Err(field("hidden_act", format!("'{act}' is not supported (supported: gelu)")));
        }
        let cfg = Self {
            family,
            vocab_size: int("vocab_size", None)?,
            hidden_size: int("hidden_size", None)?,
            num_hidden_layers: int("num_hidden_layers", None)?,
            num_attention_heads: int("num_attention_heads", None)?,
            intermediate_size: int("intermediate_size", None)?,
            max_position_embeddings: int("max_position_embeddings", Some(512))?,
            type_vocab_size: int("type_vocab_size", Some(2))?,
            layer_norm_eps: j.get("layer_norm_eps").and_then(Json::as_f64).unwrap_or(1e-12),
            pad_token_id: int("pad_token_id", Some(if family == Family::Roberta { 1 } else { 0 }))?,
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(field(
                "num_attention_heads",
                format!("{} heads do not split hidden_size {}", cfg.num_attention_heads, cfg.hidden_size),
            ));
        }
        Ok(cfg)
    }
}

fn layer_norm(w: &Weights<'_>, p: &str, d: usize, eps: f64) -> Result<LayerNorm> {
    let mut ln = burn::nn::LayerNormConfig::new(d).with_epsilon(eps).init(&w.dev);
    let v = |n: &str| -> Result<Tensor<1>> { Ok(Tensor::from_data(TensorData::new(w.get(n, &[d])?, [d]), &w.dev)) };
    ln.gamma = Param::from_tensor(v(&format!("{p}.weight"))?);
    ln.beta = Some(Param::from_tensor(v(&format!("{p}.bias"))?));
    Ok(ln)
}

fn embedding(w: &Weights<'_>, name: &str, rows: usize, d: usize) -> Result<Embedding> {
    let v = w.get(name, &[rows, d])?;
    Ok(Embedding { weight: Param::from_tensor(Tensor::from_data(TensorData::new(v, [rows, d]), &w.dev)) })
}

/// One post-LN encoder block.
#[derive(Module, Debug)]
pub struct BertLayer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    inter: Linear,
    out: Linear,
    out_norm: LayerNorm,
    heads: usize,
}

impl BertLayer {
    fn load(w: &Weights<'_>, p: &str, c: &BertConfig) -> Result<Self> {
        let (h, f, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let lin =
            |n: &str, o: usize, i: usize| w.linear(&format!("{p}.{n}.weight"), o, i, Some(&format!("{p}.{n}.bias")));
        Ok(Self {
            q: lin("attention.self.query", h, h)?,
            k: lin("attention.self.key", h, h)?,
            v: lin("attention.self.value", h, h)?,
            attn_out: lin("attention.output.dense", h, h)?,
            attn_norm: layer_norm(w, &format!("{p}.attention.output.LayerNorm"), h, eps)?,
            inter: lin("intermediate.dense", f, h)?,
            out: lin("output.dense", h, f)?,
            out_norm: layer_norm(w, &format!("{p}.output.LayerNorm"), h, eps)?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [b, t, h] = x.dims();
        let d = h / self.heads;
        let split = |y: Tensor<3>| y.reshape([b, t, self.heads, d]).swap_dims(1, 2);
        let q = split(self.q.forward(x.clone()));
        let k = split(self.k.forward(x.clone()));
        let v = split(self.v.forward(x.clone()));
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt() + bias;
        let att = activation::softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, t, h]);
        let x = self.attn_norm.forward(self.attn_out.forward(att) + x);
        let y = self.out.forward(activation::gelu(self.inter.forward(x.clone())));
        self.out_norm.forward(y + x)
    }
}

/// The masked-LM head: dense → GELU → LayerNorm → (tied decoder) + bias.
#[derive(Module, Debug)]
pub struct MlmHead {
    dense: Linear,
    norm: LayerNorm,
    bias: Param<Tensor<1>>,
}

/// A BERT or RoBERTa encoder with its MLM head.
#[derive(Module, Debug)]
pub struct Bert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<BertLayer>,
    head: MlmHead,
    #[module(skip)]
    cfg: BertConfig,
    #[module(skip)]
    head_initialised: bool,
}

impl Bert {
    /// Loads an encoder (names with or without the `bert.` / `roberta.` prefix) and its MLM head
    /// (`cls.predictions.…` or `lm_head.…`; a fresh N(0, 0.02) head with unit LayerNorm and zero bias when the
    /// checkpoint has none).
    pub fn load(set: &SafetensorsSet, file: &str, cfg: &BertConfig, dev: &Device) -> Result<Self> {
        let base = match cfg.family {
            Family::Bert => "bert.",
            Family::Roberta => "roberta.",
        };
        let prefixed = set.index.keys().any(|k| k.starts_with(base));
        let w = Weights {
            set,
            file: file.into(),
            prefix: if prefixed { base.into() } else { String::new() },
            dev: dev.clone(),
        };
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let word = embedding(&w, "embeddings.word_embeddings.weight", cfg.vocab_size, h)?;
        let position = embedding(&w, "embeddings.position_embeddings.weight", cfg.max_position_embeddings, h)?;
        let token_type = embedding(&w, "embeddings.token_type_embeddings.weight", cfg.type_vocab_size.max(1), h)?;
        let emb_norm = layer_norm(&w, "embeddings.LayerNorm", h, eps)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(&w, &format!("encoder.layer.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        let hw = Weights { set, file: file.into(), prefix: String::new(), dev: dev.clone() };
        let (p, norm_name) = match cfg.family {
            Family::Bert => ("cls.predictions", "cls.predictions.transform.LayerNorm"),
            Family::Roberta => ("lm_head", "lm_head.layer_norm"),
        };
        let dense_name = match cfg.family {
            Family::Bert => "cls.predictions.transform.dense",
            Family::Roberta => "lm_head.dense",
        };
        let (head, head_initialised) = if hw.has(&format!("{dense_name}.weight")) {
            let bias = hw.get(&format!("{p}.bias"), &[cfg.vocab_size])?;
            let head = MlmHead {
                dense: hw.linear(&format!("{dense_name}.weight"), h, h, Some(&format!("{dense_name}.bias")))?,
                norm: layer_norm(&hw, norm_name, h, eps)?,
                bias: Param::from_tensor(Tensor::from_data(TensorData::new(bias, [cfg.vocab_size]), dev)),
            };
            (head, false)
        } else {
            let head = MlmHead {
                dense: init_linear(h, h, 0.02, true, dev),
                norm: burn::nn::LayerNormConfig::new(h).with_epsilon(eps).init(dev),
                bias: Param::from_tensor(Tensor::zeros([cfg.vocab_size], dev)),
            };
            (head, true)
        };
        Ok(Self { word, position, token_type, emb_norm, layers, head, cfg: cfg.clone(), head_initialised })
    }

    /// Opens an HF folder (`config.json` + `model.safetensors`).
    #[cfg(not(target_family = "wasm"))]
    pub fn open(dir: &std::path::Path, dev: &Device) -> Result<Self> {
        let (name, j) = crate::t5::read_config(dir)?;
        let cfg = BertConfig::from_json(&name, &j)?;
        let set = SafetensorsSet::open_dir(dir)?;
        Self::load(&set, &dir.join("model.safetensors").display().to_string(), &cfg, dev)
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }
    /// Re-draws a freshly initialised MLM head (one the checkpoint lacked) from a host generator seeded
    /// with `seed`: N(0, 0.02) dense weights, zero dense bias. burn's device generator is process-wide, so
    /// another thread drawing from it between a seed and the head's init made the same seed give another
    /// head (a flaky `mvre_preparation_is_reproducible_from_its_seed`). A loaded head is left as it is.
    pub fn reseed_fresh_head(&mut self, seed: u64) {
        if !self.head_initialised {
            return;
        }
        let h = self.cfg.hidden_size;
        let mut rng = chorus_core::sampling::Rng::new(seed);
        let w: Vec<f32> = (0..h * h)
            .map(|_| {
                // Box–Muller; 1 − u keeps the logarithm finite.
                let (u, v) = (1.0 - rng.next_f64(), rng.next_f64());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * 0.02) as f32
            })
            .collect();
        let dev = self.head.dense.weight.device();
        self.head.dense.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [h, h]), &dev));
        if let Some(b) = &mut self.head.dense.bias {
            *b = Param::from_tensor(Tensor::zeros([h], &dev));
        }
    }

    /// Whether the MLM head was initialised here because the checkpoint had none.
    pub fn head_initialised(&self) -> bool {
        self.head_initialised
    }

    /// Checks token ids against the vocabulary and lengths against the position table (an embedding lookup
    /// past either table is refused here, naming the row).
    pub fn check_inputs(&self, ids: &[Vec<u32>]) -> Result<()> {
        let extra = match self.cfg.family {
            Family::Bert => 0,
            Family::Roberta => self.cfg.pad_token_id + 1,
        };
        for (r, row) in ids.iter().enumerate() {
            if let Some(&t) = row.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
                return Err(Error::Field {
                    file: "<input>".into(),
                    field: format!("row {r}"),
                    reason: format!("token id {t} is outside the vocabulary of {}", self.cfg.vocab_size),
                });
            }
            if row.len() + extra > self.cfg.max_position_embeddings {
                return Err(Error::Field {
                    file: "<input>".into(),
                    field: format!("row {r}"),
                    reason: format!(
                        "{} tokens; the model has {} positions",
                        row.len(),
                        self.cfg.max_position_embeddings - extra
                    ),
                });
            }
        }
        Ok(())
    }

    /// Position ids of rows of token ids: 0..T for BERT; for RoBERTa `pad + 1 + i` over non-pad tokens and
    /// `pad` on padding (transformers' `create_position_ids_from_input_ids`).
    pub fn position_ids(&self, ids: &[Vec<u32>]) -> Vec<Vec<u32>> {
        let pad = self.cfg.pad_token_id as u32;
        ids.iter()
            .map(|row| match self.cfg.family {
                Family::Bert => (0..row.len() as u32).collect(),
                Family::Roberta => {
                    let mut n = 0u32;
                    row.iter()
                        .map(|&t| {
                            if t == pad {
                                pad
                            } else {
                                n += 1;
                                pad + n
                            }
                        })
                        .collect()
                }
            })
            .collect()
    }

    /// Last hidden states `[B, T, H]` of `ids` under the 0/1 `mask` (`positions` from [`Self::position_ids`]).
    pub fn hidden(&self, ids: Tensor<2, Int>, positions: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let types = ids.zeros_like();
        let x = self.word.forward(ids) + self.position.forward(positions) + self.token_type.forward(types);
        let mut x = self.emb_norm.forward(x);
        let bias = ((mask.neg() + 1.0) * MASKED).reshape([b, 1, 1, t]);
        for l in &self.layers {
            x = l.forward(x, bias.clone());
        }
        x
    }

    /// The MLM head before its decoder: dense → GELU → LayerNorm.
    pub fn head_transform(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.head.norm.forward(activation::gelu(self.head.dense.forward(hidden)))
    }

    /// MLM logits `[B, T, V]` of hidden states (decoder tied to the word embeddings).
    pub fn mlm_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let h = self.head_transform(hidden);
        let e = self.word.weight.val();
        h.matmul(e.transpose().unsqueeze::<3>()) + self.head.bias.val().unsqueeze::<3>()
    }

    /// The decoder bias at `ids[j][k]`, as `[J, K]`.
    pub fn head_bias_rows(&self, ids: &[Vec<u32>]) -> Tensor<2> {
        let (j, k) = (ids.len(), ids.first().map_or(0, Vec::len));
        let flat: Vec<i64> = ids.iter().flatten().map(|&i| i64::from(i)).collect();
        let dev = self.word.weight.val().device();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(flat, [j * k]), &dev);
        self.head.bias.val().select(0, idx).reshape([j, k])
    }

    /// Appends `rows.len() / H` words to the vocabulary with the given embedding rows (row-major `[n, H]`) and a
    /// zero decoder bias, as transformers' `resize_token_embeddings` does for the tied head; returns their ids.
    pub fn add_words(&mut self, rows: &[f32]) -> Result<std::ops::Range<u32>> {
        let h = self.cfg.hidden_size;
        if rows.is_empty() || !rows.len().is_multiple_of(h) {
            return Err(Error::Field {
                file: "<add_words>".into(),
                field: "rows".into(),
                reason: format!("{} values are not whole rows of width {h}", rows.len()),
            });
        }
        let n = rows.len() / h;
        let dev = self.word.weight.val().device();
        let old = self.cfg.vocab_size;
        let new_rows = Tensor::<2>::from_data(TensorData::new(rows.to_vec(), [n, h]), &dev);
        let w = Tensor::cat(vec![self.word.weight.val(), new_rows], 0);
        // A concatenation is not a leaf of the autodiff graph: the new table starts a fresh one.
        self.word.weight = Param::from_tensor(w.detach());
        let b = Tensor::cat(vec![self.head.bias.val(), Tensor::zeros([n], &dev)], 0);
        self.head.bias = Param::from_tensor(b.detach());
        self.cfg.vocab_size = old + n;
        Ok(old as u32..(old + n) as u32)
    }

    /// Named weights in transformers' layout (`bert.` / `roberta.` prefix, `cls.predictions.` / `lm_head.`
    /// head, projections `[out, in]`) with their stored shapes; the tied decoder weight is not repeated.
    pub fn hf_tensors(&self) -> Vec<crate::export::Named> {
        let (base, head, head_norm, head_dense) = match self.cfg.family {
            Family::Bert => {
                ("bert.", "cls.predictions", "cls.predictions.transform.LayerNorm", "cls.predictions.transform.dense")
            }
            Family::Roberta => ("roberta.", "lm_head", "lm_head.layer_norm", "lm_head.dense"),
        };
        let mut out: Vec<crate::export::Named> = Vec::new();
        let vector = |out: &mut Vec<crate::export::Named>, name: String, t: Tensor<1>| {
            let n = t.dims()[0];
            out.push((name, vec![n], t.unsqueeze::<2>()));
        };
        let matrix = |out: &mut Vec<crate::export::Named>, name: String, t: Tensor<2>| {
            let d = t.dims().to_vec();
            out.push((name, d, t));
        };
        let linear = |out: &mut Vec<crate::export::Named>, p: String, l: &Linear| {
            matrix(out, format!("{p}.weight"), l.weight.val().transpose());
            if let Some(b) = &l.bias {
                let n = b.val().dims()[0];
                out.push((format!("{p}.bias"), vec![n], b.val().unsqueeze::<2>()));
            }
        };
        let norm = |out: &mut Vec<crate::export::Named>, p: String, n: &LayerNorm| {
            let g = n.gamma.val();
            let d = g.dims()[0];
            out.push((format!("{p}.weight"), vec![d], g.unsqueeze::<2>()));
            if let Some(b) = &n.beta {
                out.push((format!("{p}.bias"), vec![d], b.val().unsqueeze::<2>()));
            }
        };
        let e = format!("{base}embeddings");
        matrix(&mut out, format!("{e}.word_embeddings.weight"), self.word.weight.val());
        matrix(&mut out, format!("{e}.position_embeddings.weight"), self.position.weight.val());
        matrix(&mut out, format!("{e}.token_type_embeddings.weight"), self.token_type.weight.val());
        norm(&mut out, format!("{e}.LayerNorm"), &self.emb_norm);
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("{base}encoder.layer.{i}");
            linear(&mut out, format!("{p}.attention.self.query"), &l.q);
            linear(&mut out, format!("{p}.attention.self.key"), &l.k);
            linear(&mut out, format!("{p}.attention.self.value"), &l.v);
            linear(&mut out, format!("{p}.attention.output.dense"), &l.attn_out);
            norm(&mut out, format!("{p}.attention.output.LayerNorm"), &l.attn_norm);
            linear(&mut out, format!("{p}.intermediate.dense"), &l.inter);
            linear(&mut out, format!("{p}.output.dense"), &l.out);
            norm(&mut out, format!("{p}.output.LayerNorm"), &l.out_norm);
        }
        linear(&mut out, head_dense.to_string(), &self.head.dense);
        norm(&mut out, head_norm.to_string(), &self.head.norm);
        vector(&mut out, format!("{head}.bias"), self.head.bias.val());
        out
    }

    /// The word-embedding table `[V, H]` (also the MLM decoder's weight).
    pub fn word_embeddings(&self) -> Tensor<2> {
        self.word.weight.val()
    }
}
