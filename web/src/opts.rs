//! Option objects across the boundary: key checks (serde-wasm-bindgen reads only the fields a struct
//! declares, so a misspelt option would otherwise be ignored silently), field access, and results turned
//! into plain JSON-like objects.

use chorus_core::GenerateOptions;
use js_sys::{Object, Reflect};
use serde::Serialize;
use wasm_bindgen::JsValue;

use crate::error::WebError;

/// The fields of `GenerateOptions`, as JavaScript spells them.
pub const GENERATE_KEYS: &[&str] = &["max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop", "stop_at_eos"];

/// Refuses keys of `obj` outside `allowed`; `what` names the object in the message.
pub fn check_keys(obj: &JsValue, allowed: &[&str], what: &str) -> Result<(), WebError> {
    if !obj.is_object() {
        return Err(WebError::Input(format!("{what} must be an object")));
    }
    for k in Object::keys(&Object::from(obj.clone())).iter() {
        let k = k.as_string().unwrap_or_default();
        if !allowed.contains(&k.as_str()) {
            return Err(WebError::Input(format!("{what}: unknown field '{k}' (known: {})", allowed.join(", "))));
        }
    }
    Ok(())
}

/// `obj[key]` unless it is undefined or null.
pub fn field(obj: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(obj, &JsValue::from_str(key)).ok().filter(|v| !v.is_undefined() && !v.is_null())
}

/// The `GenerateOptions` in `options`, which may also hold the `extra` keys of the caller (read
/// elsewhere); anything else is an error.
pub fn generate_options(options: &JsValue, extra: &[&str]) -> Result<GenerateOptions, WebError> {
    if options.is_undefined() || options.is_null() {
        return Ok(GenerateOptions::default());
    }
    let allowed: Vec<&str> = GENERATE_KEYS.iter().chain(extra).copied().collect();
    check_keys(options, &allowed, "options")?;
    let only = Object::new();
    for k in GENERATE_KEYS {
        if let Some(v) = field(options, k) {
            let _ = Reflect::set(&only, &JsValue::from_str(k), &v);
        }
    }
    serde_wasm_bindgen::from_value(only.into()).map_err(|e| WebError::Input(format!("options: {e}")))
}

/// A result as a plain object (maps as objects, `None` as `null`), as JSON would carry it.
pub fn to_js<T: Serialize + ?Sized>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsValue::from(WebError::Input(format!("result: {e}"))))
}
