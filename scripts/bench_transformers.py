#!/usr/bin/env python3
"""Side-by-side baseline for `chorus bench generate`: HF transformers decode speed on the same GGUF file.

    .venv-golden/bin/python scripts/bench_transformers.py [--dtype float32|bfloat16] [--threads 2]

Prints one JSON object (prefill and decode tokens/s, batch 1, greedy, EOS ignored), like Chorus's bench.
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
p.add_argument("--dtype", default="float32")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--prompt", default="def fibonacci(n):")
p.add_argument("--new-tokens", type=int, default=64)
p.add_argument("--runs", type=int, default=3)
a = p.parse_args()
torch.set_num_threads(a.threads)
home = Path(os.environ.get("CHORUS_HOME", Path.home() / ".cache" / "chorus")) / "models"
dtype = getattr(torch, a.dtype)
tok = AutoTokenizer.from_pretrained(str(home), gguf_file=a.model)
model = AutoModelForCausalLM.from_pretrained(str(home), gguf_file=a.model, dtype=dtype).eval()
ids = torch.tensor([tok(a.prompt, add_special_tokens=False)["input_ids"]])


def run(n):
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        nxt = out.logits[0, -1].argmax().view(1, 1)
        t1 = time.perf_counter()
        past = out.past_key_values
        for _ in range(n - 1):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[0, -1].argmax().view(1, 1)
        t2 = time.perf_counter()
    return ids.shape[1] / (t1 - t0), (n - 1) / (t2 - t1)


run(4)
res = sorted(run(a.new_tokens) for _ in range(a.runs))
prefill = sorted(r[0] for r in res)[len(res) // 2]
decode = sorted(r[1] for r in res)[len(res) // 2]
print(json.dumps({"bench": "generate", "engine": f"transformers {__import__('transformers').__version__}",
                  "torch": torch.__version__, "dtype": a.dtype, "threads": a.threads, "model": a.model,
                  "prompt_tokens": ids.shape[1], "new_tokens": a.new_tokens,
                  "prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}))
