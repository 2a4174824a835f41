//! Configuration types shared by loaders, models, the engine, the CLI and the browser front end.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Decoder families the runtime implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Qwen2 / Qwen2.5: q/k/v biases, GQA, NeoX RoPE.
    Qwen2,
    /// Llama family (SmolLM2): no biases, GQA, RoPE.
    Llama,
}

impl Architecture {
    /// Parses the GGUF `general.architecture` / HF `model_type` spelling.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "qwen2" | "Qwen2ForCausalLM" => Some(Self::Qwen2),
            "llama" | "LlamaForCausalLM" => Some(Self::Llama),
            _ => None,
        }
    }

    /// The canonical lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
        }
    }
}

/// The longest context a configuration may declare (16 Mi tokens): above every published model, and a
/// guard against a file's `context_length` of 0xFFFFFFFF. The KV cache grows with the request, so a
/// large declared context costs nothing until it is used.
pub const MAX_CONTEXT: usize = 1 << 24;

/// Hyper-parameters of a decoder-only transformer, in Hugging Face's vocabulary.
///
/// Weights are always held in the HF layout (rows = output features, NeoX "half-split" RoPE); loaders
/// convert GGUF's interleaved Llama Q/K rows on the way in so that one model implementation serves both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Decoder family.
    pub architecture: Architecture,
    /// Rows of the embedding / LM head (may exceed the tokenizer's vocabulary: padding rows).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (GQA when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Longest sequence (prompt + generated) the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections carry a bias (Qwen2).
    pub attention_bias: bool,
}

impl ModelConfig {
    /// Checks the internal consistency of the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| Err(Error::Config { field: field.to_string(), reason });
        // Upper bounds, far above every published model, so that a hostile or damaged file is refused by
        // name before anything is sized from it (a count of 0xFFFFFFFF layers would otherwise allocate).
        for (field, v, max) in [
            ("vocab_size", self.vocab_size, 1 << 23),
            ("hidden_size", self.hidden_size, 1 << 17),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("num_layers", self.num_layers, 1 << 12),
            ("num_heads", self.num_heads, 1 << 12),
            ("num_kv_heads", self.num_kv_heads, 1 << 12),
            ("head_dim", self.head_dim, 1 << 12),
            ("max_position_embeddings", self.max_position_embeddings, MAX_CONTEXT),
        ] {
            if v > max {
                return bad(field, format!("{v} exceeds the limit of {max}"));
            }
        }
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(field, "must be positive".into());
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad("num_kv_heads", format!("{} does not divide num_heads {}", self.num_kv_heads, self.num_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad("head_dim", format!("{} is odd; RoPE rotates pairs", self.head_dim));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad("rope_theta", format!("{} is not a positive number", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad("rms_norm_eps", format!("{} is not a positive number", self.rms_norm_eps));
        }
        Ok(())
    }

    /// Parameter count implied by the configuration (embedding counted once when tied).
    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let attn = h * q + 2 * h * kv + q * h + bias;
        let mlp = 3 * h * self.intermediate_size;
        let layer = attn + mlp + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * h };
        self.vocab_size * h + self.num_layers * layer + h + head
    }
}

/// Options for text generation; every field has a documented default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateOptions {
    /// Tokens to generate at most (default 64).
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy (default 0).
    pub temperature: f32,
    /// Keep only the k most likely tokens before sampling; 0 disables (default 0).
    pub top_k: usize,
    /// Nucleus sampling mass in (0, 1]; 1 disables (default 1).
    pub top_p: f32,
    /// Seed of the sampler's random stream (default 0).
    pub seed: u64,
    /// Strings that end generation when they appear in the generated text (default none).
    pub stop: Vec<String>,
    /// Stop at the model's end-of-sequence tokens (default true).
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            stop_at_eos: true,
        }
    }
}
