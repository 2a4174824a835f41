//! Model sources: one entry point ([`ModelFiles::open`]) for GGUF files and HF folders, giving the
//! configuration, the tokenizer and a weight source that hands out tensors by their HF names.

use std::collections::HashMap;

use chorus_core::{Architecture, ModelConfig};
use half::{bf16, f16};
use serde_json::Value as Json;

use crate::bytes::FileBytes;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::tokenizer::TextTokenizer;

/// Where the weights come from.
pub enum WeightSource {
    /// A GGUF file (tensors possibly quantized; decoded on load).
    Gguf(GgufFile),
    /// HF safetensors, one or more shards.
    Safetensors(SafetensorsSet),
}

/// A tensor in its stored form: a shared handle on the file's bytes and where the tensor lies in them.
#[derive(Clone)]
pub struct RawTensor {
    /// Name as stored in the file (for messages).
    pub name: String,
    /// The whole file (memory-mapped natively).
    pub bytes: FileBytes,
    /// The tensor's bytes within `bytes`.
    pub range: std::ops::Range<usize>,
    /// Stored element or block type.
    pub ty: chorus_core::GgmlType,
    /// Row-major shape.
    pub shape: Vec<usize>,
}

impl RawTensor {
    /// The stored bytes.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.range.clone()]
    }
}

/// One stored tensor, for listings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredTensor {
    /// Name as stored in the file.
    pub name: String,
    /// Storage type ("Q4_K", "F16", "BF16", …).
    pub dtype: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
}

/// A model on disk (or in memory): configuration, tokenizer, weights.
pub struct ModelFiles {
    /// Path or name used in messages.
    pub path: String,
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Tokenizer, special ids and chat template.
    pub tokenizer: TextTokenizer,
    /// Weights by HF name.
    pub weights: WeightSource,
}

