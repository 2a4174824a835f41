//! `chorus merge`: a mergekit-compatible offline merge (linear, task arithmetic, TIES, DARE) from a YAML
//! file, streamed tensor by tensor into a new HF folder.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chorus_merge::methods::SeededMasks;
use chorus_merge::{MergeConfig, RunOptions, run};
use clap::Args;

/// Arguments of `chorus merge`.
#[derive(Args)]
pub struct MergeArgs {
    /// The merge configuration (mergekit YAML: merge_method, base_model, models, parameters, dtype).
    pub config: PathBuf,
    /// Destination folder (written under a temporary name and renamed on success; an existing non-empty
    /// folder is replaced only with --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
    /// Seed of DARE's keep masks (each model and tensor gets its own stream of it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Largest output shard: bytes of tensor data, with an optional K/M/G suffix (powers of 1000).
    #[arg(long, default_value = "5G")]
    pub shard_size: String,
    /// Print a JSON summary (tensors, bytes, seconds, peak RSS) instead of the text one.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1_000,
                'M' => 1_000_000,
                'G' | 'B' => 1_000_000_000,
                _ => bail!("--shard-size {s:?}: unknown suffix {c:?} (K, M, G)"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num.parse().with_context(|| format!("--shard-size {s:?}: not a number"))?;
    if !(n.is_finite() && n > 0.0) {
        bail!("--shard-size {s:?}: must be positive");
    }
    Ok((n * mul as f64) as u64)
}

/// A progress bar over the tensors of a model (merges, twin packs).
pub(crate) fn tensor_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tensors {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Moves `bar` to `done` of `total`, showing the tensor's name.
pub(crate) fn tick(bar: &indicatif::ProgressBar, done: usize, total: usize, name: &str) {
    bar.set_length(total as u64);
    bar.set_position(done as u64);
    bar.set_message(name.to_string());
}

/// `chorus merge`.
pub fn merge(a: MergeArgs) -> Result<()> {
    let cfg = MergeConfig::from_file(&a.config)?;
    let shard_bytes = parse_size(&a.shard_size)?;
    let bar = tensor_bar();
    let mut progress = |done: usize, total: usize, name: &str| tick(&bar, done, total, name);
    let summary = run(
        &cfg,
        &a.out,
        RunOptions { shard_bytes, force: a.force, masks: &mut SeededMasks { seed: a.seed }, progress: &mut progress },
    )
    .with_context(|| format!("merging {} into {}", a.config.display(), a.out.display()))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "{}: {} tensors, {} shard(s), {:.1} MB in {:.2} s, peak RSS {} → {}",
            cfg.method.name(),
            summary.tensors,
            summary.shards,
            summary.bytes as f64 / 1e6,
            summary.seconds,
            summary.peak_rss_bytes.map_or("n/a".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
            a.out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("5G").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("1.5M").unwrap(), 1_500_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("0").is_err() && parse_size("3Q").is_err() && parse_size("x").is_err());
    }
}
