//! The GGUF reader on corrupt, truncated and unsupported input: errors name the problem, never panic.

use chorus_models::{FileBytes, GgufFile, ModelFiles};

/// A minimal GGUF v3 file: one string key, one u32 key, one F32 tensor of 8 values.
fn tiny(version: u32, tensor_type: u32, n_values: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&2u64.to_le_bytes()); // kv
    let s = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    s(&mut b, "qwen2");
    s(&mut b, "qwen2.block_count");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    s(&mut b, "w");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&n_values.to_le_bytes());
    b.extend_from_slice(&tensor_type.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    for i in 0..8 {
        b.extend_from_slice(&(i as f32).to_le_bytes());
    }
    b
}

fn parse(b: Vec<u8>) -> Result<GgufFile, chorus_models::Error> {
    GgufFile::parse("tiny.gguf", FileBytes::from_vec(b))
}

#[test]
fn a_valid_tiny_file_reads_back() {
    let g = parse(tiny(3, 0, 8)).expect("valid");
    assert_eq!(g.req_str("general.architecture").unwrap(), "qwen2");
    assert_eq!(g.req_u64("qwen2.block_count").unwrap(), 1);
    assert_eq!(g.dequantize("w").unwrap().0, (0..8).map(|i| i as f32).collect::<Vec<_>>());
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = tiny(3, 0, 8);
    for n in 0..full.len() {
        let r = parse(full[..n].to_vec());
        assert!(r.is_err(), "prefix of {n} bytes parsed");
        let msg = r.err().unwrap().to_string();
        assert!(msg.contains("tiny.gguf"), "{msg}");
    }
}

#[test]
fn corrupt_headers_name_the_problem() {
    let mut b = tiny(3, 0, 8);
    b[0] = b'X';
    assert!(parse(b).err().unwrap().to_string().contains("bad magic"));
    assert!(parse(tiny(1, 0, 8)).err().unwrap().to_string().contains("version 1"));
    // A tensor larger than the file.
    let msg = parse(tiny(3, 0, 1 << 20)).err().unwrap().to_string();
    assert!(msg.contains("'w'") && msg.contains("past the end"), "{msg}");
    // An absurd count must not allocate.
    let mut b = tiny(3, 0, 8);
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse(b).err().unwrap().to_string().contains("tensor_count"));
}

#[test]
fn unsupported_types_are_reported_by_tensor_name() {
    // IQ4_XS (id 23) parses (inspect can list it) but cannot be decoded.
    let g = parse(tiny(3, 23, 256)).expect("directory parses");
    let msg = g.dequantize("w").err().unwrap().to_string();
    assert!(msg.contains("'w'") && msg.contains("IQ4_XS"), "{msg}");
}

#[test]
fn missing_fields_and_unknown_architectures_are_named() {
    let msg = ModelFiles::from_gguf(parse(tiny(3, 0, 8)).unwrap()).err().unwrap().to_string();
    assert!(msg.contains("qwen2.embedding_length") || msg.contains("token_embd.weight"), "{msg}");
    let mut b = tiny(3, 0, 8);
    let at = b.windows(5).position(|w| w == b"qwen2").unwrap();
    b[at..at + 5].copy_from_slice(b"mamba");
    let msg = ModelFiles::from_gguf(parse(b).unwrap()).err().unwrap().to_string();
    assert!(msg.contains("unknown architecture 'mamba'"), "{msg}");
}

#[test]
fn a_truncated_real_model_is_rejected_with_its_tensor() {
    let path = crate::common::model_path("smollm2");
    let bytes = std::fs::read(&path).expect("read");
    let cut = bytes[..bytes.len() / 2].to_vec();
    let msg = parse(cut).err().unwrap().to_string();
    assert!(msg.contains("truncated") && msg.contains("tensor '"), "{msg}");
}
