//! chorus-web: the wasm-bindgen API of Chorus for the browser (and any wasm host).
//!
//! Models load from bytes or URLs (GGUF, or an HF layout: config.json + tokenizer.json + safetensors),
//! with downloads kept in Cache Storage and checked against an optional SHA-256. Generation runs on
//! burn's WebGPU backend when the browser has an adapter, otherwise on the Flex CPU backend, with the
//! same results. `ChorusFusion` runs Dynamic Logit Fusion with a per-token callback carrying the α
//! vector; `ChorusTwin` runs a Twin-Merging pack with its router. Options and results cross the boundary
//! through serde-wasm-bindgen; errors become `Error`s whose message names the field or file at fault.
//! Async methods return Promises because GPU read-backs must be awaited; `www/src/worker.js` runs all of
//! it in a Web Worker so the page never blocks.

mod error;
mod fetch;
mod fusion;
mod model;
mod opts;
mod twin;

pub use error::WebError;
pub use fusion::ChorusFusion;
pub use model::{ChorusModel, clear_model_cache, load_gguf, load_model, sha256_hex, webgpu_available};
pub use twin::{ChorusTwin, load_twin};

use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** A file: a URL, a URL with the SHA-256 (hex) it must have, or bytes in hand. */
export type FileRef = string | { url: string; sha256?: string } | ArrayBuffer | Uint8Array;
/** A GGUF file, or an HF layout (config.json, tokenizer.json, safetensors shards). */
export type ModelSource =
  | FileRef
  | { gguf: FileRef }
  | { config: FileRef; tokenizer: FileRef; weights: FileRef | FileRef[]; tokenizerConfig?: FileRef; name?: string };
/** `download` events per file chunk (total is null when the server sent no length), `load` per tensor. */
export type LoadProgress =
  | { phase: "download"; url: string; loaded: number; total: number | null; cached: boolean }
  | { phase: "load"; loaded: number; total: number };
export interface LoadOptions {
  backend?: "auto" | "webgpu" | "cpu";
  cache?: boolean;
  onProgress?: (event: LoadProgress) => void;
}
export interface GenerateOptions {
  max_new_tokens?: number;
  temperature?: number;
  top_k?: number;
  top_p?: number;
  seed?: number;
  stop?: string[];
  stop_at_eos?: boolean;
}
export type StopReason = "eos" | "stop_string" | "max_tokens" | "context";
export interface GenerateOutput {
  prompt_tokens: number;
  tokens: number[];
  text: string;
  stop_reason: StopReason;
  prefill_ms: number;
  decode_ms: number;
  decode_tokens_per_s: number;
}
export interface FuseOptions extends GenerateOptions {
  solver?: "paper" | "refine" | "joint" | "static" | "large-only" | "expert-only";
  alpha?: number;
  multi?: "centroid" | "route";
  ranges?: Record<string, [number, number]>;
  chat?: boolean;
}
export interface FuseStep {
  step: number;
  token: number;
  piece: string;
  delta: string;
  alpha: number[];
  loss: number | null;
  kl_fused_large: number | null;
  kl_large_fused: number | null;
  kl_expert_base: number[];
  kl_base_expert: number[];
  evaluations: number;
  search_ms: number;
}
export interface FuseResult {
  experts: string[];
  solver: string;
  multi: string;
  prompt_tokens: number[];
  tokens: number[];
  text: string;
  stop_reason: StopReason;
  steps: FuseStep[];
  prefill_ms: number;
  decode_ms: number;
  decode_tokens_per_s: number;
  search_ms: number;
}
/** A twin pack: twin.json, the twin/ factor shards, the shared model, router.json and router.safetensors. */
export interface TwinSource {
  twin: FileRef;
  factors?: FileRef | FileRef[];
  shared: ModelSource;
  router: FileRef;
  routerWeights: FileRef;
  name?: string;
}
export interface TwinOptions extends GenerateOptions {
  mode?: "row" | "group";
}
export interface TwinResult {
  tasks: string[];
  weights: number[];
  mode: "row" | "group";
  output: GenerateOutput;
}
"#;
