//! The invariants of the Twin-Merging spec (§B.14) on small random models: one-hot full rank gives the
//! expert, uniform full rank gives the average for any λ, Eckart–Young errors, the shared expert's edge
//! cases, uncompressed vectors and rank-0 matrices, excluded tensors untouched, determinism; and bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chorus_core::sampling::Rng;
use chorus_merge::twin::{Kind, build, reconstruct, svd_factors};
use chorus_merge::{Rank, TwinOptions, TwinPack};
use chorus_models::{Delta, SafetensorsSet};

/// (name, shape) of the toy model: a wide and a tall matrix, a vector, a 1×n matrix and a bias.
const TENSORS: [(&str, &[usize]); 5] =
    [("a.weight", &[6, 5]), ("b.weight", &[4, 7]), ("norm.weight", &[5]), ("tok.weight", &[1, 5]), ("a.bias", &[6])];

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("chorus-twin-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn write_model(path: &Path, seed: u64, shapes: &[(&str, &[usize])]) -> BTreeMap<String, Vec<f32>> {
    std::fs::create_dir_all(path).unwrap();
    let mut rng = Rng::new(seed);
    let mut vals = BTreeMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
        vals.insert(name.to_string(), v);
    }
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        shapes.iter().map(|(n, s)| (n.to_string(), bytemuck_f32(&vals[*n]), s.to_vec())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path.join("model.safetensors")).unwrap();
    std::fs::write(path.join("config.json"), b"{\"model_type\": \"toy\"}").unwrap();
    vals
}

fn bytemuck_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

struct Toy {
    root: PathBuf,
    base: BTreeMap<String, Vec<f32>>,
    experts: Vec<BTreeMap<String, Vec<f32>>>,
}

impl Toy {
    fn new(tag: &str, tasks: usize) -> Self {
        let root = dir(tag);
        let base = write_model(&root.join("base"), 1, &TENSORS);
        let experts = (0..tasks).map(|t| write_model(&root.join(format!("e{t}")), 10 + t as u64, &TENSORS)).collect();
        Self { root, base, experts }
    }

    fn experts(&self) -> Vec<(String, PathBuf)> {
        (0..self.experts.len()).map(|t| (format!("task{t}"), self.root.join(format!("e{t}")))).collect()
    }

    fn build(&self, out: &str, opts: &TwinOptions) -> TwinPack {
        let out = self.root.join(out);
        build(&self.root.join("base"), &self.experts(), &out, opts, &mut |_, _, _| {}).unwrap();
        TwinPack::open(&out).unwrap()
    }
}

