"""Reference algorithms of algeval.theory, cross-checked against networkx and brute force."""

from __future__ import annotations

import functools

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algeval.errors import ParameterError
from algeval.theory import (
    Trace,
    bfs,
    dfs,
    is_valid_bfs_order,
    khop,
    next_hops,
    path_merging,
    reach_steps_needed,
    shortest_paths,
    value_iteration,
    value_path,
    value_path_first_steps,
)
from algeval.theory.graph import from_edges
from graph_strategies import graphs_with_start

SETTINGS = settings(max_examples=150, deadline=None)


# ---------------------------------------------------------------- strategies


def graphs(**kw):
    """``(adj, directed)``."""
    return graphs_with_start(**kw).map(lambda c: c[:2])


@st.composite
def dags(draw, min_n=1, max_n=8):
    """A DAG with randomly relabelled vertices (edges go up a hidden topological order)."""
    n = draw(st.integers(min_n, max_n))
    topo = draw(st.permutations(range(n)))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=2 * n)) if pairs else []
    return from_edges(n, [(topo[i], topo[j]) for i, j in chosen], directed=True)


def rewards_for(n):
    return st.lists(st.integers(-3, 6), min_size=n, max_size=n).map(lambda r: np.asarray(r, dtype=np.float64))


def to_nx(adj, directed=True):
    """networkx graph with nodes, then edges, added in sorted order."""
    g = nx.DiGraph() if directed else nx.Graph()
    g.add_nodes_from(range(adj.shape[0]))
    us, vs = np.nonzero(adj)
    edges = sorted((int(u), int(v)) for u, v in zip(us, vs) if directed or u <= v)
    g.add_edges_from(edges)
    return g


# ---------------------------------------------------------------- bfs


@SETTINGS
@given(graphs_with_start())
def test_bfs_matches_networkx_distances(case):
    adj, _, s = case
    t = bfs(adj, s)
    assert isinstance(t, Trace) and t.algorithm == "bfs"
    nx_dist = nx.single_source_shortest_path_length(to_nx(adj), s)
    expected = np.full(adj.shape[0], -1)
    for v, d in nx_dist.items():
        expected[v] = d
    np.testing.assert_array_equal(t["distance"][-1], expected)
    # one step per layer, layer d = distance exactly d, visited = distance <= d
    assert t.num_steps == max(nx_dist.values()) + 1
    for d in range(t.num_steps):
        np.testing.assert_array_equal(t["frontier"][d], expected == d)
        np.testing.assert_array_equal(t["visited"][d], (expected >= 0) & (expected <= d))
        np.testing.assert_array_equal(t["distance"][d], np.where(expected <= d, expected, -1))
    # visit order: networkx's FIFO BFS with neighbours in ascending id; a valid queue order
    g = nx.DiGraph()
    g.add_nodes_from(range(adj.shape[0]))
    g.add_edges_from(map(tuple, np.argwhere(adj).tolist()))
    assert t.answer == (s,) + tuple(v for _, v in nx.bfs_edges(g, s, sort_neighbors=sorted))
    assert is_valid_bfs_order(adj, s, t.answer)


def test_bfs_answer_is_a_queue_order_not_just_layered():
    adj = from_edges(5, [(4, 0), (0, 1), (1, 2), (2, 3)], directed=False)
    t = bfs(adj, 1)
    assert t.answer == (1, 0, 2, 4, 3)  # dequeuing 0 before 2 enqueues 4 before 3
    assert is_valid_bfs_order(adj, 1, t.answer)
    layer_sorted = (1, 0, 2, 3, 4)
    assert is_valid_bfs_order(adj, 1, layer_sorted, layered=True)
    assert not is_valid_bfs_order(adj, 1, layer_sorted)
    assert is_valid_bfs_order(adj, 1, (1, 0, 2, 4, 3)) and is_valid_bfs_order(adj, 1, (1, 2, 0, 3, 4))


def test_bfs_small_example():
    adj = from_edges(5, [(0, 2), (0, 1), (2, 3), (1, 3), (4, 0)], directed=True)
    t = bfs(adj, 0)
    assert t.answer == (0, 1, 2, 3)
    np.testing.assert_array_equal(t["distance"][-1], [0, 1, 1, 2, -1])
    np.testing.assert_array_equal(t["frontier"][1], [False, True, True, False, False])


# ---------------------------------------------------------------- dfs


@SETTINGS
@given(graphs_with_start())
def test_dfs_default_is_networkx_preorder_with_sorted_neighbours(case):
    adj, directed, s = case
    g = to_nx(adj, directed)
    # the premise: networkx scans neighbours in insertion order, which is sorted here
    for u in g:
        assert list(g[u]) == sorted(g[u])
    assert dfs(adj, s).answer == tuple(nx.dfs_preorder_nodes(g, s))


