"""BFS/DFS order validity and enumeration (algeval.theory.orders), against brute force."""

from __future__ import annotations

from collections import deque
from itertools import permutations, product
from math import factorial, prod

import networkx as nx
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from algeval.errors import ParameterError
from algeval.theory import (
    all_bfs_orders,
    all_dfs_orders,
    bfs,
    count_bfs_orders,
    count_dfs_orders,
    dfs,
    is_valid_bfs_order,
    is_valid_dfs_order,
)
from algeval.theory.graph import from_edges
from graph_strategies import graphs_with_start as _graphs_with_start


def graphs_with_start(max_n=8, edge_factor=2):
    """``(adj, start)`` drawn by the shared strategy (directedness dropped)."""
    return _graphs_with_start(max_n=max_n, edge_factor=edge_factor).map(lambda c: (c[0], c[2]))


def reachable(adj, s):
    return set(bfs(adj, s).answer)


def succ(adj, u):
    return np.flatnonzero(adj[u]).tolist()


# ------------------------------------------------------------ independent oracles


def orders_over_neighbour_orderings(adj, s, search):
    """Run ``search`` under every assignment of a neighbour list to each reachable vertex."""
    verts = sorted(reachable(adj, s))
    choices = [list(permutations(succ(adj, u))) for u in verts]
    out = set()
    for pick in product(*choices):
        out.add(search(dict(zip(verts, pick)), s))
    return out


def queue_bfs(nbrs, s):
    order, seen, queue = [s], {s}, deque([s])
    while queue:
        for v in nbrs[queue.popleft()]:
            if v not in seen:
                seen.add(v)
                order.append(v)
                queue.append(v)
    return tuple(order)


def recursive_dfs(nbrs, s):
    order = []

    def visit(u):
        order.append(u)
        for v in nbrs[u]:
            if v not in order:
                visit(v)

    visit(s)
    return tuple(order)


def bfs_parent_criterion(adj, s, order):
    """The classic check: par(v) = earliest-placed in-neighbour; it precedes v, and par positions never decrease."""
    if not order or order[0] != s or set(order) != reachable(adj, s) or len(set(order)) != len(order):
        return False
    pos = {v: i for i, v in enumerate(order)}
    last = 0
    for i, v in enumerate(order[1:], start=1):
        p = min(pos[u] for u in order if adj[u, v])
        if p >= i or p < last:
            return False
        last = p
    return True


def small_branching(adj, s, limit=3000):
    return prod(factorial(len(succ(adj, u))) for u in reachable(adj, s)) <= limit


# ------------------------------------------------------------ enumeration vs oracles


@settings(max_examples=100, deadline=None)
@given(graphs_with_start(max_n=6))
def test_enumeration_equals_all_neighbour_orderings(case):
    adj, s = case
    assume(small_branching(adj, s))
    bfs_orders = all_bfs_orders(adj, s)
    dfs_orders = all_dfs_orders(adj, s)
    assert len(set(bfs_orders)) == len(bfs_orders) == count_bfs_orders(adj, s)
    assert len(set(dfs_orders)) == len(dfs_orders) == count_dfs_orders(adj, s)
    assert set(bfs_orders) == orders_over_neighbour_orderings(adj, s, queue_bfs)
    assert set(dfs_orders) == orders_over_neighbour_orderings(adj, s, recursive_dfs)


@settings(max_examples=100, deadline=None)
@given(graphs_with_start(max_n=7, edge_factor=3))
def test_validity_checks_agree_with_enumeration_on_every_permutation(case):
    adj, s = case
    bfs_set, dfs_set = set(all_bfs_orders(adj, s)), set(all_dfs_orders(adj, s))
    rest = sorted(reachable(adj, s) - {s})
    n_bfs = n_dfs = 0
    for p in permutations(rest):
        order = (s, *p)
        ok_bfs, ok_dfs = is_valid_bfs_order(adj, s, order), is_valid_dfs_order(adj, s, order)
        assert ok_bfs == (order in bfs_set) == bfs_parent_criterion(adj, s, order)
        assert ok_dfs == (order in dfs_set)
        n_bfs += ok_bfs
        n_dfs += ok_dfs
    assert n_bfs == len(bfs_set) and n_dfs == len(dfs_set)


# ------------------------------------------------------------ executors produce valid orders


