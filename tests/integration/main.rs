//! Chorus integration tests: one test binary, one module per area.

// One tiny model on every backend and weight mode: same tokens, same logits.
mod backends;
// Model paths, the shared wgpu device, golden-file loading.
mod common;
// Golden tests of the decoder runtime against transformers (CPU and wgpu), batching, sampling.
mod decoder;
// HF folders (config.json, sharded safetensors + index, tokenizer.json) made from a GGUF model.
mod hf;
// Fused decoding (DLF) on SmolLM2: self-transfer, null expert, batch independence, tokenizer check.
mod fusion;
// Hostile files: declared sizes refused by name; the fuzz targets' bodies over a bounded mutated corpus.
mod fuzz;
// GGUF reader: corrupt, truncated and unsupported inputs give errors that name the problem.
mod gguf;
// GPU kernels against their chorus-core references (lavapipe in CI).
mod parity;
// MVRE on the tiny RoBERTa: dynamic initialisation, training, tied decoder, checkpoints, entity errors.
mod mvre;
// Dequantization of every supported GGML type against the `gguf` Python package.
mod quant;
// BERT and RoBERTa masked LMs against transformers.
mod bert;
// Style transfer: the autoencoder vs PyTorch; the real Rotten Tomatoes corpus, split by film, vocabulary.
mod style;
// Every WGSL file under shaders/ parses, validates with naga and is registered.
mod shaders;
// T5 (both variants) and FiT5 against transformers/PyTorch; FiT5's properties, re-ranking and training.
mod t5;
// Twin-Merging's mixed forward on wgpu (the WGSL kernel on burn's buffers) against the CPU.
mod twin;
// Tokenizers built from GGUF metadata against transformers' ids; chat templates.
mod tokenizer;
