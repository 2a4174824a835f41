#!/usr/bin/env python3
"""Converts a FiT5 checkpoint of the reference code (OpenMatch/FiT5, e.g. HF `OpenMatch/FiT5-msmarco`) into a
folder `chorus rerank --model DIR` loads: config.json, model.safetensors, tokenizer.json.

The reference saves `torch.save(model.state_dict())` of its wrapper: keys `t5.shared.weight`,
`t5.encoder.block.{i}…`, `t5.encoder.project_global.{k}.layer_norm.weight`,
`t5.encoder.project_global.{k}.SelfAttention.{q,k,v,o}.weight`, `dense.weight` [32128, 768], `dense.bias`,
sometimes under a DDP `module.` prefix. This script:
  - strips `module.`, drops tied duplicates (`t5.encoder.embed_tokens`, `t5.decoder.embed_tokens`);
  - keeps only the two head rows the score uses (`--false-id 6136`, `--true-id 1176`), so the head is
    2 × 768 instead of 32128 × 768 (Chorus also loads the full matrix; `--full-head` keeps it);
  - writes config.json from a T5 config (t5-base's sizes by default, or `--t5-config FILE`) plus FiT5's
    fields (`use_global`, `num_global_layers` = the number of project_global layers found, `max_seq_len`,
    `false_token_id`, `true_token_id`, `feature_bins`);
  - writes tokenizer.json from a T5 tokenizer folder (`--tokenizer DIR`, e.g. a local copy of t5-base) with
    `[CLS]` added as a special token, as the reference does (`add_tokens("[CLS]", special_tokens=True)` → 32100).

Nothing is downloaded; pass local files. Needs torch, safetensors and (for the tokenizer) transformers:
    python scripts/convert_fit5.py --checkpoint fit5.bin --tokenizer ./t5-base --out ./fit5-msmarco
The output folder is written to a temporary name and renamed when complete.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

T5_BASE = {
    "vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_decoder_layers": 12,
    "num_heads": 12, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6, "feed_forward_proj": "relu", "tie_word_embeddings": True,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="state dict (.bin/.pt via torch.load, or .safetensors)")
    ap.add_argument("--tokenizer", required=True, help="folder with a T5 tokenizer (tokenizer.json or spiece.model)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--t5-config", help="T5 config.json (default: t5-base's sizes)")
    ap.add_argument("--false-id", type=int, default=6136)
    ap.add_argument("--true-id", type=int, default=1176)
    ap.add_argument("--max-seq-len", type=int, default=200)
    ap.add_argument("--full-head", action="store_true", help="keep dense.weight's every row")
    a = ap.parse_args()

    import torch
    from safetensors.torch import load_file, save_file

    out = Path(a.out)
    if out.exists():
        sys.exit(f"{out}: exists; choose a new folder")
    ck = Path(a.checkpoint)
    if ck.suffix == ".safetensors":
        sd = load_file(str(ck))
    else:
        sd = torch.load(str(ck), map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    keep = {}
    for k, v in sd.items():
        if k.startswith(("t5.encoder.embed_tokens", "t5.decoder.embed_tokens", "t5.lm_head")):
            continue
        if not (k.startswith("t5.") or k.startswith("dense.")):
            print(f"note: dropping {k} (not part of FiT5's forward)", file=sys.stderr)
            continue
        keep[k] = v.float().contiguous()
    for need in ("t5.shared.weight", "dense.weight", "dense.bias"):
        if need not in keep:
            sys.exit(f"{ck}: no tensor '{need}'; is this a FiT5 state dict?")
    if not a.full_head:
        rows = [a.false_id, a.true_id]
        if keep["dense.weight"].shape[0] <= max(rows):
            sys.exit(f"{ck}: dense.weight has {keep['dense.weight'].shape[0]} rows; --false-id/--true-id are outside it")
        keep["dense.weight"] = keep["dense.weight"][rows].contiguous()
        keep["dense.bias"] = keep["dense.bias"][rows].contiguous()
    n_global = len({k.split(".")[3] for k in keep if k.startswith("t5.encoder.project_global.")})
    cfg = dict(T5_BASE)
    if a.t5_config:
        cfg.update({k: v for k, v in json.loads(Path(a.t5_config).read_text()).items() if k in T5_BASE})
    cfg["vocab_size"] = keep["t5.shared.weight"].shape[0]
    cfg.update({"architectures": ["FiT5"], "model_type": "t5", "use_global": n_global > 0,
                "num_global_layers": n_global, "max_seq_len": a.max_seq_len,
                "false_token_id": a.false_id,
                "true_token_id": a.true_id,
                "feature_bins": {"cap": 190.0, "offset": 165.0, "scale": 25.0, "clamp_low": False}})

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(a.tokenizer, local_files_only=True)
    tok.add_tokens("[CLS]", special_tokens=True)
    cls = tok.convert_tokens_to_ids("[CLS]")
    if cls >= cfg["vocab_size"]:
        sys.exit(f"[CLS] got id {cls}, outside the model's {cfg['vocab_size']} embedding rows")

    tmp = Path(tempfile.mkdtemp(prefix=".fit5-", dir=out.parent if str(out.parent) else "."))
    try:
        save_file(keep, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
        tok.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"{out}: {len(keep)} tensors, {n_global} global layers, [CLS] = {cls}")


if __name__ == "__main__":
    main()
