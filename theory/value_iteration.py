"""Finite-horizon value iteration on a graph with node rewards.

An agent stands on a vertex; each move follows an edge ``u -> v`` and
collects ``rewards[v]`` on entering ``v``; it may stop at any time.  No
discount.  The optimal value of having at most ``k`` moves left is

    V_0(u)     = 0
    V_{k+1}(u) = max( 0,  max_{v : u -> v} rewards[v] + V_k(v) )

where the ``0`` is the value of stopping at ``u`` (a vertex without
successors has ``V_k = 0``).  Unrolled, ``V_k(u)`` is the largest total
reward over all *walks* ``u = w_0 -> w_1 -> ... -> w_m`` with ``0 <= m <= k``:

    V_k(u) = max_{m <= k, walks} sum_{i=1..m} rewards[w_i].

Walks may repeat vertices: on a graph with a cycle reachable from ``u`` a
reward is counted on *every* visit, so ``V_k(u)`` is an upper bound on the
best simple-path value (:func:`algeval.theory.value_path.value_path`), not
that value.  The two coincide when no cycle is reachable from ``u``
(every walk is then a simple path), e.g. on DAGs and trees with edges
directed away from the root -- but not on undirected trees, where
``u -> v -> u`` is a walk.
"""

from __future__ import annotations

import numpy as np

from algeval.errors import ParameterError, check_int_range
from algeval.theory.graph import check_adjacency
from algeval.theory.trace import Trace


def check_rewards(rewards, n: int) -> np.ndarray:
    """Return ``rewards`` as a finite float64 vector of length ``n``, else raise :class:`ParameterError`."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.shape != (n,):
        raise ParameterError("rewards.shape", r.shape, f"must be ({n},), one reward per vertex")
    if not np.isfinite(r).all():
        raise ParameterError("rewards", r.tolist(), "must be finite")
    return r


def value_iteration(adj, rewards, horizon=None) -> Trace:
    """Run ``horizon`` Bellman backups (default ``n - 1``); step ``k`` holds ``V_k``.

    Variables (steps ``k = 0..horizon``):

    * ``value[k, u]``   ``V_k(u)`` (float64);
    * ``policy[k, u]``  the successor ``v`` maximising ``rewards[v] + V_{k-1}(v)``
      (smallest id on ties), or ``-1`` when stopping is at least as good
      (ties go to stopping: fewer moves); ``policy[0]`` is all ``-1``.

    ``answer`` is ``V_horizon`` (a copy of ``value[-1]``).
    """
    a = check_adjacency(adj)
    n = a.shape[0]
    r = check_rewards(rewards, n)
    h = n - 1 if horizon is None else check_int_range("horizon", horizon, lo=0)

    value = np.zeros((h + 1, n), dtype=np.float64)
    policy = np.full((h + 1, n), -1, dtype=np.int64)
    for k in range(1, h + 1):
        q = np.where(a, (r + value[k - 1])[None, :], -np.inf)  # q[u, v]: move u -> v, then act optimally
        best_v = np.argmax(q, axis=1)  # first maximiser = smallest id
        best = q[np.arange(n), best_v]
        move = best > 0
        value[k] = np.where(move, best, 0.0)
        policy[k] = np.where(move, best_v, -1)

    return Trace(
        algorithm="value-iteration",
        answer=value[-1].copy(),
        variables={"value": value, "policy": policy},
        axes={"value": ("step", "vertex"), "policy": ("step", "vertex")},
    )
