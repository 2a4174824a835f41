//! The device decoder: a Llama/Qwen2 forward pass in Chorus's own WGSL kernels, with every weight matrix
//! in its GGUF block format on the device ([`crate::qmatmul`]) and a preallocated KV cache.
//!
//! Why not burn's wgpu backend: it holds f32 weights (about 7× a Q4 file's bytes) and compiles kernels for
//! every new shape, so each decode position compiled shaders (issue #23). Here each entry point is one
//! pipeline whatever the shapes: token counts, positions and the cache capacity are uniform values, the
//! cache grows by doubling (a copy on the device, rarely), and a whole forward pass is one command buffer.
//!
//! The host side (token embeddings, RoPE angles, which tokens' outputs to return) is the caller's:
//! `chorus_models::gpu` builds a [`HostDecoder`] from a model file and drives [`GpuDecoder::forward`].

use std::sync::atomic::{AtomicUsize, Ordering};

use chorus_core::{GgmlType, ModelConfig};

use crate::context::{GpuContext, Pass};
use crate::error::{Error, Result};
use crate::qmatmul::{ADD, Count, GpuMatrix, MatCall, PassBuf};
use crate::shaders::ShaderId;

/// A weight matrix as the file stores it.
pub struct HostMatrix<'a> {
    /// Tensor name (for messages).
    pub name: &'a str,
    /// Stored type.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// The stored bytes.
    pub data: &'a [u8],
}

/// One decoder layer's tensors.
pub struct HostLayer<'a> {
    /// RMSNorm weights before attention and before the MLP.
    pub attn_norm: &'a [f32],
    /// See `attn_norm`.
    pub mlp_norm: &'a [f32],
    /// Projections.
    pub q: HostMatrix<'a>,
    /// See `q`.
    pub k: HostMatrix<'a>,
    /// See `q`.
    pub v: HostMatrix<'a>,
    /// Query, key and value biases (Qwen2).
    pub bias: Option<[&'a [f32]; 3]>,
    /// See `q`.
    pub o: HostMatrix<'a>,
    /// See `q`.
    pub gate: HostMatrix<'a>,
    /// See `q`.
    pub up: HostMatrix<'a>,
    /// See `q`.
    pub down: HostMatrix<'a>,
}

/// A whole decoder's tensors on the host (the token embedding stays there: lookups are the caller's).
pub struct HostDecoder<'a> {
    /// Hyper-parameters.
    pub config: &'a ModelConfig,
    /// Layers.
    pub layers: Vec<HostLayer<'a>>,
    /// Final norm.
    pub norm: &'a [f32],
    /// The LM head (the embedding's bytes when tied).
    pub lm_head: HostMatrix<'a>,
    /// RoPE on adjacent pairs (Llama GGUF rows) instead of HF's half-split pairs.
    pub interleaved: bool,
}

struct Layer {
    attn_norm: wgpu::Buffer,
    mlp_norm: wgpu::Buffer,
    q: GpuMatrix,
    k: GpuMatrix,
    v: GpuMatrix,
    o: GpuMatrix,
    gate: GpuMatrix,
    up: GpuMatrix,
    down: GpuMatrix,
    calls: [MatCall; 7],
}

/// `Dims` of `shaders/decoder.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    n: u32,
    hidden: u32,
    qd: u32,
    kvd: u32,
    ffn: u32,
    head_dim: u32,
    heads: u32,
    kv_heads: u32,
    cap: u32,
    interleaved: u32,
    eps: f32,
    scale: f32,
}

/// A decoder whose weights live on the device.
pub struct GpuDecoder {
    ctx: GpuContext,
    config: ModelConfig,
    layers: Vec<Layer>,
    norm: wgpu::Buffer,
    lm_head: GpuMatrix,
    head_call: MatCall,
    interleaved: bool,
    zero: wgpu::Buffer,
    weight_bytes: u64,
    counters: DecoderCounters,
}

/// What this decoder's forward passes have cost the device (for `chorus bench --json` and the test that
/// holds decoding to fixed pipelines): counted per decoder, so concurrent users of the same context do
/// not show up in it.
#[derive(Default)]
struct DecoderCounters {
    forwards: AtomicUsize,
    pipelines: AtomicUsize,
    submits: AtomicUsize,
}

/// What [`GpuDecoder::forward`] returns for the selected tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuOutput {
    /// Logits, `[selected, vocab]`.
    Logits,
    /// Final-normed hidden states, `[selected, hidden]`.
    Hidden,
    /// The greedy token of each selected position (argmax of its logits, lowest index on ties, NaN
    /// skipped: `shaders/row_stats.wgsl`), as f32 values: only these come back from the device.
    Argmax,
}

