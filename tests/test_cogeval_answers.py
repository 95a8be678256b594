"""The reference executors reproduce the computed answers of the CogEval graphs.

``sim/data/cogeval_graphs.json`` encodes CogEval's task graphs (Momennejad et
al., NeurIPS 2023) as edge lists, with each query's published answer key and
the answers that follow from the edges as written.  ``value_path`` and
``shortest_paths`` must reproduce every ``computed_answers`` (as a set of
paths: the file's own list order is not uniformly sorted) and
``computed_value``; and the published key must differ from the computed
answers exactly where the file marks it inconsistent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from algeval.theory import next_hops, shortest_paths, value_path, value_path_first_steps
from algeval.theory.graph import from_edges

DATA = Path(__file__).resolve().parents[1] / "sim" / "data" / "cogeval_graphs.json"
GRAPHS = json.loads(DATA.read_text())["graphs"]


def load(spec):
    """``(adj, index, rewards)``: node names mapped to ``0..n-1`` in listed order."""
    index = {name: i for i, name in enumerate(spec["nodes"])}
    adj = from_edges(len(index), [(index[u], index[v]) for u, v in spec["edges"]], directed=spec["directed"])
    rewards = np.zeros(len(index))
    for name, value in spec.get("rewards", {}).items():
        rewards[index[name if name in index else int(name)]] = value
    return adj, index, rewards


def query_name(graph, q):
    target = f"->{q['goal']}" if "goal" in q else ""
    return f"{graph}:{q['kind']}:{q['start']}{target}"


QUERIES = [(g, q) for g, spec in GRAPHS.items() for q in spec["queries"]]


def as_paths(answers):
    return sorted(tuple(map(str, p)) for p in answers)


@pytest.mark.parametrize("graph, query", QUERIES, ids=[query_name(g, q) for g, q in QUERIES])
def test_reproduces_computed_answers(graph, query):
    spec = GRAPHS[graph]
    adj, index, rewards = load(spec)
    names = list(index)
    start = index[query["start"]]
    if query["kind"] == "valuePath":
        t = value_path(adj, rewards, start, query["search_cutoff_steps"])
        assert t["best_value"][-1] == query["computed_value"]
        first = value_path_first_steps(adj, rewards, start, query["search_cutoff_steps"])
    else:
        assert query["kind"] == "shortestPath"
        goal = index[query["goal"]]
        t = shortest_paths(adj, start, goal)
        first = next_hops(adj, start, goal)
    got = [[names[v] for v in p] for p in t.answer]
    assert len(got) == len(query["computed_answers"])
    assert as_paths(got) == as_paths(query["computed_answers"])
    assert {names[v] for v in first} == {p[1] for p in query["computed_answers"]}


def test_published_key_disagreements_are_exactly_the_flagged_queries():
    differ = {
        query_name(g, q)
        for g, q in QUERIES
        if as_paths(q["published_answers"]) != as_paths(q["computed_answers"])
    }
    flagged = {query_name(g, q) for g, q in QUERIES if not q["published_key_consistent"]}
    assert differ == flagged == {
        "n15star:valuePath:1",
        "n15star:shortestPath:1->15",
        "n15star:shortestPath:1->12",
        "n16cluster:shortestPath:15->7",
    }


def test_loader_reads_names_and_rewards():
    adj, index, rewards = load(GRAPHS["n7line"])
    assert index["lobby"] == 0 and index[6] == 6
    assert adj[index["lobby"], index[2]] and not adj[index[2], index["lobby"]]  # directed
    assert rewards.tolist() == [0, 0, 0, 0, 0, 10, 50]
    adj, index, _ = load(GRAPHS["n16cluster"])
    assert (adj == adj.T).all() and adj.sum() == 2 * len(GRAPHS["n16cluster"]["edges"])
