//! Fused decoding (Dynamic Logit Fusion): a large base steered by small experts. Every member (large,
//! small base, experts) keeps its own prompt and KV cache and consumes the same chosen token each step;
//! α is re-chosen per step and per batch row by `chorus_core::fusion`.
//!
//! Members that share one loaded model (the small base and prompt-defined experts) run as one batch:
//! their rows are stacked, so the weights are read once per step for all of them.

use std::sync::Arc;

use burn::tensor::Tensor;
use chorus_core::GenerateOptions;
use chorus_core::Sampler;
use chorus_core::fusion::{self, Choice, FastEvaluator, FusionConfig, RowLogits, Solver};
use chorus_models::decoder::{KvCache, Output};
use web_time::Instant;

use crate::error::{Error, Result};
use crate::generate::{LoadedModel, Prompt, RowState, StopReason, ms, read_rows};

/// One participant: a loaded model plus how it sees the prompt.
#[derive(Clone)]
pub struct Member {
    /// Name used in errors, traces and tables ("large", "base", the expert's name).
    pub name: String,
    /// The weights (shared between members that use the same file).
    pub model: Arc<LoadedModel>,
    /// With chat prompts: this member's system prompt (`None`: the template's default). Without chat:
    /// a prefix written before the prompt.
    pub instruction: Option<String>,
}

/// Large base, small base and experts.
#[derive(Clone)]
pub struct FusionSetup {
    /// Large base L.
    pub large: Member,
    /// Small base S.
    pub base: Member,
    /// Experts E_t (fine-tuned from S, or S with their own instructions).
    pub experts: Vec<Member>,
}

/// Options of a fused generation.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// Token budget, stop strings, sampling (greedy by default) — applied to the fused logits.
    pub generate: GenerateOptions,
    /// How α is chosen.
    pub fusion: FusionConfig,
    /// Render the prompt through each member's chat template.
    pub chat: bool,
}

/// What happened at one step of one row (a `--trace` line).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepRecord {
    /// Step number (0 = the token after the prompt).
    pub step: usize,
    /// Chosen token.
    pub token: u32,
    /// Its text.
    pub piece: String,
    /// α per expert.
    pub alpha: Vec<f32>,
    /// ℒ(α) (absent for expert-only).
    pub loss: Option<f64>,
    /// KL(P̃‖P).
    pub kl_fused_large: Option<f64>,
    /// KL(P‖P̃).
    pub kl_large_fused: Option<f64>,
    /// KL(Q_t‖Q) per expert.
    pub kl_expert_base: Vec<f64>,
    /// KL(Q‖Q_t) per expert.
    pub kl_base_expert: Vec<f64>,
    /// Loss evaluations the solver spent.
    pub evaluations: usize,
    /// Milliseconds of the α search (constants + solver + fused logits) for this row.
    pub search_ms: f64,
}

/// One accepted token, as streamed to the caller.
pub struct StepEvent<'a> {
    /// Batch row.
    pub row: usize,
    /// The step's record.
    pub record: &'a StepRecord,
    /// New text ("" while a UTF-8 sequence is incomplete or at EOS).
    pub delta: &'a str,
    /// The fused logits the token was drawn from (shared vocabulary); `None` on the wgpu path with
    /// greedy decoding, where they never leave the device.
    pub fused: Option<&'a [f32]>,
}

/// The result for one prompt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FuseOutput {
    /// Prompt length per member, in member order (large, base, experts).
    pub prompt_tokens: Vec<usize>,
    /// Generated ids.
    pub tokens: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// One record per generated step.
    pub steps: Vec<StepRecord>,
    /// Prompt passes of all members.
    pub prefill_ms: f64,
    /// Decode steps.
    pub decode_ms: f64,
    /// Fused decode steps per second.
    pub decode_tokens_per_s: f64,
    /// Time spent choosing α and building fused logits, over all steps (all rows).
    pub search_ms: f64,
    /// Steps of the batch (not of this row alone) whose full logits were read back to the host: every step on the CPU; on wgpu, the steps of
    /// a solver the device kernel does not run (see `host_reason`) and steps that sample (the fused
    /// distribution is read back; greedy decoding reads back a few floats per row).
    pub host_steps: usize,
    /// Why a run whose members are all on wgpu chose α on the host; `None` when it did not.
    pub host_reason: Option<String>,
}

