"""Breadth-first search, layer-synchronous, as an exact executor.

Given a graph ``adj`` (``adj[u, v]`` = edge ``u -> v``) and a start vertex
``s``, BFS computes the layers

    F_0 = {s},    F_{d+1} = N^+(F_d) \\ (F_0 ∪ ... ∪ F_d),

where ``N^+(X)`` is the set of out-neighbours of ``X``.  ``F_d`` is exactly the
set of vertices at hop distance ``d`` from ``s``.  The run stops after the
last non-empty layer, so it records ``D + 1`` states, ``D`` the eccentricity
of ``s`` (the largest finite distance from it).

"""

from __future__ import annotations

import numpy as np

from algeval.theory.graph import bool_matmul, check_adjacency, check_vertex
from algeval.theory.trace import Trace


def bfs(adj, start) -> Trace:
    """Layer-synchronous BFS from ``start``; one step per layer.

    Step ``d`` (``d = 0..D``) is the state after discovering layer ``F_d``:

    * ``frontier[d, v]``  v ∈ F_d (v is at distance exactly d);
    * ``visited[d, v]``   v ∈ F_0 ∪ ... ∪ F_d (distance <= d);
    * ``distance[d, v]``  the distance of v if it is <= d, else ``-1``.

    ``answer`` is the visit order of a FIFO-queue BFS that enqueues each
    vertex's unvisited out-neighbours by ascending id: the layers in turn,
    each layer ordered by (queue position of the parent, vertex id).  On the
    path ``4 - 0 - 1 - 2 - 3`` from 1 it is ``(1, 0, 2, 4, 3)``.  It is a
    valid queue-based BFS order (:func:`algeval.theory.orders.is_valid_bfs_order`),
    contains exactly the vertices reachable from ``start``, and
    ``distance[-1]`` is the full single-source distance vector.
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
        # queue order within the layer: parents in their visit order, children by id
        seen = set()
        for u in order[len(order) - int(frontier.sum()):]:
            for v in np.flatnonzero(a[u] & nxt):
                if int(v) not in seen:
                    seen.add(int(v))
                    order.append(int(v))
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
