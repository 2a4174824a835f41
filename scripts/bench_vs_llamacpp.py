#!/usr/bin/env python3
"""Chorus's CPU engine against llama.cpp (llama-cpp-python) on the same GGUF, the same prompt token ids and
the same thread count: decode tok/s (greedy, EOS ignored), prefill tok/s at 512 prompt tokens, load time,
time to the first token, peak RSS, each with its ratio, and decode as a fraction of the bandwidth roofline
(weight bytes read per token / a read bandwidth measured here with the same thread count).

Every measurement runs in its own child process (peak RSS is that child's `ru_maxrss`), chorus and
llama.cpp alternating, and the median of --runs is reported. Run through `scripts/bench_vs_llamacpp`,
which sets up the pinned llama-cpp-python in a venv. Prints one JSON object on stdout, progress on stderr.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

LLAMA_CHILD = r"""
import ctypes, json, sys, time
t0 = time.perf_counter()
import numpy as np
import llama_cpp
cfg = json.loads(sys.argv[1])
llm = llama_cpp.Llama(model_path=cfg["model"], n_threads=cfg["threads"], n_threads_batch=cfg["threads"],
                      n_ctx=cfg["n_ctx"], n_batch=512, n_ubatch=512, verbose=False)
load_s = time.perf_counter() - t0
n_vocab = llm.n_vocab()

def last_logits():
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,))

def run(ids, new):
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    tok = int(np.argmax(last_logits()))
    prefill = time.perf_counter() - t
    first = time.perf_counter() - t0
    t = time.perf_counter()
    out = [tok]
    for _ in range(new - 1):
        llm.eval([tok])
        tok = int(np.argmax(last_logits()))
        out.append(tok)
    return prefill, time.perf_counter() - t, out, first

ids = cfg["ids"]
_, _, _, first = run(ids, 1)  # time to first token of a fresh process: load + first prefill
run(ids, 2)  # warm-up
prefill, dec, out, _ = run(ids, cfg["new"])
print(json.dumps({"load_s": load_s, "first_token_s": first, "prefill_tokens_per_s": len(ids) / prefill,
                  "decode_tokens_per_s": (cfg["new"] - 1) / dec, "tokens": out}))
"""

# The loops a user would write over llama-cpp-python for the DLF trio: three contexts (the large model, the
# small base and the prompt-defined expert, a second context on the base's file), one token each per step,
# logits combined in numpy. Proxy-tuning: fused = L + α(E − B) with α = 1. DLF (the paper's grid): α from
# 0 to 2 step 0.1, each candidate scored by (KL(P̃‖P) − KL(E‖B))² + (KL(P‖P̃) − KL(B‖E))², all 21 at once
# as one (21, vocab) array; the first minimum wins, as in the paper's pseudo-code.
TRIO_CHILD = r"""
import json, sys, time
import numpy as np
import llama_cpp
cfg = json.loads(sys.argv[1])
def load(path, n):
    return llama_cpp.Llama(model_path=path, n_threads=cfg["threads"], n_threads_batch=cfg["threads"],
                           n_ctx=n, n_batch=512, verbose=False)
ids = cfg["prompt_ids"]
ctx = max(len(x) for x in ids) + cfg["new"] + 8
models = [load(cfg["large"], ctx), load(cfg["base"], ctx), load(cfg["base"], ctx)]
n_vocab = min(m.n_vocab() for m in models)
grid = np.round(np.arange(21) * 0.1, 1).astype(np.float32)[:, None]

def logits(m):
    ptr = llama_cpp.llama_get_logits_ith(m.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(m.n_vocab(),))[:n_vocab].astype(np.float32)

def log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))

def kl(lp, lq):
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)

def step(l, b, e, mode):
    if mode == "proxy":
        return l + (e - b), 0.0
    t = time.perf_counter()
    lp, lb, le = log_softmax(l), log_softmax(b), log_softmax(e)
    t1, t2 = kl(le, lb), kl(lb, le)
    fused = l[None, :] + grid * (e - b)[None, :]
    lf = log_softmax(fused)
    loss = (kl(lf, lp[None, :]) - t1) ** 2 + (kl(lp[None, :], lf) - t2) ** 2
    a = int(np.argmin(loss))
    return fused[a], time.perf_counter() - t

