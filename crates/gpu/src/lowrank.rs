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

/// Runs the two passes on the GPU and reads `y` back.
pub async fn lowrank_mix(ctx: &GpuContext, op: &LowRankMix<'_>) -> Result<Vec<f32>> {
    let bad = |reason: String| Error::Shape { kernel: "lowrank_mix", reason };
    let (rows, inp, tasks, r) = (op.rows, op.inp, op.tasks, op.seg.len());
    if rows == 0 || inp == 0 {
        return Err(bad(format!("{rows} rows of width {inp}")));
    }
    let out = op.base.len() / rows;
    if op.x.len() != rows * inp || op.a.len() != inp * r || op.w.len() != rows * tasks || op.base.len() != rows * out {
        return Err(bad(format!(
            "x {} (want {rows}×{inp}), a {} (want {inp}×{r}), w {} (want {rows}×{tasks}), base {}",
            op.x.len(),
            op.a.len(),
            op.w.len(),
            op.base.len()
        )));
    }
    if let Some(s) = op.seg.iter().find(|&&s| s as usize >= tasks) {
        return Err(bad(format!("column task {s} ≥ {tasks} tasks")));
    }
    for p in op.parts {
        if p.out0 + p.out_n > out || p.col0 + p.col_n > r || p.b_off + p.col_n * p.out_n > op.b.len() {
            return Err(bad(format!("part {p:?} does not fit out {out}, r {r}, b {}", op.b.len())));
        }
    }
    let max_groups = ctx.device.limits().max_compute_workgroups_per_dimension as usize;
    if rows > max_groups || out.div_ceil(WG as usize) > max_groups {
        return Err(bad(format!("{rows} rows × {out} columns exceed one dispatch")));
    }
    let u = |v: usize| v as u32;
    let params = ctx.uniform(
        "lowrank.params",
        &Params {
            rows: u(rows),
            inp: u(inp),
            r: u(r),
            tasks: u(tasks),
            out: u(out),
            parts: u(op.parts.len()),
            _pad: [0; 2],
        },
    );
    let parts: Vec<Part> = op
        .parts
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
    let (x, a, w, seg) = (
        ctx.storage("lowrank.x", op.x),
        ctx.storage("lowrank.a", op.a),
        ctx.storage("lowrank.w", op.w),
        ctx.storage("lowrank.seg", op.seg),
    );
    let z = ctx.output("lowrank.z", (rows * r.max(1) * 4) as u64);
    let (b, pb, base) =
        (ctx.storage("lowrank.b", op.b), ctx.storage("lowrank.parts", &parts), ctx.storage("lowrank.base", op.base));
    let y = ctx.output("lowrank.y", (rows * out * 4) as u64);
    let project = [(0, &params), (1, &x), (2, &a), (3, &w), (4, &seg), (5, &z)];
    let expand = [(0, &params), (6, &z), (7, &b), (8, &pb), (9, &base), (10, &y)];
    let mut passes = Vec::new();
    if r > 0 {
        passes.push(Pass { id: ShaderId::LowRankProject, bindings: &project, groups: (u(r).div_ceil(WG), u(rows), 1) });
    }
    passes.push(Pass { id: ShaderId::LowRankExpand, bindings: &expand, groups: (u(out).div_ceil(WG), u(rows), 1) });
    ctx.submit(&passes);
    ctx.read(&y, rows * out).await
}
