//! Launcher of `shaders/lowrank_mix.wgsl`: Twin-Merging's per-row low-rank merged matmul
//! `y = base + ((x·A) ⊙ w[:, seg]) · B` per output part, two passes in one submission.
//! Reference: [`chorus_core::reference::lowrank_mix`].

use chorus_core::reference::LowRankPart;

use crate::context::{GpuContext, Pass};
use crate::error::{Error, Result};
use crate::shaders::ShaderId;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    inp: u32,
    r: u32,
    tasks: u32,
    out: u32,
    parts: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Part {
    out0: u32,
    out_n: u32,
    col0: u32,
    col_n: u32,
    b_off: u32,
    _pad: [u32; 3],
}

/// The operands of one mixed projection (shapes as in [`chorus_core::reference::lowrank_mix`]).
pub struct LowRankMix<'a> {
    /// `[rows, inp]` inputs.
    pub x: &'a [f32],
    /// `[inp, r]` right factors, every task side by side.
    pub a: &'a [f32],
    /// `[rows, tasks]` per-row task weights.
    pub w: &'a [f32],
    /// `[r]` task of each column of `a`.
    pub seg: &'a [u32],
    /// The parts' left factors, packed.
    pub b: &'a [f32],
    /// Output parts.
    pub parts: &'a [LowRankPart],
    /// `[rows, out]` the shared projection's output.
    pub base: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Input width.
    pub inp: usize,
    /// Tasks.
    pub tasks: usize,
}

const WG: u32 = 64;

fn bad(reason: String) -> Error {
    Error::Shape { kernel: "lowrank_mix", reason }
}

/// The constant operands of one mixed projection uploaded once (right factors, column tasks, packed left
/// factors, parts); [`LowRankDevice::record`] then mixes any batch of rows on the device.
pub struct LowRankDevice {
    a: wgpu::Buffer,
    seg: wgpu::Buffer,
    b: wgpu::Buffer,
    parts: wgpu::Buffer,
    inp: usize,
    r: usize,
    out: usize,
    n_parts: usize,
    tasks: usize,
}

