"""``search``: graph search on DAGs (Saparov et al., ICLR 2025).

Token format (``E``, ``Q``, ``P`` are special tokens; a vertex label ``v``
is token ``vocab.vertex(v)`` and prints as ``v``)::

    E 3 7 E 7 1 E 3 5 E 5 2 ... Q 3 1 P 3  ->  answer set {7}

a shuffled edge list (``E u v`` for an edge u -> v), the query ``Q start
goal``, and the path so far ``P start ... current``.  The model predicts, at
the last position, the next vertex: any child of ``current`` from which
``goal`` is still reachable is correct.  Sequences are left-padded to
``max_len``, so the decision position is always the last one.

Distributions (``distribution=``):

* ``balanced`` -- the lookahead ``L`` is drawn uniformly from
  ``1..max_lookahead``.  The start has two branches: a chain of ``L`` edges
  to the goal and a distractor chain of ``L`` edges; the remaining vertices
  hang off earlier vertices as dead ends (one in-edge, plus a second one with
  probability 1/2), never entering the goal chain, so exactly one child of
  the start reaches the goal.  Needs ``2 * max_lookahead + 1 <= max_vertices``.
* ``naive`` -- a random DAG (edge ``i -> j`` for ``i < j`` in a random
  order with probability ``edge_prob``, out-degree capped at
  ``max_out_degree``), a random start with a child, a random goal reachable
  from it within ``max_lookahead`` hops.
* ``star`` -- the path-star graphs of Bachmann & Nagarajan (2024):
  ``star_arms`` chains of ``L`` edges from the start; the goal ends one arm.

Vertex ids are an independent random injection of the graph's vertices into
the ``num_labels`` vertex tokens, per example; edges are shuffled per
example.  With ``path_prefix="random"`` the path so far follows the correct
path for a random number of steps, so the decision is made mid-path.

``meta``: ``adj (B, V, V)`` over labels, ``start``, ``goal``, ``current``,
``lookahead`` (hops from ``current`` to ``goal``), ``n_vertices``,
``present (B, V)``, ``path (B, max_lookahead + 1)`` (labels, ``-1``-padded).
"""

from __future__ import annotations

import numpy as np

from algeval.errors import check, check_int_range
from algeval.sim.tasks.base import Task, TaskBatch, Vocab, register

DISTRIBUTIONS = ("balanced", "naive", "star")


