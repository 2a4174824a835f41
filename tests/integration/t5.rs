//! T5 and FiT5 against transformers/PyTorch (fixtures of `tests/fixtures/make_t5_fixtures.py`): token ids,
//! relative-position buckets, encoder states and first-step logits of both T5 variants, FiT5 scores with
//! and without global attention (CPU and wgpu), and FiT5's properties (candidate-order equivariance,
//! independence without global attention, dependence with it, the global layer's algebra, re-ranking
//! that keeps good queries when others fail).

use burn::tensor::{Device, Tensor};
use chorus_models::fit5::{Candidate, FeatureBins, FiT5, OverLong, encode_candidates, template};
use chorus_models::t5::{T5, ids_tensor, relative_bucket};
use serde_json::Value;

use crate::common::{repo, wgpu_or_skip};

fn fixtures() -> std::path::PathBuf {
    repo().join("tests/fixtures/t5")
}

fn goldens() -> Value {
    let p = fixtures().join("goldens.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn tokenizer(dir: &str) -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(fixtures().join(dir).join("tokenizer.json")).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn rows_u32(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(u32s).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
            other => panic!("not a number: {other}"),
        }
    }
    walk(v, &mut out);
    out
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: max |Δ| = {worst} > {tol}");
}

#[test]
fn tokenizer_and_buckets_match_transformers() {
    let g = goldens();
    let tok = tokenizer("t5-v1_0");
    assert_eq!(tok.token_to_id("[CLS]"), Some(g["cls_id"].as_u64().unwrap() as u32));
    for case in g["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = tok.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(ids, u32s(&case["ids"]), "ids of {text:?}");
    }
    for (key, want) in g["buckets"].as_object().unwrap() {
        let p: Vec<&str> = key.split('-').collect();
        let (bidir, nb, md) = (p[0] == "True", p[1].parse().unwrap(), p[2].parse().unwrap());
        let got: Vec<u32> = (-200i64..=200).map(|r| relative_bucket(r, bidir, nb, md) as u32).collect();
        assert_eq!(got, u32s(want), "buckets {key}");
    }
}

fn t5_parity(dev: &Device, name: &str) {
    let g = goldens();
    let case = &g[name];
    let model = T5::open(&fixtures().join(name), dev).unwrap();
    let (ids, mask) = ids_tensor(&rows_u32(&case["ids"]), &rows_u32(&case["mask"]), dev);
    let enc = model.encode(ids.clone(), mask.clone());
    let [b, t, d] = enc.dims();
    assert_close(&format!("{name} encoder"), &values(enc.reshape([b * t, d])), &floats(&case["encoder"]), 1e-4);
    let logits = model.first_step_logits(ids, mask);
    assert_close(&format!("{name} first-step logits"), &values(logits), &floats(&case["logits"]), 1e-4);
}

#[test]
fn t5_v1_0_and_v1_1_match_transformers_on_cpu() {
    let dev = Device::flex();
    t5_parity(&dev, "t5-v1_0");
    t5_parity(&dev, "t5-v1_1");
}

#[test]
fn t5_matches_transformers_on_wgpu() {
    let Some(dev) = wgpu_or_skip("t5_matches_transformers_on_wgpu") else { return };
    t5_parity(&dev, "t5-v1_0");
    t5_parity(&dev, "t5-v1_1");
}

fn fit5_case(g: &Value) -> (String, Vec<Candidate>) {
    let f = &g["fit5"];
    let cands = f["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| Candidate {
            docid: format!("d{i}"),
            title: c["title"].as_str().unwrap().into(),
            text: c["text"].as_str().unwrap().into(),
            score: c["score"].as_f64(),
        })
        .collect();
    (f["query"].as_str().unwrap().into(), cands)
}

fn fit5_scores(model: &FiT5, tok: &tokenizers::Tokenizer, q: &str, cands: &[Candidate], dev: &Device) -> Vec<f32> {
    let cfg = model.config();
    let e = encode_candidates(tok, q, cands, &cfg.bins, cfg.max_seq_len, OverLong::Error).unwrap();
    let (ids, mask) = ids_tensor(&e.ids, &e.mask, dev);
    values(model.forward(ids, mask))
}