fn shared(pack: &TwinPack, name: &str) -> Vec<f32> {
    SafetensorsSet::open_dir(&pack.shared_dir()).unwrap().get(name).unwrap().unwrap().0
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn opts(lambda: f64, rank: Rank) -> TwinOptions {
    TwinOptions { lambda, rank, ..TwinOptions::default() }
}

#[test]
fn one_hot_full_rank_recovers_each_expert() {
    let toy = Toy::new("onehot", 3);
    // Density 1 (dense differences) and a fixed full rank (factors) must both give θ_t back.
    for (tag, rank) in [("dense", Rank::Density(1.0)), ("factors", Rank::Fixed(99))] {
        let pack = toy.build(tag, &opts(0.3, rank));
        for t in 0..3 {
            let mut w = vec![0.0; 3];
            w[t] = 1.0;
            for (name, _) in TENSORS {
                let got = pack.merged(name, &shared(&pack, name), &w).unwrap();
                let d = max_diff(&got, &toy.experts[t][name]);
                assert!(d < 1e-5, "{tag} task {t} {name}: {d}");
            }
        }
    }
}

#[test]
fn uniform_full_rank_is_the_average_for_any_lambda() {
    let toy = Toy::new("uniform", 3);
    for (i, lambda) in [0.0, 0.3, 1.0].into_iter().enumerate() {
        let pack = toy.build(&format!("l{i}"), &opts(lambda, Rank::Density(1.0)));
        for (name, _) in TENSORS {
            let got = pack.merged(name, &shared(&pack, name), &[1.0 / 3.0; 3]).unwrap();
            let avg: Vec<f32> =
                (0..got.len()).map(|k| toy.experts.iter().map(|e| e[name][k]).sum::<f32>() / 3.0).collect();
            assert!(max_diff(&got, &avg) < 1e-6, "λ {lambda} {name}");
        }
    }
}

#[test]
fn truncation_error_is_the_singular_value_tail() {
    let mut rng = Rng::new(7);
    let (m, n) = (9, 6);
    let delta: Vec<f32> = (0..m * n).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let (_, _, sing) = svd_factors(&delta, m, n, 0).unwrap();
    let mut last = f64::INFINITY;
    for r in 0..=n {
        let (us, v, _) = svd_factors(&delta, m, n, r).unwrap();
        let approx = reconstruct(&us, &v, m, n, r);
        let err = delta.iter().zip(&approx).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        let tail = sing[r..].iter().map(|s| s * s).sum::<f64>().sqrt();
        assert!((err - tail).abs() < 1e-5, "r {r}: ‖Δ − v‖ {err} vs tail {tail}");
        assert!(err <= last + 1e-9, "error grew at r {r}");
        last = err;
    }
    assert!(last < 1e-5, "full rank leaves {last}");

    // Through a pack: with a one-hot router, ‖θ* − θ_t‖_F is the tail of θ_t − θ_s.
    let toy = Toy::new("eckart", 2);
    let pack = toy.build("r2", &opts(0.3, Rank::Fixed(2)));
    let name = "a.weight";
    let s = shared(&pack, name);
    let d: Vec<f32> = toy.experts[1][name].iter().zip(&s).map(|(a, b)| a - b).collect();
    let (_, _, sing) = svd_factors(&d, 6, 5, 0).unwrap();
    let got = pack.merged(name, &s, &[0.0, 1.0]).unwrap();
    let err = got.iter().zip(&toy.experts[1][name]).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let tail = sing[2..].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((err - tail).abs() < 1e-5, "{err} vs {tail}");
}

#[test]
fn shared_expert_edge_cases() {
    let toy = Toy::new("shared", 2);
    let pack = toy.build("l0", &opts(0.0, Rank::Density(0.5)));
    for (name, _) in TENSORS {
        assert_eq!(shared(&pack, name), toy.base[name], "λ 0 must give θ_0 for {name}");
    }
    // One task at λ = 1: θ_s = θ_1 and its exclusive part is zero.
    let one = Toy::new("single", 1);
    let pack = one.build("l1", &opts(1.0, Rank::Density(1.0)));
    for (name, _) in TENSORS {
        assert!(max_diff(&shared(&pack, name), &one.experts[0][name]) < 1e-6, "{name}");
        match pack.exclusive("task0", name).unwrap() {
            Delta::Dense(d) => assert!(d.iter().all(|x| x.abs() < 1e-6), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn vectors_stay_dense_rank_zero_is_zero_and_exclusions_are_untouched() {
    let toy = Toy::new("kinds", 2);
    let o = TwinOptions { exclude: vec![".*bias.*".into()], ..opts(0.3, Rank::Density(0.1)) };
    let pack = toy.build("p", &o);
    let kind = |n: &str| pack.tensor(n).unwrap().kind.clone();
    assert_eq!(kind("norm.weight"), Kind::Dense, "1-D tensors are not compressed");
    assert_eq!(kind("tok.weight"), Kind::LowRank { rank: 0 }, "⌊0.1 · 1⌋ = 0");
    assert_eq!(kind("a.weight"), Kind::LowRank { rank: 0 }, "⌊0.1 · 5⌋ = 0");
    assert_eq!(kind("a.bias"), Kind::Excluded);
    assert_eq!(pack.exclusive("task1", "tok.weight").unwrap(), Delta::None);
    // The vector's exclusive part is exactly θ_t − θ_s.
    let s = shared(&pack, "norm.weight");
    let got = pack.merged("norm.weight", &s, &[0.0, 1.0]).unwrap();
    assert!(max_diff(&got, &toy.experts[1]["norm.weight"]) < 1e-6);
    // Excluded: θ_s is the base's, and no router weight moves it.
    assert_eq!(shared(&pack, "a.bias"), toy.base["a.bias"]);
    assert_eq!(pack.merged("a.bias", &toy.base["a.bias"], &[0.7, 0.3]).unwrap(), toy.base["a.bias"]);
    // The pack stores factors, not dense matrices: at rank 1, b.weight takes (4 + 7) numbers per task.
    let pack = toy.build("r1", &opts(0.3, Rank::Fixed(1)));
    match pack.exclusive("task0", "b.weight").unwrap() {
        Delta::LowRank { us, v, rank: 1 } => assert_eq!((us.len(), v.len()), (4, 7)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn building_twice_gives_identical_packs() {
    let toy = Toy::new("determinism", 2);
    let a = toy.build("a", &opts(0.3, Rank::Density(0.5)));
    let b = toy.build("b", &opts(0.3, Rank::Density(0.5)));
    for rel in ["shared/model.safetensors", "twin/model.safetensors"] {
        assert_eq!(std::fs::read(a.dir.join(rel)).unwrap(), std::fs::read(b.dir.join(rel)).unwrap(), "{rel}");
    }
}

#[test]
fn bad_inputs_are_named_and_leave_nothing() {
    let toy = Toy::new("bad", 1);
    let odd = toy.root.join("odd");
    let mut shapes = TENSORS.to_vec();
    shapes[1] = ("b.weight", &[4, 6]);
    write_model(&odd, 3, &shapes);
    let out = toy.root.join("out");
    let experts = vec![("task0".to_string(), toy.root.join("e0")), ("odd".to_string(), odd.clone())];
    let e = build(&toy.root.join("base"), &experts, &out, &TwinOptions::default(), &mut |_, _, _| {}).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("odd") && msg.contains("b.weight"), "{msg}");
    assert!(!out.exists());
    let twice = vec![("x".to_string(), toy.root.join("e0")), ("x".to_string(), toy.root.join("e0"))];
    let e = build(&toy.root.join("base"), &twice, &out, &TwinOptions::default(), &mut |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("repeated"), "{e}");
    let bad_re = TwinOptions { exclude: vec!["(".into()], ..TwinOptions::default() };
    let e = build(&toy.root.join("base"), &experts[..1], &out, &bad_re, &mut |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("--exclude"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_pack_whose_metadata_disagrees_with_its_factors_is_refused() {
    let toy = Toy::new("meta", 1);
    let pack = toy.build("p", &opts(0.3, Rank::Fixed(1)));
    let path = pack.dir.join("twin.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let t = j["tensors"].as_array_mut().unwrap().iter_mut().find(|t| t["name"] == "a.weight").unwrap();
    t["rank"] = 2.into();
    std::fs::write(&path, serde_json::to_vec(&j).unwrap()).unwrap();
    let e = TwinPack::open(&pack.dir).err().expect("refused").to_string();
    assert!(e.contains("task0/a.weight.us") && e.contains("shape"), "{e}");
    let t = j["tensors"].as_array_mut().unwrap().iter_mut().find(|t| t["name"] == "a.weight").unwrap();
    t["rank"] = 1.into();
    let t = j["tensors"].as_array_mut().unwrap().iter_mut().find(|t| t["name"] == "norm.weight").unwrap();
    t["kind"] = "lowrank".into();
    t["rank"] = 1.into();
    std::fs::write(&path, serde_json::to_vec(&j).unwrap()).unwrap();
    let e = TwinPack::open(&pack.dir).err().expect("refused").to_string();
    assert!(e.contains("norm.weight") && e.contains("matrix"), "{e}");
}
