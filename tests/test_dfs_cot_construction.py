"""The DFS chain-of-thought construction against :func:`algeval.theory.dfs.dfs`."""

import json

import numpy as np
import pytest
import sympy as sp

from algeval.errors import ParameterError
from algeval.proofs.dfs_claims import (
    RESOURCES,
    DFSClaim,
    all_graphs,
    build,
    certify_dfs,
    encode_prompts,
    greedy_generate,
    teacher_forced,
)
from algeval.sim.tasks import get_task
from algeval.theory.dfs import dfs


@pytest.fixture(scope="module")
def model5():
    model, meta, craft = build(DFSClaim(5, "sampled"))
    return model


def _reference(adj, s, vocab):
    return [int(vocab.vertex(int(x))) for x in dfs(adj, int(s)).answer] + [vocab.id(".")]


def test_backtracking_rule_is_dfs():
    """The math the construction uses: next = smallest unvisited neighbour of the latest live vertex."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        nv = int(rng.integers(1, 9))
        a = np.triu(rng.random((nv, nv)) < rng.uniform(0.1, 0.7), 1)
        if rng.random() < 0.5:
            a = a | a.T
        s = int(rng.integers(nv))
        order = [s]
        while True:
            vis = np.zeros(nv, bool)
            vis[order] = True
            live = [y for y in order if (a[y] & ~vis).any()]
            if not live:
                break
            order.append(int(np.flatnonzero(a[live[-1]] & ~vis)[0]))
        assert tuple(order) == dfs(a, s).answer


def test_teacher_forced_and_greedy_match_reference_on_random_graphs(model5):
    fams = [("connected", 0.3), ("er", 0.4), ("tree", 0.3)]
    for i, (fam, p) in enumerate(fams):
        task = get_task("dfs-trace", max_vertices=5, min_vertices=1, family=fam, edge_prob=p)
        b = task.sample(150, i)
        ok, margin, _ = teacher_forced(model5, b)
        assert ok.all() and margin.min() > 0.99
        ok_d, margin_d, _ = teacher_forced(model5, b, fast=False)  # the dense pass: same verdicts and margins
        assert ok_d.all() and np.allclose(margin, margin_d, atol=1e-4)
        gen = greedy_generate(model5, b[np.arange(40)])
        assert gen == [_reference(b.meta["adj"][j], b.meta["start"][j], b.vocab) for j in range(40)]
        if i == 0:
            assert greedy_generate(model5, b[np.arange(10)], fast=False) == gen[:10]


def test_backtracking_example_and_isolated_start(model5):
    task = DFSClaim(5, "sampled").task()
    adj = np.zeros((3, 5, 5), bool)
    for u, v in [(0, 3), (3, 4), (0, 1), (1, 2), (2, 3)]:  # from 0: 0 1 2 3 4; from 4: 4 3 0 1 2
        adj[0, u, v] = adj[0, v, u] = adj[1, u, v] = adj[1, v, u] = True
    for u, v in [(0, 4), (4, 1), (0, 2)]:  # from 0: 0 2, back to 0, then 4 1
        adj[2, u, v] = adj[2, v, u] = True
    starts = np.array([0, 4, 3])  # graph 2: vertex 3 is isolated, the trace is "3 ."
    b = encode_prompts(task, adj, starts, np.random.default_rng(1))
    gen = greedy_generate(model5, b)
    v = b.vocab
    assert [v.decode(g) for g in gen] == [["0", "1", "2", "3", "4", "."], ["4", "3", "0", "1", "2", "."], ["3", "."]]
    b2 = encode_prompts(task, adj[2:], np.array([0]))
    assert v.decode(greedy_generate(model5, b2)[0]) == ["0", "2", "4", "1", "."]


def test_encoder_matches_task_format():
    task = get_task("dfs-trace", max_vertices=6)
    b = task.sample(40, 5)
    mine = encode_prompts(task, b.meta["adj"], b.meta["start"])
    for i in range(len(b)):
        assert list(b.answers[i][b.loss_mask[i], 0]) == list(mine.answers[i][mine.loss_mask[i], 0])
        pe, pe2 = b.meta["prefix_end"][i], mine.meta["prefix_end"][i]
        assert (b.tokens[i, pe - 3:] == mine.tokens[i, pe2 - 3:]).all()  # S s | trace
        assert sorted(b.tokens[i][b.tokens[i] > 0]) == sorted(mine.tokens[i][mine.tokens[i] > 0])
    assert len(all_graphs(4, False)) == 64 and len(all_graphs(3, True)) == 64


def _built(model):
    cfg = model.cfg
    return dict(layers=cfg.n_layers, heads=cfg.n_heads, max_len=cfg.max_len, d_model=cfg.d_model, d_mlp=cfg.d_mlp)


def test_resource_formulas_match_built_models(model5):
    n = sp.Symbol("n", positive=True, integer=True)
    assert _built(model5) == DFSClaim(5, "sampled").expected_resources()
    d_model = sp.Rational(9, 2) * n**2 + sp.Rational(11, 2) * n + 15
    assert sp.simplify(RESOURCES["undirected"]["d_model"] - d_model) == 0
    assert sp.simplify(RESOURCES["directed"]["max_len"] - (3 * n**2 - 2 * n + 3)) == 0


def test_directed_graphs():
    claim = DFSClaim(4, "sampled", directed=True)
    model, _, _ = build(claim)
    assert _built(model) == claim.expected_resources() and model.cfg.max_len == claim.task().max_len
    b = claim.task("er", 0.4).sample(200, 3)  # directed er: often few vertices reachable from the start
    ok, margin, _ = teacher_forced(model, b)
    assert ok.all() and margin.min() > 0.99
    gen = greedy_generate(model, b[np.arange(30)])
    assert gen == [_reference(b.meta["adj"][j], b.meta["start"][j], b.vocab) for j in range(30)]


def test_exhaustive_certificate_and_beta_far_below_the_bound_fails():
    claim = DFSClaim(4, "exhaustive")
    cert = certify_dfs(claim, greedy_samples=100)
    assert cert["passed"] and cert["exact_on_domain"] and cert["checked"] == 2 * 64 * 4
    assert cert["greedy_generation"] == {"checked": 100, "equal_to_reference": 100}
    low = certify_dfs(claim, beta_scale=0.05, greedy_samples=20)
    assert not low["passed"] and low["failed"] > 0 and low["first_counterexample"] is not None
    assert low["min_decoding_margin"] <= 0


def test_bad_inputs_raise_parameter_error():
    with pytest.raises(ParameterError):
        DFSClaim(6, "exhaustive")
    with pytest.raises(ParameterError):
        DFSClaim(5, "exhaustive", directed=True)
    with pytest.raises(ParameterError):
        DFSClaim(5, "bogus")
    from algeval.models.constructions.dfs_cot import dfs_cot

    with pytest.raises(ParameterError):
        dfs_cot(get_task("search", max_vertices=5))
    with pytest.raises(ParameterError):
        dfs_cot(get_task("dfs-trace", max_vertices=5, any_order=True))


def test_cli_build_and_prove(tmp_path, capsys):
    from algeval.sim.cli import main

    out_dir = tmp_path / "dfs"
    assert main(["build", "dfs-cot", "--max-vertices", "4", "--out", str(out_dir)]) == 0
    assert "5 layers" in capsys.readouterr().out
    assert json.loads((out_dir / "model.json").read_text())["meta"]["construction"] == "dfs-cot"
    certs = tmp_path / "certs"
    code = main(["prove", "dfs-cot", "--max-vertices", "3", "--method", "exhaustive", "--out", str(certs)])
    assert code == 0 and "PASS dfs-cot-n3-exhaustive" in capsys.readouterr().out
    assert json.loads((certs / "dfs-cot-n3-exhaustive.json").read_text())["passed"]
    assert main(["prove", "dfs-cot", "--max-vertices", "6", "--method", "exhaustive"]) == 2  # n <= 5: one-line error


@pytest.mark.slow
def test_exhaustive_n5_and_sampled_n8():
    assert certify_dfs(DFSClaim(5, "exhaustive"))["passed"]
    assert certify_dfs(DFSClaim(8, "sampled"), samples=2000)["passed"]
