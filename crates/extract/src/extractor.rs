//! An MVRE extractor: a BERT/RoBERTa masked LM prepared for MVRE (entity markers and the virtual relation
//! words added to both the tokenizer and the tied embedding table, dynamic initialisation, frozen gates),
//! prompt encoding with the checks the reference skips, batched prediction and evaluation, and the checkpoint
//! folder (`model.safetensors` + `config.json` + `tokenizer.json` + `mvre.json`).

use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_models::bert::{Bert, BertConfig};
use chorus_models::source::SafetensorsSet;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokenizers::{AddedToken, Tokenizer};

use crate::data::{Example, Relations};
use crate::error::{Error, Result};
use crate::init::{self, Init, Template};
use crate::metrics::micro_f1;
use crate::model::Mvre;
use crate::template::{Form, MARKERS, mask_positions, prompt};

/// Checkpoint format version written to `mvre.json`.
pub const FORMAT: u32 = 1;

/// Choices made when preparing a model for MVRE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// Views m (virtual words and masks per relation); the reference uses 3.
    pub views: usize,
    /// Prompt form (the code's doubled sentence or the paper figure's).
    pub form: Form,
    /// Longest encoded prompt (the reference: 256 SemEval, 512 TACRED); capped by the model's positions.
    pub max_len: usize,
    /// Dynamic initialisation.
    pub init: Init,
    /// Average the id-0 padding rows of the label words too (the reference's quirk).
    pub pad_label_words: bool,
    /// Seed of the new rows and the gates.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self { views: 3, form: Form::Code, max_len: 256, init: Init::Auto, pad_label_words: true, seed: 7 }
    }
}

/// Everything besides the weights that a checkpoint needs (`mvre.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// [`FORMAT`].
    pub format: u32,
    /// Relations in id order and NA.
    pub relations: Relations,
    /// Views m.
    pub views: usize,
    /// Prompt form.
    pub form: Form,
    /// Longest encoded prompt.
    pub max_len: usize,
    /// The initialisation that was applied (never `auto`).
    pub init: Init,
    /// The probe's top-1 ids per relation and view (when the probe ran).
    pub probe_ids: Vec<Option<Vec<u32>>>,
    /// Ids of the four markers in [`MARKERS`] order.
    pub marker_ids: Vec<u32>,
    /// Ids of `[class{y}_{j}]`, view-major (`[j][y]`).
    pub virtual_ids: Vec<Vec<u32>>,
    /// The mask token.
    pub mask_token: String,
    /// The separator token (figure form).
    pub sep_token: String,
    /// Where the base model came from.
    pub base_model: String,
    /// Whether the base model had no MLM head (one was initialised).
    pub head_initialised: bool,
    /// What training did (filled in by the trainer).
    #[serde(default)]
    pub training: Option<Json>,
}

/// One example as model input.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Token ids (with the tokenizer's special tokens).
    pub ids: Vec<u32>,
    /// The m mask positions.
    pub mask_pos: Vec<usize>,
    /// Whether the tail was cut to `max_len`.
    pub truncated: bool,
}

/// A prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Example id.
    pub id: String,
    /// Predicted relation.
    pub relation: String,
    /// Its index.
    pub index: usize,
    /// S(y|x) per relation (id order).
    pub scores: Vec<f32>,
    /// P_j(y|x) per view and relation.
    pub views: Vec<Vec<f32>>,
}

/// Micro-F1 of a data set and the per-example failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Examples scored.
    pub examples: usize,
    /// Precision over non-NA predictions.
    pub precision: f64,
    /// Recall over non-NA gold labels.
    pub recall: f64,
    /// Micro-F1.
    pub f1: f64,
    /// Accuracy over all examples (NA included).
    pub accuracy: f64,
}

