//! MVRE end to end on the tiny RoBERTa fixture (it has an MLM head, so the dynamic-initialisation probe runs):
//! the initial rows are the prescribed means and no old row moves; training leaves the gates alone and keeps
//! the decoder tied to the embeddings; a saved checkpoint predicts exactly as the model in memory; entities
//! that cannot be located are errors naming the example.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use chorus_extract::data::{Example, Relations};
use chorus_extract::extractor::batch_tensors;
use chorus_extract::init::{Init, Template, label_ids, mean_rows, sources};
use chorus_extract::template::Form;
use chorus_extract::train::{TrainConfig, train};
use chorus_extract::{Extractor, Options};
use chorus_models::bert::Bert;

use crate::common::repo;

fn ex(id: &str, words: &str, subj: (usize, usize), obj: (usize, usize), rel: &str) -> Example {
    Example { id: id.into(), tokens: words.split(' ').map(String::from).collect(), subj, obj, relation: rel.into() }
}

fn data() -> (Vec<Example>, Relations, Vec<Template>) {
    let rel =
        Relations::from_names("test", vec!["no_relation".into(), "org:founded_by".into(), "per:title".into()]).unwrap();
    let set = vec![
        ex("a", "ann founded acme", (2, 3), (0, 1), "org:founded_by"),
        ex("b", "bo is a lawyer", (0, 1), (3, 4), "per:title"),
        ex("c", "ann met bo", (0, 1), (2, 3), "no_relation"),
        ex("d", "cy founded zed", (2, 3), (0, 1), "org:founded_by"),
        ex("e", "cy is a baker", (0, 1), (3, 4), "per:title"),
        ex("f", "cy saw ann", (0, 1), (2, 3), "no_relation"),
    ];
    let t = |r: &str, s: &str| Template {
        relation: r.into(),
        sentence: s.into(),
        head: "subject".into(),
        tail: "object".into(),
    };
    let templates = vec![t("org:founded_by", "subject was founded by object."), t("per:title", "subject is a object.")];
    (set, rel, templates)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

#[test]
fn mvre_initialises_trains_saves_and_reopens() {
    let dir = repo().join("tests/fixtures/bert/roberta");
    let dev = Device::flex().autodiff();
    let (set, rel, templates) = data();
    let opts = Options { views: 2, form: Form::Figure, max_len: 62, init: Init::Auto, pad_label_words: true, seed: 3 };
    let x = Extractor::prepare(&dir, rel.clone(), &templates, &opts, &dev).unwrap();
    assert_eq!(x.meta.init, Init::Probe, "the fixture has an MLM head and templates: auto = probe");
    assert!(x.meta.probe_ids[0].is_none() && x.meta.probe_ids[1].is_some(), "no template for no_relation");

    // Dynamic initialisation: every virtual row is the mean of its sources in the base table (pads included),
    // the old rows are untouched.
    let base = Bert::open(&dir, &Device::flex()).unwrap();
    let h = base.config().hidden_size;
    let v0 = base.config().vocab_size;
    let table = values(base.word_embeddings());
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let label = label_ids(&tok, &rel, true).unwrap();
    let want = mean_rows(&table, h, &sources(&label, &x.meta.probe_ids, 2)).unwrap();
    let now = values(x.model.bert().word_embeddings());
    // The fixture's tokenizer already holds the four markers: only the 3 × 2 virtual words are new.
    assert_eq!(now.len(), (v0 + 3 * 2) * h);
    assert_eq!(&now[..v0 * h], &table[..], "pre-existing rows unchanged");
    let got = &now[v0 * h..];
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "virtual rows = source means");
    assert_eq!(x.meta.virtual_ids[1][2], (v0 + 2 * 2 + 1) as u32, "[class3_1]");
    assert!(x.meta.marker_ids.iter().all(|&i| (i as usize) < v0), "existing markers reused");

    // Two epochs: the gates do not move, the virtual rows do, and the decoder still reads the embedding table.
    let gates = x.model.gate_values();
    let before = values(x.model.virtual_rows());
    let cfg = TrainConfig { epochs: 2, batch: 3, lr: 5e-3, ..TrainConfig::default() };
    let (mut x, report) = train(x, &set, Some(&set[..3]), &cfg, &dev, &mut |_| {}).unwrap();
    assert_eq!(report.steps, 4);
    assert_eq!(report.epochs.len(), 2);
    assert!(report.epochs[0].dev.is_none() && report.epochs[1].dev.is_some(), "dev is skipped after epoch 1");
    assert_eq!(x.model.gate_values(), gates, "gates are frozen");
    let after = values(x.model.virtual_rows());
    assert!(after.iter().zip(&before).any(|(a, b)| (a - b).abs() > 1e-5), "virtual rows trained");
    x.model = x.model.valid();
    let enc = x.encode(&set[0]).unwrap();
    let plain = x.model.bert().word_embeddings().device();
    let (ids, pos, mask, mp) = batch_tensors(x.model.bert(), &[&enc], &plain);
    let (_, p) = x.model.forward(ids.clone(), pos.clone(), mask.clone(), &mp);
    let logits = x.model.bert().mlm_logits(x.model.bert().hidden(ids, pos, mask));
    let v = x.model.bert().config().vocab_size;
    let lv = values(logits);
    let pv = values(p);
    for (j, &at) in mp[0].iter().enumerate() {
        let s: Vec<f32> = x.meta.virtual_ids[j].iter().map(|&id| lv[at * v + id as usize]).collect();
        let mx = s.iter().fold(f32::MIN, |a, &b| a.max(b));
        let z: f32 = s.iter().map(|a| (a - mx).exp()).sum();
        for (y, sy) in s.iter().enumerate() {
            let want = (sy - mx).exp() / z;
            assert!((pv[j * 3 + y] - want).abs() < 1e-5, "view {j} relation {y}: tied decoder");
        }
    }

    // Save, reopen, same predictions; no temporary file is left behind.
    let out = std::env::temp_dir().join(format!("chorus-mvre-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    x.save(&out, false).unwrap();
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    let y = Extractor::open(&out, &Device::flex()).unwrap();
    assert_eq!(y.meta, x.meta);
    let a = x.predict(&set, 4).unwrap();
    let b = y.predict(&set, 4).unwrap();
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(p.relation, q.relation);
        assert!(p.scores.iter().zip(&q.scores).all(|(s, t)| (s - t).abs() < 1e-5), "{:?} vs {:?}", p.scores, q.scores);
    }
    let (e, _) = y.evaluate(&set, 4).unwrap();
    assert_eq!(e.examples, 6);
    // A damaged mvre.json is refused with the field named, not a panic.
    let meta_path = out.join("mvre.json");
    let good = std::fs::read(&meta_path).unwrap();
    let mut j: serde_json::Value = serde_json::from_slice(&good).unwrap();
    j["max_len"] = 0.into();
    std::fs::write(&meta_path, serde_json::to_vec(&j).unwrap()).unwrap();
    let err = Extractor::open(&out, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("mvre.json") && err.contains("max_len 0"), "{err}");
    std::fs::write(&meta_path, good).unwrap();
    // Preparing an MVRE checkpoint again is refused (its tokenizer already holds the markers).
    let err = Extractor::prepare(&out, rel, &[], &opts, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("already holds [class1_0]"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn mvre_names_examples_whose_entities_cannot_be_located() {
    let dir = repo().join("tests/fixtures/bert/roberta");
    let dev = Device::flex();
    let (_, rel, _) = data();
    // Code form (the sentence twice, 43 tokens here) cut to 30: the tail goes, the prompt stays.
    let opts =
        Options { views: 2, form: Form::Code, max_len: 30, init: Init::LabelWords, pad_label_words: false, seed: 1 };
    let x = Extractor::prepare(&dir, rel, &[], &opts, &dev).unwrap();
    let short = ex("s", "ann founded acme", (2, 3), (0, 1), "org:founded_by");
    let e = x.encode(&short).unwrap();
    assert!(e.truncated && e.ids.len() == 30 && e.mask_pos.len() == 2);
    assert_eq!(e.ids.last(), x.tokenizer.token_to_id("</s>").as_ref(), "the closing separator survives");
    // The object sits past the cut: its markers are gone, which is an error naming the example.
    let long =
        ex("far", "ann met bo and then the rest of a very long day ended at acme", (0, 1), (14, 15), "no_relation");
    let err = x.encode(&long).unwrap_err().to_string();
    assert!(err.contains("example far") && err.contains("object cannot be located"), "{err}");
    // A set names every example it cannot use, not only the first.
    let mut far2 = long.clone();
    far2.id = "far2".into();
    let err = x.predict(&[long, short, far2], 2).unwrap_err().to_string();
    assert!(
        err.contains("2 example(s) cannot be used") && err.contains("example far:") && err.contains("example far2:"),
        "{err}"
    );
    let err = Example::from_text("t", "ann founded acme", "ann", "zed", "").unwrap_err().to_string();
    assert!(err.contains("object 'zed' does not occur"), "{err}");
}

/// The same preparation and training on wgpu (lavapipe in CI) and on the CPU: epoch losses and the trained
/// model's scores agree.
#[test]
fn mvre_trains_on_wgpu_like_on_the_cpu() {
    let Some(gpu) = crate::common::wgpu_or_skip("mvre_trains_on_wgpu_like_on_the_cpu") else { return };
    let dir = repo().join("tests/fixtures/bert/roberta");
    let (set, rel, templates) = data();
    let opts = Options { views: 3, form: Form::Figure, max_len: 62, init: Init::Auto, pad_label_words: true, seed: 5 };
    let cfg = TrainConfig { epochs: 3, batch: 2, lr: 5e-3, ..TrainConfig::default() };
    let run = |dev: Device| {
        let x = Extractor::prepare(&dir, rel.clone(), &templates, &opts, &dev).unwrap();
        let (mut x, report) = train(x, &set, None, &cfg, &dev, &mut |_| {}).unwrap();
        x.model = x.model.valid();
        let scores: Vec<f32> = x.predict(&set, 6).unwrap().into_iter().flat_map(|p| p.scores).collect();
        (report.epochs.iter().map(|e| e.loss).collect::<Vec<_>>(), scores)
    };
    let (cpu_loss, cpu_scores) = run(Device::flex().autodiff());
    let (gpu_loss, gpu_scores) = run(gpu.autodiff());
    for (a, b) in gpu_loss.iter().zip(&cpu_loss) {
        assert!((a - b).abs() < 2e-3, "epoch losses on wgpu {gpu_loss:?} vs cpu {cpu_loss:?}");
    }
    assert!(cpu_loss[2] < cpu_loss[0], "{cpu_loss:?}");
    for (a, b) in gpu_scores.iter().zip(&cpu_scores) {
        assert!((a - b).abs() < 2e-3, "scores on wgpu vs cpu: {a} vs {b}");
    }
}

/// MiniLM has no MLM head, so preparation initialises one: with the same seed it is the same head (a k-shot
/// table is reproducible from its command), with another seed it is not.
#[test]
fn mvre_preparation_is_reproducible_from_its_seed() {
    let dir = crate::common::models_dir().join("all-MiniLM-L6-v2");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run `scripts/fetch-models minilm`", dir.display());
    let (_, rel, _) = data();
    let head = |seed: u64| {
        let opts = Options { seed, ..Options::default() };
        let x = Extractor::prepare(&dir, rel.clone(), &[], &opts, &Device::flex()).unwrap();
        assert!(x.meta.head_initialised);
        let t = x.model.bert().hf_tensors();
        let (_, _, w) = t.into_iter().find(|(n, _, _)| n == "cls.predictions.transform.dense.weight").unwrap();
        (values(w), x.model.gate_values())
    };
    let (a, b, c) = (head(7), head(7), head(8));
    assert_eq!(a, b, "same seed, same head and gates");
    assert_ne!(a.0, c.0, "another seed, another head");
}
