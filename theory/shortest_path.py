"""All shortest paths between two vertices (unweighted, hop count).

With ``d(x)`` the BFS distance from ``start`` (see :mod:`algeval.theory.bfs`),
a path ``start = p_0 -> p_1 -> ... -> p_D = goal`` is shortest iff
``D = d(goal)`` and ``d(p_i) = i`` for every i.  So the shortest paths are
exactly the paths of the *shortest-path DAG* that keeps the edges ``u -> v``
with ``d(v) = d(u) + 1``, enumerated backwards from ``goal`` through the
predecessors ``{u : u -> v, d(u) = d(v) - 1}``.  Their number can grow
exponentially with the distance; the enumeration is meant for small graphs.

A first move ``v`` (an out-neighbour of ``start``) begins a shortest path iff
``dist(v, goal) = d(goal) - 1``, which :func:`next_hops` checks with one BFS on
the reversed graph, without enumerating paths.
"""

from __future__ import annotations

import numpy as np

from algeval.theory.bfs import bfs
from algeval.theory.graph import check_adjacency, check_vertex
from algeval.theory.trace import Trace


def shortest_paths(adj, start, goal) -> Trace:
    """Every shortest path from ``start`` to ``goal``.

    ``answer``: tuple of paths (each a tuple of vertices, ``start`` first,
    ``goal`` last), sorted lexicographically; ``()`` when ``goal`` is
    unreachable, ``((start,),)`` when ``start == goal``.
    Variables: ``distance: (step, vertex)``, the BFS layers from ``start``
    exactly as :func:`algeval.theory.bfs.bfs` records them.
    """
    a = check_adjacency(adj)
    n = a.shape[0]
    s = check_vertex("start", start, n)
    g = check_vertex("goal", goal, n)
    layers = bfs(a, s)["distance"]
    dist = layers[-1]

    if dist[g] < 0:
        paths: list[tuple[int, ...]] = []
    else:
        # suffixes[v]: all shortest-path suffixes v -> ... -> goal, for v on the DAG
        suffixes: dict[int, list[tuple[int, ...]]] = {g: [(g,)]}
        for d in range(int(dist[g]), 0, -1):
            for v in [v for v in suffixes if dist[v] == d]:
                for u in np.flatnonzero(a[:, v] & (dist == d - 1)).tolist():
                    suffixes.setdefault(u, []).extend((u,) + p for p in suffixes[v])
        paths = suffixes[s]

    return Trace(
        algorithm="shortest-path",
        answer=tuple(sorted(paths)),
        variables={"distance": layers},
        axes={"distance": ("step", "vertex")},
    )


def next_hops(adj, start, goal) -> tuple[int, ...]:
    """Sorted second vertices of all shortest ``start -> goal`` paths.

    ``v`` qualifies iff ``start -> v`` is an edge and
    ``dist(v, goal) = dist(start, goal) - 1``.  ``()`` when ``goal`` is
    unreachable or ``start == goal``.
    """
    a = check_adjacency(adj)
    n = a.shape[0]
    s = check_vertex("start", start, n)
    g = check_vertex("goal", goal, n)
    to_goal = bfs(a.T, g)["distance"][-1]  # dist(v, goal) for every v
    if s == g or to_goal[s] < 0:
        return ()
    return tuple(np.flatnonzero(a[s] & (to_goal == to_goal[s] - 1)).tolist())
