"""Path merging: the exponential reachability mechanism of trained transformers.

Saparov et al. (ICLR 2025, "Transformers Struggle to Learn to Search") found
that transformers trained on graph search compute reachability by *path
merging*: every vertex u keeps the set ``R_l(u)`` of vertices it reaches, and
each layer merges sets, so the reach radius doubles per layer:

    R_0(u)     = {u} ∪ N^+(u)                          (within 1 hop)
    R_{l+1}(u) = ∪_{w ∈ R_l(u)} R_l(w)                 (within 2^{l+1} hops)

As boolean matrices, ``reach_0 = I ∨ A`` and ``reach_{l+1} = reach_l · reach_l``
over the (or, and) semiring, and by induction

    reach_l[u, v]  ⇔  v is reachable from u in at most 2^l edges.

A shortest path on ``n`` vertices has at most ``n - 1`` edges, so
``L = ceil(log2(max(n - 1, 1)))`` merges reach the reflexive-transitive closure.
"""

from __future__ import annotations

import numpy as np

from algeval.errors import check_int_range
from algeval.theory.graph import check_adjacency
from algeval.theory.graph import bool_matmul
from algeval.theory.trace import Trace


def reach_steps_needed(distance) -> int:
    """Merge steps after which a pair at hop distance ``d`` is first in ``reach``.

    ``reach_l`` covers distance ``d`` iff ``d <= 2^l``, so the first such
    ``l`` is ``ceil(log2 d)`` for ``d >= 1``; pairs at distance 0 or 1 are
    already in ``reach_0``, and so is every ``d <= 1`` (including the
    ``-1`` "unreachable" code of :func:`~algeval.theory.graph.hop_distances`,
    for which nothing is ever needed), which gives 0.
    """
    d = check_int_range("distance", distance)
    return 0 if d <= 1 else (d - 1).bit_length()


def path_merging(adj) -> Trace:
    """Run path merging; step ``l`` holds ``reach[l][u, v]`` = v within ``2^l`` hops of u.

    Steps ``l = 0..L`` with ``L = ceil(log2(max(n - 1, 1)))``;
    ``reach[L]`` is the reflexive-transitive closure, which is also the
    ``answer``.  Variables: ``reach: (step, vertex, vertex)`` bool.
    """
    a = check_adjacency(adj)
    n = a.shape[0]
    steps = reach_steps_needed(max(n - 1, 1))
    reach = [a | np.eye(n, dtype=bool)]
    for _ in range(steps):
        reach.append(bool_matmul(reach[-1], reach[-1]))
    stacked = np.stack(reach)
    return Trace(
        algorithm="path-merging",
        answer=stacked[-1].copy(),
        variables={"reach": stacked},
        axes={"reach": ("step", "vertex", "vertex")},
    )
