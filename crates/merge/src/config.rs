//! The merge configuration: mergekit's YAML keys (`merge_method`, `base_model`, `models[].model`,
//! `models[].parameters.weight/density`, `parameters.normalize/lambda/int8_mask/rescale`, `dtype`,
//! `out_dtype`), parsed strictly (an unknown key is an error, not ignored) and resolved into one plan
//! with mergekit 0.1.5's per-method defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// A merge method, by its mergekit name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Weighted average Σ w_i θ_i (/ Σ w_i when normalised).
    Linear,
    /// θ_0 + λ Σ w_i (θ_i − θ_0).
    TaskArithmetic,
    /// Task arithmetic over magnitude-pruned deltas with sign consensus (TIES).
    Ties,
    /// Task arithmetic over randomly dropped, rescaled deltas (DARE).
    DareLinear,
    /// DARE deltas with TIES's sign consensus.
    DareTies,
}

impl Method {
    /// Parses a mergekit method name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "linear" => Self::Linear,
            "task_arithmetic" => Self::TaskArithmetic,
            "ties" => Self::Ties,
            "dare_linear" => Self::DareLinear,
            "dare_ties" => Self::DareTies,
            _ => return None,
        })
    }

    /// The mergekit name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::TaskArithmetic => "task_arithmetic",
            Self::Ties => "ties",
            Self::DareLinear => "dare_linear",
            Self::DareTies => "dare_ties",
        }
    }

    /// Whether the method works on deltas from a base model (every method but `linear`).
    pub fn needs_base(self) -> bool {
        self != Self::Linear
    }

    /// How deltas are sparsified before mixing.
    pub fn sparsify(self) -> Sparsify {
        match self {
            Self::Ties => Sparsify::Magnitude,
            Self::DareLinear | Self::DareTies => Sparsify::Random,
            Self::Linear | Self::TaskArithmetic => Sparsify::None,
        }
    }

    /// Whether signs are elected (TIES's "sum" consensus).
    pub fn consensus(self) -> bool {
        matches!(self, Self::Ties | Self::DareTies)
    }

    /// mergekit 0.1.5's default of `normalize`.
    fn default_normalize(self) -> bool {
        matches!(self, Self::Linear | Self::Ties)
    }

    /// mergekit 0.1.5's default of `rescale` (DARE's L1 rescaling of the kept entries).
    fn default_rescale(self) -> bool {
        matches!(self, Self::DareLinear | Self::DareTies)
    }
}

/// Delta sparsification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sparsify {
    /// Keep every entry.
    None,
    /// Keep the ⌊density·n⌋ (at least one) largest |δ|.
    Magnitude,
    /// Keep each entry with probability `density`.
    Random,
}

/// Storage type of the output (and the type inputs are rounded to before merging, as mergekit does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// IEEE f32.
    Float32,
    /// IEEE f16.
    Float16,
    /// bfloat16.
    Bfloat16,
}

impl Dtype {
    /// From a mergekit dtype name (`float32`/`fp32`/`f32`, `float16`/`fp16`/`half`, `bfloat16`/`bf16`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "float32" | "fp32" | "f32" => Self::Float32,
            "float16" | "fp16" | "f16" | "half" => Self::Float16,
            "bfloat16" | "bf16" => Self::Bfloat16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn width(self) -> usize {
        if self == Self::Float32 { 4 } else { 2 }
    }

    /// The safetensors dtype name.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::Float32 => "F32",
            Self::Float16 => "F16",
            Self::Bfloat16 => "BF16",
        }
    }

    /// Rounds a value to this type (and back to f32).
    pub fn round(self, x: f32) -> f32 {
        match self {
            Self::Float32 => x,
            Self::Float16 => half::f16::from_f32(x).to_f32(),
            Self::Bfloat16 => half::bf16::from_f32(x).to_f32(),
        }
    }
}

// ---- The YAML as written (strict) ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    merge_method: String,
    #[serde(default)]
    base_model: Option<String>,
    models: Vec<RawModel>,
    #[serde(default)]
    parameters: Option<RawGlobal>,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    out_dtype: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    model: String,
    #[serde(default)]
    parameters: Option<RawModelParams>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelParams {
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    density: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    #[serde(default)]
    normalize: Option<bool>,
    #[serde(default)]
    lambda: Option<f64>,
    #[serde(default)]
    int8_mask: Option<bool>,
    #[serde(default)]
    rescale: Option<bool>,
}

// ---- The resolved plan ----

