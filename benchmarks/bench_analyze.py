"""Benchmark: one ``algeval analyze`` run (issue 6's speed target) and exact patching against its baseline.

    .venv/bin/python benchmarks/bench_analyze.py [--model DIR] [--count 1000] [--exact-pairs 50] [--repeats 3]

The target: on a 6-layer model and 1,000 search graphs, attention, geometry,
order matching, probes and attribution patching on all 1,000, and exact
activation patching on 50 clean/corrupted pairs, in under 2 minutes on 2 CPU
cores.  Without ``--model`` the model is a 6-layer transformer of the trained
models' class (d_model 128, 4 heads of 32, d_mlp 512; random weights, seed 0)
on balanced search graphs with ``n = 12`` (sequence length 69); ``--model``
analyses a saved model directory instead (e.g. a trained one or a
construction; ``--vertices`` must match its task).

Part 1 runs :func:`algeval.sim.analyses.report.run_all` once, as ``analyze``
does (random-weights control, 64 permutations, causal tests), and prints every
section's wall time (``timing``), the sum over the target's sections and the
newly-reached probes (``onsets``, which the verdict also uses) on their own.
Part 2 times exact activation patching on the same pairs, resumed at the
patched layer (the default) against the baseline that runs every patched
forward from the embedding, medians over ``--repeats`` (after one warm-up run
each, so compilation is not counted), with the largest difference of their
effects.  The machine is shared: read the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

TARGET_S = 120.0
ISSUE_SECTIONS = ("forward", "control_forward", "attention", "geometry", "orders", "probes", "causal")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a saved model directory (default: a 6-layer d_model 128 model)")
    ap.add_argument("--vertices", type=int, default=12, help="max_vertices of the balanced search task (default 12)")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--exact-pairs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import numpy as np

    from algeval.models import Transformer, TransformerConfig
    from algeval.models.io import load_model
    from algeval.sim.analyses import activation_patching, corrupted_pairs
    from algeval.sim.analyses.report import run_all
    from algeval.sim.tasks import get_task

    task = get_task("search", max_vertices=a.vertices, distribution="balanced")
    batch = task.sample(a.count, 0)
    if a.model:
        model, _ = load_model(a.model)
        name = a.model
    else:
        cfg = TransformerConfig(vocab_size=task.vocab.size, max_len=batch.tokens.shape[1], n_layers=6, d_model=128,
                                n_heads=4, d_head=32, d_mlp=512)
        model = Transformer(cfg, seed=0)
        name = "6-layer transformer, d_model 128, 4 heads, d_mlp 512 (random weights, seed 0)"
    c = model.cfg
    print(f"model: {name}: {c.n_unrolled()} layers, d_model {c.d_model}, {c.n_heads} heads, d_mlp {c.d_mlp}")
    print(f"data: {a.count} balanced search graphs, n = {a.vertices}, sequence length {batch.tokens.shape[1]}; "
          f"CPU cores visible: {os.cpu_count()}")

    t0 = time.perf_counter()
    res = run_all(model, batch, n_exact=a.exact_pairs)
    total = time.perf_counter() - t0
    tm = res["timing"]
    print("\npart 1: one analyze run (run_all), wall seconds per section")
    for k, v in tm.items():
        print(f"  {k:16s} {v:8.1f}")
    issue = sum(tm.get(k, 0.0) for k in ISSUE_SECTIONS)
    print(f"  {'total':16s} {total:8.1f}")
    print(f"issue's sections (all but onsets): {issue:.1f} s, target {TARGET_S:.0f} s: "
          f"{'met' if issue < TARGET_S else 'NOT met'}")
    print(f"with the newly-reached probes (onsets {tm.get('onsets', 0.0):.1f} s): {total:.1f} s: "
          f"{'met' if total < TARGET_S else 'NOT met'}")
    print(f"verdict: {res['verdict']['verdict']}")

    clean, corrupt, _ = corrupted_pairs(batch, 0, max_pairs=a.exact_pairs)

    def timed(resume):
        activation_patching(model, clean, corrupt, resume=resume)  # warm-up: compilation
        ts, out = [], None
        for _ in range(a.repeats):
            t = time.perf_counter()
            out = activation_patching(model, clean, corrupt, resume=resume)
            ts.append(time.perf_counter() - t)
        return statistics.median(ts), out

    t_res, r_res = timed(True)
    t_full, r_full = timed(False)
    diff = float(np.abs(r_res["effect"].values - r_full["effect"].values).max())
    print(f"\npart 2: exact activation patching, {len(clean)} pairs, {r_res['n_runs']:,} patched passes "
          f"(median of {a.repeats})")
    print(f"  resumed at the patched layer: {t_res:7.2f} s")
    print(f"  baseline, from the embedding: {t_full:7.2f} s")
    print(f"  speed-up {t_full / t_res:.2f}x; largest effect difference {diff:.2e}")


if __name__ == "__main__":
    main()
