//! Text generation: prompt encoding (plain or chat-templated), batched left-padded prefill, KV-cached
//! decoding with greedy or seeded sampling, EOS / stop-string / context stops, streaming text deltas.
//!
//! The loop is written once as `async` (the browser must await device read-backs); native callers use
//! the blocking wrappers, whose futures are always ready.

use burn::tensor::{Device, Tensor};
use chorus_core::{GenerateOptions, Sampler};
use chorus_models::decoder::{self, Decoder, WeightMode};
use chorus_models::{ChatMessage, ModelFiles};
use web_time::Instant;

use crate::backend::Backend;
use crate::error::{Error, Result};

/// A model loaded on a device, with its tokenizer.
pub struct LoadedModel {
    /// Files, configuration and tokenizer.
    pub files: ModelFiles,
    /// The burn model.
    pub decoder: Decoder,
    /// Backend it runs on.
    pub backend: Backend,
    /// Milliseconds spent decoding and uploading weights.
    pub load_ms: f64,
}

/// What to feed the model.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Raw text (BOS added when the model asks for it).
    Text(String),
    /// One user turn rendered through the model's chat template, optionally after a system turn.
    Chat {
        /// System prompt.
        system: Option<String>,
        /// User message.
        user: String,
    },
    /// Token ids as they are.
    Ids(Vec<u32>),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end-of-sequence token was produced (it is not included in the output).
    Eos,
    /// A stop string appeared (the text is cut before it).
    StopString,
    /// `max_new_tokens` were produced.
    MaxTokens,
    /// The model's context is full.
    Context,
}

/// The result of one generation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerateOutput {
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Generated text (special tokens skipped, cut at a stop string).
    pub text: String,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Time of the prompt pass, including the read-back of its logits.
    pub prefill_ms: f64,
    /// Time of the decode steps after the prompt pass.
    pub decode_ms: f64,
    /// Decode steps per second (batch rows are counted once).
    pub decode_tokens_per_s: f64,
}

/// One greedy step with its top logits (for golden tests and `--json` traces).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepTrace {
    /// The chosen (argmax) token.
    pub token: u32,
    /// The k largest logits, largest first, as (id, logit).
    pub top: Vec<(u32, f32)>,
}

/// One output row's progress: tokens, text, streaming position and stop state.
pub(crate) struct RowState {
    pub(crate) sampler: Sampler,
    pub(crate) tokens: Vec<u32>,
    pub(crate) text: String,
    emitted: usize,
    pub(crate) done: Option<StopReason>,
}

impl RowState {
    pub(crate) fn new(sampler: Sampler) -> Self {
        Self { sampler, tokens: Vec::new(), text: String::new(), emitted: 0, done: None }
    }

    /// Takes token `id`: EOS ends the row (not appended); otherwise appends, applies stop strings and
    /// the token budget, and returns the new text to stream ("" while a UTF-8 sequence is incomplete;
    /// `None` for EOS).
    pub(crate) fn accept(
        &mut self,
        id: u32,
        tk: &chorus_models::TextTokenizer,
        eos: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Option<String>> {
        if opts.stop_at_eos && eos.contains(&id) {
            self.done = Some(StopReason::Eos);
            return Ok(None);
        }
        self.tokens.push(id);
        let text = tk.decode(&self.tokens, true)?;
        // Hold back an incomplete UTF-8 sequence until the next token completes it.
        if !text.ends_with('\u{fffd}') {
            self.text = text;
        }
        if let Some(cut) = opts.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(cut);
            self.done = Some(StopReason::StopString);
        }
        if self.done.is_none() && self.tokens.len() >= opts.max_new_tokens {
            self.done = Some(StopReason::MaxTokens);
        }
        if self.text.len() > self.emitted && self.text.is_char_boundary(self.emitted) {
            let start = self.emitted;
            self.emitted = self.text.len();
            Ok(Some(self.text[start..].to_string()))
        } else {
            Ok(Some(String::new()))
        }
    }
}

