//! A feasibility trial (planning aid): pretrain one model of the default family's corpus, fine-tune it on
//! one task, export both, and print per-task greedy accuracy through the runtime: strict (the answer and
//! then the end of the line, what the zoo's tables count) and lenient (the output starts with the answer).
//! `cargo run -p chorus-zoo --example trial -- [small|large] [task] [pretrain_steps] [finetune_steps] [finetune_lr]`
use std::time::Instant;

use burn::tensor::Device;
use chorus_core::GenerateOptions;
use chorus_engine::{Backend, LoadedModel};
use chorus_models::{ModelFiles, TextTokenizer};
use chorus_zoo::corpus::{finetune_examples, pretrain_lines};
use chorus_zoo::family::FamilySpec;
use chorus_zoo::model::{ZooConfig, ZooModel};
use chorus_zoo::tasks::Task;
use chorus_zoo::train::{TrainConfig, train};
use chorus_zoo::{data, tokenizer};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn accuracy(dir: &std::path::Path, task: Task) -> Res<(f64, f64)> {
    let files = ModelFiles::open(dir)?;
    let device = chorus_engine::device(Backend::Cpu)?;
    let m = LoadedModel::load(files, Backend::Cpu, &device, None, &mut |_, _| {})?;
    let tests = task.examples(1, 2, 100);
    let prompts: Vec<Vec<u32>> =
        tests.iter().map(|e| m.files.tokenizer.encode(&e.prompt, false)).collect::<Result<_, _>>()?;
    let opts = GenerateOptions { max_new_tokens: 16, ..Default::default() };
    let outs = m.generate_batch(&prompts, &opts)?;
    let strict = tests.iter().zip(&outs).filter(|(e, o)| e.is_correct(&o.text)).count();
    let lenient = tests.iter().zip(&outs).filter(|(e, o)| o.text.starts_with(&e.answer)).count();
    if let Some((e, o)) = tests.iter().zip(&outs).next() {
        eprintln!("  e.g. {:?} -> {:?} (want {:?})", e.prompt, o.text, e.answer);
    }
    Ok((strict as f64 / tests.len() as f64, lenient as f64 / tests.len() as f64))
}

fn main() -> Res<()> {
    let a: Vec<String> = std::env::args().collect();
    let large = a.get(1).is_some_and(|s| s == "large");
    let name = a.get(2).map_or("add", |s| s.as_str());
    let task = Task::parse(name).ok_or_else(|| format!("unknown task {name:?} (add, reverse, sort, recall, date)"))?;
    let num = |i: usize, d: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let spec = FamilySpec::default();
    let (pre, ft) = (num(3, spec.pretrain[large as usize].steps), num(4, spec.finetune[large as usize].steps));
    let t0 = Instant::now();
    let lines = pretrain_lines(spec.seed, spec.corpus_lines, spec.mix);
    let ft_ex = finetune_examples(spec.seed, &[task], spec.finetune_examples);
    let mut texts = lines.clone();
    texts.extend(ft_ex.iter().map(|e| e.text()));
    let z = tokenizer::train(&texts, spec.vocab_size)?;
    let tk = TextTokenizer::from_hf_parts("tokenizer.json", &z.json, None, None, None)?;
    let device = Device::flex().autodiff();
    device.seed(1);
    let cfg = ZooConfig { vocab_size: z.vocab_size, ..if large { spec.large } else { spec.small } };
    eprintln!("params {}", cfg.parameters());
    let seqs: Vec<data::Sequence> = lines.iter().map(|l| data::line(&tk, l)).collect::<Result<_, _>>()?;
    let lens: Vec<usize> = seqs.iter().map(|s| s.ids.len()).collect();
    eprintln!(
        "pretrain tokens/line: max {} mean {:.1}",
        lens.iter().max().unwrap_or(&0),
        lens.iter().sum::<usize>() as f64 / lens.len() as f64
    );
    let tc = TrainConfig { steps: pre, ..spec.pretrain[large as usize] };
    let base = train(ZooModel::new(&cfg, &device)?, &seqs, &tc, z.eos, &device, &mut |s, l| {
        if s % 100 == 0 {
            eprintln!("pretrain {s} loss {l:.3} ({:.0}s)", t0.elapsed().as_secs_f64());
        }
    })?;
    let dir = std::env::temp_dir().join(format!("zoo-trial-{}", if large { "large" } else { "small" }));
    std::fs::remove_dir_all(&dir).ok();
    base.export(&cfg, &z.json, 0, z.eos, &dir.join("base"))?;
    for t in Task::ALL {
        let (s, l) = accuracy(&dir.join("base"), t)?;
        println!("base {:>8}: strict {s:.2} lenient {l:.2}", t.name());
    }
    let ft_seqs: Vec<data::Sequence> = ft_ex.iter().map(|e| data::example(&tk, e)).collect::<Result<_, _>>()?;
    let lr = a.get(5).and_then(|s| s.parse().ok()).unwrap_or(spec.finetune[large as usize].lr);
    let tf = TrainConfig { steps: ft, lr, warmup: (ft / 20).max(1), ..spec.finetune[large as usize] };
    let expert = train(base, &ft_seqs, &tf, z.eos, &device, &mut |s, l| {
        if s % 100 == 0 {
            eprintln!("finetune {s} loss {l:.3} ({:.0}s)", t0.elapsed().as_secs_f64());
        }
    })?;
    expert.export(&cfg, &z.json, 0, z.eos, &dir.join("expert"))?;
    let (s, l) = accuracy(&dir.join("expert"), task)?;
    println!(
        "{} {} pretrain {pre} finetune {ft}: expert strict {s:.2} lenient {l:.2} ({:.0}s)",
        if large { "large" } else { "small" },
        task.name(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
