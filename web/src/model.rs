//! Loading a model in the page: from bytes or URLs, GGUF or an HF layout (config.json + tokenizer.json +
//! safetensors shards), onto WebGPU when the browser has an adapter and the CPU (Flex) otherwise; and
//! plain generation with a per-token callback.

use std::sync::Arc;

use chorus_core::GenerateOptions;
use chorus_engine::{Backend, LoadedModel, Prompt};
use chorus_models::{FileBytes, GgufFile, ModelFiles};
use js_sys::{Function, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::error::{WebError, js};
use crate::fetch::{self, Remote};
use crate::opts::{self, check_keys, field};

/// Keys of a load options object.
const LOAD_KEYS: &[&str] = &["backend", "cache", "onProgress"];
/// Keys of a model source object.
const SOURCE_KEYS: &[&str] = &["gguf", "config", "tokenizer", "tokenizerConfig", "weights", "name"];

/// A model loaded in the page.
#[wasm_bindgen]
pub struct ChorusModel {
    pub(crate) model: Arc<LoadedModel>,
}

/// One file of a source: bytes in hand, or somewhere to fetch them from.
enum FileRef {
    Bytes(Vec<u8>),
    Remote(Remote),
}

impl FileRef {
    /// `string` (URL), `{url, sha256?}`, `ArrayBuffer` or `Uint8Array`; `what` names the field.
    fn parse(v: &JsValue, what: &str) -> Result<Self, WebError> {
        if let Some(url) = v.as_string() {
            return Ok(Self::Remote(Remote { url, sha256: None }));
        }
        if v.is_instance_of::<js_sys::ArrayBuffer>() || v.is_instance_of::<Uint8Array>() {
            return Ok(Self::Bytes(Uint8Array::new(v).to_vec()));
        }
        if v.is_object() {
            check_keys(v, &["url", "sha256"], what)?;
            let url = field(v, "url")
                .and_then(|u| u.as_string())
                .ok_or_else(|| WebError::Input(format!("{what}: `url` must be a string")))?;
            let sha256 = match field(v, "sha256") {
                None => None,
                Some(s) => {
                    Some(s.as_string().ok_or_else(|| WebError::Input(format!("{what}: `sha256` must be a string")))?)
                }
            };
            return Ok(Self::Remote(Remote { url, sha256 }));
        }
        Err(WebError::Input(format!("{what}: expected a URL, {{url, sha256}}, an ArrayBuffer or a Uint8Array")))
    }

    fn name(&self, fallback: &str) -> String {
        match self {
            Self::Bytes(_) => fallback.to_string(),
            Self::Remote(r) => r.url.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or(fallback).to_string(),
        }
    }

    async fn bytes(self, use_cache: bool, progress: &mut Progress) -> Result<Vec<u8>, WebError> {
        match self {
            Self::Bytes(b) => Ok(b),
            Self::Remote(r) => {
                fetch::get(&r, use_cache, &mut |url, loaded, total, cached| {
                    progress.emit(&[
                        ("phase", JsValue::from_str("download")),
                        ("url", JsValue::from_str(url)),
                        ("loaded", JsValue::from_f64(loaded)),
                        ("total", total.map(JsValue::from_f64).unwrap_or(JsValue::NULL)),
                        ("cached", JsValue::from_bool(cached)),
                    ])
                })
                .await
            }
        }
    }
}

/// The page's progress callback, if it gave one (its exceptions are ignored: progress is advisory).
pub(crate) struct Progress(Option<Function>);

impl Progress {
    pub(crate) fn emit(&mut self, fields: &[(&str, JsValue)]) {
        if let Some(f) = &self.0 {
            let o = js_sys::Object::new();
            for (k, v) in fields {
                let _ = Reflect::set(&o, &JsValue::from_str(k), v);
            }
            let _ = f.call1(&JsValue::NULL, &o);
        }
    }
}

/// Parsed load options.
pub(crate) struct LoadOptions {
    pub(crate) backend: Option<Backend>,
    pub(crate) cache: bool,
    pub(crate) progress: Progress,
}

impl LoadOptions {
    pub(crate) fn parse(v: &JsValue) -> Result<Self, WebError> {
        if v.is_undefined() || v.is_null() {
            return Ok(Self { backend: None, cache: true, progress: Progress(None) });
        }
        check_keys(v, LOAD_KEYS, "load options")?;
        let backend = match field(v, "backend").and_then(|b| b.as_string()).as_deref() {
            None | Some("auto") => None,
            Some("webgpu") | Some("wgpu") => Some(Backend::Wgpu),
            Some("cpu") => Some(Backend::Cpu),
            Some(other) => {
                return Err(WebError::Input(format!("load options: backend {other:?} (known: auto, webgpu, cpu)")));
            }
        };
        let cache = match field(v, "cache") {
            None => true,
            Some(c) => c.as_bool().ok_or_else(|| WebError::Input("load options: `cache` must be a boolean".into()))?,
        };
        let progress = match field(v, "onProgress") {
            None => None,
            Some(f) => Some(
                f.dyn_into::<Function>()
                    .map_err(|_| WebError::Input("load options: `onProgress` must be a function".into()))?,
            ),
        };
        Ok(Self { backend, cache, progress: Progress(progress) })
    }
}

/// The burn device for `backend`. `None` (auto) is WebGPU when the browser has a hardware adapter, and
/// the CPU when it has none or only a software one (SwiftShader): there the Flex backend is faster.
pub(crate) async fn pick_device(backend: Option<Backend>) -> Result<(Backend, burn::tensor::Device), WebError> {
    if let Some(b) = backend {
        return Ok((b, chorus_engine::backend::device_async(b).await?));
    }
    if let Ok(d) = chorus_engine::backend::device_async(Backend::Wgpu).await
        && !chorus_engine::backend::wgpu_is_software().await.unwrap_or(true)
    {
        return Ok((Backend::Wgpu, d));
    }
    Ok((Backend::Cpu, chorus_engine::backend::device_async(Backend::Cpu).await?))
}

/// Reads a [`ModelSource`] into model files.
pub(crate) async fn read_source(source: &JsValue, opts: &mut LoadOptions) -> Result<ModelFiles, WebError> {
    // A file reference on its own (bytes, a URL, or `{url, sha256}` as documented) is a GGUF.
    let file_ref = source.is_instance_of::<js_sys::ArrayBuffer>()
        || source.is_instance_of::<Uint8Array>()
        || source.is_string()
        || field(source, "url").is_some();
    if file_ref {
        let f = FileRef::parse(source, "source")?;
        let name = f.name("model.gguf");
        let bytes = f.bytes(opts.cache, &mut opts.progress).await?;
        return Ok(ModelFiles::from_gguf(GgufFile::parse(&name, FileBytes::from_vec(bytes))?)?);
    }
    check_keys(source, SOURCE_KEYS, "model source")?;
    if let Some(g) = field(source, "gguf") {
        let f = FileRef::parse(&g, "gguf")?;
        let name = f.name("model.gguf");
        let bytes = f.bytes(opts.cache, &mut opts.progress).await?;
        return Ok(ModelFiles::from_gguf(GgufFile::parse(&name, FileBytes::from_vec(bytes))?)?);
    }
    let need = |k: &str| {
        field(source, k).ok_or_else(|| {
            WebError::Input(format!(
                "model source: `{k}` is missing (give `gguf`, or `config`, `tokenizer` and `weights`)"
            ))
        })
    };
    let name = field(source, "name").and_then(|n| n.as_string()).unwrap_or_else(|| "model".into());
    let config = FileRef::parse(&need("config")?, "config")?.bytes(opts.cache, &mut opts.progress).await?;
    let tokenizer = FileRef::parse(&need("tokenizer")?, "tokenizer")?.bytes(opts.cache, &mut opts.progress).await?;
    let tokenizer_config = match field(source, "tokenizerConfig") {
        None => None,
        Some(t) => {
            let b = FileRef::parse(&t, "tokenizerConfig")?.bytes(opts.cache, &mut opts.progress).await?;
            Some(
                serde_json::from_slice(&b)
                    .map_err(|e| WebError::Input(format!("{name}: tokenizerConfig is not JSON: {e}")))?,
            )
        }
    };
    let weights = need("weights")?;
    let list: Vec<JsValue> =
        if js_sys::Array::is_array(&weights) { js_sys::Array::from(&weights).to_vec() } else { vec![weights] };
    if list.is_empty() {
        return Err(WebError::Input("model source: `weights` is empty".into()));
    }
    let mut shards = Vec::with_capacity(list.len());
    for (i, w) in list.iter().enumerate() {
        let f = FileRef::parse(w, &format!("weights[{i}]"))?;
        let shard = f.name(&format!("model-{i:05}.safetensors"));
        shards.push((shard, FileBytes::from_vec(f.bytes(opts.cache, &mut opts.progress).await?)));
    }
    Ok(ModelFiles::from_hf_parts(&name, &config, &tokenizer, tokenizer_config, shards)?)
}

/// The bytes of one file reference (`what` names it in errors).
pub(crate) async fn file_bytes(v: &JsValue, what: &str, opts: &mut LoadOptions) -> Result<Vec<u8>, WebError> {
    FileRef::parse(v, what)?.bytes(opts.cache, &mut opts.progress).await
}

/// Loads model files onto the chosen device, reporting tensor progress.
pub(crate) async fn load_files(files: ModelFiles, opts: &mut LoadOptions) -> Result<ChorusModel, WebError> {
    let (backend, device) = pick_device(opts.backend).await?;
    let progress = &mut opts.progress;
    let model = LoadedModel::load(files, backend, &device, None, &mut |done, total| {
        progress.emit(&[
            ("phase", JsValue::from_str("load")),
            ("loaded", JsValue::from_f64(done as f64)),
            ("total", JsValue::from_f64(total as f64)),
        ])
    })?;
    Ok(ChorusModel { model: Arc::new(model) })
}

/// Loads a model. `source` is a GGUF file (URL string, `{url, sha256}`, `ArrayBuffer` or `Uint8Array`),
/// `{gguf: file}`, or an HF layout `{config, tokenizer, weights: file | file[], tokenizerConfig?, name?}`.
/// `options`: `{backend?: "auto" | "webgpu" | "cpu", cache?: boolean, onProgress?: (event) => void}`;
/// downloads go through Cache Storage unless `cache` is false, and a given `sha256` is verified (also on a
/// cached copy, which is fetched again when it no longer matches; without a `sha256` a cached copy is used
/// as it is: pass `cache: false` or call `clearModelCache` when the file behind a URL changed).
#[wasm_bindgen(js_name = loadModel)]
pub async fn load_model(
    #[wasm_bindgen(unchecked_param_type = "ModelSource")] source: JsValue,
    #[wasm_bindgen(unchecked_param_type = "LoadOptions | undefined")] options: JsValue,
) -> Result<ChorusModel, JsError> {
    let mut opts = LoadOptions::parse(&options).map_err(js)?;
    let files = read_source(&source, &mut opts).await.map_err(js)?;
    load_files(files, &mut opts).await.map_err(js)
}

/// Loads a GGUF model from its bytes onto `backend` ("cpu", "webgpu"; default "cpu").
#[wasm_bindgen(js_name = loadGguf)]
pub async fn load_gguf(bytes: Vec<u8>, backend: Option<String>) -> Result<ChorusModel, JsError> {
    let backend: Backend = backend.as_deref().unwrap_or("cpu").parse().map_err(|e| js(WebError::Engine(e)))?;
    let mut opts = LoadOptions { backend: Some(backend), cache: false, progress: Progress(None) };
    let g = GgufFile::parse("model.gguf", FileBytes::from_vec(bytes)).map_err(|e| js(e.into()))?;
    let files = ModelFiles::from_gguf(g).map_err(|e| js(e.into()))?;
    load_files(files, &mut opts).await.map_err(js)
}

/// Whether this browser offers a WebGPU adapter that burn can run on.
#[wasm_bindgen(js_name = webgpuAvailable)]
pub async fn webgpu_available() -> bool {
    chorus_engine::backend::device_async(Backend::Wgpu).await.is_ok()
}

/// SHA-256 (hex) of bytes, as `sha256` attributes expect it.
#[wasm_bindgen(js_name = sha256Hex)]
pub fn sha256_hex(bytes: &[u8]) -> String {
    fetch::sha256_hex(bytes)
}

/// Removes every model file this origin cached. Resolves to whether there was a cache.
#[wasm_bindgen(js_name = clearModelCache)]
pub async fn clear_model_cache() -> Result<bool, JsError> {
    fetch::clear().await.map_err(js)
}

#[wasm_bindgen]
impl ChorusModel {
    /// Token ids of `text` (BOS added when the model asks for it).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, JsError> {
        self.model.encode(&Prompt::Text(text.to_string())).map_err(|e| js(e.into()))
    }

    /// Text of token ids.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, JsError> {
        self.model.files.tokenizer.decode(ids, false).map_err(|e| js(e.into()))
    }

    /// The backend the model runs on ("cpu" or "wgpu").
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.model.backend.name().to_string()
    }

    /// Milliseconds the weights took to load onto the device.
    #[wasm_bindgen(getter, js_name = loadMs)]
    pub fn load_ms(&self) -> f64 {
        self.model.load_ms
    }

    /// Generates text. `options` is a `GenerateOptions` object (`max_new_tokens`, `temperature`,
    /// `top_k`, `top_p`, `seed`, `stop`, `stop_at_eos`; unknown keys are an error); `on_token(id, text)`
    /// is called for each token. Resolves to the `GenerateOutput` object.
    #[wasm_bindgen(unchecked_return_type = "Promise<GenerateOutput>")]
    pub fn generate(
        &self,
        prompt: String,
        chat: bool,
        #[wasm_bindgen(unchecked_param_type = "GenerateOptions | undefined")] options: JsValue,
        #[wasm_bindgen(unchecked_param_type = "((id: number, text: string) => void) | undefined")] on_token: Option<
            Function,
        >,
    ) -> js_sys::Promise {
        let model = Arc::clone(&self.model);
        wasm_bindgen_futures::future_to_promise(async move {
            let opts: GenerateOptions = opts::generate_options(&options, &[])?;
            let p = if chat { Prompt::Chat { system: None, user: prompt } } else { Prompt::Text(prompt) };
            let ids = model.encode(&p).map_err(WebError::from)?;
            let out = model
                .generate_async(&ids, &opts, &mut |id, delta| {
                    if let Some(f) = &on_token {
                        let _ = f.call2(&JsValue::NULL, &JsValue::from(id), &JsValue::from_str(delta));
                    }
                })
                .await
                .map_err(WebError::from)?;
            opts::to_js(&out)
        })
    }
}
