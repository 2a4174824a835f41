"""bfloat16 copies of the merge benchmark's float32 inputs (for the issue's bf16 rows).
Usage: bench_merge_bf16_inputs.py SRC DST  (SRC written by bench_merge_inputs.py)"""
import json, os, shutil, sys
import torch
from safetensors.torch import load_file, save_file

src, dst = sys.argv[1], sys.argv[2]
for name in ["base", "ft1", "ft2"]:
    s, d = os.path.join(src, name), os.path.join(dst, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(s):
        if f.endswith(".safetensors"):
            t = load_file(os.path.join(s, f))
            save_file({k: v.to(torch.bfloat16) for k, v in t.items()}, os.path.join(d, f), metadata={"format": "pt"})
        else:
            shutil.copy(os.path.join(s, f), os.path.join(d, f))
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["torch_dtype"] = "bfloat16"
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    print(name, "written", flush=True)
