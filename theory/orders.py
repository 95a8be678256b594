"""Which visit orders a BFS or a DFS can produce, for *some* neighbour ordering.

A search from ``start`` may scan each vertex's out-neighbours in any order.
These checks decide whether a given order is one of the orders so produced
(for directed or undirected adjacency alike: only out-neighbours are used);
the ``all_*``/``count_*`` functions enumerate them exactly, for tests and
small graphs.

BFS (queue-based; same orders as layer-synchronous BFS with any in-layer
order).  Dequeuing the vertices in the given order, vertex ``order[h]`` must
enqueue its not-yet-discovered out-neighbours, in some order, as the next
contiguous block of ``order``.  Equivalently (the classic check): let
``par(v)`` be the earliest-placed in-neighbour of ``v``; then ``par(v)`` comes
before ``v`` and the positions of ``par(order[1]), par(order[2]), ...`` never
decrease.

DFS (preorder).  Keeping the DFS path as a stack, every next vertex must be
an unvisited out-neighbour of the deepest stack vertex that still has an
unvisited out-neighbour (vertices without one are popped first).

A *layered* BFS check (:func:`is_valid_bfs_order` with ``layered=True``)
only asks the distances from ``start`` to be non-decreasing along the order:
the orders of layer-synchronous BFS that visits each layer as a set.

Both checks also require the order to list exactly the vertices reachable
from ``start``, each once, starting with ``start``.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from algeval.errors import ParameterError, check_int_range
from algeval.theory.bfs import bfs
from algeval.theory.graph import check_adjacency, check_vertex
from algeval.theory.graph import transitive_closure

DEFAULT_MAX_COUNT = 100_000


def _as_vertex_list(order, n: int) -> list[int] | None:
    """``order`` as a list of distinct ints in ``0..n-1``, or None if it is not one."""
    try:
        arr = np.asarray(order)
    except Exception:  # ragged or otherwise not array-like
        return None
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        return None
    out = arr.astype(np.int64).tolist()
    if any(v < 0 or v >= n for v in out) or len(set(out)) != len(out):
        return None
    return out


def _covers_reachable(a: np.ndarray, s: int, out: list[int]) -> bool:
    """``out`` starts at ``s`` and holds exactly the vertices reachable from ``s``."""
    reach = transitive_closure(a)[s]
    return bool(out) and out[0] == s and set(out) == set(np.flatnonzero(reach).tolist())


def _checked(adj, start, order):
    """``(adj, start, order)`` validated; ``order`` is None unless it lists exactly the reachable vertices."""
    a = check_adjacency(adj)
    s = check_vertex("start", start, a.shape[0])
    out = _as_vertex_list(order, a.shape[0])
    if out is None or not _covers_reachable(a, s, out):
        out = None
    return a, s, out


def is_valid_bfs_order(adj, start, order, layered: bool = False) -> bool:
    """True iff some BFS from ``start`` (some neighbour ordering) visits vertices in ``order``.

    With ``layered=True`` the test is the weaker one of layer-synchronous BFS
    with each layer taken as a *set* (visited in any order): the distances
    from ``start`` must never decrease along ``order``.  The order
    :func:`algeval.theory.bfs.bfs` returns (each layer by ascending id) always
    passes that test but not always the queue test: on the path
    ``4 - 0 - 1 - 2 - 3`` from 1 it is ``(1, 0, 2, 3, 4)``, while a queue that
    dequeues 0 before 2 must enqueue 4 before 3.
    """
    a, s, out = _checked(adj, start, order)
    if out is None:
        return False
    n = a.shape[0]
    if layered:
        dist = bfs(a, s)["distance"][-1][out]
        return bool((np.diff(dist) >= 0).all())
    discovered = np.zeros(n, dtype=bool)
    discovered[s] = True
    # `order` covers the reachable set, so if every dequeued vertex enqueues exactly
    # the next block, the queue never runs dry early and j ends at len(out)
    j = 1  # next position of `order` to be enqueued
    for u in out:
        new = a[u] & ~discovered
        block = out[j : j + int(new.sum())]
        if set(block) != set(np.flatnonzero(new).tolist()):
            return False
        discovered |= new
        j += len(block)
    return True


def is_valid_dfs_order(adj, start, order) -> bool:
    """True iff some preorder DFS from ``start`` (some neighbour ordering) visits vertices in ``order``."""
    a, s, out = _checked(adj, start, order)
    if out is None:
        return False
    n = a.shape[0]
    visited = np.zeros(n, dtype=bool)
    visited[s] = True
    stack = [s]
    for v in out[1:]:
        while stack and not (a[stack[-1]] & ~visited).any():
            stack.pop()
        if not stack or not a[stack[-1], v] or visited[v]:
            return False
        visited[v] = True
        stack.append(v)
    return True


def _capped(gen, max_count: int, what: str) -> list[tuple[int, ...]]:
    cap = check_int_range("max_count", max_count, lo=1)
    found = []
    for order in gen:
        if len(found) == cap:
            raise ParameterError("max_count", cap, f"{what} has more orders than that; raise max_count")
        found.append(order)
    return found


def all_bfs_orders(adj, start, max_count: int = DEFAULT_MAX_COUNT) -> list[tuple[int, ...]]:
    """Every distinct BFS visit order from ``start``, by exact enumeration.

    Each dequeued vertex enqueues its undiscovered out-neighbours in every
    possible order.  Raises :class:`ParameterError` past ``max_count`` orders.
    """
    a = check_adjacency(adj)
    n = a.shape[0]
    s = check_vertex("start", start, n)

    def expand(order: list[int], discovered: np.ndarray, h: int):
        if h == len(order):
            yield tuple(order)
            return
        new = np.flatnonzero(a[order[h]] & ~discovered).tolist()
        seen = discovered.copy()
        seen[new] = True
        for block in permutations(new):
            yield from expand(order + list(block), seen, h + 1)

    start_seen = np.zeros(n, dtype=bool)
    start_seen[s] = True
    return _capped(expand([s], start_seen, 0), max_count, f"bfs from start={s}")


def all_dfs_orders(adj, start, max_count: int = DEFAULT_MAX_COUNT) -> list[tuple[int, ...]]:
    """Every distinct preorder DFS visit order from ``start``, by exact enumeration.

    At each step the DFS may enter any unvisited out-neighbour of the deepest
    stack vertex that has one.  Raises :class:`ParameterError` past
    ``max_count`` orders.
    """
    a = check_adjacency(adj)
    n = a.shape[0]
    s = check_vertex("start", start, n)

    def expand(order: list[int], stack: list[int], visited: np.ndarray):
        stack = list(stack)
        while stack and not (a[stack[-1]] & ~visited).any():
            stack.pop()
        if not stack:
            yield tuple(order)
            return
        for v in np.flatnonzero(a[stack[-1]] & ~visited).tolist():
            vis = visited.copy()
            vis[v] = True
            yield from expand(order + [v], stack + [v], vis)

    start_seen = np.zeros(n, dtype=bool)
    start_seen[s] = True
    return _capped(expand([s], [s], start_seen), max_count, f"dfs from start={s}")


def count_bfs_orders(adj, start, max_count: int = DEFAULT_MAX_COUNT) -> int:
    """Number of distinct BFS visit orders from ``start`` (see :func:`all_bfs_orders`)."""
    return len(all_bfs_orders(adj, start, max_count))


def count_dfs_orders(adj, start, max_count: int = DEFAULT_MAX_COUNT) -> int:
    """Number of distinct preorder DFS visit orders from ``start`` (see :func:`all_dfs_orders`)."""
    return len(all_dfs_orders(adj, start, max_count))
