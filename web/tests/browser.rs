//! chorus-web in a real browser (headless Chromium, WebGPU through SwiftShader): a tiny GGUF model built
//! in the page generates the same greedy tokens on WebGPU as on the CPU backend, through the public
//! wasm-bindgen API and through the engine; the zoo's models (HF-layout bytes) fuse to native `chorus
//! fuse`'s tokens and α on both backends; bad options name their field; the shipped twin pack routes.
#![cfg(target_arch = "wasm32")]

use chorus_engine::{Backend, LoadedModel, Prompt};
use chorus_models::{FileBytes, GgufFile, ModelFiles};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn engine_from(bytes: Vec<u8>, backend: Backend, mode: Option<chorus_models::WeightMode>) -> LoadedModel {
    let device = chorus_engine::backend::device_async(backend).await.expect("device");
    let files = ModelFiles::from_gguf(GgufFile::parse("tiny.gguf", FileBytes::from_vec(bytes)).unwrap()).unwrap();
    LoadedModel::load(files, backend, &device, mode, &mut |_, _| {}).unwrap()
}

/// WebGPU's default is the device decoder (the file's blocks in the WGSL matrix products, the same
/// kernels as natively): on the f32 tiny Llama and on the one whose projections hold every block type,
/// the same greedy tokens as the CPU's exact f32 path and top logits within 1e-4.
#[wasm_bindgen_test]
async fn webgpu_and_cpu_agree_in_the_browser() {
    use chorus_models::WeightMode;
    for bytes in [chorus_models::gguf_write::tiny_llama(3), chorus_models::gguf_write::tiny_llama_quantized(3)] {
        let cpu = engine_from(bytes.clone(), Backend::Cpu, Some(WeightMode::F32)).await;
        let gpu = engine_from(bytes, Backend::Wgpu, None).await;
        assert!(gpu.decoder.gpu().is_some(), "WebGPU loads the device decoder");
        let ids = cpu.encode(&Prompt::Text("Hello, tiny world!".into())).unwrap();
        let a = cpu.greedy_trace_async(&ids, 8, 3).await.unwrap();
        let b = gpu.greedy_trace_async(&ids, 8, 3).await.unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.token, y.token, "step {i}");
            assert!((x.top[0].1 - y.top[0].1).abs() <= 1e-4, "step {i}: {:?} vs {:?}", x.top, y.top);
        }
    }
}

/// The browser's CPU default is the CPU engine (the file's blocks, activations quantized to Q8_0/Q8_K as
/// natively): on the tiny Llama with every block type its logits differ from the f32 path by the
/// rounding of 8-bit activations (not 0: the f32 path did not run), within the native test's bound.
#[wasm_bindgen_test]
async fn browser_cpu_default_is_the_cpu_engine() {
    use chorus_models::WeightMode;
    let bytes = chorus_models::gguf_write::tiny_llama_quantized(11);
    let q = engine_from(bytes.clone(), Backend::Cpu, None).await;
    let f = engine_from(bytes, Backend::Cpu, Some(WeightMode::F32)).await;
    assert!(q.decoder.cpu().is_some(), "the CPU default loads the CPU engine");
    let ids = q.encode(&Prompt::Text("Hello, tiny world!".into())).unwrap();
    let all = |m: &LoadedModel| {
        let mut cache = m.decoder.new_cache(1);
        let x = m.decoder.forward(std::slice::from_ref(&ids), &[vec![true; ids.len()]], &mut cache, true).unwrap();
        chorus_models::decoder::to_rows(x).unwrap()
    };
    let (a, b) = (all(&q), all(&f));
    let range = b.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a.iter().flatten().zip(b.iter().flatten()).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    wasm_bindgen_test::console_log!("wasm CPU engine vs f32: {:.3e} of the range", worst / range);
    assert!(worst > 1e-6 * range, "8-bit activations gave f32-exact logits ({worst})");
    assert!(worst <= 5e-3 * range, "{worst} vs range {range}");
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
    // The general loader takes the same GGUF bytes, alone or as {gguf}, and "auto" picks a backend.
    let g = self::bytes(&chorus_models::gguf_write::tiny_llama(3));
    for source in [g.clone(), obj(&[("gguf", g)])] {
        let m =
            chorus_web::load_model(source, JsValue::UNDEFINED).await.map_err(JsValue::from).expect("loadModel(gguf)");
        assert_eq!(
            m.tokenize("Hi").map_err(JsValue::from).unwrap(),
            model.tokenize("Hi").map_err(JsValue::from).unwrap()
        );
    }
    // Unknown option keys are an error, not ignored.
    let bad = js_sys::JSON::parse(r#"{"max_tokens": 5}"#).unwrap();
    let err = wasm_bindgen_futures::JsFuture::from(model.generate("Hi".into(), false, bad, None)).await.unwrap_err();
    let msg = js_sys::Reflect::get(&err, &"message".into()).unwrap().as_string().unwrap_or_default();
    assert!(msg.contains("max_tokens"), "{msg}");
}

/// The zoo's shipped files, as a page would fetch them.
mod zoo {
    pub const TOKENIZER: &[u8] = include_bytes!("../../crates/zoo/family/small-base/tokenizer.json");
    pub fn config(name: &str) -> &'static [u8] {
        match name {
            "large-base" => include_bytes!("../../crates/zoo/family/large-base/config.json"),
            "small-base" => include_bytes!("../../crates/zoo/family/small-base/config.json"),
            "small-add" => include_bytes!("../../crates/zoo/family/small-add/config.json"),
            _ => unreachable!("{name}"),
        }
    }
    pub fn weights(name: &str) -> &'static [u8] {
        match name {
            "large-base" => include_bytes!("../../crates/zoo/family/large-base/model.safetensors"),
            "small-base" => include_bytes!("../../crates/zoo/family/small-base/model.safetensors"),
            "small-add" => include_bytes!("../../crates/zoo/family/small-add/model.safetensors"),
            _ => unreachable!("{name}"),
        }
    }
    pub mod twin {
        pub const META: &[u8] = include_bytes!("../../crates/zoo/family/twin/twin.json");
        pub const FACTORS: &[u8] = include_bytes!("../../crates/zoo/family/twin/twin/model.safetensors");
        pub const ROUTER: &[u8] = include_bytes!("../../crates/zoo/family/twin/router.json");
        pub const ROUTER_WEIGHTS: &[u8] = include_bytes!("../../crates/zoo/family/twin/router.safetensors");
        pub const CONFIG: &[u8] = include_bytes!("../../crates/zoo/family/twin/shared/config.json");
        pub const TOKENIZER: &[u8] = include_bytes!("../../crates/zoo/family/twin/shared/tokenizer.json");
        pub const WEIGHTS: &[u8] = include_bytes!("../../crates/zoo/family/twin/shared/model.safetensors");
    }
}

