//! FiT5 (Fusion-in-T5) re-ranker: T5 whose encoder exchanges information across the candidates of one
//! query through global attention on their `[CLS]` states, the templated input with the verbalised
//! first-stage score, and the two-way ("false"/"true") head. Spec: `mvre_fit5_tst.md` §2.
//!
//! Faithful to the reference code (OpenMatch/FiT5 at fcdb760): global layers after the last
//! `num_global_layers` encoder blocks, each computing `X + (X + MHA(RMSNorm(X)))` (the doubled residual
//! is the code's, kept for checkpoint parity) with no mask and no position bias, written back into token 0.

use burn::module::{Module, Param};
use burn::nn::{Linear, RmsNorm};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::source::SafetensorsSet;
use crate::t5::{Attention, T5, T5Config, Weights, init_norm};

/// The reference's most candidates per query (its `doc_size`); longer lists are re-ranked in chunks.
pub const MAX_CANDIDATES: usize = 100;

/// How a first-stage score becomes the integer written after `score:`:
/// `trunc((min(cap, s) − offset) / scale · 100)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeatureBins {
    /// Scores above this count as this (reference: 190).
    pub cap: f64,
    /// Score written as 0 (reference: 165).
    pub offset: f64,
    /// Score range mapped onto 0..100 (reference: 25).
    pub scale: f64,
    /// Clamp scores below `offset` to bin 0. The reference does not (it writes negative numbers); off by
    /// default for parity with the released checkpoint.
    pub clamp_low: bool,
}

impl Default for FeatureBins {
    fn default() -> Self {
        Self { cap: 190.0, offset: 165.0, scale: 25.0, clamp_low: false }
    }
}

impl FeatureBins {
    /// The bin of a first-stage score (Python's `int(x * 100)`: truncation toward zero).
    pub fn bin(&self, score: f64) -> i64 {
        let x = (score.min(self.cap) - self.offset) / self.scale;
        let b = (x * 100.0).trunc() as i64;
        if self.clamp_low { b.max(0) } else { b }
    }
}

/// One candidate passage of a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Document id (carried through to the run file).
    pub docid: String,
    /// Title (empty when the collection has none).
    #[serde(default)]
    pub title: String,
    /// Passage text.
    pub text: String,
    /// First-stage retrieval score (the FiT5 feature); `None` uses the stage-1 template.
    #[serde(default)]
    pub score: Option<f64>,
}

/// The first `n` characters of `s` (the reference slices Python strings: characters, not bytes).
fn chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// The reference's passage cleaning: `[SEP]` removed, runs of whitespace collapsed, 512 characters kept.
pub fn clean_passage(text: &str) -> String {
    let t = text.replace("[SEP]", " ");
    let joined = t.split_whitespace().collect::<Vec<_>>().join(" ");
    chars(&joined, 512).to_string()
}

/// The input string of one candidate: `[CLS] Query: q Title: t score: s Passage: d Relevant: ` (stage 2,
/// with a score) or without the `score:` slot (stage 1). The query is cut to 64 characters as in the
/// reference.
pub fn template(query: &str, c: &Candidate, bins: &FeatureBins) -> String {
    let q = chars(query, 64);
    let d = clean_passage(&c.text);
    match c.score {
        Some(s) => format!("[CLS] Query: {q} Title: {} score: {} Passage: {d} Relevant: ", c.title, bins.bin(s)),
        None => format!("[CLS] Query: {q} Title: {} Passage: {d} Relevant: ", c.title),
    }
}

/// What to do with a candidate whose input is longer than `max_seq_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverLong {
    /// Shorten the passage so the template's tail (`Relevant:` and `</s>`) survives (default).
    #[default]
    TruncatePassage,
    /// Cut the token sequence at `max_seq_len`, as the reference's tokenizer call does (checkpoint parity;
    /// the cue `Relevant:` may be lost).
    Reference,
    /// Refuse: the query fails with an error naming the document and its length.
    Error,
}