/// One row's fusion decision.
struct Pick {
    alpha: Vec<f32>,
    eval: Option<fusion::Eval>,
    kl_expert_base: Vec<f64>,
    kl_base_expert: Vec<f64>,
    evaluations: usize,
    /// Greedy token of the fused logits.
    token: Option<u32>,
    /// Fused logits on the host (always on the host path; on the device path only when sampling).
    fused: Option<Vec<f32>>,
    search_ms: f64,
}

/// The fusion kernel of a wgpu run and its candidate list.
struct DeviceKernel {
    kernel: chorus_gpu::fusion::FusionKernel,
    cands: Vec<Vec<f32>>,
    expert_only: bool,
}

/// Members that run together because they share weights.
struct Group {
    model: Arc<LoadedModel>,
    /// Member indices (0 large, 1 base, 2.. experts), in row-block order.
    members: Vec<usize>,
}

/// A validated fusion of models.
pub struct Fusion {
    members: Vec<Member>,
    groups: Vec<Group>,
    /// (group, block) of each member.
    location: Vec<(usize, usize)>,
    /// Shared vocabulary: logits are cut to this many columns (padding rows dropped).
    vocab: usize,
    eos: Vec<u32>,
}

impl Fusion {
    /// Checks that every member shares the large model's tokenizer (vocabulary, merges and added
    /// tokens) and groups members by weights.
    pub fn new(setup: FusionSetup) -> Result<Self> {
        if setup.experts.is_empty() {
            return Err(Error::Request("logit fusion needs at least one expert".into()));
        }
        let mut members = vec![setup.large, setup.base];
        members.extend(setup.experts);
        let digest = |m: &Member| m.model.files.tokenizer.vocab_digest().map_err(Error::from);
        let want = digest(&members[0])?;
        let mut vocab = usize::MAX;
        let mut eos = Vec::new();
        for m in &members {
            if digest(m)? != want {
                return Err(Error::Request(format!(
                    "tokenizer mismatch: '{}' ({}) and '{}' ({}) do not share a vocabulary and merges, so their \
                     logits cannot be fused",
                    members[0].name, members[0].model.files.path, m.name, m.model.files.path
                )));
            }
            let tk = &m.model.files.tokenizer;
            // The tokenizer's ids are the shared vocabulary; rows beyond them are padding.
            vocab = vocab.min(tk.vocab_size()).min(m.model.decoder.config.vocab_size);
            for &e in &tk.eos_ids {
                if !eos.contains(&e) {
                    eos.push(e);
                }
            }
        }
        let mut groups: Vec<Group> = Vec::new();
        for (i, m) in members.iter().enumerate() {
            match groups.iter_mut().find(|g| Arc::ptr_eq(&g.model, &m.model)) {
                Some(g) => g.members.push(i),
                None => groups.push(Group { model: m.model.clone(), members: vec![i] }),
            }
        }
        let mut location = vec![(0, 0); members.len()];
        for (g, grp) in groups.iter().enumerate() {
            for (k, &m) in grp.members.iter().enumerate() {
                location[m] = (g, k);
            }
        }
        Ok(Self { members, groups, location, vocab, eos })
    }

    /// The shared vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Number of experts.
    pub fn experts(&self) -> usize {
        self.members.len() - 2
    }

    /// Members in order (large, base, experts).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Token ids of `user` as member `i` sees it.
    pub fn encode(&self, i: usize, user: &str, chat: bool) -> Result<Vec<u32>> {
        let m = &self.members[i];
        let prompt = if chat {
            Prompt::Chat { system: m.instruction.clone(), user: user.to_string() }
        } else {
            Prompt::Text(format!("{}{user}", m.instruction.as_deref().unwrap_or("")))
        };
        m.model.encode(&prompt)
    }

