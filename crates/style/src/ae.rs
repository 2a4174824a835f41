//! The style-transfer autoencoder (spec §3.2) as a burn module: the Annotated Transformer as the reference uses
//! it — pre-norm sublayers `x + f(LN(x))` with the reference's LayerNorm (unbiased std, `(x − μ)/(std + 1e-6)`),
//! sinusoidal positions, one embedding shared by encoder and decoder scaled by √d, ReLU feed-forward — whose
//! latent is the **sum** over non-pad positions of `sigmoid(encoder output)` and whose decoder attends to that one
//! vector only; generator = Linear + log-softmax (not tied). Loads the reference's state-dict names from
//! safetensors. Dropout is not applied here (inference; training adds it).

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use chorus_models::SafetensorsSet;
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
}

impl AeConfig {
    /// Checks the sizes fit together.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |reason: String| Err(Error::Parse { file: file.into(), line: 1, reason });
        if self.num_heads == 0 || !self.d_model.is_multiple_of(self.num_heads) {
            return bad(format!("{} heads do not split d_model {}", self.num_heads, self.d_model));
        }
        if self.vocab_size < 5 || self.num_layers == 0 || self.max_len < 2 || self.d_model < 2 {
            return bad(format!("sizes out of range: {self:?}"));
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
    fn forward(&self, x: Tensor<3>, mem: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [b, tq, d] = x.dims();
        let tk = mem.dims()[1];
        let dk = d / self.heads;
        let q = self.q.forward(x).reshape([b, tq, self.heads, dk]).swap_dims(1, 2);
        let k = self.k.forward(mem.clone()).reshape([b, tk, self.heads, dk]).swap_dims(1, 2);
        let v = self.v.forward(mem).reshape([b, tk, self.heads, dk]).swap_dims(1, 2);
        let s = q.matmul(k.swap_dims(2, 3)) / (dk as f64).sqrt() + bias;
        let a = activation::softmax(s, 3).matmul(v).swap_dims(1, 2).reshape([b, tq, d]);
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
    #[module(skip)]
    cfg: AeConfig,
}

fn ff(f: &Ff, x: Tensor<3>) -> Tensor<3> {
    f.w2.forward(activation::relu(f.w1.forward(x)))
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

struct Reader<'a> {
    set: &'a SafetensorsSet,
    file: String,
    dev: Device,
}

impl Reader<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (v, s) = self
            .set
            .get(name)
            .map_err(|e| Error::Io { path: self.file.clone(), reason: e.to_string() })?
            .ok_or_else(|| Error::Io { path: self.file.clone(), reason: format!("no tensor {name}") })?;
        if s != shape {
            return Err(Error::Io {
                path: self.file.clone(),
                reason: format!("{name} has shape {s:?}, expected {shape:?}"),
            });
        }
        Ok(v)
    }

    fn linear(&self, p: &str, out: usize, inp: usize) -> Result<Linear> {
        let w = Tensor::<2>::from_data(
            TensorData::new(self.get(&format!("{p}.weight"), &[out, inp])?, [out, inp]),
            &self.dev,
        );
        let b = Tensor::<1>::from_data(TensorData::new(self.get(&format!("{p}.bias"), &[out])?, [out]), &self.dev);
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
            cfg: cfg.clone(),
        })
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
        self.embed.forward(ids) * (d as f64).sqrt() + pe.unsqueeze::<3>().expand([b, t, d])
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
            x = x + l.attn.forward(y.clone(), y, bias.clone());
            x = x.clone() + ff(&l.ff, l.n1.forward(x));
        }
        let x = activation::sigmoid(self.enc_norm.forward(x));
        (x * keep.reshape([b, t, 1])).sum_dim(1).reshape([b, self.cfg.d_model])
    }

    /// Log-probabilities `[B, T, V]` of the next word at each position of `tgt` (`BOS` + words) given latents
    /// `[B, d]`. `pad_mask`: mask padding keys too (teacher forcing); greedy decoding masks only the future.
    pub fn decode(&self, z: Tensor<2>, tgt: Tensor<2, Int>, pad_mask: bool) -> Tensor<3> {
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
            x = x + l.self_attn.forward(y.clone(), y, bias.clone());
            x = x.clone() + l.src_attn.forward(l.n1.forward(x), mem.clone(), src_bias.clone());
            x = x.clone() + ff(&l.ff, l.n2.forward(x));
        }
        activation::log_softmax(self.generator.forward(self.dec_norm.forward(x)), 2)
    }

    /// The reference's greedy decoding: `max_len − 1` steps from `BOS`, no early stop; the ids after `BOS`
    /// (cut them at the first `EOS`/`PAD` with [`crate::vocab::Vocab::decode`]).
    pub fn greedy(&self, z: Tensor<2>) -> Vec<Vec<u32>> {
        let b = z.dims()[0];
        let dev = z.device();
        let mut ys: Vec<Vec<i64>> = vec![vec![i64::from(BOS)]; b];
        for _ in 0..self.cfg.max_len - 1 {
            let t = ys[0].len();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ys.concat(), [b, t]), &dev);
            let lp = self.decode(z.clone(), ids, false);
            let v = self.cfg.vocab_size;
            let last = lp.slice([0..b, t - 1..t, 0..v]).reshape([b, v]).argmax(1).reshape([b]);
            let next = last.into_data().convert::<i64>().try_into_vec::<i64>().unwrap_or_default();
            for (row, n) in ys.iter_mut().zip(next) {
                row.push(n);
            }
        }
        ys.into_iter().map(|r| r[1..].iter().map(|&x| x as u32).collect()).collect()
    }
}
