"""``dfs-trace``: write out a depth-first search visit order.

Token format (specials ``<pad> E S | .``; vertex label ``v`` is token
``vocab.vertex(v)``)::

    E u v  E u v ...  S s |  v1 v2 ... vR

a shuffled edge list (undirected edges listed once, endpoints in random
order), the start ``S s``, the separator ``|``, then the preorder DFS visit
order ``v1 = s, v2, ..., vR`` of the ``R`` vertices reachable from ``s``.
Scored positions: the separator and every trace vertex; the answer set at
the separator is ``{v1}``, at ``v_t`` it is ``{v_{t+1}}``, and at ``vR`` it
is ``{.}`` (the end token, which is the last thing to generate and so never
appears in the input).  Example, the path 2 - 0 - 1 from 0::

    E 0 1 E 2 0 S 0 |  0 1 2     answers: | -> {0}, 0 -> {1}, 1 -> {2}, 2 -> {.}

Default (``any_order=False``): the order is :func:`algeval.theory.dfs.dfs`
with the smallest label first.  ``any_order=True``: the trace is a random
valid DFS order (at each step a uniform choice among the valid
continuations) and each answer set is every vertex that keeps the prefix a
valid DFS order for *some* neighbour ordering: with the DFS path kept as a
stack, pop vertices without unvisited out-neighbours; the continuations are
the unvisited out-neighbours of the top (``{.}`` once the stack is empty) --
the check of :func:`algeval.theory.orders.is_valid_dfs_order`.

Graphs come from :mod:`algeval.sim.tasks.graphs` (default family
``connected``: a random spanning tree plus extra edges with probability
``edge_prob``; ``directed=True`` orients the tree away from vertex 0).
Undirected graphs start at a uniform vertex; directed graphs at vertex 0,
the root from which every vertex of the tree-based families is reachable.

``attention`` is ``prefix-full``: ``meta["prefix_end"]`` is the position
right after the separator, so the edges, start and separator see each other.
``meta``: ``adj (B, V, V)``, ``start``, ``n_vertices``, ``present``,
``prefix_end``, ``order (B, V)`` (the trace, ``-1``-padded), ``order_len``
(``R``), ``vertex_labels``.
"""

from __future__ import annotations

import numpy as np

from algeval.errors import check
from algeval.sim.tasks.base import Task, TaskBatch, Vocab, register
from algeval.sim.tasks.graphs import (
    GRAPH_PARAMS,
    GraphSpec,
    answers_from_mask,
    assemble,
    choose,
    edge_list,
    edge_tokens,
    ragged,
    resolve_max_len,
)
from algeval.theory.dfs import dfs

SPECIALS = ("<pad>", "E", "S", "|", ".")


def dfs_continuations(adj: np.ndarray, start: np.ndarray, rng: np.random.Generator | None = None,
                      order: np.ndarray | None = None):
    """Batched DFS-prefix continuations.

    Follows ``order (B, V)`` when given (it must be a valid DFS order, ``-1``-padded), else
    draws one, each step uniform among the continuations.  Returns ``(order, conts)`` where
    ``conts[b, j] (V,)`` is the set of valid next vertices after the first ``j + 1`` visited
    ones (all false: the search is over).
    """
    B, V, _ = adj.shape
    b = np.arange(B)
    visited = np.zeros((B, V), dtype=bool)
    visited[b, start] = True
    stack = np.zeros((B, V), dtype=np.int64)
    stack[:, 0] = start
    depth = np.ones(B, dtype=np.int64)
    out = np.full((B, V), -1, dtype=np.int64)
    out[:, 0] = start
    conts = np.zeros((B, V, V), dtype=bool)
    for t in range(1, V):
        while True:
            top = stack[b, np.maximum(depth - 1, 0)]
            pop = (depth > 0) & ~(adj[b, top] & ~visited).any(-1)
            if not pop.any():
                break
            depth = depth - pop
        cand = adj[b, top] & ~visited & (depth > 0)[:, None]
        conts[:, t - 1] = cand
        live = cand.any(-1)
        if not live.any():
            break
        nxt = choose(cand | ~live[:, None], rng) if order is None else np.maximum(order[:, t], 0)
        assert order is None or cand[b[live], nxt[live]].all(), "order is not a valid DFS order"
        lb, lv = b[live], nxt[live]
        visited[lb, lv] = True
        stack[lb, depth[live]] = lv
        depth[live] += 1
        out[lb, t] = lv
    return out, conts


