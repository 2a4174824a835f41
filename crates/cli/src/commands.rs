//! `chorus generate` and `chorus inspect`, and model loading shared by every command.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chorus_core::GenerateOptions;
use chorus_engine::{Backend, LoadedModel, Prompt};
use chorus_models::{ModelFiles, WeightMode};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `chorus generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// A `.gguf` file or an HF folder (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt.
    #[arg(long, default_value = "The capital of France is")]
    pub prompt: String,
    /// Render the prompt as a user turn through the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System prompt (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    #[command(flatten)]
    pub weights: crate::commands::WeightArgs,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `chorus inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// A `.gguf` file or an HF folder.
    pub path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// List every tensor.
    #[arg(long)]
    pub tensors: bool,
}

/// Opens model files with a clear error context.
pub fn open_files(path: &Path) -> Result<ModelFiles> {
    ModelFiles::open(path).with_context(|| format!("cannot load model {}", path.display()))
}

/// Sampling and stopping options shared by `generate`-like commands (greedy unless set).
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, value_parser = crate::commands::finite_f32, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus mass in (0, 1].
    #[arg(long, value_parser = crate::commands::finite_f32, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this string appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl SamplingArgs {
    /// The engine's options.
    pub fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.clone(),
            stop_at_eos: !self.ignore_eos,
        }
    }
}

/// The compute backend: one flattened argument for every command that runs a model, parsed once.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct DeviceArgs {
    /// cpu (burn Flex) or wgpu (Vulkan/Metal/DX12; Mesa lavapipe on a machine without a GPU).
    #[arg(long, default_value = "cpu", value_parser = |s: &str| s.parse::<Backend>().map_err(|e| e.to_string()))]
    pub backend: Backend,
}

impl DeviceArgs {
    /// The burn device of the backend.
    pub fn device(&self) -> Result<burn::tensor::Device> {
        Ok(chorus_engine::device(self.backend)?)
    }
}

/// clap value parser of a finite `f64`: NaN and ±∞ are refused naming the value (exit status 2, as every
/// usage error), before they can reach a solver, a schedule or a sampler.
pub fn finite_f64(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{s:?} is not a number ({e})"))?;
    if v.is_finite() { Ok(v) } else { Err(format!("{s} is not a finite number")) }
}

/// clap value parser of a finite `f32` (see [`finite_f64`]); a value beyond f32's range is refused too.
pub fn finite_f32(s: &str) -> std::result::Result<f32, String> {
    let v = finite_f64(s)?;
    let x = v as f32;
    if x.is_finite() { Ok(x) } else { Err(format!("{s} is outside the range of a 32-bit float")) }
}

/// `--weights`, parsed once: the form the model's weights take (`None`: `auto`, the backend's default).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct WeightArgs {
    /// Weight form: auto (native), native (the file's blocks as stored: on cpu the CPU engine, activations
    /// quantized per matmul; on wgpu the device decoder, blocks decoded in the GPU kernels) or f32
    /// (dequantized burn tensors; any backend, task deltas).
    #[arg(long = "weights", default_value = "auto", value_parser = parse_weights)]
    pub mode: Weights,
}

/// What `--weights` names: a form, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights(pub Option<WeightMode>);

fn parse_weights(s: &str) -> std::result::Result<Weights, String> {
    if s == "auto" { Ok(Weights(None)) } else { s.parse().map(|m| Weights(Some(m))) }
}

impl std::fmt::Display for WeightArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mode.0 {
            Some(m) => write!(f, "{m}"),
            None => f.write_str("auto"),
        }
    }
}

