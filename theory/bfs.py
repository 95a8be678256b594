"""Breadth-first search, layer-synchronous, as an exact executor.

Given a graph ``adj`` (``adj[u, v]`` = edge ``u -> v``) and a start vertex
``s``, BFS computes the layers

    F_0 = {s},    F_{d+1} = N^+(F_d) \\ (F_0 ∪ ... ∪ F_d),

where ``N^+(X)`` is the set of out-neighbours of ``X``.  ``F_d`` is exactly the
set of vertices at hop distance ``d`` from ``s``.  The run stops after the
last non-empty layer, so it records ``D + 1`` states, ``D`` the eccentricity
of ``s`` (the largest finite distance from it).

This module also holds the argument checks every graph algorithm of
:mod:`algeval.theory` shares (:func:`check_adjacency`, :func:`check_vertex`).
"""

from __future__ import annotations

import numpy as np

from algeval.errors import ParameterError, check_int_range
from algeval.theory.graph import bool_matmul
from algeval.theory.trace import Trace


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


def bfs(adj, start) -> Trace:
    """Layer-synchronous BFS from ``start``; one step per layer.

    Step ``d`` (``d = 0..D``) is the state after discovering layer ``F_d``:

    * ``frontier[d, v]``  v ∈ F_d (v is at distance exactly d);
    * ``visited[d, v]``   v ∈ F_0 ∪ ... ∪ F_d (distance <= d);
    * ``distance[d, v]``  the distance of v if it is <= d, else ``-1``.

    ``answer`` is the visit order: the layers in turn, each layer by
    ascending vertex id.  It contains exactly the vertices reachable from
    ``start``, and ``distance[-1]`` is the full single-source distance vector.
    This order need not be one a queue-based BFS produces (on the path
    ``4 - 0 - 1 - 2 - 3`` from 1 it is ``(1, 0, 2, 3, 4)``, but dequeuing 0
    before 2 enqueues 4 before 3); see
    :func:`algeval.theory.orders.is_valid_bfs_order` and its ``layered`` flag.
    """
    a = check_adjacency(adj)
    n = a.shape[0]
    s = check_vertex("start", start, n)

    frontier = np.zeros(n, dtype=bool)
    frontier[s] = True
    visited = frontier.copy()
    distance = np.full(n, -1, dtype=np.int64)
    distance[s] = 0
    frontiers, visiteds, distances = [frontier], [visited.copy()], [distance.copy()]
    order = [s]
    d = 0
    while True:
        nxt = bool_matmul(frontier[None, :], a)[0] & ~visited
        if not nxt.any():
            break
        d += 1
        visited |= nxt
        distance[nxt] = d
        order.extend(int(v) for v in np.flatnonzero(nxt))
        frontier = nxt
        frontiers.append(frontier)
        visiteds.append(visited.copy())
        distances.append(distance.copy())

    return Trace(
        algorithm="bfs",
        answer=tuple(order),
        variables={
            "frontier": np.stack(frontiers),
            "visited": np.stack(visiteds),
            "distance": np.stack(distances),
        },
        axes={
            "frontier": ("step", "vertex"),
            "visited": ("step", "vertex"),
            "distance": ("step", "vertex"),
        },
    )
