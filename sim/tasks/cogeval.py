"""``cogeval``: reward-seeking and shortest-path decisions on CogEval-like room graphs.

CogEval (Momennejad et al., NeurIPS 2023) asks for routes through graphs of
rooms with rewards.  This module holds

* :func:`load_cogeval_graphs` -- the six packaged CogEval graphs (structure,
  rewards, queries, published and computed answers), as :class:`CogevalGraph`;
* a generator of CogEval-like graphs for training (``graph=None``):
  ``two-branch`` (a lobby with two chains, a reward at each chain end; like
  n7line/n13line), ``tree`` (a random tree from the start, a reward at every
  leaf; like n7tree), ``cluster`` (dense communities joined by single doors,
  1-3 rewarded rooms; like n16cluster);
* the ``cogeval`` task, which renders either as tokens (``graph=NAME``
  evaluates on one fixed graph under a fresh random relabelling per example);
* :func:`prompt` -- a natural-language rendering in our own words, for LLMs.

Token format (specials ``<pad> E R V Q``; room label ``v`` is token
``vocab.vertex(v)``; reward tokens are extra tokens)::

    E u v ...  R v r<k> ...  V s          value path: which room first?
    E u v ...  R v r<k> ...  Q s g        shortest path: which room first?

edges (undirected ones listed once, endpoints in random order) and reward
statements (one per room with a non-zero reward) each in random order, then
the query.  Scored: the last position; answer set = the first steps of every
optimal path: :func:`algeval.theory.value_path.value_path_first_steps` with
``max_steps`` (CogEval's search cutoff, 7), or
:func:`algeval.theory.shortest_path.next_hops`.  Example (n7line relabelled
by the identity, lobby = 0)::

    E 0 1 E 0 2 E 1 3 E 3 5 E 2 4 E 4 6 R 5 r10 R 6 r50 V 0    answer set {2}

Reward tokens: one token ``r<v>`` per integer ``v`` in the declared range
``[min_reward, max_reward]`` (default ``[-20, 60]``, which holds every reward
of the six fixed graphs: 5, 10, 22, 50, 56, -15), so every reward is
represented exactly (``r-15`` is one token).  Generated graphs draw rewards
uniformly from the non-zero integers of that range; ``min_reward=0,
max_reward=9`` gives the small-integer tokens ``r0 .. r9``.

Generated value-path queries whose best move is to stay put (no reachable
positive total) are redrawn.  ``meta``: ``adj (B, V, V)``, ``rewards (B,
V)``, ``start``, ``goal`` (``-1`` for value paths), ``n_vertices``,
``present``, ``query_kind`` (0 value path, 1 shortest path), ``graph``
(index into :data:`GRAPH_NAMES`, ``-1`` generated), ``query_index`` (into
that graph's queries), ``max_steps``, ``vertex_labels (B, N)``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from algeval.errors import ParameterError, check, check_int_range
from algeval.sim.tasks.base import Task, TaskBatch, Vocab, register
from algeval.sim.tasks.graphs import (
    MIN_SIZE,
    answers_from_mask,
    assemble,
    build_family,
    choose,
    edge_list,
    edge_tokens,
    fill,
    ragged,
    relabel,
    resolve_max_len,
)
from algeval.theory.graph import hop_distances
from algeval.theory.shortest_path import next_hops
from algeval.theory.value_path import value_path_first_steps

GRAPH_NAMES = ("n7line", "n7tree", "n13line", "n15star", "n16cluster", "n21star")
GEN_FAMILIES = ("two-branch", "tree", "cluster")
QUERIES = ("value-path", "shortest-path", "both")
KINDS = ("value-path", "shortest-path")
SPECIALS = ("<pad>", "E", "R", "V", "Q")


@dataclass(frozen=True, eq=False)
class CogevalQuery:
    """One query; vertices are indices into the graph's ``nodes``."""

    kind: str  # "value-path" or "shortest-path"
    start: int
    goal: int | None
    published: tuple[tuple[int, ...], ...]  # CogEval's answer key, as index paths
    computed: tuple[tuple[int, ...], ...]  # the answers that follow from the edges
    value: float | None = None  # optimal reward (value path)
    max_steps: int | None = None  # search cutoff (value path)
    consistent: bool = True  # published key agrees with the graph
    note: str = ""

    @property
    def first_steps(self) -> tuple[int, ...]:
        """Sorted second vertices of the computed answers."""
        return tuple(sorted({p[1] for p in self.computed if len(p) > 1}))


