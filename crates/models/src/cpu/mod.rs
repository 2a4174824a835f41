//! The CPU decode engine: Qwen2/Llama decoders run straight from the weights as the file stores them
//! (GGUF blocks or safetensors F16/BF16/F32 in the memory map, no f32 copy), with activations quantized
//! once per matmul ([`chorus_core::ggml`]'s Q8_0/Q8_K, llama.cpp's scheme) and a persistent spinning
//! thread pool ([`pool`]).
//!
//! Why a hand-written loop instead of burn: a decode step is ~10 small ops per layer on one token, and
//! burn's per-op dispatch, tensor allocation and f32 weights cost 1.5–2.6× the memory-bound time on this
//! machine (issue #22's table). Here every buffer lives in [`CpuCache`]'s scratch (sized once, reused),
//! each projection group (q/k/v, gate/up) is one pool job, and attention reads a contiguous cache with
//! GQA by index (no copies). burn's [`crate::decoder`] forward stays the reference these paths are tested
//! against, and the path for training, task deltas and wgpu.
//!
//! Batches: every real (non-padding) token of every row goes through the projections as one matrix, so
//! a batch of rows (fusion's weight-sharing groups, batched generation) reads each weight once per step.
//! Padding tokens are not computed or cached; positions count real tokens, as HF does for left padding.

pub mod pool;
pub mod simd;

use std::sync::Arc;

use chorus_core::ggml::{self, ActFormat, Acts, Kernel};
use chorus_core::{GgmlType, ModelConfig};

use crate::error::{Error, Result};
use crate::source::{ModelFiles, RawTensor};
use pool::Pool;

/// One weight matrix in its stored form with the dot-product kernel for its type.
#[derive(Clone)]
pub struct Weight {
    pub(crate) raw: RawTensor,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    kernel: Kernel,
}

impl Weight {
    /// The stored `[rows, cols]` tensor `hf_name`; a missing tensor, another shape, or a type whose
    /// blocks do not tile a row is an error naming the tensor.
    fn load(files: &ModelFiles, hf_name: &str, rows: usize, cols: usize) -> Result<Self> {
        let raw = files
            .raw(hf_name)?
            .ok_or_else(|| Error::MissingTensor { file: files.path.clone(), tensor: hf_name.to_string() })?;
        if raw.shape != [rows, cols] {
            return Err(Error::Shape {
                file: files.path.clone(),
                tensor: raw.name.clone(),
                expected: vec![rows, cols],
                found: raw.shape.clone(),
            });
        }
        let row_bytes = ggml::row_bytes(raw.ty, cols).ok_or_else(|| Error::Dtype {
            file: files.path.clone(),
            tensor: raw.name.clone(),
            dtype: format!(
                "{} (rows of {cols} values are not whole {}-value blocks)",
                raw.ty.name(),
                raw.ty.block_elems()
            ),
        })?;
        if raw.range.len() != rows * row_bytes {
            return Err(Error::Gguf {
                file: files.path.clone(),
                reason: format!(
                    "tensor '{}' holds {} bytes, {rows} rows need {}",
                    raw.name,
                    raw.range.len(),
                    rows * row_bytes
                ),
            });
        }
        let kernel = Kernel::best(raw.ty);
        Ok(Self { raw, rows, cols, row_bytes, kernel })
    }

    pub(crate) fn data(&self) -> &[u8] {
        self.raw.data()
    }

    /// Stored type.
    pub fn ty(&self) -> GgmlType {
        self.raw.ty
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes of the stored matrix.
    pub fn bytes(&self) -> usize {
        self.rows * self.row_bytes
    }

    /// Decodes row `r` into `out` (embedding lookups).
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        let b = &self.data()[r * self.row_bytes..(r + 1) * self.row_bytes];
        ggml::dequantize_row(self.raw.ty, b, out);
    }
}

