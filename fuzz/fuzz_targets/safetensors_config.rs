//! Fuzzes HF config.json parsing and safetensors shard indexing/decoding.
#![no_main]

use chorus_models::source::{SafetensorsSet, hf_config};
use chorus_models::FileBytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hf_config("config.json", data);
    if let Ok(set) = SafetensorsSet::from_shards(vec![("model.safetensors".into(), FileBytes::from_vec(data.to_vec()))]) {
        let names: Vec<String> = set.index.keys().cloned().collect();
        for n in names {
            let _ = set.get(&n);
        }
    }
});
