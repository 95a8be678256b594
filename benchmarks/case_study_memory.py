"""Peak device memory of `algeval case-study` on Llama-3.1-8B in bfloat16 (computed; no weights needed).

    .venv/bin/python benchmarks/case_study_memory.py [--seeds 4] [--pairs 3] [--max-label 99]

Prompt length ``T``: the case study's own prompts (every graph and condition,
as the command builds them by default), measured two ways without the
Llama-3 tokenizer file: ``pieces`` = the number of pre-tokenizer pieces
under Llama-3's split regex (BPE never merges across pieces, so every piece
is >= 1 token; the prompts' words and numbers <= 999 are single tokens of
its 128k vocabulary, so this is the expected count) and ``bytes`` = UTF-8
bytes (byte-level BPE never yields more tokens than bytes: a hard upper
bound); both + 1 for BOS.  Peak = :func:`algeval.models.llama.peak_memory`
with the hooks the analyses cache (:data:`algeval.sim.analyses.common.COLLECT_HOOKS`),
``batch = chunk`` prompts per forward pass, plus a second copy of the weights for the
random-weights control model (both models are alive while the control runs).
Greedy generation (batch 1, width rounded up to 64, caches one hook) is below the forward pass.
"""

import argparse

from tokenizers import Regex, pre_tokenizers

from algeval.models.llama import LLAMA_3_1_8B, peak_memory
from algeval.sim.analyses.common import COLLECT_HOOKS
from algeval.sim.llm_eval import build_examples

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GPU = 80e9

a = argparse.ArgumentParser()
a.add_argument("--seeds", type=int, default=4)
a.add_argument("--pairs", type=int, default=3)
a.add_argument("--max-label", type=int, default=99)
args = a.parse_args()
split = pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated")
lens = {}
for e in build_examples(None, pairs=args.pairs, relabelings=args.seeds, max_label=args.max_label):
    p, b = len(split.pre_tokenize_str(e.prompt)) + 1, len(e.prompt.encode()) + 1
    lp, lb = lens.get(e.graph, (0, 0))
    lens[e.graph] = (max(lp, p), max(lb, b))
print("Longest prompt per graph (tokens incl. BOS): " +
      ", ".join(f"{g} {p} (<= {b})" for g, (p, b) in lens.items()) + "\n")
cfg = LLAMA_3_1_8B
print(f"Llama-3.1-8B, bfloat16; hooks cached: {', '.join(COLLECT_HOOKS)}\n")
print("| T | how | chunk | params GB | cache GB | layer GB | logits GB | peak GB | + control weights GB | fits 80 GB |")
print("|---|---|---|---|---|---|---|---|---|---|")
Tp = max(p for p, _ in lens.values())
Tb = max(b for _, b in lens.values())
for T, how in ((Tp, "pieces (expected)"), (Tb, "bytes (upper bound)")):
    for chunk in (1, 4, 8):
        m = {k: v / 1e9 for k, v in peak_memory(cfg, T, COLLECT_HOOKS, batch=chunk).items()}
        tot = m["total"] + m["params"]
        print(f"| {T} | {how} | {chunk} | {m['params']:.2f} | {m['cache']:.2f} | {m['layer']:.2f} | "
              f"{m['logits']:.2f} | {m['total']:.2f} | {tot:.2f} | {'yes' if tot * 1e9 <= GPU else 'no'} |")
gen = peak_memory(cfg, -(-(Tb + 8) // 64) * 64, ("ln_final.hook_normalized",))
print(f"\nGreedy generation at {-(-(Tb + 8) // 64) * 64} tokens: {gen['total'] / 1e9:.2f} GB.")