@SETTINGS
@given(graphs_with_start(), st.randoms(use_true_random=False))
def test_dfs_neighbor_order_is_a_priority(case, rnd):
    adj, _, s = case
    n = adj.shape[0]
    perm = list(range(n))
    rnd.shuffle(perm)
    rank = {v: i for i, v in enumerate(perm)}
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    for u in range(n):  # insert each vertex's successors by priority
        g.add_edges_from((u, v) for v in sorted(np.flatnonzero(adj[u]).tolist(), key=rank.get))
    assert dfs(adj, s, np.asarray(perm)).answer == tuple(nx.dfs_preorder_nodes(g, s))
    seed = rnd.randrange(2**32)
    drawn = np.random.default_rng(seed).permutation(n)
    assert dfs(adj, s, np.random.default_rng(seed)).answer == dfs(adj, s, drawn).answer


@SETTINGS
@given(graphs_with_start())
def test_dfs_trace_invariants(case):
    adj, _, s = case
    n = adj.shape[0]
    t = dfs(adj, s)
    order = t.answer
    assert t.num_steps == len(order) == len(nx.descendants(to_nx(adj), s)) + 1
    for step, v in enumerate(order):
        assert t["current"][step] == v
        np.testing.assert_array_equal(np.flatnonzero(t["visited"][step]), sorted(order[: step + 1]))
        row = t["stack"][step]
        depth = int((row >= 0).sum())
        assert (row[:depth] >= 0).all() and (row[depth:] == -1).all() and row.shape == (n,)
        path = row[:depth].tolist()
        assert path[0] == s and path[-1] == v and len(set(path)) == depth
        assert all(adj[a, b] for a, b in zip(path, path[1:]))  # the stack is a path


# ---------------------------------------------------------------- path merging


@pytest.mark.parametrize(
    "d, expected", [(-1, 0), (0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4), (1024, 10), (1025, 11)]
)
def test_reach_steps_needed_table(d, expected):
    assert reach_steps_needed(d) == expected


@given(st.integers(2, 10**9))
def test_reach_steps_needed_is_ceil_log2(d):
    l = reach_steps_needed(d)
    assert 2 ** (l - 1) < d <= 2**l


@SETTINGS
@given(graphs())
def test_path_merging_steps_are_hop_limited_reach(case):
    adj, _ = case
    n = adj.shape[0]
    g = to_nx(adj)
    t = path_merging(adj)
    assert t.algorithm == "path-merging"
    assert t.num_steps == reach_steps_needed(max(n - 1, 1)) + 1
    for l in range(t.num_steps):
        expected = np.zeros((n, n), dtype=bool)
        for u in range(n):
            expected[u, list(nx.single_source_shortest_path_length(g, u, cutoff=2**l))] = True
        np.testing.assert_array_equal(t["reach"][l], expected)
    closure = np.zeros((n, n), dtype=bool)
    for u in range(n):
        closure[u, [u, *nx.descendants(g, u)]] = True
    np.testing.assert_array_equal(t.answer, closure)
    # a pair at distance d first appears at step reach_steps_needed(d)
    for u in range(n):
        for v, d in nx.single_source_shortest_path_length(g, u).items():
            first = int(np.argmax(t["reach"][:, u, v]))
            assert first == reach_steps_needed(d)


# ---------------------------------------------------------------- shortest paths


@SETTINGS
@given(graphs_with_start(), st.data())
def test_shortest_paths_match_networkx(case, data):
    adj, _, s = case
    goal = data.draw(st.integers(0, adj.shape[0] - 1))
    g = to_nx(adj)
    t = shortest_paths(adj, s, goal)
    assert t.algorithm == "shortest-path"
    if nx.has_path(g, s, goal):
        expected = tuple(sorted(tuple(p) for p in nx.all_shortest_paths(g, s, goal)))
    else:
        expected = ()
    assert t.answer == expected
    if s == goal:
        assert t.answer == ((s,),)
    np.testing.assert_array_equal(t["distance"], bfs(adj, s)["distance"])
    assert next_hops(adj, s, goal) == tuple(sorted({p[1] for p in expected if len(p) > 1}))


def test_shortest_paths_example_and_unreachable():
    adj = from_edges(6, [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (0, 4)], directed=True)
    assert shortest_paths(adj, 0, 3).answer == ((0, 1, 3), (0, 2, 3))
    assert shortest_paths(adj, 0, 4).answer == ((0, 4),)
    assert shortest_paths(adj, 0, 5).answer == ()
    assert shortest_paths(adj, 4, 0).answer == ()
    assert next_hops(adj, 0, 3) == (1, 2) and next_hops(adj, 0, 5) == () and next_hops(adj, 2, 2) == ()


