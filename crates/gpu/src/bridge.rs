//! The bridge to burn's wgpu tensors: a contiguous f32 burn tensor on wgpu resolves to the
//! `wgpu::Buffer` region that holds it, so Chorus's kernels read and write burn's data on the device
//! without a host round trip (the fusion step's logits, Twin-Merging's mixed projections).
//!
//! burn (without its `fusion` feature) keeps a float tensor on wgpu as a cubecl `CubeTensor`; its handle
//! resolves to a buffer region through the compute client. The resolved resource pins the allocation in
//! place, so a [`Borrowed`] must live until the command buffer that uses it has been submitted. Natively
//! and on WebGPU alike: resolving is a synchronous call into burn's device service.

use std::any::Any;

use burn::tensor::Tensor;
use burn_cubecl::cubecl::wgpu::{AutoCompiler, WgpuServer};

use crate::error::{Error, Result};

/// A burn tensor's device buffer region, pinned while this lives.
pub struct Borrowed {
    /// The buffer.
    pub buffer: wgpu::Buffer,
    /// Byte offset of the tensor's first element.
    pub offset: u64,
    _guards: [Box<dyn Any + Send>; 2],
}

/// Resolves `t` (contiguous, on burn's wgpu backend) to its buffer region.
pub fn borrow<const D: usize>(t: Tensor<D>) -> Result<Borrowed> {
    let err = |reason: String| Error::Borrow(reason);
    let prim = t.try_into_primitive::<burn_cubecl::Cube>().map_err(|e| err(format!("not a cubecl tensor: {e:?}")))?;
    if !prim.is_contiguous() {
        return Err(err("the tensor is not contiguous".into()));
    }
    let res = prim
        .client
        .get_resource::<WgpuServer<AutoCompiler>>(prim.handle.clone())
        .map_err(|e| err(format!("cannot borrow its buffer: {e}")))?;
    let r = res.resource();
    let (buffer, offset) = (r.buffer.clone(), r.offset);
    Ok(Borrowed { buffer, offset, _guards: [Box::new(res), Box::new(prim)] })
}
