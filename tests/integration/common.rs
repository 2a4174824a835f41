//! Shared helpers: where the fetched models are, the wgpu device, golden files.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once, OnceLock};

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

/// The wgpu device, or `None` locally when no adapter exists (the skip is reported: [`skip_gpu`]). With
/// `CHORUS_REQUIRE_GPU=1` (CI) a missing adapter fails the test instead, so a broken lavapipe install cannot
/// turn GPU tests into skips.
pub fn wgpu_or_skip(test: &str) -> Option<burn::tensor::Device> {
    match chorus_engine::device(Backend::Wgpu) {
        Ok(d) => Some(d),
        Err(e) => {
            skip_gpu(test, &format!("wgpu is unavailable: {e}"));
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
            skip_gpu(test, &format!("no GPU context: {e}"));
            None
        }
    }
}

/// GPU tests this process skipped, in order.
static GPU_SKIPS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Skips a GPU test visibly, or fails it under `CHORUS_REQUIRE_GPU=1`.
///
/// Neither libtest nor nextest has a run-time "skipped" result: `#[ignore]` is fixed when the test binary
/// is compiled, and whether an adapter exists is only known when the test runs. So a skipped GPU test
/// passes, and the skip is made visible around it instead:
/// - one `SKIPPED: <test>: …` line goes straight to the process's stderr. libtest captures only what
///   `print!`/`eprint!` write (the old `eprintln!` vanished with a passing test's output), so `cargo test`
///   shows this line next to the test's `ok`;
/// - at exit, after libtest's `test result: …` summary, one more line counts and names every GPU test the
///   binary skipped (`SKIPPED: 7 GPU tests …`), so a summary that reads "0 failed" still says what did not run;
/// - `cargo nextest` runs each test in its own process and hides a passing test's output: both lines are in
///   that output, shown with `--success-output immediate` (or `final`, or `--no-capture`);
/// - with `CHORUS_REQUIRE_GPU=1` (CI) the test panics instead of skipping.
pub fn skip_gpu(test: &str, why: &str) {
    if std::env::var("CHORUS_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("{test}: CHORUS_REQUIRE_GPU=1 but {why}");
    }
    let line = format!("SKIPPED: {test}: no GPU adapter ({why}); CHORUS_REQUIRE_GPU=1 makes this a failure\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    GPU_SKIPS.lock().unwrap_or_else(|p| p.into_inner()).push(test.to_string());
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        // A failed registration only loses the summary line; the per-test lines are already out.
        let _ = atexit(report_gpu_skips);
    });
}

unsafe extern "C" {
    /// C's `atexit` (libc; the CRT on Windows): runs `f` when the process exits normally, which libtest
    /// does after printing its summary.
    safe fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
}

/// The exit-time summary of [`skip_gpu`].
extern "C" fn report_gpu_skips() {
    // `try_lock`: a test thread still holding the lock at exit must not hang the process.
    let Ok(skips) = GPU_SKIPS.try_lock() else { return };
    if !skips.is_empty() {
        let line = format!(
            "SKIPPED: {} GPU test{} in this test binary (no GPU adapter; CHORUS_REQUIRE_GPU=1 fails them): {}\n",
            skips.len(),
            if skips.len() == 1 { "" } else { "s" },
            skips.join(", ")
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
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