/// FiT5's settings beside the T5 ones (read from the same `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiT5Config {
    /// The backbone.
    pub t5: T5Config,
    /// Global attention across candidates on (the switch `--no-global` turns it off).
    pub use_global: bool,
    /// Global layers, after the last encoder blocks (reference: 3).
    pub num_global_layers: usize,
    /// Tokens per candidate, padding included (reference: 200).
    pub max_seq_len: usize,
    /// Vocabulary id of "▁false" (t5-base: 6136): row 0 of the head.
    pub false_token_id: usize,
    /// Vocabulary id of "▁true" (t5-base: 1176): row 1, the ranking score.
    pub true_token_id: usize,
    /// Feature verbalisation.
    pub bins: FeatureBins,
}

impl FiT5Config {
    /// Reads `config.json`: T5's fields plus `use_global`, `num_global_layers`, `max_seq_len`,
    /// `false_token_id`, `true_token_id` and `feature_bins` (each optional, reference values by default).
    pub fn from_json(file: &str, j: &Json) -> Result<Self> {
        let t5 = T5Config::from_json(file, j)?;
        let field = |name: &str, reason: String| Error::Field { file: file.into(), field: name.into(), reason };
        let int = |name: &str, default: usize| -> Result<usize> {
            match j.get(name) {
                None | Some(Json::Null) => Ok(default),
                Some(v) => {
                    v.as_u64().map(|v| v as usize).ok_or_else(|| field(name, format!("expected an integer, found {v}")))
                }
            }
        };
        let use_global = match j.get("use_global") {
            None | Some(Json::Null) => true,
            Some(v) => v.as_bool().ok_or_else(|| field("use_global", format!("expected true or false, found {v}")))?,
        };
        let bins = match j.get("feature_bins") {
            None | Some(Json::Null) => FeatureBins::default(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| field("feature_bins", e.to_string()))?,
        };
        let cfg = Self {
            num_global_layers: int("num_global_layers", 3)?,
            max_seq_len: int("max_seq_len", 200)?,
            false_token_id: int("false_token_id", 6136)?,
            true_token_id: int("true_token_id", 1176)?,
            use_global,
            bins,
            t5,
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Rejects inconsistent settings; names the field.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |name: &str, reason: String| Err(Error::Field { file: file.into(), field: name.into(), reason });
        self.t5.validate(file)?;
        if self.num_global_layers > self.t5.num_layers {
            return bad(
                "num_global_layers",
                format!("{} global layers but only {} encoder blocks", self.num_global_layers, self.t5.num_layers),
            );
        }
        if self.max_seq_len < 8 {
            return bad("max_seq_len", format!("{} tokens cannot hold the template", self.max_seq_len));
        }
        for (name, id) in [("false_token_id", self.false_token_id), ("true_token_id", self.true_token_id)] {
            if id >= self.t5.vocab_size {
                return bad(name, format!("{id} is outside the vocabulary of {}", self.t5.vocab_size));
            }
        }
        if !(self.bins.scale.is_finite() && self.bins.scale != 0.0) {
            return bad("feature_bins.scale", format!("{} is not a usable scale", self.bins.scale));
        }
        Ok(())
    }

    /// The `config.json` FiT5 writes (T5's fields and FiT5's).
    pub fn to_json(&self) -> Json {
        let t = &self.t5;
        serde_json::json!({
            "architectures": ["FiT5"],
            "model_type": "t5",
            "vocab_size": t.vocab_size,
            "d_model": t.d_model,
            "d_kv": t.d_kv,
            "d_ff": t.d_ff,
            "num_layers": t.num_layers,
            "num_decoder_layers": t.num_decoder_layers,
            "num_heads": t.num_heads,
            "relative_attention_num_buckets": t.relative_attention_num_buckets,
            "relative_attention_max_distance": t.relative_attention_max_distance,
            "layer_norm_epsilon": t.layer_norm_epsilon,
            "feed_forward_proj": if t.gated_gelu { "gated-gelu" } else { "relu" },
            "tie_word_embeddings": t.tie_word_embeddings,
            "scale_decoder_outputs": t.scale_decoder_outputs,
            "decoder_start_token_id": 0,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "use_global": self.use_global,
            "num_global_layers": self.num_global_layers,
            "max_seq_len": self.max_seq_len,
            "false_token_id": self.false_token_id,
            "true_token_id": self.true_token_id,
            "feature_bins": self.bins,
        })
    }
}

/// One global layer: T5 self-attention (no relative bias, no mask) over the candidates' `[CLS]` states.
#[derive(Module, Debug)]
pub struct GlobalLayer {
    norm: RmsNorm,
    attn: Attention,
}

impl GlobalLayer {
    /// `x: [N, d]` → `x + (x + MHA(RMSNorm(x)))`.
    pub fn apply(&self, x: Tensor<2>) -> Tensor<2> {
        let [n, d] = x.dims();
        let x3 = x.clone().reshape([1, n, d]);
        let h = self.norm.forward(x3);
        let dev = x.device();
        let zero = Tensor::zeros([1, self.attn.heads, n, n], &dev);
        let att = self.attn.forward(h.clone(), h, zero).reshape([n, d]);
        x.clone() + (x + att)
    }