@dataclass(frozen=True, eq=False)
class CogevalGraph:
    """A room graph: ``adj[u, v]`` is a door u -> v; ``rewards[v]`` collected on entering v."""

    name: str
    nodes: tuple[str, ...]
    adj: np.ndarray
    directed: bool
    rewards: np.ndarray
    start: int
    queries: tuple[CogevalQuery, ...] = ()
    clusters: int | None = None

    @property
    def n(self) -> int:
        return len(self.nodes)


@functools.lru_cache(maxsize=1)
def _load() -> tuple[tuple[str, CogevalGraph], ...]:
    text = resources.files("algeval.sim").joinpath("data/cogeval_graphs.json").read_text()
    out = []
    for name, g in json.loads(text)["graphs"].items():
        nodes = tuple(str(x) for x in g["nodes"])
        idx = {v: i for i, v in enumerate(nodes)}
        n = len(nodes)
        adj = np.zeros((n, n), dtype=bool)
        for u, v in g["edges"]:
            adj[idx[str(u)], idx[str(v)]] = True
            if not g["directed"]:
                adj[idx[str(v)], idx[str(u)]] = True
        rewards = np.zeros(n, dtype=np.int64)
        for v, r in g["rewards"].items():
            rewards[idx[str(v)]] = r
        adj.flags.writeable = rewards.flags.writeable = False

        def paths(ps):
            return tuple(tuple(idx[str(x)] for x in p) for p in ps)

        queries = tuple(CogevalQuery(
            kind="value-path" if q["kind"] == "valuePath" else "shortest-path",
            start=idx[str(q["start"])],
            goal=idx[str(q["goal"])] if "goal" in q else None,
            published=paths(q["published_answers"]),
            computed=paths(q["computed_answers"]),
            value=q.get("computed_value"),
            max_steps=q.get("search_cutoff_steps"),
            consistent=bool(q["published_key_consistent"]),
            note=q.get("note", ""),
        ) for q in g["queries"])
        out.append((name, CogevalGraph(name, nodes, adj, bool(g["directed"]), rewards,
                                       idx[str(g["start"])], queries, g.get("clusters"))))
    return tuple(out)


def load_cogeval_graphs() -> dict[str, CogevalGraph]:
    """The six packaged CogEval graphs by name (n7line, n7tree, n13line, n15star, n16cluster, n21star)."""
    return dict(_load())


# --- natural-language prompts ------------------------------------------------------

def prompt(graph: CogevalGraph, query: CogevalQuery, labels=None) -> str:
    """The query in plain English (our wording), rooms named by ``labels[i]`` (default: node names)."""
    name = [str(x) for x in (graph.nodes if labels is None else labels)]
    lines = [f"A building has {graph.n} rooms: " + ", ".join(f"room {x}" for x in name) + "."]
    for u, v in edge_list(graph.adj, graph.directed):
        if graph.directed:
            lines.append(f"A one-way door leads from room {name[u]} into room {name[v]}.")
        else:
            lines.append(f"A door joins room {name[u]} and room {name[v]}; it can be used both ways.")
    for v in np.flatnonzero(graph.rewards):
        lines.append(f"Entering room {name[v]} earns {int(graph.rewards[v])} points.")
    s = name[query.start]
    if query.kind == "value-path":
        cap = f" You may walk through at most {query.max_steps} doors." if query.max_steps else ""
        lines.append(f"You stand in room {s}. Walk from room to room through the doors, never entering a "
                     f"room twice; each room you enter adds its points (some may be negative).{cap} "
                     "To end with as many points as possible, which room do you enter first? "
                     "Reply with the room only.")
    else:
        lines.append(f"You stand in room {s} and want to get to room {name[query.goal]} through as few "
                     "doors as possible. Which room do you enter first? Reply with the room only.")
    return "\n".join(lines)


# --- the generator -------------------------------------------------------------------

