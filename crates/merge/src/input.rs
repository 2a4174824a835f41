//! Input models of a merge: HF folders of any architecture (safetensors, one file or sharded, memory-
//! mapped) and GGUF files (Llama/Qwen2, through the runtime's loader, tensors under their HF names and
//! dequantized to f32). Inputs are only ever read.

use std::path::{Path, PathBuf};

use chorus_core::{Architecture, ModelConfig};
use chorus_models::{ModelFiles, SafetensorsSet};

use crate::error::{Error, Result};

enum Source {
    Hf(SafetensorsSet),
    Gguf(Box<ModelFiles>),
}

/// One opened input model.
pub struct Input {
    /// Where it was opened from.
    pub path: PathBuf,
    source: Source,
}

fn input_err(path: &Path, tensor: &str, reason: impl Into<String>) -> Error {
    Error::Input { model: path.display().to_string(), tensor: tensor.into(), reason: reason.into() }
}

impl Input {
    /// Opens an HF folder or a `.gguf` file.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| input_err(path, "*", e.to_string()))?;
        let source = if meta.is_dir() {
            Source::Hf(SafetensorsSet::open_dir(path).map_err(|e| input_err(path, "*", e.to_string()))?)
        } else {
            Source::Gguf(Box::new(ModelFiles::open(path).map_err(|e| input_err(path, "*", e.to_string()))?))
        };
        Ok(Self { path: path.to_path_buf(), source })
    }

    /// Whether this is a GGUF file.
    pub fn is_gguf(&self) -> bool {
        matches!(self.source, Source::Gguf(_))
    }

    /// Every floating-point tensor (HF names) with its shape, sorted by name.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut v: Vec<(String, Vec<usize>)> = match &self.source {
            Source::Hf(s) => s.index.iter().map(|(n, e)| (n.clone(), e.shape.clone())).collect(),
            Source::Gguf(m) => m.expected_tensors(),
        };
        v.sort_by_key(|a| natural_key(&a.0));
        v
    }

    /// Decodes tensor `name` to f32, checking it has `shape`.
    pub fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let got = match &self.source {
            Source::Hf(s) => s.get(name),
            Source::Gguf(m) => m.tensor(name),
        }
        .map_err(|e| input_err(&self.path, name, e.to_string()))?;
        let (v, found) = got.ok_or_else(|| input_err(&self.path, name, "missing (the base has it)"))?;
        if found != shape {
            return Err(input_err(&self.path, name, format!("shape {found:?}, the base's is {shape:?}")));
        }
        Ok(v)
    }

    /// Lets tensor `name`'s pages leave the resident set.
    pub fn release(&self, name: &str) {
        match &self.source {
            Source::Hf(s) => s.release(name),
            Source::Gguf(m) => m.release(name),
        }
    }

    /// The files that describe the model besides its weights, as (file name, bytes): copied verbatim from
    /// an HF folder; for a GGUF file, a `config.json` and `tokenizer.json` derived from its metadata.
    pub fn companion_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        match &self.source {
            Source::Hf(_) => {
                let mut out = Vec::new();
                for name in COMPANIONS {
                    let p = self.path.join(name);
                    if p.is_file() {
                        let b = std::fs::read(&p).map_err(|e| Error::Io { path: p.clone(), reason: e.to_string() })?;
                        out.push((name.to_string(), b));
                    }
                }
                Ok(out)
            }
            Source::Gguf(m) => {
                let cfg = hf_config_json(&m.config, m.tokenizer.bos_id, &m.tokenizer.eos_ids);
                let tk = m.tokenizer.to_json().map_err(|e| input_err(&self.path, "tokenizer", e.to_string()))?;
                let mut out = vec![
                    ("config.json".to_string(), serde_json::to_vec_pretty(&cfg).unwrap_or_default()),
                    ("tokenizer.json".to_string(), tk.into_bytes()),
                ];
                if let Some(t) = &m.tokenizer.chat_template {
                    let tc = serde_json::json!({ "chat_template": t });
                    out.push(("tokenizer_config.json".into(), serde_json::to_vec_pretty(&tc).unwrap_or_default()));
                }
                Ok(out)
            }
        }
    }
}

/// Files of an HF folder that travel with merged weights (configuration, tokenizer, generation defaults).
const COMPANIONS: [&str; 9] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
];

/// Sort key that orders `layers.10` after `layers.9`.
pub(crate) fn natural_key(name: &str) -> Vec<(String, u64)> {
    name.split('.').map(|p| p.parse::<u64>().map_or((p.to_string(), 0), |n| (String::new(), n))).collect()
}

/// An HF `config.json` for a model known only from GGUF metadata.
pub fn hf_config_json(c: &ModelConfig, bos: Option<u32>, eos: &[u32]) -> serde_json::Value {
    let (arch, model_type) = match c.architecture {
        Architecture::Llama => ("LlamaForCausalLM", "llama"),
        Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
    };
    let mut j = serde_json::json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.max_position_embeddings,
        "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": c.tie_word_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    if c.architecture == Architecture::Llama {
        j["attention_bias"] = c.attention_bias.into();
    }
    if let Some(b) = bos {
        j["bos_token_id"] = b.into();
    }
    match eos {
        [] => {}
        [e] => j["eos_token_id"] = (*e).into(),
        many => j["eos_token_id"] = many.into(),
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_numbers_sort_naturally() {
        let mut v = vec!["model.layers.10.w", "model.layers.9.w", "lm_head.weight", "model.layers.1.w"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, ["lm_head.weight", "model.layers.1.w", "model.layers.9.w", "model.layers.10.w"]);
    }
}
