//! Dequantization of every supported GGML type against values produced by the `gguf` Python package
//! (`tests/fixtures/make_quant_fixtures.py`), read through Chorus's own GGUF reader.

use std::collections::BTreeMap;

use chorus_models::GgufFile;
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    #[serde(rename = "type")]
    ty: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

#[test]
fn every_type_matches_the_gguf_package() {
    let dir = crate::common::repo().join("tests/fixtures/quant");
    let g = GgufFile::open(&dir.join("quant.gguf")).expect("open fixture");
    let expected: BTreeMap<String, Expected> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("quant_expected.json")).expect("read")).expect("parse");
    assert_eq!(expected.len(), 10);
    for (name, e) in &expected {
        let info = g.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(info.type_name(), e.ty, "{name}");
        let (v, shape) = g.dequantize(name).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(shape, e.shape, "{name}");
        assert_eq!(v.len(), e.values.len(), "{name}");
        for (i, (a, b)) in v.iter().zip(&e.values).enumerate() {
            // Both sides compute d·q (+ m) in f32 from the same f16 inputs.
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{name}[{i}]: chorus {a} vs gguf {b}");
        }
    }
}