    /// Fused generation for several prompts (batch rows); `on_step` sees every accepted token with its
    /// record, text delta and the fused logits it was drawn from.
    pub async fn generate_batch_async(
        &self,
        prompts: &[String],
        opts: &FuseOptions,
        on_step: &mut dyn FnMut(StepEvent),
    ) -> Result<Vec<FuseOutput>> {
        let b = prompts.len();
        if b == 0 {
            return Err(Error::Request("empty batch".into()));
        }
        opts.fusion.validate(self.experts()).map_err(Error::from)?;
        // ids[member][row]
        let ids: Vec<Vec<Vec<u32>>> = (0..self.members.len())
            .map(|i| prompts.iter().map(|p| self.encode(i, p, opts.chat)).collect::<Result<Vec<_>>>())
            .collect::<Result<_>>()?;
        let mut rows = Vec::with_capacity(b);
        for r in 0..b {
            let o = GenerateOptions { seed: opts.generate.seed.wrapping_add(r as u64), ..opts.generate.clone() };
            rows.push(RowState::new(Sampler::new(&o)?));
        }
        let mut records: Vec<Vec<StepRecord>> = vec![Vec::new(); b];
        let tk = &self.members[0].model.files.tokenizer;

        // Prompt pass of every group: rows are member-major blocks of the batch.
        let t0 = Instant::now();
        let (mut caches, mut tensors) = self.prefill(&ids, b).await?;
        let gpu = self.device_kernel(&opts.fusion, b).await?;
        let all_gpu = self.members.iter().all(|m| m.model.backend == crate::Backend::Wgpu);
        let host_reason = (all_gpu && gpu.is_none()).then(|| host_path_reason(&opts.fusion, self.experts()));
        let mut host_steps = 0usize;
        let prefill_ms = ms(t0);

        let t1 = Instant::now();
        let mut eval = FastEvaluator::new();
        let mut search_ms = 0.0;
        let mut steps = 0usize;
        if opts.generate.max_new_tokens == 0 {
            for r in &mut rows {
                r.done = Some(StopReason::MaxTokens);
            }
        }
        loop {
            let live: Vec<bool> = rows.iter().map(|r| r.done.is_none()).collect();
            let sampling = rows.iter().any(|r| r.done.is_none() && !r.sampler.is_greedy());
            if gpu.is_none() || sampling {
                host_steps += 1;
            }
            let picks: Vec<Option<Pick>> = match &gpu {
                Some(k) => self.picks_on_device(k, std::mem::take(&mut tensors), &live, &rows).await?,
                None => {
                    let mut host = Vec::with_capacity(tensors.len());
                    for t in std::mem::take(&mut tensors) {
                        host.push(read_rows(t).await?);
                    }
                    self.picks_on_host(&opts.fusion, &host, &live, &mut eval)?
                }
            };
            let mut next = vec![0u32; b];
            for (r, (row, pick)) in rows.iter_mut().zip(picks).enumerate() {
                let Some(pick) = pick else {
                    next[r] = *row.tokens.last().unwrap_or(&0);
                    continue;
                };
                search_ms += pick.search_ms;
                let id = match (&pick.fused, pick.token) {
                    (_, Some(t)) if row.sampler.is_greedy() => t,
                    (Some(f), _) => row.sampler.sample(f) as u32,
                    (None, _) => {
                        return Err(Error::Request("internal: fused logits missing for sampling".into()));
                    }
                };
                next[r] = id;
                let delta = row.accept(id, tk, &self.eos, &opts.generate)?;
                let rec = StepRecord {
                    step: records[r].len(),
                    token: id,
                    piece: tk.decode(&[id], false)?,
                    loss: pick.eval.map(|e| e.loss),
                    kl_fused_large: pick.eval.map(|e| e.kl_fused_large),
                    kl_large_fused: pick.eval.map(|e| e.kl_large_fused),
                    alpha: pick.alpha,
                    kl_expert_base: pick.kl_expert_base,
                    kl_base_expert: pick.kl_base_expert,
                    evaluations: pick.evaluations,
                    search_ms: pick.search_ms,
                };
                on_step(StepEvent {
                    row: r,
                    record: &rec,
                    delta: delta.as_deref().unwrap_or(""),
                    fused: pick.fused.as_deref(),
                });
                records[r].push(rec);
            }
            if rows.iter().all(|r| r.done.is_some()) {
                break;
            }
            if self
                .groups
                .iter()
                .zip(&caches)
                .any(|(g, c)| c.len() + 1 > g.model.decoder.config.max_position_embeddings)
            {
                for r in rows.iter_mut().filter(|r| r.done.is_none()) {
                    r.done = Some(StopReason::Context);
                }
                break;
            }
            let live: Vec<bool> = rows.iter().map(|r| r.done.is_none()).collect();
            tensors = self.forward_groups(&next, &live, &mut caches).await?;
            steps += 1;
        }
        let decode_ms = ms(t1);
        let rate = if decode_ms > 0.0 { steps as f64 / (decode_ms / 1000.0) } else { 0.0 };
        Ok(rows
            .into_iter()
            .zip(records)
            .enumerate()
            .map(|(r, (row, steps))| FuseOutput {
                prompt_tokens: ids.iter().map(|m| m[r].len()).collect(),
                tokens: row.tokens,
                text: row.text,
                stop_reason: row.done.unwrap_or(StopReason::MaxTokens),
                steps,
                prefill_ms,
                decode_ms,
                decode_tokens_per_s: rate,
                search_ms,
                host_steps,
                host_reason: host_reason.clone(),
            })
            .collect())
    }

