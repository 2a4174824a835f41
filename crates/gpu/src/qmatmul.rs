//! Weight matrices kept on the device in their GGUF block format and the launcher of
//! `shaders/qmatmul.wgsl`, which decodes the blocks inside the matrix product.
//! Reference: [`chorus_core::reference::qmatmul`] (the blocks dequantized, an f32 dot).
//!
//! A matrix is uploaded as the file stores it (plus one padding word, since the kernel reads unaligned
//! words); one larger than the device's largest storage binding is split by rows into several buffers,
//! each its own dispatch. Types the kernel does not decode (Q2_K, Q3_K) are expanded to F32 on upload,
//! and say so in [`GpuMatrix::expanded`].

use chorus_core::GgmlType;

use crate::context::{GpuContext, Pass};
use crate::error::{Error, Result};
use crate::shaders::{QFormat, ShaderId};

/// Tokens one workgroup multiplies (each decoded block is reused for all of them).
pub const TOKENS_PER_GROUP: usize = 4;

/// The kernel's per-dispatch parameters (`Params` in the shader).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    x_stride: u32,
    y_stride: u32,
    y_offset: u32,
    flags: u32,
    aux0: u32,
    aux1: u32,
}

/// Bytes of `qmatmul_ux`'s uniform activation array (WebGPU's guaranteed uniform binding size).
pub const UX_BYTES: u64 = 65536;
/// The binding number of `qmatmul_ux`'s uniform activations.
pub const UX_BINDING: u32 = 6;

/// Add the product into `y` instead of overwriting it (a residual connection).
pub const ADD: u32 = 1;
const BIAS: u32 = 2;

/// The token count of a pass (`Count` in the shader), one uniform shared by every product of the pass.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Count {
    /// Tokens.
    pub n: u32,
    _pad: [u32; 3],
}

impl Count {
    /// `n` tokens.
    pub fn new(n: u32) -> Self {
        Self { n, _pad: [0; 3] }
    }
}

struct Part {
    buf: wgpu::Buffer,
    row0: usize,
    rows: usize,
    /// Word offsets of the repacked layout's later regions.
    aux: [u32; 2],
}

/// Rewrites `rows` rows of `fmt` blocks into the kernel's word-aligned layout of the same size (see
/// `shaders/qmatmul.wgsl`), returning it with the word offsets of its second and third regions; formats
/// whose blocks are whole words are used as stored.
pub fn repack(fmt: QFormat, data: &[u8]) -> Option<(Vec<u8>, [u32; 2])> {
    // (block bytes, [(offset, length) of each field in the block], in region order)
    let fields: (usize, &[(usize, usize)]) = match fmt {
        QFormat::Q4_0 => (18, &[(2, 16), (0, 2)]),
        QFormat::Q5_0 => (22, &[(6, 16), (2, 4), (0, 2)]),
        QFormat::Q8_0 => (34, &[(2, 32), (0, 2)]),
        QFormat::Q6K => (210, &[(0, 208), (208, 2)]),
        _ => return None,
    };
    let (bb, parts) = fields;
    let blocks = data.len() / bb;
    let mut out = Vec::with_capacity(data.len());
    let mut starts = Vec::new();
    for &(off, len) in parts {
        starts.push(out.len());
        for b in data.chunks_exact(bb) {
            out.extend_from_slice(&b[off..off + len]);
        }
    }
    debug_assert_eq!(out.len(), blocks * bb);
    Some((out, [starts[1] as u32 / 4, starts.get(2).map_or(0, |&s| s as u32 / 4)]))
}

/// A `[rows, cols]` weight matrix on the device.
pub struct GpuMatrix {
    name: String,
    fmt: QFormat,
    rows: usize,
    cols: usize,
    parts: Vec<Part>,
    /// Output rows per workgroup on this adapter.
    rows_per_group: usize,
    /// A CPU adapter: activations that fit a uniform buffer are read from one (`qmatmul_ux`).
    software: bool,
    /// Bytes held on the device.
    pub device_bytes: u64,
    /// True when the stored type had no kernel and was expanded to F32.
    pub expanded: bool,
}