    /// Zeroes the output projection (the layer then maps `X` to `2X`; a test of the residual algebra).
    pub fn zero_output(mut self) -> Self {
        let w = self.attn.o.weight.val();
        self.attn.o.weight = Param::from_tensor(w.zeros_like());
        self
    }
}

/// Token ids and masks of one query's candidates, `[N, max_seq_len]` each.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Token ids, padded with 0.
    pub ids: Vec<Vec<u32>>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<Vec<u32>>,
    /// Candidates whose passage was shortened ([`OverLong::TruncatePassage`]) or cut ([`OverLong::Reference`]).
    pub truncated: usize,
}

/// Why a candidate list could not be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// The tokenizer failed.
    #[error("document '{docid}': tokenizer: {reason}")]
    Tokenizer {
        /// Candidate at fault.
        docid: String,
        /// Tokenizer message.
        reason: String,
    },
    /// The candidate is longer than the model takes and the policy is [`OverLong::Error`], or even an
    /// empty passage does not fit.
    #[error("document '{docid}': {tokens} tokens, the model takes {max} ({why})")]
    TooLong {
        /// Candidate at fault.
        docid: String,
        /// Its length in tokens.
        tokens: usize,
        /// `max_seq_len`.
        max: usize,
        /// The policy or the cause.
        why: String,
    },
    /// The first token is not `[CLS]`: the tokenizer lacks the added token.
    #[error("tokenizer has no '[CLS]' token (add it as a special token, as the reference does)")]
    NoCls,
}

fn tokenize(tok: &tokenizers::Tokenizer, docid: &str, s: &str) -> std::result::Result<Vec<u32>, EncodeError> {
    tok.encode(s, true)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| EncodeError::Tokenizer { docid: docid.into(), reason: e.to_string() })
}

/// Tokenizes one query's candidates as FiT5 reads them: the template, `</s>` appended by the tokenizer's
/// post-processor, padded with 0 to `max_len`; over-long inputs per `policy`.
pub fn encode_candidates(
    tok: &tokenizers::Tokenizer,
    query: &str,
    cands: &[Candidate],
    bins: &FeatureBins,
    max_len: usize,
    policy: OverLong,
) -> std::result::Result<Encoded, EncodeError> {
    let cls = tok.token_to_id("[CLS]").ok_or(EncodeError::NoCls)?;
    let mut out = Encoded { ids: Vec::with_capacity(cands.len()), mask: Vec::with_capacity(cands.len()), truncated: 0 };
    for c in cands {
        let mut ids = tokenize(tok, &c.docid, &template(query, c, bins))?;
        if ids.len() > max_len {
            let tokens = ids.len();
            match policy {
                OverLong::Error => {
                    return Err(EncodeError::TooLong {
                        docid: c.docid.clone(),
                        tokens,
                        max: max_len,
                        why: "over-long inputs are refused (--overlong error)".into(),
                    });
                }
                OverLong::Reference => {
                    // The tokenizer's truncation keeps the closing `</s>`.
                    let eos = ids[tokens - 1];
                    ids.truncate(max_len - 1);
                    ids.push(eos);
                }
                OverLong::TruncatePassage => {
                    ids = shorten_passage(tok, query, c, bins, max_len, tokens)?;
                }
            }
            out.truncated += 1;
        }
        if ids.first() != Some(&cls) {
            return Err(EncodeError::NoCls);
        }
        let n = ids.len();
        let mut mask = vec![1u32; n];
        ids.resize(max_len, 0);
        mask.resize(max_len, 0);
        out.ids.push(ids);
        out.mask.push(mask);
    }
    Ok(out)
}

