"""Graphs as boolean adjacency matrices, and batched graph kernels.

A graph on ``n`` vertices is an ``(n, n)`` boolean array ``adj`` with
``adj[u, v]`` true when there is an edge ``u -> v``.  An undirected graph is a
symmetric ``adj``.  Every kernel here also accepts a leading batch axis
``(..., n, n)`` and is pure numpy, so task samplers can call them on a whole
batch at once.
"""

from __future__ import annotations

import numpy as np

from algeval.errors import ParameterError, check_int_range


def as_adjacency(adj) -> np.ndarray:
    """Validate and return ``adj`` as a boolean ``(..., n, n)`` array."""
    a = np.asarray(adj).astype(bool)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"adjacency must be (..., n, n), got shape {a.shape}")
    return a


def from_edges(n: int, edges, directed: bool = True) -> np.ndarray:
    """Adjacency ``(n, n)`` from an iterable of ``(u, v)`` pairs."""
    adj = np.zeros((n, n), dtype=bool)
    e = np.asarray(list(edges), dtype=np.int64).reshape(-1, 2)
    adj[e[:, 0], e[:, 1]] = True
    if not directed:
        adj[e[:, 1], e[:, 0]] = True
    return adj


def bool_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean matrix product ``(a @ b) > 0`` over the last two axes."""
    return np.matmul(a.astype(np.uint8), b.astype(np.uint8)) > 0


def reach_within(adj: np.ndarray, hops: int) -> np.ndarray:
    """``R[u, v]``: v is reachable from u in at most ``hops`` edges (``hops >= 0``; u reaches u)."""
    adj = as_adjacency(adj)
    n = adj.shape[-1]
    r = np.broadcast_to(np.eye(n, dtype=bool), adj.shape).copy()
    step = adj | np.eye(n, dtype=bool)
    k = hops
    while k > 0:  # exponentiation by squaring over the (or, and) semiring
        if k & 1:
            r = bool_matmul(r, step)
        step = bool_matmul(step, step)
        k >>= 1
    return r


def transitive_closure(adj: np.ndarray) -> np.ndarray:
    """Reflexive-transitive closure: ``C[u, v]`` iff a (possibly empty) path u -> v exists."""
    adj = as_adjacency(adj)
    n = adj.shape[-1]
    return reach_within(adj, max(n - 1, 0))


def hop_distances(adj: np.ndarray) -> np.ndarray:
    """All-pairs shortest hop distance ``D[u, v]`` (``-1`` when unreachable), batched.

    Computed by layer-synchronous expansion: at round d, the vertices first
    reached are those at distance exactly d.
    """
    adj = as_adjacency(adj)
    n = adj.shape[-1]
    dist = np.full(adj.shape, -1, dtype=np.int64)
    reached = np.broadcast_to(np.eye(n, dtype=bool), adj.shape).copy()
    dist[reached] = 0
    frontier = reached
    for d in range(1, n):
        nxt = bool_matmul(frontier, adj) & ~reached
        if not nxt.any():
            break
        dist[nxt] = d
        reached |= nxt
        frontier = nxt
    return dist


def is_dag(adj: np.ndarray) -> bool:
    """True when the directed graph has no cycle (including self-loops)."""
    adj = as_adjacency(adj)
    c = transitive_closure(adj)
    # a cycle through u means u reaches a successor that reaches u back
    return not bool((bool_matmul(adj, c) & np.eye(adj.shape[-1], dtype=bool)).any())


def check_adjacency(adj, name: str = "adj") -> np.ndarray:
    """Return ``adj`` as a boolean ``(n, n)`` array with ``n >= 1``, else raise :class:`ParameterError`."""
    try:
        a = np.asarray(adj)
    except ValueError:  # ragged nested lists
        raise ParameterError(name, "ragged", "must be a square (n, n) matrix with n >= 1") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
        raise ParameterError(f"{name}.shape", a.shape, "must be a square (n, n) matrix with n >= 1")
    return a.astype(bool)


def check_vertex(name: str, value, n: int) -> int:
    """Return ``value`` as an int vertex id in ``0..n-1``, else raise :class:`ParameterError`."""
    return check_int_range(name, value, 0, n - 1)
