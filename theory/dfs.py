"""Depth-first search (preorder), iterative, as an exact executor.

The DFS keeps the *path* from ``start`` to the vertex being explored (the
stack).  Repeatedly:

    u = top of the stack
    if u has an unvisited out-neighbour: visit the first one v (by priority), push v
    else: pop u

until the stack is empty.  The visit (pre)order is the same as recursive DFS
``visit(u): for v in N^+(u) by priority: if v unvisited: visit(v)``.

Priority: by default the smallest vertex id first.  ``neighbor_order`` may be
a permutation ``p`` of ``0..n-1`` (``p[0]`` has the highest priority, i.e.
vertex ``v`` ranks ``r(v) = position of v in p`` and the unvisited neighbour
with the smallest ``r`` is taken), or a :class:`numpy.random.Generator` that
draws such a permutation.  One priority is used at every vertex, so not every
valid DFS order arises this way; :func:`algeval.theory.orders.all_dfs_orders`
enumerates them all.
"""

from __future__ import annotations

import numpy as np

from algeval.errors import ParameterError
from algeval.theory.graph import check_adjacency, check_vertex
from algeval.theory.trace import Trace


def _priority_rank(neighbor_order, n: int) -> np.ndarray:
    """``rank[v]``: the position of v in the priority permutation (lower = first)."""
    if neighbor_order is None:
        return np.arange(n)
    if isinstance(neighbor_order, np.random.Generator):
        perm = neighbor_order.permutation(n)
    else:
        perm = np.asarray(neighbor_order)
        is_perm = (
            perm.shape == (n,)
            and np.issubdtype(perm.dtype, np.integer)
            and np.array_equal(np.sort(perm), np.arange(n))
        )
        if not is_perm:
            raise ParameterError(
                "neighbor_order", perm.tolist(), f"must be a permutation of 0..{n - 1} or a numpy Generator"
            )
    rank = np.empty(n, dtype=np.int64)
    rank[perm] = np.arange(n)
    return rank


def dfs(adj, start, neighbor_order=None) -> Trace:
    """Preorder DFS from ``start``; one step per newly visited vertex.

    Step ``t`` (``t = 0..R-1``, ``R`` the number of vertices reachable from
    ``start``) is the state right after visiting the ``t``-th vertex:

    * ``visited[t, v]``  v is among the first ``t + 1`` visited vertices;
    * ``stack[t]``       the DFS path start -> ... -> current, bottom first,
      padded with ``-1`` to width ``n``;
    * ``current[t]``     the vertex just visited (the top of the stack).

    Backtracking (pops) happens between recorded steps.  ``answer`` is the
    visit order (exactly the vertices reachable from ``start``).
    """
    a = check_adjacency(adj)
    n = a.shape[0]
    s = check_vertex("start", start, n)
    rank = _priority_rank(neighbor_order, n)
    # out-neighbours of every vertex, sorted by priority
    succ = [sorted(np.flatnonzero(a[u]).tolist(), key=lambda v: rank[v]) for u in range(n)]

    visited = np.zeros(n, dtype=bool)
    visited[s] = True
    path = [s]
    nxt_idx = [0] * n  # next position to scan in succ[u]: each edge is scanned once
    order = [s]

    def record():
        row = np.full(n, -1, dtype=np.int64)
        row[: len(path)] = path
        visiteds.append(visited.copy())
        stacks.append(row)
        currents.append(path[-1])

    visiteds, stacks, currents = [], [], []
    record()
    while path:
        u = path[-1]
        nb = succ[u]
        while nxt_idx[u] < len(nb) and visited[nb[nxt_idx[u]]]:
            nxt_idx[u] += 1
        if nxt_idx[u] == len(nb):
            path.pop()
            continue
        v = nb[nxt_idx[u]]
        visited[v] = True
        path.append(v)
        order.append(v)
        record()

    return Trace(
        algorithm="dfs",
        answer=tuple(order),
        variables={
            "visited": np.stack(visiteds),
            "stack": np.stack(stacks),
            "current": np.asarray(currents, dtype=np.int64),
        },
        axes={
            "visited": ("step", "vertex"),
            "stack": ("step", "slot"),
            "current": ("step",),
        },
    )