# ---------------------------------------------------------------- value path


def brute_force_value_path(adj, rewards, s, budget):
    """All simple paths from s with <= budget edges via networkx, then the CogEval rule per budget."""
    g = to_nx(adj)
    paths = [(s,)]
    for target in g:
        if target != s:
            paths += [tuple(p) for p in nx.all_simple_paths(g, s, target, cutoff=budget)]
    scored = [(sum(rewards[v] for v in p[1:]), len(p) - 1, p) for p in paths]
    per_step = []
    for step in range(budget + 1):
        ok = [x for x in scored if x[1] <= step]
        best = max(v for v, _, _ in ok)
        shortest = min(m for v, m, _ in ok if v == best)
        per_step.append((best, sorted(p for v, m, p in ok if v == best and m == shortest)))
    return per_step


@SETTINGS
@given(graphs_with_start(max_n=7), st.data())
def test_value_path_matches_brute_force(case, data):
    adj, _, s = case
    n = adj.shape[0]
    rewards = data.draw(rewards_for(n))
    budget = data.draw(st.none() | st.integers(0, n))
    t = value_path(adj, rewards, s, budget)
    steps = n - 1 if budget is None else budget
    expected = brute_force_value_path(adj, rewards, s, steps)
    assert t.algorithm == "value-path" and t.num_steps == steps + 1
    assert t.answer == tuple(expected[-1][1])
    for step, (best, opt) in enumerate(expected):
        assert t["best_value"][step] == best
        np.testing.assert_array_equal(np.flatnonzero(t["first_steps"][step]), sorted({p[1] for p in opt if len(p) > 1}))
    assert value_path_first_steps(adj, rewards, s, budget) == tuple(sorted({p[1] for p in expected[-1][1] if len(p) > 1}))


def test_value_path_prefers_fewer_steps_and_stopping():
    # 0 -> 1 (reward 3) -> 2 (reward 0): the detour to 2 ties, the shorter path wins
    adj = from_edges(3, [(0, 1), (1, 2)], directed=True)
    t = value_path(adj, [0, 3, 0], 0)
    assert t.answer == ((0, 1),) and t["best_value"][-1] == 3
    # every move loses reward: stopping at once is optimal
    t = value_path(adj, [0, -1, -2], 0)
    assert t.answer == ((0,),) and t["best_value"].tolist() == [0, 0, 0] and not t["first_steps"].any()
    assert value_path_first_steps(adj, [0, -1, -2], 0) == ()


# ---------------------------------------------------------------- value iteration


def best_walk_values(adj, rewards):
    """Plain recursion over every walk from u with at most k edges (stopping allowed), memoised."""

    @functools.cache
    def best(u, k):
        out = 0.0
        if k > 0:
            for v in range(adj.shape[0]):
                if adj[u, v]:
                    out = max(out, rewards[v] + best(v, k - 1))
        return out

    return best


@SETTINGS
@given(graphs(max_n=6), st.integers(0, 4), st.data())
def test_value_iteration_is_best_walk_value(case, horizon, data):
    adj, _ = case
    n = adj.shape[0]
    rewards = data.draw(rewards_for(n))
    t = value_iteration(adj, rewards, horizon)
    assert t.algorithm == "value-iteration" and t.num_steps == horizon + 1
    best = best_walk_values(adj, rewards)
    for k in range(horizon + 1):
        for u in range(n):
            assert t["value"][k, u] == best(u, k)
    # the policy attains the value; smallest maximiser; -1 exactly when stopping is best
    assert (t["policy"][0] == -1).all()
    for k in range(1, horizon + 1):
        for u in range(n):
            q = {v: rewards[v] + t["value"][k - 1, v] for v in np.flatnonzero(adj[u])}
            best = max(q.values(), default=-np.inf)
            if best > 0:
                assert t["policy"][k, u] == min(v for v in q if q[v] == best)
            else:
                assert t["policy"][k, u] == -1 and t["value"][k, u] == 0
    np.testing.assert_array_equal(t.answer, t["value"][-1])
    # walks include simple paths: value iteration bounds value_path from above
    for s in range(n):
        vp = value_path(adj, rewards, s, horizon)["best_value"]
        assert (t["value"][:, s] >= vp).all()


@SETTINGS
@given(dags(), st.data())
def test_value_iteration_equals_value_path_on_dags(adj, data):
    """With no cycle reachable from the start every walk is a simple path, so the values agree."""
    n = adj.shape[0]
    rewards = data.draw(rewards_for(n))
    t = value_iteration(adj, rewards)
    assert t.num_steps == n  # default horizon n - 1
    for s in range(n):
        np.testing.assert_array_equal(t["value"][:, s], value_path(adj, rewards, s)["best_value"])