/// Loads a model on a backend, with a progress bar on a terminal.
pub fn load(path: &Path, device: &DeviceArgs, weights: WeightArgs) -> Result<LoadedModel> {
    let (backend, mode) = (device.backend, weights.mode.0);
    // `load_ms` reports the whole load a user waits for: parsing the file and building its tokenizer as
    // well as preparing the weights (the engine's own figure covers only the latter).
    let t0 = std::time::Instant::now();
    let files = open_files(path)?;
    let device = chorus_engine::device(backend)?;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(files.expected_tensors().len() as u64);
        b.set_style(
            ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} tensors ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_message(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        Some(b)
    } else {
        None
    };
    let mut model = LoadedModel::load(files, backend, &device, mode, &mut |done, _| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    })
    .with_context(|| format!("cannot load weights of {}", path.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    model.load_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(model)
}

/// `chorus generate`.
pub fn generate(a: GenerateArgs) -> Result<()> {
    let model = load(&a.model, &a.device, a.weights)?;
    let prompt = if a.chat {
        Prompt::Chat { system: a.system.clone(), user: a.prompt.clone() }
    } else {
        Prompt::Text(a.prompt.clone())
    };
    let ids = model.encode(&prompt)?;
    let opts = a.sampling.options();
    let stream = !a.json;
    let mut stdout = std::io::stdout().lock();
    if stream && !a.chat {
        write!(stdout, "{}", a.prompt)?;
        stdout.flush()?;
    }
    let mut write_err = None;
    let out = model.generate(&ids, &opts, &mut |_, delta| {
        if stream && !delta.is_empty() && write_err.is_none() {
            write_err = write!(stdout, "{delta}").and_then(|_| stdout.flush()).err();
        }
    })?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    if stream {
        writeln!(stdout)?;
    } else {
        let j = serde_json::json!({
            "model": a.model.display().to_string(),
            "backend": model.backend.name(),
            "prompt_tokens": out.prompt_tokens,
            "tokens": out.tokens,
            "text": out.text,
            "stop_reason": out.stop_reason,
            "load_ms": model.load_ms,
            "prefill_ms": out.prefill_ms,
            "decode_ms": out.decode_ms,
            "decode_tokens_per_s": out.decode_tokens_per_s,
        });
        writeln!(stdout, "{j}")?;
    }
    Ok(())
}

/// `chorus inspect`.
pub fn inspect(a: InspectArgs) -> Result<()> {
    let files = open_files(&a.path)?;
    let c = &files.config;
    let tensors = files.stored_tensors();
    let mut types: std::collections::BTreeMap<String, usize> = Default::default();
    for t in &tensors {
        *types.entry(t.dtype.clone()).or_default() += 1;
    }
    let tk = &files.tokenizer;
    let (format, version, meta_count) = match &files.weights {
        chorus_models::source::WeightSource::Gguf(g) => ("gguf", Some(g.version), g.metadata.len()),
        chorus_models::source::WeightSource::Safetensors(_) => ("safetensors", None, 0),
    };
    if a.json {
        let j = serde_json::json!({
            "path": files.path, "format": format, "gguf_version": version, "metadata_keys": meta_count,
            "config": c, "parameters": c.parameter_count(), "tensor_types": types,
            "tokenizer": {"kind": tk.kind, "vocab_size": tk.vocab_size(), "bos": tk.bos_id, "eos": tk.eos_ids,
                          "pad": tk.pad_id, "add_bos": tk.add_bos},
            "chat_template": tk.chat_template,
            "tensors": if a.tensors { serde_json::to_value(&tensors)? } else { serde_json::Value::Null },
        });
        println!("{j}");
        return Ok(());
    }
    println!("model         {}", files.path);
    println!("format        {format}{}", version.map(|v| format!(" v{v}")).unwrap_or_default());
    println!("architecture  {}", c.architecture.name());
    println!("parameters    {} ({:.1} M)", c.parameter_count(), c.parameter_count() as f64 / 1e6);
    println!(
        "shape         {} layers, hidden {}, ffn {}, heads {} (kv {}), head_dim {}",
        c.num_layers, c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads, c.head_dim
    );
    println!(
        "              vocab rows {}, context {}, rope theta {}, rms eps {}, tied embeddings {}, qkv bias {}",
        c.vocab_size, c.max_position_embeddings, c.rope_theta, c.rms_norm_eps, c.tie_word_embeddings, c.attention_bias
    );
    let types: Vec<String> = types.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    println!("tensor types  {} ({} tensors)", types.join(", "), tensors.len());
    let name = |id: u32| tk.id_to_token(id).unwrap_or_else(|| "?".into());
    println!(
        "tokenizer     {}, {} tokens, bos {}, eos [{}], pad {}",
        tk.kind,
        tk.vocab_size(),
        tk.bos_id.map(|b| format!("{b} {:?}", name(b))).unwrap_or_else(|| "none".into()),
        tk.eos_ids.iter().map(|&e| format!("{e} {:?}", name(e))).collect::<Vec<_>>().join(", "),
        tk.pad_id
    );
    match &tk.chat_template {
        Some(t) => println!("chat template {} chars: {:?}…", t.len(), t.chars().take(70).collect::<String>()),
        None => println!("chat template none"),
    }
    if a.tensors {
        for t in &tensors {
            println!("  {:<48} {:<6} {:?}", t.name, t.dtype, t.shape);
        }
    }
    Ok(())
}

/// The fetch script's cache: `$CHORUS_HOME`, default `~/.cache/chorus`.
pub fn chorus_home() -> PathBuf {
    std::env::var_os("CHORUS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/chorus"))
}
