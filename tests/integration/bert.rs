//! BERT and RoBERTa masked LMs against transformers (fixtures of `tests/fixtures/make_bert_fixtures.py`):
//! token ids, last hidden states and MLM logits within 1e-4.

use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_models::bert::Bert;
use serde_json::Value;

use crate::common::repo;

fn goldens() -> Value {
    let p = repo().join("tests/fixtures/bert/goldens.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
        .collect()
}

fn flat(v: &Value, out: &mut Vec<f32>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flat(x, out)),
        Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
        other => panic!("not a number: {other}"),
    }
}

fn int2(r: &[Vec<u32>], dev: &Device) -> Tensor<2, Int> {
    let (b, t) = (r.len(), r[0].len());
    Tensor::from_data(TensorData::new(r.iter().flatten().map(|&x| x as i64).collect::<Vec<_>>(), [b, t]), dev)
}

fn parity(name: &str) {
    let dev = Device::flex();
    let g = goldens();
    let case = &g[name];
    let dir = repo().join("tests/fixtures/bert").join(name);
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let ids = rows(&case["ids"]);
    let mask = rows(&case["mask"]);
    for (text, want) in case["texts"].as_array().unwrap().iter().zip(&ids) {
        let got = tok.encode(text.as_str().unwrap(), true).unwrap().get_ids().to_vec();
        assert_eq!(&got[..], &want[..got.len()], "{name}: ids of {text}");
    }
    let model = Bert::open(&dir, &dev).unwrap();
    assert!(!model.head_initialised());
    let pos = model.position_ids(&ids);
    let (b, t) = (ids.len(), ids[0].len());
    let m: Vec<f32> = mask.iter().flatten().map(|&x| x as f32).collect();
    let h = model.hidden(int2(&ids, &dev), int2(&pos, &dev), Tensor::from_data(TensorData::new(m, [b, t]), &dev));
    let logits = model.mlm_logits(h.clone());
    for (what, got, key) in [("hidden", h, "hidden"), ("logits", logits, "logits")] {
        let got = got.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let mut want = Vec::new();
        flat(&case[key], &mut want);
        assert_eq!(got.len(), want.len());
        // Padding rows are compared too: transformers computes them the same way.
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4, "{name} {what}: max |Δ| = {worst}");
    }
}

#[test]
fn bert_mlm_matches_transformers() {
    parity("bert");
}

#[test]
fn roberta_mlm_matches_transformers() {
    parity("roberta");
}

/// The real all-MiniLM-L6-v2 (fetched by `scripts/fetch-models minilm`): WordPiece ids and the published
/// SBERT similarities (mean pooling over real tokens, L2 normalisation). Its checkpoint has no MLM head, so
/// one is initialised and the model says so.
#[test]
fn minilm_reproduces_the_published_similarities() {
    let dir = crate::common::models_dir().join("all-MiniLM-L6-v2");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run `scripts/fetch-models minilm`", dir.display());
    let dev = Device::flex();
    let model = Bert::open(&dir, &dev).unwrap();
    assert!(model.head_initialised(), "MiniLM ships no MLM head");
    let mut tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    // Its tokenizer.json pads every input to 128: that padding must not leak into the pooled vector.
    tok.with_padding(None);
    let embed = |s: &str| -> Vec<f32> {
        let ids = tok.encode(s, true).unwrap().get_ids().to_vec();
        let rows = vec![ids];
        let pos = model.position_ids(&rows);
        let t = rows[0].len();
        let h = model.hidden(int2(&rows, &dev), int2(&pos, &dev), Tensor::ones([1, t], &dev));
        let mean = h.mean_dim(1).reshape([384]).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let n = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        mean.iter().map(|x| x / n).collect()
    };
    assert_eq!(tok.encode("The cat sits outside", true).unwrap().get_ids(), &[101, 1996, 4937, 7719, 2648, 102]);
    let cos = |a: &str, b: &str| embed(a).iter().zip(embed(b)).map(|(x, y)| x * y).sum::<f32>();
    let c1 = cos("The cat sits outside", "The dog plays in the garden");
    let c2 = cos("The new movie is awesome", "The new movie is so great");
    assert!((c1 - 0.2838).abs() < 5e-4 && (c2 - 0.8939).abs() < 5e-4, "{c1} {c2}");
}

/// MVRE on the tiny RoBERTa: virtual words appended (tied: the decoder reads the same rows), per-view
/// probabilities sum to 1, S ∈ [0, m]; one AdamW step moves the virtual rows and leaves the frozen gates and
/// the tie intact; too-long inputs are refused by row.
#[test]
fn mvre_forward_and_one_training_step() {
    use burn::optim::{AdamWConfig, GradientsParams};
    use chorus_extract::model::{ClassLoss, Mvre};
    let dev = Device::flex().autodiff();
    dev.seed(11);
    let dir = repo().join("tests/fixtures/bert/roberta");
    let mut bert = Bert::open(&dir, &dev).unwrap();
    let (r, m) = (3usize, 2usize);
    let h = bert.config().hidden_size;
    let v0 = bert.config().vocab_size;
    let init: Vec<f32> = (0..r * m * h).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.1).collect();
    let added = bert.add_words(&init).unwrap();
    assert_eq!(added, v0 as u32..(v0 + r * m) as u32);
    // View-major ids: [class{y}_{j}] was appended relation-major, so ids[j][y] = v0 + y·m + j.
    let ids: Vec<Vec<u32>> = (0..m).map(|j| (0..r).map(|y| (v0 + y * m + j) as u32).collect()).collect();
    let model = Mvre::new(bert, ids, 11, &dev);
    let g = goldens();
    let rows = rows(&g["roberta"]["ids"]);
    let mask = rows_mask(&g["roberta"]["mask"], &dev);
    let pos = model.bert().position_ids(&rows);
    model.bert().check_inputs(&rows).unwrap();
    let mask_pos = vec![vec![1usize, 4], vec![2, 5]];
    let (s, p) = model.forward(int2(&rows, &dev), int2(&pos, &dev), mask.clone(), &mask_pos);
    let pv = p.clone().sum_dim(2).into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    assert!(pv.iter().all(|x| (x - 1.0).abs() < 1e-5), "{pv:?}");
    let sv = s.clone().into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    assert!(sv.iter().all(|&x| (0.0..=m as f32).contains(&x)), "{sv:?}");
    let before_rows = model.virtual_rows().into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &dev);
    let loss = model.loss(s, labels, ClassLoss::CeOnMixture, 2.0, 0.1);
    assert!(loss.clone().into_scalar::<f32>().is_finite());
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut opt = AdamWConfig::new().init();
    let gate_before = model.gate_values();
    let model = opt.step(1e-2, model, grads);
    assert_eq!(model.gate_values(), gate_before, "gates are frozen");
    let after_rows = model.virtual_rows().into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    assert!(after_rows.iter().zip(&before_rows).any(|(a, b)| (a - b).abs() > 1e-6), "virtual rows moved");
    // Tied: the MLM logits of a virtual word use the updated row (decoder = embedding table).
    let e = model.bert().word_embeddings();
    assert_eq!(e.dims()[0], v0 + r * m);
    let long = vec![vec![5u32; 200]];
    let err = model.bert().check_inputs(&long).unwrap_err().to_string();
    assert!(err.contains("row 0") && err.contains("positions"), "{err}");
}

fn rows_mask(v: &Value, dev: &Device) -> Tensor<2> {
    let r = rows(v);
    let (b, t) = (r.len(), r[0].len());
    Tensor::from_data(TensorData::new(r.iter().flatten().map(|&x| x as f32).collect::<Vec<_>>(), [b, t]), dev)
}