def test_value_iteration_counts_rewards_again_on_cycles():
    adj = from_edges(2, [(0, 1)], directed=False)  # undirected edge: the walk 0-1-0-1 exists
    t = value_iteration(adj, [0.0, 1.0], horizon=3)
    assert t["value"][:, 0].tolist() == [0, 1, 1, 2]  # 1 collected twice
    assert value_path(adj, [0.0, 1.0], 0, 3)["best_value"].tolist() == [0, 1, 1, 1]
    assert t["policy"][3].tolist() == [1, 0]


# ---------------------------------------------------------------- k-hop induction


def khop_loop(x, k):
    """The definition, literally: find_1(i) = max{j : 1 <= j <= i, x[j-1] == x[i]} (0-indexed)."""
    def find1(i):
        js = [j for j in range(1, i + 1) if x[j - 1] == x[i]]
        return max(js) if js else -1

    out = []
    for i in range(len(x)):
        p = i
        for _ in range(k):
            if p == -1:
                break
            p = find1(p)
        out.append(x[p] if p != -1 else -1)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.integers(1, 6))
def test_khop_matches_loop(x, k):
    t = khop(x, k)
    assert t.algorithm == "k-hop-induction" and t.num_steps == k + 1
    assert t.answer.tolist() == khop_loop(x, k)
    np.testing.assert_array_equal(t["find"][0], np.arange(len(x)))
    for s in range(1, k + 1):  # every step is one more hop of the previous one
        prev, cur = t["find"][s - 1], t["find"][s]
        np.testing.assert_array_equal(cur, np.where(prev >= 0, t["find"][1][np.maximum(prev, 0)], -1))
        assert ((cur == -1) | (cur <= np.maximum(prev, 0))).all()  # hops never move right


def test_khop_hand_example():
    #        0  1  2  3  4  5
    x = [1, 2, 1, 3, 2, 1]
    t = khop(x, 2)
    assert t["find"][1].tolist() == [-1, -1, 1, -1, 2, 3]  # after the latest earlier equal token
    assert t["find"][2].tolist() == [-1, -1, -1, -1, 1, -1]
    assert khop(x, 1).answer.tolist() == [-1, -1, 2, -1, 1, 3]
    assert t.answer.tolist() == [-1, -1, -1, -1, 2, -1]
    assert khop([7, 7], 5).answer.tolist() == [-1, 7]  # j = i is allowed: a fixed point


# ---------------------------------------------------------------- bad arguments


ADJ = from_edges(3, [(0, 1)], directed=True)


@pytest.mark.parametrize(
    "call, prefix",
    [
        (lambda: bfs(ADJ, 3), "start=3: must be <= 2"),
        (lambda: bfs(ADJ, -1), "start=-1: must be >= 0"),
        (lambda: dfs(ADJ, 0.5), "start=0.5: must be an integer"),
        (lambda: bfs(np.zeros((2, 3)), 0), "adj.shape=(2, 3): must be a square"),
        (lambda: path_merging(np.zeros((2, 2, 2))), "adj.shape=(2, 2, 2): must be a square"),
        (lambda: path_merging(np.zeros((0, 0))), "adj.shape=(0, 0): must be a square (n, n) matrix with n >= 1"),
        (lambda: dfs([[1, 0], [0]], 0), "adj='ragged': must be a square"),
        (lambda: dfs(ADJ, 0, [0, 0, 1]), "neighbor_order=[0, 0, 1]: must be a permutation"),
        (lambda: shortest_paths(ADJ, 0, 5), "goal=5: must be <= 2"),
        (lambda: next_hops(ADJ, 9, 0), "start=9: must be <= 2"),
        (lambda: value_iteration(ADJ, [1, 2], 2), "rewards.shape=(2,): must be (3,)"),
        (lambda: value_iteration(ADJ, [1, 2, 3], -1), "horizon=-1: must be >= 0"),
        (lambda: value_path(ADJ, [1, 2, np.nan], 0), "rewards=[1.0, 2.0, nan]: must be finite"),
        (lambda: value_path(ADJ, [1, 2, 3], 0, -2), "max_steps=-2: must be >= 0"),
        (lambda: khop([1, 2], 0), "k=0: must be >= 1"),
        (lambda: khop([[1, 2]], 1), "seq.shape=(1, 2): must be 1-D"),
        (lambda: khop([1, -2], 1), "seq=[1, -2]: must hold non-negative"),
        (lambda: reach_steps_needed(2.5), "distance=2.5: must be an integer"),
    ],
)
def test_bad_arguments_raise_one_line_parameter_error(call, prefix):
    with pytest.raises(ParameterError) as err:
        call()
    msg = str(err.value)
    assert msg.startswith(prefix) and "\n" not in msg