fn bytes(b: &[u8]) -> JsValue {
    js_sys::Uint8Array::from(b).into()
}

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        js_sys::Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

fn hf_source(name: &str) -> JsValue {
    obj(&[
        ("name", name.into()),
        ("config", bytes(zoo::config(name))),
        ("tokenizer", bytes(zoo::TOKENIZER)),
        ("weights", js_sys::Array::of1(&bytes(zoo::weights(name))).into()),
    ])
}

async fn load(name: &str, backend: &str) -> chorus_web::ChorusModel {
    let opts = obj(&[("backend", backend.into())]);
    chorus_web::load_model(hf_source(name), opts).await.map_err(JsValue::from).expect(name)
}

fn message(err: JsValue) -> String {
    js_sys::Reflect::get(&err, &"message".into()).unwrap().as_string().unwrap_or_default()
}

/// DLF through the public API on the zoo (HF-layout bytes): the greedy tokens and α trace `chorus fuse
/// --prompt "add 12 34 ="` prints natively (the end-to-end test compares live; these are its values),
/// on WebGPU and on the CPU, with one callback per step carrying α.
#[wasm_bindgen_test]
async fn fusion_api_matches_native_chorus_fuse() {
    for backend in ["webgpu", "cpu"] {
        let (large, base, add) =
            (load("large-base", backend).await, load("small-base", backend).await, load("small-add", backend).await);
        let mut fusion = chorus_web::ChorusFusion::new(&large, &base);
        fusion.add_expert("add".into(), &add, None).map_err(JsValue::from).unwrap();
        assert!(fusion.add_expert("add".into(), &add, None).is_err(), "a repeated expert name is refused");
        let alphas = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Vec<f64>>::new()));
        let seen = alphas.clone();
        let cb = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |step: JsValue| {
            let a = js_sys::Reflect::get(&step, &"alpha".into()).unwrap();
            seen.borrow_mut().push(js_sys::Array::from(&a).iter().map(|x| x.as_f64().unwrap()).collect());
        });
        let opts = js_sys::JSON::parse(r#"{"max_new_tokens": 24, "solver": "paper"}"#).unwrap();
        let out = wasm_bindgen_futures::JsFuture::from(fusion.fuse(
            "add 12 34 =".into(),
            opts,
            Some(cb.as_ref().clone().into()),
        ))
        .await
        .expect("fuse");
        let tokens: Vec<f64> = js_sys::Array::from(&js_sys::Reflect::get(&out, &"tokens".into()).unwrap())
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(tokens, [220.0, 19.0, 21.0], "{backend}");
        let text = js_sys::Reflect::get(&out, &"text".into()).unwrap().as_string().unwrap();
        assert_eq!(text, " 46", "{backend}");
        let want = [0.9f64, 1.5, 0.9, 1.0];
        let got = alphas.borrow();
        assert_eq!(got.len(), want.len(), "{backend}: one callback per step");
        for (a, w) in got.iter().zip(want) {
            assert!((a[0] - w).abs() < 1e-6, "{backend}: α {got:?}");
        }
    }
}

