"""The ``search`` task: answers against networkx, determinism, format, bad parameters."""

import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

from algeval.errors import ParameterError
from algeval.sim.tasks import TASKS, get_task
from algeval.theory.graph import is_dag

DISTS = ["balanced", "naive", "star"]


def nx_graph(adj):
    g = nx.DiGraph()
    g.add_nodes_from(range(adj.shape[0]))
    g.add_edges_from(map(tuple, np.argwhere(adj)))
    return g


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("prefix", ["start", "random"])
def test_answer_sets_match_networkx(dist, prefix):
    task = get_task("search", distribution=dist, max_vertices=10, path_prefix=prefix)
    b = task.sample(300, seed=3)
    voc = b.vocab
    for i in range(len(b)):
        adj = b.meta["adj"][i]
        assert is_dag(adj)
        g = nx_graph(adj)
        cur, goal = int(b.meta["current"][i]), int(b.meta["goal"][i])
        want = sorted(v for v in g.successors(cur) if v == goal or nx.has_path(g, v, goal))
        got = sorted(t - voc.vertex_offset for t in b.answer_set(i))
        assert got == want and got, (i, got, want)
        assert b.meta["lookahead"][i] == nx.shortest_path_length(g, cur, goal)
        # the token sequence encodes exactly this graph and query
        toks = voc.decode(b.tokens[i])
        body = [t for t in toks if t != "<pad>"]
        q = body.index("Q")
        edges = {(int(body[k + 1]), int(body[k + 2])) for k in range(0, q, 3)}
        assert all(body[k] == "E" for k in range(0, q, 3))
        assert edges == set(map(tuple, np.argwhere(adj).tolist()))
        assert (int(body[q + 1]), int(body[q + 2])) == (int(b.meta["start"][i]), goal)
        assert body[q + 3] == "P" and int(body[-1]) == cur and int(body[q + 4]) == int(b.meta["start"][i])
        # the path so far is a real path in the graph
        path = [int(x) for x in body[q + 4:]]
        assert all(adj[u, v] for u, v in zip(path, path[1:]))
        assert b.meta["present"][i].sum() == b.meta["n_vertices"][i]


def test_balanced_start_has_two_branches_one_correct_and_uniform_lookahead():
    task = get_task("search", max_vertices=16, max_lookahead=7)
    b = task.sample(4000, seed=0)
    la = b.meta["lookahead"]
    assert set(np.unique(la)) == set(range(1, 8))
    counts = np.bincount(la)[1:]
    assert counts.min() > 0.8 * counts.mean()
    for i in range(200):
        adj, s = b.meta["adj"][i], int(b.meta["start"][i])
        assert adj[s].sum() >= 2 and len(b.answer_set(i)) == 1


def test_star_graphs_are_path_stars():
    task = get_task("search", distribution="star", max_vertices=13, star_arms=3, max_lookahead=4)
    b = task.sample(200, seed=1)
    for i in range(len(b)):
        adj, s = b.meta["adj"][i], int(b.meta["start"][i])
        L = int(b.meta["lookahead"][i])
        assert adj[s].sum() == 3 and adj.sum() == 3 * L
        assert (adj.sum(1)[np.arange(adj.shape[0]) != s] <= 1).all()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_is_deterministic_and_in_vocab(name):
    task = get_task(name)
    a, b, c = task.sample(64, 5), task.sample(64, 5), task.sample(64, 6)
    assert a.tokens.dtype == np.int32
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.answers, b.answers)
    for k in a.meta:
        np.testing.assert_array_equal(a.meta[k], b.meta[k])
    assert not np.array_equal(a.tokens, c.tokens)
    assert 0 <= a.tokens.min() and a.tokens.max() < a.vocab.size
    assert a.answers.max() < a.vocab.size and a.tokens.shape[1] <= task.max_len
    assert a.loss_mask.any(1).all()
    # every scored position has a non-empty answer set
    assert ((a.answers >= 0).any(-1) | ~a.loss_mask).all()


def test_tokens_are_byte_identical_across_processes():
    code = ("import hashlib; from algeval.sim.tasks import get_task; "
            "b = get_task('search', max_vertices=12).sample(500, 11); "
            "print(hashlib.sha256(b.tokens.tobytes() + b.answers.tobytes()).hexdigest())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    b = get_task("search", max_vertices=12).sample(500, 11)
    import hashlib
    here = hashlib.sha256(b.tokens.tobytes() + b.answers.tobytes()).hexdigest()
    assert outs == {here + "\n"}


@pytest.mark.parametrize("opts,needle", [
    (dict(max_vertices=8, max_lookahead=4), "max_lookahead=4"),
    (dict(max_vertices=20, num_labels=16), "num_labels=16"),
    (dict(distribution="tree"), "distribution='tree'"),
    (dict(distribution="star", star_arms=3, max_vertices=9, max_lookahead=3), "max_lookahead=3"),
    (dict(max_vertices=2), "max_vertices=2"),
    (dict(colour=3), "colour=3"),
])
def test_bad_parameters_name_the_parameter_and_limit(opts, needle):
    with pytest.raises(ParameterError) as e:
        get_task("search", **opts)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_vertex_positions_map_vertices_to_their_mentions():
    b = get_task("search", max_vertices=8).sample(20, 0)
    for i in range(len(b)):
        s = int(b.meta["start"][i])
        pos = b.vertex_positions(i, s)
        # the start is mentioned in the query, in the path, and in each of its edges
        n_edges = b.meta["adj"][i][s].sum() + b.meta["adj"][i][:, s].sum()
        assert len(pos) == n_edges + 2
        assert (b.tokens[i, pos] == b.vocab.vertex(s)).all()
