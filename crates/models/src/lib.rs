//! Chorus models: loaders for real model files (GGUF v2/v3 and HF safetensors folders), tokenizers with
//! chat templates, the burn implementation of the decoder families (Qwen2, Llama), and T5 with the FiT5
//! re-ranker built on it.
//!
//! Weights are decoded to f32 on load and uploaded to whichever burn device the caller picked (Flex CPU
//! or wgpu); the same code runs natively and in wasm.

pub mod bert;
pub mod bytes;
pub mod cpu;
pub mod decoder;
pub mod error;
pub mod export;
pub mod fit5;
pub mod gguf;
pub mod gguf_write;
pub mod gpu;
pub mod lowrank;
pub mod source;
pub mod t5;
pub mod tokenizer;

pub use bytes::FileBytes;
pub use decoder::{Decoder, KvCache, Output, WeightMode};
pub use error::{Error, Result};
pub use gguf::GgufFile;
pub use lowrank::{Delta, LowRankConsts, LowRankKernel};
pub use source::{ModelFiles, RawTensor, SafetensorsSet};
pub use tokenizer::{ChatMessage, TextTokenizer};
