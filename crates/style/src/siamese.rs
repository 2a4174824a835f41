//! The siamese style network (spec §3.4): an encoder f (`256→512 BN ReLU drop → 512 BN ReLU drop → 256`) and a
//! predictor g (`256→100 BN LeakyReLU(0.2) → 256`) over autoencoder latents, trained SimSiam-style with an
//! InfoNCE that pulls g(f(origin)) towards f(same-style latents) and away from f(other-style latents), the
//! predictor on the origin branch only and a stop-gradient on the others. The same cosine scores give the
//! editing objective (`--not_nll`, spec §3.5). BatchNorm uses batch statistics in training and its running
//! statistics otherwise (a frozen or validation-mode net accepts a batch of one).

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use chorus_models::export::Named;

use crate::ae::{Reader, push_linear};
use serde::{Deserialize, Serialize};

/// Sizes and the dropout of f (the reference: 256 → 512 → 512 → 256, predictor hidden 100, dropout 0.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiameseConfig {
    /// Latent width (the autoencoder's d_model).
    pub d_in: usize,
    /// Hidden width of f.
    pub d_hidden: usize,
    /// Output width of f and g.
    pub d_out: usize,
    /// Hidden width of g.
    pub d_pred: usize,
    /// Dropout of f in training.
    pub dropout: f64,
}

impl SiameseConfig {
    /// The reference's sizes for latents of width `d_in` (its f maps 256 → 512 → 512 → 256: widths scale
    /// with the latent).
    pub fn for_latent(d_in: usize) -> Self {
        Self { d_in, d_hidden: 2 * d_in, d_out: d_in, d_pred: 100.min(d_in.max(8)), dropout: 0.2 }
    }
}

/// f and g.
#[derive(Module, Debug)]
pub struct StyleNet {
    f1: Linear,
    f1_bn: BatchNorm,
    f2: Linear,
    f2_bn: BatchNorm,
    f3: Linear,
    drop: Dropout,
    g1: Linear,
    g1_bn: BatchNorm,
    g2: Linear,
}

fn linear(i: usize, o: usize, dev: &Device) -> Linear {
    // PyTorch's nn.Linear default: Kaiming-uniform weight with a = √5, i.e. uniform in ±1/√fan_in, bias too.
    let r = 1.0 / (i as f64).sqrt();
    LinearConfig::new(i, o).with_initializer(Initializer::Uniform { min: -r, max: r }).init(dev)
}

fn bn(n: usize, dev: &Device) -> BatchNorm {
    BatchNormConfig::new(n).with_epsilon(1e-5).with_momentum(0.1).init(dev)
}

/// Row-wise cosine similarity of `[B, d]` with `[B, K, d]` → `[B, K]` (eps 1e-8 as torch's).
pub fn cosine_rows(a: Tensor<2>, others: Tensor<3>) -> Tensor<2> {
    let [b, k, d] = others.dims();
    let an = a.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-8); // [B,1]
    let on = others.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-8).reshape([b, k]);
    let dot = (others * a.reshape([b, 1, d])).sum_dim(2).reshape([b, k]);
    dot / (on * an)
}

impl StyleNet {
    /// A fresh net (PyTorch's default Linear init; BN γ 1, β 0). Seed the device first for reproducibility.
    pub fn new(cfg: &SiameseConfig, dev: &Device) -> Self {
        Self {
            f1: linear(cfg.d_in, cfg.d_hidden, dev),
            f1_bn: bn(cfg.d_hidden, dev),
            f2: linear(cfg.d_hidden, cfg.d_hidden, dev),
            f2_bn: bn(cfg.d_hidden, dev),
            f3: linear(cfg.d_hidden, cfg.d_out, dev),
            drop: DropoutConfig::new(cfg.dropout).init(),
            g1: linear(cfg.d_out, cfg.d_pred, dev),
            g1_bn: bn(cfg.d_pred, dev),
            g2: linear(cfg.d_pred, cfg.d_out, dev),
        }
    }

