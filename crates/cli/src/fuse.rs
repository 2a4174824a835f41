//! `chorus fuse` (fused decoding with Dynamic Logit Fusion), its `--trace` JSON lines, and
//! `chorus plot-trace` (α per token per expert as SVG or PNG).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chorus_core::fusion::{AlphaRange, FusionConfig, MultiRule, Solver};
use chorus_engine::{FuseOptions, Fusion, FusionSetup, LoadedModel, Member, StepRecord};
use clap::Args;

/// Models and solver of a fusion (shared by `fuse`, `eval fuse` and `bench fuse`).
#[derive(Args, Clone)]
pub struct FusionArgs {
    /// The large base model (GGUF file or HF folder). With no --large, --base or --expert, `chorus fuse`
    /// runs the embedded zoo family (the prompt's task expert, or all experts).
    #[arg(long)]
    pub large: Option<PathBuf>,
    /// The small base model the experts were tuned from.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// An expert, NAME=PATH (repeatable). PATH may be the base's: a prompt-defined expert that shares the
    /// loaded weights.
    #[arg(long = "expert", value_name = "NAME=PATH")]
    pub experts: Vec<String>,
    /// An expert's instruction, NAME=TEXT: its system prompt with --chat, a prefix otherwise.
    #[arg(long = "expert-prompt", value_name = "NAME=TEXT")]
    pub expert_prompts: Vec<String>,
    /// How α is chosen: paper (grid 0..2 step 0.1), refine, joint, static, large-only, expert-only.
    #[arg(long, default_value = "paper")]
    pub solver: String,
    /// The fixed α of --solver static (proxy-tuning is 1).
    #[arg(long, value_parser = crate::commands::finite_f32)]
    pub alpha: Option<f32>,
    /// How several experts share a step: centroid (the paper: one-hot search, loss over every expert) or
    /// route (the expert furthest from the base this step, solved alone).
    #[arg(long, default_value = "centroid")]
    pub multi: String,
    /// Search range of an expert's α, NAME=LO:HI (repeatable; default 0:2).
    #[arg(long = "range", value_name = "NAME=LO:HI")]
    pub ranges: Vec<String>,
    #[command(flatten)]
    pub device: crate::commands::DeviceArgs,
    #[command(flatten)]
    pub weights: crate::commands::WeightArgs,
}

fn split_pair<'a>(s: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n, v)),
        _ => bail!("{flag} {s:?}: expected NAME=VALUE"),
    }
}

impl FusionArgs {
    /// Expert names in order.
    pub fn expert_names(&self) -> Result<Vec<String>> {
        self.experts.iter().map(|e| Ok(split_pair(e, "--expert")?.0.to_string())).collect()
    }

    /// Whether no model was named (the embedded zoo family); naming only some of them is an error.
    pub fn embedded(&self) -> Result<bool> {
        match (&self.large, &self.base, self.experts.is_empty()) {
            (None, None, true) if self.expert_prompts.is_empty() => Ok(true),
            (Some(_), Some(_), false) => Ok(false),
            _ => bail!(
                "--large, --base and at least one --expert go together (name none of them to run the embedded zoo \
                 family; --expert-prompt needs named experts)"
            ),
        }
    }

    /// The solver configuration for the named experts.
    pub fn config(&self) -> Result<FusionConfig> {
        self.config_for(&self.expert_names()?)
    }

    /// The solver configuration for experts called `names` (in order).
    pub fn config_for(&self, names: &[String]) -> Result<FusionConfig> {
        if self.alpha.is_some() && self.solver != "static" {
            bail!("--alpha is only used with --solver static");
        }
        let solver = Solver::parse(&self.solver, self.alpha)?;
        let mut ranges = vec![AlphaRange::default(); names.len()];
        for r in &self.ranges {
            let (name, v) = split_pair(r, "--range")?;
            let t = names.iter().position(|n| n == name).with_context(|| format!("--range {r}: no expert {name:?}"))?;
            let (lo, hi) = v.split_once(':').with_context(|| format!("--range {r}: expected LO:HI"))?;
            let lo: f32 = lo.parse().with_context(|| format!("--range {r}: LO {lo:?} is not a number"))?;
            let hi: f32 = hi.parse().with_context(|| format!("--range {r}: HI {hi:?} is not a number"))?;
            ranges[t] = AlphaRange { lo, hi };
        }
        let cfg = FusionConfig { solver, ranges, multi: MultiRule::parse(&self.multi)?, ..Default::default() };
        cfg.validate(names.len())?;
        Ok(cfg)
    }

