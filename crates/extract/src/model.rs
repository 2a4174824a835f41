//! The MVRE model (spec §1.2, §1.5, §1.6): a BERT/RoBERTa masked LM whose vocabulary gains m virtual words per
//! relation (`[class{y}_{j}]`, embeddings tied to the output layer), per-view scores over the relation words at
//! the j-th mask, frozen random gates, the gated mixture S = Σ_j g_j · softmax_y(s_j), and the Global-Local loss
//! on the virtual-word rows.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use chorus_models::bert::Bert;
use serde::{Deserialize, Serialize};

/// How the classification loss reads S (spec §1.6; the paper's form is unverified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassLoss {
    /// The released code: cross-entropy of softmax over S (S treated as logits). Default, for reproduction.
    #[default]
    CeOnMixture,
    /// −log S(y) (S read as a probability mixture; S ≤ m, so divided by m first).
    NegLogMixture,
}

/// The Global-Local loss of the virtual-word rows `e: [R, m, H]` (relation, view, width), with the reference's
/// normalisers read as chained divisions (spec §1.6).
pub fn gl_loss(e: Tensor<3>, beta: f64) -> Tensor<1> {
    let [r, m, _] = e.dims();
    let norm = e.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-8);
    let n = e / norm;
    // Unlike: the same view across relations; n by view: [m, R, H].
    let by_view = n.clone().swap_dims(0, 1);
    let d = by_view.clone().matmul(by_view.swap_dims(1, 2));
    let unlike = d.sum().neg() + (m * r * r) as f64;
    let (rf, mf) = (r as f64, m as f64);
    let global = unlike * beta / mf / rf / (rf + 1.0) / 2.0;
    if m < 2 {
        return global.neg();
    }
    // Like: the views of one relation, j < k: half the sum over all ordered pairs (the diagonal adds 0).
    let c = n.clone().matmul(n.swap_dims(1, 2));
    let like = (c.sum().neg() + (r * m * m) as f64) / 2.0;
    like / rf / mf / (mf - 1.0) / 2.0 - global
}

/// Plain-Rust f64 reference of [`gl_loss`] (rows `e[y][j]`).
pub fn gl_loss_reference(e: &[Vec<Vec<f32>>], beta: f64) -> f64 {
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt().max(1e-8);
        let nb = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt().max(1e-8);
        dot / (na * nb)
    };
    let r = e.len();
    let m = e.first().map_or(0, Vec::len);
    let mut like = 0.0;
    for row in e {
        for j in 0..m {
            for k in j + 1..m {
                like += 1.0 - cos(&row[j], &row[k]);
            }
        }
    }
    let mut unlike = 0.0;
    for j in 0..m {
        for y in 0..r {
            for z in 0..r {
                unlike += 1.0 - cos(&e[y][j], &e[z][j]);
            }
        }
    }
    let (rf, mf) = (r as f64, m as f64);
    let global = beta * unlike / mf / rf / (rf + 1.0) / 2.0;
    if m < 2 { -global } else { like / rf / mf / (mf - 1.0) / 2.0 - global }
}

/// MVRE on a masked LM.
#[derive(Module, Debug)]
pub struct Mvre {
    bert: Bert,
    /// Gate weights `[m, H]` and biases `[m]` (the reference never trains them: they stay frozen).
    gate_w: Param<Tensor<2>>,
    gate_b: Param<Tensor<1>>,
    /// Vocabulary ids of `[class{y}_{j}]`, view-major: `ids[j][y]`.
    #[module(skip)]
    virtual_ids: Vec<Vec<u32>>,
}

impl Mvre {
    /// Wraps a masked LM whose vocabulary already holds the virtual words `virtual_ids[j][y]`; the gates are
    /// drawn N(0, H^-½) on the host from `seed` (the same gates on every backend) and frozen.
    pub fn new(bert: Bert, virtual_ids: Vec<Vec<u32>>, seed: u64, dev: &Device) -> Self {
        let m = virtual_ids.len();
        let h = bert.config().hidden_size;
        let std = (h as f64).powf(-0.5);
        let w = crate::init::normal_rows(m, h, std, seed);
        let b = crate::init::normal_rows(1, m, std, seed ^ 0x9e37_79b9);
        Self::with_gates(bert, virtual_ids, w, b, dev)
    }

