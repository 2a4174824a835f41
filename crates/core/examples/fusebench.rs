//! Times the fast DLF evaluator on one synthetic Qwen-sized row (development aid).
fn main() {
    use chorus_core::fusion::*;
    let (l, s, e) = synthetic_logits(1, 151_665, 1);
    let t = std::time::Instant::now();
    for _ in 0..100 {
        std::hint::black_box(exp_dot_shift(&l, &e[0], 0.5, 30.0));
    }
    println!("exp_dot_shift: {:.3} ms", t.elapsed().as_secs_f64() * 10.0);
    let t = std::time::Instant::now();
    for _ in 0..100 {
        std::hint::black_box(max_shift(&l, &e[0], 0.5));
    }
    println!("max_shift: {:.3} ms", t.elapsed().as_secs_f64() * 10.0);
    let ex = [e[0].as_slice()];
    let row = RowLogits { large: &l, base: &s, experts: &ex };
    let mut f = FastEvaluator::new();
    let t = std::time::Instant::now();
    for _ in 0..10 {
        f.load(&row).unwrap();
    }
    println!("load: {:.3} ms", t.elapsed().as_secs_f64() * 100.0);
    let t = std::time::Instant::now();
    for _ in 0..10 {
        std::hint::black_box(solve(&FusionConfig::default(), &mut f));
    }
    println!("paper solve: {:.3} ms", t.elapsed().as_secs_f64() * 100.0);
    let t = std::time::Instant::now();
    for _ in 0..10 {
        std::hint::black_box(f.fused(&[0.5], false));
    }
    println!("fused_logits: {:.3} ms", t.elapsed().as_secs_f64() * 100.0);
}
