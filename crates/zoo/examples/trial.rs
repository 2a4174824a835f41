//! A feasibility trial (planning aid): pretrain one small model on the zoo corpus, fine-tune it on one
//! task, export both, and measure greedy exact-match accuracy through the runtime.
//! `cargo run --release -p chorus-zoo --example trial -- [task] [pretrain_steps] [finetune_steps] [hidden] [layers]`
use std::time::Instant;

use burn::tensor::Device;
use chorus_core::GenerateOptions;
use chorus_engine::{Backend, LoadedModel};
use chorus_models::{ModelFiles, TextTokenizer};
use chorus_zoo::corpus::{Mix, finetune_examples, pretrain_lines};
use chorus_zoo::model::{ZooConfig, ZooModel};
use chorus_zoo::tasks::Task;
use chorus_zoo::train::{TrainConfig, train};
use chorus_zoo::{data, tokenizer};

fn accuracy(dir: &std::path::Path, task: Task) -> f64 {
    let files = ModelFiles::open(dir).unwrap();
    let device = chorus_engine::device(Backend::Cpu).unwrap();
    let m = LoadedModel::load(files, Backend::Cpu, &device, None, &mut |_, _| {}).unwrap();
    let tests = task.examples(1, 2, 100);
    let prompts: Vec<Vec<u32>> = tests.iter().map(|e| m.files.tokenizer.encode(&e.prompt, false).unwrap()).collect();
    let opts = GenerateOptions { max_new_tokens: 16, ..Default::default() };
    let outs = m.generate_batch(&prompts, &opts).unwrap();
    let ok = tests.iter().zip(&outs).filter(|(e, o)| e.is_correct(&o.text)).count();
    if let Some((e, o)) = tests.iter().zip(&outs).next() {
        eprintln!("  e.g. {:?} -> {:?} (want {:?})", e.prompt, o.text, e.answer);
    }
    ok as f64 / tests.len() as f64
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let task = Task::parse(a.get(1).map_or("add", |s| s.as_str())).unwrap();
    let num = |i: usize, d: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (pre, ft, h, layers) = (num(2, 300), num(3, 200), num(4, 64), num(5, 2));
    let t0 = Instant::now();
    let lines = pretrain_lines(1, 20_000, Mix::default());
    let ft_ex = finetune_examples(1, &[task], 4000);
    let mut texts = lines.clone();
    texts.extend(ft_ex.iter().map(|e| e.text()));
    let z = tokenizer::train(&texts, 320).unwrap();
    let tk = TextTokenizer::from_hf_parts("tokenizer.json", &z.json, None, None, None).unwrap();
    let device = Device::flex().autodiff();
    device.seed(1);
    let cfg = ZooConfig {
        vocab_size: z.vocab_size,
        hidden_size: h,
        intermediate_size: 3 * h,
        num_layers: layers,
        num_heads: 4,
        max_positions: 64,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
    };
    eprintln!("params {}", cfg.parameters());
    let seqs: Vec<data::Sequence> = lines.iter().map(|l| data::line(&tk, l).unwrap()).collect();
    let tc = TrainConfig { steps: pre, batch: 32, seq_len: 40, lr: 3e-3, warmup: 30, weight_decay: 0.01, seed: 1 };
    let base = train(ZooModel::new(&cfg, &device).unwrap(), &seqs, &tc, z.eos, &device, &mut |s, l| {
        if s % 50 == 0 {
            eprintln!("pretrain {s} loss {l:.3} ({:.0}s)", t0.elapsed().as_secs_f64());
        }
    })
    .unwrap();
    let dir = std::env::temp_dir().join("zoo-trial");
    base.export(&cfg, &z.json, 0, z.eos, &dir.join("base")).unwrap();
    let ft_seqs: Vec<data::Sequence> = ft_ex.iter().map(|e| data::example(&tk, e).unwrap()).collect();
    let tf = TrainConfig { steps: ft, batch: 32, seq_len: 40, lr: 2e-3, warmup: 20, weight_decay: 0.01, seed: 2 };
    let expert = train(base, &ft_seqs, &tf, z.eos, &device, &mut |s, l| {
        if s % 50 == 0 {
            eprintln!("finetune {s} loss {l:.3} ({:.0}s)", t0.elapsed().as_secs_f64());
        }
    })
    .unwrap();
    expert.export(&cfg, &z.json, 0, z.eos, &dir.join("expert")).unwrap();
    let (b, e) = (accuracy(&dir.join("base"), task), accuracy(&dir.join("expert"), task));
    println!(
        "task {} hidden {h} layers {layers} pretrain {pre} finetune {ft}: base {:.2} expert {:.2} ({:.0}s)",
        task.name(),
        b,
        e,
        t0.elapsed().as_secs_f64()
    );
}
