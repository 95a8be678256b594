"""CogEval valuePath: the most rewarding simple path from a start vertex.

CogEval (Momennejad et al., NeurIPS 2023) asks for the route through a
graph of rooms that collects the most reward.  Here, for a start ``s`` and a
step budget ``S`` (default ``n - 1``, i.e. unlimited for simple paths), over
all *simple* paths ``s = p_0 -> p_1 -> ... -> p_m`` with ``0 <= m <= S``
edges (the trivial path ``(s,)`` included, worth 0):

    value(p) = sum_{i=1..m} rewards[p_i]        (the start's reward is not collected)

The optimal paths maximise ``value``; among those, the ones with the fewest
edges win (so a zero-reward detour never ties with stopping early).  The
``answer`` lists every optimal path, sorted lexicographically.

Computed exactly by depth-first enumeration of all simple paths from ``s``
with at most ``S`` edges: time ``O(P + n)`` for ``P`` such paths, which is
exponential in general (``P <= sum_m Δ^m`` for maximum out-degree ``Δ``) but
fast for ``n <= ~25`` with bounded degree, the CogEval regime.  Comparisons of
values are exact float equality: use integer (or dyadic) rewards for ties to
be meaningful.

Contrast :mod:`algeval.theory.value_iteration`, whose values are over walks
(vertices may repeat) and bound this value from above.
"""

from __future__ import annotations

import numpy as np

from algeval.errors import check_int_range
from algeval.theory.graph import check_adjacency, check_vertex
from algeval.theory.trace import Trace
from algeval.theory.value_iteration import check_rewards


def value_path(adj, rewards, start, max_steps=None) -> Trace:
    """All optimal simple paths from ``start`` with at most ``max_steps`` edges.

    Variables, for budgets ``step = 0..max_steps``:

    * ``best_value[step]``       the best value over simple paths with at most
      ``step`` edges (``best_value[0] = 0``); ``best_value[-1]`` is the
      optimal value of the whole query;
    * ``first_steps[step, v]``   ``v`` is the second vertex of some optimal
      path under budget ``step`` (all false when stopping at once is optimal).

    ``answer``: tuple of the optimal paths (tuples of vertices), sorted.
    """
    a = check_adjacency(adj)
    n = a.shape[0]
    r = check_rewards(rewards, n)
    s = check_vertex("start", start, n)
    budget = n - 1 if max_steps is None else check_int_range("max_steps", max_steps, lo=0)

    succ = [np.flatnonzero(a[u]).tolist() for u in range(n)]
    # per exact length m: the best value and every path of length m achieving it
    best_at = [-np.inf] * (budget + 1)
    paths_at: list[list[tuple[int, ...]]] = [[] for _ in range(budget + 1)]

    on_path = np.zeros(n, dtype=bool)
    path = [s]
    on_path[s] = True
    values = [0.0]
    iters = [iter(succ[s] if budget > 0 else ())]

    def note():
        m, val = len(path) - 1, values[-1]
        if val > best_at[m]:
            best_at[m], paths_at[m] = val, [tuple(path)]
        elif val == best_at[m]:
            paths_at[m].append(tuple(path))

    note()
    while iters:  # iterative DFS over simple paths
        v = next(iters[-1], None)
        if v is None:
            iters.pop()
            on_path[path.pop()] = False
            values.pop()
            continue
        if on_path[v]:
            continue
        path.append(v)
        on_path[v] = True
        values.append(values[-1] + r[v])
        note()
        iters.append(iter(succ[v] if len(path) <= budget else ()))  # len(path) - 1 edges so far

    best_value = np.zeros(budget + 1, dtype=np.float64)
    first_steps = np.zeros((budget + 1, n), dtype=bool)
    best, best_len = -np.inf, 0
    for step in range(budget + 1):
        if best_at[step] > best:  # strictly better; ties keep the shorter length
            best, best_len = best_at[step], step
        best_value[step] = best
        for p in paths_at[best_len]:
            if len(p) > 1:
                first_steps[step, p[1]] = True

    return Trace(
        algorithm="value-path",
        answer=tuple(sorted(paths_at[best_len])),
        variables={"best_value": best_value, "first_steps": first_steps},
        axes={"best_value": ("step",), "first_steps": ("step", "vertex")},
    )


def value_path_first_steps(adj, rewards, start, max_steps=None) -> tuple[int, ...]:
    """Sorted first moves (second vertices) of the optimal paths of :func:`value_path`.

    ``()`` when staying at ``start`` is optimal.  This is what CogEval asks
    when it wants only "the first room to enter".
    """
    t = value_path(adj, rewards, start, max_steps)
    return tuple(np.flatnonzero(t["first_steps"][-1]).tolist())
