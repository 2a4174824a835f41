//! The wgpu path of Twin-Merging's mixed projections: `shaders/lowrank_mix.wgsl` run on burn's own buffers
//! (through `chorus_gpu::bridge`, [`LowRankDevice::apply_tensors`]), so the forward never leaves the GPU.
//! Constants (factors, column tasks, parts) are uploaded once per projection and kept here, keyed by the
//! projection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::tensor::Tensor;
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

impl LowRankKernel for WgpuLowRank {
    fn apply(
        &self,
        x: Tensor<2>,
        w: &Tensor<2>,
        base: Tensor<2>,
        op: &LowRankConsts,
    ) -> chorus_models::Result<Tensor<2>> {
        let [_, tasks] = w.dims();
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
        k.apply_tensors(&self.ctx, x, w, base).map_err(dev_err)
    }
}
