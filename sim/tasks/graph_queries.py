"""Point queries on random graphs: ``shortest-path`` and ``reachability``.

Both tasks draw a graph from a family of :mod:`algeval.sim.tasks.graphs`
(``er``, ``chain``, ``tree``, ``grid``, ``cluster``, ``connected``), map its
``n`` vertices into the ``num_labels`` vertex labels by a random injection,
list its edges in a random order and ask one question.  Token format (the
``search`` task's): specials ``<pad> E Q P``, vertex label ``v`` is token
``vocab.vertex(v)``; an undirected edge is listed once, endpoints in random
order.

``shortest-path``::

    E u v  E u v ...  Q s g  P s p1 ... pk        (0 <= k < dist(s, g))

``s -> p1 -> ... -> pk`` is a uniformly random prefix length of a shortest
path drawn hop by hop (each next hop uniform among the shortest-path next
hops).  Scored: the last position only; answer set = every next hop from the
current vertex ``c = pk`` (``s`` when ``k = 0``) on a shortest ``c -> g``
path.  ``g`` is uniform among the vertices reachable from ``s`` (``s`` uniform
among those reaching another vertex).  E.g. the path graph 3-1-0 with query
3 -> 0 and k = 1::

    E 1 3 E 0 1 Q 3 0 P 3 1     answer set {0}

``reachability``::

    E u v  E u v ...  Q s g          answer "yes" / "no" (extra tokens) at g

Each example first draws its answer (yes or no, 50/50), then a start with a
goal of that kind (``g != s``) and the goal uniformly among them; graphs
without one are redrawn.  Undirected connected families have no "no"
answers, so ``components`` (default: 2 for undirected families other than
``er``, else 1) makes the graph a disjoint union of that many family graphs.

Metadata: ``adj (B, V, V)`` over labels, ``start``, ``goal``, ``n_vertices``,
``present (B, V)``, ``distance`` (hop distance s -> g, ``-1`` unreachable),
``vertex_labels (B, max_vertices)`` (label of each graph vertex); for
``shortest-path`` also ``current`` and ``prefix_len`` (k).
"""

from __future__ import annotations

import numpy as np

from algeval.errors import check, check_int_range
from algeval.sim.tasks.base import Task, TaskBatch, Vocab, register
from algeval.sim.tasks.graphs import (
    GRAPH_PARAMS,
    GraphSpec,
    answers_from_mask,
    assemble,
    choose,
    edge_list,
    edge_tokens,
    fill,
    ragged,
    resolve_max_len,
)
from algeval.theory.graph import hop_distances

SPECIALS = ("<pad>", "E", "Q", "P")


class _GraphQuery(Task):
    """Shared setup: the graph spec, the vocabulary and the rendering."""

    extra: tuple[str, ...] = ()

    def _setup(self, components: int, tail: int, k: int):
        self.spec = GraphSpec.from_config(self.config, components)
        self.vocab = Vocab(SPECIALS, self.spec.num_labels, self.extra)
        self.max_len = resolve_max_len(self.config["max_len"], 3 * self.spec.max_edges() + tail)
        self.answer_width = k

    def _draw_graphs(self, m, rng):
        adj, labels, present, n, _ = self.spec.sample(m, rng)
        return adj, labels, present, n, hop_distances(adj)

    def _batch(self, tokens, answers_last, meta):
        count, width = tokens.shape
        answers = np.full((count, width, self.answer_width), -1, dtype=np.int32)
        answers[:, -1] = answers_last
        mask = np.zeros((count, width), dtype=bool)
        mask[:, -1] = True
        return TaskBatch(self.name, tokens, answers, mask, self.vocab, self.attention, meta)

    def _graph_text(self, batch, i) -> str:
        adj = batch.meta["adj"][i]
        sep = " -> " if self.spec.directed else " - "
        edges = ", ".join(f"{u}{sep}{v}" for u, v in edge_list(adj, self.spec.directed))
        kind = "directed" if self.spec.directed else "undirected"
        return (f"graph ({int(batch.meta['n_vertices'][i])} vertices, {kind} {self.spec.family}): "
                f"{edges or '(no edges)'}")


