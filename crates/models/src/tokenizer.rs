//! Tokenizers and chat templates: built from GGUF `tokenizer.ggml.*` metadata (so a GGUF file alone is
//! enough, as with llama.cpp) or read from an HF `tokenizer.json` + `tokenizer_config.json`.
//!
//! The GGUF path writes an HF `tokenizer.json` document in memory (byte-level BPE with the
//! pre-tokenizer that `tokenizer.ggml.pre` names) and hands it to the `tokenizers` crate, so both paths
//! run the same, well-tested encoder. Chat templates are rendered with minijinja, configured like the
//! Jinja environment of transformers (`trim_blocks`, `lstrip_blocks`, Python string methods).

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// GPT-4-style split used by Qwen2 (`tokenizer.ggml.pre = "qwen2"`), as in Qwen's tokenizer.json.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama-3 split (`llama-bpe`): like Qwen2's but numbers in groups of up to three digits.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A user turn.
    pub fn user(text: impl Into<String>) -> Self {
        Self { role: "user".into(), content: text.into() }
    }
}

/// A tokenizer with the model's special ids and chat template.
#[derive(Clone)]
pub struct TextTokenizer {
    tk: tokenizers::Tokenizer,
    file: String,
    /// Beginning-of-sequence id, if the model has one.
    pub bos_id: Option<u32>,
    /// Whether encoding a prompt prepends `bos_id`.
    pub add_bos: bool,
    /// Ids that end generation.
    pub eos_ids: Vec<u32>,
    /// Padding id used for left padding (falls back to the first EOS id).
    pub pad_id: u32,
    /// Jinja chat template, when the model ships one.
    pub chat_template: Option<String>,
    /// Short description of where the tokenizer came from ("gguf:gpt2/qwen2", "tokenizer.json").
    pub kind: String,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("kind", &self.kind).field("vocab", &self.vocab_size()).finish()
    }
}