fn fit5_parity(dev: &Device) {
    let g = goldens();
    let f = &g["fit5"];
    let tok = tokenizer("fit5");
    let (q, cands) = fit5_case(&g);
    let bins = FeatureBins::default();
    for (c, want) in cands.iter().zip(f["strings"].as_array().unwrap()) {
        assert_eq!(template(&q, c, &bins), want.as_str().unwrap());
    }
    let mut model = FiT5::open(&fixtures().join("fit5"), dev).unwrap();
    let cfg = model.config().clone();
    let id = |k: &str| f[k].as_u64().unwrap() as usize;
    assert_eq!((cfg.false_token_id, cfg.true_token_id), (id("false_id"), id("true_id")));
    let e = encode_candidates(&tok, &q, &cands, &cfg.bins, cfg.max_seq_len, OverLong::Error).unwrap();
    assert_eq!(e.ids, rows_u32(&f["ids"]), "token ids");
    assert_eq!(e.mask, rows_u32(&f["mask"]), "masks");
    assert_close(
        "FiT5 with global attention",
        &fit5_scores(&model, &tok, &q, &cands, dev),
        &floats(&f["global"]),
        1e-4,
    );
    model.set_global(false);
    assert_close(
        "FiT5 without global attention",
        &fit5_scores(&model, &tok, &q, &cands, dev),
        &floats(&f["local"]),
        1e-4,
    );
}

#[test]
fn fit5_matches_the_pytorch_reference_on_cpu() {
    fit5_parity(&Device::flex());
}

#[test]
fn fit5_matches_the_pytorch_reference_on_wgpu() {
    let Some(dev) = wgpu_or_skip("fit5_matches_the_pytorch_reference_on_wgpu") else { return };
    fit5_parity(&dev);
}