    /// f: `[N, d_in]` → `[N, d_out]`.
    pub fn f(&self, z: Tensor<2>) -> Tensor<2> {
        let x = self.drop.forward(activation::relu(self.f1_bn.forward(self.f1.forward(z))));
        let x = self.drop.forward(activation::relu(self.f2_bn.forward(self.f2.forward(x))));
        self.f3.forward(x)
    }

    /// g: `[N, d_out]` → `[N, d_out]`.
    pub fn g(&self, h: Tensor<2>) -> Tensor<2> {
        self.g2.forward(activation::leaky_relu(self.g1_bn.forward(self.g1.forward(h)), 0.2))
    }

    /// f of anchor latents `[B, K, d]` → `[B, K, e]`.
    pub fn anchor_features(&self, anchors: Tensor<3>) -> Tensor<3> {
        let [b, k, d] = anchors.dims();
        let h = self.f(anchors.reshape([b * k, d]));
        let e = h.dims()[1];
        h.reshape([b, k, e])
    }

    /// Cosines of g(f(origin)) `[B, d]` with anchor features `[B, P, e]` and `[B, N, e]` (from
    /// [`Self::anchor_features`]): (`[B, P]`, `[B, N]`).
    pub fn scores_with(&self, z: Tensor<2>, same: Tensor<3>, other: Tensor<3>) -> (Tensor<2>, Tensor<2>) {
        let a = self.g(self.f(z));
        (cosine_rows(a.clone(), same), cosine_rows(a, other))
    }

    /// Cosines of g(f(origin)) `[B, d]` with f of `P` same-style latents `[B, P, d]` and of `N` other-style
    /// latents `[B, N, d]`: (`[B, P]`, `[B, N]`). The anchors' branch is detached when `stop_grad`.
    pub fn scores(&self, z: Tensor<2>, same: Tensor<3>, other: Tensor<3>, stop_grad: bool) -> (Tensor<2>, Tensor<2>) {
        let (fp, fn_) = (self.anchor_features(same), self.anchor_features(other));
        let (fp, fn_) = if stop_grad { (fp.detach(), fn_.detach()) } else { (fp, fn_) };
        self.scores_with(z, fp, fn_)
    }

    /// The training loss (spec §3.4): for each same-style anchor i, CE over `[cos(a, p_i), cos(a, n_1..N)] / τ`
    /// with target 0, averaged over i and the batch.
    pub fn loss(&self, z: Tensor<2>, same: Tensor<3>, other: Tensor<3>, tau: f64) -> Tensor<1> {
        let (sp, sn) = self.scores(z, same, other, true);
        contrast_loss(sp, sn, tau)
    }

    /// The tensors under `siamese.*` / `predictor.*` names (BN running statistics included) for saving.
    pub fn tensors(&self) -> Vec<Named> {
        let mut out = Vec::new();
        let norm = |out: &mut Vec<Named>, p: &str, n: &BatchNorm| {
            let d = n.gamma.dims()[0];
            out.push((format!("{p}.weight"), vec![d], n.gamma.val().reshape([1, d])));
            out.push((format!("{p}.bias"), vec![d], n.beta.val().reshape([1, d])));
            out.push((format!("{p}.running_mean"), vec![d], n.running_mean.value().reshape([1, d])));
            out.push((format!("{p}.running_var"), vec![d], n.running_var.value().reshape([1, d])));
        };
        push_linear(&mut out, "siamese.fc1", &self.f1);
        norm(&mut out, "siamese.bn1", &self.f1_bn);
        push_linear(&mut out, "siamese.fc2", &self.f2);
        norm(&mut out, "siamese.bn2", &self.f2_bn);
        push_linear(&mut out, "siamese.fc3", &self.f3);
        push_linear(&mut out, "predictor.fc1", &self.g1);
        norm(&mut out, "predictor.bn1", &self.g1_bn);
        push_linear(&mut out, "predictor.fc2", &self.g2);
        out
    }

