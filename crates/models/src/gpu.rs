//! The device decoder ([`chorus_gpu::decoder`]) run from a model file: the weight matrices go to the GPU
//! in their stored GGUF/safetensors form, the token embedding stays in the memory map (rows decoded at
//! lookup, as the CPU engine does), and this module turns a batch of `[B][T]` tokens with padding into the
//! device's flat list of (row, position) tokens and back.
//!
//! The shapes, names and byte counts are checked once by [`CpuModel::load`] (the same loader as the CPU
//! engine's), so both engines accept and refuse the same files.

use chorus_core::ModelConfig;
use chorus_gpu::GpuContext;
use chorus_gpu::decoder::{GpuCache, GpuDecoder, GpuOutput, HostDecoder, HostLayer, HostMatrix, Step};

use crate::cpu::{CpuModel, CpuOutput, Weight};
use crate::error::{Error, Result};
use crate::source::ModelFiles;

/// A decoder whose matrices live on the GPU in their stored block format.
pub struct GpuModel {
    /// Hyper-parameters.
    pub config: ModelConfig,
    dec: GpuDecoder,
    embed: Weight,
    inv_freq: Vec<f32>,
}

/// The KV cache of one batch on the device, with each row's cached length.
pub struct GpuModelCache {
    cache: GpuCache,
    lens: Vec<usize>,
}

impl GpuModelCache {
    /// Real tokens cached for row `r`.
    pub fn row_len(&self, r: usize) -> usize {
        self.lens.get(r).copied().unwrap_or(0)
    }

    /// Positions per row the device cache holds before it next grows.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }
}

fn host(w: &Weight) -> HostMatrix<'_> {
    let (rows, cols) = w.shape();
    HostMatrix { name: &w.raw.name, ty: w.ty(), rows, cols, data: w.data() }
}

fn gpu_err(e: chorus_gpu::Error) -> Error {
    Error::Device(format!("wgpu: {e}"))
}

impl GpuModel {
    /// Checks `files` as the CPU engine does and uploads every matrix to `ctx`'s device.
    pub fn load(files: &ModelFiles, ctx: &GpuContext, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let cpu = CpuModel::load(files, &mut |_, _| {})?;
        let layers = cpu
            .layers
            .iter()
            .map(|l| HostLayer {
                attn_norm: &l.attn_norm,
                mlp_norm: &l.mlp_norm,
                q: host(&l.q),
                k: host(&l.k),
                v: host(&l.v),
                bias: l.bias.as_ref().map(|[a, b, c]| [a.as_slice(), b.as_slice(), c.as_slice()]),
                o: host(&l.o),
                gate: host(&l.gate),
                up: host(&l.up),
                down: host(&l.down),
            })
            .collect();
        let hd = HostDecoder {
            config: &cpu.config,
            layers,
            norm: &cpu.norm,
            lm_head: host(&cpu.lm_head),
            interleaved: cpu.interleaved,
        };
        let dec = GpuDecoder::upload(ctx, &hd, progress).map_err(|e| match e {
            chorus_gpu::Error::Shape { reason, .. } => Error::Gguf { file: files.path.clone(), reason },
            other => gpu_err(other),
        })?;
        Ok(Self { config: cpu.config.clone(), dec, embed: cpu.embed.clone(), inv_freq: cpu.inv_freq.clone() })
    }

    /// The device decoder (its context's counters, weight bytes and formats).
    pub fn device_decoder(&self) -> &GpuDecoder {
        &self.dec
    }