/// Re-tokenizes with the passage cut at a token boundary so the whole input fits.
fn shorten_passage(
    tok: &tokenizers::Tokenizer,
    query: &str,
    c: &Candidate,
    bins: &FeatureBins,
    max_len: usize,
    tokens: usize,
) -> std::result::Result<Vec<u32>, EncodeError> {
    let text = clean_passage(&c.text);
    let empty = Candidate { text: String::new(), ..c.clone() };
    let fixed = tokenize(tok, &c.docid, &template(query, &empty, bins))?.len();
    if fixed > max_len {
        return Err(EncodeError::TooLong {
            docid: c.docid.clone(),
            tokens,
            max: max_len,
            why: format!("query, title and template alone take {fixed} tokens"),
        });
    }
    let enc = tok
        .encode(text.as_str(), false)
        .map_err(|e| EncodeError::Tokenizer { docid: c.docid.clone(), reason: e.to_string() })?;
    let offsets = enc.get_offsets();
    let mut keep = (max_len - fixed).min(offsets.len());
    loop {
        let end = if keep == 0 { 0 } else { offsets[keep - 1].1 };
        let cut = Candidate { text: text[..end.min(text.len())].to_string(), ..c.clone() };
        let ids = tokenize(tok, &c.docid, &template(query, &cut, bins))?;
        // Re-tokenizing a cut word can add a token; step back until it fits.
        if ids.len() <= max_len || keep == 0 {
            return Ok(ids);
        }
        keep -= 1;
    }
}

/// The FiT5 model: T5, the global layers and the two-row head.
#[derive(Module, Debug)]
pub struct FiT5 {
    t5: T5,
    global: Vec<GlobalLayer>,
    /// `[d, 2]`: column 0 = "false", column 1 = "true".
    head: Linear,
    #[module(skip)]
    cfg: FiT5Config,
}

impl FiT5 {
    /// A freshly initialised model (T5's init; global layers likewise; the head N(0, d^-½)).
    pub fn new(cfg: &FiT5Config, dev: &Device) -> Result<Self> {
        cfg.validate("<config>")?;
        // FiT5 scores with its own head: the backbone keeps no LM head (see `load`).
        let t5 = T5::new(&cfg.t5, dev)?.without_lm_head();
        let (global, head) = Self::fresh_parts(cfg, dev);
        Ok(Self { t5, global, head, cfg: cfg.clone() })
    }

    fn fresh_parts(cfg: &FiT5Config, dev: &Device) -> (Vec<GlobalLayer>, Linear) {
        let global = (0..cfg.num_global_layers)
            .map(|_| GlobalLayer {
                norm: init_norm(cfg.t5.d_model, cfg.t5.layer_norm_epsilon, dev),
                attn: Attention::new(&cfg.t5, false, dev),
            })
            .collect();
        let std = (cfg.t5.d_model as f64).powf(-0.5);
        (global, crate::t5::init_linear(cfg.t5.d_model, 2, std, true, dev))
    }

    /// FiT5 on a pre-trained T5 (stage 1's start: t5-base): fresh global layers and head. `cfg.t5` must
    /// be the backbone's configuration. An untied LM head of `t5` is dropped (FiT5 never uses it).
    pub fn from_t5(t5: T5, cfg: &FiT5Config, dev: &Device) -> Result<Self> {
        if t5.config() != &cfg.t5 {
            return Err(Error::Field {
                file: "<config>".into(),
                field: "t5".into(),
                reason: "the FiT5 configuration does not describe this T5 backbone".into(),
            });
        }
        cfg.validate("<config>")?;
        let (global, head) = Self::fresh_parts(cfg, dev);
        Ok(Self { t5: t5.without_lm_head(), global, head, cfg: cfg.clone() })
    }