    /// Reads the tensors [`Self::tensors`] wrote.
    pub fn load(
        set: &chorus_models::SafetensorsSet,
        file: &str,
        cfg: &SiameseConfig,
        dev: &Device,
    ) -> crate::Result<Self> {
        use burn::module::{Param, RunningState};
        let r = Reader { set, file: file.into(), dev: dev.clone() };
        let norm = |p: &str, d: usize| -> crate::Result<BatchNorm> {
            let mut n = bn(d, dev);
            n.gamma = Param::from_tensor(r.vector(&format!("{p}.weight"), d)?);
            n.beta = Param::from_tensor(r.vector(&format!("{p}.bias"), d)?);
            n.running_mean = RunningState::new(r.vector(&format!("{p}.running_mean"), d)?);
            n.running_var = RunningState::new(r.vector(&format!("{p}.running_var"), d)?);
            Ok(n)
        };
        let (i, h, o, p) = (cfg.d_in, cfg.d_hidden, cfg.d_out, cfg.d_pred);
        Ok(Self {
            f1: r.linear("siamese.fc1", h, i)?,
            f1_bn: norm("siamese.bn1", h)?,
            f2: r.linear("siamese.fc2", h, h)?,
            f2_bn: norm("siamese.bn2", h)?,
            f3: r.linear("siamese.fc3", o, h)?,
            drop: DropoutConfig::new(cfg.dropout).init(),
            g1: r.linear("predictor.fc1", p, o)?,
            g1_bn: norm("predictor.bn1", p)?,
            g2: r.linear("predictor.fc2", o, p)?,
        })
    }
}

/// The InfoNCE of spec §3.4 from cosine scores: `[B, P]` positives, `[B, N]` negatives.
pub fn contrast_loss(sp: Tensor<2>, sn: Tensor<2>, tau: f64) -> Tensor<1> {
    let [b, p] = sp.dims();
    let n = sn.dims()[1];
    // Row (b, i) holds [cos(a, p_i), cos(a, n_1..N)]: the positive in column 0.
    let pos = sp.reshape([b, p, 1]);
    let neg = sn.reshape([b, 1, n]).expand([b, p, n]);
    let logits = Tensor::cat(vec![pos, neg], 2) / tau; // [B, P, 1+N]
    let lp = activation::log_softmax(logits, 2);
    let first = lp.slice([0..b, 0..p, 0..1]);
    first.mean().neg().reshape([1])
}

/// The editing objective J of `--not_nll` (spec §3.5) per row: `(Σ_i −cos(a, f(same_i))/τ + Σ_k cos(a,
/// f(target_k))/τ) / (P + N)`; editing ascends it.
pub fn edit_objective(sp: Tensor<2>, sn: Tensor<2>, tau: f64) -> Tensor<1> {
    let [b, p] = sp.dims();
    let n = sn.dims()[1];
    ((sn.sum_dim(1) - sp.sum_dim(1)) / (tau * (p + n) as f64)).reshape([b])
}

/// In-batch InfoNCE between two views of the same sentences (spec §3.3): `CE(cos(z_b, v_{b'})/τ, target b)`
/// averaged over the batch.
pub fn in_batch_contrast(z: Tensor<2>, view: Tensor<2>, tau: f64) -> Tensor<1> {
    let b = z.dims()[0];
    let sims = cosine_rows_all(z, view) / tau; // [B, B]
    let lp = activation::log_softmax(sims, 1);
    let dev = lp.device();
    let idx = Tensor::<2, Int>::from_data(TensorData::new((0..b as i64).collect::<Vec<_>>(), [b, 1]), &dev);
    lp.gather(1, idx).mean().neg().reshape([1])
}

/// All-pairs cosine `[B, d]` × `[C, d]` → `[B, C]`.
pub fn cosine_rows_all(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let an = a.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-8);
    let bn = b.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-8);
    (a / an).matmul((b / bn).transpose())
}