/// The inputs of one forward pass over `n` tokens.
pub struct Step<'a> {
    /// Token embeddings, `[n, hidden]`.
    pub x: &'a [f32],
    /// Per token: batch row and position (the slot its key and value take in the cache).
    pub tokens: &'a [(u32, u32)],
    /// Per token: `(cos, sin)` of its position for each of the `head_dim / 2` frequencies.
    pub rope: &'a [[f32; 2]],
    /// The tokens whose outputs to return, in order.
    pub select: &'a [usize],
    /// Logits or hidden states.
    pub output: GpuOutput,
}

/// Buffers sized for a number of tokens per pass, reallocated (larger) only when a pass needs more.
struct Scratch {
    tokens: usize,
    selected: usize,
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    att: wgpu::Buffer,
    gate: wgpu::Buffer,
    up: wgpu::Buffer,
    scores: wgpu::Buffer,
    rope: wgpu::Buffer,
    tok: wgpu::Buffer,
    sel: wgpu::Buffer,
    seln: wgpu::Buffer,
    out: wgpu::Buffer,
    /// Per selected token: max, argmax, log-sum-exp and a pad word (`row_stats.wgsl`'s output).
    stats: wgpu::Buffer,
}

/// The KV cache of a batch (per layer one key and one value buffer of `rows × cap` positions) and the
/// scratch of its passes.
pub struct GpuCache {
    rows: usize,
    cap: usize,
    k: Vec<wgpu::Buffer>,
    v: Vec<wgpu::Buffer>,
    scratch: Option<Scratch>,
    dims: wgpu::Buffer,
    count_all: wgpu::Buffer,
    count_sel: wgpu::Buffer,
    /// `row_stats.wgsl`'s parameters (rows = the selected tokens, cols = the vocabulary).
    stats_params: wgpu::Buffer,
    /// Times the cache grew (each a device copy).
    pub grows: usize,
}

impl GpuCache {
    /// Positions each row can hold before the cache grows.
    pub fn capacity(&self) -> usize {
        self.cap
    }
}

/// First capacity of a cache: enough for most prompts and replies, small enough to be free.
const FIRST_CAP: usize = 256;

fn f32s(ctx: &GpuContext, label: &str, v: &[f32]) -> wgpu::Buffer {
    ctx.storage(label, v)
}

