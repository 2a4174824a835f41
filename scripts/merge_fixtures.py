#!/usr/bin/env python3
"""Writes the mergekit parity fixtures in tests/fixtures/merge/.

Creates four tiny random Llama models (a base and three fine-tune-like variants: base + random deltas, with
sign conflicts between them), runs mergekit 0.1.5 on them for linear, task_arithmetic, ties, dare_linear
and dare_ties, and stores the inputs, the YAML configs, mergekit's outputs and, for DARE, the keep masks
mergekit drew (torch's Bernoulli stream cannot be reproduced outside torch, so Chorus's parity test feeds
the recorded masks back in, keyed by model index in the YAML's order and HF tensor name).

Run with a Python that has mergekit==0.1.5, torch and transformers:
    python scripts/merge_fixtures.py
"""

import json
import os
import shutil
import sys

import torch
import transformers
import yaml
from safetensors.torch import load_file, save_file

import mergekit.sparsify as sparsify
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "merge")

CONFIGS = {
    "linear": {
        "merge_method": "linear",
        "models": [
            {"model": "models/a", "parameters": {"weight": 1.0}},
            {"model": "models/b", "parameters": {"weight": 2.0}},
            {"model": "models/c", "parameters": {"weight": 0.5}},
        ],
        "dtype": "float32",
    },
    "task_arithmetic": {
        "merge_method": "task_arithmetic",
        "base_model": "models/base",
        "models": [
            {"model": "models/a", "parameters": {"weight": 0.5}},
            {"model": "models/b", "parameters": {"weight": 0.3}},
            {"model": "models/c", "parameters": {"weight": 0.2}},
        ],
        "parameters": {"lambda": 0.8},
        "dtype": "float32",
    },
    "ties": {
        "merge_method": "ties",
        "base_model": "models/base",
        "models": [
            {"model": "models/base"},
            {"model": "models/a", "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": "models/b", "parameters": {"weight": 1.0, "density": 0.3}},
            {"model": "models/c", "parameters": {"weight": 0.5, "density": 0.7}},
        ],
        "parameters": {"int8_mask": True},
        "dtype": "float32",
    },
    "dare_linear": {
        "merge_method": "dare_linear",
        "base_model": "models/base",
        "models": [
            {"model": "models/a", "parameters": {"weight": 0.6, "density": 0.5}},
            {"model": "models/b", "parameters": {"weight": 0.4, "density": 0.4}},
        ],
        "dtype": "float32",
    },
    "dare_ties": {
        "merge_method": "dare_ties",
        "base_model": "models/base",
        "models": [
            {"model": "models/a", "parameters": {"weight": 0.7, "density": 0.6}},
            {"model": "models/b", "parameters": {"weight": 0.5, "density": 0.5}},
            {"model": "models/c", "parameters": {"weight": 0.4, "density": 0.3}},
        ],
        "parameters": {"normalize": True, "int8_mask": True},
        "dtype": "float32",
    },
}


def make_models():
    cfg = transformers.LlamaConfig(
        vocab_size=48,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
        dtype="float32",
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(cfg).to(torch.float32)
    out = {}
    for i, name in enumerate(["base", "a", "b", "c"]):
        d = os.path.join(ROOT, "models", name)
        os.makedirs(d, exist_ok=True)
        sd = {k: v.detach().clone().contiguous() for k, v in base.state_dict().items()}
        if name != "base":
            g = torch.Generator().manual_seed(100 + i)
            for k in sd:
                sd[k] = sd[k] + 0.02 * torch.randn(sd[k].shape, generator=g)
        save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        cfg.save_pretrained(d)
        out[name] = sd
    return out


def run(name, spec, inputs):
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    with open(os.path.join(ROOT, f"{name}.yml"), "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    drawn = []
    real = sparsify.bernoulli

    def recording(tensor, density, rescale_norm=None):
        if density >= 1:
            return tensor
        # Same draw as mergekit's, with the mask kept: the mask is where the masked result is non-zero or
        # the input was already zero (a zero delta entry masks to zero either way).
        work = tensor.to(torch.float32)
        mask = torch.bernoulli(torch.full_like(work, fill_value=density))
        drawn.append((work.clone(), mask.clone()))
        return sparsify.rescaled_masked_tensor(work, mask, rescale_norm).to(tensor.dtype)

    sparsify.bernoulli = recording
    try:
        cwd = os.getcwd()
        os.chdir(ROOT)
        run_merge(
            MergeConfiguration.model_validate(spec),
            d,
            MergeOptions(copy_tokenizer=False, write_model_card=False, random_seed=7, quiet=True),
        )
    finally:
        os.chdir(cwd)
        sparsify.bernoulli = real
    # Name each recorded mask by matching its delta against every (model, tensor) delta.
    if drawn:
        base = inputs["base"]
        names = [os.path.basename(m["model"]) for m in spec["models"] if m["model"] != spec.get("base_model")]
        masks = {}
        for delta, mask in drawn:
            hits = [
                (i, k)
                for i, n in enumerate(names)
                for k in base
                if inputs[n][k].shape == delta.shape and torch.equal(inputs[n][k] - base[k], delta)
            ]
            if len(hits) != 1:
                sys.exit(f"{name}: a mask matched {len(hits)} deltas")
            i, k = hits[0]
            masks[f"{i}:{k}"] = mask.to(torch.uint8).contiguous()
        save_file(masks, os.path.join(ROOT, f"{name}.masks.safetensors"))
    out = load_file(os.path.join(d, "model.safetensors"))
    for f in os.listdir(d):
        if f not in ("model.safetensors", "config.json"):
            os.remove(os.path.join(d, f))
    print(f"{name}: {len(out)} tensors, {len(drawn)} masks")


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    inputs = make_models()
    for name, spec in CONFIGS.items():
        run(name, spec, inputs)
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write(
            "Written by scripts/merge_fixtures.py (mergekit "
            + __import__("importlib.metadata").metadata.version("mergekit")
            + ", torch "
            + torch.__version__
            + "). Do not edit by hand.\n"
        )
    print(json.dumps({"root": ROOT}))


if __name__ == "__main__":
    main()