def _reaches(adj: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """``r[b, u]``: goal[b] is reachable from u (u = goal included), for a batch of DAGs."""
    B, N, _ = adj.shape
    r = np.zeros((B, N), dtype=bool)
    r[np.arange(B), goal] = True
    a = adj.astype(np.float32)
    for _ in range(N - 1):
        nxt = r | (np.einsum("buv,bv->bu", a, r.astype(np.float32)) > 0)
        if (nxt == r).all():
            break
        r = nxt
    return r


def _hops_from(adj: np.ndarray, src: np.ndarray, limit: int) -> np.ndarray:
    """``d[b, v]``: hop distance from src[b] to v (``-1`` unreachable), up to ``limit`` hops."""
    B, N, _ = adj.shape
    d = np.full((B, N), -1, dtype=np.int64)
    front = np.zeros((B, N), dtype=bool)
    front[np.arange(B), src] = True
    d[front] = 0
    seen = front.copy()
    a = adj.astype(np.float32)
    for k in range(1, limit + 1):
        front = (np.einsum("bu,buv->bv", front.astype(np.float32), a) > 0) & ~seen
        if not front.any():
            break
        d[front] = k
        seen |= front
    return d


def _shortest_path(adj: np.ndarray, start: np.ndarray, goal: np.ndarray, width: int) -> np.ndarray:
    """``(B, width + 1)`` a shortest start -> goal path (smallest id at each step), ``-1``-padded."""
    B = adj.shape[0]
    dist_to_goal = _hops_to(adj, goal)
    path = np.full((B, width + 1), -1, np.int64)
    cur = start.copy()
    path[:, 0] = cur
    steps = dist_to_goal[np.arange(B), start]
    for k in range(1, width + 1):
        ok = adj[np.arange(B), cur] & (dist_to_goal == (steps - k)[:, None])
        nxt = np.argmax(ok, axis=-1)
        go = k <= steps
        cur = np.where(go, nxt, cur)
        path[go, k] = cur[go]
    return path


def _hops_to(adj: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """``d[b, u]``: hop distance from u to goal[b] (``-1`` when unreachable)."""
    return _hops_from(np.swapaxes(adj, 1, 2), goal, adj.shape[-1])


@register
class SearchTask(Task):
    name = "search"
    attention = "causal"
    params = {
        "max_vertices": (16, "vertices per graph, at most"),
        "num_labels": (None, "vertex tokens in the vocabulary (default: max_vertices)"),
        "distribution": ("balanced", "balanced | naive | star"),
        "max_lookahead": (None, "largest start-to-goal distance (default: the most the vertex count allows)"),
        "max_out_degree": (3, "naive: out-degree cap"),
        "edge_prob": (None, "naive: edge probability (default 2/n)"),
        "star_arms": (2, "star: number of arms"),
        "path_prefix": ("start", "start | random: where along the correct path the decision is made"),
    }

    def __init__(self, **kw):
        super().__init__(**kw)
        c = self.config
        self.N = check_int_range("max_vertices", c["max_vertices"], 3, 512)
        self.V = check_int_range("num_labels", c["num_labels"] if c["num_labels"] is not None else self.N, 1, None)
        check(self.V >= self.N, "max_vertices", self.N, f"must be <= num_labels={self.V} (vertex tokens in the vocabulary)")
        self.dist = c["distribution"]
        check(self.dist in DISTRIBUTIONS, "distribution", self.dist, f"must be one of {', '.join(DISTRIBUTIONS)}")
        self.arms = check_int_range("star_arms", c["star_arms"], 2, None)
        limit = {"balanced": (self.N - 1) // 2, "naive": self.N - 1, "star": (self.N - 1) // self.arms}[self.dist]
        L = c["max_lookahead"] if c["max_lookahead"] is not None else limit
        self.L = check_int_range("max_lookahead", L, 1, None)
        need = {"balanced": "2*max_lookahead+1", "naive": "max_lookahead+1",
                "star": f"star_arms*max_lookahead+1 = {self.arms}*max_lookahead+1"}[self.dist]
        check(self.L <= limit, "max_lookahead", self.L,
              f"impossible for distribution={self.dist}: needs {need} <= max_vertices={self.N} (largest: {limit})")
        self.deg = check_int_range("max_out_degree", c["max_out_degree"], 1, None)
        self.p = c["edge_prob"]
        if self.p is not None:
            check(0.0 < float(self.p) <= 1.0, "edge_prob", self.p, "must be in (0, 1]")
        self.prefix = c["path_prefix"]
        check(self.prefix in ("start", "random"), "path_prefix", self.prefix, "must be 'start' or 'random'")
        self.vocab = Vocab(("<pad>", "E", "Q", "P"), num_vertices=self.V)
        self.max_edges = {"balanced": 2 * self.N - 4, "naive": self.deg * (self.N - 1),
                          "star": self.N - 1}[self.dist]
        self.max_len = 3 * self.max_edges + 4 + self.L

    # -- canonical graphs (before relabelling): adj, n, start, goal, correct path ------
    def _balanced(self, B, rng):
        N = self.N
        L = rng.integers(1, self.L + 1, B)
        n = rng.integers(2 * L + 1, N + 1)
        idx = np.arange(N)
        adj = np.zeros((B, N, N), dtype=bool)
        Lc = L[:, None]
        # goal chain 0 -> 1 -> ... -> L, distractor 0 -> L+1 -> ... -> 2L
        u = idx[None, :]
        on_main = u < Lc
        on_dist = (u >= Lc + 1) & (u < 2 * Lc)
        bi = np.broadcast_to(np.arange(B)[:, None], (B, N))
        adj[bi[on_main], u.repeat(B, 0)[on_main], u.repeat(B, 0)[on_main] + 1] = True
        adj[np.arange(B), 0, L + 1] = True
        adj[bi[on_dist], u.repeat(B, 0)[on_dist], u.repeat(B, 0)[on_dist] + 1] = True
        # dead ends x >= 2L+1: in-edges from uniformly random earlier vertices
        is_extra = (u >= 2 * Lc + 1) & (u < n[:, None])
        for extra_edge in (0, 1):
            par = np.floor(rng.random((B, N)) * idx[None, :]).astype(np.int64)
            keep = is_extra & (rng.random((B, N)) < (1.0 if extra_edge == 0 else 0.5))
            adj[bi[keep], par[keep], u.repeat(B, 0)[keep]] = True
        goal = L
        path = np.where(idx[None, : self.L + 1] <= Lc, idx[None, : self.L + 1], -1)
        return adj, n, np.zeros(B, np.int64), goal, path

    def _star(self, B, rng):
        N, d = self.N, self.arms
        L = rng.integers(1, self.L + 1, B)
        n = 1 + d * L
        idx = np.arange(N)[None, :]
        # arm a, step k (1..L) is vertex 1 + a*L + (k-1); parent is the previous step or 0
        arm_step = (idx - 1) % L[:, None] + 1
        valid = (idx >= 1) & (idx < n[:, None])
        parent = np.where(arm_step == 1, 0, idx - 1)
        adj = np.zeros((B, N, N), dtype=bool)
        bi = np.broadcast_to(np.arange(B)[:, None], (B, N))
        adj[bi[valid], parent[valid], np.broadcast_to(idx, (B, N))[valid]] = True
        goal = L  # end of arm 0
        path = np.where(np.arange(self.L + 1)[None] <= L[:, None], np.arange(self.L + 1)[None], -1)
        return adj, n, np.zeros(B, np.int64), goal, path

    def _naive(self, B, rng):
        N = self.N
        n = rng.integers(3, N + 1, B)
        idx = np.arange(N)
        present = idx[None, :] < n[:, None]
        p = (2.0 / n if self.p is None else np.full(B, float(self.p)))[:, None, None]
        adj = (rng.random((B, N, N)) < p) & (idx[:, None] < idx[None, :])[None]
        adj &= present[:, :, None] & present[:, None, :]
        # cap out-degree: keep the max_out_degree edges with the smallest random keys
        keys = np.where(adj, rng.random((B, N, N)), 2.0)
        rank = np.argsort(np.argsort(keys, axis=-1), axis=-1)
        adj &= rank < self.deg
        # a start with a child: if the graph has no edge at all, add 0 -> 1
        empty = ~adj.any((1, 2))
        adj[empty, 0, 1] = True
        has_child = adj.any(-1)
        start = np.argmax(np.where(has_child, rng.random((B, N)), -1.0), axis=-1)
        dist = _hops_from(adj, start, self.L)
        goal = np.argmax(np.where(dist >= 1, rng.random((B, N)), -1.0), axis=-1)
        return adj, n, start, goal, _shortest_path(adj, start, goal, self.L)

    def _sample(self, count, rng):
        B, N, V = count, self.N, self.V
        adj, n, start, goal, path = getattr(self, "_" + self.dist)(B, rng)
        plen_full = (path >= 0).sum(1)  # vertices on the correct path, start..goal
        if self.prefix == "random":
            k = np.floor(rng.random(B) * (plen_full - 1)).astype(np.int64) + 1  # 1..L vertices
        else:
            k = np.ones(B, np.int64)
        perm = np.argsort(rng.random((B, V)), axis=1)[:, :N]
        edge_keys = rng.random((B, N * N))
        return self.encode(adj, n, start, goal, path, k, perm, edge_keys)

    def encode_graphs(self, adj, start, goal, edge_keys=None) -> TaskBatch:
        """Examples for given DAGs over labels ``0..max_vertices-1`` (no relabelling).

        ``adj (B, N, N)``; the path so far is the start alone.  Edges are listed
        in ``edge_keys`` order (default: sorted by (u, v)), so a certificate can
        fix the edge order and check separately that shuffling it changes nothing.
        """
        adj = np.asarray(adj, bool)
        B, N = adj.shape[0], self.N
        if adj.shape[1:] != (N, N):
            raise ValueError(f"adj must be (B, {N}, {N}), got {adj.shape}")
        start, goal = np.asarray(start, np.int64), np.asarray(goal, np.int64)
        path = _shortest_path(adj, start, goal, self.L)
        if (path[:, 0] < 0).any() or (_hops_to(adj, goal)[np.arange(B), start] > self.L).any():
            raise ValueError(f"every goal must be reachable from its start within max_lookahead={self.L}")
        keys = np.tile(np.arange(N * N, dtype=float), (B, 1)) if edge_keys is None else edge_keys
        return self.encode(adj, np.full(B, N), start, goal, path, np.ones(B, np.int64),
                           np.tile(np.arange(N), (B, 1)), keys)

    def encode(self, adj, n, start, goal, path, k, perm, edge_keys) -> TaskBatch:
        """Tokens, answer sets and meta for canonical graphs.

        ``adj (B, N, N)`` over canonical vertices, ``n`` vertex counts, ``path``
        the correct path (``-1``-padded), ``k`` how many of its vertices are
        written after ``P``, ``perm (B, N)`` canonical vertex -> label, and
        ``edge_keys (B, N*N)`` the sort keys giving the edge order.
        """
        B, N, V = adj.shape[0], self.N, self.V
        bidx = np.arange(B)
        plen_full = (path >= 0).sum(1)
        current = path[bidx, k - 1]
        lookahead = plen_full - k
        reach = _reaches(adj, goal)
        answer_mask = adj[bidx, current] & reach  # children of current that still reach goal

        # relabel: canonical vertex i -> label perm[b, i]
        present = np.arange(N)[None, :] < n[:, None]
        adj_l = np.zeros((B, V, V), dtype=bool)
        bb, uu, vv = np.nonzero(adj)
        adj_l[bb, perm[bb, uu], perm[bb, vv]] = True
        present_l = np.zeros((B, V), dtype=bool)
        bp, ip = np.nonzero(present)
        present_l[bp, perm[bp, ip]] = True

        # edge list in a random order, then "Q s g P path..."
        tok = self.vocab
        keys = np.where(adj.reshape(B, -1), edge_keys, np.inf)
        order = np.argsort(keys, axis=1)[:, : self.max_edges]
        ev = np.take_along_axis(adj.reshape(B, -1), order, 1)
        eu, evv = order // N, order % N
        E = np.stack([np.full_like(eu, tok.id("E")), tok.vertex(np.take_along_axis(perm, eu, 1)),
                      tok.vertex(np.take_along_axis(perm, evv, 1))], -1).reshape(B, -1)
        Evalid = np.repeat(ev, 3, axis=1)
        pl = np.where(path >= 0, tok.vertex(np.take_along_axis(perm, np.maximum(path, 0), 1)), 0)
        tail = np.concatenate([
            np.stack([np.full(B, tok.id("Q")), tok.vertex(perm[bidx, start]),
                      tok.vertex(perm[bidx, goal]), np.full(B, tok.id("P"))], -1), pl], 1)
        tvalid = np.concatenate([np.ones((B, 4), bool), np.arange(self.L + 1)[None] < k[:, None]], 1)
        content = np.concatenate([E, tail], 1)
        valid = np.concatenate([Evalid, tvalid], 1)
        # left-pad: a stable sort puts the padding (valid=False) first, keeps token order
        o = np.argsort(valid, axis=1, kind="stable")
        tokens = np.where(np.take_along_axis(valid, o, 1), np.take_along_axis(content, o, 1), 0).astype(np.int32)
        width = tokens.shape[1]
        if width < self.max_len:
            tokens = np.pad(tokens, ((0, 0), (self.max_len - width, 0)))
        else:  # the array is wider than any sequence: the cut columns are padding
            assert not tokens[:, : width - self.max_len].any()
            tokens = tokens[:, width - self.max_len:]

        K = max(int(answer_mask.sum(1).max()), 1)
        ans_rank = np.argsort(~answer_mask, axis=1, kind="stable")[:, :K]
        ans_ok = np.take_along_axis(answer_mask, ans_rank, 1)
        ans = np.where(ans_ok, tok.vertex(np.take_along_axis(perm, ans_rank, 1)), -1)
        T = self.max_len
        answers = np.full((B, T, K), -1, np.int32)
        answers[:, -1] = ans
        loss_mask = np.zeros((B, T), bool)
        loss_mask[:, -1] = True
        label = lambda x: perm[bidx, x]  # noqa: E731
        path_l = np.where(path >= 0, np.take_along_axis(perm, np.maximum(path, 0), 1), -1)
        return TaskBatch(
            task=self.name, tokens=tokens, answers=answers, loss_mask=loss_mask,
            vocab=self.vocab, attention=self.attention,
            meta=dict(adj=adj_l, start=label(start), goal=label(goal), current=label(current),
                      lookahead=lookahead, n_vertices=n, present=present_l, path=path_l),
        )

    # -- readable view and references ------------------------------------------------
    def describe(self, batch, i):
        m = batch.meta
        edges = np.argwhere(m["adj"][i])
        path = [int(v) for v in m["path"][i] if v >= 0]
        lines = [
            f"graph: {int(m['n_vertices'][i])} vertices, {len(edges)} edges: "
            + " ".join(f"{u}->{v}" for u, v in edges),
            f"query: start {m['start'][i]}, goal {m['goal'][i]}; current {m['current'][i]} "
            f"(lookahead {m['lookahead'][i]}); correct path {' -> '.join(map(str, path))}",
        ]
        return "\n".join(lines) + "\n" + super().describe(batch, i)

    def references(self, batch, i):
        from algeval.theory.bfs import bfs
        from algeval.theory.path_merging import path_merging

        adj = batch.meta["adj"][i]
        cur = int(batch.meta["current"][i])
        return {"bfs": bfs(adj, cur), "path-merging": path_merging(adj)}
