//! Shared helpers: where the fetched models are, the wgpu device, golden files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use chorus_engine::{Backend, LoadedModel};
use chorus_models::{ModelFiles, WeightMode};
use serde::Deserialize;

/// The fetched-model cache (`$CHORUS_HOME/models`, default `~/.cache/chorus/models`).
pub fn models_dir() -> PathBuf {
    let home = std::env::var_os("CHORUS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/chorus"));
    home.join("models")
}

/// A fetched model file; panics with the command that fetches it when it is missing (never skips).
pub fn model_path(key: &str) -> PathBuf {
    let file = match key {
        "smollm2" => "SmolLM2-135M-Instruct.Q4_1.gguf",
        "qwen0.5b" => "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        other => panic!("unknown model key {other}"),
    };
    let p = models_dir().join(file);
    assert!(
        p.exists(),
        "model file {} is missing: run `scripts/fetch-models {key}` (CHORUS_HOME={:?})",
        p.display(),
        std::env::var("CHORUS_HOME").ok()
    );
    p
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The wgpu device, or `None` locally when no adapter exists. With `CHORUS_REQUIRE_GPU=1` (CI) a missing
/// adapter fails the test instead, so a broken lavapipe install cannot turn GPU tests into skips.
pub fn wgpu_or_skip(test: &str) -> Option<burn::tensor::Device> {
    match chorus_engine::device(Backend::Wgpu) {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("CHORUS_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: CHORUS_REQUIRE_GPU=1 but wgpu is unavailable: {e}");
            }
            eprintln!("{test}: skipped: no GPU adapter ({e})");
            None
        }
    }
}

/// The GPU context for custom kernels: it shares burn's wgpu device and queue (same policy as
/// [`wgpu_or_skip`]).
pub fn gpu_or_skip(test: &str) -> Option<chorus_gpu::GpuContext> {
    match chorus_engine::backend::gpu_context() {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("CHORUS_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: CHORUS_REQUIRE_GPU=1 but no GPU context: {e}");
            }
            eprintln!("{test}: skipped: no GPU adapter ({e})");
            None
        }
    }
}

/// Models are large: each (model, backend, weight mode) is loaded once per test process and shared.
pub fn loaded(key: &str, backend: Backend) -> Option<Arc<LoadedModel>> {
    loaded_with(key, backend, None)
}

/// [`loaded`] with an explicit weight mode (`None`: the backend's default).
pub fn loaded_with(key: &str, backend: Backend, mode: Option<WeightMode>) -> Option<Arc<LoadedModel>> {
    type Cache = Mutex<Vec<(String, Backend, Option<WeightMode>, Arc<LoadedModel>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let device = match backend {
        Backend::Cpu => chorus_engine::device(Backend::Cpu).expect("cpu device"),
        Backend::Wgpu => wgpu_or_skip(key)?,
    };
    let cache = CACHE.get_or_init(Default::default);
    let mut guard = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((.., m)) = guard.iter().find(|(k, b, w, _)| k == key && *b == backend && *w == mode) {
        return Some(Arc::clone(m));
    }
    let files = ModelFiles::open(&model_path(key)).expect("open model");
    let m = Arc::new(LoadedModel::load(files, backend, &device, mode, &mut |_, _| {}).expect("load model"));
    guard.push((key.to_string(), backend, mode, Arc::clone(&m)));
    Some(m)
}

/// One golden prompt written by `tests/fixtures/make_goldens.py`.
#[derive(Deserialize)]
pub struct GoldenCase {
    pub prompt: String,
    pub chat: bool,
    pub rendered: String,
    pub ids: Vec<u32>,
    pub steps: Vec<GoldenStep>,
}

/// One greedy step of a golden case.
#[derive(Deserialize)]
pub struct GoldenStep {
    pub token: u32,
    pub top: Vec<(u32, f32)>,
}

/// A tokenization golden.
#[derive(Deserialize)]
pub struct GoldenTokenize {
    pub text: String,
    pub ids: Vec<u32>,
}

/// The golden file of one model.
#[derive(Deserialize)]
pub struct Golden {
    pub cases: Vec<GoldenCase>,
    pub tokenize: Vec<GoldenTokenize>,
}

/// Reads `tests/fixtures/goldens/<key>.json`.
pub fn golden(key: &str) -> Golden {
    let p = repo().join("tests/fixtures/goldens").join(format!("{key}.json"));
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
