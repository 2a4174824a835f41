//! A small GGUF v3 writer: metadata plus F32 or already-encoded GGML-block tensors. Used to build tiny real
//! models for tests (native, wasm and browser) without downloading anything, and to write models out in
//! llama.cpp's format.

use std::collections::BTreeMap;

use chorus_core::GgmlType;

use crate::gguf::Value;

/// Builds a GGUF file in memory.
#[derive(Default)]
pub struct GgufWriter {
    metadata: BTreeMap<String, Value>,
    /// Name, row-major shape, GGML type and the encoded bytes.
    tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>,
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
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.push((name.to_string(), shape.to_vec(), GgmlType::F32, bytes));
        self
    }

    /// Adds a tensor already encoded as `ty` blocks, row-major `shape` (its last dimension a whole number
    /// of blocks); `data` must hold exactly the bytes that many values take.
    pub fn tensor_blocks(&mut self, name: &str, shape: &[usize], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        let n: usize = shape.iter().product();
        assert!(
            shape.last().is_some_and(|c| c.is_multiple_of(ty.block_elems())),
            "tensor {name}: rows of {shape:?} are not whole {} blocks",
            ty.name()
        );
        assert_eq!(
            ty.bytes_for(n),
            Some(data.len()),
            "tensor {name}: {} bytes for {n} {} values",
            data.len(),
            ty.name()
        );
        self.tensors.push((name.to_string(), shape.to_vec(), ty, data));
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
        for (name, shape, ty, data) in &self.tensors {
            put_str(&mut b, name);
            b.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                b.extend_from_slice(&(d as u64).to_le_bytes());
            }
            b.extend_from_slice(&ty.id().to_le_bytes());
            b.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += data.len().next_multiple_of(ALIGN);
        }
        b.resize(b.len().next_multiple_of(ALIGN), 0);
        for (_, _, _, data) in &self.tensors {
            b.extend_from_slice(data);
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
    tiny_llama_meta(&mut w, h, f, layers, heads, kv);
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

/// GGML types of the projections of [`tiny_llama_quantized`], per layer: q, k, v, output, gate, up, down.
/// Every integer-coded type appears; layer 0's q/k/v mixes code widths (kept as separate blocks) and its
/// gate/up share one (stacked packed), layer 1's q/k/v are all 5-bit.
pub const TINY_QUANT_TYPES: [[GgmlType; 7]; 2] = {
    use GgmlType::*;
    [[Q4_K, Q4_K, Q6_K, Q8_0, Q4_0, Q4_0, Q5_K], [Q5_0, Q5_1, Q5_0, Q4_1, Q6_K, Q8_0, Q4_K]]
};

/// [`tiny_llama`]'s architecture and tokenizer at hidden size 256 (k-quant blocks span 256 values), with
/// every projection and the (tied) embedding stored as integer-coded GGML blocks ([`TINY_QUANT_TYPES`];
/// the embedding Q8_0) and only the norms in F32: for tests of the quantized CPU path. The blocks are
/// random codes whose f16 scales are set so each tensor has the RMS of `tiny_llama`'s uniform weights.
pub fn tiny_llama_quantized(seed: u64) -> Vec<u8> {
    let mut rng = chorus_core::Rng::new(seed);
    let (v, h, f, layers, heads, kv) = (257usize, 256usize, 512usize, 2usize, 4usize, 2usize);
    let hd = h / heads;
    let mut w = GgufWriter::new();
    tiny_llama_meta(&mut w, h, f, layers, heads, kv);
    // Uniform on ±scale has RMS scale/√3.
    let rms = |scale: f32| scale / 3f32.sqrt();
    let embd = random_blocks(GgmlType::Q8_0, v * h, rms(1.0), &mut rng);
    w.tensor_blocks("token_embd.weight", &[v, h], GgmlType::Q8_0, embd);
    for (i, tys) in TINY_QUANT_TYPES.iter().enumerate().take(layers) {
        let s = rms(1.0 / (h as f32).sqrt());
        let norm = |rng: &mut chorus_core::Rng| -> Vec<f32> {
            (0..h).map(|_| 1.0 + (rng.next_f64() as f32 - 0.5) * 0.4).collect()
        };
        w.tensor(&format!("blk.{i}.attn_norm.weight"), &[h], norm(&mut rng));
        w.tensor(&format!("blk.{i}.ffn_norm.weight"), &[h], norm(&mut rng));
        let shapes = [
            ("attn_q", heads * hd, h, s),
            ("attn_k", kv * hd, h, s),
            ("attn_v", kv * hd, h, s),
            ("attn_output", h, heads * hd, s),
            ("ffn_gate", f, h, s),
            ("ffn_up", f, h, s),
            ("ffn_down", h, f, rms(1.0 / (f as f32).sqrt())),
        ];
        for ((name, rows, cols, target), &ty) in shapes.into_iter().zip(tys) {
            let data = random_blocks(ty, rows * cols, target, &mut rng);
            w.tensor_blocks(&format!("blk.{i}.{name}.weight"), &[rows, cols], ty, data);
        }
    }
    w.tensor("output_norm.weight", &[h], vec![1.0; h]);
    w.to_bytes()
}

/// `n` values of random `ty` blocks (random codes and sub-block scales) whose f16 scale fields are then
/// scaled together so the dequantized values have root mean square `rms` (every value is linear in them).
fn random_blocks(ty: GgmlType, n: usize, rms: f32, rng: &mut chorus_core::Rng) -> Vec<u8> {
    // A fixture writer, never fed outside input: its callers' sizes are fixed multiples of 256 (every block
    // size), and the blocks are the ones built here, so the two `expect`s state invariants of this file.
    let bytes = ty.bytes_for(n).expect("whole blocks");
    let mut data: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
    // Byte offsets of the f16 scale fields in a block (d, and m/dmin where the format has one).
    let fields: &[usize] = match ty {
        GgmlType::Q6_K => &[208],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        _ => &[0],
    };
    let set = |data: &mut [u8], f: &mut dyn FnMut(usize, f32) -> f32| {
        for (b, blk) in data.chunks_exact_mut(ty.block_bytes()).enumerate() {
            for &at in fields {
                let old = half::f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32();
                blk[at..at + 2].copy_from_slice(&half::f16::from_f32(f(b, old)).to_le_bytes());
            }
        }
    };
    let mut draw = |_: usize, _: f32| (rng.next_f64() as f32 - 0.5) * 0.1;
    set(&mut data, &mut draw);
    let vals = chorus_core::ggml::dequantize(ty, &data, n, "random").expect("valid blocks");
    let now = (vals.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / n as f64).sqrt() as f32;
    set(&mut data, &mut |_, old| old * rms / now);
    data
}

/// Metadata of the tiny Llamas: architecture, sizes and the merge-free byte-level tokenizer.
fn tiny_llama_meta(w: &mut GgufWriter, h: usize, f: usize, layers: usize, heads: usize, kv: usize) {
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
