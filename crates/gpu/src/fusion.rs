//! Launcher of `shaders/dlf_fuse.wgsl`: one Dynamic Logit Fusion step (constants, every candidate's
//! loss, argmin with the paper's tie rule, fused logits, greedy token) for a batch of rows in one
//! submission. Only the small per-row results are read back; the fused logits stay in a device buffer.
//! Reference: `chorus_core::fusion` (the f64 [`chorus_core::fusion::ReferenceEvaluator`]).

use crate::context::{GpuContext, Pass};
use crate::error::{Error, Result};
use crate::shaders::ShaderId;

/// The command encoder a step is recorded into (so callers name it without depending on wgpu).
pub type Encoder = wgpu::CommandEncoder;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    experts: u32,
    cands: u32,
    stride_large: u32,
    stride_base: u32,
    stride_expert: u32,
    mode: u32,
}

/// What one step produced for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    /// Index of the chosen candidate.
    pub chosen: usize,
    /// Greedy token of the fused logits (lowest index on ties).
    pub token: u32,
    /// (ℒ, KL(P̃‖P), KL(P‖P̃)) of every candidate, in scan order.
    pub losses: Vec<[f32; 3]>,
    /// Per expert: (LSE(L), E_P[d_t], KL(Q_t‖Q), KL(Q‖Q_t)).
    pub constants: Vec<[f32; 4]>,
}

/// Device buffers for steps of one shape (`rows × vocab`, `experts`), reused across decode steps.
/// Inputs are written row-major with row strides `vocab` (large, base) and `[expert][row][vocab]`.
pub struct FusionKernel {
    ctx: GpuContext,
    rows: usize,
    vocab: usize,
    experts: usize,
    /// Large-model logits `[rows, vocab]`.
    pub large: wgpu::Buffer,
    /// Small-base logits `[rows, vocab]`.
    pub base: wgpu::Buffer,
    /// Expert logits `[experts, rows, vocab]`.
    pub expert_logits: wgpu::Buffer,
    work_l: wgpu::Buffer,
    work_d: wgpu::Buffer,
    work_s: wgpu::Buffer,
    consts: wgpu::Buffer,
    choice: wgpu::Buffer,
    /// Fused logits `[rows, vocab]` after [`Self::run`].
    pub fused: wgpu::Buffer,
}

fn shape_err(reason: String) -> Error {
    Error::Shape { kernel: "dlf_fuse", reason }
}

