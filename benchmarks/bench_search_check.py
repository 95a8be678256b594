"""Benchmark: how fast a search construction is checked, model side and reference side, against networkx.

    .venv/bin/python benchmarks/bench_search_check.py [--vertices 8 12 16] [--count 8192] [--repeats 3]

For each graph size, draws ``--count`` prompts (naive distribution, random
prefixes), then times (a) each construction (path merging, BFS) predicting
the next vertex for all of them as a certificate does:
:func:`algeval.models.fastpath.last_position_logits` (jit, batched; the same
weights with exact zeros skipped, last position only); (a') the dense forward
pass of the same model, jitted, on a slice, for the ratio; (b) the reference
side, the vectorised numpy answer sets of ``SearchTask.encode``; and (c) the
same answer sets computed per graph with networkx (successors that still reach
the goal), the baseline.  Medians over ``--repeats`` runs; the machine is
shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import networkx as nx
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vertices", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--count", type=int, default=8192)
    ap.add_argument("--dense-count", type=int, default=512, help="prompts for the dense-pass timing")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    for n in a.vertices:
        bench(n, a.count, a.dense_count, a.repeats)


def _median_time(f, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench(n: int, count: int, dense_count: int, repeats: int) -> None:
    import jax
    import jax.numpy as jnp

    from algeval.models.constructions.search import bfs_search, path_merging_search, to_model
    from algeval.models.fastpath import last_position_logits
    from algeval.sim.tasks import get_task

    task = get_task("search", max_vertices=n, distribution="naive", path_prefix="random")
    batch = task.sample(count, 0)

    def networkx_side():
        out = []
        for i in range(count):
            g = nx.DiGraph()
            g.add_edges_from(map(tuple, np.argwhere(batch.meta["adj"][i])))
            c, goal = int(batch.meta["current"][i]), int(batch.meta["goal"][i])
            out.append([v for v in g.successors(c) if v == goal or nx.has_path(g, v, goal)])
        return out

    rates = {"networkx per graph (baseline)": count / _median_time(networkx_side, repeats),
             "reference (vectorised numpy)": count / _median_time(lambda: task.encode(*_canonical(batch, task)),
                                                                 repeats)}
    lines = []
    for name, build in (("path merging", path_merging_search), ("BFS", bfs_search)):
        model, _ = to_model(build(task))
        last_position_logits(model, batch.tokens[:2048])  # compile every width bucket once
        last_position_logits(model, batch.tokens)
        preds = last_position_logits(model, batch.tokens).argmax(1)
        rates[f"{name}: fast path (certificates)"] = count / _median_time(
            lambda: last_position_logits(model, batch.tokens), repeats)
        fn, state = model.functional()
        run = jax.jit(lambda st, t: fn(st, t)[0][:, -1])
        sl = jnp.asarray(batch.tokens[:dense_count])
        run(state, sl).block_until_ready()
        rates[f"{name}: dense forward pass"] = dense_count / _median_time(
            lambda: run(state, sl).block_until_ready(), repeats)
        ok = np.mean([int(p) in set(batch.answers[i, -1][batch.answers[i, -1] >= 0]) for i, p in enumerate(preds)])
        cfg = model.cfg
        lines.append(f"  {name}: {cfg.n_layers} layers, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, "
                     f"{cfg.max_len} positions; accuracy {ok:.4f}")
    print(f"checking search constructions, n={n}, {count} graphs (dense pass: {dense_count}), "
          f"median of {repeats}")
    print("\n".join(lines))
    base = rates["networkx per graph (baseline)"]
    for name, r in rates.items():
        print(f"  {name:<40s} {r:>12,.0f} graphs/s   ({r / base:.2f}x networkx)")


def _canonical(batch, task):
    """The batch's graphs in the canonical form ``SearchTask.encode`` takes (labels as vertices)."""
    B, V = batch.meta["adj"].shape[:2]
    n = np.full(B, V)
    path = batch.meta["path"]
    k = (path >= 0).sum(1) - batch.meta["lookahead"]
    perm = np.tile(np.arange(V), (B, 1))
    keys = np.random.default_rng(0).random((B, V * V))
    return batch.meta["adj"], n, batch.meta["start"], batch.meta["goal"], path, k, perm, keys


if __name__ == "__main__":
    main()