/// A small tensor (norm weight, bias) decoded to f32, in the file's row order.
fn vector(files: &ModelFiles, hf_name: &str, len: usize) -> Result<Vec<f32>> {
    let raw = files
        .raw(hf_name)?
        .ok_or_else(|| Error::MissingTensor { file: files.path.clone(), tensor: hf_name.to_string() })?;
    if raw.shape.iter().product::<usize>() != len || raw.shape.len() != 1 {
        return Err(Error::Shape {
            file: files.path.clone(),
            tensor: raw.name.clone(),
            expected: vec![len],
            found: raw.shape,
        });
    }
    chorus_core::ggml::dequantize(raw.ty, raw.data(), len, &raw.name)
        .map_err(|err| Error::Core { file: files.path.clone(), err })
}

pub(crate) struct Layer {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) mlp_norm: Vec<f32>,
    pub(crate) q: Weight,
    pub(crate) k: Weight,
    pub(crate) v: Weight,
    pub(crate) bias: Option<[Vec<f32>; 3]>,
    pub(crate) o: Weight,
    pub(crate) gate: Weight,
    pub(crate) up: Weight,
    pub(crate) down: Weight,
}

/// A decoder held in its file's stored form, run by the CPU engine.
pub struct CpuModel {
    /// Hyper-parameters.
    pub config: ModelConfig,
    pub(crate) layers: Vec<Layer>,
    pub(crate) embed: Weight,
    pub(crate) lm_head: Weight,
    pub(crate) norm: Vec<f32>,
    pub(crate) inv_freq: Vec<f32>,
    /// RoPE on adjacent pairs (Llama GGUF rows) instead of HF's half-split pairs.
    pub(crate) interleaved: bool,
    pool: Arc<Pool>,
}

/// What [`CpuModel::forward`] returns per selected position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuOutput {
    /// Logits of each row's last position (`[B, vocab]`).
    Last,
    /// Logits of every position (`[B·T, vocab]`).
    All,
    /// Final-normed hidden state of every position (`[B·T, hidden]`).
    Hidden,
}

/// Keys and values of one batch row: per layer, `[len, kv_heads·head_dim]` token-major, real tokens only.
#[derive(Default)]
struct RowCache {
    len: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// Activations of one input quantized in each format its consumers need.
#[derive(Default)]
struct ActBank {
    slots: [Acts; 3],
    filled: [bool; 3],
}

fn slot(f: ActFormat) -> usize {
    match f {
        ActFormat::F32 => 0,
        ActFormat::Q8_0 => 1,
        ActFormat::Q8K => 2,
    }
}

impl ActBank {
    /// Quantizes `x` (`rows × cols`) for every weight in `ws` (each format once).
    fn fill(&mut self, x: &[f32], rows: usize, cols: usize, ws: &[&Weight]) -> Result<()> {
        self.filled = [false; 3];
        for w in ws {
            let f = w.kernel.act_format();
            let s = slot(f);
            if !self.filled[s] {
                self.slots[s]
                    .quantize(f, x, rows, cols)
                    .map_err(|err| Error::Core { file: w.raw.name.clone(), err })?;
                self.filled[s] = true;
            }
        }
        Ok(())
    }

    fn get(&self, w: &Weight) -> &Acts {
        &self.slots[slot(w.kernel.act_format())]
    }
}

/// Buffers of one forward pass, kept between calls so a decode step allocates nothing once warm.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Per thread: attention scores over the cache (QUERY_BLOCK rows of them in prefill).
    scores: Vec<f32>,
    /// The computed tokens of the batch rows long enough for the panel GEMM (ranges), their attention's
    /// query blocks (at most QUERY_BLOCK tokens of one row), and the other tokens.
    long: Vec<(usize, usize)>,
    blocks: Vec<(usize, usize)>,
    short: Vec<usize>,
    bank: ActBank,
    /// Per computed token: its batch row and position.
    row_of: Vec<usize>,
    pos_of: Vec<usize>,
}

/// The KV cache and scratch buffers of one batch, for [`CpuModel::forward`].
pub struct CpuCache {
    rows: Vec<RowCache>,
    scratch: Scratch,
}

impl CpuCache {
    /// Real tokens cached for row `r`.
    pub fn row_len(&self, r: usize) -> usize {
        self.rows.get(r).map_or(0, |c| c.len)
    }
}

