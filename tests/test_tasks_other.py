"""Tasks shortest-path, reachability, cogeval, induction, k-hop-induction, dfs-trace."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from algeval.errors import ParameterError
from algeval.sim.tasks import get_task
from algeval.sim.tasks.cogeval import GRAPH_NAMES, load_cogeval_graphs, prompt
from algeval.sim.tasks.dfs_trace import dfs_continuations
from algeval.sim.tasks.graphs import FAMILIES, build_family
from algeval.theory import all_dfs_orders, is_valid_dfs_order, khop, next_hops, value_path_first_steps
from algeval.theory.shortest_path import shortest_paths
from algeval.theory.trace import Trace
from algeval.theory.value_path import value_path

CONFIGS = [
    ("shortest-path", {}),
    ("shortest-path", {"family": "grid", "max_vertices": 9}),
    ("shortest-path", {"family": "cluster", "max_vertices": 10, "num_labels": 12}),
    ("shortest-path", {"family": "tree", "directed": True}),
    ("shortest-path", {"family": "er", "directed": True, "components": 2}),
    ("reachability", {}),
    ("reachability", {"family": "chain"}),
    ("reachability", {"family": "grid", "directed": True}),
    ("reachability", {"family": "cluster", "max_vertices": 10}),
    ("cogeval", {}),
    ("cogeval", {"family": "tree", "max_vertices": 10}),
    ("cogeval", {"family": "cluster", "max_vertices": 8, "query": "value-path"}),
    ("cogeval", {"graph": "n16cluster"}),
    ("induction", {}),
    ("k-hop-induction", {"k": 3, "all_positions": True}),
    ("dfs-trace", {}),
    ("dfs-trace", {"any_order": True, "directed": True}),
    ("dfs-trace", {"family": "er", "max_vertices": 7}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for n, kw in CONFIGS]


def _graph(adj, directed=True):
    g = nx.DiGraph() if directed else nx.Graph()
    g.add_nodes_from(range(adj.shape[0]))
    g.add_edges_from(zip(*np.nonzero(adj)))
    return g


def _toks(batch, i):
    return [t for t in batch.vocab.decode(batch.tokens[i]) if t != "<pad>"]


def _edges_in_tokens(batch, i):
    """Directed edge set written in example i's ``E u v`` triples."""
    t = _toks(batch, i)
    return [(int(t[j + 1]), int(t[j + 2])) for j in range(len(t)) if t[j] == "E"]


def _check_edges(batch, i, directed):
    listed = _edges_in_tokens(batch, i)
    adj = batch.meta["adj"][i]
    want = adj if directed else np.triu(adj | adj.T, 1)
    assert len(listed) == int(want.sum()), "each edge listed exactly once"
    got = np.zeros_like(adj)
    for u, v in listed:
        got[u, v] = True
    assert np.array_equal(got if directed else got | got.T, adj)


# --- generic properties -------------------------------------------------------------

@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_determinism_range_and_shapes(name, kw):
    task = get_task(name, **kw)
    a, b, c = task.sample(40, 3), task.sample(40, 3), task.sample(40, 4)
    for x in ("tokens", "answers", "loss_mask"):
        assert np.array_equal(getattr(a, x), getattr(b, x))
    assert set(a.meta) == set(b.meta) and all(np.array_equal(a.meta[k], b.meta[k]) for k in a.meta)
    assert not np.array_equal(a.tokens, c.tokens)
    assert a.tokens.shape == (40, task.max_len) and a.tokens.dtype == np.int32
    assert a.tokens.min() >= 0 and a.tokens.max() < task.vocab.size
    assert a.answers.max() < task.vocab.size
    assert (a.answers >= -1).all()
    has = (a.answers >= 0).any(-1)
    assert np.array_equal(has, a.loss_mask), "answers exactly at the scored positions"
    assert a.loss_mask.any(1).all()
    # left padding: padding only before the first real token
    nonpad = a.tokens != 0
    assert (np.cumsum(nonpad, 1) > 0)[nonpad.any(1)].sum() == nonpad.sum()
    assert "answer" in task.describe(a, 0)
    refs = task.references(a, 0)
    assert refs and all(isinstance(t, Trace) for t in refs.values())


