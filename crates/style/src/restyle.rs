//! A trained style-transfer model (autoencoder + style net + vocabulary + an anchor pool per style) and the
//! gradient-guided latent editing of spec §3.5: Adam on the latent only, ascending the `--not_nll` objective
//! (towards the target style's anchors, away from the source style's), a greedy decode after every step, a
//! change counted when the text differs from the previous one, a stop after `max_change` changes, and the
//! output = the text at change `pick` (the reference's `--pos_c/--neg_c 2`), else the last change before it,
//! else the reconstruction. Sentences are edited as one batch: Adam is element-wise and the objective is a sum
//! of per-row terms with the networks frozen (BatchNorm on running statistics), so each row follows exactly the
//! path it would alone; a stopped row is no longer updated or decoded.
//!
//! Anchors ([INF]; the reference read 10 + 10 per test sentence from files built offline, perhaps by SBERT
//! retrieval): by default the `same`/`other` pool sentences nearest to the input's latent (cosine), or a seeded
//! random draw. Input words outside the vocabulary read as `<unk>` and are reported; empty or over-long input
//! is an error naming the limit.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_core::sampling::Rng;
use chorus_models::SafetensorsSet;
use chorus_models::bytes::FileBytes;
use serde::{Deserialize, Serialize};

use crate::ae::{AeConfig, Autoencoder};
use crate::data::{Style, words};
use crate::error::{Error, Result, host_f32};
use crate::siamese::{SiameseConfig, StyleNet, cosine_rows_all, edit_objective};
use crate::train::{batch_ids, latents};
use crate::vocab::Vocab;

/// Version of `restyle.json`.
pub const FORMAT: u32 = 1;

/// Sentences the anchors are chosen from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Pool {
    /// Negative sentences (words joined by spaces).
    pub negative: Vec<String>,
    /// Positive sentences.
    pub positive: Vec<String>,
}

/// `restyle.json`: everything but the weights and the vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// [`FORMAT`].
    pub format: u32,
    /// Autoencoder sizes.
    pub ae: AeConfig,
    /// Style-net sizes.
    pub net: SiameseConfig,
    /// Anchor pool.
    pub pool: Pool,
    /// How the model was trained (settings, per-epoch losses, timings).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// How anchors are picked for each input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anchors {
    /// The pool sentences nearest to the input's latent.
    Nearest,
    /// A seeded random draw from the pool.
    Random,
}

/// Editing settings (the reference's README command by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditConfig {
    /// Adam learning rate on the latent (0.2).
    pub lr: f64,
    /// Most iterations (18).
    pub max_iter: usize,
    /// Stop after this many changes (7).
    pub max_change: usize,
    /// Output the text at this change, 0-based (2).
    pub pick: usize,
    /// Temperature τ (0.1).
    pub tau: f64,
    /// Source-style anchors (10).
    pub same: usize,
    /// Target-style anchors (10).
    pub other: usize,
    /// Anchor choice.
    pub anchors: Anchors,
    /// Seed of random anchors.
    pub seed: u64,
}

impl Default for EditConfig {
    fn default() -> Self {
        Self {
            lr: 0.2,
            max_iter: 18,
            max_change: 7,
            pick: 2,
            tau: 0.1,
            same: 10,
            other: 10,
            anchors: Anchors::Nearest,
            seed: 7,
        }
    }
}

/// One iteration of one sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// 0-based iteration.
    pub iteration: usize,
    /// The objective J before the step.
    pub objective: f32,
    /// The decoded text after the step.
    pub text: String,
    /// Whether it differs from the text before the step.
    pub changed: bool,
}

/// The result for one sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// The input as the model read it (lower-cased words, unknown ones as `<unk>`).
    pub source: String,
    /// Its style.
    pub from: Style,
    /// The target style.
    pub to: Style,
    /// Input words outside the vocabulary.
    pub unknown: Vec<String>,
    /// The autoencoder's reconstruction (the decode before any step).
    pub reconstruction: String,
    /// Texts at each change, in order.
    pub changes: Vec<String>,
    /// The chosen output.
    pub output: String,
    /// Every iteration.
    pub trace: Vec<Step>,
}

/// An input sentence ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Word ids (no BOS/EOS).
    pub ids: Vec<u32>,
    /// Words outside the vocabulary (read as `<unk>`).
    pub unknown: Vec<String>,
}

/// A trained model on a device (inference mode).
#[derive(Debug)]
pub struct Restyler {
    /// The autoencoder.
    pub ae: Autoencoder,
    /// f and g.
    pub net: StyleNet,
    /// Words.
    pub vocab: Vocab,
    /// The rest.
    pub meta: Meta,
    pool_lat: [Tensor<2>; 2],
    dev: Device,
}