/// One input model with its resolved parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelEntry {
    /// Path (relative paths are resolved against the YAML's folder).
    pub path: PathBuf,
    /// Weight (mixing coefficient).
    pub weight: f64,
    /// Share of delta entries kept (TIES, DARE); 1 otherwise.
    pub density: f64,
}

/// A validated merge.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MergeConfig {
    /// The method.
    pub method: Method,
    /// The base model (required by every method but `linear`).
    pub base: Option<PathBuf>,
    /// The models mixed, in YAML order, without the base.
    pub models: Vec<ModelEntry>,
    /// Divide by the (consensus) weight sum.
    pub normalize: bool,
    /// Scale of the mixed delta.
    pub lambda: f64,
    /// Accepted for compatibility: mergekit's int8 mask only changes the mask's storage type, never a
    /// value, so it has no effect here.
    pub int8_mask: bool,
    /// Rescale the kept delta entries so the delta keeps its L1 norm (default on for DARE).
    pub rescale: bool,
    /// Type inputs are rounded to before merging.
    pub dtype: Dtype,
    /// Output storage type (`out_dtype`, else `dtype`).
    pub out_dtype: Dtype,
}

fn cfg_err(file: &Path, field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config { file: file.to_path_buf(), field: field.into(), reason: reason.into() }
}