# --- shortest-path and reachability -------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"family": "grid"}, {"family": "cluster", "max_vertices": 10},
                                {"family": "er", "directed": True, "edge_prob": 0.25},
                                {"family": "tree", "directed": True, "components": 2}])
def test_shortest_path_answers_match_networkx(kw):
    task = get_task("shortest-path", **kw)
    batch = task.sample(150, 11)
    v = batch.vocab
    for i in range(len(batch)):
        m = batch.meta
        adj, s, g, c = m["adj"][i], int(m["start"][i]), int(m["goal"][i]), int(m["current"][i])
        _check_edges(batch, i, task.spec.directed)
        G = _graph(adj)
        t = _toks(batch, i)
        k = int(m["prefix_len"][i])
        q = t.index("Q")
        assert t[q:q + 4] == ["Q", str(s), str(g), "P"]
        prefix = [int(x) for x in t[q + 4:]]
        assert len(prefix) == k + 1 and prefix[0] == s and prefix[-1] == c
        d = nx.shortest_path_length(G, s, g)
        assert d == m["distance"][i] and k < d
        assert any(list(p[: k + 1]) == prefix for p in nx.all_shortest_paths(G, s, g))
        want = sorted({p[1] for p in nx.all_shortest_paths(G, c, g)})
        got = [a - v.vertex_offset for a in batch.answer_set(i)]
        assert sorted(got) == want == list(next_hops(adj, c, g))
        assert m["present"][i].sum() == m["n_vertices"][i]
        assert not adj[~m["present"][i]].any() and not adj[:, ~m["present"][i]].any()


@pytest.mark.parametrize("kw", [{}, {"family": "tree"}, {"family": "chain", "directed": True},
                                {"family": "cluster", "max_vertices": 12, "components": 3}])
def test_reachability_answers_match_networkx_and_are_balanced(kw):
    task = get_task("reachability", **kw)
    batch = task.sample(400, 5)
    yes, no = batch.vocab.id("yes"), batch.vocab.id("no")
    for i in range(len(batch)):
        adj, s, g = batch.meta["adj"][i], int(batch.meta["start"][i]), int(batch.meta["goal"][i])
        _check_edges(batch, i, task.spec.directed)
        assert s != g and batch.meta["present"][i, [s, g]].all()
        assert _toks(batch, i)[-3:] == ["Q", str(s), str(g)]
        reach = nx.has_path(_graph(adj), s, g)
        assert batch.answer_set(i) == [yes if reach else no]
        assert (batch.meta["distance"][i] >= 0) == reach
    frac = np.mean(batch.answers[:, -1, 0] == yes)
    assert 0.4 < frac < 0.6


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("directed", [False, True])
def test_graph_families_structure(family, directed):
    rng = np.random.default_rng(0)
    adj, n = build_family(family, 60, rng, 4, 12, directed=directed, edge_prob=0.3)
    for a, k in zip(adj, n):
        assert not a[k:].any() and not a[:, k:].any() and not np.diagonal(a).any()
        a = a[:k, :k]
        G = _graph(a, directed)
        und = G.to_undirected() if directed else G
        if not directed:
            assert np.array_equal(a, a.T)
        if family == "er":
            continue
        assert nx.is_connected(und), family
        if family in ("chain", "tree"):
            assert und.number_of_edges() == k - 1
        if family == "chain":
            assert max(d for _, d in und.degree()) <= 2
        if family == "grid":
            r = [(r, c) for r in range(2, k + 1) for c in range(2, k + 1) if r * c == k]
            assert any(nx.is_isomorphic(und, nx.grid_2d_graph(*rc)) for rc in r)
        if directed and family in ("chain", "tree", "grid", "connected"):
            assert nx.descendants(G, 0) | {0} == set(range(k))


