//! Launcher of `shaders/row_stats.wgsl`: per-row max, argmax and log-sum-exp of a logits matrix.
//! Reference: [`chorus_core::reference::row_stats`].

use chorus_core::reference::RowStats;

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::shaders::ShaderId;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowOut {
    max: f32,
    argmax: u32,
    logsumexp: f32,
    _pad: u32,
}

/// Row statistics of a row-major `rows × cols` matrix, computed on the GPU.
pub async fn row_stats(ctx: &GpuContext, x: &[f32], rows: usize, cols: usize) -> Result<Vec<RowStats>> {
    let shape_err = |reason: String| Error::Shape { kernel: "row_stats", reason };
    if x.len() != rows * cols {
        return Err(shape_err(format!("{rows}x{cols} does not match {} values", x.len())));
    }
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    let max_groups = ctx.device.limits().max_compute_workgroups_per_dimension as usize;
    if rows > max_groups || cols > u32::MAX as usize {
        return Err(shape_err(format!("{rows} rows exceed the {max_groups} workgroups of one dispatch")));
    }
    let params = ctx.uniform("row_stats.params", &Params { rows: rows as u32, cols: cols as u32, _pad: [0; 2] });
    let input = ctx.storage("row_stats.x", x);
    let out = ctx.output("row_stats.out", (rows * std::mem::size_of::<RowOut>()) as u64);
    ctx.dispatch(ShaderId::RowStats, &[&params, &input, &out], (rows as u32, 1, 1));
    let raw: Vec<RowOut> = ctx.read(&out, rows).await?;
    Ok(raw.into_iter().map(|r| RowStats { max: r.max, argmax: r.argmax, logsumexp: r.logsumexp }).collect())
}
