//! Hostile files: the sizes a file declares are checked before anything is allocated from them, and the
//! fuzz targets' bodies (`fuzz/cases.rs`, shared with `cargo fuzz`) run in every CI over a seeded corpus
//! of mutated real inputs, bounded in count and time.

#[path = "../../fuzz/cases.rs"]
mod cases;

use std::time::{Duration, Instant};

use chorus_models::{FileBytes, GgufFile, ModelFiles};

/// Overwrites the u32 value of metadata `key` in GGUF bytes (the tiny model writes every count as u32).
fn set_u32(bytes: &mut [u8], key: &str, value: u32) {
    let k = key.as_bytes();
    let at = bytes.windows(k.len()).position(|w| w == k).unwrap_or_else(|| panic!("{key} not in the file"));
    let ty = at + k.len();
    assert_eq!(u32::from_le_bytes(bytes[ty..ty + 4].try_into().unwrap()), 4, "{key} is not a u32");
    bytes[ty + 4..ty + 8].copy_from_slice(&value.to_le_bytes());
}

fn open(bytes: Vec<u8>) -> Result<ModelFiles, chorus_models::Error> {
    ModelFiles::from_gguf(GgufFile::parse("hostile.gguf", FileBytes::from_vec(bytes))?)
}

#[test]
fn huge_declared_sizes_are_refused_by_name_before_allocating() {
    for (key, value, field) in [
        ("llama.context_length", u32::MAX, "llama.context_length"),
        ("llama.block_count", u32::MAX, "llama.block_count"),
        ("llama.block_count", 3, "block_count"),
        ("llama.embedding_length", u32::MAX, "llama.embedding_length"),
        ("llama.attention.head_count", 1 << 20, "llama.attention.head_count"),
    ] {
        let mut b = chorus_models::gguf_write::tiny_llama(1);
        set_u32(&mut b, key, value);
        let msg = open(b).err().unwrap_or_else(|| panic!("{key} = {value} was accepted")).to_string();
        assert!(msg.contains("hostile.gguf") && msg.contains(field) && msg.contains(&value.to_string()), "{msg}");
    }
    // A large but legal context costs nothing up front: RoPE and the KV cache follow the request.
    let mut b = chorus_models::gguf_write::tiny_llama(1);
    set_u32(&mut b, "llama.context_length", 1 << 24);
    let files = open(b).expect("a 16 Mi-token context is allowed");
    let dev = burn::tensor::Device::flex();
    let d = chorus_models::Decoder::load(&files, &dev, chorus_models::WeightMode::F32, &mut |_, _| {}).unwrap();
    let mut cache = d.new_cache(1);
    let logits = d.forward_mixed(&[vec![1, 2, 3]], &[vec![true; 3]], &mut cache, chorus_models::Output::Last, None);
    assert_eq!(logits.unwrap().dims(), [1, 257]);

    let cfg = |ctx: &str| {
        format!(
            r#"{{"model_type": "llama", "vocab_size": 257, "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": {ctx}}}"#
        )
    };
    let c = chorus_models::source::hf_config("config.json", cfg("1000000000000").as_bytes()).unwrap();
    let msg = c.validate().unwrap_err().to_string();
    assert!(msg.contains("max_position_embeddings") && msg.contains("1000000000000"), "{msg}");
    let msg = chorus_models::source::hf_config("config.json", cfg("1e12").as_bytes()).unwrap_err().to_string();
    assert!(msg.contains("config.json") && msg.contains("max_position_embeddings"), "{msg}");
}

/// Mutates `seed` bytes: bit flips, bytes set to boundary values, little-endian u32/u64 fields set to
/// huge values, truncation, duplicated ranges.
fn mutate(seed: &[u8], rng: &mut chorus_core::Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    let pick = |rng: &mut chorus_core::Rng, n: usize| (rng.next_f64() * n as f64) as usize % n.max(1);
    for _ in 0..1 + pick(rng, 4) {
        if b.is_empty() {
            break;
        }
        let at = pick(rng, b.len());
        match pick(rng, 6) {
            0 => b[at] ^= 1 << pick(rng, 8),
            1 => b[at] = [0, 1, 0x7f, 0x80, 0xff][pick(rng, 5)],
            2 if at + 4 <= b.len() => {
                b[at..at + 4].copy_from_slice(&[u32::MAX, 1 << 31, 0][pick(rng, 3)].to_le_bytes())
            }
            3 if at + 8 <= b.len() => b[at..at + 8].copy_from_slice(&(u64::MAX >> pick(rng, 40)).to_le_bytes()),
            4 => b.truncate(at),
            _ => {
                let end = (at + 1 + pick(rng, 64)).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
        }
    }
    b
}

/// Runs `body` on every seed and on mutations of them, up to `count` inputs or `budget` of time, whichever
/// comes first; returns how many inputs ran. A panic fails the test with the input's case number.
fn run(name: &str, seeds: &[Vec<u8>], count: usize, budget: Duration, body: fn(&[u8])) -> usize {
    let mut rng = chorus_core::Rng::new(0x5eed);
    let t0 = Instant::now();
    let mut n = 0;
    for s in seeds {
        body(s);
        n += 1;
    }
    while n < count && t0.elapsed() < budget {
        let input = mutate(&seeds[n % seeds.len()], &mut rng);
        let r = std::panic::catch_unwind(|| body(&input));
        assert!(r.is_ok(), "{name}: case {n} panicked ({} bytes)", input.len());
        n += 1;
    }
    eprintln!("fuzz {name}: {n} inputs in {:.1} s", t0.elapsed().as_secs_f64());
    n
}

#[test]
fn fuzz_gguf_through_the_decoder() {
    // The tiny model reaches the decoder; the header-only seed exercises the reader's paths.
    let seeds = vec![chorus_models::gguf_write::tiny_llama(2), chorus_models::gguf_write::tiny_llama(3)];
    let n = run("gguf", &seeds, 400, Duration::from_secs(20), cases::gguf);
    assert!(n >= 50, "only {n} inputs ran");
}

#[test]
fn fuzz_safetensors_and_config() {
    let mut st = Vec::new();
    let header = br#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}}"#;
    st.extend_from_slice(&(header.len() as u64).to_le_bytes());
    st.extend_from_slice(header);
    st.extend_from_slice(&[0u8; 24]);
    let cfg = br#"{"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": true}"#;
    let n = run("safetensors_config", &[st, cfg.to_vec()], 3000, Duration::from_secs(10), cases::safetensors_config);
    assert!(n >= 500, "only {n} inputs ran");
}

#[test]
fn fuzz_merge_config() {
    let yaml = b"merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 0.5, density: 0.5}\n  - model: b\n    parameters:\n      weight: [0.1, 0.9]\n      density: 0.7\nparameters: {normalize: true, int8_mask: false}\ndtype: bfloat16\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n";
    let n = run("merge_config", &[yaml.to_vec()], 3000, Duration::from_secs(10), cases::merge_config);
    assert!(n >= 500, "only {n} inputs ran");
}
