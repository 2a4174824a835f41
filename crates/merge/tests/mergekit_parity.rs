//! Parity with mergekit 0.1.5: the fixtures in `tests/fixtures/merge/` (written by
//! `scripts/merge_fixtures.py`) hold four tiny random Llama models, one YAML per method, mergekit's
//! merged output and, for DARE, the keep masks mergekit drew. Chorus merges the same YAML (with those
//! masks) and must agree within 1e-6 on every value.

use std::path::{Path, PathBuf};

use chorus_merge::methods::{ExplicitMasks, SeededMasks};
use chorus_merge::{MergeConfig, RunOptions, run};
use chorus_models::SafetensorsSet;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

fn masks(method: &str) -> ExplicitMasks {
    let mut m = ExplicitMasks::default();
    let p = fixtures().join(format!("{method}.masks.safetensors"));
    let Ok(bytes) = std::fs::read(&p) else { return m };
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (key, view) in st.tensors() {
        let (i, name) = key.split_once(':').unwrap();
        m.masks.insert((i.parse().unwrap(), name.to_string()), view.data().iter().map(|&b| b != 0).collect());
    }
    m
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("chorus-merge-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

#[test]
fn every_method_matches_mergekit() {
    for method in ["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"] {
        let cfg = MergeConfig::from_file(&fixtures().join(format!("{method}.yml"))).unwrap();
        let mut masks = masks(method);
        if method.starts_with("dare") {
            assert!(!masks.masks.is_empty(), "{method}: no recorded masks");
        }
        let out = out_dir(method);
        let mut seen = 0;
        let s = run(
            &cfg,
            &out,
            RunOptions {
                force: false,
                shard_bytes: 5_000_000_000,
                masks: &mut masks,
                progress: &mut |_, _, _| seen += 1,
            },
        )
        .unwrap();
        assert_eq!(s.tensors, 21);
        assert_eq!(seen, 21);
        let ours = SafetensorsSet::open_dir(&out).unwrap();
        let theirs = SafetensorsSet::open_dir(&fixtures().join(method)).unwrap();
        assert_eq!(ours.index.len(), theirs.index.len(), "{method}");
        let mut worst = 0.0f32;
        for name in theirs.index.keys() {
            let (a, sa) = ours.get(name).unwrap().unwrap();
            let (b, sb) = theirs.get(name).unwrap().unwrap();
            assert_eq!(sa, sb, "{method} {name}");
            for (x, y) in a.iter().zip(&b) {
                worst = worst.max((x - y).abs());
            }
        }
        eprintln!("{method}: max abs diff {worst:e}");
        assert!(worst <= 1e-6, "{method}: max |chorus − mergekit| = {worst:e}");
        assert!(out.join("config.json").exists() && out.join("chorus_merge.json").exists());
        std::fs::remove_dir_all(&out).ok();
    }
}

/// Seeded DARE is reproducible and leaves roughly 1 − density of each delta at zero.
#[test]
fn seeded_dare_is_reproducible() {
    let cfg = MergeConfig::from_file(&fixtures().join("dare_linear.yml")).unwrap();
    let merge = |tag: &str| {
        let out = out_dir(tag);
        run(
            &cfg,
            &out,
            RunOptions {
                force: false,
                shard_bytes: 4096,
                masks: &mut SeededMasks { seed: 3 },
                progress: &mut |_, _, _| {},
            },
        )
        .unwrap();
        let set = SafetensorsSet::open_dir(&out).unwrap();
        let v = set.get("model.layers.0.mlp.up_proj.weight").unwrap().unwrap().0;
        std::fs::remove_dir_all(&out).ok();
        v
    };
    assert_eq!(merge("seeded-a"), merge("seeded-b"));
}

/// The error of a seeded merge that must fail.
fn seeded_error(cfg: &MergeConfig, out: &Path) -> String {
    let opts = RunOptions {
        force: false,
        shard_bytes: 1 << 30,
        masks: &mut SeededMasks { seed: 0 },
        progress: &mut |_, _, _| {},
    };
    run(cfg, out, opts).unwrap_err().to_string()
}

/// Bad inputs name the model and tensor and leave nothing at the output path.
#[test]
fn mismatched_inputs_fail_before_writing() {
    let dir = out_dir("bad-inputs");
    std::fs::create_dir_all(&dir).unwrap();
    let models = fixtures().join("models");
    // A copy of model a with one tensor's shape changed.
    let a = SafetensorsSet::open_dir(&models.join("a")).unwrap();
    let mut tensors = Vec::new();
    let mut names: Vec<&String> = a.index.keys().collect();
    names.sort();
    for n in names {
        let (v, mut shape) = a.get(n).unwrap().unwrap();
        if n == "model.norm.weight" {
            shape = vec![shape[0] / 2, 2];
        }
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((n.clone(), shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    safetensors::serialize_to_file(views, None, &bad.join("model.safetensors")).unwrap();
    let yml = format!(
        "merge_method: task_arithmetic\nbase_model: {}\nmodels:\n  - model: {}\n    parameters: {{weight: 1}}\n",
        models.join("base").display(),
        bad.display()
    );
    let cfg = MergeConfig::from_yaml(&yml, Path::new("bad.yml"), &dir).unwrap();
    let out = dir.join("out");
    let err = seeded_error(&cfg, &out);
    assert!(err.contains("model.norm.weight") && err.contains("bad") && err.contains("shape"), "{err}");
    assert!(!out.exists());
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains("tmp")));
    // An existing non-empty output is refused untouched (an empty folder holds nothing to lose).
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let cfg = MergeConfig::from_file(&fixtures().join("linear.yml")).unwrap();
    let err = seeded_error(&cfg, &out);
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    std::fs::remove_dir_all(&dir).ok();
}

/// GGUF inputs merge like any other (dequantized, under HF names), and the output is an HF folder with a
/// config.json and tokenizer.json derived from the GGUF base that the runtime loads; a linear merge of a
/// model with itself reproduces it.
#[test]
fn gguf_inputs_make_a_loadable_hf_folder() {
    let dir = out_dir("gguf");
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.gguf"), dir.join("b.gguf"));
    std::fs::write(&a, chorus_models::gguf_write::tiny_llama(1)).unwrap();
    std::fs::write(&b, chorus_models::gguf_write::tiny_llama(2)).unwrap();
    let yml = "merge_method: task_arithmetic\nbase_model: a.gguf\nmodels:\n  - model: b.gguf\n    parameters: {weight: 1.0}\nparameters: {lambda: 0.5}\nout_dtype: bfloat16\n";
    let cfg = MergeConfig::from_yaml(yml, Path::new("g.yml"), &dir).unwrap();
    let out = dir.join("merged");
    run(
        &cfg,
        &out,
        RunOptions {
            force: false,
            shard_bytes: 20_000,
            masks: &mut SeededMasks { seed: 0 },
            progress: &mut |_, _, _| {},
        },
    )
    .unwrap();
    assert!(out.join("model.safetensors.index.json").exists(), "small shards: an index");
    let merged = chorus_models::ModelFiles::open(&out).unwrap();
    let (ga, gb) = (chorus_models::ModelFiles::open(&a).unwrap(), chorus_models::ModelFiles::open(&b).unwrap());
    assert_eq!(merged.config, ga.config);
    assert_eq!(merged.tokenizer.encode("hello", false).unwrap(), ga.tokenizer.encode("hello", false).unwrap());
    let name = "model.layers.1.self_attn.q_proj.weight";
    let (m, _) = merged.tensor(name).unwrap().unwrap();
    let (x, _) = ga.tensor(name).unwrap().unwrap();
    let (y, _) = gb.tensor(name).unwrap().unwrap();
    for ((m, x), y) in m.iter().zip(&x).zip(&y) {
        let want = half::bf16::from_f32(x + 0.5 * (y - x)).to_f32();
        assert_eq!(*m, want);
    }
    std::fs::remove_dir_all(&dir).ok();
}
