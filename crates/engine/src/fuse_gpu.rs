//! The wgpu path of a fusion step: the members' logits stay in burn's device buffers, are copied on the
//! device into the fusion kernel's inputs (`FusionKernel::copy_tensor`, through `chorus_gpu::bridge`),
//! and only the per-row choice (candidate, token, losses, constants) comes back to the host. The same
//! on WebGPU in the browser: the read-back is awaited.

use chorus_gpu::bridge::Borrowed;
use chorus_gpu::fusion::{FusionKernel, Pending, RowResult};

use crate::error::{Error, Result};

/// Submits the step and reads back the per-row results; the borrowed logits are released afterwards.
pub(crate) async fn finish(
    kernel: &FusionKernel,
    enc: chorus_gpu::fusion::Encoder,
    pending: Pending,
    guards: Vec<Borrowed>,
) -> Result<Vec<RowResult>> {
    let out =
        kernel.finish(enc, pending).await.map_err(|e| Error::Backend { backend: "wgpu".into(), reason: e.to_string() });
    drop(guards);
    out
}