impl MergeConfig {
    /// Reads and validates a YAML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), reason: e.to_string() })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, path, dir)
    }

    /// Parses and validates YAML text; `file` names it in errors, relative model paths resolve against
    /// `dir`.
    pub fn from_yaml(text: &str, file: &Path, dir: &Path) -> Result<Self> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e.location().map(|l| format!(" (line {}, column {})", l.line(), l.column())).unwrap_or_default();
            cfg_err(file, "yaml", format!("{e}{at}"))
        })?;
        let method = Method::parse(&raw.merge_method).ok_or_else(|| {
            cfg_err(
                file,
                "merge_method",
                format!(
                    "unknown method '{}' (linear, task_arithmetic, ties, dare_linear, dare_ties)",
                    raw.merge_method
                ),
            )
        })?;
        let resolve = |p: &str| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { dir.join(p) }
        };
        let base_name = raw.base_model.clone();
        if method.needs_base() && base_name.is_none() {
            return Err(cfg_err(file, "base_model", format!("{} needs a base_model", method.name())));
        }
        if raw.models.is_empty() {
            return Err(cfg_err(file, "models", "no models to merge"));
        }
        let mut models = Vec::new();
        for (i, m) in raw.models.iter().enumerate() {
            let field = |k: &str| format!("models[{i}].{k}");
            if Some(&m.model) == base_name.as_ref() && method.needs_base() {
                // mergekit lets the base appear in the list; it is the base, not a mixed model.
                continue;
            }
            let p = m.parameters.as_ref();
            let Some(weight) = p.and_then(|p| p.weight) else {
                return Err(cfg_err(file, field("parameters.weight"), format!("{} needs a weight", m.model)));
            };
            if !weight.is_finite() {
                return Err(cfg_err(file, field("parameters.weight"), format!("{weight} is not finite")));
            }
            let density = match p.and_then(|p| p.density) {
                Some(d) if method.sparsify() == Sparsify::None => {
                    return Err(cfg_err(
                        file,
                        field("parameters.density"),
                        format!("{} takes no density (got {d})", method.name()),
                    ));
                }
                Some(d) if !(d.is_finite() && (0.0..=1.0).contains(&d)) => {
                    return Err(cfg_err(file, field("parameters.density"), format!("{d} is not in [0, 1]")));
                }
                Some(d) => d,
                None => 1.0,
            };
            if models.iter().any(|e: &ModelEntry| e.path == resolve(&m.model)) {
                return Err(cfg_err(file, field("model"), format!("{} is listed twice", m.model)));
            }
            models.push(ModelEntry { path: resolve(&m.model), weight, density });
        }
        if method == Method::Linear
            && let Some(b) = &base_name
            && !raw.models.iter().any(|m| &m.model == b)
        {
            return Err(cfg_err(
                file,
                "base_model",
                format!("{b} is not one of the models (linear mixes only the listed models)"),
            ));
        }
        if models.is_empty() {
            return Err(cfg_err(file, "models", "every listed model is the base: nothing to merge"));
        }
        let g = raw.parameters.as_ref();
        let lambda = g.and_then(|g| g.lambda).unwrap_or(1.0);
        if !lambda.is_finite() {
            return Err(cfg_err(file, "parameters.lambda", format!("{lambda} is not finite")));
        }
        if method == Method::Linear {
            for (k, given) in [
                ("lambda", g.is_some_and(|g| g.lambda.is_some())),
                ("rescale", g.is_some_and(|g| g.rescale.is_some())),
                ("int8_mask", g.is_some_and(|g| g.int8_mask.is_some())),
            ] {
                if given {
                    return Err(cfg_err(file, format!("parameters.{k}"), "linear takes no such parameter"));
                }
            }
        }
        let dtype = |k: &str, v: &Option<String>| -> Result<Option<Dtype>> {
            v.as_ref()
                .map(|s| {
                    Dtype::parse(s)
                        .ok_or_else(|| cfg_err(file, k, format!("unknown dtype '{s}' (float32, float16, bfloat16)")))
                })
                .transpose()
        };
        let dt = dtype("dtype", &raw.dtype)?.unwrap_or(Dtype::Float32);
        let out = dtype("out_dtype", &raw.out_dtype)?.unwrap_or(dt);
        Ok(Self {
            method,
            base: if method.needs_base() { base_name.as_deref().map(resolve) } else { None },
            models,
            normalize: g.and_then(|g| g.normalize).unwrap_or(method.default_normalize()),
            lambda,
            int8_mask: g.and_then(|g| g.int8_mask).unwrap_or(false),
            rescale: g.and_then(|g| g.rescale).unwrap_or(method.default_rescale()),
            dtype: dt,
            out_dtype: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<MergeConfig> {
        MergeConfig::from_yaml(y, Path::new("m.yml"), Path::new("/m"))
    }

    #[test]
    fn mergekit_ties_example_resolves_with_its_defaults() {
        let c = parse(
            "merge_method: ties\nbase_model: base\nmodels:\n  - model: base\n  - model: a\n    parameters: {weight: 0.7, density: 0.5}\n  - model: /abs/b\n    parameters:\n      weight: 0.3\n      density: 0.2\nparameters:\n  int8_mask: true\ndtype: bfloat16\n",
        )
        .unwrap();
        assert_eq!(c.method, Method::Ties);
        assert_eq!(c.base, Some(PathBuf::from("/m/base")));
        assert_eq!(c.models.len(), 2);
        assert_eq!(c.models[0], ModelEntry { path: "/m/a".into(), weight: 0.7, density: 0.5 });
        assert_eq!(c.models[1].path, PathBuf::from("/abs/b"));
        assert!(c.normalize && !c.rescale && c.int8_mask && c.lambda == 1.0);
        assert_eq!((c.dtype, c.out_dtype), (Dtype::Bfloat16, Dtype::Bfloat16));
        let d = parse("merge_method: dare_linear\nbase_model: b\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.3}\n").unwrap();
        assert!(d.rescale && !d.normalize);
        let l = parse("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 3}\nout_dtype: float16\n").unwrap();
        assert!(l.normalize && l.base.is_none());
        assert_eq!((l.dtype, l.out_dtype), (Dtype::Float32, Dtype::Float16));
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (y, want) in [
            ("merge_method: slerpy\nmodels: [{model: a}]\n", "merge_method"),
            ("merge_method: ties\nmodels: [{model: a, parameters: {weight: 1}}]\n", "base_model"),
            (
                "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\ntokenizer_source: base\n",
                "tokenizer_source",
            ),
            ("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1, densty: 0.5}}]\n", "densty"),
            ("merge_method: linear\nmodels: [{model: a}]\n", "models[0].parameters.weight"),
            ("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1, density: 0.5}}]\n", "takes no density"),
            (
                "merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1, density: 1.5}}]\n",
                "not in [0, 1]",
            ),
            (
                "merge_method: linear\nbase_model: z\nmodels: [{model: a, parameters: {weight: 1}}]\n",
                "not one of the models",
            ),
            ("merge_method: ties\nbase_model: b\nmodels: [{model: b}]\n", "nothing to merge"),
            (
                "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\nparameters: {rescale: true}\n",
                "parameters.rescale",
            ),
            ("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\ndtype: int4\n", "int4"),
            ("merge_method: linear\nmodels: [{model: a, parameters: {weight: [1, 2]}}]\n", "line 2"),
            (
                "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}, {model: a, parameters: {weight: 1}}]\n",
                "twice",
            ),
        ] {
            let e = parse(y).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("m.yml"), "{y}\n→ {e}");
        }
    }
}