impl FusionKernel {
    /// Allocates the buffers for `rows × vocab` logits and `experts` experts.
    pub fn new(ctx: &GpuContext, rows: usize, vocab: usize, experts: usize) -> Result<Self> {
        if rows == 0 || vocab == 0 || experts == 0 {
            return Err(shape_err(format!("rows {rows}, vocab {vocab}, experts {experts}: all must be ≥ 1")));
        }
        let limits = ctx.device.limits();
        let biggest = (experts * rows * vocab * 4) as u64;
        if biggest > limits.max_storage_buffer_binding_size {
            return Err(shape_err(format!(
                "{experts} experts × {rows} rows × {vocab} tokens need a {biggest}-byte buffer; the device allows {}",
                limits.max_storage_buffer_binding_size
            )));
        }
        if rows > limits.max_compute_workgroups_per_dimension as usize {
            return Err(shape_err(format!("{rows} rows exceed one dispatch")));
        }
        let f = |label: &str, n: usize| ctx.output(label, (n * 4) as u64);
        let input = |label: &str, n: usize| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (n * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        Ok(Self {
            ctx: ctx.clone(),
            rows,
            vocab,
            experts,
            large: input("dlf.large", rows * vocab),
            base: input("dlf.base", rows * vocab),
            expert_logits: input("dlf.experts", experts * rows * vocab),
            work_l: f("dlf.work_l", rows * vocab),
            work_d: f("dlf.work_d", experts * rows * vocab),
            work_s: f("dlf.work_s", rows * vocab),
            consts: f("dlf.consts", rows * experts * 4),
            choice: f("dlf.choice", rows * 4),
            fused: f("dlf.fused", rows * vocab),
        })
    }

    /// Uploads host logits: `large` and `base` are `[rows, stride]` with `stride ≥ vocab` (only the first
    /// `vocab` columns are used: the shared vocabulary), `experts[t]` likewise.
    pub fn write(&self, large: &[f32], base: &[f32], experts: &[&[f32]]) -> Result<()> {
        if experts.len() != self.experts {
            return Err(shape_err(format!("{} expert rows for {} experts", experts.len(), self.experts)));
        }
        self.write_rows(&self.large, 0, large, "large")?;
        self.write_rows(&self.base, 0, base, "base")?;
        for (t, e) in experts.iter().enumerate() {
            self.write_rows(&self.expert_logits, t * self.rows * self.vocab, e, "expert")?;
        }
        Ok(())
    }

    fn write_rows(&self, dst: &wgpu::Buffer, at: usize, src: &[f32], what: &str) -> Result<()> {
        if src.len() < self.rows * self.vocab || !src.len().is_multiple_of(self.rows) {
            return Err(shape_err(format!(
                "{what}: {} values do not hold {} rows of at least {} tokens",
                src.len(),
                self.rows,
                self.vocab
            )));
        }
        let stride = src.len() / self.rows;
        if stride == self.vocab {
            self.ctx.queue.write_buffer(dst, (at * 4) as u64, bytemuck::cast_slice(src));
        } else {
            for r in 0..self.rows {
                let row = &src[r * stride..r * stride + self.vocab];
                self.ctx.queue.write_buffer(dst, ((at + r * self.vocab) * 4) as u64, bytemuck::cast_slice(row));
            }
        }
        Ok(())
    }

    /// Copies device-resident logits (a burn tensor's buffer) into an input without a host round trip:
    /// `rows` rows of `stride` floats starting at byte `offset` of `src`; `expert` picks the input
    /// (`None` large, `Some(None)` base, `Some(Some(t))` expert t). Records into `enc`.
    pub fn copy_in(
        &self,
        enc: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        offset: u64,
        stride: usize,
        input: Input,
    ) -> Result<()> {
        if stride < self.vocab {
            return Err(shape_err(format!(
                "source rows of {stride} floats are shorter than the vocabulary {}",
                self.vocab
            )));
        }
        let (dst, at) = match input {
            Input::Large => (&self.large, 0),
            Input::Base => (&self.base, 0),
            Input::Expert(t) if t < self.experts => (&self.expert_logits, t * self.rows * self.vocab),
            Input::Expert(t) => return Err(shape_err(format!("expert {t} of {}", self.experts))),
        };
        for r in 0..self.rows {
            enc.copy_buffer_to_buffer(
                src,
                offset + (r * stride * 4) as u64,
                dst,
                ((at + r * self.vocab) * 4) as u64,
                (self.vocab * 4) as u64,
            );
        }
        Ok(())
    }

    /// [`Self::copy_in`] from a burn tensor on wgpu: `logits` (`[blocks·rows, cols]`, block `k` feeding
    /// `inputs[k]`) copied on the device; the borrow goes into `guards`, to be dropped after submission.
    pub fn copy_tensor(
        &self,
        enc: &mut wgpu::CommandEncoder,
        logits: burn::tensor::Tensor<2>,
        inputs: &[Input],
        guards: &mut Vec<crate::bridge::Borrowed>,
    ) -> Result<()> {
        let [n, cols] = logits.dims();
        if n != inputs.len() * self.rows {
            return Err(shape_err(format!("{n} logit rows for {} inputs of {} rows", inputs.len(), self.rows)));
        }
        let b = crate::bridge::borrow(logits)?;
        for (k, &input) in inputs.iter().enumerate() {
            self.copy_in(enc, &b.buffer, b.offset + (k * self.rows * cols * 4) as u64, cols, input)?;
        }
        guards.push(b);
        Ok(())
    }

    /// Runs one step over `cands` (each a vector of one α per expert, in scan order) and reads back the
    /// per-row results. `expert_only` writes the first expert's logits as the fused logits instead.
    pub async fn run(&self, cands: &[Vec<f32>], expert_only: bool) -> Result<Vec<RowResult>> {
        let mut enc = self.encoder();
        let pending = self.record(&mut enc, cands, expert_only)?;
        self.finish(enc, pending).await
    }

    /// A command encoder on this kernel's device (for [`Self::copy_in`] + [`Self::record`]).
    pub fn encoder(&self) -> wgpu::CommandEncoder {
        self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("dlf") })
    }

    /// Records the four passes into `enc` (after any [`Self::copy_in`]); [`Self::finish`] submits.
    pub fn record(&self, enc: &mut wgpu::CommandEncoder, cands: &[Vec<f32>], expert_only: bool) -> Result<Pending> {
        let (b, v, t, c) = (self.rows, self.vocab, self.experts, cands.len());
        if c == 0 || cands.iter().any(|a| a.len() != t) {
            return Err(shape_err(format!("candidates must be non-empty vectors of {t} weights")));
        }
        let flat: Vec<f32> = cands.iter().flatten().copied().collect();
        let params = Params {
            rows: b as u32,
            vocab: v as u32,
            experts: t as u32,
            cands: c as u32,
            stride_large: v as u32,
            stride_base: v as u32,
            stride_expert: v as u32,
            mode: expert_only as u32,
        };
        let ctx = &self.ctx;
        let p = ctx.uniform("dlf.params", &params);
        let cand = ctx.storage("dlf.cands", &flat);
        let losses = ctx.output("dlf.losses", (b * c * 16) as u64);
        ctx.record(
            enc,
            &[
                Pass {
                    id: ShaderId::DlfPrepare,
                    bindings: &[
                        (0, &p),
                        (1, &self.large),
                        (2, &self.base),
                        (3, &self.expert_logits),
                        (5, &self.work_l),
                        (6, &self.work_d),
                        (7, &self.work_s),
                    ],
                    groups: (v.div_ceil(256) as u32, b as u32, 1),
                },
                Pass {
                    id: ShaderId::DlfConstants,
                    bindings: &[(0, &p), (5, &self.work_l), (6, &self.work_d), (7, &self.work_s), (8, &self.consts)],
                    groups: (t as u32, b as u32, 1),
                },
                Pass {
                    id: ShaderId::DlfLosses,
                    bindings: &[
                        (0, &p),
                        (4, &cand),
                        (5, &self.work_l),
                        (6, &self.work_d),
                        (8, &self.consts),
                        (9, &losses),
                    ],
                    groups: (c as u32, b as u32, 1),
                },
                Pass {
                    id: ShaderId::DlfSelect,
                    bindings: &[
                        (0, &p),
                        (3, &self.expert_logits),
                        (4, &cand),
                        (5, &self.work_l),
                        (6, &self.work_d),
                        (9, &losses),
                        (10, &self.choice),
                        (11, &self.fused),
                    ],
                    groups: (b as u32, 1, 1),
                },
            ],
        );
        Ok(Pending { losses, cands: c })
    }

    /// Submits `enc` and reads back the per-row results (a few floats per candidate).
    pub async fn finish(&self, enc: wgpu::CommandEncoder, pending: Pending) -> Result<Vec<RowResult>> {
        self.ctx.submit_encoder(enc);
        let (b, t, c) = (self.rows, self.experts, pending.cands);
        let choice: Vec<u32> = self.ctx.read(&self.choice, b * 4).await?;
        let losses: Vec<f32> = self.ctx.read(&pending.losses, b * c * 4).await?;
        let consts: Vec<f32> = self.ctx.read(&self.consts, b * t * 4).await?;
        (0..b)
            .map(|r| {
                if choice[r * 4 + 2] != 0 {
                    return Err(shape_err(format!("row {r}: no token is allowed by every model")));
                }
                Ok(RowResult {
                    chosen: choice[r * 4] as usize,
                    token: choice[r * 4 + 1],
                    losses: (0..c)
                        .map(|k| {
                            let i = (r * c + k) * 4;
                            [losses[i], losses[i + 1], losses[i + 2]]
                        })
                        .collect(),
                    constants: (0..t)
                        .map(|e| {
                            let i = (r * t + e) * 4;
                            [consts[i], consts[i + 1], consts[i + 2], consts[i + 3]]
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// Reads the fused logits back (`[rows, vocab]`): for tests and the host sampling path.
    pub async fn read_fused(&self) -> Result<Vec<f32>> {
        self.ctx.read(&self.fused, self.rows * self.vocab).await
    }

    /// Rows, vocabulary and experts this kernel was built for.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.rows, self.vocab, self.experts)
    }
}

/// Which input [`FusionKernel::copy_in`] fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The large base.
    Large,
    /// The small base.
    Base,
    /// Expert t.
    Expert(usize),
}

/// A recorded step waiting for [`FusionKernel::finish`].
pub struct Pending {
    losses: wgpu::Buffer,
    cands: usize,
}