impl TextTokenizer {
    /// Builds the tokenizer that a GGUF file describes in its `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let file = g.name().to_string();
        let terr = |reason: String| Error::Tokenizer { file: file.clone(), reason };
        let model = g.req_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(terr(format!(
                "tokenizer.ggml.model '{model}' is not supported (supported: gpt2, i.e. byte-level BPE)"
            )));
        }
        let pre = g.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
        let tokens = g.req_array("tokenizer.ggml.tokens")?;
        let merges = g.req_array("tokenizer.ggml.merges")?;
        let types = g.get("tokenizer.ggml.token_type").and_then(|v| v.as_array());

        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, t) in tokens.iter().enumerate() {
            let s = t.as_str().ok_or_else(|| terr(format!("tokenizer.ggml.tokens[{id}] is not a string")))?;
            let ty = types.and_then(|a| a.get(id)).and_then(|v| v.as_u64()).unwrap_or(1);
            // ggml token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
            if ty == 3 || ty == 4 {
                added.push(json!({
                    "id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": ty == 3,
                }));
            }
            vocab.entry(s.to_string()).or_insert(json!(id));
        }
        let merges: Vec<Json> = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.as_str().map(|s| json!(s)).ok_or_else(|| terr(format!("tokenizer.ggml.merges[{i}] is not a string")))
            })
            .collect::<Result<_>>()?;

        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
        let split =
            |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
        let (normalizer, pre_tokenizer) = match pre {
            "qwen2" => (
                json!({"type": "NFC"}),
                json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]}),
            ),
            "llama-bpe" | "llama3" => {
                (Json::Null, json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]}))
            }
            // SmolLM / StarCoder: every digit on its own, then GPT-2's split.
            "smollm" | "starcoder" | "refact" => (
                Json::Null,
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            ),
            "gpt2" | "default" | "gpt-2" => (Json::Null, byte_level(true)),
            other => {
                return Err(terr(format!(
                    "tokenizer.ggml.pre '{other}' is not supported (supported: qwen2, llama-bpe, smollm, starcoder, gpt2, default)"
                )));
            }
        };
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            },
        });
        let tk = tokenizers::Tokenizer::from_bytes(doc.to_string().as_bytes())
            .map_err(|e| terr(format!("building BPE from tokenizer.ggml.*: {e}")))?;

        let id = |key: &str| g.get(key).and_then(|v| v.as_u64()).map(|v| v as u32);
        let bos_id = id("tokenizer.ggml.bos_token_id");
        let mut eos_ids: Vec<u32> = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(i) = id(key)
                && !eos_ids.contains(&i)
            {
                eos_ids.push(i);
            }
        }
        // Chat models end a turn with their end-of-turn marker even when the file names another EOS
        // (Qwen2.5's generation_config lists both <|im_end|> and <|endoftext|>).
        for marker in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(i) = tk.token_to_id(marker)
                && !eos_ids.contains(&i)
                && types.and_then(|a| a.get(i as usize)).and_then(|v| v.as_u64()) == Some(3)
            {
                eos_ids.push(i);
            }
        }
        let pad_id = id("tokenizer.ggml.padding_token_id").or(eos_ids.first().copied()).or(bos_id).unwrap_or(0);
        let add_bos = g.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
        let chat_template = g.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string);
        Ok(Self { tk, file, bos_id, add_bos, eos_ids, pad_id, chat_template, kind: format!("gguf:{model}/{pre}") })
    }

    /// Reads an HF `tokenizer.json`, with special ids and the chat template from `tokenizer_config.json`
    /// (optional) and `config.json` / `generation_config.json` (optional) in the same folder.
    #[cfg(not(target_family = "wasm"))]
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let file = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|e| Error::Tokenizer {
            file: file.clone(),
            reason: format!("cannot read ({e}); an HF model folder needs tokenizer.json"),
        })?;
        let read_json = |name: &str| -> Result<Option<Json>> {
            let p = dir.join(name);
            match std::fs::read(&p) {
                Ok(b) => serde_json::from_slice(&b)
                    .map(Some)
                    .map_err(|e| Error::Json { file: p.display().to_string(), reason: e.to_string() }),
                Err(_) => Ok(None),
            }
        };
        Self::from_hf_parts(
            &file,
            &bytes,
            read_json("tokenizer_config.json")?,
            read_json("config.json")?,
            read_json("generation_config.json")?,
        )
    }

    /// Builds from the contents of an HF folder's tokenizer files (used natively and in the browser).
    pub fn from_hf_parts(
        file: &str,
        tokenizer_json: &[u8],
        tokenizer_config: Option<Json>,
        config: Option<Json>,
        generation_config: Option<Json>,
    ) -> Result<Self> {
        let terr = |reason: String| Error::Tokenizer { file: file.to_string(), reason };
        let mut tk = tokenizers::Tokenizer::from_bytes(tokenizer_json).map_err(|e| terr(e.to_string()))?;
        // Fixed-length padding/truncation in a tokenizer.json (all-MiniLM ships padding to 128) would
        // silently change every prompt; Chorus pads batches itself.
        tk.with_padding(None);
        tk.with_truncation(None).map_err(|e| terr(e.to_string()))?;
        let tc = tokenizer_config.unwrap_or(Json::Null);
        let tok_str = |v: &Json| -> Option<String> {
            v.as_str().map(str::to_string).or_else(|| v.get("content").and_then(|c| c.as_str()).map(str::to_string))
        };
        let special = |key: &str| tc.get(key).and_then(tok_str).and_then(|s| tk.token_to_id(&s));
        let ids_of = |v: Option<&Json>| -> Vec<u32> {
            match v {
                Some(Json::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
                Some(Json::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|n| n as u32).collect(),
                _ => Vec::new(),
            }
        };
        let mut eos_ids = ids_of(generation_config.as_ref().and_then(|g| g.get("eos_token_id")));
        for i in ids_of(config.as_ref().and_then(|c| c.get("eos_token_id"))).into_iter().chain(special("eos_token")) {
            if !eos_ids.contains(&i) {
                eos_ids.push(i);
            }
        }
        let bos_id = special("bos_token")
            .or_else(|| ids_of(config.as_ref().and_then(|c| c.get("bos_token_id"))).first().copied());
        let pad_id = special("pad_token").or(eos_ids.first().copied()).or(bos_id).unwrap_or(0);
        let add_bos = tc.get("add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
        let chat_template = tc.get("chat_template").and_then(|v| v.as_str()).map(str::to_string);
        Ok(Self {
            tk,
            file: file.to_string(),
            bos_id,
            add_bos,
            eos_ids,
            pad_id,
            chat_template,
            kind: "tokenizer.json".into(),
        })
    }

    /// The tokenizer as an HF `tokenizer.json` document (e.g. to write a GGUF model out as an HF folder).
    pub fn to_json(&self) -> Result<String> {
        self.tk.to_string(false).map_err(|e| Error::Tokenizer { file: self.file.clone(), reason: e.to_string() })
    }

    /// A 64-bit FNV-1a digest of what decides token ids: the model section (vocabulary and merges) and the
    /// added tokens with their ids. Two tokenizers with equal digests map text to the same ids, which is
    /// what logit fusion across models needs.
    pub fn vocab_digest(&self) -> Result<u64> {
        let doc: serde_json::Value = serde_json::from_str(&self.to_json()?)
            .map_err(|e| Error::Tokenizer { file: self.file.clone(), reason: e.to_string() })?;
        // serde_json's map is ordered by key, so this text is canonical.
        let mut parts = vec![doc["model"]["vocab"].to_string(), doc["model"]["merges"].to_string()];
        for t in doc["added_tokens"].as_array().into_iter().flatten() {
            parts.push(t["id"].to_string());
            parts.push(t["content"].to_string());
        }
        Ok(chorus_core::hash::fnv1a(parts.iter().map(String::as_bytes)))
    }

    /// Number of token ids the tokenizer can produce (including added tokens).
    pub fn vocab_size(&self) -> usize {
        self.tk.get_vocab_size(true)
    }

    /// Encodes text; special tokens written in the text (`<|im_start|>`) are recognised. Prepends BOS
    /// when the model asks for it and `add_bos` is set.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .tk
            .encode(text, false)
            .map_err(|e| Error::Tokenizer { file: self.file.clone(), reason: format!("encoding failed: {e}") })?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos
            && self.add_bos
            && let Some(b) = self.bos_id
        {
            ids.push(b);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text, keeping special tokens visible when `skip_special` is false.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tk
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer { file: self.file.clone(), reason: format!("decoding failed: {e}") })
    }

    /// The text of one token id, if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tk.id_to_token(id)
    }

    /// Renders the chat template over `messages`; `add_generation_prompt` opens the assistant turn.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tpl = self.chat_template.as_deref().ok_or_else(|| {
            Error::ChatTemplate(format!("{} has no chat template (tokenizer.chat_template / chat_template)", self.file))
        })?;
        let tok = |id: Option<u32>| id.and_then(|i| self.tk.id_to_token(i)).unwrap_or_default();
        render_chat_template(
            tpl,
            messages,
            add_generation_prompt,
            &tok(self.bos_id),
            &tok(self.eos_ids.first().copied()),
        )
    }
}

/// Renders a Hugging Face chat template with minijinja.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(|e| Error::ChatTemplate(format!("compile: {e}")))?;
    let t = env.get_template("chat").map_err(|e| Error::ChatTemplate(e.to_string()))?;
    t.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(|e| Error::ChatTemplate(format!("render: {e}")))
}
