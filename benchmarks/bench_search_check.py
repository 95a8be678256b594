"""Benchmark: how fast a search construction is checked, model side and reference side, against networkx.

    .venv/bin/python benchmarks/bench_search_check.py [--vertices 8] [--count 4000] [--repeats 3]

Draws ``--count`` prompts (naive distribution, random prefixes), then times
(a) the construction (path merging) predicting the next vertex for all of
them, batched under ``jax.jit``; (b) the reference side, the vectorised
numpy answer sets of ``SearchTask.encode``; and (c) the same answer sets
computed per graph with networkx (successors that still reach the goal), the
baseline.  Medians over ``--repeats`` runs; the machine is shared, so read the
ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import networkx as nx
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vertices", type=int, default=8)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from algeval.models.constructions.search import path_merging_search, to_model
    from algeval.sim.tasks import get_task

    task = get_task("search", max_vertices=a.vertices, distribution="naive", path_prefix="random")
    model, _ = to_model(path_merging_search(task))
    batch = task.sample(a.count, 0)
    fn, state = model.functional()
    run = jax.jit(lambda st, t: jnp.argmax(fn(st, t)[0][:, -1], -1))
    chunk = 1024
    run(state, jnp.asarray(batch.tokens[:chunk])).block_until_ready()

    def model_side():
        preds = [np.asarray(run(state, jnp.asarray(batch.tokens[i:i + chunk]))) for i in range(0, a.count, chunk)]
        return np.concatenate(preds)

    def reference_side():  # the vectorised answer sets, as the certificate computes them
        return task.encode(*_canonical(batch, task))

    def networkx_side():
        out = []
        for i in range(a.count):
            g = nx.DiGraph()
            g.add_edges_from(map(tuple, np.argwhere(batch.meta["adj"][i])))
            c, goal = int(batch.meta["current"][i]), int(batch.meta["goal"][i])
            out.append([v for v in g.successors(c) if v == goal or nx.has_path(g, v, goal)])
        return out

    times = {}
    for name, f in (("model (path merging, jit)", model_side), ("reference (vectorised numpy)", reference_side),
                    ("networkx per graph", networkx_side)):
        ts = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        times[name] = statistics.median(ts)
    preds = model_side()
    ok = np.mean([int(p) in set(batch.answers[i, -1][batch.answers[i, -1] >= 0]) for i, p in enumerate(preds)])
    cfg = model.cfg
    print(f"checking path merging on search, n={a.vertices}, {a.count} graphs, median of {a.repeats} "
          f"(model: {cfg.n_layers} layers, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, {cfg.max_len} positions); "
          f"accuracy {ok:.4f}")
    base = times["networkx per graph"]
    for name, t in times.items():
        print(f"  {name:<32s} {a.count / t:>12,.0f} graphs/s   ({base / t:.1f}x networkx)")


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