    /// Prompt pass of every group (rows are member-major blocks of `b` rows): caches and last-position
    /// logits per group.
    async fn prefill(&self, ids: &[Vec<Vec<u32>>], b: usize) -> Result<(Vec<KvCache>, Vec<Tensor<2>>)> {
        let mut caches: Vec<KvCache> = Vec::with_capacity(self.groups.len());
        let mut logits: Vec<Tensor<2>> = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let prompts: Vec<&Vec<u32>> = g.members.iter().flat_map(|&m| ids[m].iter()).collect();
            for (k, p) in prompts.iter().enumerate() {
                let m = &self.members[g.members[k / b]];
                check_prompt(m, p)?;
            }
            let width = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
            let pad = g.model.files.tokenizer.pad_id.min(g.model.decoder.config.vocab_size as u32 - 1);
            let toks: Vec<Vec<u32>> = prompts
                .iter()
                .map(|p| std::iter::repeat_n(pad, width - p.len()).chain(p.iter().copied()).collect())
                .collect();
            let valid: Vec<Vec<bool>> = prompts
                .iter()
                .map(|p| {
                    std::iter::repeat_n(false, width - p.len()).chain(std::iter::repeat_n(true, p.len())).collect()
                })
                .collect();
            let mut cache = g.model.decoder.new_cache(prompts.len());
            logits.push(g.model.decoder.forward_mixed_async(&toks, &valid, &mut cache, Output::Last, None).await?);
            caches.push(cache);
        }
        Ok((caches, logits))
    }

    /// The next-token logits of every member after `prompt` (cut to the shared vocabulary), in member
    /// order: what evaluations that compare several solvers on the same forward passes need.
    pub async fn prompt_logits_async(&self, prompt: &str, chat: bool) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<Vec<u32>>> =
            (0..self.members.len()).map(|i| Ok(vec![self.encode(i, prompt, chat)?])).collect::<Result<_>>()?;
        let (_, tensors) = self.prefill(&ids, 1).await?;
        let mut logits = Vec::with_capacity(tensors.len());
        for t in tensors {
            logits.push(read_rows(t).await?);
        }
        Ok((0..self.members.len())
            .map(|i| {
                let (g, k) = self.locate(i);
                logits[g][k][..self.vocab].to_vec()
            })
            .collect())
    }

    /// Blocking [`Self::prompt_logits_async`].
    #[cfg(not(target_family = "wasm"))]
    pub fn prompt_logits(&self, prompt: &str, chat: bool) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.prompt_logits_async(prompt, chat))
    }

    /// One decode step of every group. (Running the groups on concurrent threads was measured: no gain on
    /// 2 cores, the step is memory-bound.)
    async fn forward_groups(&self, next: &[u32], live: &[bool], caches: &mut [KvCache]) -> Result<Vec<Tensor<2>>> {
        let b = next.len();
        let mut out = Vec::with_capacity(self.groups.len());
        for (g, cache) in self.groups.iter().zip(caches.iter_mut()) {
            let n = g.members.len() * b;
            let step: Vec<Vec<u32>> = (0..n).map(|k| vec![next[k % b]]).collect();
            let valid: Vec<Vec<bool>> = (0..n).map(|k| vec![live[k % b]]).collect();
            out.push(g.model.decoder.forward_mixed_async(&step, &valid, cache, Output::Last, None).await?);
        }
        Ok(out)
    }

    /// α, fused logits and records for every live row from host logits (`host[group][block·b + row]`).
    fn picks_on_host(
        &self,
        cfg: &FusionConfig,
        host: &[Vec<Vec<f32>>],
        live: &[bool],
        eval: &mut FastEvaluator,
    ) -> Result<Vec<Option<Pick>>> {
        let b = live.len();
        let mut out = Vec::with_capacity(b);
        for (r, &alive) in live.iter().enumerate() {
            if !alive {
                out.push(None);
                continue;
            }
            let ts = Instant::now();
            let member_row = |i: usize| -> &[f32] {
                let (g, k) = self.locate(i);
                &host[g][k * b + r][..self.vocab]
            };
            let experts: Vec<&[f32]> = (2..self.members.len()).map(member_row).collect();
            let lr = RowLogits { large: member_row(0), base: member_row(1), experts: &experts };
            let (choice, constants) = choose(cfg, &lr, eval)?;
            let fused = if cfg.solver == Solver::ExpertOnly {
                fusion::fused_logits(&lr, &choice.alpha, true)
            } else {
                eval.fused(&choice.alpha, false)
            };
            out.push(Some(Pick {
                token: Some(chorus_core::sampling::argmax(&fused) as u32),
                fused: Some(fused),
                alpha: choice.alpha,
                eval: choice.eval,
                kl_expert_base: constants.kl_expert_base,
                kl_base_expert: constants.kl_base_expert,
                evaluations: choice.evaluations,
                search_ms: ms(ts),
            }));
        }
        Ok(out)
    }

    /// The fusion kernel for a run, when every member runs on wgpu and the solver is one the kernel
    /// evaluates in one pass (paper grid, static, large-only, expert-only). `refine`, `joint` and the
    /// `route` multi-expert rule take the host path.
    async fn device_kernel(&self, cfg: &FusionConfig, b: usize) -> Result<Option<DeviceKernel>> {
        if self.members.iter().any(|m| m.model.backend != crate::Backend::Wgpu) {
            return Ok(None);
        }
        let t = self.experts();
        let (cands, expert_only) = match cfg.solver {
            // Routing picks the expert from the step's constants first: the host path does that.
            Solver::Paper if t > 1 && cfg.multi == fusion::MultiRule::Route => return Ok(None),
            Solver::Paper => (cfg.grid(t), false),
            Solver::Static { alpha } => (vec![vec![alpha; t]], false),
            Solver::LargeOnly => (vec![vec![0.0; t]], false),
            Solver::ExpertOnly => (vec![vec![0.0; t]], true),
            Solver::Refine | Solver::Joint => return Ok(None),
        };
        let ctx = crate::backend::gpu_context_async().await?;
        let kernel = chorus_gpu::fusion::FusionKernel::new(&ctx, b, self.vocab, t)
            .map_err(|e| Error::Backend { backend: "wgpu".into(), reason: e.to_string() })?;
        Ok(Some(DeviceKernel { kernel, cands, expert_only }))
    }

    /// One step on the device: copies, the kernel, and a read-back of a few floats per row.
    async fn picks_on_device(
        &self,
        k: &DeviceKernel,
        tensors: Vec<Tensor<2>>,
        live: &[bool],
        rows: &[RowState],
    ) -> Result<Vec<Option<Pick>>> {
        use chorus_gpu::fusion::Input;
        // The step's forward kernels are still queued: wait for them first, so that the time below is the
        // fusion's own (copies, kernel, read-back) and not the models'. (The browser cannot block; there
        // the time includes the queued forward work.)
        #[cfg(not(target_family = "wasm"))]
        if let Some(t) = tensors.first() {
            t.device().sync().map_err(|e| Error::Backend { backend: "wgpu".into(), reason: format!("{e:?}") })?;
        }
        let ts = Instant::now();
        let mut enc = k.kernel.encoder();
        let mut guards = Vec::new();
        for (g, t) in self.groups.iter().zip(tensors) {
            let inputs: Vec<Input> = g
                .members
                .iter()
                .map(|&m| match m {
                    0 => Input::Large,
                    1 => Input::Base,
                    e => Input::Expert(e - 2),
                })
                .collect();
            k.kernel
                .copy_tensor(&mut enc, t, &inputs, &mut guards)
                .map_err(|e| Error::Backend { backend: "wgpu".into(), reason: e.to_string() })?;
        }
        let pending = k
            .kernel
            .record(&mut enc, &k.cands, k.expert_only)
            .map_err(|e| Error::Backend { backend: "wgpu".into(), reason: e.to_string() })?;
        let res = crate::fuse_gpu::finish(&k.kernel, enc, pending, guards).await?;
        // Sampling needs the fused distribution on the host; greedy decoding does not.
        let fused = if rows.iter().any(|r| !r.sampler.is_greedy()) {
            Some(
                k.kernel
                    .read_fused()
                    .await
                    .map_err(|e| Error::Backend { backend: "wgpu".into(), reason: e.to_string() })?,
            )
        } else {
            None
        };
        let per_row = ms(ts) / live.iter().filter(|&&l| l).count().max(1) as f64;
        Ok(res
            .into_iter()
            .enumerate()
            .map(|(r, rr)| {
                live[r].then(|| {
                    let [loss, kf, kr] = rr.losses[rr.chosen];
                    Pick {
                        alpha: k.cands[rr.chosen].clone(),
                        eval: (!k.expert_only).then_some(fusion::Eval {
                            loss: loss as f64,
                            kl_fused_large: kf as f64,
                            kl_large_fused: kr as f64,
                        }),
                        kl_expert_base: rr.constants.iter().map(|c| c[2] as f64).collect(),
                        kl_base_expert: rr.constants.iter().map(|c| c[3] as f64).collect(),
                        evaluations: k.cands.len(),
                        token: Some(rr.token),
                        fused: fused.as_ref().map(|f| f[r * self.vocab..(r + 1) * self.vocab].to_vec()),
                        search_ms: per_row,
                    }
                })
            })
            .collect())
    }

    /// (group, block) holding member `i`.
    fn locate(&self, i: usize) -> (usize, usize) {
        self.location[i]
    }

    /// Blocking [`Self::generate_batch_async`].
    #[cfg(not(target_family = "wasm"))]
    pub fn generate_batch(
        &self,
        prompts: &[String],
        opts: &FuseOptions,
        on_step: &mut dyn FnMut(StepEvent),
    ) -> Result<Vec<FuseOutput>> {
        pollster::block_on(self.generate_batch_async(prompts, opts, on_step))
    }
}

