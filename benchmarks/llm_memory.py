"""Peak device memory of a Llama-3.1-8B case study in bfloat16 (estimate; no weights needed).

    .venv/bin/python benchmarks/llm_memory.py [SEQ_LEN ...]     # default 1000 1500 2000

Formula: :func:`algeval.models.llama.peak_memory` (its docstring):
params + cached hooks + max(one layer's working set incl. its float32
attention scores, the logits).  Prints a markdown table, GB = 1e9 bytes.
"""

import sys

from algeval.models.llama import LLAMA_3_1_8B, param_count, peak_memory

GPU = 80e9
HOOK_SETS = {
    "nothing cached": (),
    "resid_post, all layers": ("blocks.*.hook_resid_post",),
    "resid_post + attn pattern, all layers": ("blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"),
    "resid + z + mlp_post, all layers": ("blocks.*.hook_resid_pre", "blocks.*.attn.hook_z",
                                         "blocks.*.mlp.hook_post"),
    "every hook (for contrast)": None,
}

cfg = LLAMA_3_1_8B
lens = [int(x) for x in sys.argv[1:]] or [1000, 1500, 2000]
print(f"Llama-3.1-8B shape: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads / "
      f"{cfg.kv_heads} kv heads of {cfg.d_head}, d_mlp {cfg.d_mlp}, vocab {cfg.vocab_size}; "
      f"{param_count(cfg):,} parameters in {cfg.param_dtype}\n")
print("| tokens | cached hooks | params GB | cache GB | layer GB | logits GB | peak GB | fits 80 GB |")
print("|---|---|---|---|---|---|---|---|")
for T in lens:
    for label, hooks in HOOK_SETS.items():
        if hooks is None:
            from algeval.models.hooks import hook_names
            hooks = hook_names(cfg)
        m = peak_memory(cfg, T, hooks)
        g = {k: v / 1e9 for k, v in m.items()}
        print(f"| {T} | {label} | {g['params']:.2f} | {g['cache']:.2f} | {g['layer']:.2f} | {g['logits']:.2f} "
              f"| {g['total']:.2f} | {'yes' if m['total'] <= GPU else 'no'} |")
