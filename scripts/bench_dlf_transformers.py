#!/usr/bin/env python3
"""Side-by-side baseline for `chorus bench fuse`: a straightforward Python loop over HF transformers doing
the same Dynamic Logit Fusion (paper grid, 21 candidates, first strict minimum) on the same three models.

    /path/to/venv/bin/python scripts/bench_dlf_transformers.py [--dtype float32|bfloat16] [--threads 2]

Large = Qwen2.5-Coder-1.5B, small base = 0.5B, expert = the 0.5B with a system prompt (it has its own KV
cache, like Chorus's prompt-defined expert). Every model gets the prompt through its chat template.
Prints one JSON object: fused decode tokens/s, the large model alone, and the α search's ms per step.
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("--large", default="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
p.add_argument("--base", default="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
p.add_argument("--dtype", default="float32")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--prompt", default="Write a Python function that returns the n-th Fibonacci number.")
p.add_argument("--expert-prompt", default="You are a Python expert. Answer with concise, idiomatic Python code.")
p.add_argument("--new-tokens", type=int, default=32)
a = p.parse_args()
torch.set_num_threads(a.threads)
home = Path(os.environ.get("CHORUS_HOME", Path.home() / ".cache" / "chorus")) / "models"
dtype = getattr(torch, a.dtype)
tok = AutoTokenizer.from_pretrained(str(home), gguf_file=a.base)
large = AutoModelForCausalLM.from_pretrained(str(home), gguf_file=a.large, dtype=dtype).eval()
small = AutoModelForCausalLM.from_pretrained(str(home), gguf_file=a.base, dtype=dtype).eval()
vocab = len(tok)


def ids(system):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": a.prompt}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])


def kl(logp, logq):
    return float((logp.exp() * (logp - logq)).sum())


def choose(ml, ms, me):
    """The paper's grid: α ∈ {0, 0.1, …, 2}, first strict minimum of the two-sided KL mismatch."""
    lp, lq, lqt = (torch.log_softmax(x.double(), -1) for x in (ml, ms, me))
    cf, cr = kl(lqt, lq), kl(lq, lqt)
    d = (me - ms).double()
    best, best_a = float("inf"), 0.0
    for k in range(21):
        al = k / 10
        lpt = torch.log_softmax(ml.double() + al * d, -1)
        loss = (kl(lpt, lp) - cf) ** 2 + (kl(lp, lpt) - cr) ** 2
        if loss < best:
            best, best_a = loss, al
    return best_a


def step(model, x, past):
    out = model(input_ids=x, past_key_values=past, use_cache=True)
    return out.logits[0, -1, :vocab].float(), out.past_key_values


def run(n, fuse):
    with torch.no_grad():
        ml, pl = step(large, ids(None), None)
        if fuse:
            ms, ps = step(small, ids(None), None)
            me, pe = step(small, ids(a.expert_prompt), None)
        search, t0 = 0.0, time.perf_counter()
        for i in range(n):
            if fuse:
                ts = time.perf_counter()
                al = choose(ml, ms, me)
                nxt = (ml + al * (me - ms)).argmax().view(1, 1)
                search += time.perf_counter() - ts
            else:
                nxt = ml.argmax().view(1, 1)
            if i == n - 1:
                break
            ml, pl = step(large, nxt, pl)
            if fuse:
                ms, ps = step(small, nxt, ps)
                me, pe = step(small, nxt, pe)
        dt = time.perf_counter() - t0
    return (n - 1) / dt, search / n * 1000


run(3, True)
fused, search_ms = run(a.new_tokens, True)
alone, _ = run(a.new_tokens, False)
print(json.dumps({"bench": "fuse", "engine": f"transformers {__import__('transformers').__version__}",
                  "torch": torch.__version__, "dtype": a.dtype, "threads": a.threads,
                  "large": a.large, "base": a.base, "new_tokens": a.new_tokens, "solver": "paper",
                  "fused_decode_tokens_per_s": fused, "search_ms_per_step": search_ms,
                  "large_alone_decode_tokens_per_s": alone}))