    /// Loads every model once (paths that resolve to the same file share one loaded model).
    pub fn load(&self) -> Result<Fusion> {
        let mut cache: HashMap<PathBuf, Arc<LoadedModel>> = HashMap::new();
        let mut get = |p: &Path| -> Result<Arc<LoadedModel>> {
            let key = p.canonicalize().with_context(|| format!("cannot open model {}", p.display()))?;
            if let Some(m) = cache.get(&key) {
                return Ok(m.clone());
            }
            eprintln!("loading {}", p.display());
            let m = Arc::new(crate::commands::load(p, &self.device, self.weights)?);
            cache.insert(key, m.clone());
            Ok(m)
        };
        let mut prompts: HashMap<String, String> = HashMap::new();
        for p in &self.expert_prompts {
            let (n, v) = split_pair(p, "--expert-prompt")?;
            prompts.insert(n.to_string(), v.to_string());
        }
        let names = self.expert_names()?;
        for n in prompts.keys() {
            if !names.contains(n) {
                bail!("--expert-prompt {n}=…: no --expert named {n:?}");
            }
        }
        let (Some(large), Some(base)) = (&self.large, &self.base) else {
            bail!("this command needs --large, --base and at least one --expert");
        };
        if self.experts.is_empty() {
            bail!("this command needs at least one --expert NAME=PATH");
        }
        let large = Member { name: "large".into(), model: get(large)?, instruction: None };
        let base = Member { name: "base".into(), model: get(base)?, instruction: None };
        let mut experts = Vec::new();
        for e in &self.experts {
            let (name, path) = split_pair(e, "--expert")?;
            if experts.iter().any(|m: &Member| m.name == name) {
                bail!("--expert {name}: the name is used twice");
            }
            experts.push(Member {
                name: name.to_string(),
                model: get(Path::new(path))?,
                instruction: prompts.get(name).cloned(),
            });
        }
        Ok(Fusion::new(FusionSetup { large, base, experts })?)
    }
}

/// Arguments of `chorus fuse`.
#[derive(Args)]
pub struct FuseArgs {
    #[command(flatten)]
    fusion: FusionArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Give every model the prompt through its own chat template.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    sampling: crate::commands::SamplingArgs,
    /// Print one JSON object (text, tokens, alphas, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Write one JSON line per step (token, piece, α, loss, the four KL values).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Replace an existing --trace file.
    #[arg(long)]
    force: bool,
}

/// `chorus fuse`.
pub fn fuse(a: FuseArgs) -> Result<()> {
    if let Some(p) = &a.trace {
        chorus_core::output::check(p, &[], a.force)?;
    }
    let (fusion, cfg) = if a.fusion.embedded()? {
        let backend: chorus_engine::Backend = a.fusion.device.backend;
        let demo = chorus_zoo::demo::Demo::load(backend).context("loading the embedded zoo family")?;
        let setup = demo.setup(&a.prompt);
        let names: Vec<String> = setup.experts.iter().map(|m| m.name.clone()).collect();
        eprintln!("no models named: the embedded zoo family, expert(s) {}", names.join(", "));
        let cfg = a.fusion.config_for(&names)?;
        (Fusion::new(setup)?, cfg)
    } else {
        let cfg = a.fusion.config()?;
        (a.fusion.load()?, cfg)
    };
    let opts = FuseOptions { generate: a.sampling.options(), fusion: cfg, chat: a.chat };
    let mut stdout = std::io::stdout().lock();
    if !a.json && !a.chat {
        write!(stdout, "{}", a.prompt)?;
        stdout.flush()?;
    }
    let mut write_err = None;
    let mut out = fusion.generate_batch(std::slice::from_ref(&a.prompt), &opts, &mut |ev| {
        if !a.json && !ev.delta.is_empty() && write_err.is_none() {
            write_err = write!(stdout, "{}", ev.delta).and_then(|_| stdout.flush()).err();
        }
    })?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    let out = out.remove(0);
    if let Some(path) = &a.trace {
        let mut text = String::new();
        for s in &out.steps {
            text.push_str(&serde_json::to_string(s)?);
            text.push('\n');
        }
        chorus_core::output::write_file(path, text.as_bytes(), a.force)?;
    }
    let names: Vec<String> = fusion.members()[2..].iter().map(|m| m.name.clone()).collect();
    let step_ms = if out.decode_tokens_per_s > 0.0 { 1000.0 / out.decode_tokens_per_s } else { 0.0 };
    let search_per_step = out.search_ms / out.steps.len().max(1) as f64;
    if let Some(why) = &out.host_reason {
        eprintln!("note: α was chosen on the host in {} of {} steps: {why}", out.host_steps, out.steps.len());
    }
    if a.json {
        let j = serde_json::json!({
            "text": out.text,
            "tokens": out.tokens,
            "experts": names,
            "alphas": out.steps.iter().map(|s| &s.alpha).collect::<Vec<_>>(),
            "solver": opts.fusion.solver.name(),
            "multi": opts.fusion.multi.name(),
            "stop_reason": out.stop_reason,
            "prompt_tokens": out.prompt_tokens,
            "prefill_ms": out.prefill_ms,
            "decode_ms": out.decode_ms,
            "decode_tokens_per_s": out.decode_tokens_per_s,
            "search_ms_per_step": search_per_step,
            "search_fraction_of_step": if step_ms > 0.0 { search_per_step / step_ms } else { 0.0 },
            "host_steps": out.host_steps,
            "host_reason": out.host_reason,
        });
        writeln!(stdout, "{j}")?;
    } else {
        writeln!(stdout)?;
        let alphas: Vec<String> = out
            .steps
            .iter()
            .map(|s| {
                let a: Vec<String> = s.alpha.iter().map(|x| format!("{x:.2}")).collect();
                format!("{:?}:{}", s.piece, a.join("/"))
            })
            .collect();
        eprintln!("α per token ({}): {}", names.join("/"), alphas.join(" "));
        eprintln!(
            "{} tokens, {:.2} tok/s, α search {:.2} ms/step ({:.1}% of a step), solver {}",
            out.tokens.len(),
            out.decode_tokens_per_s,
            search_per_step,
            if step_ms > 0.0 { 100.0 * search_per_step / step_ms } else { 0.0 },
            opts.fusion.solver.name()
        );
    }
    Ok(())
}

