//! Per-input low-rank mixing of task deltas into a loaded model (Twin-Merging's inference): for a
//! projection with shared weight W_s and task factors (U_t S_t, V_t), every row x of a batch gets
//! `y = x·W_sᵀ + Σ_t w_t (x·V_t)(U_t S_t)ᵀ` with its own weights w — θ* is never materialised. The
//! tasks' V_t are concatenated into one `[in, R]` matrix (one matmul), the per-row weights scale its R
//! columns, and each output part (q, k, v of a fused projection) takes its own `[R_p, out_p]` product.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_core::reference::LowRankPart;

/// One task's stored change to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// No change (an excluded tensor, or rank 0).
    None,
    /// `us` `[m, r]` = U_r·S_r and `v` `[n, r]` = V_r (row-major) of an `m × n` (`[out, in]`) matrix.
    LowRank {
        /// U_r·S_r.
        us: Vec<f32>,
        /// V_r.
        v: Vec<f32>,
        /// r.
        rank: usize,
    },
    /// The whole difference in the tensor's own shape.
    Dense(Vec<f32>),
}

/// Where a model's task deltas come from: `get(task, tensor name)`.
pub type DeltaSource<'a> = dyn FnMut(usize, &str) -> crate::Result<Delta> + 'a;

/// A device implementation of the mixed addition (the engine's WGSL kernel on wgpu, see
/// `chorus_gpu::lowrank`); without one, burn's matmuls do it.
pub trait LowRankKernel: Send + Sync {
    /// `base + ((x·A) ⊙ w[:, seg])·B` per part, for `x` `[M, in]`, `w` `[M, T]` and `base` `[M, out]` on the
    /// device; the constant operands (`op`) are the same on every call with the same `op.id`.
    fn apply(&self, x: Tensor<2>, w: &Tensor<2>, base: Tensor<2>, op: &LowRankConsts) -> crate::Result<Tensor<2>>;
}

/// The constant operands of one mixed projection, on the host (a kernel uploads them once per `id`).
#[derive(Debug)]
pub struct LowRankConsts {
    /// Unique per projection (a cache key).
    pub id: u64,
    /// `[in, R]` right factors, row-major.
    pub a: Vec<f32>,
    /// Task of each of the R columns.
    pub seg: Vec<u32>,
    /// The parts' `[R_p, out_p]` left factors, back to back.
    pub b: Vec<f32>,
    /// Output parts.
    pub parts: Vec<LowRankPart>,
    /// Input width.
    pub inp: usize,
    /// Output width (all parts).
    pub out: usize,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The mixable part of one projection (its output parts in order, e.g. q, k, v).
#[derive(Clone)]
pub(crate) struct LowRankAdd {
    /// Host copies of the constants, for a device kernel.
    pub(crate) consts: std::sync::Arc<LowRankConsts>,
    /// `[in, R]`: every part's and task's right factors side by side (part-major, then task).
    a: Tensor<2>,
    /// Task of each of the R columns.
    seg: Tensor<1, Int>,
    /// Per output part: (first column in `a`, columns, `[R_p, out_p]` left factors, out_p).
    parts: Vec<(usize, usize, Option<Tensor<2>>, usize)>,
}

impl LowRankAdd {
    /// From `(out_p, per-task deltas)` of each part of an `[Σ out_p, inp]` projection; `None` when no task
    /// changes any part.
    pub(crate) fn new(parts: &[(usize, Vec<Delta>)], inp: usize, dev: &Device) -> Option<Self> {
        let mut cols: Vec<Vec<f32>> = vec![Vec::new(); inp]; // rows of `a`, grown column by column
        let mut seg = Vec::new();
        let mut out_parts = Vec::new();
        let mut r_total = 0usize;
        let (mut b_all, mut lparts, mut out0) = (Vec::new(), Vec::new(), 0usize);
        for (out, deltas) in parts {
            let c0 = r_total;
            let mut b_rows: Vec<f32> = Vec::new();
            for (task, d) in deltas.iter().enumerate() {
                match d {
                    Delta::None => {}
                    Delta::LowRank { us, v, rank } => {
                        for (i, row) in cols.iter_mut().enumerate() {
                            row.extend_from_slice(&v[i * rank..(i + 1) * rank]);
                        }
                        // B = (U S)ᵀ: row c is column c of `us`.
                        for c in 0..*rank {
                            b_rows.extend((0..*out).map(|o| us[o * rank + c]));
                        }
                        seg.extend(std::iter::repeat_n(task as i64, *rank));
                        r_total += rank;
                    }
                    Delta::Dense(d) => {
                        // x·Δᵀ = (x·Δᵀ)·I: Δᵀ as the right factor and the identity as the left one, exact.
                        for (i, row) in cols.iter_mut().enumerate() {
                            row.extend((0..*out).map(|o| d[o * inp + i]));
                        }
                        for c in 0..*out {
                            b_rows.extend((0..*out).map(|o| if o == c { 1.0 } else { 0.0 }));
                        }
                        seg.extend(std::iter::repeat_n(task as i64, *out));
                        r_total += out;
                    }
                }
            }
            let n = r_total - c0;
            lparts.push(LowRankPart { out0, out_n: *out, col0: c0, col_n: n, b_off: b_all.len() });
            b_all.extend_from_slice(&b_rows);
            out0 += out;
            let b = (n > 0).then(|| Tensor::from_data(TensorData::new(b_rows, [n, *out]), dev));
            out_parts.push((c0, n, b, *out));
        }
        if r_total == 0 {
            return None;
        }
        let a: Vec<f32> = cols.into_iter().flatten().collect();
        let consts = LowRankConsts {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            a: a.clone(),
            seg: seg.iter().map(|&t| t as u32).collect(),
            b: b_all,
            parts: lparts,
            inp,
            out: out0,
        };
        Some(Self {
            consts: std::sync::Arc::new(consts),
            a: Tensor::from_data(TensorData::new(a, [inp, r_total]), dev),
            seg: Tensor::from_data(TensorData::new(seg, [r_total]), dev),
            parts: out_parts,
        })
    }