/// Solves one row: loads the evaluator, runs the configured solver.
fn choose(cfg: &FusionConfig, row: &RowLogits, eval: &mut FastEvaluator) -> Result<(Choice, fusion::Constants)> {
    // The paper solver's grid is evaluated in the load's own passes.
    eval.expect_solver(cfg, row.experts.len());
    let constants = eval.load(row).map_err(Error::from)?.clone();
    Ok((fusion::solve(cfg, eval), constants))
}

fn check_prompt(m: &Member, ids: &[u32]) -> Result<()> {
    let c = &m.model.decoder.config;
    if ids.len() >= c.max_position_embeddings {
        return Err(Error::Context {
            model: m.model.files.path.clone(),
            prompt_tokens: ids.len(),
            context: c.max_position_embeddings,
        });
    }
    Ok(())
}

/// Why α is chosen on the host although every member runs on wgpu (the cases `device_kernel` declines).
fn host_path_reason(cfg: &FusionConfig, experts: usize) -> String {
    match cfg.solver {
        Solver::Refine | Solver::Joint => {
            format!("the {:?} solver runs on the host (the device kernel evaluates a fixed candidate list)", cfg.solver)
                .to_lowercase()
        }
        Solver::Paper if experts > 1 && cfg.multi == fusion::MultiRule::Route => {
            "the route rule picks an expert from the step's constants on the host".into()
        }
        _ => "the device kernel is unavailable for this run".into(),
    }
}
