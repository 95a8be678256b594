"""Benchmark: the ``search`` sampler's throughput, against a per-example networkx baseline.

    .venv/bin/python benchmarks/bench_search_sampler.py [--vertices 16] [--count 20000] [--repeats 5]

Runs on one core (thread pools pinned to 1 before numpy loads).  Prints the
median examples/s of the vectorised sampler over ``--repeats`` runs, beside a
straightforward per-example generator of the same balanced distribution
written with networkx (the "obvious" way), timed in the same run on fewer
examples, and their ratio.  Target (issue 2): >= 20,000 examples/s at 16
vertices.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "XLA_FLAGS"):
    os.environ.setdefault(_v, "1" if _v != "XLA_FLAGS" else "--xla_cpu_multi_thread_eigen=false")
try:  # also pin the BLAS pool, whichever numpy was built with
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
except ImportError:
    pass

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

from algeval.sim.tasks import get_task  # noqa: E402


def networkx_baseline(count: int, n_max: int, seed: int) -> int:
    """Per-example balanced graphs with networkx: chain to goal, distractor chain, dead ends."""
    rng = np.random.default_rng(seed)
    made = 0
    for _ in range(count):
        L = int(rng.integers(1, (n_max - 1) // 2 + 1))
        n = int(rng.integers(2 * L + 1, n_max + 1))
        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        nx.add_path(g, range(L + 1))
        nx.add_path(g, [0] + list(range(L + 1, 2 * L + 1)))
        for x in range(2 * L + 1, n):
            g.add_edge(int(rng.integers(0, x)), x)
            if rng.random() < 0.5:
                g.add_edge(int(rng.integers(0, x)), x)
        labels = rng.permutation(n_max)[:n]
        g = nx.relabel_nodes(g, dict(enumerate(labels.tolist())))
        goal = int(labels[L])
        edges = list(g.edges())
        rng.shuffle(edges)
        ans = [v for v in g.successors(int(labels[0])) if v == goal or nx.has_path(g, v, goal)]
        tokens = [t for u, v in edges for t in ("E", u, v)] + ["Q", int(labels[0]), goal, "P", int(labels[0])]
        made += len(tokens) > 0 and len(ans) == 1
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vertices", type=int, default=16)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    task = get_task("search", max_vertices=a.vertices, distribution="balanced")
    task.sample(100, 0)  # warm up
    ours = []
    for r in range(a.repeats):
        t0 = time.perf_counter()
        task.sample(a.count, r)
        ours.append(a.count / (time.perf_counter() - t0))
    base = []
    nb = max(a.count // 20, 200)
    for r in range(a.repeats):
        t0 = time.perf_counter()
        networkx_baseline(nb, a.vertices, r)
        base.append(nb / (time.perf_counter() - t0))
    mo, mb = statistics.median(ours), statistics.median(base)
    print(f"search sampler, balanced, max_vertices={a.vertices}, batch {a.count}, one core, "
          f"median of {a.repeats}:")
    print(f"  algeval (vectorised numpy)   {mo:>12,.0f} examples/s   (runs: {', '.join(f'{x:,.0f}' for x in ours)})")
    print(f"  networkx per-example         {mb:>12,.0f} examples/s")
    print(f"  ratio                        {mo / mb:>12.1f}x")
    print(f"  target >= 20,000 examples/s: {'met' if mo >= 20000 else 'NOT met'}")


if __name__ == "__main__":
    main()