/// Buffers one recorded mix needs until its submission.
pub struct Scratch(#[allow(dead_code)] Vec<wgpu::Buffer>);

impl LowRankDevice {
    /// Checks and uploads the constants: `a` `[inp, r]`, `seg` `[r]` (< `tasks`), packed `b`, `parts` within
    /// `out` columns.
    pub fn new(
        ctx: &GpuContext,
        a: &[f32],
        seg: &[u32],
        b: &[f32],
        parts: &[LowRankPart],
        inp: usize,
        out: usize,
        tasks: usize,
    ) -> Result<Self> {
        let r = seg.len();
        if inp == 0 || a.len() != inp * r {
            return Err(bad(format!("a has {} values, want {inp}×{r}", a.len())));
        }
        if let Some(s) = seg.iter().find(|&&s| s as usize >= tasks) {
            return Err(bad(format!("column task {s} ≥ {tasks} tasks")));
        }
        for p in parts {
            if p.out0 + p.out_n > out || p.col0 + p.col_n > r || p.b_off + p.col_n * p.out_n > b.len() {
                return Err(bad(format!("part {p:?} does not fit out {out}, r {r}, b {}", b.len())));
            }
        }
        let u = |v: usize| v as u32;
        let gp: Vec<Part> = parts
            .iter()
            .map(|p| Part {
                out0: u(p.out0),
                out_n: u(p.out_n),
                col0: u(p.col0),
                col_n: u(p.col_n),
                b_off: u(p.b_off),
                _pad: [0; 3],
            })
            .collect();
        Ok(Self {
            a: ctx.storage("lowrank.a", a),
            seg: ctx.storage("lowrank.seg", seg),
            b: ctx.storage("lowrank.b", b),
            parts: ctx.storage("lowrank.parts", &gp),
            inp,
            r,
            out,
            n_parts: parts.len(),
            tasks,
        })
    }

    /// `y = base + mix(x, w)` on burn's wgpu tensors (`x` `[m, inp]`, `w` `[m, tasks]`, `base` `[m, out]`):
    /// borrows their buffers, records the copies and passes into one command buffer, submits it and returns
    /// `y` as a new burn tensor, all on the device.
    pub fn apply_tensors(
        &self,
        ctx: &GpuContext,
        x: burn::tensor::Tensor<2>,
        w: &burn::tensor::Tensor<2>,
        base: burn::tensor::Tensor<2>,
    ) -> Result<burn::tensor::Tensor<2>> {
        let ([m, _], [_, out]) = (x.dims(), base.dims());
        let y = burn::tensor::Tensor::<2>::zeros([m, out], &x.device());
        let (xb, wb) = (crate::bridge::borrow(x)?, crate::bridge::borrow(w.clone())?);
        let (bb, yb) = (crate::bridge::borrow(base)?, crate::bridge::borrow(y.clone())?);
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lowrank") });
        let scratch = self.record(
            ctx,
            &mut enc,
            m,
            (&xb.buffer, xb.offset),
            (&wb.buffer, wb.offset),
            (&bb.buffer, bb.offset),
            (&yb.buffer, yb.offset),
        )?;
        ctx.submit_encoder(enc);
        drop((scratch, xb, wb, bb, yb));
        Ok(y)
    }

    /// Records into `enc`: copies of `rows` rows of x, w and base from `(buffer, byte offset)` sources, the
    /// two passes, and the copy of y into `y`. Keep the returned scratch until `enc` is submitted.
    pub fn record(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        rows: usize,
        x: (&wgpu::Buffer, u64),
        w: (&wgpu::Buffer, u64),
        base: (&wgpu::Buffer, u64),
        y: (&wgpu::Buffer, u64),
    ) -> Result<Scratch> {
        let max_groups = ctx.device.limits().max_compute_workgroups_per_dimension as usize;
        if rows == 0 || rows > max_groups || self.out.div_ceil(WG as usize) > max_groups {
            return Err(bad(format!("{rows} rows × {} columns do not fit one dispatch", self.out)));
        }
        let u = |v: usize| v as u32;
        let params = ctx.uniform(
            "lowrank.params",
            &Params {
                rows: u(rows),
                inp: u(self.inp),
                r: u(self.r),
                tasks: u(self.tasks),
                out: u(self.out),
                parts: u(self.n_parts),
                _pad: [0; 2],
            },
        );
        let f = 4u64;
        let (nx, nw, ny) = ((rows * self.inp) as u64 * f, (rows * self.tasks) as u64 * f, (rows * self.out) as u64 * f);
        let xb = ctx.scratch("lowrank.x", nx);
        let wb = ctx.scratch("lowrank.w", nw);
        let bb = ctx.scratch("lowrank.base", ny);
        let z = ctx.output("lowrank.z", (rows * self.r.max(1)) as u64 * f);
        let yb = ctx.output("lowrank.y", ny);
        enc.copy_buffer_to_buffer(x.0, x.1, &xb, 0, nx);
        enc.copy_buffer_to_buffer(w.0, w.1, &wb, 0, nw);
        enc.copy_buffer_to_buffer(base.0, base.1, &bb, 0, ny);
        let project = [(0, &params), (1, &xb), (2, &self.a), (3, &wb), (4, &self.seg), (5, &z)];
        let expand = [(0, &params), (6, &z), (7, &self.b), (8, &self.parts), (9, &bb), (10, &yb)];
        let mut passes = Vec::new();
        if self.r > 0 {
            passes.push(Pass {
                id: ShaderId::LowRankProject,
                bindings: &project,
                groups: (u(self.r).div_ceil(WG), u(rows), 1),
            });
        }
        passes.push(Pass {
            id: ShaderId::LowRankExpand,
            bindings: &expand,
            groups: (u(self.out).div_ceil(WG), u(rows), 1),
        });
        ctx.record(enc, &passes);
        enc.copy_buffer_to_buffer(&yb, 0, y.0, y.1, ny);
        Ok(Scratch(vec![params, xb, wb, bb, z, yb]))
    }
}

/// Runs the two passes on host operands and reads `y` back (the parity test's entry point).
pub async fn lowrank_mix(ctx: &GpuContext, op: &LowRankMix<'_>) -> Result<Vec<f32>> {
    let (rows, inp, tasks) = (op.rows, op.inp, op.tasks);
    if rows == 0 || inp == 0 {
        return Err(bad(format!("{rows} rows of width {inp}")));
    }
    let out = op.base.len() / rows;
    let r = op.seg.len();
    if op.x.len() != rows * inp || op.a.len() != inp * r || op.w.len() != rows * tasks || op.base.len() != rows * out {
        return Err(bad(format!(
            "x {} (want {rows}×{inp}), a {} (want {inp}×{r}), w {} (want {rows}×{tasks}), base {}",
            op.x.len(),
            op.a.len(),
            op.w.len(),
            op.base.len()
        )));
    }
    let k = LowRankDevice::new(ctx, op.a, op.seg, op.b, op.parts, inp, out, tasks)?;
    let (x, w, base) =
        (ctx.storage("lowrank.x_in", op.x), ctx.storage("lowrank.w_in", op.w), ctx.storage("lowrank.base_in", op.base));
    let y = ctx.scratch("lowrank.y_out", (rows * out * 4) as u64);
    let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lowrank") });
    let scratch = k.record(ctx, &mut enc, rows, (&x, 0), (&w, 0), (&base, 0), (&y, 0))?;
    ctx.submit_encoder(enc);
    drop(scratch);
    ctx.read(&y, rows * out).await
}