# --- dfs-trace ------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"directed": True}, {"family": "er"},
                                {"family": "grid", "max_vertices": 9}])
def test_dfs_trace_matches_networkx_preorder(kw):
    task = get_task("dfs-trace", **kw)
    batch = task.sample(120, 2)
    v = batch.vocab
    for i in range(len(batch)):
        m = batch.meta
        adj, s = m["adj"][i], int(m["start"][i])
        _check_edges(batch, i, task.spec.directed)
        G = nx.DiGraph()
        G.add_nodes_from(range(adj.shape[0]))
        for u in range(adj.shape[0]):  # insertion order = sorted neighbours
            G.add_edges_from((u, w) for w in np.flatnonzero(adj[u]))
        want = list(nx.dfs_preorder_nodes(G, s))
        R = int(m["order_len"][i])
        assert list(m["order"][i][:R]) == want
        pe = int(m["prefix_end"][i])
        toks = v.decode(batch.tokens[i])
        assert toks[pe - 3: pe] == ["S", str(s), "|"]
        assert [int(x) for x in toks[pe:]] == want
        scored = np.flatnonzero(batch.loss_mask[i])
        assert list(scored) == list(range(pe - 1, task.max_len))
        got = v.decode([batch.answers[i, p, 0] for p in scored])
        assert got == [str(x) for x in want] + ["."]


def test_dfs_trace_any_order_sets_are_exact_continuations():
    for directed in (False, True):
        task = get_task("dfs-trace", any_order=True, max_vertices=6, edge_prob=0.4, directed=directed)
        batch = task.sample(60, 9)
        v = batch.vocab
        for i in range(len(batch)):
            m = batch.meta
            adj, s = m["adj"][i], int(m["start"][i])
            order = [int(x) for x in m["order"][i][: int(m["order_len"][i])]]
            assert is_valid_dfs_order(adj, s, order)
            orders = all_dfs_orders(adj, s)
            pe = int(m["prefix_end"][i])
            for t in range(len(order) + 1):
                nxt = {o[t] if t < len(o) else "." for o in orders if list(o[:t]) == order[:t]}
                got = set(v.decode(batch.answer_set(i, pe - 1 + t)))
                assert got == {str(x) for x in nxt}


def test_dfs_continuations_follow_given_order():
    rng = np.random.default_rng(1)
    adj = np.zeros((1, 5, 5), dtype=bool)
    for u, w in [(0, 1), (0, 2), (1, 3), (2, 4)]:
        adj[0, u, w] = adj[0, w, u] = True
    order, conts = dfs_continuations(adj, np.array([0]), rng, order=np.array([[0, 2, 4, 1, 3]]))
    assert order.tolist() == [[0, 2, 4, 1, 3]]
    assert [set(np.flatnonzero(c).tolist()) for c in conts[0]] == [{1, 2}, {4}, {1}, {3}, set()]


# --- induction ------------------------------------------------------------------------

def _hop_loop(x, k):
    """Sanford et al.'s hop_k by a plain loop (0-indexed, -1 undefined)."""
    def find1(i):
        for j in range(i, 0, -1):
            if x[j - 1] == x[i]:
                return j
        return -1
    out = []
    for i in range(len(x)):
        p = i
        for _ in range(k):
            p = find1(p) if p >= 0 else -1
        out.append(x[p] if p >= 0 else -1)
    return out


@pytest.mark.parametrize("name,kw,k", [("induction", {"alphabet": 5, "seq_len": 30}, 1),
                                       ("k-hop-induction", {"alphabet": 3, "seq_len": 40, "k": 4}, 4),
                                       ("k-hop-induction", {"k": 2, "all_positions": True}, 2)])
