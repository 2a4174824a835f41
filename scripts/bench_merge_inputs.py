"""Writes the merge benchmark's inputs: a random float32 base with Qwen2.5-0.5B's tensor shapes (untied
head) and two "fine-tunes" (base + N(0, 1e-3) noise), as HF folders. Usage: bench_merge_inputs.py DIR"""
import json, os, sys
import numpy as np
from safetensors.numpy import save_file

out = sys.argv[1]
V, H, I, L, NH, KV = 151936, 896, 4864, 24, 14, 2
HD = H // NH
shapes = {"model.embed_tokens.weight": (V, H), "lm_head.weight": (V, H), "model.norm.weight": (H,)}
for i in range(L):
    p = f"model.layers.{i}."
    shapes.update({
        p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
        p + "self_attn.q_proj.weight": (H, H), p + "self_attn.q_proj.bias": (H,),
        p + "self_attn.k_proj.weight": (KV * HD, H), p + "self_attn.k_proj.bias": (KV * HD,),
        p + "self_attn.v_proj.weight": (KV * HD, H), p + "self_attn.v_proj.bias": (KV * HD,),
        p + "self_attn.o_proj.weight": (H, H),
        p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I),
    })
config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": V, "hidden_size": H,
          "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": KV,
          "max_position_embeddings": 32768, "rope_theta": 1e6, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
          "hidden_act": "silu", "torch_dtype": "float32"}
rng = np.random.default_rng(0)
base = {k: (rng.standard_normal(s, dtype=np.float32) * 0.02) for k, s in shapes.items()}
for name, noise in [("base", None), ("ft1", 1), ("ft2", 2)]:
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    r = np.random.default_rng(noise or 0)
    t = base if noise is None else {k: v + r.standard_normal(v.shape, dtype=np.float32) * 1e-3 for k, v in base.items()}
    # Two shards, as real checkpoints of this size often are.
    names = sorted(t)
    half = len(names) // 2
    index = {}
    for j, part in enumerate([names[:half], names[half:]]):
        fn = f"model-{j + 1:05d}-of-00002.safetensors"
        save_file({k: t[k] for k in part}, os.path.join(d, fn), metadata={"format": "pt"})
        index.update({k: fn for k in part})
    json.dump({"metadata": {}, "weight_map": index}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    json.dump(config, open(os.path.join(d, "config.json"), "w"))
    print(name, "written", flush=True)