/// A raw pointer to an output buffer that jobs write disjoint parts of.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every job writes a range no other thread of the same `Pool::run` touches (see the callers),
// and `run` returns only after all have finished.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The element `i` places further (a method, so closures capture the `Sync` wrapper, not the field).
    ///
    /// # Safety
    /// `i` must lie inside the buffer the pointer came from.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: the caller keeps `i` inside the buffer.
        unsafe { self.0.add(i) }
    }
}

/// One matrix product of a pool job: `out[i·stride + r] = W[r] · acts[i]` for the weight's rows.
struct MatJob<'a> {
    w: &'a Weight,
    acts: &'a Acts,
    out: OutPtr,
    stride: usize,
    m: usize,
    /// Activation rows (sorted, disjoint ranges) of the batch rows long enough for the panel GEMM; the
    /// others take the row kernels. Chosen per batch row, so a row's results do not depend on what else
    /// is in the batch.
    long: &'a [(usize, usize)],
}

impl<'a> MatJob<'a> {
    /// `w` against the bank's activations for its format (`m` rows), into `out` (rows `stride` apart).
    fn new(
        bank: &'a ActBank,
        w: &'a Weight,
        out: &mut [f32],
        stride: usize,
        m: usize,
        long: &'a [(usize, usize)],
    ) -> Self {
        MatJob { w, acts: bank.get(w), out: OutPtr(out.as_mut_ptr()), stride, m, long }
    }
}

/// Rows a thread claims at a time: their weight bytes stay in L1 while every activation row of a batch
/// passes. Claims run front to back through each thread's share (see [`Pool::for_each_range`]), so in
/// decode the rows still stream as one run per thread.
const ROW_CHUNK: usize = 32;

/// Tokens of one batch row in one forward pass from which its products repack their weights into panels
/// ([`ggml::Panels`]) when this CPU has a panel kernel: packing costs about as much as 20–40 rows of the
/// row kernels' quads and the panel kernel then runs 2–4× faster per row (`GGML_GEMM=1` in chorus-core's
/// ggml bench), so prompts of a few dozen tokens break even and decode (1–2 rows) never packs. Prefill
/// attention goes by blocks ([`attend_block`]) from the same length.
const GEMM_MIN_ROWS: usize = 48;

thread_local! {
    /// Each pool thread's panel buffers, reused from one claim to the next (no allocation once warm).
    static PANELS: std::cell::RefCell<ggml::Panels> = std::cell::RefCell::new(ggml::Panels::new());
}

/// Runs several products as one pool job over their concatenated output rows.
fn matmuls(pool: &Pool, jobs: &[MatJob<'_>]) {
    let total: usize = jobs.iter().map(|j| j.w.rows).sum();
    debug_assert!(jobs.iter().all(|j| j.acts.cols() == j.w.cols && j.acts.rows() >= j.m && j.stride >= j.w.rows));
    let gemm = ggml::GemmKernel::fast();
    pool.for_each_range(total, ROW_CHUNK, &|_, a, b| {
        let mut base = 0;
        for j in jobs {
            let (lo, hi) = (a.max(base), b.min(base + j.w.rows));
            if lo < hi {
                let (c, e) = (lo - base, hi - base);
                let w = &j.w.data()[c * j.w.row_bytes..e * j.w.row_bytes];
                // SAFETY: rows c..e of output row i belong to this claim alone (`for_each_range` hands out
                // each range once), and `out` holds m·stride values with stride ≥ the rows.
                let out = |i: usize| unsafe { std::slice::from_raw_parts_mut(j.out.at(i * j.stride + c), e - c) };
                let ty = j.w.kernel.weight_type();
                let gemm = gemm.filter(|_| !j.long.is_empty() && ggml::sub_block(ty).is_some());
                let mut i = 0;
                let mut packed = false;
                for &(p0, p1) in j.long {
                    if let Some(g) = gemm {
                        row_kernels(j, w, &out, i, p0);
                        // The claim's weight rows packed once (at the first long range), four rows a pass.
                        let ok = PANELS.with_borrow_mut(|p| {
                            if !packed && p.pack(ty, w, e - c, j.w.cols).is_err() {
                                return false;
                            }
                            packed = true;
                            let mut k = p0;
                            while k + 4 <= p1 {
                                p.gemm(g, j.acts, k, [out(k), out(k + 1), out(k + 2), out(k + 3)]);
                                k += 4;
                            }
                            for k in k..p1 {
                                p.gemm(g, j.acts, k, [out(k)]);
                            }
                            true
                        });
                        if ok {
                            i = p1;
                        }
                    }
                }
                row_kernels(j, w, &out, i, j.m);
            }
            base += j.w.rows;
        }
    });
}

/// Activation rows `lo..hi` of a job against a claim's weight rows `w` through the row kernels: four, then
/// two at a time (each weight block decoded once for all of them; equal bit for bit to one at a time).
fn row_kernels<'o>(j: &MatJob<'_>, w: &[u8], out: &impl Fn(usize) -> &'o mut [f32], lo: usize, hi: usize) {
    let mut i = lo;
    while i + 4 <= hi {
        j.w.kernel.dot_rows_quad(w, j.acts, i, [out(i), out(i + 1), out(i + 2), out(i + 3)]);
        i += 4;
    }
    while i + 2 <= hi {
        j.w.kernel.dot_rows_pair(w, j.acts, i, [out(i), out(i + 1)]);
        i += 2;
    }
    if i < hi {
        j.w.kernel.dot_rows(w, j.acts, i, out(i));
    }
}

