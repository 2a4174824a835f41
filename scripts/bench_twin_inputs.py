"""Writes the Twin-Merging forward benchmark's inputs: a random Llama base (hidden 512, 8 layers, SwiGLU
1536, the zoo's 320-token tokenizer: 23 M parameters) and four "fine-tunes" = base + a rank-24 update
+ small noise per matrix, as HF folders. Usage: bench_twin_inputs.py OUT ZOO_TOKENIZER_JSON"""
import json, os, shutil, sys
import numpy as np
from safetensors.numpy import save_file

out, tok = sys.argv[1], sys.argv[2]
V, H, I, L, NH = 320, 512, 1536, 8, 8
shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
for i in range(L):
    p = f"model.layers.{i}."
    shapes.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                   p + "self_attn.q_proj.weight": (H, H), p + "self_attn.k_proj.weight": (H, H),
                   p + "self_attn.v_proj.weight": (H, H), p + "self_attn.o_proj.weight": (H, H),
                   p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I)})
config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V, "hidden_size": H,
          "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NH,
          "head_dim": H // NH, "max_position_embeddings": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
          "tie_word_embeddings": True, "attention_bias": False, "hidden_act": "silu", "bos_token_id": 1,
          "eos_token_id": 2, "torch_dtype": "float32"}
rng = np.random.default_rng(0)
base = {k: (np.ones(s, np.float32) if len(s) == 1 else rng.standard_normal(s, dtype=np.float32) * 0.02)
        for k, s in shapes.items()}
for name in ["base", "t0", "t1", "t2", "t3"]:
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    t = base
    if name != "base":
        r = np.random.default_rng(hash(name) % 2**32)
        t = {}
        for k, v in base.items():
            if v.ndim == 2:
                u = r.standard_normal((v.shape[0], 24), dtype=np.float32) * 0.02
                w = r.standard_normal((24, v.shape[1]), dtype=np.float32) * 0.02
                t[k] = v + u @ w + r.standard_normal(v.shape, dtype=np.float32) * 1e-3
            else:
                t[k] = v + r.standard_normal(v.shape, dtype=np.float32) * 1e-2
    save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    json.dump(config, open(os.path.join(d, "config.json"), "w"))
    shutil.copy(tok, os.path.join(d, "tokenizer.json"))
print("written", out)