impl LoadedModel {
    /// Decodes the weights of `files` onto `device`.
    /// `mode` `None` picks the backend's default ([`crate::backend::default_weight_mode`]).
    pub fn load(
        files: ModelFiles,
        backend: Backend,
        device: &Device,
        mode: Option<WeightMode>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let t0 = Instant::now();
        let mode = mode.unwrap_or(crate::backend::default_weight_mode(backend));
        let decoder = if backend == Backend::Wgpu && mode == WeightMode::Native {
            // On wgpu, native weights are the device decoder's: the file's blocks on the GPU.
            Decoder::load_gpu(&files, &crate::backend::shared_gpu_context()?, device, progress)?
        } else {
            Decoder::load(&files, device, mode, progress)?
        };
        Ok(Self { files, decoder, backend, load_ms: ms(t0) })
    }

    /// Turns a prompt into token ids.
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let tk = &self.files.tokenizer;
        let ids = match prompt {
            Prompt::Ids(ids) => ids.clone(),
            Prompt::Text(t) => tk.encode(t, true)?,
            Prompt::Chat { system, user } => {
                let mut msgs = Vec::new();
                if let Some(s) = system {
                    msgs.push(ChatMessage { role: "system".into(), content: s.clone() });
                }
                msgs.push(ChatMessage::user(user.clone()));
                let text = tk.apply_chat_template(&msgs, true)?;
                // The template writes BOS itself when the model uses one.
                tk.encode(&text, false)?
            }
        };
        if ids.is_empty() {
            return Err(Error::Request("the prompt encodes to zero tokens".into()));
        }
        Ok(ids)
    }

    fn check_prompt(&self, ids: &[u32]) -> Result<()> {
        let c = &self.decoder.config;
        if ids.is_empty() {
            return Err(Error::Request("empty prompt".into()));
        }
        if ids.len() >= c.max_position_embeddings {
            return Err(Error::Context {
                model: self.files.path.clone(),
                prompt_tokens: ids.len(),
                context: c.max_position_embeddings,
            });
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(Error::Request(format!("token id {bad} is outside the vocabulary of {}", c.vocab_size)));
        }
        Ok(())
    }

    /// Generates for several prompts at once (left-padded into one batch). Row `r` samples with seed
    /// `opts.seed + r`. `on_token(row, id, text_delta)` streams each accepted token.
    pub async fn generate_batch_async(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(usize, u32, &str),
    ) -> Result<Vec<GenerateOutput>> {
        self.generate_mixed_async(prompts, None, opts, on_token).await
    }

    /// [`Self::generate_batch_async`] with per-row task weights for a model with attached task deltas
    /// (Twin-Merging: row `r` runs θ_s + Σ_t mix[r][t] v_t; see [`Decoder::attach_deltas`]).
    pub async fn generate_mixed_async(
        &self,
        prompts: &[Vec<u32>],
        mix: Option<&[Vec<f32>]>,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(usize, u32, &str),
    ) -> Result<Vec<GenerateOutput>> {
        self.generate_on_async(&self.decoder, prompts, mix, opts, on_token).await
    }

    /// [`Self::generate_mixed_async`] run by another decoder of this model's shape and tokenizer (a
    /// group-wise merged copy, [`Decoder::merged`]).
    pub async fn generate_on_async(
        &self,
        decoder: &Decoder,
        prompts: &[Vec<u32>],
        mix: Option<&[Vec<f32>]>,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(usize, u32, &str),
    ) -> Result<Vec<GenerateOutput>> {
        if decoder.config != self.decoder.config {
            return Err(Error::Request("generate_on: the decoder's configuration differs from the model's".into()));
        }
        if prompts.is_empty() {
            return Err(Error::Request("empty batch".into()));
        }
        for p in prompts {
            self.check_prompt(p)?;
        }
        let ctx = decoder.config.max_position_embeddings;
        let tk = &self.files.tokenizer;
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let pad = tk.pad_id.min(decoder.config.vocab_size as u32 - 1);
        let mut rows = Vec::with_capacity(prompts.len());
        let (mut toks, mut valid) = (Vec::new(), Vec::new());
        for (r, p) in prompts.iter().enumerate() {
            let o = GenerateOptions { seed: opts.seed.wrapping_add(r as u64), ..opts.clone() };
            rows.push(RowState::new(Sampler::new(&o)?));
            let n_pad = width - p.len();
            toks.push(std::iter::repeat_n(pad, n_pad).chain(p.iter().copied()).collect::<Vec<_>>());
            valid.push(std::iter::repeat_n(false, n_pad).chain(std::iter::repeat_n(true, p.len())).collect::<Vec<_>>());
        }
        let mut cache = decoder.new_cache(prompts.len());
        // Greedy rows on the device decoder take their token from the device (only ids come back).
        let on_device = decoder.gpu().is_some() && mix.is_none() && rows.iter().all(|r| r.sampler.is_greedy());
        let t0 = Instant::now();
        let mut out = step_output(decoder, &toks, &valid, &mut cache, mix, on_device).await?;
        let prefill_ms = ms(t0);
        let t1 = Instant::now();
        let mut steps = 0usize;
        if opts.max_new_tokens == 0 {
            for r in &mut rows {
                r.done = Some(StopReason::MaxTokens);
            }
        }
        loop {
            let mut next = Vec::with_capacity(rows.len());
            for (r, row) in rows.iter_mut().enumerate() {
                if row.done.is_some() {
                    next.push(*row.tokens.last().unwrap_or(&pad));
                    continue;
                }
                let id = match &out {
                    StepOutput::Logits(l) => row.sampler.sample(&l[r]) as u32,
                    StepOutput::Ids(ids) => ids[r].ok_or_else(|| Error::Request(format!("row {r}: no token")))?,
                };
                next.push(id);
                if let Some(delta) = row.accept(id, tk, &tk.eos_ids, opts)? {
                    on_token(r, id, &delta);
                }
            }
            if rows.iter().all(|r| r.done.is_some()) {
                break;
            }
            if cache.len() + 1 > ctx {
                for r in rows.iter_mut().filter(|r| r.done.is_none()) {
                    r.done = Some(StopReason::Context);
                }
                break;
            }
            let step: Vec<Vec<u32>> = next.iter().map(|&i| vec![i]).collect();
            let live: Vec<Vec<bool>> = rows.iter().map(|r| vec![r.done.is_none()]).collect();
            out = step_output(decoder, &step, &live, &mut cache, mix, on_device).await?;
            steps += 1;
        }
        let decode_ms = ms(t1);
        let rate = if decode_ms > 0.0 { steps as f64 / (decode_ms / 1000.0) } else { 0.0 };
        Ok(rows
            .into_iter()
            .zip(prompts)
            .map(|(r, p)| GenerateOutput {
                prompt_tokens: p.len(),
                tokens: r.tokens,
                text: r.text,
                stop_reason: r.done.unwrap_or(StopReason::MaxTokens),
                prefill_ms,
                decode_ms,
                decode_tokens_per_s: rate,
            })
            .collect())
    }

    /// The mean over each prompt's positions of the final-normed last hidden state (Twin-Merging's router
    /// features, §B.5), one row per prompt, with the attached deltas (if any) left out.
    pub async fn mean_hidden_async(&self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(prompts.len());
        for p in prompts {
            self.check_prompt(p)?;
            let mut cache = self.decoder.new_cache(1);
            let h = self
                .decoder
                .forward_mixed_async(
                    std::slice::from_ref(p),
                    &[vec![true; p.len()]],
                    &mut cache,
                    decoder::Output::Hidden,
                    None,
                )
                .await?;
            let rows = read_rows(h).await?;
            let n = rows.len().max(1) as f32;
            let mut mean = vec![0f32; rows.first().map_or(0, Vec::len)];
            for r in &rows {
                mean.iter_mut().zip(r).for_each(|(m, x)| *m += x / n);
            }
            out.push(mean);
        }
        Ok(out)
    }

    /// Generates for one prompt, streaming text deltas to `on_text`.
    pub async fn generate_async(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(u32, &str),
    ) -> Result<GenerateOutput> {
        let mut out = self.generate_batch_async(&[prompt.to_vec()], opts, &mut |_, id, d| on_text(id, d)).await?;
        Ok(out.remove(0))
    }

    /// Greedy decoding that records the top-`k` logits of every step (golden tests, traces).
    pub async fn greedy_trace_async(&self, prompt: &[u32], steps: usize, k: usize) -> Result<Vec<StepTrace>> {
        self.check_prompt(prompt)?;
        let mut cache = self.decoder.new_cache(1);
        let mut out = Vec::with_capacity(steps);
        let mut input = prompt.to_vec();
        for _ in 0..steps {
            if cache.len() + input.len() > self.decoder.config.max_position_embeddings {
                break;
            }
            let valid = vec![vec![true; input.len()]];
            let logits = read_rows(
                self.decoder.forward_mixed_async(&[input], &valid, &mut cache, decoder::Output::Last, None).await?,
            )
            .await?;
            let row = &logits[0];
            let token = chorus_core::sampling::argmax(row) as u32;
            let mut idx: Vec<u32> = (0..row.len() as u32).collect();
            let k = k.min(idx.len());
            idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
                row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b))
            });
            idx.truncate(k);
            idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            out.push(StepTrace { token, top: idx.iter().map(|&i| (i, row[i as usize])).collect() });
            input = vec![token];
        }
        Ok(out)
    }

    /// Blocking [`Self::generate_async`].
    #[cfg(not(target_family = "wasm"))]
    pub fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(u32, &str),
    ) -> Result<GenerateOutput> {
        pollster::block_on(self.generate_async(prompt, opts, on_text))
    }

    /// Blocking [`Self::generate_batch_async`].
    #[cfg(not(target_family = "wasm"))]
    pub fn generate_batch(&self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<Vec<GenerateOutput>> {
        pollster::block_on(self.generate_batch_async(prompts, opts, &mut |_, _, _| {}))
    }

    /// Blocking [`Self::generate_mixed_async`].
    #[cfg(not(target_family = "wasm"))]
    pub fn generate_mixed(
        &self,
        prompts: &[Vec<u32>],
        mix: Option<&[Vec<f32>]>,
        opts: &GenerateOptions,
    ) -> Result<Vec<GenerateOutput>> {
        pollster::block_on(self.generate_mixed_async(prompts, mix, opts, &mut |_, _, _| {}))
    }

    /// Blocking [`Self::generate_on_async`].
    #[cfg(not(target_family = "wasm"))]
    pub fn generate_on(
        &self,
        decoder: &Decoder,
        prompts: &[Vec<u32>],
        mix: Option<&[Vec<f32>]>,
        opts: &GenerateOptions,
    ) -> Result<Vec<GenerateOutput>> {
        pollster::block_on(self.generate_on_async(decoder, prompts, mix, opts, &mut |_, _, _| {}))
    }

    /// Blocking [`Self::mean_hidden_async`].
    #[cfg(not(target_family = "wasm"))]
    pub fn mean_hidden(&self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.mean_hidden_async(prompts))
    }

    /// Blocking [`Self::greedy_trace_async`].
    #[cfg(not(target_family = "wasm"))]
    pub fn greedy_trace(&self, prompt: &[u32], steps: usize, k: usize) -> Result<Vec<StepTrace>> {
        pollster::block_on(self.greedy_trace_async(prompt, steps, k))
    }
}

/// What one forward pass of the generation loop gives: each row's last logits, or its greedy token.
enum StepOutput {
    Logits(Vec<Vec<f32>>),
    Ids(Vec<Option<u32>>),
}

/// One forward pass of the generation loop: the greedy tokens chosen on the device when `on_device`
/// (the device decoder with greedy rows), else the logits read back.
async fn step_output(
    decoder: &Decoder,
    toks: &[Vec<u32>],
    valid: &[Vec<bool>],
    cache: &mut chorus_models::KvCache,
    mix: Option<&[Vec<f32>]>,
    on_device: bool,
) -> Result<StepOutput> {
    if on_device && let Some(ids) = decoder.greedy_next_async(toks, valid, cache).await? {
        return Ok(StepOutput::Ids(ids));
    }
    let x = decoder.forward_mixed_async(toks, valid, cache, decoder::Output::Last, mix).await?;
    Ok(StepOutput::Logits(read_rows(x).await?))
}

pub(crate) async fn read_rows(x: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    #[cfg(target_family = "wasm")]
    {
        Ok(decoder::to_rows_async(x).await?)
    }
    #[cfg(not(target_family = "wasm"))]
    {
        Ok(decoder::to_rows(x)?)
    }
}

pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