def test_khop_targets_match_plain_loop(name, kw, k):
    task = get_task(name, **kw)
    batch = task.sample(60, 4)
    off = batch.vocab.extra_offset
    for i in range(len(batch)):
        x = list(batch.tokens[i] - off)
        want = _hop_loop(x, k)
        assert list(batch.meta["hop"][i]) == want == list(khop(x, k).answer)
        assert want[-1] >= 0 or kw.get("all_positions")
        mask = np.array(want) >= 0
        if not kw.get("all_positions"):
            mask[:-1] = False
        assert np.array_equal(batch.loss_mask[i], mask)
        for p in np.flatnonzero(mask):
            assert batch.answer_set(i, int(p)) == [want[p] + off]
    assert batch.vocab.num_vertices == 0 and batch.vocab.tokens[off:][0] == "a0"


def test_induction_example_from_docstring():
    assert _hop_loop([2, 0, 1, 2, 3, 1], 1)[-1] == 2


# --- cogeval ----------------------------------------------------------------------------

def test_loader_graphs_and_answers():
    graphs = load_cogeval_graphs()
    assert tuple(graphs) == GRAPH_NAMES
    for name, g in graphs.items():
        assert g.adj.shape == (g.n, g.n) and g.rewards.shape == (g.n,)
        if not g.directed:
            assert np.array_equal(g.adj, g.adj.T)
        for q in g.queries:
            if q.kind == "value-path":
                assert value_path(g.adj, g.rewards, q.start, q.max_steps).answer == tuple(sorted(q.computed))
                assert q.first_steps == value_path_first_steps(g.adj, g.rewards, q.start, q.max_steps)
            else:
                assert shortest_paths(g.adj, q.start, q.goal).answer == tuple(sorted(q.computed))
            text = prompt(g, q)
            assert "room" in text and "CogEval" not in text
    assert graphs["n7line"].nodes[0] == "lobby" and graphs["n16cluster"].rewards.min() == -15


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_cogeval_fixed_graph_relabelled_preserves_answers(name):
    g = load_cogeval_graphs()[name]
    task = get_task("cogeval", graph=name)
    batch = task.sample(30, 8)
    v = batch.vocab
    m = batch.meta
    assert (m["graph"] == GRAPH_NAMES.index(name)).all()
    for i in range(len(batch)):
        lab = m["vertex_labels"][i][: g.n]
        assert len(set(lab.tolist())) == g.n
        inv = {int(l): j for j, l in enumerate(lab)}
        # the relabelled graph is the graph
        assert np.array_equal(m["adj"][i][np.ix_(lab, lab)], g.adj)
        assert m["adj"][i].sum() == g.adj.sum()
        _check_edges(batch, i, g.directed)
        # rewards as tokens
        t = _toks(batch, i)
        stated = {int(t[j + 1]): int(t[j + 2][1:]) for j in range(len(t)) if t[j] == "R"}
        assert stated == {int(lab[u]): int(g.rewards[u]) for u in np.flatnonzero(g.rewards)}
        q = g.queries[int(m["query_index"][i])]
        assert inv[int(m["start"][i])] == q.start
        if q.kind == "shortest-path":
            assert t[-3:] == ["Q", str(lab[q.start]), str(lab[q.goal])]
        else:
            assert t[-2:] == ["V", str(lab[q.start])]
        got = sorted(inv[a - v.vertex_offset] for a in batch.answer_set(i))
        assert got == list(q.first_steps) and got
        # and the theory reference on the relabelled graph agrees
        refs = task.references(batch, i)
        ans = refs["value_path"].answer if q.kind == "value-path" else refs["shortest_paths"].answer
        assert sorted(tuple(inv[x] for x in p) for p in ans) == sorted(q.computed)