@register
class ShortestPath(_GraphQuery):
    """Next hop on a shortest path; see the module docstring for the format."""

    name = "shortest-path"
    attention = "causal"
    params = {**GRAPH_PARAMS, "components": (1, "disjoint family graphs per example")}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        mx = check_int_range("max_vertices", self.config["max_vertices"], 2)
        self._setup(self.config["components"], 4 + mx - 1, max(1, mx - 1))
        check(not (self.spec.family == "er" and self.spec.edge_prob == 0), "edge_prob", self.spec.edge_prob,
              "er graphs without edges have no paths: needs edge_prob > 0")

    def _sample(self, count, rng):
        V = self.spec.num_labels

        def draw(rows):
            m = len(rows)
            adj, labels, present, n, D = self._draw_graphs(m, rng)
            b = np.arange(m)
            cand_s = (D > 0).any(-1)
            ok = cand_s.any(-1)
            s = choose(cand_s | ~ok[:, None], rng)
            g = choose((D[b, s] > 0) | ~ok[:, None], rng)
            d = D[b, s, g]
            k = np.floor(rng.random(m) * np.maximum(d, 1)).astype(np.int64)
            to_goal = np.swapaxes(D, 1, 2)[b, g]  # (m, V): dist(v, g)
            path = np.full((m, V), -1, dtype=np.int64)
            path[:, 0] = cur = s
            for t in range(1, int(k.max(initial=0)) + 1):
                hop = adj[b, cur] & (to_goal == (to_goal[b, cur] - 1)[:, None])
                nxt = choose(hop | ~hop.any(-1, keepdims=True), rng)
                cur = np.where(t <= k, nxt, cur)
                path[:, t] = cur
            hops = adj[b, cur] & (to_goal == (to_goal[b, cur] - 1)[:, None])
            return dict(ok=ok, adj=adj, labels=labels, present=present, n=n, s=s, g=g, d=d, k=k,
                        path=path, cur=cur, hops=hops)

        x = fill(count, draw)
        v = self.vocab
        edges = edge_tokens(x["adj"], self.spec.directed, rng, v)
        query = np.stack([np.full(count, v.id("Q")), v.vertex(x["s"]), v.vertex(x["g"]),
                          np.full(count, v.id("P"))], 1)
        path = ragged(v.vertex(np.maximum(x["path"], 0)), x["k"] + 1)
        tokens, _ = assemble([edges, query, path], self.max_len)
        meta = {"adj": x["adj"], "start": x["s"], "goal": x["g"], "n_vertices": x["n"],
                "present": x["present"], "distance": x["d"], "current": x["cur"],
                "prefix_len": x["k"], "vertex_labels": x["labels"]}
        return self._batch(tokens, answers_from_mask(x["hops"], self.answer_width, v.vertex_offset), meta)

    def references(self, batch, i):
        from algeval.theory.bfs import bfs
        from algeval.theory.shortest_path import shortest_paths

        m = batch.meta
        adj, s, g, c = m["adj"][i], int(m["start"][i]), int(m["goal"][i]), int(m["current"][i])
        return {"bfs": bfs(adj, s), "shortest_paths": shortest_paths(adj, s, g),
                "shortest_paths_from_current": shortest_paths(adj, c, g)}

    def describe(self, batch, i):
        m = batch.meta
        k = int(m["prefix_len"][i])
        toks = [t for t in batch.vocab.decode(batch.tokens[i]) if t != "<pad>"]
        prefix = toks[len(toks) - k - 1:]
        return "\n".join([
            self._graph_text(batch, i),
            f"query: shortest path {int(m['start'][i])} -> {int(m['goal'][i])} "
            f"(distance {int(m['distance'][i])}); path so far: {' '.join(prefix)}",
            super().describe(batch, i),
        ])


@register
class Reachability(_GraphQuery):
    """Is the goal reachable from the start?  See the module docstring."""

    name = "reachability"
    attention = "causal"
    params = {**GRAPH_PARAMS,
              "components": (None, "disjoint family graphs per example "
                                   "(default: 2 for undirected non-er families, else 1)")}
    extra = ("yes", "no")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.config["components"]
        connected = not self.config["directed"] and self.config["family"] != "er"
        if c is None:
            c = 2 if connected else 1
        c = check_int_range("components", c, 1)
        check(not (connected and c == 1), "components", c,
              f"undirected {self.config['family']} graphs are connected, so reachability "
              "would never be 'no': needs components >= 2")
        self._setup(c, 3, 1)
        p, fam = self.spec.edge_prob, self.spec.family
        check(not (fam == "er" and p == 0), "edge_prob", p, "er graphs without edges are never 'yes'")
        check(not (fam in ("er", "connected") and p == 1 and c == 1), "edge_prob", p,
              f"complete {fam} graphs are never 'no': needs edge_prob < 1 or components >= 2")

    def _sample(self, count, rng):
        want = rng.random(count) < 0.5

        def draw(rows):
            m = len(rows)
            adj, labels, present, n, D = self._draw_graphs(m, rng)
            b = np.arange(m)
            others = present[:, None, :] & ~np.eye(self.spec.num_labels, dtype=bool)
            cand = np.where(want[rows][:, None, None], D >= 0, D < 0) & others
            cand_s = cand.any(-1) & present
            ok = cand_s.any(-1)
            s = choose(cand_s | ~ok[:, None], rng)
            g = choose(cand[b, s] | ~ok[:, None], rng)
            return dict(ok=ok, adj=adj, labels=labels, present=present, n=n, s=s, g=g, d=D[b, s, g])

        x = fill(count, draw)
        v = self.vocab
        edges = edge_tokens(x["adj"], self.spec.directed, rng, v)
        query = np.stack([np.full(count, v.id("Q")), v.vertex(x["s"]), v.vertex(x["g"])], 1)
        tokens, _ = assemble([edges, query], self.max_len)
        ans = np.where(x["d"] >= 0, v.id("yes"), v.id("no")).astype(np.int32)[:, None]
        meta = {"adj": x["adj"], "start": x["s"], "goal": x["g"], "n_vertices": x["n"],
                "present": x["present"], "distance": x["d"], "vertex_labels": x["labels"]}
        return self._batch(tokens, ans, meta)

    def references(self, batch, i):
        from algeval.theory.bfs import bfs
        from algeval.theory.dfs import dfs

        adj, s = batch.meta["adj"][i], int(batch.meta["start"][i])
        return {"bfs": bfs(adj, s), "dfs": dfs(adj, s)}

    def describe(self, batch, i):
        m = batch.meta
        return "\n".join([
            self._graph_text(batch, i),
            f"query: is {int(m['goal'][i])} reachable from {int(m['start'][i])}? "
            f"(distance {int(m['distance'][i])})",
            super().describe(batch, i),
        ])
