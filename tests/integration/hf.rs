//! HF-layout loading: SmolLM2's GGUF weights written out as an HF folder (config.json, two f32
//! safetensors shards with `model.safetensors.index.json`, tokenizer.json, tokenizer_config.json) must
//! load through the HF path and reproduce the same transformers goldens.

use std::collections::HashMap;

use chorus_engine::{Backend, LoadedModel};
use chorus_models::ModelFiles;
use safetensors::tensor::TensorView;

fn write_hf_folder(dir: &std::path::Path) {
    let src = ModelFiles::open(&crate::common::model_path("smollm2")).expect("open gguf");
    let c = &src.config;
    let config = serde_json::json!({
        "model_type": "llama", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
        "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": c.max_position_embeddings, "tie_word_embeddings": c.tie_word_embeddings,
        "eos_token_id": src.tokenizer.eos_ids[0],
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), src.tokenizer.to_json().unwrap()).unwrap();
    let tc = serde_json::json!({"chat_template": src.tokenizer.chat_template, "add_bos_token": false});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();

    let names: Vec<(String, Vec<usize>)> = src.expected_tensors();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", shard + 1);
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = part
            .iter()
            .map(|(n, _)| {
                let (v, shape) = src.tensor(n).unwrap().unwrap();
                (n.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect(), shape)
            })
            .collect();
        let views: HashMap<String, TensorView> = data
            .iter()
            .map(|(n, b, s)| (n.clone(), TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for (n, _) in part.iter() {
            weight_map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_hf_folder_reproduces_the_gguf_goldens() {
    let dir = std::env::temp_dir().join(format!("chorus-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_hf_folder(&dir);
    let files = ModelFiles::open(&dir).expect("open HF folder");
    assert!(files.config.tie_word_embeddings);
    let device = chorus_engine::device(Backend::Cpu).unwrap();
    let m = LoadedModel::load(files, Backend::Cpu, &device, None, &mut |_, _| {}).expect("load");
    let g = crate::common::golden("smollm2");
    for c in &g.cases {
        assert_eq!(m.files.tokenizer.encode(&c.rendered, false).unwrap(), c.ids, "{:?}", c.prompt);
        let trace = m.greedy_trace(&c.ids, 8, 5).unwrap();
        for (i, (got, want)) in trace.iter().zip(&c.steps).enumerate() {
            assert_eq!(got.token, want.token, "{:?} step {i}", c.prompt);
            assert!((got.top[0].1 - want.top[0].1).abs() <= 1e-3, "{:?} step {i}", c.prompt);
        }
    }
    // A shard that disagrees with config.json is reported by tensor name and shape.
    let cfg =
        std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"hidden_size\":576", "\"hidden_size\":512");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let msg = ModelFiles::open(&dir).err().expect("shape mismatch").to_string();
    assert!(msg.contains("model.embed_tokens.weight") && msg.contains("[49152, 576]"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}
