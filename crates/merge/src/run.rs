//! Runs a merge: opens the inputs, checks that every model has every tensor of the base with the same
//! shape (before anything is written), then streams tensor by tensor (read the inputs, merge, write,
//! let the inputs' pages go) into a temporary folder that is renamed into place only on success.
//! Peak memory is about (inputs + 1) × the largest tensor in f32 (the merge reuses the input buffers)
//! plus a 1 MiB write buffer and the pages of the tensor being read.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::{MergeConfig, Method};
use crate::error::{Error, Result};
use crate::input::Input;
use crate::methods::{Masks, merge_tensor};
use crate::writer::{ShardPlan, ShardWriter};

/// Options of a run.
pub struct RunOptions<'a> {
    /// Largest shard, bytes of tensor data (mergekit's default is 5 × 10⁹).
    pub shard_bytes: u64,
    /// Replace an existing, non-empty `out` (otherwise refused before any work).
    pub force: bool,
    /// Where DARE's keep masks come from.
    pub masks: &'a mut dyn Masks,
    /// Called after each tensor with (tensors done, tensors in all, name).
    pub progress: &'a mut dyn FnMut(usize, usize, &str),
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// The method.
    pub method: Method,
    /// Output folder.
    pub out: PathBuf,
    /// Tensors written.
    pub tensors: usize,
    /// Shard files written.
    pub shards: usize,
    /// Bytes of tensor data written.
    pub bytes: u64,
    /// Bytes of tensor data read from the inputs (as f32 after decoding).
    pub input_values: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Peak resident set of this process so far (Linux `VmHWM`), bytes; `None` elsewhere.
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident set size of this process (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Merges into `out` (refused when it exists and is not empty, unless `opts.force`, and always when it
/// overlaps an input). On error nothing is left at `out` (nor in its temporary) and a replaced `out` is
/// untouched.
pub fn run(cfg: &MergeConfig, out: &Path, opts: RunOptions) -> Result<Summary> {
    let t0 = Instant::now();
    let inputs: Vec<&Path> =
        cfg.base.iter().map(PathBuf::as_path).chain(cfg.models.iter().map(|m| m.path.as_path())).collect();
    chorus_core::output::check(out, &inputs, opts.force)?;
    let base = cfg.base.as_deref().map(Input::open).transpose()?;
    let models: Vec<Input> = cfg.models.iter().map(|m| Input::open(&m.path)).collect::<Result<_>>()?;
    // The reference model decides the tensor list and the companion files.
    let reference = base.as_ref().unwrap_or(&models[0]);
    let others: Vec<&Input> = base.iter().chain(&models).collect();
    let tensors = common_tensors(reference, &others)?;
    let companions = reference.companion_files()?;
    let mut summary = chorus_core::output::write_dir(out, opts.force, |tmp| {
        for (name, bytes) in &companions {
            let p = tmp.join(name);
            std::fs::write(&p, bytes).map_err(|e| Error::Io { path: p.clone(), reason: e.to_string() })?;
        }
        let plan = ShardPlan::new(&tensors, cfg.out_dtype, opts.shard_bytes);
        let shards = plan.shards.len();
        let mut w = ShardWriter::new(plan, tmp);
        let mut input_values = 0u64;
        for (k, (name, shape)) in tensors.iter().enumerate() {
            let round = |mut v: Vec<f32>| {
                if cfg.dtype != crate::config::Dtype::Float32 {
                    v.iter_mut().for_each(|x| *x = cfg.dtype.round(*x));
                }
                v
            };
            let b = base.as_ref().map(|b| b.read(name, shape).map(round)).transpose()?;
            // One reader per model: page faults and decoding of different files overlap.
            let xs: Vec<Vec<f32>> = std::thread::scope(|sc| {
                let handles: Vec<_> = models.iter().map(|m| sc.spawn(move || m.read(name, shape).map(round))).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Input {
                                model: "*".into(),
                                tensor: name.clone(),
                                reason: "reader panicked".into(),
                            })
                        })
                    })
                    .collect::<Result<_>>()
            })?;
            input_values += (xs.len() + b.is_some() as usize) as u64 * xs[0].len() as u64;
            let merged = merge_tensor(cfg, name, b.as_deref(), xs, opts.masks)?;
            drop(b);
            w.write(name, &merged)?;
            for m in base.iter().chain(&models) {
                m.release(name);
            }
            (opts.progress)(k + 1, tensors.len(), name);
        }
        let bytes = w.finish()?;
        // The resolved configuration travels with the weights (mergekit writes its YAML the same way).
        let p = tmp.join("chorus_merge.json");
        std::fs::write(&p, serde_json::to_vec_pretty(cfg).unwrap_or_default())
            .map_err(|e| Error::Io { path: p.clone(), reason: e.to_string() })?;
        Ok::<_, Error>(Summary {
            method: cfg.method,
            out: out.to_path_buf(),
            tensors: tensors.len(),
            shards,
            bytes,
            input_values,
            seconds: 0.0,
            peak_rss_bytes: None,
        })
    })?;
    summary.seconds = t0.elapsed().as_secs_f64();
    summary.peak_rss_bytes = peak_rss_bytes();
    Ok(summary)
}

/// The tensors of `reference` (sorted naturally), after checking that every model in `others` has each of
/// them with the same shape and nothing more: all before anything is written.
pub(crate) fn common_tensors(reference: &Input, others: &[&Input]) -> Result<Vec<(String, Vec<usize>)>> {
    let tensors = reference.tensors();
    if tensors.is_empty() {
        return Err(Error::Input {
            model: reference.path.display().to_string(),
            tensor: "*".into(),
            reason: "no floating-point tensors".into(),
        });
    }
    for m in others {
        let theirs = m.tensors();
        for (name, shape) in &tensors {
            match theirs.binary_search_by(|(n, _)| natural_cmp(n, name)) {
                Ok(i) if &theirs[i].1 == shape => {}
                Ok(i) => {
                    return Err(Error::Input {
                        model: m.path.display().to_string(),
                        tensor: name.clone(),
                        reason: format!("shape {:?}, {} has {shape:?}", theirs[i].1, reference.path.display()),
                    });
                }
                Err(_) => {
                    return Err(Error::Input {
                        model: m.path.display().to_string(),
                        tensor: name.clone(),
                        reason: format!("missing ({} has it)", reference.path.display()),
                    });
                }
            }
        }
        if theirs.len() != tensors.len()
            && let Some((extra, _)) =
                theirs.iter().find(|(n, _)| tensors.binary_search_by(|(r, _)| natural_cmp(r, n)).is_err())
        {
            return Err(Error::Input {
                model: m.path.display().to_string(),
                tensor: extra.clone(),
                reason: format!("not in {} (different architectures?)", reference.path.display()),
            });
        }
    }
    Ok(tensors)
}

fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    crate::input::natural_key(a).cmp(&crate::input::natural_key(b))
}