    /// The mixed addition for rows `x` (`[M, in]`) with per-row task weights `w` (`[M, T]`).
    pub(crate) fn forward(&self, x: Tensor<2>, w: &Tensor<2>) -> Tensor<2> {
        let [m, _] = x.dims();
        let dev = x.device();
        let z = x.matmul(self.a.clone()) * w.clone().select(1, self.seg.clone());
        let outs = self
            .parts
            .iter()
            .map(|(c0, n, b, out)| match b {
                Some(b) => z.clone().narrow(1, *c0, *n).matmul(b.clone()),
                None => Tensor::zeros([m, *out], &dev),
            })
            .collect::<Vec<_>>();
        if outs.len() == 1 {
            outs.into_iter().next().unwrap_or_else(|| Tensor::zeros([m, 0], &dev))
        } else {
            Tensor::cat(outs, 1)
        }
    }
}

impl LowRankAdd {
    /// The whole change for one weight vector `w` (`[T]`): A·diag(w[seg])·B as `[in, out]` (group-wise
    /// merges, where one θ* serves a whole batch).
    pub(crate) fn dense(&self, w: &Tensor<1>) -> Tensor<2> {
        let [inp, _] = self.a.dims();
        let dev = self.a.device();
        let scaled = self.a.clone() * w.clone().select(0, self.seg.clone()).unsqueeze_dim(0);
        let outs: Vec<Tensor<2>> = self
            .parts
            .iter()
            .map(|(c0, n, b, out)| match b {
                Some(b) => scaled.clone().narrow(1, *c0, *n).matmul(b.clone()),
                None => Tensor::zeros([inp, *out], &dev),
            })
            .collect();
        Tensor::cat(outs, 1)
    }
}

/// Per-task dense changes of a vector (an RMSNorm weight): `[T, n]`, mixed per row as `w · D`.
pub(crate) fn vector_deltas(deltas: &[Delta], n: usize, dev: &Device) -> Option<Tensor<2>> {
    if deltas.iter().all(|d| matches!(d, Delta::None)) {
        return None;
    }
    let mut rows = Vec::with_capacity(deltas.len() * n);
    for d in deltas {
        match d {
            Delta::Dense(v) if v.len() == n => rows.extend_from_slice(v),
            _ => rows.extend(std::iter::repeat_n(0.0, n)),
        }
    }
    Some(Tensor::from_data(TensorData::new(rows, [deltas.len(), n]), dev))
}

/// Host-side per-task embedding changes: for token `id`, `Σ_t w_t Δ_t[id]`.
#[derive(Clone)]
pub(crate) struct EmbedDeltas {
    pub(crate) deltas: Vec<Delta>,
    pub(crate) hidden: usize,
}

impl EmbedDeltas {
    /// Adds token `id`'s mixed change to `row` (`hidden` values) with task weights `w`.
    pub(crate) fn add(&self, id: usize, w: &[f32], row: &mut [f32]) {
        let h = self.hidden;
        for (d, &wt) in self.deltas.iter().zip(w) {
            if wt == 0.0 {
                continue;
            }
            match d {
                Delta::None => {}
                Delta::Dense(e) => row.iter_mut().zip(&e[id * h..(id + 1) * h]).for_each(|(r, &x)| *r += wt * x),
                Delta::LowRank { us, v, rank } => {
                    for c in 0..*rank {
                        let s = wt * us[id * rank + c];
                        row.iter_mut().enumerate().for_each(|(j, r)| *r += s * v[j * rank + c]);
                    }
                }
            }
        }
    }
}