impl GpuDecoder {
    /// Uploads every tensor of `host` to `ctx`'s device; `progress(done, total)` after each layer.
    pub fn upload(ctx: &GpuContext, host: &HostDecoder<'_>, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let c = host.config;
        let (h, qd, kvd, f) =
            (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        if !c.head_dim.is_multiple_of(2)
            || c.head_dim > 256
            || c.num_kv_heads == 0
            || !c.num_heads.is_multiple_of(c.num_kv_heads)
        {
            return Err(Error::Shape {
                kernel: "decoder",
                reason: format!(
                    "head_dim {} with {} heads over {} KV heads (the kernels take an even head_dim ≤ 256)",
                    c.head_dim, c.num_heads, c.num_kv_heads
                ),
            });
        }
        let up = |m: &HostMatrix<'_>| GpuMatrix::upload(ctx, m.name, m.ty, m.rows, m.cols, m.data);
        let mut layers = Vec::with_capacity(host.layers.len());
        let mut weight_bytes = 0u64;
        for (i, l) in host.layers.iter().enumerate() {
            let (q, k, v, o) = (up(&l.q)?, up(&l.k)?, up(&l.v)?, up(&l.o)?);
            let (gate, upm, down) = (up(&l.gate)?, up(&l.up)?, up(&l.down)?);
            let bias = |j: usize| l.bias.map(|b| b[j]);
            let calls = [
                q.call(ctx, h, qd, 0, 0, bias(0))?,
                k.call(ctx, h, kvd, 0, 0, bias(1))?,
                v.call(ctx, h, kvd, 0, 0, bias(2))?,
                o.call(ctx, qd, h, 0, ADD, None)?,
                gate.call(ctx, h, f, 0, 0, None)?,
                upm.call(ctx, h, f, 0, 0, None)?,
                down.call(ctx, f, h, 0, ADD, None)?,
            ];
            for m in [&q, &k, &v, &o, &gate, &upm, &down] {
                weight_bytes += m.device_bytes;
            }
            layers.push(Layer {
                attn_norm: f32s(ctx, "attn_norm", l.attn_norm),
                mlp_norm: f32s(ctx, "mlp_norm", l.mlp_norm),
                q,
                k,
                v,
                o,
                gate,
                up: upm,
                down,
                calls,
            });
            progress(i + 1, host.layers.len() + 1);
        }
        let lm_head = up(&host.lm_head)?;
        weight_bytes += lm_head.device_bytes;
        let head_call = lm_head.call(ctx, h, c.vocab_size, 0, 0, None)?;
        progress(host.layers.len() + 1, host.layers.len() + 1);
        Ok(Self {
            ctx: ctx.clone(),
            config: c.clone(),
            layers,
            norm: f32s(ctx, "norm", host.norm),
            lm_head,
            head_call,
            interleaved: host.interleaved,
            zero: ctx.storage("zero", &[0f32; 4]),
            weight_bytes,
            counters: DecoderCounters::default(),
        })
    }

    /// The context the decoder runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Forward passes run, pipelines their recording created, and queue submissions they made (the pass
    /// and its read-back).
    pub fn counters(&self) -> (usize, usize, usize) {
        let c = &self.counters;
        (c.forwards.load(Ordering::Relaxed), c.pipelines.load(Ordering::Relaxed), c.submits.load(Ordering::Relaxed))
    }

    /// Bytes of weight matrices on the device (norms excluded: a few KB).
    pub fn device_weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// The kernel formats of the matrices (deduplicated, in layer order), and whether any was expanded.
    pub fn formats(&self) -> Vec<crate::QFormat> {
        let mut v: Vec<crate::QFormat> = self
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].map(GpuMatrix::format))
            .chain([self.lm_head.format()])
            .collect();
        v.sort_by_key(|f| f.code());
        v.dedup();
        v
    }

    /// An empty cache for `rows` batch rows.
    pub fn new_cache(&self, rows: usize) -> GpuCache {
        let c = &self.config;
        let cap = FIRST_CAP.min(c.max_position_embeddings.max(1));
        let kvd = c.num_kv_heads * c.head_dim;
        let bytes = (rows.max(1) * cap * kvd * 4) as u64;
        let mk = |l: &str| (0..c.num_layers).map(|_| self.ctx.scratch(l, bytes)).collect();
        GpuCache {
            rows,
            cap,
            k: mk("kcache"),
            v: mk("vcache"),
            scratch: None,
            dims: self.ctx.uniform("dims", &self.dims(0, cap)),
            count_all: self.ctx.uniform("count", &Count::new(0)),
            count_sel: self.ctx.uniform("count.sel", &Count::new(0)),
            stats_params: self.ctx.uniform("row_stats.params", &[0u32; 4]),
            grows: 0,
        }
    }

    fn dims(&self, n: usize, cap: usize) -> Dims {
        let c = &self.config;
        Dims {
            n: n as u32,
            hidden: c.hidden_size as u32,
            qd: (c.num_heads * c.head_dim) as u32,
            kvd: (c.num_kv_heads * c.head_dim) as u32,
            ffn: c.intermediate_size as u32,
            head_dim: c.head_dim as u32,
            heads: c.num_heads as u32,
            kv_heads: c.num_kv_heads as u32,
            cap: cap as u32,
            interleaved: u32::from(self.interleaved),
            eps: c.rms_norm_eps,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
        }
    }

    /// Grows the cache to hold position `need - 1` of every row (doubling), copying what it holds.
    fn reserve(&self, cache: &mut GpuCache, need: usize, enc: &mut wgpu::CommandEncoder) {
        if need <= cache.cap {
            return;
        }
        let c = &self.config;
        let mut cap = cache.cap.max(1);
        while cap < need {
            cap *= 2;
        }
        let kvd = (c.num_kv_heads * c.head_dim * 4) as u64;
        let bytes = cache.rows.max(1) as u64 * cap as u64 * kvd;
        for bufs in [&mut cache.k, &mut cache.v] {
            for b in bufs.iter_mut() {
                let nb = self.ctx.scratch("kvcache", bytes);
                for r in 0..cache.rows as u64 {
                    enc.copy_buffer_to_buffer(
                        b,
                        r * cache.cap as u64 * kvd,
                        &nb,
                        r * cap as u64 * kvd,
                        cache.cap as u64 * kvd,
                    );
                }
                *b = nb;
            }
        }
        cache.cap = cap;
        cache.grows += 1;
        // The score rows are `cap` long: the scratch is rebuilt at the new capacity.
        cache.scratch = None;
    }

    fn scratch(&self, cache: &mut GpuCache, n: usize, s: usize) {
        if cache.scratch.as_ref().is_some_and(|sc| sc.tokens >= n && sc.selected >= s) {
            return;
        }
        let c = &self.config;
        let (n, s) = (
            n.max(cache.scratch.as_ref().map_or(0, |sc| sc.tokens)),
            s.max(cache.scratch.as_ref().map_or(0, |sc| sc.selected)).max(1),
        );
        let (h, qd, kvd, f) =
            (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        let fl = |label: &str, count: usize| self.ctx.scratch(label, (count * 4) as u64);
        // What the matrix products read: bindable as their uniform activations on CPU adapters.
        let fa = |label: &str, count: usize| self.ctx.activations(label, (count * 4) as u64);
        let out_w = c.vocab_size.max(h);
        cache.scratch = Some(Scratch {
            tokens: n,
            selected: s,
            x: fl("x", n * h),
            xn: fa("xn", n * h),
            q: fl("q", n * qd),
            k: fl("k", n * kvd),
            v: fl("v", n * kvd),
            att: fa("att", n * qd),
            gate: fa("gate", n * f),
            up: fl("up", n * f),
            scores: fl("scores", n * c.num_heads * cache.cap),
            rope: fl("rope", n * c.head_dim),
            tok: fl("tok", n * 2),
            sel: fl("sel", s * h),
            seln: fa("seln", s * h),
            out: fl("out", s * out_w),
            stats: fl("stats", s * 4),
        });
    }

    /// Runs `step` after what `cache` holds: appends the tokens' keys and values at their positions and
    /// returns the outputs of the selected tokens, row-major. One command buffer, one read-back.
    pub async fn forward(&self, cache: &mut GpuCache, step: Step<'_>) -> Result<Vec<f32>> {
        let c = &self.config;
        let n = step.tokens.len();
        let (h, half) = (c.hidden_size, c.head_dim / 2);
        let bad = |reason: String| Error::Shape { kernel: "decoder", reason };
        if step.x.len() != n * h || step.rope.len() != n * half {
            return Err(bad(format!(
                "{n} tokens with {} embedding values and {} RoPE pairs",
                step.x.len(),
                step.rope.len()
            )));
        }
        if let Some(&(r, p)) =
            step.tokens.iter().find(|(r, p)| *r as usize >= cache.rows || *p as usize >= c.max_position_embeddings)
        {
            return Err(bad(format!("token at row {r}, position {p} of a {}-row cache", cache.rows)));
        }
        if let Some(&i) = step.select.iter().find(|&&i| i >= n) {
            return Err(bad(format!("selected token {i} of {n}")));
        }
        let s = step.select.len();
        let out_w = match step.output {
            GpuOutput::Hidden => h,
            GpuOutput::Logits => c.vocab_size,
            GpuOutput::Argmax => 1,
        };
        if n == 0 {
            return Ok(vec![0.0; s * out_w]);
        }
        let mut enc =
            self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("decoder") });
        let need = step.tokens.iter().map(|&(_, p)| p as usize + 1).max().unwrap_or(0);
        self.reserve(cache, need, &mut enc);
        self.scratch(cache, n, s);
        let q = &self.ctx.queue;
        q.write_buffer(&cache.dims, 0, bytemuck::bytes_of(&self.dims(n, cache.cap)));
        q.write_buffer(&cache.count_all, 0, bytemuck::bytes_of(&Count::new(n as u32)));
        q.write_buffer(&cache.count_sel, 0, bytemuck::bytes_of(&Count::new(s as u32)));
        q.write_buffer(&cache.stats_params, 0, bytemuck::cast_slice(&[s as u32, c.vocab_size as u32, 0, 0]));
        let sc = cache.scratch.as_ref().ok_or_else(|| bad("scratch buffers were not allocated".into()))?;
        q.write_buffer(&sc.x, 0, bytemuck::cast_slice(step.x));
        q.write_buffer(&sc.rope, 0, bytemuck::cast_slice(step.rope));
        let tok: Vec<[u32; 2]> = step.tokens.iter().map(|&(r, p)| [r, p]).collect();
        q.write_buffer(&sc.tok, 0, bytemuck::cast_slice(&tok));

        let (ca, zero) = (&cache.count_all, &self.zero);
        let dims = &cache.dims;
        let mut passes: Vec<PassBuf> = Vec::with_capacity(self.layers.len() * 12 + 2);
        let silu_groups = (n * c.intermediate_size).div_ceil(256);
        let max_groups = self.ctx.device.limits().max_compute_workgroups_per_dimension as usize;
        let silu_grid = (silu_groups.min(max_groups) as u32, silu_groups.div_ceil(max_groups) as u32, 1);
        for (li, l) in self.layers.iter().enumerate() {
            passes.push(PassBuf {
                id: ShaderId::RmsNorm,
                bindings: vec![(0, dims), (1, &sc.x), (2, &l.attn_norm), (3, &sc.xn)],
                groups: (n as u32, 1, 1),
            });
            l.q.passes(&l.calls[0], ca, &sc.xn, &sc.q, zero, n, &mut passes);
            l.k.passes(&l.calls[1], ca, &sc.xn, &sc.k, zero, n, &mut passes);
            l.v.passes(&l.calls[2], ca, &sc.xn, &sc.v, zero, n, &mut passes);
            passes.push(PassBuf {
                id: ShaderId::RopeCache,
                bindings: vec![
                    (0, dims),
                    (4, &sc.q),
                    (5, &sc.k),
                    (6, &sc.v),
                    (7, &sc.rope),
                    (8, &sc.tok),
                    (9, &cache.k[li]),
                    (10, &cache.v[li]),
                ],
                groups: (n as u32, 1, 1),
            });
            passes.push(PassBuf {
                id: ShaderId::Attention,
                bindings: vec![
                    (0, dims),
                    (11, &sc.q),
                    (12, &cache.k[li]),
                    (13, &cache.v[li]),
                    (14, &sc.tok),
                    (15, &sc.scores),
                    (16, &sc.att),
                ],
                groups: (c.num_heads as u32, n as u32, 1),
            });
            l.o.passes(&l.calls[3], ca, &sc.att, &sc.x, zero, n, &mut passes);
            passes.push(PassBuf {
                id: ShaderId::RmsNorm,
                bindings: vec![(0, dims), (1, &sc.x), (2, &l.mlp_norm), (3, &sc.xn)],
                groups: (n as u32, 1, 1),
            });
            l.gate.passes(&l.calls[4], ca, &sc.xn, &sc.gate, zero, n, &mut passes);
            l.up.passes(&l.calls[5], ca, &sc.xn, &sc.up, zero, n, &mut passes);
            passes.push(PassBuf {
                id: ShaderId::SiluMul,
                bindings: vec![(0, dims), (17, &sc.gate), (18, &sc.up)],
                groups: silu_grid,
            });
            l.down.passes(&l.calls[6], ca, &sc.gate, &sc.x, zero, n, &mut passes);
        }
        let recorded: Vec<Pass> = passes.iter().map(PassBuf::pass).collect();
        let counters = &self.counters;
        counters.forwards.fetch_add(1, Ordering::Relaxed);
        counters.pipelines.fetch_add(self.ctx.record(&mut enc, &recorded), Ordering::Relaxed);
        if s == 0 {
            // Only the cache wanted these tokens (a row's padding-final pass).
            self.ctx.submit_encoder(enc);
            counters.submits.fetch_add(1, Ordering::Relaxed);
            return Ok(Vec::new());
        }
        // The selected tokens' hidden states, gathered on the device.
        let row = (h * 4) as u64;
        for (k, &i) in step.select.iter().enumerate() {
            enc.copy_buffer_to_buffer(&sc.x, i as u64 * row, &sc.sel, k as u64 * row, row);
        }
        let mut tail: Vec<PassBuf> = vec![PassBuf {
            id: ShaderId::RmsNorm,
            bindings: vec![(0, dims), (1, &sc.sel), (2, &self.norm), (3, &sc.seln)],
            groups: (s as u32, 1, 1),
        }];
        let result = match step.output {
            GpuOutput::Hidden => &sc.seln,
            GpuOutput::Logits | GpuOutput::Argmax => {
                self.lm_head.passes(&self.head_call, &cache.count_sel, &sc.seln, &sc.out, zero, s, &mut tail);
                &sc.out
            }
        };
        if step.output == GpuOutput::Argmax {
            tail.push(PassBuf {
                id: ShaderId::RowStats,
                bindings: vec![(0, &cache.stats_params), (1, &sc.out), (2, &sc.stats)],
                groups: (s as u32, 1, 1),
            });
        }
        let result = if step.output == GpuOutput::Argmax { &sc.stats } else { result };
        let recorded: Vec<Pass> = tail.iter().map(PassBuf::pass).collect();
        counters.pipelines.fetch_add(self.ctx.record(&mut enc, &recorded), Ordering::Relaxed);
        self.ctx.submit_encoder(enc);
        // This pass and the read-back's copy.
        counters.submits.fetch_add(2, Ordering::Relaxed);
        if step.output == GpuOutput::Argmax {
            let stats: Vec<[u32; 4]> = self.ctx.read(result, s).await?;
            return Ok(stats.iter().map(|r| r[1] as f32).collect());
        }
        self.ctx.read(result, s * out_w).await
    }
}