    /// Loads a FiT5 state dict (keys `t5.…`, `t5.encoder.project_global.{k}.…`, `dense.{weight,bias}`;
    /// a DDP `module.` prefix is accepted). `dense` may hold the full vocabulary (the reference's
    /// `Linear(d, 32128)`: rows `false_token_id` and `true_token_id` are taken) or just those two rows.
    /// The backbone is read as HF's `T5Model` (the reference's): T5's LM head is not part of FiT5's forward,
    /// so `t5.lm_head.weight` is neither needed nor read, also for an untied (v1.1,
    /// `tie_word_embeddings: false`) backbone; `scripts/convert_fit5.py` drops it.
    pub fn load(set: &SafetensorsSet, file: &str, cfg: &FiT5Config, dev: &Device) -> Result<Self> {
        cfg.validate(file)?;
        let root = if set.index.keys().any(|k| k.starts_with("module.")) { "module." } else { "" };
        let t5w = Weights { set, file: file.into(), prefix: format!("{root}t5."), dev: dev.clone() };
        let t5 = T5::load_backbone(&t5w, &cfg.t5)?;
        let (d, eps) = (cfg.t5.d_model, cfg.t5.layer_norm_epsilon);
        let mut global = Vec::with_capacity(cfg.num_global_layers);
        for k in 0..cfg.num_global_layers {
            let p = format!("encoder.project_global.{k}");
            global.push(GlobalLayer {
                norm: t5w.norm(&format!("{p}.layer_norm.weight"), d, eps)?,
                attn: Attention::load(&t5w, &format!("{p}.SelfAttention"), &cfg.t5, false)?,
            });
        }
        let w = Weights { set, file: file.into(), prefix: root.into(), dev: dev.clone() };
        let shape = set.index.get(&format!("{root}dense.weight")).map(|e| e.shape.clone());
        let head = match shape.as_deref() {
            Some([2, dd]) if *dd == d => w.linear("dense.weight", 2, d, Some("dense.bias"))?,
            Some([rows, dd]) if *dd == d => {
                let all = w.get("dense.weight", &[*rows, d])?;
                let bias = w.get("dense.bias", &[*rows])?;
                for (name, id) in [("false_token_id", cfg.false_token_id), ("true_token_id", cfg.true_token_id)] {
                    if id >= *rows {
                        return Err(Error::Field {
                            file: file.into(),
                            field: name.into(),
                            reason: format!("{id} is outside dense.weight's {rows} rows"),
                        });
                    }
                }
                let (f, t) = (cfg.false_token_id, cfg.true_token_id);
                let mut wt = Vec::with_capacity(2 * d);
                wt.extend_from_slice(&all[f * d..(f + 1) * d]);
                wt.extend_from_slice(&all[t * d..(t + 1) * d]);
                let wt = Tensor::<2>::from_data(TensorData::new(wt, [2, d]), dev).transpose();
                let b = Tensor::<1>::from_data(TensorData::new(vec![bias[f], bias[t]], [2]), dev);
                Linear { weight: Param::from_tensor(wt), bias: Some(Param::from_tensor(b)) }
            }
            Some(other) => {
                return Err(Error::Shape {
                    file: file.into(),
                    tensor: format!("{root}dense.weight"),
                    expected: vec![2, d],
                    found: other.to_vec(),
                });
            }
            None => return Err(Error::MissingTensor { file: file.into(), tensor: format!("{root}dense.weight") }),
        };
        Ok(Self { t5, global, head, cfg: cfg.clone() })
    }

    /// Opens a FiT5 folder: `config.json` and `model.safetensors` (or a sharded index).
    #[cfg(not(target_family = "wasm"))]
    pub fn open(dir: &std::path::Path, dev: &Device) -> Result<Self> {
        let (name, j) = crate::t5::read_config(dir)?;
        let cfg = FiT5Config::from_json(&name, &j)?;
        let set = SafetensorsSet::open_dir(dir)?;
        Self::load(&set, &dir.join("model.safetensors").display().to_string(), &cfg, dev)
    }

