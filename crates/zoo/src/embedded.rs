//! The shipped zoo family (`crates/zoo/family/`, trained by `chorus zoo train` with the default spec)
//! compiled into the library: the two bases and the small experts, which is what fused decoding needs.
//! `chorus demo` runs from these bytes, so it needs no download and no files beside the binary. The large
//! fine-tunes (upper bounds for the evaluation tables) stay on disk only.

use chorus_models::{FileBytes, ModelFiles};

use crate::error::{Error, Result};
use crate::family::Manifest;

/// The family folder in the source tree (read by `chorus zoo eval` by default).
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/family");

/// `family.json` of the shipped family.
const MANIFEST: &[u8] = include_bytes!("../family/family.json");

/// The one tokenizer every member shares.
const TOKENIZER: &[u8] = include_bytes!("../family/small-base/tokenizer.json");

macro_rules! member {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../family/", $name, "/config.json")).as_slice(),
            include_bytes!(concat!("../family/", $name, "/model.safetensors")).as_slice(),
        )
    };
}

/// Embedded members: name, `config.json`, `model.safetensors`.
const MEMBERS: [(&str, &[u8], &[u8]); 7] = [
    member!("small-base"),
    member!("large-base"),
    member!("small-add"),
    member!("small-reverse"),
    member!("small-sort"),
    member!("small-recall"),
    member!("small-date"),
];

/// The shipped family's manifest (spec, end-of-answer token, member sizes).
pub fn manifest() -> Result<Manifest> {
    serde_json::from_slice(MANIFEST)
        .map_err(|e| Error::Config { field: "embedded family.json".into(), reason: e.to_string() })
}

/// Names of the embedded members.
pub fn names() -> impl Iterator<Item = &'static str> {
    MEMBERS.iter().map(|m| m.0)
}

/// One embedded member as model files (weights borrowed from the binary, not copied).
pub fn files(name: &str) -> Result<ModelFiles> {
    let (name, config, weights) = MEMBERS.iter().find(|m| m.0 == name).ok_or_else(|| Error::Config {
        field: "member".into(),
        reason: format!("{name:?} is not embedded (embedded: {})", names().collect::<Vec<_>>().join(", ")),
    })?;
    let shards = vec![("model.safetensors".to_string(), FileBytes::from_static(weights))];
    ModelFiles::from_hf_parts(&format!("zoo:{name}"), config, TOKENIZER, None, shards)
        .map_err(|e| Error::Config { field: format!("embedded member {name}"), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::member_name;

    /// Every member fused decoding needs is embedded, and each opens with the shipped config.
    #[test]
    fn embedded_members_cover_the_family_and_open() {
        let m = manifest().unwrap();
        let mut needed = vec![member_name(false, "base"), member_name(true, "base")];
        needed.extend(m.spec.tasks.iter().map(|t| member_name(false, t.name())));
        for n in &needed {
            let f = files(n).unwrap_or_else(|e| panic!("{n}: {e}"));
            let large = n.starts_with("large");
            let want = if large { m.spec.large.hidden_size } else { m.spec.small.hidden_size };
            assert_eq!(f.config.hidden_size, want, "{n}");
            assert!(!f.tokenizer.encode("rev plant =", false).unwrap().is_empty(), "{n}");
        }
        assert!(files("large-add").err().is_some_and(|e| e.to_string().contains("not embedded")));
    }
}