/// Bad options and sources are errors that name the field at fault.
#[wasm_bindgen_test]
async fn bad_options_and_sources_name_the_field() {
    let (large, base, add) =
        (load("large-base", "cpu").await, load("small-base", "cpu").await, load("small-add", "cpu").await);
    let mut fusion = chorus_web::ChorusFusion::new(&large, &base);
    fusion.add_expert("add".into(), &add, None).map_err(JsValue::from).unwrap();
    for (opts, needle) in [
        (r#"{"solvr": "paper"}"#, "solvr"),
        (r#"{"solver": "best"}"#, "solver"),
        (r#"{"alpha": 1}"#, "alpha"),
        (r#"{"ranges": {"sort": [0, 1]}}"#, "sort"),
        (r#"{"ranges": {"add": [0]}}"#, "ranges.add"),
    ] {
        let o = js_sys::JSON::parse(opts).unwrap();
        let err = wasm_bindgen_futures::JsFuture::from(fusion.fuse("add 1 2 =".into(), o, None)).await.unwrap_err();
        assert!(message(err.clone()).contains(needle), "{opts}: {}", message(err));
    }
    let no_weights = obj(&[("config", bytes(zoo::config("small-base"))), ("tokenizer", bytes(zoo::TOKENIZER))]);
    let err =
        chorus_web::load_model(no_weights, JsValue::UNDEFINED).await.map(|_| ()).map_err(JsValue::from).unwrap_err();
    assert!(message(err.clone()).contains("weights"), "{}", message(err));
    let bad_backend = obj(&[("backend", "tpu".into())]);
    let err = chorus_web::load_model(hf_source("small-base"), bad_backend)
        .await
        .map(|_| ())
        .map_err(JsValue::from)
        .unwrap_err();
    assert!(message(err.clone()).contains("tpu"), "{}", message(err));
    let truncated = obj(&[
        ("config", bytes(zoo::config("small-base"))),
        ("tokenizer", bytes(zoo::TOKENIZER)),
        ("weights", bytes(&zoo::weights("small-base")[..1000])),
    ]);
    assert!(
        chorus_web::load_model(truncated, JsValue::UNDEFINED).await.is_err(),
        "a truncated safetensors file is refused"
    );
    assert_eq!(chorus_web::sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/// Twin-Merging from the shipped pack's bytes: the router sends a reversal prompt to `reverse` and the mixed
/// shared model answers it, on WebGPU as on the CPU.
#[wasm_bindgen_test]
async fn twin_pack_routes_and_generates() {
    use zoo::twin;
    for backend in ["webgpu", "cpu"] {
        let shared = obj(&[
            ("config", bytes(twin::CONFIG)),
            ("tokenizer", bytes(twin::TOKENIZER)),
            ("weights", bytes(twin::WEIGHTS)),
        ]);
        let source = obj(&[
            ("twin", bytes(twin::META)),
            ("factors", bytes(twin::FACTORS)),
            ("shared", shared),
            ("router", bytes(twin::ROUTER)),
            ("routerWeights", bytes(twin::ROUTER_WEIGHTS)),
        ]);
        let t = chorus_web::load_twin(source, obj(&[("backend", backend.into())]))
            .await
            .map_err(JsValue::from)
            .expect("twin");
        assert_eq!(t.tasks(), ["add", "reverse", "sort", "recall"]);
        let opts = js_sys::JSON::parse(r#"{"max_new_tokens": 16}"#).unwrap();
        let out =
            wasm_bindgen_futures::JsFuture::from(t.generate("rev plant =".into(), opts, None)).await.expect("generate");
        let w: Vec<f64> = js_sys::Array::from(&js_sys::Reflect::get(&out, &"weights".into()).unwrap())
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-5 && w[1] > 0.9, "{backend}: {w:?}");
        let output = js_sys::Reflect::get(&out, &"output".into()).unwrap();
        let text = js_sys::Reflect::get(&output, &"text".into()).unwrap().as_string().unwrap();
        assert_eq!(text, " tnalp", "{backend}");
    }
}
