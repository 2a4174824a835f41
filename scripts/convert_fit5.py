#!/usr/bin/env python3
"""Converts a FiT5 checkpoint of the reference code (OpenMatch/FiT5, e.g. HF `OpenMatch/FiT5-msmarco`) into a
folder `chorus rerank --model DIR` loads: config.json, model.safetensors, tokenizer.json.

The reference saves `torch.save(model.state_dict())` of its wrapper: keys `t5.shared.weight`,
`t5.encoder.block.{i}…`, `t5.decoder.block.{i}…`, `t5.encoder.project_global.{k}.layer_norm.weight`,
`t5.encoder.project_global.{k}.SelfAttention.{q,k,v,o}.weight`, `dense.weight` [32128, 768], `dense.bias`,
sometimes under a DDP `module.` prefix, and, when the backbone was built as a `T5ForConditionalGeneration`,
`t5.lm_head.weight`. This script:
  - strips `module.`, drops tied duplicates (`t5.encoder.embed_tokens`, `t5.decoder.embed_tokens`);
  - drops `t5.lm_head.weight`, tied (v1.0) or not (v1.1): FiT5 scores the first decoder step with its own
    `dense` head and never with T5's LM head (the reference's backbone is a `T5Model`, which has none), so
    the converted folder holds no LM head. `tie_word_embeddings` in config.json stays what the T5 config
    says (it describes the backbone, e.g. `false` for v1.1); Chorus's FiT5 loader (`FiT5::load`) reads the
    backbone without an LM head whatever that field says, while a plain T5 (`T5::load`) still needs
    `lm_head.weight` when it is `false`. Keeping the untied head instead would add vocab × d_model unused
    weights (98 MB in f32 for a base model);
  - keeps only the two head rows the score uses (`--false-id 6136`, `--true-id 1176`), so the head is
    2 × 768 instead of 32128 × 768 (Chorus also loads the full matrix; `--full-head` keeps it);
  - writes config.json from a T5 config (t5-base's sizes by default, or `--t5-config FILE`; a v1.1
    checkpoint needs its config, and one whose FFN does not match the config is refused) plus FiT5's fields
    (`use_global`, `num_global_layers` = the number of project_global layers found, `max_seq_len`,
    `false_token_id`, `true_token_id`, `feature_bins`);
  - writes tokenizer.json from a T5 tokenizer folder (`--tokenizer DIR`, e.g. a local copy of t5-base) with
    `[CLS]` added as a special token, as the reference does (`add_tokens("[CLS]", special_tokens=True)` → 32100:
    the next free id; an existing `[CLS]` keeps its id).

Nothing is downloaded; pass local files. Needs numpy and safetensors; torch only for a `.bin`/`.pt`
checkpoint, and transformers only for a tokenizer folder without tokenizer.json (spiece.model only):
    python scripts/convert_fit5.py --checkpoint fit5.bin --tokenizer ./t5-base --out ./fit5-msmarco
Tensors are written as f32. The output folder is written to a temporary name and renamed when complete.
A test (tests/integration/t5.rs, `converted_untied_v1_1_fit5_loads_and_scores`) converts the tiny untied
v1.1 checkpoint of tests/fixtures/make_untied_fit5.py and loads it.
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


# safetensors dtypes read as weights (into f32); BF16 is widened by hand (numpy has no bfloat16).
FLOAT_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def load_safetensors(path):
    """{name: float32 array} of a .safetensors file, without torch."""
    import numpy as np

    buf = np.memmap(path, dtype=np.uint8, mode="r")
    if buf.size < 8:
        sys.exit(f"{path}: too short for a safetensors file")
    n = int.from_bytes(bytes(buf[:8]), "little")
    if 8 + n > buf.size:
        sys.exit(f"{path}: header of {n} bytes runs past the end of the file")
    header = json.loads(bytes(buf[8:8 + n]))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in FLOAT_DTYPES:  # integer buffers are not weights (Chorus's loader skips them too)
            print(f"note: dropping {name} (dtype {dtype}, not a weight)", file=sys.stderr)
            continue
        raw = buf[8 + n + start:8 + n + end].view(FLOAT_DTYPES[dtype])
        if dtype == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.astype(np.float32).reshape(shape)
    return out


def load_checkpoint(ck):
    """{name: float32 numpy array} of a state dict: .safetensors without torch, anything else via torch.load."""
    if ck.suffix == ".safetensors":
        return load_safetensors(ck)
    try:
        import torch
    except ImportError:
        sys.exit(f"{ck}: reading a .bin/.pt checkpoint needs torch (pip install torch), or convert it to "
                 ".safetensors first")
    sd = torch.load(str(ck), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return {k: v.float().numpy() for k, v in sd.items() if hasattr(v, "float")}


def add_cls_json(tj):
    """Adds `[CLS]` to a tokenizer.json as transformers' `add_tokens("[CLS]", special_tokens=True)` does: a
    special added token with the next free id (an existing `[CLS]` keeps its id). Returns the id."""
    for t in tj.get("added_tokens", []):
        if t["content"] == "[CLS]":
            return t["id"]
    vocab = tj["model"]["vocab"]
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = index
        ids = list(range(len(vocab)))
        if "[CLS]" in {p for p, _ in vocab}:
            return [p for p, _ in vocab].index("[CLS]")
    else:  # BPE / WordPiece / WordLevel: {token: id}
        ids = list(vocab.values())
        if "[CLS]" in vocab:
            return vocab["[CLS]"]
    ids += [t["id"] for t in tj.get("added_tokens", [])]
    cls = max(ids, default=-1) + 1
    tj.setdefault("added_tokens", []).append({"id": cls, "content": "[CLS]", "single_word": False, "lstrip": False,
                                              "rstrip": False, "normalized": False, "special": True})
    return cls


def tokenizer_json(folder):
    """(tokenizer.json text with [CLS], its id) from a T5 tokenizer folder."""
    tj_path = Path(folder) / "tokenizer.json"
    if tj_path.is_file():
        tj = json.loads(tj_path.read_text(encoding="utf-8"))
        cls = add_cls_json(tj)
        return json.dumps(tj, ensure_ascii=False), cls
    try:
        from transformers import AutoTokenizer
    except ImportError:
        sys.exit(f"{folder}: no tokenizer.json; building one from spiece.model needs transformers "
                 "(pip install transformers sentencepiece)")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tok.add_tokens("[CLS]", special_tokens=True)
    return tok.backend_tokenizer.to_str(), tok.convert_tokens_to_ids("[CLS]")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="state dict (.safetensors, or .bin/.pt via torch.load)")
    ap.add_argument("--tokenizer", required=True, help="folder with a T5 tokenizer (tokenizer.json or spiece.model)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--t5-config", help="T5 config.json (default: t5-base's sizes)")
    ap.add_argument("--false-id", type=int, default=6136)
    ap.add_argument("--true-id", type=int, default=1176)
    ap.add_argument("--max-seq-len", type=int, default=200)
    ap.add_argument("--full-head", action="store_true", help="keep dense.weight's every row")
    a = ap.parse_args()

    try:
        import numpy as np
        from safetensors.numpy import save_file
    except ImportError as e:
        sys.exit(f"{e}: this script needs numpy and safetensors (python3 -m pip install numpy safetensors)")

    out = Path(a.out)
    if out.exists():
        sys.exit(f"{out}: exists; choose a new folder")
    ck = Path(a.checkpoint)
    sd = load_checkpoint(ck)
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    keep = {}
    for k, v in sd.items():
        if k.startswith(("t5.encoder.embed_tokens", "t5.decoder.embed_tokens")):
            continue
        if k.startswith("t5.lm_head"):
            print(f"note: dropping {k} (FiT5 scores with `dense`, not with T5's LM head)", file=sys.stderr)
            continue
        if not (k.startswith("t5.") or k.startswith("dense.")):
            print(f"note: dropping {k} (not part of FiT5's forward)", file=sys.stderr)
            continue
        keep[k] = np.ascontiguousarray(v, dtype=np.float32)
    for need in ("t5.shared.weight", "dense.weight", "dense.bias"):
        if need not in keep:
            sys.exit(f"{ck}: no tensor '{need}'; is this a FiT5 state dict?")
    if not a.full_head:
        rows = [a.false_id, a.true_id]
        if keep["dense.weight"].shape[0] <= max(rows) or min(rows) < 0:
            sys.exit(f"{ck}: dense.weight has {keep['dense.weight'].shape[0]} rows; --false-id/--true-id are outside it")
        keep["dense.weight"] = np.ascontiguousarray(keep["dense.weight"][rows])
        keep["dense.bias"] = np.ascontiguousarray(keep["dense.bias"][rows])
    n_global = len({k.split(".")[3] for k in keep if k.startswith("t5.encoder.project_global.")})
    cfg = dict(T5_BASE)
    if a.t5_config:
        cfg.update({k: v for k, v in json.loads(Path(a.t5_config).read_text()).items() if k in T5_BASE})
    cfg["vocab_size"] = keep["t5.shared.weight"].shape[0]
    if keep["t5.shared.weight"].shape[1] != cfg["d_model"]:
        sys.exit(f"{ck}: t5.shared.weight is {list(keep['t5.shared.weight'].shape)} but the T5 config says "
                 f"d_model {cfg['d_model']}; pass the backbone's config with --t5-config")
    gated = any(k.endswith("DenseReluDense.wi_0.weight") for k in keep)
    if gated != (cfg["feed_forward_proj"] == "gated-gelu"):
        sys.exit(f"{ck}: the checkpoint's feed-forward layers are {'gated (wi_0/wi_1, T5 v1.1)' if gated else 'wi (T5 v1.0)'}"
                 f" but the T5 config says feed_forward_proj '{cfg['feed_forward_proj']}'; pass the backbone's "
                 "config with --t5-config")
    cfg.update({"architectures": ["FiT5"], "model_type": "t5", "use_global": n_global > 0,
                "num_global_layers": n_global, "max_seq_len": a.max_seq_len,
                "false_token_id": a.false_id,
                "true_token_id": a.true_id,
                "feature_bins": {"cap": 190.0, "offset": 165.0, "scale": 25.0, "clamp_low": False}})

    tok_text, cls = tokenizer_json(a.tokenizer)
    if cls >= cfg["vocab_size"]:
        sys.exit(f"[CLS] got id {cls}, outside the model's {cfg['vocab_size']} embedding rows")

    tmp = Path(tempfile.mkdtemp(prefix=".fit5-", dir=out.parent if str(out.parent) else "."))
    try:
        save_file(keep, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
        (tmp / "tokenizer.json").write_text(tok_text, encoding="utf-8")
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"{out}: {len(keep)} tensors, {n_global} global layers, [CLS] = {cls}")


if __name__ == "__main__":
    main()