impl ModelFiles {
    /// Opens a `.gguf` file or an HF folder (`config.json` + safetensors + `tokenizer.json`).
    #[cfg(not(target_family = "wasm"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let name = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|err| Error::Io { path: name.clone(), err })?;
        if meta.is_dir() { Self::open_hf_dir(path) } else { Self::from_gguf(GgufFile::open(path)?) }
    }

    /// Builds from a parsed GGUF file: config from `{arch}.*` metadata, tokenizer from `tokenizer.ggml.*`.
    pub fn from_gguf(g: GgufFile) -> Result<Self> {
        let config = gguf_config(&g)?;
        let tokenizer = TextTokenizer::from_gguf(&g)?;
        let files = Self { path: g.name().to_string(), config, tokenizer, weights: WeightSource::Gguf(g) };
        files.check_shapes()?;
        Ok(files)
    }

    /// Opens an HF folder.
    #[cfg(not(target_family = "wasm"))]
    pub fn open_hf_dir(dir: &std::path::Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg_name = cfg_path.display().to_string();
        let cfg_bytes = std::fs::read(&cfg_path).map_err(|err| Error::Io { path: cfg_name.clone(), err })?;
        let config = hf_config(&cfg_name, &cfg_bytes)?;
        let tokenizer = TextTokenizer::from_hf_dir(dir)?;
        let set = SafetensorsSet::open_dir(dir)?;
        let files =
            Self { path: dir.display().to_string(), config, tokenizer, weights: WeightSource::Safetensors(set) };
        files.check_shapes()?;
        Ok(files)
    }

    /// Builds from in-memory HF parts (the browser path): config.json, tokenizer.json, safetensors shards.
    pub fn from_hf_parts(
        name: &str,
        config_json: &[u8],
        tokenizer_json: &[u8],
        tokenizer_config: Option<Json>,
        shards: Vec<(String, FileBytes)>,
    ) -> Result<Self> {
        let config = hf_config(&format!("{name}/config.json"), config_json)?;
        let cfg_json: Option<Json> = serde_json::from_slice(config_json).ok();
        let tokenizer = TextTokenizer::from_hf_parts(
            &format!("{name}/tokenizer.json"),
            tokenizer_json,
            tokenizer_config,
            cfg_json,
            None,
        )?;
        let set = SafetensorsSet::from_shards(shards)?;
        let files = Self { path: name.to_string(), config, tokenizer, weights: WeightSource::Safetensors(set) };
        files.check_shapes()?;
        Ok(files)
    }

    /// Decodes one tensor, by HF name, to f32 with its row-major shape. `None` when absent.
    ///
    /// Llama GGUF files store Q and K rows permuted for interleaved RoPE; they are put back in HF's
    /// half-split order here so the model code has one RoPE convention.
    pub fn tensor(&self, hf_name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        match &self.weights {
            WeightSource::Gguf(g) => {
                let gname = gguf_name(hf_name);
                if g.tensor(&gname).is_none() {
                    return Ok(None);
                }
                let (mut v, shape) = g.dequantize(&gname)?;
                if self.config.architecture == Architecture::Llama {
                    let heads = if hf_name.ends_with("q_proj.weight") || hf_name.ends_with("q_proj.bias") {
                        Some(self.config.num_heads)
                    } else if hf_name.ends_with("k_proj.weight") || hf_name.ends_with("k_proj.bias") {
                        Some(self.config.num_kv_heads)
                    } else {
                        None
                    };
                    if let Some(h) = heads {
                        let cols = if shape.len() == 2 { shape[1] } else { 1 };
                        v = unpermute_rows(&v, h, shape[0] / h, cols);
                    }
                }
                Ok(Some((v, shape)))
            }
            WeightSource::Safetensors(s) => s.get(hf_name),
        }
    }

    /// A tensor as stored, by HF name: the file's bytes, the tensor's byte range, its type and row-major
    /// shape, with no decoding or copy. `None` when absent; a GGUF type Chorus cannot decode is an error
    /// naming the tensor. Llama GGUF Q/K rows stay in the file's (interleaved-RoPE) order; callers that
    /// use this form must apply RoPE to adjacent pairs ([`Self::interleaved_rope`]).
    pub fn raw(&self, hf_name: &str) -> Result<Option<RawTensor>> {
        match &self.weights {
            WeightSource::Gguf(g) => {
                let Some(t) = g.tensor(&gguf_name(hf_name)) else { return Ok(None) };
                let ty = t.ggml_type().ok_or_else(|| Error::Dtype {
                    file: self.path.clone(),
                    tensor: t.name.clone(),
                    dtype: t.type_name().to_string(),
                })?;
                let (bytes, range) = g.tensor_range(t)?;
                Ok(Some(RawTensor { name: t.name.clone(), bytes, range, ty, shape: t.shape() }))
            }
            WeightSource::Safetensors(s) => {
                let Some(e) = s.index.get(hf_name) else { return Ok(None) };
                let ty = match e.dtype {
                    StDtype::F32 => chorus_core::GgmlType::F32,
                    StDtype::F16 => chorus_core::GgmlType::F16,
                    StDtype::BF16 => chorus_core::GgmlType::BF16,
                };
                let bytes = s.shards[e.shard].1.clone();
                Ok(Some(RawTensor {
                    name: hf_name.to_string(),
                    bytes,
                    range: e.start..e.end,
                    ty,
                    shape: e.shape.clone(),
                }))
            }
        }
    }

    /// Whether [`Self::raw`] hands out Q/K rows permuted for RoPE on adjacent pairs (llama.cpp's "NORM"
    /// rope: Llama-architecture GGUF files), rather than HF's half-split layout.
    pub fn interleaved_rope(&self) -> bool {
        matches!(self.weights, WeightSource::Gguf(_)) && self.config.architecture == Architecture::Llama
    }

    /// Lets a tensor's pages leave the resident set once read (by HF name; see [`FileBytes::release`]).
    pub fn release(&self, hf_name: &str) {
        match &self.weights {
            WeightSource::Gguf(g) => g.release(&gguf_name(hf_name)),
            WeightSource::Safetensors(s) => s.release(hf_name),
        }
    }

    /// Whether a tensor exists, by HF name.
    pub fn has(&self, hf_name: &str) -> bool {
        match &self.weights {
            WeightSource::Gguf(g) => g.tensor(&gguf_name(hf_name)).is_some(),
            WeightSource::Safetensors(s) => s.index.contains_key(hf_name),
        }
    }

    /// A decoded tensor that must exist and have `shape`.
    pub fn require(&self, hf_name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (v, found) = self.tensor(hf_name)?.ok_or_else(|| self.missing(hf_name))?;
        if found != shape {
            return Err(self.shape_err(hf_name, shape, found));
        }
        Ok(v)
    }

    fn stored_name(&self, hf_name: &str) -> String {
        match &self.weights {
            WeightSource::Gguf(_) => gguf_name(hf_name),
            WeightSource::Safetensors(_) => hf_name.to_string(),
        }
    }

    fn missing(&self, hf_name: &str) -> Error {
        Error::MissingTensor { file: self.path.clone(), tensor: self.stored_name(hf_name) }
    }

    fn shape_err(&self, hf_name: &str, expected: &[usize], found: Vec<usize>) -> Error {
        Error::Shape { file: self.path.clone(), tensor: self.stored_name(hf_name), expected: expected.to_vec(), found }
    }

    /// Every tensor the architecture needs, with the shape the config implies.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let (h, q, kv, f) = (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        let mut out = vec![
            ("model.embed_tokens.weight".to_string(), vec![c.vocab_size, h]),
            ("model.norm.weight".into(), vec![h]),
        ];
        if !c.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![c.vocab_size, h]));
        }
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
            out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
            if c.attention_bias {
                out.push((format!("{p}.self_attn.q_proj.bias"), vec![q]));
                out.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
                out.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
            }
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![f, h]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![f, h]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![h, f]));
        }
        out
    }

    /// Checks presence and shape of every needed tensor without decoding anything.
    fn check_shapes(&self) -> Result<()> {
        self.config.validate().map_err(|err| {
            let err = match (err, &self.weights) {
                // Name the GGUF key the value came from, not only its HF name.
                (chorus_core::Error::Config { field, reason }, WeightSource::Gguf(g)) => {
                    let arch = g.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("?");
                    let key = gguf_config_key(&field).map(|k| format!("metadata '{arch}.{k}' ({field})"));
                    chorus_core::Error::Config { field: key.unwrap_or(field), reason }
                }
                (err, _) => err,
            };
            Error::Core { file: self.path.clone(), err }
        })?;
        // A layer count above the layers the file holds is named as such (not as a missing tensor).
        let last = format!("model.layers.{}.input_layernorm.weight", self.config.num_layers - 1);
        let has_last = match &self.weights {
            WeightSource::Gguf(g) => g.tensor(&gguf_name(&last)).is_some(),
            WeightSource::Safetensors(s) => s.index.contains_key(&last),
        };
        if !has_last {
            let field = match self.weights {
                WeightSource::Gguf(_) => "block_count",
                WeightSource::Safetensors(_) => "num_hidden_layers",
            };
            return Err(Error::Core {
                file: self.path.clone(),
                err: chorus_core::Error::Config {
                    field: field.into(),
                    reason: format!(
                        "{} layers, but the file has no tensor {}",
                        self.config.num_layers,
                        self.stored_name(&last)
                    ),
                },
            });
        }
        for (name, shape) in self.expected_tensors() {
            let found = match &self.weights {
                WeightSource::Gguf(g) => g.tensor(&gguf_name(&name)).map(|t| t.shape()),
                WeightSource::Safetensors(s) => s.index.get(&name).map(|e| e.shape.clone()),
            }
            .ok_or_else(|| self.missing(&name))?;
            if found != shape {
                return Err(self.shape_err(&name, &shape, found));
            }
            if let WeightSource::Gguf(g) = &self.weights
                && let Some(t) = g.tensor(&gguf_name(&name))
                && t.ggml_type().is_none()
            {
                return Err(Error::Dtype {
                    file: self.path.clone(),
                    tensor: t.name.clone(),
                    dtype: t.type_name().into(),
                });
            }
        }
        Ok(())
    }

    /// All stored tensors with their storage types, in file order.
    pub fn stored_tensors(&self) -> Vec<StoredTensor> {
        match &self.weights {
            WeightSource::Gguf(g) => g
                .tensors
                .iter()
                .map(|t| StoredTensor { name: t.name.clone(), dtype: t.type_name().into(), shape: t.shape() })
                .collect(),
            WeightSource::Safetensors(s) => {
                let mut v: Vec<_> = s
                    .index
                    .iter()
                    .map(|(n, e)| StoredTensor {
                        name: n.clone(),
                        dtype: format!("{:?}", e.dtype),
                        shape: e.shape.clone(),
                    })
                    .collect();
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v
            }
        }
    }
}

