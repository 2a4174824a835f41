//! `cargo fuzz run merge_config`: the body is `cases::merge_config`, which CI also runs over a bounded corpus.
#![no_main]

#[path = "../cases.rs"]
mod cases;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases::merge_config(data));