/// Files of the default model trained on Rotten Tomatoes (`chorus restyle train --default`), shipped in the
/// binary (f16 weights).
pub mod embedded {
    /// `model.safetensors`.
    pub const WEIGHTS: &[u8] = include_bytes!("../assets/rt/model.safetensors");
    /// `vocab.txt`.
    pub const VOCAB: &str = include_str!("../assets/rt/vocab.txt");
    /// `restyle.json`.
    pub const META: &str = include_str!("../assets/rt/restyle.json");
}

impl Restyler {
    /// Puts trained parts together (moved to `dev` in inference mode); the pool's latents are computed here.
    pub fn from_parts(ae: Autoencoder, net: StyleNet, vocab: Vocab, meta: Meta, dev: &Device) -> Result<Self> {
        let dev = dev.clone().inner();
        let ae = ae.valid().to_device(&dev);
        let net = net.valid().to_device(&dev);
        let mut pool_lat = Vec::with_capacity(2);
        for (name, sents) in [("negative", &meta.pool.negative), ("positive", &meta.pool.positive)] {
            if sents.is_empty() {
                return Err(Error::Input(format!("restyle.json: the {name} anchor pool is empty")));
            }
            let rows: Vec<Vec<u32>> = sents.iter().map(|s| vocab.encode(&words(s)).0).collect();
            if let Some(i) = rows.iter().position(Vec::is_empty) {
                return Err(Error::Input(format!("restyle.json: pool.{name}[{i}] has no words")));
            }
            pool_lat.push(latents(&ae, &rows, 256, &dev));
        }
        let [neg, pos]: [Tensor<2>; 2] = pool_lat.try_into().map_err(|_| Error::Input("pool".into()))?;
        Ok(Self { ae, net, vocab, meta, pool_lat: [neg, pos], dev })
    }

    /// Reads a model from its three files' contents (`name` labels errors).
    pub fn from_bytes(name: &str, weights: FileBytes, vocab: &str, meta: &str, dev: &Device) -> Result<Self> {
        let meta: Meta = serde_json::from_str(meta).map_err(|e| chorus_core::FileError::Parse {
            file: format!("{name}/restyle.json"),
            line: e.line(),
            reason: e.to_string(),
        })?;
        if meta.format != FORMAT {
            return Err(Error::Input(format!(
                "{name}/restyle.json: format {} (this build reads {FORMAT})",
                meta.format
            )));
        }
        let vocab = Vocab::parse(&format!("{name}/vocab.txt"), vocab)?;
        if vocab.len() != meta.ae.vocab_size {
            return Err(Error::Input(format!(
                "{name}: vocab.txt has {} words but restyle.json says ae.vocab_size {}",
                vocab.len(),
                meta.ae.vocab_size
            )));
        }
        let file = format!("{name}/model.safetensors");
        let set = SafetensorsSet::from_shards(vec![(file.clone(), weights)])
            .map_err(|e| chorus_core::FileError::Io { path: file.clone(), reason: e.to_string() })?;
        let plain = dev.clone().inner();
        let ae = Autoencoder::load(&set, &file, &meta.ae, &plain)?;
        let net = StyleNet::load(&set, &file, &meta.net, &plain)?;
        Self::from_parts(ae, net, vocab, meta, &plain)
    }

    /// The default model shipped in the binary.
    pub fn embedded(dev: &Device) -> Result<Self> {
        Self::from_bytes("<embedded>", FileBytes::from_static(embedded::WEIGHTS), embedded::VOCAB, embedded::META, dev)
    }

    /// Reads `model.safetensors`, `vocab.txt` and `restyle.json` from a folder.
    #[cfg(not(target_family = "wasm"))]
    pub fn open(dir: &std::path::Path, dev: &Device) -> Result<Self> {
        let read = |n: &str| {
            std::fs::read_to_string(dir.join(n)).map_err(|e| chorus_core::FileError::Io {
                path: dir.join(n).display().to_string(),
                reason: e.to_string(),
            })
        };
        let st = dir.join("model.safetensors");
        let weights = FileBytes::open(&st)
            .map_err(|e| chorus_core::FileError::Io { path: st.display().to_string(), reason: e.to_string() })?;
        Self::from_bytes(&dir.display().to_string(), weights, &read("vocab.txt")?, &read("restyle.json")?, dev)
    }