/// Spec §2.8 properties 1, 3, 4 and 5.
#[test]
fn fit5_properties() {
    let dev = Device::flex();
    let g = goldens();
    let tok = tokenizer("fit5");
    let (q, cands) = fit5_case(&g);
    let bins = FeatureBins::default();
    // 1. Feature bins: 184.19 → 76, ≥ 190 → 100, 165 → 0; below 165 as the reference (negative) or clamped.
    assert_eq!((bins.bin(184.19), bins.bin(190.0), bins.bin(250.0), bins.bin(165.0)), (76, 100, 100, 0));
    assert_eq!(bins.bin(160.0), -20);
    assert_eq!(FeatureBins { clamp_low: true, ..bins }.bin(160.0), 0);
    let mut model = FiT5::open(&fixtures().join("fit5"), &dev).unwrap();
    for global in [true, false] {
        model.set_global(global);
        let base = fit5_scores(&model, &tok, &q, &cands, &dev);
        // 3. Permuting the candidates permutes the scores.
        let perm = [3usize, 0, 4, 1, 2];
        let shuffled: Vec<Candidate> = perm.iter().map(|&i| cands[i].clone()).collect();
        let got = fit5_scores(&model, &tok, &q, &shuffled, &dev);
        for (k, &i) in perm.iter().enumerate() {
            for c in 0..2 {
                assert!((got[2 * k + c] - base[2 * i + c]).abs() < 1e-5, "global={global}: candidate {i} moved");
            }
        }
        // 4. Editing candidate 4 moves candidate 0's score only with global attention.
        let mut edited = cands.clone();
        edited[4].text = "a panda is seen near the lake and is black".into();
        let after = fit5_scores(&model, &tok, &q, &edited, &dev);
        let moved = (after[1] - base[1]).abs();
        if global {
            assert!(moved > 1e-4, "with global attention candidate 0 must see candidate 4 ({moved})");
        } else {
            assert!(moved < 1e-6, "without global attention candidate 0 must not see candidate 4 ({moved})");
            // … and scoring a candidate alone gives the same score.
            let alone = fit5_scores(&model, &tok, &q, &cands[..1], &dev);
            assert!((alone[1] - base[1]).abs() < 1e-5);
        }
    }
    // 5. With the output projection zeroed a global layer maps X to 2X.
    let layer = model.global_layers()[0].clone().zero_output();
    let x = Tensor::<2>::random([5, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &dev);
    let y = values(layer.apply(x.clone()));
    assert_close("global layer with o = 0", &y, &values(x * 2.0), 1e-6);
}

/// Over-long inputs: refused with the document named, cut like the reference, or shortened in the passage
/// so the template's tail survives.
#[test]
fn fit5_over_long_passages() {
    let tok = tokenizer("fit5");
    let bins = FeatureBins::default();
    let long = Candidate {
        docid: "long".into(),
        title: "otter facts".into(),
        text: "the otter is red and lives in the river ".repeat(20),
        score: Some(180.0),
    };
    let e =
        encode_candidates(&tok, "where does the otter live", std::slice::from_ref(&long), &bins, 40, OverLong::Error)
            .unwrap_err()
            .to_string();
    assert!(e.contains("document 'long'") && e.contains("the model takes 40"), "{e}");
    let relevant = tok.token_to_id("\u{2581}Relevant:").unwrap();
    let cut = encode_candidates(
        &tok,
        "where does the otter live",
        std::slice::from_ref(&long),
        &bins,
        40,
        OverLong::TruncatePassage,
    )
    .unwrap();
    let ids = &cut.ids[0];
    assert_eq!((ids.len(), cut.truncated), (40, 1));
    let n = cut.mask[0].iter().sum::<u32>() as usize;
    assert_eq!(&ids[n - 2..n], &[relevant, 1], "the template's tail survives: {ids:?}");
    let reference = encode_candidates(
        &tok,
        "where does the otter live",
        std::slice::from_ref(&long),
        &bins,
        40,
        OverLong::Reference,
    )
    .unwrap();
    assert_eq!(reference.ids[0][39], 1, "reference truncation keeps </s>");
    assert!(!reference.ids[0].contains(&relevant));
    // A query so long that nothing fits is an error under every policy.
    let huge = "otter ".repeat(60);
    let e =
        encode_candidates(&tok, &huge, std::slice::from_ref(&long), &bins, 12, OverLong::TruncatePassage).unwrap_err();
    assert!(e.to_string().contains("template alone"), "{e}");
}

/// Saving and loading round-trips the scores; a missing tensor and a wrong shape name the tensor.
#[test]
fn fit5_save_round_trip_and_bad_files() {
    let dev = Device::flex();
    let g = goldens();
    let tok = tokenizer("fit5");
    let (q, cands) = fit5_case(&g);
    let model = FiT5::open(&fixtures().join("fit5"), &dev).unwrap();
    let want = fit5_scores(&model, &tok, &q, &cands, &dev);
    let dir = std::env::temp_dir().join(format!("chorus-fit5-save-{}", std::process::id()));
    let tj = std::fs::read(fixtures().join("fit5/tokenizer.json")).unwrap();
    model.save(&dir, &tj, true).unwrap();
    let back = FiT5::open(&dir, &dev).unwrap();
    assert_close("saved and reloaded", &fit5_scores(&back, &tok, &q, &cands, &dev), &want, 1e-6);
    // A config with more global layers than the file holds: the missing tensor is named.
    let cfg_path = dir.join("config.json");
    let mut j: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    j["num_global_layers"] = 4.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&j).unwrap()).unwrap();
    let e = FiT5::open(&dir, &dev).unwrap_err().to_string();
    assert!(e.contains("t5.encoder.project_global.3"), "{e}");
    j["num_global_layers"] = 3.into();
    j["d_ff"] = 50.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&j).unwrap()).unwrap();
    let e = FiT5::open(&dir, &dev).unwrap_err().to_string();
    assert!(e.contains("DenseReluDense.wo.weight") && e.contains("[32, 50]"), "{e}");
    j["d_ff"] = 48.into();
    j["true_token_id"] = 100000.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&j).unwrap()).unwrap();
    let e = FiT5::open(&dir, &dev).unwrap_err().to_string();
    assert!(e.contains("true_token_id"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Re-ranking a run where one query names a missing document and another is not in the queries file:
/// both are reported, every other query is re-ranked and ordered by the "true" logit.
#[test]
fn rerank_keeps_good_queries_when_others_fail() {
    use chorus_rank::trec::{parse_collection, parse_queries, parse_run};
    use chorus_rank::{RerankOptions, Reranker};
    let dev = Device::flex();
    let rr = Reranker::open(&fixtures().join("fit5"), &dev).unwrap();
    let toy = chorus_rank::toy::load().unwrap();
    let queries = parse_queries(
        "q.tsv",
        "a\twhat is the colour of the otter\nb\twhere does the lynx live\nc\twhere does the koala live\n",
    )
    .unwrap();
    let coll = parse_collection(
        "c.tsv",
        "d0\totter facts\tthe otter is red\nd1\tlynx facts\tthe lynx is grey\nd2\tkoala facts\tthe koala is gold\n",
    )
    .unwrap();
    let run = parse_run(
        "r.run",
        "a Q0 d0 1 180 x\na Q0 d1 2 170 x\nb Q0 d1 1 181 x\nb Q0 missing 2 175 x\nc Q0 d2 1 176 x\nc Q0 d0 2 171 x\nz Q0 d0 1 170 x\n",
    )
    .unwrap();
    let rep = rr.rerank(&queries, &coll, &run, &RerankOptions::default(), &mut |_, _, _| {}).unwrap();
    let failed: Vec<&str> = rep.failures.iter().map(|(q, _)| q.as_str()).collect();
    assert_eq!(failed, ["b", "z"]);
    assert!(rep.failures[0].1.contains("document 'missing'"), "{:?}", rep.failures);
    assert!(rep.failures[1].1.contains("not in the queries file"), "{:?}", rep.failures);
    assert_eq!(rep.run.keys().collect::<Vec<_>>(), ["a", "c"]);
    // Scores are the model's "true" logits of the same list.
    let cands: Vec<Candidate> = ["d0", "d1"]
        .iter()
        .zip([180.0, 170.0])
        .map(|(d, s)| Candidate {
            docid: d.to_string(),
            title: coll[*d].title.clone(),
            text: coll[*d].text.clone(),
            score: Some(s),
        })
        .collect();
    let (want, _) = rr.score("a", &queries["a"], &cands, OverLong::TruncatePassage).unwrap();
    for (d, s) in &rep.run["a"] {
        let i = usize::from(d == "d1");
        assert!((*s as f32 - want[i]).abs() < 1e-6);
    }
    // Depth 1: the second candidate stays, below the re-ranked one.
    let opts = RerankOptions { depth: 1, ..RerankOptions::default() };
    let rep = rr.rerank(&queries, &coll, &run, &opts, &mut |_, _, _| {}).unwrap();
    let c = &rep.run["c"];
    assert_eq!(c[1].0, "d0");
    assert!(c[1].1 < c[0].1);
    assert_eq!(toy.collection.len(), 80);
}

/// FiT5 trained from scratch on the toy set (stage 1 then stage 2, CPU): the loss falls and held-out
/// MRR@10 rises well above the untrained model's.
#[test]
fn training_on_the_toy_set_lowers_the_loss_and_raises_mrr() {
    use burn::module::Module;
    use chorus_rank::metrics::mrr_at;
    use chorus_rank::train::{TrainConfig, train, training_lists};
    use chorus_rank::{RerankOptions, Reranker, toy};
    let plain = Device::flex();
    let dev = plain.clone().autodiff();
    dev.seed(7);
    let set = toy::load().unwrap();
    let tok = tokenizers::Tokenizer::from_bytes(toy::TOKENIZER_JSON.as_bytes()).unwrap();
    let model = FiT5::new(&toy::config(), &dev).unwrap();
    let eval = |m: &FiT5| {
        let rr = Reranker { model: m.valid(), tokenizer: tok.clone(), device: plain.clone() };
        let rep = rr
            .rerank(&set.test.queries, &set.collection, &set.test.run, &RerankOptions::default(), &mut |_, _, _| {})
            .unwrap();
        assert!(rep.failures.is_empty(), "{:?}", rep.failures);
        mrr_at(&rep.run, &set.test.qrels, 10)
    };
    let before = eval(&model);
    let mut losses = Vec::new();
    let mut model = model;
    for (steps, feature) in [(100, false), (150, true)] {
        let (lists, skipped) =
            training_lists(&set.train.queries, &set.collection, &set.train.run, &set.train.qrels, 10, feature);
        assert!(skipped.is_empty() && lists.len() == 256);
        let cfg = TrainConfig { steps, lr: 2e-3, warmup: 20, weight_decay: 0.01, lists_per_step: 4, seed: 1 };
        let (m, rep) = train(model, &tok, &lists, &cfg, OverLong::Error, &dev, &mut |_, _| {}).unwrap();
        model = m;
        losses.extend(rep.losses);
    }
    let after = eval(&model);
    let first_stage = mrr_at(&set.test.run, &set.test.qrels, 10);
    let head: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let tail: f32 = losses[losses.len() - 20..].iter().sum::<f32>() / 20.0;
    eprintln!(
        "toy FiT5: loss {head:.3} -> {tail:.3}; test MRR@10 first stage {first_stage:.3}, before {before:.3}, after {after:.3}"
    );
    assert!(tail < 0.6 * head, "loss {head} -> {tail}");
    assert!(
        after > before + 0.3 && after > first_stage + 0.1,
        "MRR@10 {before} -> {after} (first stage {first_stage})"
    );
}

/// The same training steps on wgpu (burn autodiff on the GPU) give the CPU's losses.
#[test]
fn training_runs_on_wgpu_like_on_the_cpu() {
    use chorus_rank::toy;
    use chorus_rank::train::{TrainConfig, train, training_lists};
    let Some(gpu) = wgpu_or_skip("training_runs_on_wgpu_like_on_the_cpu") else { return };
    // One starting point for both: a fresh model saved, then loaded on each autodiff device (the path of
    // `chorus rerank train --init`).
    let plain = Device::flex();
    plain.seed(3);
    let dir = std::env::temp_dir().join(format!("chorus-fit5-wgpu-train-{}", std::process::id()));
    FiT5::new(&toy::config(), &plain).unwrap().save(&dir, toy::TOKENIZER_JSON.as_bytes(), true).unwrap();
    let set = toy::load().unwrap();
    let tok = tokenizers::Tokenizer::from_bytes(toy::TOKENIZER_JSON.as_bytes()).unwrap();
    let (lists, _) = training_lists(&set.train.queries, &set.collection, &set.train.run, &set.train.qrels, 6, true);
    let cfg = TrainConfig { steps: 6, lr: 2e-3, warmup: 2, weight_decay: 0.01, lists_per_step: 2, seed: 4 };
    let cpu = plain.autodiff();
    let start = FiT5::open(&dir, &cpu).unwrap();
    let (_, on_cpu) = train(start, &tok, &lists, &cfg, OverLong::Error, &cpu, &mut |_, _| {}).unwrap();
    let gdev = gpu.autodiff();
    let start = FiT5::open(&dir, &gdev).unwrap();
    let (_, on_gpu) = train(start, &tok, &lists, &cfg, OverLong::Error, &gdev, &mut |_, _| {}).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_close("losses on wgpu vs cpu", &on_gpu.losses, &on_cpu.losses, 2e-3);
    assert!(on_cpu.losses[5] < on_cpu.losses[0], "{:?}", on_cpu.losses);
}

/// How CI gets what `scripts/convert_fit5.py` needs for a `.safetensors` checkpoint (no torch).
const PY_INSTALL: &str = "python3 -m pip install --user numpy==2.4.6 safetensors==0.8.0";

/// Runs `python3 ARGS…` in the repository root and returns its stdout; a missing python3, numpy or
/// safetensors fails the test (it is not skipped) with the command that installs them.
fn python3(args: &[&str]) -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("python3").args(args).current_dir(repo()).output().unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install Python 3 with numpy and safetensors, e.g. `{PY_INSTALL}`")
        })
    };
    let probe = run(&["-c", "import numpy, safetensors.numpy"]);
    assert!(
        probe.status.success(),
        "python3 lacks numpy or safetensors (needed by scripts/convert_fit5.py and \
         tests/fixtures/make_untied_fit5.py); install them with `{PY_INSTALL}`\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let out = run(args);
    assert!(
        out.status.success(),
        "python3 {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue #21 item 8: an untied T5 v1.1 FiT5 (reference key names, `t5.lm_head.weight` included, DDP
/// `module.` prefix, full-vocabulary `dense`) generated by `tests/fixtures/make_untied_fit5.py` goes through
/// `scripts/convert_fit5.py` (numpy + safetensors only) and loads with the FiT5 loader although the converter
/// drops the LM head and config.json keeps `tie_word_embeddings: false`; its scores match the generator's
/// independent numpy forward with and without global attention, for the two-row and the full head; the head
/// holds the chosen rows; a plain T5 v1.1 still loads (and needs) its untied `lm_head.weight`.
#[test]
fn converted_untied_v1_1_fit5_loads_and_scores() {
    use chorus_models::t5::T5Config;
    use chorus_models::{FileBytes, SafetensorsSet};

    let dev = Device::flex();
    let root = std::env::temp_dir().join(format!("chorus-untied-fit5-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    std::fs::create_dir_all(&root).unwrap();
    let path = |p: &str| root.join(p).display().to_string();
    python3(&["tests/fixtures/make_untied_fit5.py", &path("ref")]);
    let x: Value = serde_json::from_slice(&std::fs::read(root.join("ref/expected.json")).unwrap()).unwrap();
    let id = |k: &str| x[k].as_u64().unwrap() as usize;
    let (false_id, true_id) = (id("false_id"), id("true_id"));
    // Not the defaults (6136 / 1176), so the rows kept are the ones asked for.
    let (f_arg, t_arg) = (false_id.to_string(), true_id.to_string());
    let convert = |out: &str, extra: &[&str]| {
        let (ck, tok, cfg, out) =
            (path("ref/fit5.safetensors"), path("ref/tokenizer"), path("ref/t5-config.json"), path(out));
        let mut args = vec!["scripts/convert_fit5.py", "--checkpoint", &ck, "--tokenizer", &tok, "--t5-config", &cfg];
        args.extend(["--false-id", &f_arg, "--true-id", &t_arg, "--max-seq-len", "40", "--out", &out]);
        args.extend(extra);
        python3(&args);
    };
    convert("fit5", &[]);
    convert("fit5-full", &["--full-head"]);

    let dir = root.join("fit5");
    let cfg: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["tie_word_embeddings"], Value::Bool(false), "the backbone is described as it is");
    assert_eq!(cfg["feed_forward_proj"], "gated-gelu");
    assert_eq!(cfg["num_global_layers"], x["num_global_layers"]);
    let set = SafetensorsSet::open_dir(&dir).unwrap();
    assert!(!set.index.contains_key("t5.lm_head.weight"), "the converter drops T5's LM head");
    assert!(!set.index.keys().any(|k| k.starts_with("module.") || k.contains("embed_tokens")));

    // The bug: this failed with "missing tensor t5.lm_head.weight".
    let mut model = FiT5::open(&dir, &dev).unwrap_or_else(|e| panic!("converted untied FiT5 does not load: {e}"));
    let mc = model.config().clone();
    assert!(mc.t5.gated_gelu && !mc.t5.tie_word_embeddings);
    assert_eq!((mc.false_token_id, mc.true_token_id), (false_id, true_id));

    // The head: exactly rows (false, true) of the reference's full `dense`, in that order.
    let reference = root.join("ref/fit5.safetensors");
    let refset =
        SafetensorsSet::from_shards(vec![(reference.display().to_string(), FileBytes::open(&reference).unwrap())])
            .unwrap();
    let (dense, dshape) = refset.get("module.dense.weight").unwrap().unwrap();
    let (bias, _) = refset.get("module.dense.bias").unwrap().unwrap();
    let d = dshape[1];
    let rows: Vec<f32> = [false_id, true_id].iter().flat_map(|&r| dense[r * d..(r + 1) * d].to_vec()).collect();
    let (head, hshape) = set.get("dense.weight").unwrap().unwrap();
    assert_eq!((hshape, &head), (vec![2, d], &rows), "the converted file's head rows");
    assert_eq!(set.get("dense.bias").unwrap().unwrap().0, vec![bias[false_id], bias[true_id]]);
    let named = model.hf_tensors();
    let loaded = named.iter().find(|(n, _)| n == "dense.weight").map(|(_, t)| values(t.clone())).unwrap();
    assert_eq!(loaded, rows, "the loaded model's head rows");
    assert!(!named.iter().any(|(n, _)| n.contains("lm_head")), "FiT5 holds no LM head");

    // Scores against the generator's numpy forward (T5 v1.1 + global layers + dense).
    let (ids, mask) = ids_tensor(&rows_u32(&x["ids"]), &rows_u32(&x["mask"]), &dev);
    assert_close("untied FiT5, global", &values(model.forward(ids.clone(), mask.clone())), &floats(&x["global"]), 1e-4);
    model.set_global(false);
    assert_close("untied FiT5, local", &values(model.forward(ids.clone(), mask.clone())), &floats(&x["local"]), 1e-4);
    let full = FiT5::open(&root.join("fit5-full"), &dev).unwrap();
    assert_close("full head, global", &values(full.forward(ids.clone(), mask.clone())), &floats(&x["global"]), 1e-4);

    // The converted tokenizer has [CLS] at the next free id; real text scores to finite logits.
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    assert_eq!(tok.token_to_id("[CLS]"), Some(id("cls_id") as u32));
    let cands =
        [("otter facts", "the otter is red and lives in the river", 184.0), ("lynx facts", "a lynx is grey", 170.0)]
            .map(|(title, text, s)| Candidate {
                docid: title.into(),
                title: title.into(),
                text: text.into(),
                score: Some(s),
            });
    let scores = fit5_scores(&full, &tok, "what is the colour of the otter", &cands, &dev);
    assert!(scores.len() == 4 && scores.iter().all(|v| v.is_finite()), "{scores:?}");

    // A plain T5 v1.1 still needs and uses its untied LM head (unscaled): the reference's backbone loads as
    // T5 and matches the numpy LM logits; the converted file, which has no head, is refused by name.
    let (name, j) = (
        path("ref/t5-config.json"),
        serde_json::from_slice(&std::fs::read(root.join("ref/t5-config.json")).unwrap()).unwrap(),
    );
    let t5cfg = T5Config::from_json(&name, &j).unwrap();
    assert!(!t5cfg.tie_word_embeddings && !t5cfg.scale_decoder_outputs);
    let t5 = T5::load(&refset, &reference.display().to_string(), "module.t5.", &t5cfg, &dev).unwrap();
    assert_close("untied T5 v1.1 LM logits", &values(t5.first_step_logits(ids, mask)), &floats(&x["lm_logits"]), 1e-4);
    let conv = dir.join("model.safetensors").display().to_string();
    let e = T5::load(&set, &conv, "t5.", &t5cfg, &dev).unwrap_err().to_string();
    assert!(e.contains("t5.lm_head.weight"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}
