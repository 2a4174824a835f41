//! Twin-Merging in the page: a twin pack (shared model, every task's SVD factors, the router) loaded
//! from URLs or bytes; each prompt is routed, and the shared model runs with the tasks' exclusive
//! knowledge mixed by the router's weights, without materialising a merged model.

use std::path::Path;

use burn::tensor::Device;
use chorus_engine::twin::{MixMode, Router, TwinModel};
use chorus_engine::{GenerateOutput, Prompt};
use chorus_merge::TwinPack;
use chorus_models::{FileBytes, SafetensorsSet};
use js_sys::Function;
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::error::{WebError, js};
use crate::model::{LoadOptions, pick_device, read_source};
use crate::opts::{self, check_keys, field};

/// Keys of a twin source object.
const SOURCE_KEYS: &[&str] = &["twin", "factors", "shared", "router", "routerWeights", "name"];

/// A twin pack ready to route and generate.
#[wasm_bindgen]
pub struct ChorusTwin {
    twin: std::rc::Rc<TwinModel>,
}

#[derive(Serialize)]
struct TwinResult<'a> {
    tasks: &'a [String],
    weights: &'a [f32],
    mode: MixMode,
    output: &'a GenerateOutput,
}

async fn bytes_of(source: &JsValue, key: &str, opts: &mut LoadOptions) -> Result<Vec<u8>, WebError> {
    let v = field(source, key).ok_or_else(|| WebError::Input(format!("twin source: `{key}` is missing")))?;
    crate::model::file_bytes(&v, key, opts).await
}

/// Loads a twin pack. `source`: `{twin: file (twin.json), factors: file | file[] (the pack's twin/
/// shards), shared: ModelSource (the shared model), router: file (router.json), routerWeights: file
/// (router.safetensors), name?}`; files as in `loadModel`. `options` as in `loadModel`.
#[wasm_bindgen(js_name = loadTwin)]
pub async fn load_twin(
    #[wasm_bindgen(unchecked_param_type = "TwinSource")] source: JsValue,
    #[wasm_bindgen(unchecked_param_type = "LoadOptions | undefined")] options: JsValue,
) -> Result<ChorusTwin, JsError> {
    load(&source, &options).await.map_err(js)
}

async fn load(source: &JsValue, options: &JsValue) -> Result<ChorusTwin, WebError> {
    let mut opts = LoadOptions::parse(options)?;
    check_keys(source, SOURCE_KEYS, "twin source")?;
    let name = field(source, "name").and_then(|n| n.as_string()).unwrap_or_else(|| "twin".into());
    let dir = Path::new(&name);
    let meta = bytes_of(source, "twin", &mut opts).await?;
    let factors = match field(source, "factors") {
        None => None,
        Some(f) => {
            let list = if js_sys::Array::is_array(&f) { js_sys::Array::from(&f).to_vec() } else { vec![f] };
            let mut shards = Vec::with_capacity(list.len());
            for (i, v) in list.iter().enumerate() {
                let b = crate::model::file_bytes(v, &format!("factors[{i}]"), &mut opts).await?;
                shards.push((format!("{name}/twin/{i}"), FileBytes::from_vec(b)));
            }
            Some(SafetensorsSet::from_shards(shards)?)
        }
    };
    let pack = TwinPack::from_parts(dir, &meta, factors).map_err(|e| WebError::Engine(e.into()))?;
    let shared = field(source, "shared").ok_or_else(|| WebError::Input("twin source: `shared` is missing".into()))?;
    let files = read_source(&shared, &mut opts).await?;
    let rj = bytes_of(source, "router", &mut opts).await?;
    let rw = bytes_of(source, "routerWeights", &mut opts).await?;
    let router = Router::from_bytes(
        &rj,
        &rw,
        &Device::flex(),
        (&format!("{name}/router.json"), &format!("{name}/router.safetensors")),
    )?;
    let (backend, device) = pick_device(opts.backend).await?;
    let mut twin = TwinModel::from_parts(pack, files, Some(router), backend, &device)?;
    twin.use_gpu_kernel().await?;
    Ok(ChorusTwin { twin: std::rc::Rc::new(twin) })
}

#[wasm_bindgen]
impl ChorusTwin {
    /// Task names, in the order of every weight vector.
    #[wasm_bindgen(getter)]
    pub fn tasks(&self) -> Vec<String> {
        self.twin.pack.meta.tasks.clone()
    }

    /// The backend the shared model runs on.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.twin.model.backend.name().to_string()
    }

    /// The router's weights of `prompt` (on the simplex, in task order).
    #[wasm_bindgen(unchecked_return_type = "Promise<number[]>")]
    pub fn route(&self, prompt: String) -> js_sys::Promise {
        let twin = std::rc::Rc::clone(&self.twin);
        wasm_bindgen_futures::future_to_promise(async move {
            let ids = twin.model.encode(&Prompt::Text(prompt)).map_err(WebError::from)?;
            let w = twin.route_async(&[ids]).await.map_err(WebError::from)?;
            opts::to_js(&w[0])
        })
    }

    /// Routes `prompt` and generates with the tasks' exclusive knowledge mixed by its weights.
    /// `options`: `GenerateOptions` plus `mode` ("row": the prompt's own weights, the default; "group":
    /// one merged copy for the call). `on_token(id, text)` streams tokens. Resolves to `{tasks, weights,
    /// mode, output}`.
    #[wasm_bindgen(unchecked_return_type = "Promise<TwinResult>")]
    pub fn generate(
        &self,
        prompt: String,
        #[wasm_bindgen(unchecked_param_type = "TwinOptions | undefined")] options: JsValue,
        #[wasm_bindgen(unchecked_param_type = "((id: number, text: string) => void) | undefined")] on_token: Option<
            Function,
        >,
    ) -> js_sys::Promise {
        let twin = std::rc::Rc::clone(&self.twin);
        wasm_bindgen_futures::future_to_promise(async move {
            let gen_opts = opts::generate_options(&options, &["mode"])?;
            let mode = match field(&options, "mode").map(|m| m.as_string()) {
                None => MixMode::Row,
                Some(Some(m)) if m == "row" => MixMode::Row,
                Some(Some(m)) if m == "group" => MixMode::Group,
                Some(other) => {
                    return Err(WebError::Input(format!("options: mode {other:?} (known: row, group)")).into());
                }
            };
            let ids = twin.model.encode(&Prompt::Text(prompt)).map_err(WebError::from)?;
            let (out, w) = twin
                .generate_async(&[ids], mode, &gen_opts, &mut |_, id, delta| {
                    if let Some(f) = &on_token {
                        let _ = f.call2(&JsValue::NULL, &JsValue::from(id), &JsValue::from_str(delta));
                    }
                })
                .await
                .map_err(WebError::from)?;
            opts::to_js(&TwinResult { tasks: &twin.pack.meta.tasks, weights: &w[0], mode, output: &out[0] })
        })
    }
}