    /// Writes the folder `dir` with its three files as one unit (an existing non-empty `dir` is replaced only
    /// with `force`); `half` stores f16 weights.
    #[cfg(not(target_family = "wasm"))]
    pub fn save(&self, dir: &std::path::Path, half: bool, force: bool) -> Result<()> {
        let mut tensors = self.ae.tensors();
        tensors.extend(self.net.tensors());
        let meta = serde_json::to_string_pretty(&self.meta).map_err(|e| Error::Input(e.to_string()))?;
        let io = |reason: String| Error::from(chorus_core::FileError::Io { path: dir.display().to_string(), reason });
        let vocab = self.vocab.to_text();
        let files: [(&str, &[u8]); 2] = [("vocab.txt", vocab.as_bytes()), ("restyle.json", meta.as_bytes())];
        if half {
            let st = chorus_models::export::safetensors_bytes_f16(tensors, "model.safetensors")
                .map_err(|e| io(e.to_string()))?;
            let all: Vec<(&str, &[u8])> = std::iter::once(("model.safetensors", st.as_slice())).chain(files).collect();
            chorus_models::export::write_files(dir, &all, force).map_err(|e| io(e.to_string()))
        } else {
            chorus_models::export::write_model_dir(dir, tensors, &files, force).map_err(|e| io(e.to_string()))
        }
    }

