//! Fuzzes the GGUF reader end to end: parse, build config + tokenizer, decode every tensor.
#![no_main]

use chorus_models::{FileBytes, GgufFile, ModelFiles};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = GgufFile::parse("fuzz.gguf", FileBytes::from_vec(data.to_vec())) {
        let names: Vec<String> = g.tensors.iter().map(|t| t.name.clone()).collect();
        for n in &names {
            let _ = g.dequantize(n);
        }
        let _ = ModelFiles::from_gguf(g);
    }
});
