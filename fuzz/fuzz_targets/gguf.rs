//! `cargo fuzz run gguf`: the body is `cases::gguf`, which CI also runs over a bounded corpus.
#![no_main]

#[path = "../cases.rs"]
mod cases;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases::gguf(data));