def generate_graph(family: str, n: int, rng: np.random.Generator, reward_values: np.ndarray,
                   directed: bool | None = None, max_steps: int | None = None) -> CogevalGraph:
    """One CogEval-like graph on ``n`` rooms (see the module docstring); ``start`` is the lobby,
    root, or a random unrewarded room (cluster); rewards drawn from ``reward_values``.

    two-branch: the chain lengths are drawn so that both are <= ``max_steps`` when
    ``n - 1 <= 2 * max_steps`` (both rewards then lie within the search cutoff)."""
    rewards = np.zeros(n, dtype=np.int64)
    start = 0
    if family == "two-branch":
        a = np.zeros((n, n), dtype=bool)
        lo, hi = 1, n - 2  # chain lengths left and n - 1 - left, both >= 1
        if max_steps is not None and n - 1 <= 2 * max_steps:
            lo, hi = max(lo, n - 1 - max_steps), min(hi, max_steps)
        left = int(rng.integers(lo, hi + 1))
        for chain in (np.arange(1, left + 1), np.arange(left + 1, n)):
            path = np.concatenate([[0], chain])
            a[path[:-1], path[1:]] = True
            rewards[chain[-1]] = rng.choice(reward_values)
        directed = True if directed is None else directed
    elif family == "tree":
        a = build_family("tree", 1, rng, n, n, directed=True)[0][0]
        leaves = np.flatnonzero(~a.any(1))
        rewards[leaves] = rng.choice(reward_values, size=len(leaves))
        directed = True if directed is None else directed
    elif family == "cluster":
        directed = False if directed is None else directed
        a = build_family("cluster", 1, rng, n, n, directed=directed)[0][0]
        k = int(rng.integers(1, min(3, n - 1) + 1))
        rooms = rng.permutation(n)
        rewards[rooms[:k]] = rng.choice(reward_values, size=k)
        start = int(rooms[k])
    else:
        raise ParameterError("family", family, f"unknown family; known: {', '.join(GEN_FAMILIES)}")
    if not directed:
        a = a | a.T
    return CogevalGraph(f"generated-{family}", tuple(str(i) for i in range(n)), a, bool(directed),
                        rewards, start)


