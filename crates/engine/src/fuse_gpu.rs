//! The wgpu path of a fusion step: the members' logits stay in burn's device buffers, are copied on the
//! device into the fusion kernel's inputs, and only the per-row choice (candidate, token, losses,
//! constants) comes back to the host. The same on WebGPU in the browser: borrowing burn's buffer is a
//! synchronous call into burn's device service, the read-back is awaited.
//!
//! burn (without its `fusion` feature) keeps a float tensor on wgpu as a cubecl `CubeTensor`; its
//! handle resolves to a `wgpu::Buffer` region through the compute client. The resolved resource pins
//! the allocation in place, so guards are kept until the step's command buffer has been submitted.

use std::any::Any;

use burn::tensor::Tensor;
use burn_cubecl::cubecl::wgpu::{AutoCompiler, WgpuServer};
use chorus_gpu::fusion::{FusionKernel, Input, RowResult};

use crate::error::{Error, Result};

/// Keeps burn allocations alive and in place until the kernel's submission.
pub(crate) type Guards = Vec<Box<dyn Any + Send>>;

/// Records device copies of `logits` (`[blocks·rows, cols]`, block `k` feeding `inputs[k]`) into `enc`.
pub(crate) fn copy_logits(
    kernel: &FusionKernel,
    enc: &mut wgpu::CommandEncoder,
    logits: Tensor<2>,
    inputs: &[Input],
    guards: &mut Guards,
) -> Result<()> {
    let [n, cols] = logits.dims();
    let (rows, _, _) = kernel.shape();
    if n != inputs.len() * rows {
        return Err(Error::Request(format!("fusion: {n} logit rows for {} inputs of {rows} rows", inputs.len())));
    }
    let dev_err = |e: String| Error::Backend { backend: "wgpu".into(), reason: e };
    let prim = logits
        .try_into_primitive::<burn_cubecl::Cube>()
        .map_err(|e| dev_err(format!("logits are not a cubecl tensor: {e:?}")))?;
    if !prim.is_contiguous() {
        return Err(dev_err("logits tensor is not contiguous".into()));
    }
    let res = prim
        .client
        .get_resource::<WgpuServer<AutoCompiler>>(prim.handle.clone())
        .map_err(|e| dev_err(format!("cannot borrow the logits buffer: {e}")))?;
    let r = res.resource();
    for (k, &input) in inputs.iter().enumerate() {
        let offset = r.offset + (k * rows * cols * 4) as u64;
        kernel.copy_in(enc, &r.buffer, offset, cols, input).map_err(|e| dev_err(e.to_string()))?;
    }
    guards.push(Box::new(res));
    guards.push(Box::new(prim));
    Ok(())
}

/// Submits the step and reads back the per-row results; the guards are released afterwards.
pub(crate) async fn finish(
    kernel: &FusionKernel,
    enc: wgpu::CommandEncoder,
    pending: chorus_gpu::fusion::Pending,
    guards: Guards,
) -> Result<Vec<RowResult>> {
    let out =
        kernel.finish(enc, pending).await.map_err(|e| Error::Backend { backend: "wgpu".into(), reason: e.to_string() });
    drop(guards);
    out
}
