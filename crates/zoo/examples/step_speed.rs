//! Measures training-step time for candidate zoo sizes (a planning aid; prints one line per size).
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_zoo::model::{ZooConfig, ZooModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    device.seed(1);
    for (h, f, l, heads) in [(64usize, 192usize, 2usize, 4usize), (128, 384, 4, 4), (160, 448, 4, 5)] {
        let cfg = ZooConfig {
            vocab_size: 320,
            hidden_size: h,
            intermediate_size: f,
            num_layers: l,
            num_heads: heads,
            max_positions: 64,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
        };
        let mut m = ZooModel::new(&cfg, &device)?;
        let mut opt = AdamWConfig::new().init();
        let (b, t) = (32usize, 48usize);
        let ids: Vec<i64> = (0..b * t).map(|i| (i * 31 % 320) as i64).collect();
        let x = Tensor::<1, Int>::from_data(TensorData::new(ids, [b * t]), &device).reshape([b, t]);
        let w = Tensor::<2>::ones([b, t], &device);
        let start = std::time::Instant::now();
        let n = 10;
        for _ in 0..n {
            let loss = m.loss(x.clone(), w.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            m = opt.step(1e-3, m, grads);
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
        println!("h={h} f={f} layers={l} params={} : {ms:.1} ms/step (batch {b}x{t})", cfg.parameters());
    }
    Ok(())
}