@settings(max_examples=150, deadline=None)
@given(graphs_with_start(max_n=9, edge_factor=3), st.randoms(use_true_random=False))
def test_random_searches_give_valid_orders(case, rnd):
    adj, s = case
    n = adj.shape[0]
    perm = list(range(n))
    rnd.shuffle(perm)
    order = dfs(adj, s, np.asarray(perm)).answer
    assert is_valid_dfs_order(adj, s, order)
    assert is_valid_dfs_order(adj, s, dfs(adj, s).answer)
    assert is_valid_bfs_order(adj, s, bfs(adj, s).answer)
    # networkx searches with a random edge insertion order (= random neighbour lists)
    edges = [(int(u), int(v)) for u, v in zip(*np.nonzero(adj))]
    rnd.shuffle(edges)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges)
    nx_dfs = tuple(nx.dfs_preorder_nodes(g, s))
    nx_bfs = (s, *(v for _, v in nx.bfs_edges(g, s)))
    assert is_valid_dfs_order(adj, s, nx_dfs)
    assert is_valid_bfs_order(adj, s, nx_bfs)
    # and a random order of the reachable vertices is valid only if the checks say so by simulation
    rest = sorted(reachable(adj, s) - {s})
    rnd.shuffle(rest)
    shuffled = (s, *rest)
    assert is_valid_bfs_order(adj, s, shuffled) == bfs_parent_criterion(adj, s, shuffled)


# ------------------------------------------------------------ examples


TREE = from_edges(4, [(0, 1), (0, 2), (1, 3)], directed=False)  # 3 hangs below 1


def test_dfs_but_not_bfs_and_vice_versa():
    assert is_valid_dfs_order(TREE, 0, (0, 1, 3, 2)) and not is_valid_bfs_order(TREE, 0, (0, 1, 3, 2))
    assert is_valid_bfs_order(TREE, 0, (0, 1, 2, 3)) and not is_valid_dfs_order(TREE, 0, (0, 1, 2, 3))
    assert is_valid_dfs_order(TREE, 0, (0, 2, 1, 3)) and is_valid_bfs_order(TREE, 0, (0, 2, 1, 3))


@pytest.mark.parametrize(
    "order",
    [
        (1, 0, 2, 3),  # wrong start
        (0, 1, 2),  # misses a reachable vertex
        (0, 1, 2, 3, 3),  # repeats a vertex
        (0, 1, 2, 3, 4),  # vertex out of range
        (0, 1, 2, 3.5),  # not integers
        (),
    ],
)
def test_malformed_orders_are_invalid(order):
    assert not is_valid_bfs_order(TREE, 0, order)
    assert not is_valid_dfs_order(TREE, 0, order)
    assert not is_valid_bfs_order(TREE, 0, order, layered=True)


def test_directed_orders_use_out_neighbours():
    adj = from_edges(4, [(0, 1), (2, 1), (1, 3), (3, 0)], directed=True)  # 2 is not reachable from 0
    assert all_bfs_orders(adj, 0) == [(0, 1, 3)]
    assert all_dfs_orders(adj, 0) == [(0, 1, 3)]
    assert not is_valid_bfs_order(adj, 0, (0, 1, 3, 2))
    assert count_dfs_orders(adj, 2) == 1 and all_dfs_orders(adj, 2) == [(2, 1, 3, 0)]


@pytest.mark.parametrize(
    "edges, n, directed, n_bfs, n_dfs",
    [
        ([(0, 1), (0, 2), (0, 3), (0, 4)], 5, False, 24, 24),  # star from the centre: k! both
        ([(0, 1), (1, 2), (2, 3)], 4, False, 1, 1),  # path from an end
        ([(u, v) for u in range(4) for v in range(u + 1, 4)], 4, False, 6, 6),  # K4
        ([(0, 1), (1, 2), (2, 3), (3, 0)], 4, False, 2, 2),  # C4
        ([(0, 1), (0, 2), (1, 3), (2, 3)], 4, True, 2, 2),  # diamond DAG
        ([(0, 1), (0, 2), (1, 3), (1, 4), (2, 5), (2, 6)], 7, False, 8, 8),  # binary tree
    ],
)
def test_known_counts(edges, n, directed, n_bfs, n_dfs):
    adj = from_edges(n, edges, directed=directed)
    assert count_bfs_orders(adj, 0) == n_bfs
    assert count_dfs_orders(adj, 0) == n_dfs


def test_count_cap_raises_parameter_error():
    star = from_edges(7, [(0, v) for v in range(1, 7)], directed=False)  # 6! = 720 orders
    assert count_bfs_orders(star, 0, max_count=720) == 720
    with pytest.raises(ParameterError, match=r"^max_count=719: "):
        count_bfs_orders(star, 0, max_count=719)
    with pytest.raises(ParameterError, match=r"^max_count=100: "):
        count_dfs_orders(star, 0, max_count=100)
    with pytest.raises(ParameterError, match=r"^max_count=0: must be >= 1"):
        count_dfs_orders(star, 0, max_count=0)
    with pytest.raises(ParameterError, match=r"^start=7: must be <= 6"):
        is_valid_dfs_order(star, 7, (7,))