    /// Wraps a masked LM with stored gate values (`w` row-major `[m, H]`, `b` `[m]`), frozen.
    pub fn with_gates(bert: Bert, virtual_ids: Vec<Vec<u32>>, w: Vec<f32>, b: Vec<f32>, dev: &Device) -> Self {
        let m = virtual_ids.len();
        let h = bert.config().hidden_size;
        let w = Tensor::<2>::from_data(TensorData::new(w, [m, h]), dev);
        let b = Tensor::<1>::from_data(TensorData::new(b, [m]), dev);
        Self {
            bert,
            gate_w: Param::from_tensor(w).set_require_grad(false),
            gate_b: Param::from_tensor(b).set_require_grad(false),
            virtual_ids,
        }
    }

    /// The gate tensors (weights `[m, H]`, biases lifted to `[1, m]`) for saving.
    pub fn gate_tensors(&self) -> (Tensor<2>, Tensor<2>) {
        (self.gate_w.val(), self.gate_b.val().unsqueeze::<2>())
    }

    /// Vocabulary ids of the virtual words, view-major (`ids[j][y]`).
    pub fn virtual_ids(&self) -> &[Vec<u32>] {
        &self.virtual_ids
    }

    /// Views.
    pub fn views(&self) -> usize {
        self.virtual_ids.len()
    }

    /// Relations.
    pub fn relations(&self) -> usize {
        self.virtual_ids.first().map_or(0, Vec::len)
    }

    /// The gate weights and biases (for checks that they stay frozen).
    pub fn gate_values(&self) -> (Vec<f32>, Vec<f32>) {
        let v = |t: TensorData| t.convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
        (v(self.gate_w.val().into_data()), v(self.gate_b.val().into_data()))
    }