    /// The configuration.
    pub fn config(&self) -> &FiT5Config {
        &self.cfg
    }

    /// Turns global attention on or off (off: every candidate is scored on its own, as monoT5 would).
    pub fn set_global(&mut self, on: bool) {
        self.cfg.use_global = on;
    }

    /// The global layers (for tests of their algebra).
    pub fn global_layers(&self) -> &[GlobalLayer] {
        &self.global
    }

    /// Logits `[N, 2]` ("false", "true") of one query's `N` candidates, `ids`/`mask`: `[N, T]`.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let layers = self.cfg.t5.num_layers;
        let first = layers - self.global.len();
        let on = self.cfg.use_global && !self.global.is_empty();
        let mut hook = |i: usize, h: Tensor<3>| -> Tensor<3> {
            if !on || i < first {
                return h;
            }
            let [n, t, d] = h.dims();
            let cls = h.clone().slice([0..n, 0..1, 0..d]).reshape([n, d]);
            let mixed = self.global[i - first].apply(cls).reshape([n, 1, d]);
            if t == 1 { mixed } else { Tensor::cat(vec![mixed, h.slice([0..n, 1..t, 0..d])], 1) }
        };
        let enc = self.t5.encode_with(ids, mask.clone(), &mut hook);
        let dec = self.t5.decode_first(enc, mask);
        self.head.forward(dec)
    }

    /// Mean two-way cross-entropy of the candidates' (false, true) logits against 0/1 labels `[N]`.
    pub fn loss(&self, ids: Tensor<2, Int>, mask: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
        let z = self.forward(ids, mask);
        let n = labels.dims()[0];
        let logp = burn::tensor::activation::log_softmax(z, 1);
        logp.gather(1, labels.reshape([n, 1])).mean().neg()
    }

    /// Named weights in the reference's layout (`t5.…`, `t5.encoder.project_global.{k}.…`, `dense.…`
    /// with the two rows only).
    pub fn hf_tensors(&self) -> Vec<(String, Tensor<2>)> {
        let mut out = Vec::new();
        self.t5.hf_tensors("t5.", &mut out);
        for (k, g) in self.global.iter().enumerate() {
            let p = format!("t5.encoder.project_global.{k}");
            out.push((format!("{p}.layer_norm.weight"), g.norm.gamma.val().unsqueeze::<2>()));
            for (n, l) in [("q", &g.attn.q), ("k", &g.attn.k), ("v", &g.attn.v), ("o", &g.attn.o)] {
                out.push((format!("{p}.SelfAttention.{n}.weight"), l.weight.val().transpose()));
            }
        }
        out.push(("dense.weight".into(), self.head.weight.val().transpose()));
        if let Some(b) = &self.head.bias {
            out.push(("dense.bias".into(), b.val().unsqueeze::<2>()));
        }
        out
    }

    /// Writes the folder `dir` with `config.json`, `model.safetensors` (f32) and `tokenizer.json`, as one unit
    /// ([`crate::export::write_files`]: an existing non-empty `dir` is replaced only with `force`).
    #[cfg(not(target_family = "wasm"))]
    pub fn save(&self, dir: &std::path::Path, tokenizer_json: &[u8], force: bool) -> Result<()> {
        let named = self
            .hf_tensors()
            .into_iter()
            .map(|(name, t)| {
                let dims = t.dims();
                // Vectors were lifted to [1, n] for a uniform list; they are stored 1-D as in PyTorch.
                let vector = name.ends_with("layer_norm.weight") || name == "dense.bias";
                let shape = if vector { vec![dims[1]] } else { dims.to_vec() };
                (name, shape, t)
            })
            .collect();
        let cfg = serde_json::to_vec_pretty(&self.cfg.to_json())
            .map_err(|e| Error::Json { file: "config.json".into(), reason: e.to_string() })?;
        crate::export::write_model_dir(dir, named, &[("tokenizer.json", tokenizer_json), ("config.json", &cfg)], force)
    }
}
