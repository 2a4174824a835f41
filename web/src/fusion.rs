//! Dynamic Logit Fusion in the page: a large base steered by small experts, the same engine code as
//! `chorus fuse`, with every accepted token (its α vector, loss and KL terms) handed to a callback as it
//! is made.

use std::sync::Arc;

use chorus_core::fusion::{AlphaRange, FusionConfig, MultiRule, Solver};
use chorus_engine::{FuseOptions, Fusion, FusionSetup, Member};
use js_sys::{Function, Reflect};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::error::{WebError, js};
use crate::model::ChorusModel;
use crate::opts::{self, field};

/// Fusion keys an options object may hold besides the `GenerateOptions` ones.
const FUSION_KEYS: &[&str] = &["solver", "alpha", "multi", "ranges", "chat"];

/// A large base, a small base and named experts, fused at decode time.
#[wasm_bindgen]
pub struct ChorusFusion {
    large: Member,
    base: Member,
    experts: Vec<Member>,
}

/// What the result carries besides the engine's output: the expert names, in α order.
#[derive(Serialize)]
struct WebFuseOutput<'a> {
    experts: Vec<&'a str>,
    solver: &'static str,
    multi: &'static str,
    #[serde(flatten)]
    out: &'a chorus_engine::FuseOutput,
}

fn member(name: &str, m: &ChorusModel, instruction: Option<String>) -> Member {
    Member { name: name.into(), model: Arc::clone(&m.model), instruction }
}

/// The solver configuration of an options object for experts `names`.
fn fusion_config(options: &JsValue, names: &[String]) -> Result<(FusionConfig, bool), WebError> {
    if options.is_undefined() || options.is_null() {
        return Ok((FusionConfig { ranges: vec![AlphaRange::default(); names.len()], ..Default::default() }, false));
    }
    let text = |k: &str| -> Result<Option<String>, WebError> {
        field(options, k)
            .map(|v| v.as_string().ok_or_else(|| WebError::Input(format!("options: `{k}` must be a string"))))
            .transpose()
    };
    let alpha = field(options, "alpha")
        .map(|v| {
            v.as_f64().map(|a| a as f32).ok_or_else(|| WebError::Input("options: `alpha` must be a number".into()))
        })
        .transpose()?;
    let solver_name = text("solver")?.unwrap_or_else(|| "paper".into());
    if alpha.is_some() && solver_name != "static" {
        return Err(WebError::Input("options: `alpha` is only used with solver \"static\"".into()));
    }
    let solver = Solver::parse(&solver_name, alpha).map_err(|e| WebError::Input(format!("options: solver: {e}")))?;
    let multi = MultiRule::parse(&text("multi")?.unwrap_or_else(|| "centroid".into()))
        .map_err(|e| WebError::Input(format!("options: multi: {e}")))?;
    let mut ranges = vec![AlphaRange::default(); names.len()];
    if let Some(r) = field(options, "ranges") {
        opts::check_keys(&r, &names.iter().map(String::as_str).collect::<Vec<_>>(), "options.ranges")?;
        for (t, n) in names.iter().enumerate() {
            if let Some(v) = field(&r, n) {
                let pair: Vec<f64> = serde_wasm_bindgen::from_value(v)
                    .map_err(|e| WebError::Input(format!("options.ranges.{n}: expected [lo, hi]: {e}")))?;
                let [lo, hi] = pair[..] else {
                    return Err(WebError::Input(format!("options.ranges.{n}: expected [lo, hi]")));
                };
                ranges[t] = AlphaRange { lo: lo as f32, hi: hi as f32 };
            }
        }
    }
    let chat = field(options, "chat").map(|c| c.as_bool().unwrap_or(false)).unwrap_or(false);
    let cfg = FusionConfig { solver, ranges, multi, ..Default::default() };
    cfg.validate(names.len()).map_err(|e| WebError::Input(format!("options: {e}")))?;
    Ok((cfg, chat))
}