/// Maps an HF tensor name to its GGUF name (llama.cpp's naming).
pub fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    if let Some(rest) = hf.strip_prefix("model.layers.")
        && let Some((i, tail)) = rest.split_once('.')
    {
        let t = match tail {
            "input_layernorm.weight" => "attn_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.q_proj.bias" => "attn_q.bias",
            "self_attn.k_proj.bias" => "attn_k.bias",
            "self_attn.v_proj.bias" => "attn_v.bias",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            other => other,
        };
        return format!("blk.{i}.{t}");
    }
    hf.to_string()
}

/// Undoes llama.cpp's Q/K row permutation: GGUF row (head, 2i + j) holds HF row (head, j·d/2 + i).
fn unpermute_rows(v: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    let half = head_dim / 2;
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_dim + 2 * i + j) * cols;
                let dst = (h * head_dim + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&v[src..src + cols]);
            }
        }
    }
    out
}

/// The `{arch}.` metadata key that a [`ModelConfig`] field is read from.
fn gguf_config_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "hidden_size" => "embedding_length",
        "intermediate_size" => "feed_forward_length",
        "num_layers" => "block_count",
        "num_heads" => "attention.head_count",
        "num_kv_heads" => "attention.head_count_kv",
        "head_dim" => "attention.key_length",
        "max_position_embeddings" => "context_length",
        _ => return None,
    })
}

