"""The CogEval value-path construction: agreement with the reference, certificates, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from algeval.errors import ParameterError
from algeval.models.constructions.value_path import value_path_layers, value_path_model
from algeval.proofs.search_claims import fastpath_crosscheck
from algeval.proofs.value_path_claims import (
    ValuePathClaim,
    certify_value_path,
    encode,
    exhaustive_queries,
    fast_logits,
    in_domain,
    last_logits,
    out_trees,
    score_logits,
)
from algeval.sim.tasks import get_task
from algeval.theory.value_path import value_path_first_steps


@pytest.fixture(scope="module")
def small():
    claim = ValuePathClaim(6, 3, "sampled", -3, 5)
    task = claim.task("tree")
    craft = value_path_model(task, 3)
    model, _ = craft.to_transformer()
    return claim, task, craft, model


def _random_out_tree(rng, n, labels):
    """A random out-tree on ``n`` of ``labels`` labels with random integer rewards anywhere (not only leaves)."""
    verts = rng.permutation(labels)[:n]
    adj = np.zeros((labels, labels), bool)
    for i in range(1, n):
        adj[verts[rng.integers(i)], verts[i]] = True
    rew = np.zeros(labels, np.int64)
    rew[verts[1:]] = rng.integers(-3, 6, n - 1)
    return adj, rew, int(verts[0])


def test_agrees_with_reference_on_random_in_domain_graphs(small):
    claim, task, craft, model = small
    rng = np.random.default_rng(3)
    graphs = [_random_out_tree(rng, int(rng.integers(2, 7)), 6) for _ in range(300)]
    adj, rew, start = (np.stack(x) for x in zip(*graphs))
    assert all(in_domain(a, s) for a, s in zip(adj, start))
    batch, keep = encode(task, adj, rew, start, 3, rng)
    assert keep.sum() > 100  # most draws have a positive path
    logits = last_logits(model, batch.tokens)
    ok, margin, pred = score_logits(logits, batch.answers[:, -1])
    assert ok.all() and margin.min() > 0
    off = batch.vocab.vertex_offset
    for i in range(len(batch)):  # the argmax is one of the reference's first steps, recomputed here
        m = batch.meta
        assert pred[i] - off in value_path_first_steps(m["adj"][i], m["rewards"][i], int(m["start"][i]), 3)


def test_task_prompts_trimmed_width_gives_the_same_logits(small):
    claim, task, craft, model = small
    import jax

    b = task.sample(16, seed=5)
    fn, state = model.functional()
    full = np.asarray(jax.jit(fn)(state, b.tokens)[0])[:, -1]  # the full, left-padded width
    np.testing.assert_allclose(last_logits(model, b.tokens), full, rtol=1e-5, atol=1e-4)
    assert score_logits(full, b.answers[:, -1])[0].all()


def test_resources_and_depth(small):
    claim, task, craft, model = small
    assert model.cfg.n_unrolled() == value_path_layers(6, 3) == 3 + 3 + 3
    assert claim.expected_resources(task.max_len) == {"layers": 9, "heads": 2, "d_model": model.cfg.d_model,
                                                      "d_mlp": 3 * 36 - 3 * 6}
    assert model.cfg.d_model == 5 * 36 + 6 * 6 + 6 * 3 + 16 + task.max_len
    assert ValuePathClaim(3, 1, "sampled").expected_resources(10)["d_mlp"] == 2 * 9 + 2  # the read layer is widest


def _tree_depths_and_sums(adj, rewards, start):
    """Depth and reward sum along the unique path to every vertex reachable from ``start`` in an out-tree."""
    depth, psum, frontier = {start: 0}, {start: 0}, [start]
    while frontier:
        nxt = []
        for u in frontier:
            for v in np.flatnonzero(adj[u]):
                depth[int(v)], psum[int(v)] = depth[u] + 1, psum[u] + int(rewards[v])
                nxt.append(int(v))
        frontier = nxt
    return depth, psum


def test_bookkeeping_is_exact_and_scores_follow_the_derivation(small):
    """At the decision position, in float32: R, nR, fi, ne, eq are exact integers (the gates pass on exact
    zeros) and sc:v = w (S0 + K P(v) - d(v)) for every vertex within the budget, 0 beyond (module docstring)."""
    claim, task, craft, model = small
    rng = np.random.default_rng(7)
    graphs = [_random_out_tree(rng, int(rng.integers(3, 7)), 6) for _ in range(24)]
    adj, rew, start = (np.stack(x) for x in zip(*graphs))
    batch, _ = encode(task, adj, rew, start, 3, rng)
    L = model.cfg.n_unrolled()
    _, cache = model.run_with_cache(batch.tokens, f"blocks.{L - 1}.hook_resid_post")
    x = np.asarray(cache[f"blocks.{L - 1}.hook_resid_post"])[:, -1].astype(np.float64)
    lab = craft.residual.labels
    col = {k: i for i, k in enumerate(lab)}
    exact = [i for i, k in enumerate(lab) if k.split(":")[0] in ("R", "nR", "fi", "ne", "eq", "nadj")]
    np.testing.assert_array_equal(x[:, exact], np.round(x[:, exact]))
    c = craft.meta["constants"]
    m = batch.meta
    for i in range(len(batch)):
        depth, psum = _tree_depths_and_sums(m["adj"][i], m["rewards"][i], int(m["start"][i]))
        w = x[i, col["unit"]]
        assert 0 < w <= 1
        for v in range(6):
            sc, reached = x[i, col[f"sc:{v}"]], v in depth and depth[v] <= 3
            assert x[i, col[f"R:{v}"]] == reached and x[i, col[f"nR:{v}"]] == 1 - reached
            want = w * (c["S0"] + c["K"] * psum[v] - depth[v]) if reached else 0.0
            assert abs(sc - want) <= 1e-6 * c["B_g"], (i, v, sc, want)  # a few float32 ulps of sc


def test_fast_path_agrees_with_dense_far_above_rounding():
    """n = 8, H = 7 in float32: the sparse fast path (another summation order) and the dense pass agree to
    rounding far below the decision margin.  (The earlier construction, whose gates cancelled +-B against
    the scores, differed here by ~6 against margins of ~1.8.)"""
    claim = ValuePathClaim(8, 7, "sampled")
    b = claim.task("tree").sample(64, 0)
    model, _ = value_path_model(claim.task(), 7).to_transformer()
    cross = fastpath_crosscheck(model, b.tokens, count=64)
    ok, margin, _ = score_logits(fast_logits(model, b.tokens), b.answers[:, -1])
    assert ok.all() and cross["agrees"] and cross["same_argmax"] == cross["untied"] > 50
    assert cross["max_abs_diff"] * 100 < margin.min()


def test_exhaustive_certificate_small():
    claim = ValuePathClaim(3, 1, "exhaustive", -1, 1, (-1, 0, 1))
    adj, rew, start = exhaustive_queries(claim)
    # out-trees on 3 labels: 3 roots x (2 single edges + 3 trees on all three) = 15; rewards on the non-roots
    assert len(out_trees(3)) == 15
    assert len(adj) == 3 * (2 * 3 + 3 * 9)
    cert = certify_value_path(claim, shuffle_samples=50)
    assert cert["passed"] and cert["exact_on_domain"] and cert["resources_match"]
    fc = cert["float_checks"]
    assert fc["fast_vs_dense"]["checked"] == cert["checked"] and fc["fast_dense_consistent"]
    assert fc["fast_vs_float64"]["checked"] == 16 and 0 <= fc["rounding"] < 1e-4
    assert fc["margin_clear_of_rounding"] and cert["min_decoding_margin"] > fc["rounding_factor"] * fc["rounding"]
    assert cert["checked"] + cert["skipped_stay_put"] == len(adj)
    sh = cert["order_shuffle"]
    assert sh["same_prediction_untied"] == sh["untied"] > 0 and sh["shuffled_correct"] == sh["checked"] == 39


def test_lowered_beta_fails_its_certificate():
    claim = ValuePathClaim(4, 2, "sampled", -3, 5)
    good = certify_value_path(claim, samples=40, seed=2, crosscheck=8, reference=0)
    bad = certify_value_path(claim, samples=40, seed=2, beta_scale=0.02, crosscheck=8, reference=0)
    assert good["passed"]
    assert not bad["passed"] and bad["failed"] > 0 and bad["first_counterexample"]


def test_in_domain_and_bad_input():
    a = np.zeros((4, 4), bool)
    a[0, 1] = a[1, 2] = True
    assert in_domain(a, 0)
    a[2, 1] = True  # a cycle among reachable vertices
    assert not in_domain(a, 0)
    u = np.zeros((3, 3), bool)
    u[0, 1] = u[1, 0] = True  # an undirected edge
    assert not in_domain(u, 0)
    with pytest.raises(ParameterError):
        value_path_model(get_task("search", max_vertices=5))
    with pytest.raises(ParameterError):
        value_path_model(get_task("cogeval", query="shortest-path", max_vertices=5, num_labels=5))
    with pytest.raises(ParameterError):
        ValuePathClaim(8, 3, "exhaustive", -1, 1, (-1, 0, 1))


def test_cli_build_and_prove(tmp_path, capsys):
    from algeval.sim.cli import main

    assert main(["build", "value-path", "--max-vertices", "4", "--max-steps", "2", "--out", str(tmp_path / "m")]) == 0
    assert "value-path" in capsys.readouterr().out
    assert main(["show", str(tmp_path / "m")]) == 0
    assert "propagate" in capsys.readouterr().out
    rc = main(["prove", "value-path", "--method", "exhaustive", "--max-vertices", "3", "--max-steps", "2",
               "--min-reward", "-1", "--max-reward", "1", "--reward-set=-1,0,1", "--out", str(tmp_path / "c")])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("PASS value-path-n3-H2")
    cert = json.loads(next((tmp_path / "c").glob("*.json")).read_text())
    assert cert["passed"] and cert["method"] == "exhaustive"
