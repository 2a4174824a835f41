//! The style-transfer autoencoder (spec §3.2) as a burn module: the Annotated Transformer as the reference uses
//! it — pre-norm sublayers `x + f(LN(x))` with the reference's LayerNorm (unbiased std, `(x − μ)/(std + 1e-6)`),
//! sinusoidal positions, one embedding shared by encoder and decoder scaled by √d, ReLU feed-forward — whose
//! latent is the **sum** over non-pad positions of `sigmoid(encoder output)` and whose decoder attends to that one
//! vector only; generator = Linear + log-softmax (not tied). Loads the reference's state-dict names from
//! safetensors, builds a fresh one (Xavier-uniform matrices, as the reference) and lists its tensors in those
//! names for saving. Dropout sits where the Annotated Transformer puts it (embeddings, each sublayer's output,
//! attention weights, the feed-forward hidden layer) and is active only on an autodiff device in training mode.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use chorus_models::SafetensorsSet;
use chorus_models::export::Named;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vocab::{BOS, PAD};

/// Additive score of a masked key (the reference's `masked_fill(mask == 0, -1e9)`).
const MASKED: f32 = -1.0e9;

/// Sizes (the reference: V from the vocabulary, d 256, 4 heads, d_ff 1024, 2 + 2 layers, 60 tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AeConfig {
    /// Vocabulary rows.
    pub vocab_size: usize,
    /// Width (also the latent's).
    pub d_model: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder layers (= decoder layers).
    pub num_layers: usize,
    /// Longest sentence in tokens; greedy decoding emits `max_len − 1` ids.
    pub max_len: usize,
    /// Dropout probability in training (0.1).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
}

fn default_dropout() -> f64 {
    0.1
}