fn gguf_config(g: &GgufFile) -> Result<ModelConfig> {
    let arch_name = g.req_str("general.architecture")?;
    let architecture = Architecture::parse(arch_name)
        .ok_or_else(|| Error::UnknownArchitecture { file: g.name().to_string(), name: arch_name.to_string() })?;
    let k = |s: &str| format!("{arch_name}.{s}");
    let u = |s: &str| g.req_u64(&k(s)).map(|v| v as usize);
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let kv = g.get(&k("attention.head_count_kv")).and_then(|v| v.as_u64()).map(|v| v as usize).unwrap_or(heads);
    let head_dim = match g.get(&k("attention.key_length")).and_then(|v| v.as_u64()) {
        Some(d) => d as usize,
        None => hidden.checked_div(heads).unwrap_or(0),
    };
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor { file: g.name().to_string(), tensor: "token_embd.weight".into() })?;
    let vocab_size = embd.shape()[0];
    Ok(ModelConfig {
        architecture,
        vocab_size,
        hidden_size: hidden,
        intermediate_size: u("feed_forward_length")?,
        num_layers: u("block_count")?,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim,
        rope_theta: g.get(&k("rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(10_000.0) as f32,
        rms_norm_eps: g.req_f64(&k("attention.layer_norm_rms_epsilon"))? as f32,
        max_position_embeddings: u("context_length")?,
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        attention_bias: g.tensor("blk.0.attn_q.bias").is_some(),
    })
}

/// Parses an HF `config.json` into a [`ModelConfig`].
pub fn hf_config(file: &str, bytes: &[u8]) -> Result<ModelConfig> {
    let j: Json =
        serde_json::from_slice(bytes).map_err(|e| Error::Json { file: file.to_string(), reason: e.to_string() })?;
    let ferr =
        |field: &str, reason: &str| Error::Field { file: file.to_string(), field: field.into(), reason: reason.into() };
    let arch_name = j
        .get("model_type")
        .and_then(|v| v.as_str())
        .or_else(|| j.get("architectures").and_then(|a| a.get(0)).and_then(|v| v.as_str()))
        .ok_or_else(|| ferr("model_type", "missing"))?;
    let architecture = Architecture::parse(arch_name)
        .ok_or_else(|| Error::UnknownArchitecture { file: file.to_string(), name: arch_name.to_string() })?;
    let u = |key: &str| -> Result<usize> {
        j.get(key)
            .ok_or_else(|| ferr(key, "missing"))?
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| ferr(key, "expected an unsigned integer"))
    };
    let f = |key: &str, default: f64| -> Result<f32> {
        match j.get(key) {
            None | Some(Json::Null) => Ok(default as f32),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| ferr(key, "expected a number")),
        }
    };
    let hidden = u("hidden_size")?;
    let heads = u("num_attention_heads")?;
    let kv = if j.get("num_key_value_heads").is_some_and(|v| !v.is_null()) { u("num_key_value_heads")? } else { heads };
    // A zero head count yields head_dim 0, which ModelConfig::validate reports by name.
    let head_dim = if j.get("head_dim").is_some_and(|v| !v.is_null()) {
        u("head_dim")?
    } else {
        hidden.checked_div(heads).unwrap_or(0)
    };
    Ok(ModelConfig {
        architecture,
        vocab_size: u("vocab_size")?,
        hidden_size: hidden,
        intermediate_size: u("intermediate_size")?,
        num_layers: u("num_hidden_layers")?,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim,
        rope_theta: f("rope_theta", 10_000.0)?,
        rms_norm_eps: f("rms_norm_eps", 1e-6)?,
        max_position_embeddings: u("max_position_embeddings")?,
        tie_word_embeddings: j.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false),
        attention_bias: match architecture {
            Architecture::Qwen2 => true,
            Architecture::Llama => j.get("attention_bias").and_then(|v| v.as_bool()).unwrap_or(false),
        },
    })
}

