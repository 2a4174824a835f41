//! chorus-web in a real browser (headless Chromium, WebGPU through SwiftShader): a tiny GGUF model built
//! in the page generates the same greedy tokens on WebGPU as on the CPU backend, through the public
//! wasm-bindgen API and through the engine.
#![cfg(target_arch = "wasm32")]

use chorus_engine::{Backend, LoadedModel, Prompt};
use chorus_models::{FileBytes, GgufFile, ModelFiles};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn engine(backend: Backend) -> LoadedModel {
    let device = chorus_engine::backend::device_async(backend).await.expect("device");
    let bytes = chorus_models::gguf_write::tiny_llama(3);
    let files = ModelFiles::from_gguf(GgufFile::parse("tiny.gguf", FileBytes::from_vec(bytes)).unwrap()).unwrap();
    LoadedModel::load(files, backend, &device, None, &mut |_, _| {}).unwrap()
}

#[wasm_bindgen_test]
async fn webgpu_and_cpu_agree_in_the_browser() {
    let cpu = engine(Backend::Cpu).await;
    let gpu = engine(Backend::Wgpu).await;
    let ids = cpu.encode(&Prompt::Text("Hello, tiny world!".into())).unwrap();
    let a = cpu.greedy_trace_async(&ids, 8, 3).await.unwrap();
    let b = gpu.greedy_trace_async(&ids, 8, 3).await.unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.token, y.token, "step {i}");
        assert!((x.top[0].1 - y.top[0].1).abs() <= 1e-4, "step {i}: {:?} vs {:?}", x.top, y.top);
    }
}

#[wasm_bindgen_test]
async fn public_api_streams_tokens() {
    let bytes = chorus_models::gguf_write::tiny_llama(3);
    let model = chorus_web::load_gguf(bytes, Some("wgpu".into())).await.map_err(JsValue::from).expect("load");
    assert_eq!(model.backend(), "wgpu");
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::<f64>::new()));
    let seen2 = seen.clone();
    let cb = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue, JsValue)>::new(move |id: JsValue, _t: JsValue| {
        seen2.borrow_mut().push(id.as_f64().unwrap_or(-1.0));
    });
    let opts = js_sys::JSON::parse(r#"{"max_new_tokens": 5, "stop_at_eos": false}"#).unwrap();
    let promise = model.generate("Hi".into(), false, opts, Some(cb.as_ref().clone().into()));
    let out = wasm_bindgen_futures::JsFuture::from(promise).await.expect("generate");
    let tokens = js_sys::Reflect::get(&out, &"tokens".into()).unwrap();
    assert_eq!(js_sys::Array::from(&tokens).length(), 5);
    assert_eq!(seen.borrow().len(), 5, "one callback per token");
    // Unknown option keys are an error, not ignored.
    let bad = js_sys::JSON::parse(r#"{"max_tokens": 5}"#).unwrap();
    let err = wasm_bindgen_futures::JsFuture::from(model.generate("Hi".into(), false, bad, None)).await.unwrap_err();
    let msg = js_sys::Reflect::get(&err, &"message".into()).unwrap().as_string().unwrap_or_default();
    assert!(msg.contains("max_tokens"), "{msg}");
}