    /// The device the model is on.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Reads a sentence: words lower-cased and split as the corpus was; unknown words become `<unk>` (and are
    /// listed). Empty input, or more words than the model reads (`max_len − 1`), is an error.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let w = words(text);
        if w.is_empty() {
            return Err(Error::Input("the sentence is empty: there is no word to restyle".into()));
        }
        let max = self.meta.ae.max_len - 1;
        if w.len() > max {
            return Err(Error::Input(format!("the sentence has {} words; this model reads at most {max}", w.len())));
        }
        let (ids, _) = self.vocab.encode(&w);
        let unknown = w.iter().zip(&ids).filter(|(_, i)| **i == crate::vocab::UNK).map(|(w, _)| w.clone()).collect();
        Ok(Encoded { ids, unknown })
    }

    /// Decoded text of ids.
    pub fn text(&self, ids: &[u32]) -> String {
        self.vocab.decode(ids).join(" ")
    }

    fn decode_rows(&self, z: &[f32], rows: usize) -> Result<Vec<String>> {
        let d = self.meta.ae.d_model;
        let t = Tensor::<2>::from_data(TensorData::new(z.to_vec(), [rows, d]), &self.dev);
        Ok(self.ae.greedy(t, true)?.iter().map(|r| self.text(r)).collect())
    }

    /// `k` anchor latents per row `[B, k, d]`, row i drawn from the pool of `styles[i]`: the nearest to its latent
    /// (one similarity matrix per pool for the whole batch) or a seeded random draw.
    fn anchors(&self, z: &Tensor<2>, styles: &[Style], k: usize, how: Anchors, rng: &mut Rng) -> Result<Tensor<3>> {
        let [pool0, pool1] = &self.pool_lat;
        let n = [pool0.dims()[0], pool1.dims()[0]];
        let d = self.meta.ae.d_model;
        let sims = match how {
            Anchors::Random => None,
            Anchors::Nearest => Some([
                host_f32(cosine_rows_all(z.clone(), pool0.clone()))?,
                host_f32(cosine_rows_all(z.clone(), pool1.clone()))?,
            ]),
        };
        let mut idx: Vec<i64> = Vec::with_capacity(styles.len() * k);
        for (i, s) in styles.iter().enumerate() {
            let l = s.label();
            // Rows of the second pool follow the first in the concatenated table.
            let off = if l == 1 { n[0] } else { 0 };
            match &sims {
                None => idx.extend((0..k).map(|_| (off + (rng.next_u64() % n[l] as u64) as usize) as i64)),
                Some(v) => {
                    let row = &v[l][i * n[l]..(i + 1) * n[l]];
                    let mut o: Vec<usize> = (0..n[l]).collect();
                    o.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                    idx.extend((0..k).map(|j| (off + o[j % n[l]]) as i64));
                }
            }
        }
        let all = Tensor::cat(vec![pool0.clone(), pool1.clone()], 0);
        let it = Tensor::<1, Int>::from_data(TensorData::new(idx, [styles.len() * k]), &self.dev);
        Ok(all.select(0, it).reshape([styles.len(), k, d]))
    }

    /// Edits each input towards `to` (its source style is the other one). `inputs` come from
    /// [`Self::encode`]. `progress` is told each finished iteration.
    pub fn restyle(
        &self,
        inputs: &[Encoded],
        to: &[Style],
        cfg: &EditConfig,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Edit>> {
        if inputs.len() != to.len() {
            return Err(Error::Input(format!("{} sentences but {} target styles", inputs.len(), to.len())));
        }
        if !(cfg.lr.is_finite() && cfg.lr >= 0.0) || cfg.same == 0 || cfg.other == 0 || cfg.tau <= 0.0 {
            return Err(Error::Input(format!("edit settings out of range: {cfg:?}")));
        }
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let b = inputs.len();
        let d = self.meta.ae.d_model;
        let rows: Vec<&[u32]> = inputs.iter().map(|e| e.ids.as_slice()).collect();
        let z0 = self.ae.latent(batch_ids(&rows, self.meta.ae.max_len, &self.dev).0);
        let mut rng = Rng::new(cfg.seed);
        let from: Vec<Style> = to.iter().map(|s| s.other()).collect();
        // The networks are frozen: the anchors' features are computed once, not at every iteration.
        let same = self.net.anchor_features(self.anchors(&z0, &from, cfg.same, cfg.anchors, &mut rng)?);
        let other = self.net.anchor_features(self.anchors(&z0, to, cfg.other, cfg.anchors, &mut rng)?);
        let mut z = host_f32(z0)?;
        let recon = self.decode_rows(&z, b)?;
        let mut out: Vec<Edit> = (0..b)
            .map(|i| Edit {
                source: self.text(&inputs[i].ids),
                from: from[i],
                to: to[i],
                unknown: inputs[i].unknown.clone(),
                reconstruction: recon[i].clone(),
                changes: Vec::new(),
                output: String::new(),
                trace: Vec::new(),
            })
            .collect();
        let mut prev = recon;
        let (mut m, mut v) = (vec![0f32; b * d], vec![0f32; b * d]);
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        for it in 0..cfg.max_iter {
            let active: Vec<usize> = (0..b).filter(|&i| out[i].changes.len() < cfg.max_change).collect();
            if active.is_empty() {
                break;
            }
            let a = active.len();
            let sel = Tensor::<1, Int>::from_data(
                TensorData::new(active.iter().map(|&i| i as i64).collect::<Vec<_>>(), [a]),
                &self.dev,
            );
            let za: Vec<f32> = active.iter().flat_map(|&i| z[i * d..(i + 1) * d].iter().copied()).collect();
            let zt = Tensor::<2>::from_data(TensorData::new(za, [a, d]), &self.dev).autodiff().require_grad();
            let (sp, sn) =
                self.net.scores_with(zt.clone(), same.clone().select(0, sel.clone()), other.clone().select(0, sel));
            let j = edit_objective(sp, sn, cfg.tau);
            let jv = host_f32(j.clone().inner())?;
            let grads = j.sum().neg().backward();
            let g = host_f32(zt.grad(&grads).ok_or_else(|| Error::Device("the latent received no gradient".into()))?)?;
            // torch.optim.Adam (default betas and eps) on each row; all active rows have taken it + 1 steps.
            let t = (it + 1) as i32;
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            for (r, &i) in active.iter().enumerate() {
                for k in 0..d {
                    let (gi, p) = (g[r * d + k], i * d + k);
                    m[p] = b1 * m[p] + (1.0 - b1) * gi;
                    v[p] = b2 * v[p] + (1.0 - b2) * gi * gi;
                    z[p] -= cfg.lr as f32 * (m[p] / c1) / ((v[p] / c2).sqrt() + eps);
                }
            }
            let za: Vec<f32> = active.iter().flat_map(|&i| z[i * d..(i + 1) * d].iter().copied()).collect();
            let texts = self.decode_rows(&za, a)?;
            for ((&i, text), &obj) in active.iter().zip(texts).zip(&jv) {
                let changed = text != prev[i];
                if changed {
                    out[i].changes.push(text.clone());
                    prev[i] = text.clone();
                }
                out[i].trace.push(Step { iteration: it, objective: obj, text, changed });
            }
            progress(it + 1);
        }
        for e in &mut out {
            e.output = pick(&e.changes, cfg.pick).unwrap_or(&e.reconstruction).clone();
        }
        Ok(out)
    }
}

/// The reference's output rule (`get_i_iter.py`): the text at change `c`, else the last change before it, else
/// `None` (no change: the caller falls back to the unedited text).
pub fn pick(changes: &[String], c: usize) -> Option<&String> {
    changes.get(c.min(changes.len().saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_rule_follows_get_i_iter() {
        let c: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(pick(&c, 2).map(String::as_str), Some("c"));
        assert_eq!(pick(&c[..2], 2).map(String::as_str), Some("b"), "the highest change below c");
        assert_eq!(pick(&[], 2), None, "no change: the unedited text");
        assert_eq!(pick(&c, 0).map(String::as_str), Some("a"));
    }
}
