//! The wgpu path of Twin-Merging's mixed projections: `shaders/lowrank_mix.wgsl` run on burn's own buffers.
//! The rows, their weights and the shared projection's output are copied on the device from burn's
//! tensors into the kernel's inputs, and its result into a fresh burn tensor, so the forward never leaves
//! the GPU. Constants (factors, column tasks, parts) are uploaded once per projection. Natively and on
//! WebGPU alike: borrowing burn's buffers is a synchronous call into burn's device service.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::tensor::Tensor;
use burn_cubecl::cubecl::wgpu::{AutoCompiler, WgpuServer};
use chorus_gpu::GpuContext;
use chorus_gpu::lowrank::LowRankDevice;
use chorus_models::{LowRankConsts, LowRankKernel};

/// [`LowRankKernel`] on the wgpu device burn uses.
pub struct WgpuLowRank {
    ctx: GpuContext,
    cache: Mutex<HashMap<u64, Arc<LowRankDevice>>>,
}

impl WgpuLowRank {
    /// On the context that shares burn's device and queue ([`crate::backend::gpu_context`]).
    pub fn new(ctx: GpuContext) -> Self {
        Self { ctx, cache: Mutex::default() }
    }
}

fn dev_err(e: impl std::fmt::Display) -> chorus_models::Error {
    chorus_models::Error::Device(format!("lowrank_mix on wgpu: {e}"))
}

/// Resolves a burn tensor to its wgpu buffer; the guards keep the allocation in place until submission.
fn borrow(t: Tensor<2>, guards: &mut Vec<Box<dyn Any + Send>>) -> chorus_models::Result<(wgpu::Buffer, u64)> {
    let prim =
        t.try_into_primitive::<burn_cubecl::Cube>().map_err(|e| dev_err(format!("not a cubecl tensor: {e:?}")))?;
    if !prim.is_contiguous() {
        return Err(dev_err("tensor is not contiguous"));
    }
    let res = prim
        .client
        .get_resource::<WgpuServer<AutoCompiler>>(prim.handle.clone())
        .map_err(|e| dev_err(format!("cannot borrow a buffer: {e}")))?;
    let r = res.resource();
    let out = (r.buffer.clone(), r.offset);
    guards.push(Box::new(res));
    guards.push(Box::new(prim));
    Ok(out)
}

impl LowRankKernel for WgpuLowRank {
    fn apply(
        &self,
        x: Tensor<2>,
        w: &Tensor<2>,
        base: Tensor<2>,
        op: &LowRankConsts,
    ) -> chorus_models::Result<Tensor<2>> {
        let ([m, _], [_, tasks], [_, out]) = (x.dims(), w.dims(), base.dims());
        let k = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&op.id) {
                Some(k) => k.clone(),
                None => {
                    let k = Arc::new(
                        LowRankDevice::new(&self.ctx, &op.a, &op.seg, &op.b, &op.parts, op.inp, op.out, tasks)
                            .map_err(dev_err)?,
                    );
                    cache.insert(op.id, k.clone());
                    k
                }
            }
        };
        let y = Tensor::<2>::zeros([m, out], &x.device());
        let mut guards: Vec<Box<dyn Any + Send>> = Vec::new();
        let xb = borrow(x, &mut guards)?;
        let wb = borrow(w.clone(), &mut guards)?;
        let bb = borrow(base, &mut guards)?;
        let yb = borrow(y.clone(), &mut guards)?;
        let mut enc =
            self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lowrank") });
        let scratch = k
            .record(&self.ctx, &mut enc, m, (&xb.0, xb.1), (&wb.0, wb.1), (&bb.0, bb.1), (&yb.0, yb.1))
            .map_err(dev_err)?;
        self.ctx.submit_encoder(enc);
        drop(scratch);
        drop(guards);
        Ok(y)
    }
}