@register
class DFSTrace(Task):
    """Generate a DFS visit order; see the module docstring."""

    name = "dfs-trace"
    attention = "prefix-full"
    params = {**GRAPH_PARAMS,
              "family": ("connected", GRAPH_PARAMS["family"][1]),
              "any_order": (False, "accept every valid DFS continuation (trace: a random valid order)")}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.spec = GraphSpec.from_config(self.config)
        a = self.config["any_order"]
        check(isinstance(a, (bool, np.bool_)), "any_order", a, "must be true or false")
        self.any_order = bool(a)
        self.vocab = Vocab(SPECIALS, self.spec.num_labels)
        self.max_len = resolve_max_len(self.config["max_len"],
                                       3 * self.spec.max_edges() + 3 + self.spec.max_vertices)
        self.answer_width = self.spec.max_vertices if self.any_order else 1

    def _sample(self, count, rng):
        adj, labels, present, n, _ = self.spec.sample(count, rng)
        b = np.arange(count)
        start = labels[:, 0] if self.spec.directed else choose(present, rng)
        V, v = self.spec.num_labels, self.vocab
        if self.any_order:
            order, conts = dfs_continuations(adj, start, rng)
        else:
            order = np.full((count, V), -1, dtype=np.int64)
            for i in range(count):
                o = dfs(adj[i], int(start[i])).answer
                order[i, : len(o)] = o
        R = (order >= 0).sum(1)

        edges = edge_tokens(adj, self.spec.directed, rng, v)
        head = np.stack([np.full(count, v.id("S")), v.vertex(start), np.full(count, v.id("|"))], 1)
        tokens, starts = assemble([edges, head, ragged(v.vertex(np.maximum(order, 0)), R)], self.max_len)
        prefix_end = starts[2]

        # answer sets at the separator (t = 0) and after each trace vertex (t = 1..R)
        end = np.arange(V + 1)[None, :] == R[:, None]
        if self.any_order:
            masks = np.concatenate([np.eye(V, dtype=bool)[start][:, None], conts], 1)
            sets = answers_from_mask(masks.reshape(count * (V + 1), V), self.answer_width,
                                     v.vertex_offset).reshape(count, V + 1, -1)
        else:
            nxt = np.concatenate([order, np.full((count, 1), -1)], 1)
            sets = np.where(nxt >= 0, nxt + v.vertex_offset, -1)[..., None].astype(np.int32)
        sets[end] = -1
        sets[end, 0] = v.id(".")
        T = self.max_len
        answers = np.full((count, T, self.answer_width), -1, dtype=np.int32)
        loss_mask = np.zeros((count, T), dtype=bool)
        rb, t = np.nonzero(np.arange(V + 1)[None, :] <= R[:, None])
        pos = prefix_end[rb] - 1 + t
        answers[rb, pos] = sets[rb, t]
        loss_mask[rb, pos] = True
        meta = {"adj": adj, "start": start, "n_vertices": n, "present": present,
                "prefix_end": prefix_end, "order": order, "order_len": R, "vertex_labels": labels}
        return TaskBatch(self.name, tokens, answers, loss_mask, v, self.attention, meta)

    def references(self, batch, i):
        from algeval.theory.bfs import bfs

        adj, s = batch.meta["adj"][i], int(batch.meta["start"][i])
        return {"dfs": dfs(adj, s), "bfs": bfs(adj, s)}

    def describe(self, batch, i):
        m = batch.meta
        sep = " -> " if self.spec.directed else " - "
        edges = ", ".join(f"{u}{sep}{w}" for u, w in edge_list(m["adj"][i], self.spec.directed))
        toks = batch.vocab.decode(batch.tokens[i])
        steps = []
        for p in np.flatnonzero(batch.loss_mask[i]):
            ans = ",".join(batch.vocab.decode(batch.answer_set(i, int(p))))
            steps.append(f"{toks[p]}->{{{ans}}}")
        order = m["order"][i][: int(m["order_len"][i])]
        kind = "directed" if self.spec.directed else "undirected"
        return "\n".join([
            f"graph ({int(m['n_vertices'][i])} vertices, {kind} {self.spec.family}): "
            f"{edges or '(no edges)'}",
            f"start {int(m['start'][i])}; trace ({'any valid order' if self.any_order else 'smallest first'}): "
            f"{' '.join(map(str, order))}",
            "answer sets: " + " ".join(steps),
            "tokens: " + " ".join(t for t in toks if t != "<pad>"),
        ])
