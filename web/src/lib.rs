//! chorus-web: the wasm-bindgen API of Chorus for the browser (and any wasm host).
//!
//! Models are loaded from bytes (a fetched GGUF file); generation runs on burn's WebGPU backend when the
//! page asks for it and the browser has an adapter, otherwise on the Flex CPU backend, with the same
//! results. Options and results cross the boundary through serde-wasm-bindgen; errors become `JsError`s
//! carrying the engine's message. Async methods return Promises because read-backs must be awaited.

use std::rc::Rc;

use chorus_core::GenerateOptions;
use chorus_engine::{Backend, LoadedModel, Prompt};
use chorus_models::{FileBytes, GgufFile, ModelFiles};
use wasm_bindgen::prelude::*;

/// The fields of `GenerateOptions`, as JavaScript spells them.
const GENERATE_KEYS: &[&str] = &["max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop", "stop_at_eos"];

/// serde-wasm-bindgen reads only the fields a struct declares, so `deny_unknown_fields` never fires; a
/// misspelt option would be silently ignored. Check the object's own keys instead.
fn check_keys(obj: &JsValue, allowed: &[&str]) -> Result<(), JsError> {
    if !obj.is_object() {
        return Err(js_err("options must be an object"));
    }
    let keys = js_sys::Object::keys(&js_sys::Object::from(obj.clone()));
    for k in keys.iter() {
        let k = k.as_string().unwrap_or_default();
        if !allowed.contains(&k.as_str()) {
            return Err(js_err(format!("options: unknown field '{k}' (known: {})", allowed.join(", "))));
        }
    }
    Ok(())
}

/// A model loaded in the page.
#[wasm_bindgen]
pub struct ChorusModel {
    model: Rc<LoadedModel>,
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Loads a GGUF model from its bytes onto `backend` ("cpu" or "wgpu").
#[wasm_bindgen(js_name = loadGguf)]
pub async fn load_gguf(bytes: Vec<u8>, backend: Option<String>) -> Result<ChorusModel, JsError> {
    let backend: Backend = backend.as_deref().unwrap_or("cpu").parse().map_err(js_err)?;
    let device = chorus_engine::backend::device_async(backend).await.map_err(js_err)?;
    let g = GgufFile::parse("model.gguf", FileBytes::from_vec(bytes)).map_err(js_err)?;
    let files = ModelFiles::from_gguf(g).map_err(js_err)?;
    let model = LoadedModel::load(files, backend, &device, None, &mut |_, _| {}).map_err(js_err)?;
    Ok(ChorusModel { model: Rc::new(model) })
}

#[wasm_bindgen]
impl ChorusModel {
    /// Token ids of `text` (BOS added when the model asks for it).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, JsError> {
        self.model.encode(&Prompt::Text(text.to_string())).map_err(js_err)
    }

    /// The backend the model runs on.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.model.backend.name().to_string()
    }

    /// Generates text. `options` is a `GenerateOptions` object (`max_new_tokens`, `temperature`,
    /// `top_k`, `top_p`, `seed`, `stop`, `stop_at_eos`; unknown keys are an error); `on_token(id, text)`
    /// is called for each token. Resolves to the `GenerateOutput` object.
    pub fn generate(
        &self,
        prompt: String,
        chat: bool,
        options: JsValue,
        on_token: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let model = Rc::clone(&self.model);
        wasm_bindgen_futures::future_to_promise(async move {
            let opts: GenerateOptions = if options.is_undefined() || options.is_null() {
                GenerateOptions::default()
            } else {
                check_keys(&options, GENERATE_KEYS).map_err(JsValue::from)?;
                serde_wasm_bindgen::from_value(options).map_err(|e| JsValue::from(js_err(format!("options: {e}"))))?
            };
            let p = if chat { Prompt::Chat { system: None, user: prompt } } else { Prompt::Text(prompt) };
            let ids = model.encode(&p).map_err(|e| JsValue::from(js_err(e)))?;
            let out = model
                .generate_async(&ids, &opts, &mut |id, delta| {
                    if let Some(f) = &on_token {
                        let _ = f.call2(&JsValue::NULL, &JsValue::from(id), &JsValue::from_str(delta));
                    }
                })
                .await
                .map_err(|e| JsValue::from(js_err(e)))?;
            serde_wasm_bindgen::to_value(&out).map_err(|e| JsValue::from(js_err(e)))
        })
    }
}
