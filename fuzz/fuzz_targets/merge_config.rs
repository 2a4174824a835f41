//! Fuzzes the merge YAML parser: any input gives a configuration or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = chorus_merge::MergeConfig::from_yaml(text, std::path::Path::new("fuzz.yml"), std::path::Path::new("/"));
    }
});