    /// The encoder.
    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    /// The virtual-word rows `[R, m, H]` of the (tied) embedding table.
    pub fn virtual_rows(&self) -> Tensor<3> {
        let e = self.bert.word_embeddings();
        let dev = e.device();
        let (m, r) = (self.views(), self.relations());
        let h = e.dims()[1];
        // Relation-major order [y][j] so that the reshape gives [R, m, H].
        let ids: Vec<i64> =
            (0..r).flat_map(|y| (0..m).map(move |j| (y, j))).map(|(y, j)| i64::from(self.virtual_ids[j][y])).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(ids, [r * m]), &dev);
        e.select(0, idx).reshape([r, m, h])
    }

    /// S `[B, R]` and the per-view probabilities `[B, m, R]` of a batch: `ids`, `positions`, `mask` as for
    /// [`Bert::hidden`]; `mask_pos[b][j]` = the j-th mask of row b.
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        mask: Tensor<2>,
        mask_pos: &[Vec<usize>],
    ) -> (Tensor<2>, Tensor<3>) {
        let hidden = self.bert.hidden(ids, positions, mask);
        let [b, _, h] = hidden.dims();
        let (m, r) = (self.views(), self.relations());
        let dev = hidden.device();
        let idx: Vec<i64> =
            mask_pos.iter().flat_map(|row| row.iter().flat_map(|&p| std::iter::repeat_n(p as i64, h))).collect();
        let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [b, m, h]), &dev);
        let hm = hidden.gather(1, idx); // [B, m, H]
        let t = self.bert.head_transform(hm.clone()); // [B, m, H]
        // View j's relation rows: [m, R, H]; its bias entries: [m, R].
        let rows = self.virtual_rows().swap_dims(0, 1);
        let bias = self.bert.head_bias_rows(&self.virtual_ids); // [m, R]
        let s = t.swap_dims(0, 1).matmul(rows.swap_dims(1, 2)).swap_dims(0, 1) + bias.unsqueeze::<3>(); // [B, m, R]
        let p = activation::softmax(s, 2);
        let g = activation::sigmoid(
            (hm * self.gate_w.val().unsqueeze::<3>()).sum_dim(2).reshape([b, m]) + self.gate_b.val().unsqueeze::<2>(),
        );
        let mix = (p.clone() * g.reshape([b, m, 1])).sum_dim(1).reshape([b, r]);
        (mix, p)
    }

    /// Classification loss of S `[B, R]` against labels `[B]`, plus λ·L_GL.
    pub fn loss(&self, s: Tensor<2>, labels: Tensor<1, Int>, form: ClassLoss, lambda: f64, beta: f64) -> Tensor<1> {
        let [b, _] = s.dims();
        let m = self.views() as f64;
        let logp = match form {
            ClassLoss::CeOnMixture => activation::log_softmax(s, 1),
            ClassLoss::NegLogMixture => (s / m).clamp_min(1e-12).log(),
        };
        let ce = logp.gather(1, labels.reshape([b, 1])).mean().neg();
        ce + gl_loss(self.virtual_rows(), beta) * lambda
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: usize, m: usize, h: usize, seed: u64) -> Vec<Vec<Vec<f32>>> {
        let mut rng = chorus_core::sampling::Rng::new(seed);
        (0..r).map(|_| (0..m).map(|_| (0..h).map(|_| rng.next_f64() as f32 - 0.5).collect()).collect()).collect()
    }

    fn tensor(e: &[Vec<Vec<f32>>]) -> Tensor<3> {
        let (r, m, h) = (e.len(), e[0].len(), e[0][0].len());
        let flat: Vec<f32> = e.iter().flatten().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [r, m, h]), &Device::flex())
    }

    fn value(t: Tensor<1>) -> f64 {
        f64::from(t.into_scalar::<f32>())
    }

    /// Spec §1.11.3: identical vectors give 0; the burn loss equals the f64 reference; invariant to rescaling
    /// rows, to relabelling relations and to permuting views jointly.
    #[test]
    fn gl_loss_cases_and_invariances() {
        let same = vec![vec![vec![1.0f32, 2.0, 3.0]; 2]; 2];
        assert!(gl_loss_reference(&same, 0.1).abs() < 1e-12);
        assert!(value(gl_loss(tensor(&same), 0.1)).abs() < 1e-6);
        // One-hot rows: R = 2, m = 2, e_y^j = unit vector (2y + j): every cosine between different rows is 0.
        // like = 2 pairs · 1 = 2 → 2 / 2 / 2 / 1 / 2 = 0.25; unlike = Σ_j (4 − 2) = 4 → 0.1 · 4 / 2 / 2 / 3 / 2 = 0.0166…
        let onehot: Vec<Vec<Vec<f32>>> = (0..2)
            .map(|y| (0..2).map(|j| (0..4).map(|k| f32::from(u8::from(k == 2 * y + j))).collect()).collect())
            .collect();
        let want = 0.25 - 0.1 * 4.0 / 2.0 / 2.0 / 3.0 / 2.0;
        assert!((gl_loss_reference(&onehot, 0.1) - want).abs() < 1e-12);
        assert!((value(gl_loss(tensor(&onehot), 0.1)) - want).abs() < 1e-6);
        let e = rows(5, 3, 8, 1);
        let base = gl_loss_reference(&e, 0.1);
        assert!((value(gl_loss(tensor(&e), 0.1)) - base).abs() < 1e-5);
        let mut scaled = e.clone();
        scaled[2][1].iter_mut().for_each(|x| *x *= 7.5);
        let mut relabelled = e.clone();
        relabelled.swap(0, 4);
        let permuted: Vec<Vec<Vec<f32>>> = e.iter().map(|r| vec![r[2].clone(), r[0].clone(), r[1].clone()]).collect();
        for (what, v) in [("scaled", scaled), ("relabelled", relabelled), ("views permuted", permuted)] {
            assert!((gl_loss_reference(&v, 0.1) - base).abs() < 1e-9, "{what}");
            assert!((value(gl_loss(tensor(&v), 0.1)) - base).abs() < 1e-5, "{what}");
        }
        // m = 1: only the global term.
        let single = rows(4, 1, 6, 2);
        assert!((value(gl_loss(tensor(&single), 0.1)) - gl_loss_reference(&single, 0.1)).abs() < 1e-6);
        assert!(gl_loss_reference(&single, 0.1) <= 0.0);
    }
}