impl AeConfig {
    /// Checks the sizes fit together.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |reason: String| Err(chorus_core::FileError::Parse { file: file.into(), line: 1, reason }.into());
        if self.num_heads == 0 || !self.d_model.is_multiple_of(self.num_heads) {
            return bad(format!("{} heads do not split d_model {}", self.num_heads, self.d_model));
        }
        if self.vocab_size < 5 || self.num_layers == 0 || self.max_len < 2 || self.d_model < 2 {
            return bad(format!("sizes out of range: {self:?}"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// The reference's LayerNorm: `a ⊙ (x − μ) / (σ_unbiased + ε) + b`, ε = 1e-6.
#[derive(Module, Debug)]
pub struct Norm {
    a: Param<Tensor<1>>,
    b: Param<Tensor<1>>,
}

impl Norm {
    fn new(d: usize, dev: &Device) -> Self {
        Self { a: Param::from_tensor(Tensor::ones([d], dev)), b: Param::from_tensor(Tensor::zeros([d], dev)) }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let d = x.dims()[2];
        let c = x.clone() - x.mean_dim(2);
        let std = (c.clone().powi_scalar(2).sum_dim(2) / (d as f64 - 1.0)).sqrt();
        c / (std + 1e-6) * self.a.val().unsqueeze::<3>() + self.b.val().unsqueeze::<3>()
    }
}

/// Multi-head attention with biased projections, scores scaled by 1/√d_k.
#[derive(Module, Debug)]
pub struct Mha {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

impl Mha {
    fn forward(&self, x: Tensor<3>, mem: Tensor<3>, bias: Tensor<4>, drop: &Dropout) -> Tensor<3> {
        let [b, tq, d] = x.dims();
        let tk = mem.dims()[1];
        let dk = d / self.heads;
        let q = self.q.forward(x).reshape([b, tq, self.heads, dk]).swap_dims(1, 2);
        let k = self.k.forward(mem.clone()).reshape([b, tk, self.heads, dk]).swap_dims(1, 2);
        let v = self.v.forward(mem).reshape([b, tk, self.heads, dk]).swap_dims(1, 2);
        let s = q.matmul(k.swap_dims(2, 3)) / (dk as f64).sqrt() + bias;
        let a = drop.forward(activation::softmax(s, 3)).matmul(v).swap_dims(1, 2).reshape([b, tq, d]);
        self.o.forward(a)
    }
}

/// Position-wise feed-forward `w_2(relu(w_1 x))`.
#[derive(Module, Debug)]
pub struct Ff {
    w1: Linear,
    w2: Linear,
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct EncLayer {
    attn: Mha,
    ff: Ff,
    n0: Norm,
    n1: Norm,
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct DecLayer {
    self_attn: Mha,
    src_attn: Mha,
    ff: Ff,
    n0: Norm,
    n1: Norm,
    n2: Norm,
}

/// The autoencoder.
#[derive(Module, Debug)]
pub struct Autoencoder {
    embed: Embedding,
    enc: Vec<EncLayer>,
    enc_norm: Norm,
    dec: Vec<DecLayer>,
    dec_norm: Norm,
    generator: Linear,
    drop: Dropout,
    #[module(skip)]
    cfg: AeConfig,
}

fn ff(f: &Ff, x: Tensor<3>, drop: &Dropout) -> Tensor<3> {
    f.w2.forward(drop.forward(activation::relu(f.w1.forward(x))))
}

/// A Linear with a Xavier-uniform weight and PyTorch's default bias, uniform in ±1/√fan_in.
fn xavier(inp: usize, out: usize, dev: &Device) -> Linear {
    let mut l = LinearConfig::new(inp, out).with_initializer(Initializer::XavierUniform { gain: 1.0 }).init(dev);
    let r = 1.0 / (inp as f64).sqrt();
    l.bias = Some(Initializer::Uniform { min: -r, max: r }.init([out], dev));
    l
}

fn mha_new(d: usize, heads: usize, dev: &Device) -> Mha {
    Mha { q: xavier(d, d, dev), k: xavier(d, d, dev), v: xavier(d, d, dev), o: xavier(d, d, dev), heads }
}

fn ff_new(d: usize, f: usize, dev: &Device) -> Ff {
    Ff { w1: xavier(d, f, dev), w2: xavier(f, d, dev) }
}

pub(crate) fn push_linear(out: &mut Vec<Named>, p: &str, l: &Linear) {
    let w = l.weight.val().transpose();
    let [o, i] = w.dims();
    out.push((format!("{p}.weight"), vec![o, i], w));
    if let Some(b) = &l.bias {
        out.push((format!("{p}.bias"), vec![o], b.val().reshape([1, o])));
    }
}

fn push_norm(out: &mut Vec<Named>, p: &str, n: &Norm) {
    let d = n.a.dims()[0];
    out.push((format!("{p}.a_2"), vec![d], n.a.val().reshape([1, d])));
    out.push((format!("{p}.b_2"), vec![d], n.b.val().reshape([1, d])));
}

fn push_mha(out: &mut Vec<Named>, p: &str, m: &Mha) {
    for (k, l) in [&m.q, &m.k, &m.v, &m.o].into_iter().enumerate() {
        push_linear(out, &format!("{p}.linears.{k}"), l);
    }
}

/// The reference's sinusoidal table `[n, d]`.
pub fn positions(n: usize, d: usize) -> Vec<f32> {
    let mut pe = vec![0f32; n * d];
    for p in 0..n {
        for i in (0..d).step_by(2) {
            let div = ((i as f32) * -(10000f32.ln() / d as f32)).exp();
            let a = p as f32 * div;
            pe[p * d + i] = a.sin();
            if i + 1 < d {
                pe[p * d + i + 1] = a.cos();
            }
        }
    }
    pe
}

/// Reads named tensors of a safetensors set with shape checks (errors name the file and tensor).
pub(crate) struct Reader<'a> {
    pub(crate) set: &'a SafetensorsSet,
    pub(crate) file: String,
    pub(crate) dev: Device,
}

impl Reader<'_> {
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (v, s) = self
            .set
            .get(name)
            .map_err(|e| chorus_core::FileError::Io { path: self.file.clone(), reason: e.to_string() })?
            .ok_or_else(|| chorus_core::FileError::Io {
                path: self.file.clone(),
                reason: format!("no tensor {name}"),
            })?;
        if s != shape {
            return Err(chorus_core::FileError::Io {
                path: self.file.clone(),
                reason: format!("{name} has shape {s:?}, expected {shape:?}"),
            }
            .into());
        }
        Ok(v)
    }

    pub(crate) fn vector(&self, name: &str, d: usize) -> Result<Tensor<1>> {
        Ok(Tensor::from_data(TensorData::new(self.get(name, &[d])?, [d]), &self.dev))
    }

    pub(crate) fn linear(&self, p: &str, out: usize, inp: usize) -> Result<Linear> {
        let w = Tensor::<2>::from_data(
            TensorData::new(self.get(&format!("{p}.weight"), &[out, inp])?, [out, inp]),
            &self.dev,
        );
        let b = self.vector(&format!("{p}.bias"), out)?;
        Ok(Linear { weight: Param::from_tensor(w.transpose()), bias: Some(Param::from_tensor(b)) })
    }

    fn norm(&self, p: &str, d: usize) -> Result<Norm> {
        let v = |n: &str| -> Result<Param<Tensor<1>>> {
            Ok(Param::from_tensor(Tensor::from_data(
                TensorData::new(self.get(&format!("{p}.{n}"), &[d])?, [d]),
                &self.dev,
            )))
        };
        Ok(Norm { a: v("a_2")?, b: v("b_2")? })
    }

    fn mha(&self, p: &str, d: usize, heads: usize) -> Result<Mha> {
        let l = |k: usize| self.linear(&format!("{p}.linears.{k}"), d, d);
        Ok(Mha { q: l(0)?, k: l(1)?, v: l(2)?, o: l(3)?, heads })
    }

    fn ff(&self, p: &str, d: usize, f: usize) -> Result<Ff> {
        Ok(Ff { w1: self.linear(&format!("{p}.w_1"), f, d)?, w2: self.linear(&format!("{p}.w_2"), d, f)? })
    }
}

impl Autoencoder {
    /// Loads the reference's names (`encoder.layers.{i}.self_attn.linears.{k}`, `…sublayer.{k}.norm.a_2`,
    /// `src_embed.0.lut.weight`, `generator.proj`, …) from a safetensors set.
    pub fn load(set: &SafetensorsSet, file: &str, cfg: &AeConfig, dev: &Device) -> Result<Self> {
        cfg.validate(file)?;
        let r = Reader { set, file: file.into(), dev: dev.clone() };
        let (d, h, f, v) = (cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.vocab_size);
        let lut = r.get("src_embed.0.lut.weight", &[v, d])?;
        let embed = Embedding { weight: Param::from_tensor(Tensor::from_data(TensorData::new(lut, [v, d]), dev)) };
        let enc = (0..cfg.num_layers)
            .map(|i| {
                let p = format!("encoder.layers.{i}");
                Ok(EncLayer {
                    attn: r.mha(&format!("{p}.self_attn"), d, h)?,
                    ff: r.ff(&format!("{p}.feed_forward"), d, f)?,
                    n0: r.norm(&format!("{p}.sublayer.0.norm"), d)?,
                    n1: r.norm(&format!("{p}.sublayer.1.norm"), d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let dec = (0..cfg.num_layers)
            .map(|i| {
                let p = format!("decoder.layers.{i}");
                Ok(DecLayer {
                    self_attn: r.mha(&format!("{p}.self_attn"), d, h)?,
                    src_attn: r.mha(&format!("{p}.src_attn"), d, h)?,
                    ff: r.ff(&format!("{p}.feed_forward"), d, f)?,
                    n0: r.norm(&format!("{p}.sublayer.0.norm"), d)?,
                    n1: r.norm(&format!("{p}.sublayer.1.norm"), d)?,
                    n2: r.norm(&format!("{p}.sublayer.2.norm"), d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed,
            enc,
            enc_norm: r.norm("encoder.norm", d)?,
            dec,
            dec_norm: r.norm("decoder.norm", d)?,
            generator: r.linear("generator.proj", v, d)?,
            drop: DropoutConfig::new(cfg.dropout).init(),
            cfg: cfg.clone(),
        })
    }

    /// A fresh autoencoder: Xavier-uniform matrices (the embedding too), PyTorch's default biases, unit norms.
    /// Draws from the device's generator: seed the device first for a reproducible model.
    pub fn new(cfg: &AeConfig, dev: &Device) -> Result<Self> {
        cfg.validate("autoencoder config")?;
        let (d, h, f, v) = (cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.vocab_size);
        let embed =
            Embedding { weight: Initializer::XavierUniform { gain: 1.0 }.init_with([v, d], Some(d), Some(v), dev) };
        let enc = (0..cfg.num_layers)
            .map(|_| EncLayer {
                attn: mha_new(d, h, dev),
                ff: ff_new(d, f, dev),
                n0: Norm::new(d, dev),
                n1: Norm::new(d, dev),
            })
            .collect();
        let dec = (0..cfg.num_layers)
            .map(|_| DecLayer {
                self_attn: mha_new(d, h, dev),
                src_attn: mha_new(d, h, dev),
                ff: ff_new(d, f, dev),
                n0: Norm::new(d, dev),
                n1: Norm::new(d, dev),
                n2: Norm::new(d, dev),
            })
            .collect();
        Ok(Self {
            embed,
            enc,
            enc_norm: Norm::new(d, dev),
            dec,
            dec_norm: Norm::new(d, dev),
            generator: xavier(d, v, dev),
            drop: DropoutConfig::new(cfg.dropout).init(),
            cfg: cfg.clone(),
        })
    }

    /// Every tensor under the reference's names (the ones [`Self::load`] reads). The shared embedding is stored
    /// once, as `src_embed.0.lut.weight` (the reference's state dict repeats it as `tgt_embed.0.lut.weight`).
    pub fn tensors(&self) -> Vec<Named> {
        let mut out = Vec::new();
        let [v, d] = self.embed.weight.dims();
        out.push(("src_embed.0.lut.weight".into(), vec![v, d], self.embed.weight.val()));
        for (i, l) in self.enc.iter().enumerate() {
            let p = format!("encoder.layers.{i}");
            push_mha(&mut out, &format!("{p}.self_attn"), &l.attn);
            push_linear(&mut out, &format!("{p}.feed_forward.w_1"), &l.ff.w1);
            push_linear(&mut out, &format!("{p}.feed_forward.w_2"), &l.ff.w2);
            push_norm(&mut out, &format!("{p}.sublayer.0.norm"), &l.n0);
            push_norm(&mut out, &format!("{p}.sublayer.1.norm"), &l.n1);
        }
        push_norm(&mut out, "encoder.norm", &self.enc_norm);
        for (i, l) in self.dec.iter().enumerate() {
            let p = format!("decoder.layers.{i}");
            push_mha(&mut out, &format!("{p}.self_attn"), &l.self_attn);
            push_mha(&mut out, &format!("{p}.src_attn"), &l.src_attn);
            push_linear(&mut out, &format!("{p}.feed_forward.w_1"), &l.ff.w1);
            push_linear(&mut out, &format!("{p}.feed_forward.w_2"), &l.ff.w2);
            push_norm(&mut out, &format!("{p}.sublayer.0.norm"), &l.n0);
            push_norm(&mut out, &format!("{p}.sublayer.1.norm"), &l.n1);
            push_norm(&mut out, &format!("{p}.sublayer.2.norm"), &l.n2);
        }
        push_norm(&mut out, "decoder.norm", &self.dec_norm);
        push_linear(&mut out, "generator.proj", &self.generator);
        out
    }

    /// The configuration.
    pub fn config(&self) -> &AeConfig {
        &self.cfg
    }

    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let d = self.cfg.d_model;
        let dev = ids.device();
        let pe = Tensor::<2>::from_data(TensorData::new(positions(t, d), [t, d]), &dev);
        self.drop.forward(self.embed.forward(ids) * (d as f64).sqrt() + pe.unsqueeze::<3>().expand([b, t, d]))
    }

    /// The latent `[B, d]` of source ids `[B, T]` (no BOS/EOS; `PAD` = 0 pads): Σ over non-pad positions of
    /// sigmoid(encoder output).
    pub fn latent(&self, src: Tensor<2, Int>) -> Tensor<2> {
        let [b, t] = src.dims();
        let keep = src.clone().not_equal_elem(PAD as i64).float(); // [B, T]
        let bias = ((keep.clone().neg() + 1.0) * MASKED).reshape([b, 1, 1, t]);
        let mut x = self.embed(src);
        for l in &self.enc {
            let y = l.n0.forward(x.clone());
            x = x + self.drop.forward(l.attn.forward(y.clone(), y, bias.clone(), &self.drop));
            x = x.clone() + self.drop.forward(ff(&l.ff, l.n1.forward(x), &self.drop));
        }
        let x = activation::sigmoid(self.enc_norm.forward(x));
        (x * keep.reshape([b, t, 1])).sum_dim(1).reshape([b, self.cfg.d_model])
    }

    /// Log-probabilities `[B, T, V]` of the next word at each position of `tgt` (`BOS` + words) given latents
    /// `[B, d]`. `pad_mask`: mask padding keys too (teacher forcing); greedy decoding masks only the future.
    pub fn decode(&self, z: Tensor<2>, tgt: Tensor<2, Int>, pad_mask: bool) -> Tensor<3> {
        activation::log_softmax(self.generator.forward(self.hidden(z, tgt, pad_mask)), 2)
    }

    /// The decoder's final normalised states `[B, T, d]` (before the generator).
    fn hidden(&self, z: Tensor<2>, tgt: Tensor<2, Int>, pad_mask: bool) -> Tensor<3> {
        let [b, t] = tgt.dims();
        let d = self.cfg.d_model;
        let dev = tgt.device();
        let future: Vec<f32> = (0..t * t).map(|k| if k % t > k / t { MASKED } else { 0.0 }).collect();
        let mut bias =
            Tensor::<2>::from_data(TensorData::new(future, [t, t]), &dev).reshape([1, 1, t, t]).expand([b, 1, t, t]);
        if pad_mask {
            let pad = tgt.clone().equal_elem(PAD as i64).float() * MASKED;
            bias = bias + pad.reshape([b, 1, 1, t]);
        }
        let mem = z.reshape([b, 1, d]);
        let src_bias = Tensor::<4>::zeros([b, 1, 1, 1], &dev);
        let mut x = self.embed(tgt);
        for l in &self.dec {
            let y = l.n0.forward(x.clone());
            x = x + self.drop.forward(l.self_attn.forward(y.clone(), y, bias.clone(), &self.drop));
            let y = l.n1.forward(x.clone());
            x = x + self.drop.forward(l.src_attn.forward(y, mem.clone(), src_bias.clone(), &self.drop));
            x = x.clone() + self.drop.forward(ff(&l.ff, l.n2.forward(x), &self.drop));
        }
        self.dec_norm.forward(x)
    }

    /// The reference's greedy decoding: `max_len − 1` steps from `BOS`, no early stop; the ids after `BOS`
    /// (cut them at the first `EOS`/`PAD` with [`crate::vocab::Vocab::decode`]). With `early_stop` the loop
    /// ends once every row holds an `EOS` or `PAD`: the text up to that id is the same, only the ids after it
    /// are not produced. Only the last position goes through the generator (the argmax of log-softmax is the
    /// argmax of the logits).
    pub fn greedy(&self, z: Tensor<2>, early_stop: bool) -> Result<Vec<Vec<u32>>> {
        let b = z.dims()[0];
        let dev = z.device();
        let d = self.cfg.d_model;
        let mut ys: Vec<Vec<i64>> = vec![vec![i64::from(BOS)]; b];
        let mut done = vec![false; b];
        for _ in 0..self.cfg.max_len - 1 {
            let t = ys[0].len();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ys.concat(), [b, t]), &dev);
            let h = self.hidden(z.clone(), ids, false).slice([0..b, t - 1..t, 0..d]).reshape([b, d]);
            let last = self.generator.forward(h).argmax(1).reshape([b]);
            let next =
                last.into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| Error::Device(format!("{e:?}")))?;
            for ((row, n), fin) in ys.iter_mut().zip(next).zip(done.iter_mut()) {
                row.push(n);
                *fin |= n == i64::from(crate::vocab::EOS) || n == i64::from(PAD);
            }
            if early_stop && done.iter().all(|&x| x) {
                break;
            }
        }
        Ok(ys.into_iter().map(|r| r[1..].iter().map(|&x| x as u32).collect()).collect())
    }
}
