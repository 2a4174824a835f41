//! A small GGUF v3 writer: metadata plus F32 tensors. Used to build tiny real models for tests (native,
//! wasm and browser) without downloading anything, and to write models out in llama.cpp's format.

use std::collections::BTreeMap;

use crate::gguf::Value;

/// Builds a GGUF file in memory.
#[derive(Default)]
pub struct GgufWriter {
    metadata: BTreeMap<String, Value>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata value.
    pub fn meta(&mut self, key: &str, v: Value) -> &mut Self {
        self.metadata.insert(key.to_string(), v);
        self
    }

    /// Adds an F32 tensor with a row-major `shape` (stored in ggml's innermost-first order).
    pub fn tensor(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> &mut Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor {name}: shape {shape:?} vs {} values",
            data.len()
        );
        self.tensors.push((name.to_string(), shape.to_vec(), data));
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        const ALIGN: usize = 32;
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut b, k);
            b.extend_from_slice(&type_id(v).to_le_bytes());
            put_value(&mut b, v);
        }
        let mut offset = 0usize;
        for (name, shape, data) in &self.tensors {
            put_str(&mut b, name);
            b.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                b.extend_from_slice(&(d as u64).to_le_bytes());
            }
            b.extend_from_slice(&0u32.to_le_bytes()); // F32
            b.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += (data.len() * 4).next_multiple_of(ALIGN);
        }
        b.resize(b.len().next_multiple_of(ALIGN), 0);
        for (_, _, data) in &self.tensors {
            for v in data {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.resize(b.len().next_multiple_of(ALIGN), 0);
        }
        b
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::Str(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => b.push(u8::from(*x)),
        Value::Str(s) => put_str(b, s),
        Value::Array(a) => {
            let et = a.first().map_or(8, type_id);
            b.extend_from_slice(&et.to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                put_value(b, x);
            }
        }
        Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
    }
}

/// A tiny random Llama model with a byte-level tokenizer (256 byte tokens, no merges, one end token),
/// deterministic in `seed`: for tests that need a real model file of a few hundred kilobytes.
pub fn tiny_llama(seed: u64) -> Vec<u8> {
    let mut rng = chorus_core::Rng::new(seed);
    let (v, h, f, layers, heads, kv) = (257usize, 64usize, 128usize, 2usize, 4usize, 2usize);
    let hd = h / heads;
    let mut w = GgufWriter::new();
    // GPT-2's byte-to-unicode alphabet, in byte order, is the vocabulary of a merge-free byte-level BPE.
    let mut tokens: Vec<Value> = (0u8..=255).map(|b| Value::Str(byte_char(b).to_string())).collect();
    tokens.push(Value::Str("<|endoftext|>".into()));
    let mut types: Vec<Value> = vec![Value::I32(1); 256];
    types.push(Value::I32(3));
    w.meta("general.architecture", Value::Str("llama".into()))
        .meta("llama.block_count", Value::U32(layers as u32))
        .meta("llama.embedding_length", Value::U32(h as u32))
        .meta("llama.feed_forward_length", Value::U32(f as u32))
        .meta("llama.attention.head_count", Value::U32(heads as u32))
        .meta("llama.attention.head_count_kv", Value::U32(kv as u32))
        .meta("llama.rope.freq_base", Value::F32(10_000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .meta("llama.context_length", Value::U32(256))
        .meta("tokenizer.ggml.model", Value::Str("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::Str("gpt2".into()))
        .meta("tokenizer.ggml.tokens", Value::Array(tokens))
        .meta("tokenizer.ggml.token_type", Value::Array(types))
        .meta("tokenizer.ggml.merges", Value::Array(Vec::new()))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(256));
    let mut rand =
        |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 2.0 * scale).collect() };
    w.tensor("token_embd.weight", &[v, h], rand(v * h, 1.0));
    for i in 0..layers {
        let s = 1.0 / (h as f32).sqrt();
        w.tensor(&format!("blk.{i}.attn_norm.weight"), &[h], rand(h, 0.2).iter().map(|x| 1.0 + x).collect());
        w.tensor(&format!("blk.{i}.attn_q.weight"), &[heads * hd, h], rand(heads * hd * h, s));
        w.tensor(&format!("blk.{i}.attn_k.weight"), &[kv * hd, h], rand(kv * hd * h, s));
        w.tensor(&format!("blk.{i}.attn_v.weight"), &[kv * hd, h], rand(kv * hd * h, s));
        w.tensor(&format!("blk.{i}.attn_output.weight"), &[h, heads * hd], rand(h * heads * hd, s));
        w.tensor(&format!("blk.{i}.ffn_norm.weight"), &[h], rand(h, 0.2).iter().map(|x| 1.0 + x).collect());
        w.tensor(&format!("blk.{i}.ffn_gate.weight"), &[f, h], rand(f * h, s));
        w.tensor(&format!("blk.{i}.ffn_up.weight"), &[f, h], rand(f * h, s));
        w.tensor(&format!("blk.{i}.ffn_down.weight"), &[h, f], rand(h * f, 1.0 / (f as f32).sqrt()));
    }
    w.tensor("output_norm.weight", &[h], vec![1.0; h]);
    w.to_bytes()
}

/// GPT-2's reversible byte → printable-character map used by byte-level BPE.
fn byte_char(b: u8) -> char {
    let printable = |c: u8| (b'!'..=b'~').contains(&c) || (0xA1..=0xAC).contains(&c) || (0xAE..=0xFF).contains(&c);
    if printable(b) {
        return b as char;
    }
    let n = (0u8..b).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(256 + n).unwrap_or('?')
}