def _best_first_steps(adj, rewards, s, cutoff):
    """Brute force over simple paths with networkx (value, then fewest steps)."""
    G = _graph(adj)
    cands = [(0.0, 0, None)]
    for t in G.nodes:
        if t == s:
            continue
        for p in nx.all_simple_paths(G, s, t, cutoff=cutoff):
            cands.append((sum(rewards[x] for x in p[1:]), len(p) - 1, p[1]))
    best = max(c[0] for c in cands)
    steps = min(c[1] for c in cands if c[0] == best)
    return sorted({c[2] for c in cands if c[0] == best and c[1] == steps and c[2] is not None})


@pytest.mark.parametrize("family", ["two-branch", "tree", "cluster"])
def test_cogeval_generated_answers(family):
    task = get_task("cogeval", family=family, max_vertices=8, min_vertices=5)
    batch = task.sample(40, 1)
    m, v = batch.meta, batch.vocab
    for i in range(len(batch)):
        adj, s = m["adj"][i], int(m["start"][i])
        got = sorted(a - v.vertex_offset for a in batch.answer_set(i))
        if m["query_kind"][i] == 0:
            assert got == _best_first_steps(adj, m["rewards"][i], s, int(m["max_steps"][i]))
        else:
            G = _graph(adj)
            assert got == sorted({p[1] for p in nx.all_shortest_paths(G, s, int(m["goal"][i]))})
    assert set(m["query_kind"].tolist()) == {0, 1}
    g, q, labels = task.example_graph(batch, 0)
    assert f"room {labels[q.start]}" in prompt(g, q, labels)


# --- parameters -------------------------------------------------------------------------

BAD = [
    ("shortest-path", {"max_vertices": 12, "num_labels": 8}, "num_labels"),
    ("shortest-path", {"family": "hypercube"}, "family"),
    ("shortest-path", {"edge_prob": 1.5}, "edge_prob"),
    ("shortest-path", {"max_len": 10}, "max_len"),
    ("shortest-path", {"family": "grid", "max_vertices": 3}, "max_vertices"),
    ("shortest-path", {"min_vertices": 9}, "min_vertices"),
    ("shortest-path", {"bogus": 1}, "bogus"),
    ("reachability", {"family": "tree", "components": 1}, "components"),
    ("reachability", {"directed": "yes"}, "directed"),
    ("reachability", {"edge_prob": 1.0}, "edge_prob"),
    ("shortest-path", {"edge_prob": 0.0}, "edge_prob"),
    ("cogeval", {"graph": "n99maze"}, "graph"),
    ("cogeval", {"family": "ring"}, "family"),
    ("cogeval", {"graph": "n21star", "num_labels": 16}, "num_labels"),
    ("cogeval", {"graph": "n7tree", "max_reward": 9}, "max_reward"),
    ("cogeval", {"graph": "n16cluster", "min_reward": 0}, "min_reward"),
    ("cogeval", {"graph": "n7line", "query": "shortest-path"}, "query"),
    ("cogeval", {"query": "maze"}, "query"),
    ("cogeval", {"max_vertices": 30}, "num_labels"),
    ("cogeval", {"max_len": 20}, "max_len"),
    ("induction", {"alphabet": 0}, "alphabet"),
    ("induction", {"seq_len": 1}, "seq_len"),
    ("induction", {"k": 2}, "k"),
    ("k-hop-induction", {"k": 0}, "k"),
    ("k-hop-induction", {"all_positions": "no"}, "all_positions"),
    ("dfs-trace", {"max_vertices": 10, "num_labels": 8}, "num_labels"),
    ("dfs-trace", {"any_order": 1}, "any_order"),
    ("dfs-trace", {"family": "cluster", "max_vertices": 3}, "max_vertices"),
]


@pytest.mark.parametrize("name,kw,param", BAD, ids=[f"{n}-{p}" for n, _, p in BAD])
def test_bad_parameters_raise(name, kw, param):
    with pytest.raises(ParameterError) as e:
        get_task(name, **kw)
    assert e.value.name == param and str(e.value).startswith(f"{param}=")
    assert "\n" not in str(e.value)