/// Stored element types of safetensors that Chorus decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StDtype {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
}

/// Where one tensor lives in a set of shards.
#[derive(Debug, Clone)]
pub struct StEntry {
    shard: usize,
    /// Element type.
    pub dtype: StDtype,
    /// Row-major shape.
    pub shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// One or more memory-mapped safetensors shards with a name index.
pub struct SafetensorsSet {
    shards: Vec<(String, FileBytes)>,
    /// Tensor name → location.
    pub index: HashMap<String, StEntry>,
}

impl SafetensorsSet {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    #[cfg(not(target_family = "wasm"))]
    pub fn open_dir(dir: &std::path::Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let names: Vec<String> = if index.exists() {
            let iname = index.display().to_string();
            let b = std::fs::read(&index).map_err(|err| Error::Io { path: iname.clone(), err })?;
            let j: Json =
                serde_json::from_slice(&b).map_err(|e| Error::Json { file: iname.clone(), reason: e.to_string() })?;
            let map = j.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Field {
                file: iname.clone(),
                field: "weight_map".into(),
                reason: "missing or not an object".into(),
            })?;
            let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
            files.sort();
            files.dedup();
            for f in &files {
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(Error::Field {
                        file: iname,
                        field: "weight_map".into(),
                        reason: format!("shard name '{f}' is not a plain file name"),
                    });
                }
            }
            files
        } else if single.exists() {
            vec!["model.safetensors".into()]
        } else {
            return Err(Error::Safetensors {
                file: dir.display().to_string(),
                reason: "no model.safetensors or model.safetensors.index.json in the folder".into(),
            });
        };
        let mut shards = Vec::new();
        for n in names {
            let p = dir.join(&n);
            shards.push((p.display().to_string(), FileBytes::open(&p)?));
        }
        Self::from_shards(shards)
    }

    /// Indexes shards already in memory.
    pub fn from_shards(shards: Vec<(String, FileBytes)>) -> Result<Self> {
        let mut index = HashMap::new();
        for (si, (name, bytes)) in shards.iter().enumerate() {
            let serr = |reason: String| Error::Safetensors { file: name.clone(), reason };
            let (header_len, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| serr(e.to_string()))?;
            let base = 8 + header_len;
            for (tname, info) in meta.tensors() {
                let dtype = match info.dtype {
                    safetensors::Dtype::F32 => StDtype::F32,
                    safetensors::Dtype::F16 => StDtype::F16,
                    safetensors::Dtype::BF16 => StDtype::BF16,
                    // Integer tensors (position ids) are not weights; they are skipped, not rejected.
                    _ => continue,
                };
                let (s, e) = info.data_offsets;
                let width = if dtype == StDtype::F32 { 4 } else { 2 };
                let need = info.shape.iter().try_fold(width, |a: usize, &d| a.checked_mul(d));
                if s > e || base.checked_add(e).is_none_or(|end| end > bytes.len()) || need != Some(e - s) {
                    return Err(serr(format!(
                        "tensor '{tname}': data offsets {s}..{e} do not hold shape {:?} of {:?} inside the {}-byte file",
                        info.shape,
                        info.dtype,
                        bytes.len()
                    )));
                }
                if index.contains_key(&tname) {
                    return Err(serr(format!("tensor '{tname}' appears in more than one shard")));
                }
                index.insert(
                    tname,
                    StEntry { shard: si, dtype, shape: info.shape.clone(), start: base + s, end: base + e },
                );
            }
        }
        Ok(Self { shards, index })
    }

    /// Lets the pages of tensor `name` leave the resident set (see [`FileBytes::release`]).
    pub fn release(&self, name: &str) {
        if let Some(e) = self.index.get(name) {
            self.shards[e.shard].1.release(e.start..e.end);
        }
    }

    /// The shard file holding tensor `name`.
    pub fn shard_of(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|e| self.shards[e.shard].0.as_str())
    }

    /// Decodes a tensor to f32.
    pub fn get(&self, name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let Some(e) = self.index.get(name) else { return Ok(None) };
        let b = &self.shards[e.shard].1[e.start..e.end];
        let v: Vec<f32> = match e.dtype {
            StDtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            StDtype::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            StDtype::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        };
        Ok(Some((v, e.shape.clone())))
    }
}
