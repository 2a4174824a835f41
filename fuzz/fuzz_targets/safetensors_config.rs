//! `cargo fuzz run safetensors_config`: the body is `cases::safetensors_config`, which CI also runs over a bounded corpus.
#![no_main]

#[path = "../cases.rs"]
mod cases;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases::safetensors_config(data));
