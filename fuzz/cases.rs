//! The bodies of the fuzz targets: one function per target, each taking arbitrary bytes and required
//! never to panic or abort. `cargo fuzz` runs them through `fuzz_targets/` (nightly, sanitizers); the
//! integration test `fuzz` runs the same functions over a seeded, bounded corpus on every CI run.

use chorus_models::source::{SafetensorsSet, hf_config};
use chorus_models::{Decoder, FileBytes, GgufFile, ModelFiles, Output, WeightMode};

/// GGUF end to end: parse, decode every tensor, build config + tokenizer, load the decoder on the CPU in
/// the default weight mode and run one token through it.
pub fn gguf(data: &[u8]) {
    let Ok(g) = GgufFile::parse("fuzz.gguf", FileBytes::from_vec(data.to_vec())) else { return };
    let names: Vec<String> = g.tensors.iter().map(|t| t.name.clone()).collect();
    for n in &names {
        let _ = g.dequantize(n);
    }
    let Ok(files) = ModelFiles::from_gguf(g) else { return };
    let device = burn::tensor::Device::flex();
    let Ok(decoder) = Decoder::load(&files, &device, WeightMode::Native, &mut |_, _| {}) else { return };
    let mut cache = decoder.new_cache(1);
    let _ = decoder.forward_mixed(&[vec![0]], &[vec![true]], &mut cache, Output::Last, None);
}

/// HF `config.json` parsing, and safetensors shard indexing and decoding.
pub fn safetensors_config(data: &[u8]) {
    let _ = hf_config("config.json", data);
    if let Ok(set) = SafetensorsSet::from_shards(vec![("model.safetensors".into(), FileBytes::from_vec(data.to_vec()))])
    {
        let names: Vec<String> = set.index.keys().cloned().collect();
        for n in names {
            let _ = set.get(&n);
        }
    }
}

/// The merge YAML parser: any input gives a configuration or an error.
pub fn merge_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = chorus_merge::MergeConfig::from_yaml(text, std::path::Path::new("fuzz.yml"), std::path::Path::new("/"));
    }
}