def run(mode, new):
    for m in models:
        m.reset()
    t0 = time.perf_counter()
    for m, x in zip(models, ids):
        m.eval(x)
    out, search = [], 0.0
    t = None
    for i in range(new):
        f, s = step(*(logits(m) for m in models), mode)
        search += s
        tok = int(np.argmax(f))
        out.append(tok)
        if i == 0:
            t = time.perf_counter()
        if i + 1 < new:
            for m in models:
                m.eval([tok])
    dec = time.perf_counter() - t
    return {"decode_tokens_per_s": (new - 1) / dec, "search_fraction_of_step": search / new / (dec / max(new - 1, 1)),
            "prefill_s": t - t0, "tokens": out}

res = {}
for mode in ("proxy", "dlf"):
    run(mode, 2)
    rs = [run(mode, cfg["new"]) for _ in range(cfg["runs"])]
    rs.sort(key=lambda r: r["decode_tokens_per_s"])
    res[mode] = rs[len(rs) // 2]
print(json.dumps(res))
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def child_rss(cmd, env=None):
    """Runs `cmd` and returns (stdout, peak RSS bytes, wall seconds), reading the child's own rusage."""
    t = time.perf_counter()
    r, w = os.pipe()
    e_r, e_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        os.dup2(e_w, 2)
        os.close(r)
        os.close(e_r)
        try:
            os.execvpe(cmd[0], cmd, env or os.environ)
        finally:
            os._exit(127)
    os.close(w)
    os.close(e_w)
    chunks, errs = [], []
    te = threading.Thread(target=lambda: errs.append(os.fdopen(e_r, "rb").read()))
    te.start()
    with os.fdopen(r, "rb") as f:
        chunks.append(f.read())
    te.join()
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{b''.join(errs).decode(errors='replace')[-3000:]}")
    return b"".join(chunks).decode(), ru.ru_maxrss * 1024, wall


def bandwidth(threads, mib=1024, reps=5):
    """Read bandwidth in bytes/s with `threads` threads (numpy reductions release the GIL): the best of `reps`
    rounds of a sum and a max over `mib` MiB split between the threads. The best, not the median: the roofline
    is what the memory can deliver, and on a shared machine a round can only come out slower than that."""
    import numpy as np

    per = mib * (1 << 20) // threads // 8
    arrs = [np.ones(per, dtype=np.float64) for _ in range(threads)]
    best = 0.0
    for _ in range(reps):
        for f in (np.sum, np.max):
            ts = [threading.Thread(target=f, args=(x,)) for x in arrs]
            t = time.perf_counter()
            for x in ts:
                x.start()
            for x in ts:
                x.join()
            best = max(best, per * 8 * threads / (time.perf_counter() - t))
    return best


def chorus_bench(bin_, model, ids, new, threads, prompt_len=None):
    cmd = [bin_, "bench", "generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)),
           "--new-tokens", str(new), "--runs", "1"]
    if prompt_len:
        cmd += ["--prompt-len", str(prompt_len)]
    env = dict(os.environ, CHORUS_THREADS=str(threads))
    out, rss, _ = child_rss(cmd, env)
    j = json.loads(out.strip().splitlines()[-1])
    j["rss"] = rss
    return j


def chorus_first_token(bin_, model, prompt, threads):
    env = dict(os.environ, CHORUS_THREADS=str(threads))
    _, _, wall = child_rss([bin_, "generate", "--model", model, "--prompt", prompt, "--max-new-tokens", "1"], env)
    return wall


def llama_run(py, model, ids, new, threads):
    cfg = {"model": model, "ids": ids, "new": new, "threads": threads, "n_ctx": max(1024, len(ids) + new + 8)}
    out, rss, _ = child_rss([py, "-c", LLAMA_CHILD, json.dumps(cfg)])
    j = json.loads(out.strip().splitlines()[-1])
    j["rss"] = rss
    return j


def chorus_fuse(bin_, large, base, instruction, prompt, new, runs, threads, solver):
    cmd = [bin_, "bench", "fuse", "--large", large, "--base", base, "--expert", f"expert={base}",
           "--expert-prompt", f"expert={instruction}", "--chat", "--prompt", prompt, "--new-tokens", str(new),
           "--runs", str(runs)] + solver
    env = dict(os.environ, CHORUS_THREADS=str(threads))
    out, rss, _ = child_rss(cmd, env)
    j = json.loads(out.strip().splitlines()[-1])
    j["rss"] = rss
    return j


def trio(a):
    """The DLF trio: chorus fused (paper grid and proxy-tuning) against the llama.cpp + numpy loops, all fed
    the prompt ids chorus rendered for each member."""
    large, base = a.trio
    log(f"trio: large {os.path.basename(large)}, base + prompt expert {os.path.basename(base)}")
    c_dlf, c_pt, l_dlf, l_pt, c_search, l_search = ([] for _ in range(6))
    agree = {}
    for r in range(a.runs):
        cd = chorus_fuse(a.chorus, large, base, a.trio_instruction, a.trio_prompt, a.trio_tokens, 1, a.threads,
                         ["--solver", "paper"])
        cp = chorus_fuse(a.chorus, large, base, a.trio_instruction, a.trio_prompt, a.trio_tokens, 1, a.threads,
                         ["--solver", "static", "--alpha", "1"])
        cfg = {"large": large, "base": base, "prompt_ids": cd["prompt_ids"], "new": a.trio_tokens,
               "threads": a.threads, "runs": 1}
        out, _, _ = child_rss([a.python, "-c", TRIO_CHILD, json.dumps(cfg)])
        l = json.loads(out.strip().splitlines()[-1])
        c_dlf.append(cd["fused_decode_tokens_per_s"])
        c_pt.append(cp["fused_decode_tokens_per_s"])
        c_search.append(cd["search_fraction_of_step"])
        l_dlf.append(l["dlf"]["decode_tokens_per_s"])
        l_pt.append(l["proxy"]["decode_tokens_per_s"])
        l_search.append(l["dlf"]["search_fraction_of_step"])
        agree = {"dlf_same_tokens": cd["tokens"] == l["dlf"]["tokens"],
                 "proxy_same_tokens": cp["tokens"] == l["proxy"]["tokens"]}
        log(f"  run {r + 1}: DLF chorus {c_dlf[-1]:.1f} / llama.cpp loop {l_dlf[-1]:.1f} tok/s; proxy-tuning "
            f"{c_pt[-1]:.1f} / {l_pt[-1]:.1f}; α search {100 * c_search[-1]:.1f} % / {100 * l_search[-1]:.1f} % "
            f"of a step; {agree}")
    return {
        "large": os.path.basename(large), "base": os.path.basename(base), "new_tokens": a.trio_tokens,
        "prompt": a.trio_prompt, "expert_instruction": a.trio_instruction, "chat": True,
        "dlf_tokens_per_s": {"chorus": med(c_dlf), "llama_cpp_loop": med(l_dlf), "ratio": med(c_dlf) / med(l_dlf)},
        "proxy_tuning_tokens_per_s": {"chorus": med(c_pt), "llama_cpp_loop": med(l_pt), "ratio": med(c_pt) / med(l_pt)},
        "chorus_dlf_vs_llama_proxy_loop": med(c_dlf) / med(l_pt),
        "search_fraction_of_step": {"chorus": med(c_search), "llama_cpp_loop": med(l_search)},
        "last_run": agree,
    }


def tokenize(py, model, prompt):
    code = ("import json,sys,llama_cpp;l=llama_cpp.Llama(model_path=sys.argv[1],vocab_only=True,verbose=False);"
            "print(json.dumps(l.tokenize(sys.argv[2].encode(),add_bos=True,special=True)))")
    out, _, _ = child_rss([py, "-c", code, model, prompt])
    return json.loads(out)


def med(xs):
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chorus", required=True, help="the chorus binary (a release build)")
    ap.add_argument("--python", default=sys.executable, help="python with llama-cpp-python")
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--prompt", default="def fibonacci(n):")
    ap.add_argument("--trio", nargs=2, metavar=("LARGE", "BASE"),
                    help="also run the DLF trio: LARGE, BASE and a prompt-defined expert on BASE's file")
    ap.add_argument("--trio-prompt", default="Write a Python function that returns the n-th Fibonacci number.")
    ap.add_argument("--trio-instruction", default="You are an expert Python programmer. Answer with code only.")
    ap.add_argument("--trio-tokens", type=int, default=32)
    ap.add_argument("--skip-models", action="store_true", help="only the trio")
    a = ap.parse_args()

    bw = bandwidth(a.threads)
    log(f"read bandwidth, {a.threads} threads: {bw / 1e9:.1f} GB/s")
    report = {"bench": "chorus_vs_llamacpp", "threads": a.threads, "runs": a.runs, "new_tokens": a.new_tokens,
              "prefill_tokens": a.prefill_tokens, "bandwidth_bytes_per_s": bw, "models": []}
    import llama_cpp  # noqa: F401  (only for the version string, from the same interpreter as --python)
    report["llama_cpp_python"] = llama_cpp.__version__
    for model in ([] if a.skip_models else a.models):
        ids = tokenize(a.python, model, a.prompt)
        long_ids = (ids * (a.prefill_tokens // len(ids) + 1))[: a.prefill_tokens]
        log(f"{os.path.basename(model)}: prompt ids {ids}")
        c_dec, l_dec, c_pre, l_pre, c_load, l_load, c_rss, l_rss, c_ttft, l_ttft = ([] for _ in range(10))
        bytes_per_token, same_tokens = None, []
        for r in range(a.runs):
            c = chorus_bench(a.chorus, model, ids, a.new_tokens, a.threads)
            l = llama_run(a.python, model, ids, a.new_tokens, a.threads)
            cp = chorus_bench(a.chorus, model, long_ids, 1, a.threads)
            lp = llama_run(a.python, model, long_ids, 1, a.threads)
            c_dec.append(c["decode_tokens_per_s"])
            l_dec.append(l["decode_tokens_per_s"])
            c_pre.append(cp["prefill_tokens_per_s"])
            l_pre.append(lp["prefill_tokens_per_s"])
            c_load.append(c["load_ms"] / 1000)
            l_load.append(l["load_s"])
            c_rss.append(c["rss"])
            l_rss.append(l["rss"])
            c_ttft.append(chorus_first_token(a.chorus, model, a.prompt, a.threads))
            l_ttft.append(l["first_token_s"])
            bytes_per_token = c.get("weight_bytes_per_token")
            log(f"  run {r + 1}: decode chorus {c_dec[-1]:.1f} / llama.cpp {l_dec[-1]:.1f} tok/s; prefill "
                f"{c_pre[-1]:.0f} / {l_pre[-1]:.0f} tok/s; RSS {c['rss'] / 1e6:.0f} / {l['rss'] / 1e6:.0f} MB")
        # Measured again beside each model (the bandwidth of a shared machine drifts); the best of all rounds.
        bw = max(bw, bandwidth(a.threads))
        report["bandwidth_bytes_per_s"] = bw
        roof = bw / bytes_per_token if bytes_per_token else None
        m = {
            "model": os.path.basename(model),
            "prompt_tokens": len(ids),
            "decode_tokens_per_s": {"chorus": med(c_dec), "llama_cpp": med(l_dec), "ratio": med(c_dec) / med(l_dec)},
            "prefill_tokens_per_s": {"chorus": med(c_pre), "llama_cpp": med(l_pre), "ratio": med(c_pre) / med(l_pre)},
            "load_s": {"chorus": med(c_load), "llama_cpp": med(l_load), "ratio": med(c_load) / med(l_load)},
            "first_token_s": {"chorus": med(c_ttft), "llama_cpp": med(l_ttft), "ratio": med(c_ttft) / med(l_ttft),
                              "note": "whole process: chorus generate (1 token), python + llama_cpp import + load + prefill"},
            "peak_rss_bytes": {"chorus": med(c_rss), "llama_cpp": med(l_rss), "ratio": med(c_rss) / med(l_rss)},
            "weight_bytes_per_token": bytes_per_token,
            "roofline_tokens_per_s": roof,
            "roofline_fraction": {"chorus": med(c_dec) / roof if roof else None,
                                  "llama_cpp": med(l_dec) / roof if roof else None},
        }
        report["models"].append(m)
        log(json.dumps(m))
    if a.trio:
        report["trio"] = trio(a)
        log(json.dumps(report["trio"]))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
