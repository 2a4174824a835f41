//! Trains the default family into a folder and prints the evaluation tables (until `chorus zoo` exists).
//! `cargo run --release -p chorus-zoo --example family -- OUT_DIR [per_task]`
use chorus_zoo::eval::{evaluate, render};
use chorus_zoo::family::{FamilySpec, train_family};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(a.get(1).expect("usage: family OUT_DIR [per_task]"));
    let per_task: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let t0 = std::time::Instant::now();
    if !out.exists() {
        let m = train_family(&FamilySpec::default(), &out, &mut |l| {
            eprintln!("[{:>5.0}s] {l}", t0.elapsed().as_secs_f64())
        })
        .expect("train");
        for x in &m.members {
            eprintln!(
                "{}: {} params, {} bytes, loss {:.3}, {:.0}s",
                x.name, x.parameters, x.bytes, x.final_loss, x.seconds
            );
        }
    }
    let r = evaluate(&out, per_task, &mut |l| eprintln!("[{:>5.0}s] {l}", t0.elapsed().as_secs_f64())).expect("eval");
    println!("{}", render(&r));
    println!("{}", serde_json::to_string(&r).unwrap());
}