/// Arguments of `chorus plot-trace`.
#[derive(Args)]
pub struct PlotTraceArgs {
    /// A trace written by `chorus fuse --trace`.
    pub trace: PathBuf,
    /// Output image: .svg or .png (an existing file is replaced only with --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Expert names for the legend (default: expert 0, 1, …).
    #[arg(long = "name")]
    pub names: Vec<String>,
}

/// DejaVu Sans Mono (Bitstream Vera licence, `assets/DejaVu-LICENSE.txt`): PNG output rasterises its
/// text itself, and a font shipped in the binary keeps that independent of the machine's fonts.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// `chorus plot-trace`.
pub fn plot_trace(a: PlotTraceArgs) -> Result<()> {
    plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the embedded plot font does not parse"))?;
    let text = std::fs::read_to_string(&a.trace).with_context(|| format!("cannot read {}", a.trace.display()))?;
    let mut steps: Vec<StepRecord> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        #[derive(serde::Deserialize)]
        struct Line {
            alpha: Vec<f32>,
            piece: String,
        }
        let l: Line = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not a trace record (need alpha, piece)", a.trace.display(), i + 1))?;
        // The plot's axis is sized from α: a value beyond f32 (read as ∞) or absurdly large is refused.
        if let Some(x) = l.alpha.iter().find(|x| !(x.is_finite() && x.abs() <= 1e6)) {
            bail!("{} line {}: α {x} is not a finite number of at most 1e6", a.trace.display(), i + 1);
        }
        steps.push(StepRecord {
            step: steps.len(),
            token: 0,
            piece: l.piece,
            alpha: l.alpha,
            loss: None,
            kl_fused_large: None,
            kl_large_fused: None,
            kl_expert_base: Vec::new(),
            kl_base_expert: Vec::new(),
            evaluations: 0,
            search_ms: 0.0,
        });
    }
    if steps.is_empty() {
        bail!("{}: no steps", a.trace.display());
    }
    let t = steps[0].alpha.len();
    if t == 0 {
        bail!("{} line 1: no α values", a.trace.display());
    }
    if let Some(bad) = steps.iter().position(|s| s.alpha.len() != t) {
        bail!("{} line {}: {} α values, the first line has {t}", a.trace.display(), bad + 1, steps[bad].alpha.len());
    }
    let names: Vec<String> = (0..t).map(|k| a.names.get(k).cloned().unwrap_or_else(|| format!("expert {k}"))).collect();
    let ext = a.out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext != "svg" && ext != "png" {
        bail!("--out {}: use a .svg or .png file name", a.out.display());
    }
    chorus_core::output::check(&a.out, &[&a.trace], a.force)?;
    // Drawn into a temporary sibling (same extension: the encoder picks the format by it), then renamed.
    chorus_core::output::write_file_with(&a.out, a.force, |tmp| match ext.as_str() {
        "svg" => draw(plotters::backend::SVGBackend::new(tmp, (900, 360)), &steps, &names),
        _ => draw(plotters::backend::BitMapBackend::new(tmp, (900, 360)), &steps, &names),
    })
    .with_context(|| format!("cannot write {}", a.out.display()))
}

fn draw<B: plotters::prelude::DrawingBackend>(backend: B, steps: &[StepRecord], names: &[String]) -> Result<()>
where
    B::ErrorType: 'static,
{
    use plotters::prelude::*;
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let top = steps.iter().flat_map(|s| s.alpha.iter().copied()).fold(2.0f32, f32::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("DLF: α per generated token", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0f32..steps.len().max(2) as f32 - 1.0, 0f32..top * 1.05)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart.configure_mesh().x_desc("token").y_desc("α").draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (k, name) in names.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        chart
            .draw_series(LineSeries::new(
                steps.iter().enumerate().map(|(i, s)| (i as f32, s.alpha[k])),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}