@register
class CogEval(Task):
    """CogEval-style value-path and shortest-path decisions; see the module docstring."""

    name = "cogeval"
    attention = "causal"
    params = {
        "graph": (None, f"evaluate on a fixed CogEval graph: {', '.join(GRAPH_NAMES)} (default: "
                        "generated graphs; with a graph, family/min_vertices/max_vertices/directed/max_steps "
                        "are unused)"),
        "family": ("two-branch", f"generated family: {', '.join(GEN_FAMILIES)}"),
        "query": ("both", "value-path, shortest-path or both (uniform per example)"),
        "min_vertices": (5, "smallest generated graph"),
        "max_vertices": (16, "largest generated graph"),
        "directed": (None, "generated graphs directed (default: two-branch/tree yes, cluster no)"),
        "num_labels": (24, "room labels in the vocabulary (must hold the graph; 24 holds all fixed graphs)"),
        "min_reward": (-20, "smallest reward token r<min_reward>"),
        "max_reward": (60, "largest reward token r<max_reward>"),
        "max_steps": (7, "value-path search cutoff for generated graphs (CogEval: 7)"),
        "max_len": (None, "sequence width (default: the longest possible sequence)"),
    }

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.config
        self.graphs = load_cogeval_graphs()
        self.graph = c["graph"]
        check(self.graph is None or self.graph in self.graphs, "graph", self.graph,
              f"unknown graph; known: {', '.join(GRAPH_NAMES)}")
        self.family = c["family"]
        check(self.family in GEN_FAMILIES, "family", self.family,
              f"unknown family; known: {', '.join(GEN_FAMILIES)}")
        check(c["query"] in QUERIES, "query", c["query"], f"must be one of {', '.join(QUERIES)}")
        self.kinds = KINDS if c["query"] == "both" else (c["query"],)
        self.min_reward = check_int_range("min_reward", c["min_reward"], -10_000, 10_000)
        self.max_reward = check_int_range("max_reward", c["max_reward"], self.min_reward, 10_000)
        check(self.max_reward - self.min_reward <= 2000, "max_reward", self.max_reward,
              "at most 2001 reward tokens")
        self.reward_values = np.array([r for r in range(self.min_reward, self.max_reward + 1) if r])
        check(len(self.reward_values) > 0, "max_reward", self.max_reward,
              "the reward range must hold a non-zero value")
        d = c["directed"]
        check(d is None or isinstance(d, (bool, np.bool_)), "directed", d, "must be true, false or unset")
        self.max_steps = check_int_range("max_steps", c["max_steps"], 1, None)
        labels = check_int_range("num_labels", c["num_labels"], 1, 4096)
        if self.graph is None:
            need = max(MIN_SIZE["cluster"] if self.family == "cluster" else 3, 3)
            self.max_vertices = check_int_range("max_vertices", c["max_vertices"], need, None)
            self.min_vertices = check_int_range("min_vertices", c["min_vertices"], need, self.max_vertices)
            check(labels >= self.max_vertices, "num_labels", labels,
                  f"more vertices than the vocabulary holds: needs >= max_vertices={self.max_vertices}")
            n = self.max_vertices
            directed = self.graph_directed = d if d is not None else self.family != "cluster"
            edges = n * (n - 1) // (1 if directed else 2) if self.family == "cluster" else n - 1
            need_len = 3 * edges + 3 * n + 3
        else:
            g = self.graphs[self.graph]
            self.queries = [j for j, q in enumerate(g.queries) if q.kind in self.kinds]
            check(bool(self.queries), "query", c["query"], f"graph {self.graph} has no {c['query']} query")
            check(labels >= g.n, "num_labels", labels,
                  f"more vertices than the vocabulary holds: graph {self.graph} has {g.n} rooms")
            lo, hi = int(g.rewards.min()), int(g.rewards.max())
            check(self.min_reward <= lo, "min_reward", self.min_reward, f"graph {self.graph} has reward {lo}")
            check(self.max_reward >= hi, "max_reward", self.max_reward, f"graph {self.graph} has reward {hi}")
            self.max_vertices, self.graph_directed = g.n, g.directed
            need_len = 3 * len(edge_list(g.adj, g.directed)) + 3 * int((g.rewards != 0).sum()) + 3
        self.directed = d
        self.max_len = resolve_max_len(c["max_len"], need_len)
        rewards = tuple(f"r{r}" for r in range(self.min_reward, self.max_reward + 1))
        self.vocab = Vocab(SPECIALS, labels, rewards)
        self.answer_width = self.max_vertices - 1

    # one example, in graph indices: (graph, query, first steps, graph id, query id)
    def _example(self, rng):
        if self.graph is not None:
            g = self.graphs[self.graph]
            j = int(rng.choice(self.queries))
            return g, g.queries[j], g.queries[j].first_steps, GRAPH_NAMES.index(self.graph), j
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        n = int(rng.integers(self.min_vertices, self.max_vertices + 1))
        g = generate_graph(self.family, n, rng, self.reward_values, self.directed, self.max_steps)
        if kind == "value-path":
            q = CogevalQuery("value-path", g.start, None, (), (), max_steps=self.max_steps)
            first = value_path_first_steps(g.adj, g.rewards, g.start, self.max_steps)
        else:
            D = hop_distances(g.adj)
            s = int(choose((D > 0).any(1)[None], rng)[0])
            t = int(choose((D[s] > 0)[None], rng)[0])
            q = CogevalQuery("shortest-path", s, t, (), ())
            first = next_hops(g.adj, s, t)
        return g, q, first, -1, -1

    def _sample(self, count, rng):
        N, L, v = self.max_vertices, self.vocab.num_vertices, self.vocab

        def draw(rows):
            m = len(rows)
            adj = np.zeros((m, N, N), dtype=bool)
            rew = np.zeros((m, N), dtype=np.int64)
            first = np.zeros((m, N), dtype=bool)
            n, s, t, kind, gid, qid, steps = (np.zeros(m, dtype=np.int64) for _ in range(7))
            for i in range(m):
                g, q, f, gid[i], qid[i] = self._example(rng)
                n[i], s[i], t[i] = g.n, q.start, -1 if q.goal is None else q.goal
                kind[i], steps[i] = KINDS.index(q.kind), q.max_steps or 0
                adj[i, : g.n, : g.n], rew[i, : g.n] = g.adj, g.rewards
                first[i, list(f)] = True
            return dict(ok=first.any(1), adj=adj, rew=rew, first=first, n=n, s=s, t=t, kind=kind,
                        gid=gid, qid=qid, steps=steps)

        x = fill(count, draw)
        adj, labels, present = relabel(x["adj"], x["n"], L, rng)
        b = np.arange(count)
        rewards = np.zeros((count, L), dtype=np.int64)
        rewards[b[:, None], labels] = x["rew"]
        directed = self.graph_directed
        lab = lambda u: labels[b, np.maximum(u, 0)]  # noqa: E731
        start, goal = lab(x["s"]), np.where(x["t"] >= 0, lab(x["t"]), -1)

        rb, rv = np.nonzero(rewards)
        order = np.lexsort((rng.random(len(rb)), rb))
        rb, rv = rb[order], rv[order]
        rtok = v.extra_offset + rewards[rb, rv] - self.min_reward
        stmts = (np.stack([np.full(len(rb), v.id("R")), v.vertex(rv), rtok], 1).ravel(),
                 3 * np.bincount(rb, minlength=count))
        sp = x["kind"] == 1
        q = np.stack([np.where(sp, v.id("Q"), v.id("V")), v.vertex(start), v.vertex(np.maximum(goal, 0))], 1)
        tokens, _ = assemble([edge_tokens(adj, directed, rng, v), stmts, ragged(q, 2 + sp)], self.max_len)

        first = np.zeros((count, L), dtype=bool)
        fb, fu = np.nonzero(x["first"])
        first[fb, labels[fb, fu]] = True
        answers = np.full((count, self.max_len, self.answer_width), -1, dtype=np.int32)
        answers[:, -1] = answers_from_mask(first, self.answer_width, v.vertex_offset)
        mask = np.zeros((count, self.max_len), dtype=bool)
        mask[:, -1] = True
        meta = {"adj": adj, "rewards": rewards, "start": start, "goal": goal, "n_vertices": x["n"],
                "present": present, "query_kind": x["kind"], "graph": x["gid"], "query_index": x["qid"],
                "max_steps": x["steps"],
                "vertex_labels": np.where(np.arange(N) < x["n"][:, None], labels, -1)}
        return TaskBatch(self.name, tokens, answers, mask, v, self.attention, meta)

    def example_graph(self, batch: TaskBatch, i: int) -> tuple[CogevalGraph, CogevalQuery, list[int]]:
        """Example ``i`` as ``(graph, query, labels)`` in graph indices, e.g. for :func:`prompt`."""
        m = batch.meta
        labels = m["vertex_labels"][i][m["vertex_labels"][i] >= 0]
        adj = m["adj"][i][np.ix_(labels, labels)]
        inv = {int(l): j for j, l in enumerate(labels)}
        g = CogevalGraph("example", tuple(str(l) for l in labels), adj,
                         not np.array_equal(adj, adj.T), m["rewards"][i][labels], inv[int(m["start"][i])])
        kind = KINDS[int(m["query_kind"][i])]
        goal = inv[int(m["goal"][i])] if kind == "shortest-path" else None
        q = CogevalQuery(kind, g.start, goal, (), (), max_steps=int(m["max_steps"][i]) or None)
        return g, q, [int(l) for l in labels]

    def references(self, batch, i):
        from algeval.theory.bfs import bfs
        from algeval.theory.shortest_path import shortest_paths
        from algeval.theory.value_iteration import value_iteration
        from algeval.theory.value_path import value_path

        m = batch.meta
        adj, s = m["adj"][i], int(m["start"][i])
        if m["query_kind"][i] == 0:
            steps = int(m["max_steps"][i])
            return {"value_path": value_path(adj, m["rewards"][i], s, steps),
                    "value_iteration": value_iteration(adj, m["rewards"][i], steps)}
        return {"bfs": bfs(adj, s), "shortest_paths": shortest_paths(adj, s, int(m["goal"][i]))}

    def describe(self, batch, i):
        g, q, labels = self.example_graph(batch, i)
        gid = int(batch.meta["graph"][i])
        src = (f"{GRAPH_NAMES[gid]} query {int(batch.meta['query_index'][i])}" if gid >= 0
               else f"generated {self.family}")
        return "\n".join([f"[{src}]", prompt(g, q, labels), super().describe(batch, i)])