/// A masked LM prepared for MVRE, with its tokenizer.
pub struct Extractor {
    /// The model.
    pub model: Mvre,
    /// The tokenizer with markers and virtual words added.
    pub tokenizer: Tokenizer,
    /// The checkpoint metadata.
    pub meta: Meta,
    pub(crate) config: Json,
    pub(crate) mask_id: u32,
    pub(crate) sep_id: Option<u32>,
}

fn tok_err(path: &std::path::Path) -> impl Fn(tokenizers::Error) -> Error + '_ {
    move |e| {
        Error::from(chorus_core::FileError::Io { path: path.display().to_string(), reason: format!("tokenizer: {e}") })
    }
}

fn find_token(tok: &Tokenizer, names: &[&str], what: &str) -> Result<(String, u32)> {
    names
        .iter()
        .find_map(|n| tok.token_to_id(n).map(|id| (n.to_string(), id)))
        .ok_or_else(|| Error::config("tokenizer.json", format!("no {what} token (looked for {})", names.join(", "))))
}

/// Reads `tokenizer.json` with its own truncation and padding turned off (prompts are checked and cut here).
#[cfg(not(target_family = "wasm"))]
pub fn load_tokenizer(path: &std::path::Path) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path).map_err(tok_err(path))?;
    tok.with_truncation(None).map_err(tok_err(path))?;
    tok.with_padding(None);
    Ok(tok)
}

#[cfg(not(target_family = "wasm"))]
fn read_json(path: &std::path::Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::from(chorus_core::FileError::Io { path: path.display().to_string(), reason: e.to_string() })
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::from(chorus_core::FileError::Parse {
            file: path.display().to_string(),
            line: e.line(),
            reason: e.to_string(),
        })
    })
}