#[wasm_bindgen]
impl ChorusFusion {
    /// A fusion of `large` steered by experts tuned from `base` (add them with `addExpert`).
    #[wasm_bindgen(constructor)]
    pub fn new(large: &ChorusModel, base: &ChorusModel) -> ChorusFusion {
        ChorusFusion { large: member("large", large, None), base: member("base", base, None), experts: Vec::new() }
    }

    /// Adds an expert. `instruction` is its system prompt with chat prompts, a prefix otherwise; an
    /// expert may share the base's weights and differ only in its instruction.
    #[wasm_bindgen(js_name = addExpert)]
    pub fn add_expert(
        &mut self,
        name: String,
        model: &ChorusModel,
        instruction: Option<String>,
    ) -> Result<(), JsError> {
        if name.is_empty() || self.experts.iter().any(|e| e.name == name) {
            return Err(js(WebError::Input(format!("expert name {name:?} is empty or already used"))));
        }
        self.experts.push(member(&name, model, instruction));
        Ok(())
    }

    /// Expert names, in the order of every α vector.
    #[wasm_bindgen(getter)]
    pub fn experts(&self) -> Vec<String> {
        self.experts.iter().map(|e| e.name.clone()).collect()
    }

    /// Fused generation. `options`: the `GenerateOptions` fields plus `solver` ("paper", "refine",
    /// "joint", "static", "large-only", "expert-only"), `alpha` (static only), `multi` ("centroid" |
    /// "route"), `ranges` (`{expert: [lo, hi]}`) and `chat`. `on_step(step)` gets every accepted token:
    /// `{step, token, piece, delta, alpha, loss, kl_fused_large, kl_large_fused, kl_expert_base,
    /// kl_base_expert, evaluations, search_ms}`. Resolves to `{experts, solver, multi, tokens, text,
    /// steps, stop_reason, prompt_tokens, prefill_ms, decode_ms, decode_tokens_per_s, search_ms}`.
    #[wasm_bindgen(unchecked_return_type = "Promise<FuseResult>")]
    pub fn fuse(
        &self,
        prompt: String,
        #[wasm_bindgen(unchecked_param_type = "FuseOptions | undefined")] options: JsValue,
        #[wasm_bindgen(unchecked_param_type = "((step: FuseStep) => void) | undefined")] on_step: Option<Function>,
    ) -> js_sys::Promise {
        let setup = FusionSetup { large: self.large.clone(), base: self.base.clone(), experts: self.experts.clone() };
        wasm_bindgen_futures::future_to_promise(async move {
            let names: Vec<String> = setup.experts.iter().map(|m| m.name.clone()).collect();
            let generate = opts::generate_options(&options, FUSION_KEYS)?;
            let (fusion_cfg, chat) = fusion_config(&options, &names)?;
            let fusion = Fusion::new(setup).map_err(WebError::from)?;
            let fo = FuseOptions { generate, fusion: fusion_cfg, chat };
            let mut cb_err: Option<JsValue> = None;
            let mut out = fusion
                .generate_batch_async(std::slice::from_ref(&prompt), &fo, &mut |ev| {
                    let (Some(f), None) = (&on_step, &cb_err) else { return };
                    match opts::to_js(ev.record) {
                        Ok(step) => {
                            let _ = Reflect::set(&step, &"delta".into(), &JsValue::from_str(ev.delta));
                            // A throwing callback stops the stream: the page asked for nothing more.
                            if let Err(e) = f.call1(&JsValue::NULL, &step) {
                                cb_err = Some(e);
                            }
                        }
                        Err(e) => cb_err = Some(e),
                    }
                })
                .await
                .map_err(WebError::from)?;
            if let Some(e) = cb_err {
                return Err(e);
            }
            let out = out.remove(0);
            opts::to_js(&WebFuseOutput {
                experts: names.iter().map(String::as_str).collect(),
                solver: fo.fusion.solver.name(),
                multi: fo.fusion.multi.name(),
                out: &out,
            })
        })
    }
}