/// Query tokens per block of the prefill attention: the block's scores against the cache (QUERY_BLOCK ×
/// positions) are one f32 matrix product and its output another, instead of a dot product and an axpy of
/// one head-width vector per (query, key) pair (27 % of a 512-token prefill of the 0.5B, perf); the causal
/// mask wastes at most the block's own triangle.
const QUERY_BLOCK: usize = 32;

/// Where one head's queries, keys and values sit in the token-major buffers.
struct AttnBlock {
    /// Floats per token of the queries (and of the output), and of the keys and values.
    qd: usize,
    kvd: usize,
    /// Head width, the KV head the query head reads, and the score scale 1/√hd.
    hd: usize,
    kvh: usize,
    scale: f32,
}

/// Causal attention of consecutive query tokens of one batch row for one head: `q` starts at the first
/// token's head (tokens `qd` apart), `pos` are their positions (consecutive), `keys`/`vals` the row's
/// cache for the layer (tokens `kvd` apart, every position up to the last query's present). Writes the
/// `pos.len()` output heads from `out`, `qd` apart. The two products go through the `gemm` crate (a
/// well-kept f32 GEMM with arbitrary strides, which burn's CPU backend uses too); the softmax between
/// them is exact-max with `f32::exp`, as the decode path's.
fn attend_block(
    g: &AttnBlock,
    q: &[f32],
    pos: &[usize],
    keys: &[f32],
    vals: &[f32],
    scores: &mut [f32],
    out: *mut f32,
) {
    let nq = pos.len();
    let Some(&last) = pos.last() else { return };
    let len = last + 1;
    let off = g.kvh * g.hd;
    // Internal invariants of the forward pass (not user input): every read below stays inside these.
    assert!(
        q.len() >= (nq - 1) * g.qd + g.hd
            && keys.len() >= len * g.kvd
            && vals.len() >= len * g.kvd
            && off + g.hd <= g.kvd
            && scores.len() >= nq * len,
        "attend_block: buffers too short for {nq} queries over {len} positions"
    );
    // SAFETY: scores (nq × len, row-major) = scale · Q (nq × hd, rows qd apart) · Kᵀ (key j's head at
    // j·kvd + off): every index is inside the lengths asserted above.
    unsafe {
        gemm_f32(
            [nq, len, g.hd],
            scores.as_mut_ptr(),
            len,
            q.as_ptr(),
            g.qd,
            keys.as_ptr().add(off),
            [1, g.kvd],
            g.scale,
        )
    };
    for (row, &p) in scores[..nq * len].chunks_exact_mut(len).zip(pos) {
        let (live, masked) = row.split_at_mut(p + 1);
        let mx = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0f32;
        for v in live.iter_mut() {
            *v = (*v - mx).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        live.iter_mut().for_each(|v| *v *= inv);
        masked.fill(0.0);
    }
    // SAFETY: out (nq × hd, rows qd apart; the caller owns them) = P (nq × len) · V (value j's head at
    // j·kvd + off), inside the asserted lengths.
    unsafe { gemm_f32([nq, g.hd, len], out, g.qd, scores.as_ptr(), len, vals.as_ptr().add(off), [g.kvd, 1], 1.0) };
}

/// `dst = beta · lhs · rhs` for `[m, n, k]`, single-threaded, through the `gemm` crate: `dst` (m × n) and
/// `lhs` (m × k) row-major with rows `dst_rs` / `lhs_rs` apart, `rhs` (k × n) element (r, c) at
/// `r·rhs_strides[0] + c·rhs_strides[1]`.
///
/// # Safety
/// Every element so addressed must lie inside the buffers the pointers come from, and `dst` must not
/// overlap the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_strides: [usize; 2],
    beta: f32,
) {
    let [rr, rc] = rhs_strides.map(|v| v as isize);
    // SAFETY: per the caller; `read_dst = false`, so `dst` is only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            rc,
            rr,
            0.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let ss: f32 = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let s = 1.0 / (ss + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * s * g;
        }
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl CpuModel {
    /// Builds the model from `files` without decoding or copying its matrices. `progress(done, total)`
    /// is called per tensor.
    pub fn load(files: &ModelFiles, progress: &mut dyn FnMut(usize, usize)) -> Result<Self> {
        let c = files.config.clone();
        let (h, qd, kvd, f) =
            (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        let total = files.expected_tensors().len();
        let mut done = 0;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let w = |name: &str, rows, cols| Weight::load(files, &format!("{p}.{name}.weight"), rows, cols);
            let bias = if c.attention_bias {
                Some([
                    vector(files, &format!("{p}.self_attn.q_proj.bias"), qd)?,
                    vector(files, &format!("{p}.self_attn.k_proj.bias"), kvd)?,
                    vector(files, &format!("{p}.self_attn.v_proj.bias"), kvd)?,
                ])
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: vector(files, &format!("{p}.input_layernorm.weight"), h)?,
                mlp_norm: vector(files, &format!("{p}.post_attention_layernorm.weight"), h)?,
                q: w("self_attn.q_proj", qd, h)?,
                k: w("self_attn.k_proj", kvd, h)?,
                v: w("self_attn.v_proj", kvd, h)?,
                bias,
                o: w("self_attn.o_proj", h, qd)?,
                gate: w("mlp.gate_proj", f, h)?,
                up: w("mlp.up_proj", f, h)?,
                down: w("mlp.down_proj", h, f)?,
            });
            done += 9 + if c.attention_bias { 3 } else { 0 };
            progress(done.min(total), total);
        }
        let embed = Weight::load(files, "model.embed_tokens.weight", c.vocab_size, h)?;
        let lm_head =
            if c.tie_word_embeddings { embed.clone() } else { Weight::load(files, "lm_head.weight", c.vocab_size, h)? };
        let norm = vector(files, "model.norm.weight", h)?;
        progress(total, total);
        let half = c.head_dim / 2;
        let inv_freq = (0..half).map(|i| 1.0 / c.rope_theta.powf((2 * i) as f32 / c.head_dim as f32)).collect();
        Ok(Self {
            interleaved: files.interleaved_rope(),
            config: c,
            layers,
            embed,
            lm_head,
            norm,
            inv_freq,
            pool: pool::global(),
        })
    }

    /// Bytes of weights read per decode step (every matrix once; the embedding row is negligible).
    pub fn weight_bytes_per_token(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().map(|w| w.bytes()).sum::<usize>())
            .sum();
        l + self.lm_head.bytes()
    }

    /// The stored types of the projections and the LM head, for reports.
    pub fn weight_types(&self) -> Vec<GgmlType> {
        let mut t: Vec<GgmlType> = self
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].map(|w| w.ty()))
            .chain([self.lm_head.ty()])
            .collect();
        t.dedup();
        t
    }

    /// Projections (seven per layer and the LM head), for [`crate::Decoder::quantized_projections`].
    pub fn projections(&self) -> usize {
        self.layers.len() * 4 + 1
    }

    /// An empty cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> CpuCache {
        let n = self.config.num_layers;
        CpuCache {
            rows: (0..batch).map(|_| RowCache { len: 0, k: vec![Vec::new(); n], v: vec![Vec::new(); n] }).collect(),
            scratch: Scratch::default(),
        }
    }

    /// Runs `tokens` (`[B][T]`; `valid[b][t]` false marks padding, which is skipped) after what `cache`
    /// holds and returns the selected rows, row-major: `Last` gives B rows (a row whose last position is
    /// padding gets zeros), `All`/`Hidden` B·T rows (zeros at padding).
    pub fn forward(
        &self,
        tokens: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut CpuCache,
        output: CpuOutput,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let b = tokens.len();
        let t = tokens.first().map_or(0, Vec::len);
        if b == 0 || t == 0 || b != cache.rows.len() || valid.len() != b {
            return Err(Error::Device(format!(
                "forward: batch {b} x {t} does not match a cache of {} rows",
                cache.rows.len()
            )));
        }
        let (h, nh, nkv, hd) = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
        let (qd, kvd, f) = (nh * hd, nkv * hd, c.intermediate_size);
        let CpuCache { rows, scratch: s } = cache;

        // The tokens to compute: every real one, in row order.
        s.row_of.clear();
        s.pos_of.clear();
        let mut ids = Vec::with_capacity(b * t);
        for r in 0..b {
            if tokens[r].len() != t || valid[r].len() != t {
                return Err(Error::Device(format!("forward: row {r} has {} tokens, expected {t}", tokens[r].len())));
            }
            let mut p = rows[r].len;
            for (j, &id) in tokens[r].iter().enumerate() {
                if id as usize >= c.vocab_size {
                    return Err(Error::Device(format!("token id {id} is outside the vocabulary of {}", c.vocab_size)));
                }
                if valid[r][j] {
                    ids.push(id);
                    s.row_of.push(r);
                    s.pos_of.push(p);
                    p += 1;
                }
            }
            if p > c.max_position_embeddings {
                return Err(Error::Device(format!(
                    "sequence of {p} tokens exceeds the context of {}",
                    c.max_position_embeddings
                )));
            }
        }
        let m = ids.len();
        let out_rows = if output == CpuOutput::Last { b } else { b * t };
        let out_w = if output == CpuOutput::Hidden { h } else { c.vocab_size };
        if m == 0 {
            return Ok(vec![0.0; out_rows * out_w]);
        }
        for v in [&mut s.x, &mut s.xn, &mut s.tmp] {
            v.resize(m * h, 0.0);
        }
        s.q.resize(m * qd, 0.0);
        s.att.resize(m * qd, 0.0);
        s.k.resize(m * kvd, 0.0);
        s.v.resize(m * kvd, 0.0);
        s.gate.resize(m * f, 0.0);
        s.up.resize(m * f, 0.0);
        for (i, &id) in ids.iter().enumerate() {
            self.embed.row_into(id as usize, &mut s.x[i * h..(i + 1) * h]);
        }
        // cos/sin per computed token, shared by every layer (transformers' f32 arithmetic).
        let half = hd / 2;
        s.cos.clear();
        s.sin.clear();
        for &p in &s.pos_of {
            for &fr in &self.inv_freq {
                let a = p as f32 * fr;
                s.cos.push(a.cos());
                s.sin.push(a.sin());
            }
        }
        let max_len = s.row_of.iter().zip(&s.pos_of).map(|(_, &p)| p + 1).max().unwrap_or(1);
        let threads = self.pool.threads();
        // The batch rows with at least GEMM_MIN_ROWS tokens in this pass (their tokens are consecutive):
        // their products go through the panel GEMM and their attention by blocks of up to QUERY_BLOCK
        // tokens ([`attend_block`]); the other rows' tokens one by one (`short`).
        s.long.clear();
        s.blocks.clear();
        s.short.clear();
        let mut i0 = 0;
        for i in 1..=m {
            if i == m || s.row_of[i] != s.row_of[i0] {
                if i - i0 >= GEMM_MIN_ROWS {
                    s.long.push((i0, i));
                    s.blocks.extend((i0..i).step_by(QUERY_BLOCK).map(|b| (b, (b + QUERY_BLOCK).min(i))));
                } else {
                    s.short.extend(i0..i);
                }
                i0 = i;
            }
        }
        let per_thread = if s.blocks.is_empty() { max_len } else { QUERY_BLOCK * max_len };
        debug_assert_eq!(s.short.len() + s.long.iter().map(|(a, b)| b - a).sum::<usize>(), m);
        s.scores.resize(threads * per_thread, 0.0);
        let scale = 1.0 / (hd as f32).sqrt();

        for (li, l) in self.layers.iter().enumerate() {
            rms_norm(&s.x, &l.attn_norm, c.rms_norm_eps, &mut s.xn);
            s.bank.fill(&s.xn, m, h, &[&l.q, &l.k, &l.v])?;
            let bank = &s.bank;
            matmuls(
                &self.pool,
                &[
                    MatJob::new(bank, &l.q, &mut s.q, qd, m, &s.long),
                    MatJob::new(bank, &l.k, &mut s.k, kvd, m, &s.long),
                    MatJob::new(bank, &l.v, &mut s.v, kvd, m, &s.long),
                ],
            );
            if let Some([bq, bk, bv]) = &l.bias {
                for (buf, bias) in [(&mut s.q, bq), (&mut s.k, bk), (&mut s.v, bv)] {
                    for row in buf.chunks_exact_mut(bias.len()) {
                        row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
                    }
                }
            }
            for i in 0..m {
                let (cs, sn) = (&s.cos[i * half..(i + 1) * half], &s.sin[i * half..(i + 1) * half]);
                for head in s.q[i * qd..(i + 1) * qd]
                    .chunks_exact_mut(hd)
                    .chain(s.k[i * kvd..(i + 1) * kvd].chunks_exact_mut(hd))
                {
                    rope(head, cs, sn, self.interleaved);
                }
            }
            // Append this pass's keys and values, then attend: token i sees its row's cache up to itself.
            for i in 0..m {
                let rc = &mut rows[s.row_of[i]];
                rc.k[li].extend_from_slice(&s.k[i * kvd..(i + 1) * kvd]);
                rc.v[li].extend_from_slice(&s.v[i * kvd..(i + 1) * kvd]);
            }
            if !s.blocks.is_empty() {
                // Long rows: blocks of query tokens against the cache as two f32 matrix products per head.
                let (rows, q, pos_of, row_of) = (&*rows, &s.q, &s.pos_of, &s.row_of);
                let (att, sc, blocks) = (OutPtr(s.att.as_mut_ptr()), OutPtr(s.scores.as_mut_ptr()), &s.blocks);
                self.pool.for_each_range(blocks.len() * nh, 1, &|ti, a, b| {
                    for item in a..b {
                        let ((i0, i1), hh) = (blocks[item / nh], item % nh);
                        // SAFETY: each thread owns its QUERY_BLOCK·max_len slice of the score buffer.
                        let scores = unsafe {
                            std::slice::from_raw_parts_mut(sc.at(ti * QUERY_BLOCK * max_len), QUERY_BLOCK * max_len)
                        };
                        let rc = &rows[row_of[i0]];
                        let geo = AttnBlock { qd, kvd, hd, kvh: hh / (nh / nkv), scale };
                        // SAFETY: head hh of tokens i0..i1 is written by this item only, and `att` holds m·qd.
                        let out = unsafe { att.at(i0 * qd + hh * hd) };
                        attend_block(&geo, &q[i0 * qd + hh * hd..], &pos_of[i0..i1], &rc.k[li], &rc.v[li], scores, out);
                    }
                });
            }
            if !s.short.is_empty() {
                // The other tokens (decode, short prompts) one query at a time.
                let (rows, q, row_of, pos_of, short) = (&*rows, &s.q, &s.row_of, &s.pos_of, &s.short);
                let att = OutPtr(s.att.as_mut_ptr());
                let sc = OutPtr(s.scores.as_mut_ptr());
                let rep = nh / nkv;
                self.pool.for_each_range(short.len() * nh, 1, &|ti, a, b| {
                    // SAFETY: each thread owns its `max_len` slice of the score buffer.
                    let scores = unsafe { std::slice::from_raw_parts_mut(sc.at(ti * max_len), max_len) };
                    for item in a..b {
                        let (i, hh) = (short[item / nh], item % nh);
                        let (rc, len) = (&rows[row_of[i]], pos_of[i] + 1);
                        let kvh = hh / rep;
                        let qv = &q[i * qd + hh * hd..i * qd + (hh + 1) * hd];
                        let (keys, vals) = (&rc.k[li], &rc.v[li]);
                        let mut mx = f32::NEG_INFINITY;
                        for (j, sj) in scores[..len].iter_mut().enumerate() {
                            let kv = &keys[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                            *sj = simd::dot(qv, kv) * scale;
                            mx = mx.max(*sj);
                        }
                        let mut sum = 0f32;
                        for sj in &mut scores[..len] {
                            *sj = (*sj - mx).exp();
                            sum += *sj;
                        }
                        let inv = 1.0 / sum;
                        // SAFETY: head hh of token i is written by this item only.
                        let o = unsafe { std::slice::from_raw_parts_mut(att.at(i * qd + hh * hd), hd) };
                        o.fill(0.0);
                        for (j, &p) in scores[..len].iter().enumerate() {
                            let vv = &vals[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                            simd::axpy(o, p * inv, vv);
                        }
                    }
                });
            }
            s.bank.fill(&s.att, m, qd, &[&l.o])?;
            matmuls(&self.pool, &[MatJob::new(&s.bank, &l.o, &mut s.tmp, h, m, &s.long)]);
            s.x.iter_mut().zip(&s.tmp).for_each(|(x, y)| *x += y);

            rms_norm(&s.x, &l.mlp_norm, c.rms_norm_eps, &mut s.xn);
            s.bank.fill(&s.xn, m, h, &[&l.gate, &l.up])?;
            let bank = &s.bank;
            matmuls(
                &self.pool,
                &[
                    MatJob::new(bank, &l.gate, &mut s.gate, f, m, &s.long),
                    MatJob::new(bank, &l.up, &mut s.up, f, m, &s.long),
                ],
            );
            s.gate.iter_mut().zip(&s.up).for_each(|(g, u)| *g = silu(*g) * u);
            s.bank.fill(&s.gate, m, f, &[&l.down])?;
            matmuls(&self.pool, &[MatJob::new(&s.bank, &l.down, &mut s.tmp, h, m, &s.long)]);
            s.x.iter_mut().zip(&s.tmp).for_each(|(x, y)| *x += y);
        }
        for (i, &r) in s.row_of.iter().enumerate() {
            rows[r].len = s.pos_of[i] + 1;
        }

        // Which computed token feeds each output row (None: padding → zeros).
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
        let sel: Vec<usize> = pick.iter().flatten().copied().collect();
        let ms = sel.len();
        let mut xs = vec![0f32; ms * h];
        for (k, &i) in sel.iter().enumerate() {
            xs[k * h..(k + 1) * h].copy_from_slice(&s.x[i * h..(i + 1) * h]);
        }
        let mut normed = vec![0f32; ms * h];
        rms_norm(&xs, &self.norm, c.rms_norm_eps, &mut normed);
        let computed = if output == CpuOutput::Hidden || ms == 0 {
            normed
        } else {
            s.bank.fill(&normed, ms, h, &[&self.lm_head])?;
            let mut logits = vec![0f32; ms * c.vocab_size];
            // Every computed token's logits (`All`): the forward's rows, so the same long ranges.
            let long: &[(usize, usize)] = if ms == m { &s.long } else { &[] };
            matmuls(&self.pool, &[MatJob::new(&s.bank, &self.lm_head, &mut logits, c.vocab_size, ms, long)]);
            logits
        };
        self.pool.rest();
        if ms == out_rows {
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

/// Rotates one head in place: HF's half-split pairs `(i, i + d/2)`, or adjacent pairs `(2i, 2i + 1)`.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
        let (x1, x2) = (x[a], x[b]);
        x[a] = x1 * cos[i] - x2 * sin[i];
        x[b] = x2 * cos[i] + x1 * sin[i];
    }
}