impl Extractor {
    /// Prepares the HF folder `dir` (config.json, model.safetensors, tokenizer.json) for MVRE over
    /// `relations`: adds the markers and `[class{y}_{j}]` to the tokenizer and the embedding table, initialises
    /// the virtual rows (`templates` feed the probe), draws the frozen gates. Tensors go on `dev` (an
    /// autodiff device to train).
    #[cfg(not(target_family = "wasm"))]
    pub fn prepare(
        dir: &std::path::Path,
        relations: Relations,
        templates: &[Template],
        opts: &Options,
        dev: &Device,
    ) -> Result<Self> {
        let m = opts.views;
        if m == 0 || m > 16 {
            return Err(Error::config("views", format!("{m}: use 1 to 16")));
        }
        let (_, config) = chorus_models::t5::read_config(dir)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tok = load_tokenizer(&tok_path)?;
        // A checkpoint without an MLM head gets a fresh one, drawn from a host generator seeded by the run's
        // seed (not burn's process-wide one, which other threads also draw from), so a run is reproducible
        // from its seed.
        dev.seed(opts.seed);
        let mut bert = Bert::open(dir, dev)?;
        bert.reseed_fresh_head(opts.seed);
        let cfg = bert.config().clone();
        let max_len = checked_max_len(&cfg, opts.max_len)?;
        let (mask_token, mask_id) = find_token(&tok, &["<mask>", "[MASK]"], "mask")?;
        let (sep_token, _) = find_token(&tok, &["</s>", "[SEP]"], "separator")?;
        let label = init::label_ids(&tok, &relations, opts.pad_label_words)?;
        let by_name = |r: &str| templates.iter().find(|t| t.relation == r);
        let init = match opts.init {
            Init::Auto if bert.head_initialised() || templates.is_empty() => Init::LabelWords,
            Init::Auto => Init::Probe,
            Init::Probe if bert.head_initialised() => {
                return Err(Error::config(
                    "init",
                    format!("probe needs a trained MLM head; {} has none (use label-words or random)", dir.display()),
                ));
            }
            other => other,
        };
        let probe_ids: Vec<Option<Vec<u32>>> = if init == Init::Probe {
            relations
                .names
                .iter()
                .map(|r| by_name(r).map(|t| init::probe(&bert, &tok, &mask_token, t, m, dev)).transpose())
                .collect::<Result<_>>()?
        } else {
            vec![None; relations.len()]
        };
        // The tokenizer must hand out ids right after the embedding table.
        let tv = tok.get_vocab_size(true);
        if tv > cfg.vocab_size {
            return Err(Error::config(
                "tokenizer.json",
                format!("{tv} tokens but config.json vocab_size is {}: ids past the embedding table", cfg.vocab_size),
            ));
        }
        let filler: Vec<AddedToken> =
            (tv..cfg.vocab_size).map(|k| AddedToken::from(format!("<chorus_unused_{k}>"), true)).collect();
        tok.add_special_tokens(filler).map_err(tok_err(&tok_path))?;
        let r = relations.len();
        // Markers the tokenizer already has (a fixture or a KnowPrompt-style vocabulary) keep their rows.
        let missing: Vec<String> =
            MARKERS.iter().filter(|mk| tok.token_to_id(mk).is_none()).map(|s| s.to_string()).collect();
        let virtual_names: Vec<String> =
            (0..r).flat_map(|y| (0..m).map(move |j| format!("[class{}_{j}]", y + 1))).collect();
        if let Some(n) = virtual_names.iter().find(|n| tok.token_to_id(n).is_some()) {
            return Err(Error::config("tokenizer.json", format!("already holds {n}: is this an MVRE checkpoint?")));
        }
        let names: Vec<String> = missing.iter().chain(&virtual_names).cloned().collect();
        let added: Vec<AddedToken> = names.iter().map(|n| AddedToken::from(n.clone(), true)).collect();
        tok.add_special_tokens(added).map_err(tok_err(&tok_path))?;
        let v0 = cfg.vocab_size as u32;
        for (k, n) in names.iter().enumerate() {
            let got = tok.token_to_id(n);
            if got != Some(v0 + k as u32) {
                return Err(Error::config(
                    "tokenizer.json",
                    format!("{n} got id {got:?}, expected {} (right after the embedding table)", v0 + k as u32),
                ));
            }
        }
        let mut marker_ids = Vec::with_capacity(MARKERS.len());
        for mk in MARKERS {
            match tok.token_to_id(mk) {
                Some(id) if (id as usize) < cfg.vocab_size + missing.len() => marker_ids.push(id),
                got => {
                    return Err(Error::config("tokenizer.json", format!("{mk} has id {got:?}, outside the table")));
                }
            }
        }
        let h = cfg.hidden_size;
        let table = bert
            .word_embeddings()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::config("device", format!("{e:?}")))?;
        let mut rows = init::normal_rows(missing.len(), h, 0.02, opts.seed);
        rows.extend(match init {
            Init::Random => init::normal_rows(r * m, h, 0.02, opts.seed + 1),
            _ => init::mean_rows(&table, h, &init::sources(&label, &probe_ids, m))?,
        });
        bert.add_words(&rows)?;
        let first = v0 + missing.len() as u32;
        let virtual_ids: Vec<Vec<u32>> = (0..m).map(|j| (0..r).map(|y| first + (y * m + j) as u32).collect()).collect();
        let head_initialised = bert.head_initialised();
        let model = Mvre::new(bert, virtual_ids.clone(), opts.seed, dev);
        let sep_id = tok.token_to_id(&sep_token);
        let meta = Meta {
            format: FORMAT,
            relations,
            views: m,
            form: opts.form,
            max_len,
            init,
            probe_ids,
            marker_ids,
            virtual_ids,
            mask_token,
            sep_token,
            base_model: dir.display().to_string(),
            head_initialised,
            training: None,
        };
        Ok(Self { model, tokenizer: tok, meta, config, mask_id, sep_id })
    }

    /// Opens a checkpoint written by [`Self::save`].
    #[cfg(not(target_family = "wasm"))]
    pub fn open(dir: &std::path::Path, dev: &Device) -> Result<Self> {
        let meta_path = dir.join("mvre.json");
        if !meta_path.exists() {
            return Err(Error::from(chorus_core::FileError::Io {
                path: meta_path.display().to_string(),
                reason: "missing: not an MVRE checkpoint (train one with `chorus extract train`)".into(),
            }));
        }
        let meta: Meta = serde_json::from_value(read_json(&meta_path)?).map_err(|e| {
            Error::from(chorus_core::FileError::Parse {
                file: meta_path.display().to_string(),
                line: 1,
                reason: e.to_string(),
            })
        })?;
        if meta.format != FORMAT {
            return Err(Error::config("mvre.json format", format!("{} (this build reads {FORMAT})", meta.format)));
        }
        let (_, config) = chorus_models::t5::read_config(dir)?;
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        let bert = Bert::open(dir, dev)?;
        let cfg = bert.config().clone();
        let m = meta.views;
        let r = meta.relations.len();
        if m == 0 || meta.marker_ids.len() != MARKERS.len() || meta.max_len < 8 || r < 2 {
            return Err(Error::config(
                "mvre.json",
                format!(
                    "views {m}, {} marker ids, max_len {}, {r} relations: expected ≥ 1 view, 4 markers, max_len ≥ 8, ≥ 2 relations",
                    meta.marker_ids.len(),
                    meta.max_len
                ),
            ));
        }
        if meta.virtual_ids.len() != m || meta.virtual_ids.iter().any(|v| v.len() != r) {
            return Err(Error::config("mvre.json virtual_ids", format!("expected {m} views × {r} relations")));
        }
        if let Some(&bad) =
            meta.virtual_ids.iter().flatten().chain(&meta.marker_ids).find(|&&i| i as usize >= cfg.vocab_size)
        {
            return Err(Error::config(
                "mvre.json",
                format!("token id {bad} is outside the {}-row table", cfg.vocab_size),
            ));
        }
        let set = SafetensorsSet::open_dir(dir)?;
        let st = dir.join("model.safetensors").display().to_string();
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let (v, s) = set.get(name)?.ok_or_else(|| Error::config(&st, format!("no tensor {name}")))?;
            if s != shape {
                return Err(Error::config(&st, format!("{name} has shape {s:?}, expected {shape:?}")));
            }
            Ok(v)
        };
        let w = get("mvre.gates.weight", &[m, cfg.hidden_size])?;
        let b = get("mvre.gates.bias", &[m])?;
        let model = Mvre::with_gates(bert, meta.virtual_ids.clone(), w, b, dev);
        let mask_id = tokenizer
            .token_to_id(&meta.mask_token)
            .ok_or_else(|| Error::config("tokenizer.json", format!("no {} token", meta.mask_token)))?;
        let sep_id = tokenizer.token_to_id(&meta.sep_token);
        Ok(Self { model, tokenizer, meta, config, mask_id, sep_id })
    }

    /// Writes the checkpoint into `dir`, every file through a temporary name and a rename.
    #[cfg(not(target_family = "wasm"))]
    pub fn save(&self, dir: &std::path::Path, force: bool) -> Result<()> {
        let mut tensors = self.model.bert().hf_tensors();
        let (w, b) = self.model.gate_tensors();
        let m = self.meta.views;
        let h = self.model.bert().config().hidden_size;
        tensors.push(("mvre.gates.weight".into(), vec![m, h], w));
        tensors.push(("mvre.gates.bias".into(), vec![m], b));
        let mut config = self.config.clone();
        config["vocab_size"] = Json::from(self.model.bert().config().vocab_size);
        let cfg = json_bytes(&config, "config.json")?;
        let meta = json_bytes(&self.meta, "mvre.json")?;
        let tok = self.tokenizer.to_string(true).map_err(|e| Error::config("tokenizer.json", e.to_string()))?;
        chorus_models::export::write_model_dir(
            dir,
            tensors,
            &[("config.json", &cfg), ("tokenizer.json", tok.as_bytes()), ("mvre.json", &meta)],
            force,
        )?;
        Ok(())
    }

    /// Encodes one example: the prompt with the special tokens; a longer input loses its tail (keeping the
    /// closing separator), as the reference's truncation does. An entity whose markers do not survive, or a
    /// mask count other than m, is an error naming the example (the reference silently drops it).
    pub fn encode(&self, ex: &Example) -> Result<Encoded> {
        let m = self.meta.views;
        let text = prompt(ex, m, &self.meta.mask_token, &self.meta.sep_token, self.meta.form)?;
        let enc = self
            .tokenizer
            .encode(text.as_str(), true)
            .map_err(|e| Error::Example { id: ex.id.clone(), reason: format!("tokenizer: {e}") })?;
        let mut ids = enc.get_ids().to_vec();
        let max = self.meta.max_len;
        let truncated = ids.len() > max;
        if truncated {
            let last = ids.last().copied().filter(|l| Some(*l) == self.sep_id);
            ids.truncate(max - usize::from(last.is_some()));
            ids.extend(last);
        }
        let mk = &self.meta.marker_ids;
        for (name, start, end) in [("subject", mk[2], mk[3]), ("object", mk[0], mk[1])] {
            let s = ids.iter().position(|&t| t == start);
            let e = ids.iter().position(|&t| t == end);
            match (s, e) {
                (Some(s), Some(e)) if e > s + 1 => {}
                (Some(_), Some(_)) => {
                    return Err(Error::Example {
                        id: ex.id.clone(),
                        reason: format!("the {name} encodes to no tokens between its markers"),
                    });
                }
                _ => {
                    return Err(Error::Example {
                        id: ex.id.clone(),
                        reason: format!(
                            "the {name} cannot be located: its markers are not in the input cut to {max} tokens"
                        ),
                    });
                }
            }
        }
        let mask_pos = mask_positions(&ex.id, &ids, self.mask_id, m)?;
        Ok(Encoded { ids, mask_pos, truncated })
    }

    /// Encodes a whole set (`set` names it in errors); when examples cannot be used, the error counts and names
    /// them all (the first five in full) instead of stopping at the first.
    pub fn encode_set(&self, data: &[Example], set: &str) -> Result<Vec<Encoded>> {
        let mut out = Vec::with_capacity(data.len());
        let mut bad = Vec::new();
        for e in data {
            match self.encode(e).and_then(|x| {
                self.model.bert().check_inputs(std::slice::from_ref(&x.ids)).map(|()| x).map_err(Error::from)
            }) {
                Ok(x) => out.push(x),
                Err(err) => bad.push(err.to_string()),
            }
        }
        if bad.is_empty() {
            return Ok(out);
        }
        let mut details = bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        if bad.len() > 5 {
            details.push_str(&format!("; and {} more", bad.len() - 5));
        }
        Err(Error::Examples { set: set.into(), count: bad.len(), details })
    }

    /// Predicts examples; examples that cannot be encoded are an error naming them.
    pub fn predict(&self, data: &[Example], batch: usize) -> Result<Vec<Prediction>> {
        let enc = self.encode_set(data, "input")?;
        let refs: Vec<&Encoded> = enc.iter().collect();
        let ids: Vec<String> = data.iter().map(|e| e.id.clone()).collect();
        predict_with(&self.model, &self.meta, &refs, &ids, batch)
    }

    /// Micro-F1 (non-NA) of the model on `data`.
    pub fn evaluate(&self, data: &[Example], batch: usize) -> Result<(Evaluation, Vec<Prediction>)> {
        let gold = self.meta.relations.ids(data)?;
        let preds = self.predict(data, batch)?;
        let pred: Vec<usize> = preds.iter().map(|p| p.index).collect();
        Ok((score(&pred, &gold, self.meta.relations.na), preds))
    }

    /// The base model's `config.json` (with the original vocabulary size).
    pub fn base_config(&self) -> &Json {
        &self.config
    }

    /// The model's configuration.
    pub fn bert_config(&self) -> &BertConfig {
        self.model.bert().config()
    }
}