/// One fixed use of a matrix inside a decoder pass: its parameters are uploaded once, so recording it
/// later creates no buffers.
pub struct MatCall {
    params: Vec<wgpu::Buffer>,
    x_stride: usize,
    bias: Option<wgpu::Buffer>,
}

impl GpuMatrix {
    /// Uploads `data`, the `[rows, cols]` matrix `name` stored as `ty`. Shapes that the blocks do not tile
    /// and byte counts that do not match are errors naming the tensor.
    pub fn upload(ctx: &GpuContext, name: &str, ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
        let err = |reason: String| Error::Shape { kernel: "qmatmul", reason: format!("tensor '{name}': {reason}") };
        if !cols.is_multiple_of(32) || rows == 0 {
            return Err(err(format!("[{rows}, {cols}] is not whole 32-value chunks per row")));
        }
        let row_bytes = chorus_core::ggml::row_bytes(ty, cols)
            .ok_or_else(|| err(format!("rows of {cols} values are not whole {} blocks", ty.name())))?;
        if data.len() != rows * row_bytes {
            return Err(err(format!("{} bytes, {rows} rows of {} need {}", data.len(), ty.name(), rows * row_bytes)));
        }
        let (fmt, expanded_bytes) = match QFormat::of(ty) {
            Some(f) => (f, None),
            None => {
                let v = chorus_core::ggml::dequantize(ty, data, rows * cols, name).map_err(|e| err(e.to_string()))?;
                (QFormat::F32, Some(bytemuck::cast_slice::<f32, u8>(&v).to_vec()))
            }
        };
        let data = expanded_bytes.as_deref().unwrap_or(data);
        let row_bytes = data.len() / rows;
        let limits = ctx.device.limits();
        let max = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) as usize;
        let per_part = ((max - 8) / row_bytes).min(rows);
        if per_part == 0 {
            return Err(err(format!("one row of {row_bytes} bytes exceeds the device's {max}-byte buffers")));
        }
        let mut parts = Vec::new();
        let mut device_bytes = 0u64;
        let mut row0 = 0;
        while row0 < rows {
            let n = per_part.min(rows - row0);
            let stored = &data[row0 * row_bytes..(row0 + n) * row_bytes];
            let repacked = repack(fmt, stored);
            let bytes = repacked.as_ref().map_or(stored, |(b, _)| b.as_slice());
            let aux = repacked.as_ref().map_or([0; 2], |(_, a)| *a);
            let size = (bytes.len() as u64 + 4).next_multiple_of(4);
            let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            // write_buffer takes whole words: the aligned prefix, then the tail zero-padded to the end.
            let head = bytes.len() / 4 * 4;
            ctx.queue.write_buffer(&buf, 0, &bytes[..head]);
            let mut tail = bytes[head..].to_vec();
            tail.resize((size as usize) - head, 0);
            ctx.queue.write_buffer(&buf, head as u64, &tail);
            device_bytes += size;
            parts.push(Part { buf, row0, rows: n, aux });
            row0 += n;
        }
        Ok(Self {
            name: name.to_string(),
            fmt,
            rows,
            cols,
            parts,
            rows_per_group: crate::shaders::qmatmul_rows_per_group(ctx.software),
            software: ctx.software,
            device_bytes,
            expanded: expanded_bytes.is_some(),
        })
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The kernel's format.
    pub fn format(&self) -> QFormat {
        self.fmt
    }

    /// A fixed use: tokens `x_stride` floats apart in `x`, results at column `y_offset` of rows `y_stride`
    /// apart in `y`, added into `y` when `flags` has [`ADD`], plus `bias` (one value per row) if given.
    pub fn call(
        &self,
        ctx: &GpuContext,
        x_stride: usize,
        y_stride: usize,
        y_offset: usize,
        flags: u32,
        bias: Option<&[f32]>,
    ) -> Result<MatCall> {
        if let Some(b) = bias
            && b.len() != self.rows
        {
            return Err(Error::Shape {
                kernel: "qmatmul",
                reason: format!("tensor '{}': bias of {} values for {} rows", self.name, b.len(), self.rows),
            });
        }
        let params = self
            .parts
            .iter()
            .map(|p| {
                let pr = Params {
                    rows: p.rows as u32,
                    cols: self.cols as u32,
                    x_stride: x_stride as u32,
                    y_stride: y_stride as u32,
                    y_offset: (y_offset + p.row0) as u32,
                    flags: flags | if bias.is_some() { BIAS } else { 0 },
                    aux0: p.aux[0],
                    aux1: p.aux[1],
                };
                ctx.uniform("qmatmul.params", &pr)
            })
            .collect();
        // The bias is indexed by the row within a part; a biased matrix is always one part (q/k/v).
        if bias.is_some() && self.parts.len() > 1 {
            return Err(Error::Shape {
                kernel: "qmatmul",
                reason: format!("tensor '{}': a biased matrix larger than one device buffer", self.name),
            });
        }
        Ok(MatCall { params, x_stride, bias: bias.map(|b| ctx.storage("qmatmul.bias", b)) })
    }