    /// An empty cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> GpuModelCache {
        GpuModelCache { cache: self.dec.new_cache(batch), lens: vec![0; batch] }
    }

    /// [`CpuModel::forward`] on the device: the same batch layout, padding rule and outputs.
    pub async fn forward(
        &self,
        tokens: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut GpuModelCache,
        output: CpuOutput,
    ) -> Result<Vec<f32>> {
        let out = if output == CpuOutput::Hidden { GpuOutput::Hidden } else { GpuOutput::Logits };
        self.run(tokens, valid, cache, output, out).await
    }

    /// The greedy next token of each row (argmax of its last position's logits, chosen on the device: only
    /// the ids come back); `None` for a row whose last position is padding.
    pub async fn greedy(
        &self,
        tokens: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut GpuModelCache,
    ) -> Result<Vec<Option<u32>>> {
        let ids = self.run(tokens, valid, cache, CpuOutput::Last, GpuOutput::Argmax).await?;
        Ok(valid.iter().zip(ids).map(|(v, id)| v.last().copied().unwrap_or(false).then_some(id as u32)).collect())
    }

    async fn run(
        &self,
        tokens: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut GpuModelCache,
        output: CpuOutput,
        device_out: GpuOutput,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let b = tokens.len();
        let t = tokens.first().map_or(0, Vec::len);
        if b == 0 || t == 0 || b != cache.lens.len() || valid.len() != b {
            return Err(Error::Device(format!(
                "forward: batch {b} x {t} does not match a cache of {} rows",
                cache.lens.len()
            )));
        }
        let h = c.hidden_size;
        let mut ids = Vec::with_capacity(b * t);
        let mut toks = Vec::with_capacity(b * t);
        let mut lens = cache.lens.clone();
        for r in 0..b {
            if tokens[r].len() != t || valid[r].len() != t {
                return Err(Error::Device(format!("forward: row {r} has {} tokens, expected {t}", tokens[r].len())));
            }
            for (j, &id) in tokens[r].iter().enumerate() {
                if id as usize >= c.vocab_size {
                    return Err(Error::Device(format!("token id {id} is outside the vocabulary of {}", c.vocab_size)));
                }
                if valid[r][j] {
                    ids.push(id);
                    toks.push((r as u32, lens[r] as u32));
                    lens[r] += 1;
                }
            }
            if lens[r] > c.max_position_embeddings {
                return Err(Error::Device(format!(
                    "sequence of {} tokens exceeds the context of {}",
                    lens[r], c.max_position_embeddings
                )));
            }
        }
        let out_rows = if output == CpuOutput::Last { b } else { b * t };
        let out_w = match device_out {
            GpuOutput::Hidden => h,
            GpuOutput::Logits => c.vocab_size,
            GpuOutput::Argmax => 1,
        };
        // Which computed token feeds each output row (None: padding, zeros).
        let mut pick: Vec<Option<usize>> = vec![None; out_rows];
        let mut i = 0;
        for r in 0..b {
            for j in 0..t {
                if valid[r][j] {
                    match output {
                        CpuOutput::Last if j == t - 1 => pick[r] = Some(i),
                        CpuOutput::Last => {}
                        _ => pick[r * t + j] = Some(i),
                    }
                    i += 1;
                }
            }
        }
        let select: Vec<usize> = pick.iter().flatten().copied().collect();
        let mut x = vec![0f32; ids.len() * h];
        for (k, &id) in ids.iter().enumerate() {
            self.embed.row_into(id as usize, &mut x[k * h..(k + 1) * h]);
        }
        // cos/sin per token in f32 on the host, exactly as the CPU engine computes them.
        let mut rope = Vec::with_capacity(toks.len() * self.inv_freq.len());
        for &(_, p) in &toks {
            for &fr in &self.inv_freq {
                let a = p as f32 * fr;
                rope.push([a.cos(), a.sin()]);
            }
        }
        let computed = if toks.is_empty() {
            Vec::new()
        } else {
            self.dec
                .forward(
                    &mut cache.cache,
                    Step { x: &x, tokens: &toks, rope: &rope, select: &select, output: device_out },
                )
                .await
                .map_err(gpu_err)?
        };
        cache.lens = lens;
        if select.len() == out_rows {
            return Ok(computed);
        }
        let mut out = vec![0f32; out_rows * out_w];
        let mut k = 0;
        for (r, p) in pick.iter().enumerate() {
            if p.is_some() {
                out[r * out_w..(r + 1) * out_w].copy_from_slice(&computed[k * out_w..(k + 1) * out_w]);
                k += 1;
            }
        }
        Ok(out)
    }
}