/// Padded tensors of a batch on `dev`: ids, positions, attention mask, and the mask positions per row.
pub fn batch_tensors(
    bert: &Bert,
    items: &[&Encoded],
    dev: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2>, Vec<Vec<usize>>) {
    let pad = bert.config().pad_token_id as u32;
    let t = items.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let pad_to = |v: &[u32], fill: u32| {
        let mut r = v.to_vec();
        r.resize(t, fill);
        r
    };
    let rows: Vec<Vec<u32>> = items.iter().map(|e| pad_to(&e.ids, pad)).collect();
    let masks: Vec<Vec<u32>> = items.iter().map(|e| pad_to(&vec![1; e.ids.len()], 0)).collect();
    // RoBERTa's position ids treat every pad id as padding; the tokenizer never emits it inside text.
    let pos = bert.position_ids(&rows);
    let (ids, mask) = chorus_models::t5::ids_tensor(&rows, &masks, dev);
    let (pos, _) = chorus_models::t5::ids_tensor(&pos, &masks, dev);
    (ids, pos, mask, items.iter().map(|e| e.mask_pos.clone()).collect())
}

/// Predicts encoded examples (`ids` name them) in batches of `batch` with `model` on its own device. The
/// items come from [`Extractor::encode_set`], which has checked them against the model's tables.
pub(crate) fn predict_with(
    model: &Mvre,
    meta: &Meta,
    items: &[&Encoded],
    ids: &[String],
    batch: usize,
) -> Result<Vec<Prediction>> {
    let dev = model.bert().word_embeddings().device();
    let mut out = Vec::with_capacity(items.len());
    let (m, r) = (meta.views, meta.relations.len());
    let vec =
        |t: TensorData| t.convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::config("device", format!("{e:?}")));
    for (chunk, names) in items.chunks(batch.max(1)).zip(ids.chunks(batch.max(1))) {
        let (ids_t, pos, mask, mp) = batch_tensors(model.bert(), chunk, &dev);
        let (s, p) = model.forward(ids_t, pos, mask, &mp);
        let s = vec(s.into_data())?;
        let p = vec(p.into_data())?;
        for (k, id) in names.iter().enumerate() {
            let scores = s[k * r..(k + 1) * r].to_vec();
            let index = chorus_core::sampling::argmax(&scores);
            let views = (0..m).map(|j| p[(k * m + j) * r..(k * m + j + 1) * r].to_vec()).collect();
            out.push(Prediction {
                id: id.clone(),
                relation: meta.relations.names[index].clone(),
                index,
                scores,
                views,
            });
        }
    }
    Ok(out)
}

/// Micro-F1 and accuracy of predicted against gold relation indices.
pub fn score(pred: &[usize], gold: &[usize], na: Option<usize>) -> Evaluation {
    // Without an NA relation every label counts (usize::MAX never matches).
    let (precision, recall, f1) = micro_f1(pred, gold, na.unwrap_or(usize::MAX));
    let right = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    Evaluation { examples: gold.len(), precision, recall, f1, accuracy: right as f64 / gold.len().max(1) as f64 }
}

/// The longest prompt: the requested length, within the model's position table.
fn checked_max_len(cfg: &BertConfig, want: usize) -> Result<usize> {
    let extra = match cfg.family {
        chorus_models::bert::Family::Bert => 0,
        chorus_models::bert::Family::Roberta => cfg.pad_token_id + 1,
    };
    let cap = cfg.max_position_embeddings.saturating_sub(extra);
    if want < 8 {
        return Err(Error::config("max_len", format!("{want} tokens cannot hold a prompt")));
    }
    Ok(want.min(cap))
}

fn json_bytes<T: Serialize>(v: &T, name: &str) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::config(name, e.to_string()))
}