    /// The passes of `call` over `n` tokens, reading `x` and writing `y`; `count` holds `n`, `zero` is bound
    /// where there is no bias.
    pub fn passes<'a>(
        &'a self,
        call: &'a MatCall,
        count: &'a wgpu::Buffer,
        x: &'a wgpu::Buffer,
        y: &'a wgpu::Buffer,
        zero: &'a wgpu::Buffer,
        n: usize,
        out: &mut Vec<PassBuf<'a>>,
    ) {
        // On a CPU adapter, activations in a uniform-capable buffer of at least the shader's 64 KB array
        // whose `n` tokens fit in it go through `qmatmul_ux`.
        let ux = self.software
            && x.usage().contains(wgpu::BufferUsages::UNIFORM)
            && x.size() >= UX_BYTES
            && n * call.x_stride * 4 <= UX_BYTES as usize;
        for (p, params) in self.parts.iter().zip(&call.params) {
            let (id, xb) =
                if ux { (ShaderId::QMatmulUx(self.fmt), UX_BINDING) } else { (ShaderId::QMatmul(self.fmt), 3) };
            out.push(PassBuf {
                id,
                bindings: [
                    (0, params),
                    (1, count),
                    (2, &p.buf),
                    (xb, x),
                    (4, y),
                    (5, call.bias.as_ref().unwrap_or(zero)),
                ]
                .to_vec(),
                groups: (p.rows.div_ceil(self.rows_per_group) as u32, 1, n.div_ceil(TOKENS_PER_GROUP) as u32),
            });
        }
    }
}

/// A dispatch whose binding list it owns (for building a step's passes before recording them).
pub struct PassBuf<'a> {
    /// Entry point.
    pub id: ShaderId,
    /// (binding, buffer) pairs.
    pub bindings: Vec<(u32, &'a wgpu::Buffer)>,
    /// Workgroups.
    pub groups: (u32, u32, u32),
}

impl PassBuf<'_> {
    /// As a [`Pass`] for [`GpuContext::record`].
    pub fn pass(&self) -> Pass<'_> {
        Pass { id: self.id, bindings: &self.bindings, groups: self.groups }
    }
}

/// `y = W · x` for `n` tokens of `x` (`[n, cols]`), with `W` the `[rows, cols]` matrix stored as `ty` in
/// `w`, on the device: the launcher the parity tests hold to the reference.
pub async fn qmatmul(
    ctx: &GpuContext,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
) -> Result<Vec<f32>> {
    if x.len() != n * cols {
        return Err(Error::Shape { kernel: "qmatmul", reason: format!("{} activations for {n} x {cols}", x.len()) });
    }
    let m = GpuMatrix::upload(ctx, "qmatmul.w", ty, rows, cols, w)?;
    let call = m.call(ctx, cols, rows, 0, 0, None)?;
    let count = ctx.uniform("qmatmul.count", &Count::new(n as u32));
    let xb = ctx.activations("qmatmul.x", (x.len() * 4) as u64);
    ctx.queue.write_buffer(&xb, 0, bytemuck::cast_slice(x));
    let y = ctx.output("qmatmul.y", (n * rows * 4) as u64);
    let zero = ctx.storage("qmatmul.zero", &[0f32]);
    let mut passes = Vec::new();
    m.passes(&call, &count, &xb, &y, &zero, n, &mut passes);
    let passes: Vec<Pass> = passes.iter().map(PassBuf::pass).collect();
    ctx.submit(&passes);
    ctx.read(&y, n * rows).await
}
