"""The analyses library (algeval.sim.analyses): exact small cases with known answers."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from algeval.errors import ParameterError
from algeval.models import Patch, Transformer, TransformerConfig
from algeval.sim.analyses import (
    Acts,
    Named,
    ablate_heads,
    activation_patching,
    analyze_main,
    attention_to_path,
    attribution_patching,
    best_agreement_counts,
    collect,
    corrupted_pairs,
    graph_info,
    head_ablation_sweep,
    logit_diffs,
    ols,
    order_scores,
    probe_labels,
    probes,
    run_all,
    state_graph,
    verdict,
)
from algeval.sim.tasks import get_task
from algeval.sim.tasks.base import TaskBatch
from algeval.theory import all_bfs_orders, all_dfs_orders, bfs, path_merging, value_iteration
from algeval.theory.graph import transitive_closure


def search_batch(n=200, seed=0, **kw):
    task = get_task("search", max_vertices=kw.pop("max_vertices", 8), **kw)
    return task, task.sample(n, seed)


def small_model(task, seed=0, **kw):
    cfg = dict(vocab_size=task.vocab.size, max_len=task.max_len, n_layers=2, d_model=16, n_heads=2, d_head=8,
               d_mlp=32)
    cfg.update(kw)
    return Transformer(TransformerConfig(**cfg), seed=seed)


# --- Named ---------------------------------------------------------------------------------------

def test_named_selection_and_json_roundtrip():
    x = Named(np.array([[1.0, np.nan], [3.0, 4.0]]), ("layer", "head"), {"layer": [-1, 0]})
    assert x.sel(layer=0).values.tolist() == [3.0, 4.0]
    assert x.mean("layer").values.tolist() == [2.0, 4.0]
    js = json.loads(json.dumps(x.to_json()))
    assert js["values"][0][1] is None and js["axes"] == ["layer", "head"]
    y = Named.from_json(js)
    np.testing.assert_array_equal(np.isnan(y.values), np.isnan(x.values))
    with pytest.raises(ValueError):
        Named(np.zeros((2, 3)), ("a",))


# --- graph facts ------------------------------------------------------------------------------

def test_graph_info_sets_match_the_answers():
    _, batch = search_batch(100, seed=3, path_prefix="random")
    info = graph_info(batch)
    assert not (info.correct & info.competing).any()
    b = np.arange(len(batch))
    assert info.correct[b, info.target].all()  # the goal is on the correct path
    ans = np.zeros_like(info.correct)
    a = batch.answers[:, -1]
    for i in range(len(batch)):
        ans[i, a[i][a[i] >= 0] - batch.vocab.vertex_offset] = True
    np.testing.assert_array_equal(info.answer_children, ans)
    # competing vertices never reach the goal; correct ones always do
    assert (info.dist_to[info.competing] < 0).all() and (info.dist_to[info.correct] >= 0).all()
    cog = get_task("cogeval", graph="n7line", query="value-path").sample(8, 0)
    ci = graph_info(cog)
    ans = cog.answers[:, -1, 0] - cog.vocab.vertex_offset
    assert ci.answer_children[np.arange(8), ans].all() and ci.competing.sum(1).tolist() == [3] * 8


# --- attention to the path: a hand-set attention pattern gives a known b --------------------------

def _hand_batch():
    """current 0 -> 1 -> 2 (goal), competing branch 0 -> 3 -> 4; tokens E 0 1 E 1 2 E 0 3 E 3 4 Q 0 2 P 0."""
    task = get_task("search", max_vertices=5)
    v = task.vocab
    E, Q, P = v.id("E"), v.id("Q"), v.id("P")
    x = v.vertex
    seq = [E, x(0), x(1), E, x(1), x(2), E, x(0), x(3), E, x(3), x(4), Q, x(0), x(2), P, x(0)]
    T = task.max_len
    tokens = np.zeros((1, T), np.int32)
    tokens[0, T - len(seq):] = seq
    adj = np.zeros((1, 5, 5), bool)
    for u, w in [(0, 1), (1, 2), (0, 3), (3, 4)]:
        adj[0, u, w] = True
    answers = np.full((1, T, 1), -1, np.int32)
    answers[0, -1, 0] = v.vertex(1)
    lm = np.zeros((1, T), bool)
    lm[0, -1] = True
    meta = dict(adj=adj, start=np.array([0]), goal=np.array([2]), current=np.array([0]), lookahead=np.array([2]),
                n_vertices=np.array([5]), present=np.ones((1, 5), bool), path=np.array([[0, 1, 2]]))
    return task, TaskBatch("search", tokens, answers, lm, v, "causal", meta)


def test_attention_to_path_hand_model_gives_known_b():
    task, batch = _hand_batch()
    cfg = TransformerConfig(vocab_size=task.vocab.size, max_len=task.max_len, n_layers=1, d_model=4, n_heads=1,
                            d_head=2, d_mlp=0, mlp="none", norm="none", positions="none", attn_scale=1.0)
    m = Transformer(cfg, seed=0)
    c = np.zeros(task.vocab.size)
    c[task.vocab.vertex(1)], c[task.vocab.vertex(2)] = np.log(2), np.log(4)
    WE = np.zeros((task.vocab.size, 4), np.float32)
    WE[:, 0] = c
    m.W_E[...] = jnp.asarray(WE)
    a = m.blocks[0].attn
    a.W_Q[...] = jnp.zeros_like(a.W_Q[...])
    a.b_Q[...] = jnp.asarray([[1.0, 0.0]])
    WK = np.zeros((1, 4, 2), np.float32)
    WK[0, 0, 0] = 1.0
    a.W_K[...] = jnp.asarray(WK)
    res = attention_to_path(m, batch)
    # weights exp(c)/Z over the 17 tokens: Z = 25; correct tokens 2,2,4,4 /Z; competing 1,1,1 /Z
    Z = 25.0
    y = np.array([2, 2, 4, 4, 1, 1, 1]) / Z
    x = np.array([1, 1, 1, 1, 0, 0, 0.0])
    from scipy import stats

    ref = stats.linregress(x, y)
    o = res["overall"]
    assert o["b"] == pytest.approx(2 / Z, abs=1e-6) and o["n"] == 7 and o["df"] == 5
    assert o["se"] == pytest.approx(ref.stderr, rel=1e-4)
    assert o["p"] == pytest.approx(ref.pvalue, rel=1e-3)
    assert res["mass"].values[0, 0, 0].tolist() == pytest.approx([12 / Z, 3 / Z], abs=1e-6)
    pl = res["per_layer"]
    assert pl.sel(stat="b").values[0] == pytest.approx(2 / Z, abs=1e-6)
    assert ref.pvalue < 0.05 and res["layers_positive"] == 1 and res["layers_negative"] == 0


def test_ols_matches_scipy_and_handles_degenerate_cases():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = rng.random(50)
    y = 0.3 * x + rng.normal(0, 0.1, 50)
    r = ols(y, x)
    ref = stats.linregress(x, y)
    assert r["b"] == pytest.approx(ref.slope) and r["se"] == pytest.approx(ref.stderr)
    assert r["p"] == pytest.approx(ref.pvalue) and r["ci_lo"] < ref.slope < r["ci_hi"]
    assert np.isnan(ols(y, np.ones(50))["b"])  # no variance in x


# --- order matching: the DP optimum is the brute-force optimum ------------------------------------

def _brute(adj, s, W, kind):
    orders = np.array((all_bfs_orders if kind == "bfs" else all_dfs_orders)(adj, s))
    pos = np.argsort(orders, axis=1)  # pos[o, v]: place of v
    before = pos[:, :, None] < pos[:, None, :]  # (O, n, n)
    return np.einsum("ouv,puv->po", before.astype(float), W).max(1)


def test_dp_best_order_equals_brute_force_on_small_graphs():
    rng = np.random.default_rng(1)
    for _ in range(60):
        n = int(rng.integers(2, 8))
        adj = rng.random((n, n)) < rng.uniform(0.2, 0.7)
        np.fill_diagonal(adj, False)
        if rng.random() < 0.3:
            adj |= adj.T
        s = int(rng.integers(n))
        R = np.flatnonzero(transitive_closure(adj)[s])
        a, sl = adj[np.ix_(R, R)], int(np.flatnonzero(R == s)[0])
        tau = rng.integers(0, 3, (3, len(R)))
        W = (tau[:, :, None] < tau[:, None, :]).astype(float)
        for kind in ("bfs", "dfs"):
            dp = best_agreement_counts([state_graph(a, sl, kind)], W[None])[0]
            np.testing.assert_allclose(dp, _brute(a, sl, W, kind))


def test_dp_on_cogeval_n15star_bfs_equals_brute_force():
    from algeval.sim.tasks.cogeval import load_cogeval_graphs

    g = load_cogeval_graphs()["n15star"]
    rng = np.random.default_rng(0)
    tau = rng.integers(0, 4, (2, g.n))
    W = (tau[:, :, None] < tau[:, None, :]).astype(float)
    sg = state_graph(g.adj, g.start, "bfs")
    assert sg.n_states < 1000  # ~12,000 orders, a few hundred states
    np.testing.assert_allclose(best_agreement_counts([sg], W[None])[0], _brute(g.adj, g.start, W, "bfs"))


def test_order_scores_recognise_a_bfs_schedule():
    _, batch = search_batch(60, seed=2)
    info = graph_info(batch)
    d = info.dist_from
    tau_bfs = np.where(d >= 0, d, 9)
    rng = np.random.default_rng(0)
    taus = np.stack([tau_bfs, -tau_bfs, rng.integers(0, 3, d.shape)])
    sc, meta = order_scores(batch, info, taus)
    ok = np.isfinite(sc["bfs"][0])
    assert ok.sum() > 30 and not meta["incomplete"].any()
    np.testing.assert_allclose(sc["bfs"][0][ok], 1.0)           # every BFS-distance pair is honoured
    np.testing.assert_allclose(sc["path_merging"][0][ok], 1.0)
    assert np.nanmean(sc["bfs"][1]) < 0.2                         # reversed distances: BFS cannot follow
    assert np.nanmean(sc["dfs"][0]) < 1.0                         # balanced graphs: DFS breaks distance order
    # brute force on a few examples for the DFS maximum
    for i in np.flatnonzero(ok)[:5]:
        R = np.flatnonzero(d[i] >= 0)
        sl = int(np.flatnonzero(R == info.decision[i])[0])
        t = taus[:, i][:, R]
        scored = np.ones(len(R), bool)
        scored[sl] = False
        W = ((t[:, :, None] < t[:, None, :]) & scored[None, :, None] & scored[None, None, :]).astype(float)
        bf = _brute(info.adj[i][np.ix_(R, R)], sl, W, "dfs") / W.sum((1, 2))
        np.testing.assert_allclose(sc["dfs"][:, i], bf)


# --- probes ------------------------------------------------------------------------------------

def test_probe_labels_are_the_reference_traces():
    _, batch = search_batch(30, seed=4, path_prefix="random")
    info = graph_info(batch)
    L = 3
    lab = probe_labels(info, L)
    for i in range(10):
        adj, s, g = info.adj[i], int(info.decision[i]), int(info.target[i])
        tb, tp = bfs(adj, s), path_merging(adj)
        tv = value_iteration(adj, info.rewards[i], L)
        for k in range(L + 1):
            np.testing.assert_array_equal(lab["bfs_visited"][0][i, k], tb["visited"][min(k, tb.num_steps - 1)])
            if k >= 1:
                step = min(k - 1, tp.num_steps - 1)
                np.testing.assert_array_equal(lab["pm_reach"][0][i, k], tp["reach"][step][s])
                np.testing.assert_array_equal(lab["pm_goal"][0][i, k], tp["reach"][step][:, g])
            np.testing.assert_array_equal(lab["vi_positive"][0][i, k], tv["value"][k] > 0)


def _fake_acts(reps, info, n_layers):
    B, _, V, _ = reps.shape
    return Acts(reps.astype(np.float32), np.zeros((B, n_layers, 1, 4), np.float32), np.zeros((B, 4)),
                info.mentioned, np.zeros(B, np.int32))


def test_probe_finds_a_planted_variable_and_controls_stay_at_chance():
    _, batch = search_batch(300, seed=5)
    info = graph_info(batch)
    L, D = 2, 12
    lab = probe_labels(info, L, ("bfs_visited",))["bfs_visited"][0]
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(batch), L + 1, info.V, D))
    u = rng.normal(size=D)
    planted = noise + 3.0 * lab[..., None] * u
    res = probes(None, batch, acts=_fake_acts(planted, info, L), info=info,
                 control=_fake_acts(noise, info, L), variables=("bfs_visited", "pm_goal"))
    acc = res["accuracy"].sel(variable="bfs_visited").values
    assert np.all(acc[np.isfinite(acc)] > 0.95) and np.isfinite(acc).sum() >= 2
    sh = res["shuffled"].sel(variable="bfs_visited").values
    ctl = res["control"].sel(variable="bfs_visited").values
    assert np.all(np.abs(sh[np.isfinite(sh)] - 0.5) < 0.12)
    assert np.all(np.abs(ctl[np.isfinite(ctl)] - 0.5) < 0.12)
    s = res["summary"]["bfs_visited"]
    assert s["score"] > 0.95 and s["p"] < 1e-6
    assert abs(res["summary"]["pm_goal"]["score"] - 0.5) < 0.12  # not planted: chance
    v = verdict({"probes": res})
    assert v["best"] == "BFS" and v["table"][0]["verdict"] == "supported"


# --- causal tests ----------------------------------------------------------------------------------

def test_corrupted_pairs_differ_in_one_edge_token_and_flip_the_answer():
    _, batch = search_batch(80, seed=6, max_vertices=7)
    clean, corrupt, idx = corrupted_pairs(batch)
    assert len(idx) > 40
    diff = clean.tokens != corrupt.tokens
    assert (diff.sum(1) == 1).all()
    ci = graph_info(corrupt)
    for i in range(len(idx)):
        a0 = set(clean.answer_set(i))
        a1 = set(corrupt.answer_set(i))
        assert a1 and not (a0 & a1)
        adj = corrupt.meta["adj"][i]
        assert (adj.sum() == clean.meta["adj"][i].sum()) and not (transitive_closure(adj) & adj.T).any()
        # the corrupted answer set is what the corrupted graph implies
        reach = transitive_closure(adj)[:, int(corrupt.meta["goal"][i])]
        implied = {batch.vocab.vertex(int(v)) for v in np.flatnonzero(adj[int(ci.decision[i])] & reach)}
        assert implied == a1


def test_patching_sweep_equals_one_at_a_time():
    task, batch = search_batch(20, seed=7, max_vertices=5)
    m = small_model(task, seed=3)
    clean, corrupt, _ = corrupted_pairs(batch)
    c, x = clean[:3], corrupt[:3]
    res = activation_patching(m, c, x)
    eff = res["effect"].values
    _, cache = m.run_with_cache(c.tokens, "blocks.*.attn.hook_z")
    ld_c, ld_x = logit_diffs(m, c, x)
    a1 = c.answers[np.arange(3), -1, 0]
    a2 = x.answers[np.arange(3), -1, 0]
    T = c.tokens.shape[1]
    checked = 0
    for l in range(2):
        for t in range(T):
            for h in range(2):
                mask = np.zeros((1, T, 2, 1), bool)
                mask[0, t, h] = True
                lg = np.asarray(m.run_with_patches(x.tokens, {f"blocks.{l}.attn.hook_z":
                                                              Patch(mask, cache[f"blocks.{l}.attn.hook_z"])}))
                ld = lg[np.arange(3), -1, a1] - lg[np.arange(3), -1, a2]
                np.testing.assert_allclose(ld - ld_x, eff[:, l, t, h], atol=2e-5)
                checked += 1
    assert checked == 2 * T * 2 and np.abs(eff).max() > 1e-3  # something moved


def test_attribution_patching_tracks_activation_patching():
    task, batch = search_batch(40, seed=8, max_vertices=6)
    m = small_model(task, seed=4)
    clean, corrupt, _ = corrupted_pairs(batch)
    c, x = clean[:6], corrupt[:6]
    act = activation_patching(m, c, x)["effect"].values
    att = attribution_patching(m, c, x)["attribution"].values
    assert np.corrcoef(act.ravel(), att.ravel())[0, 1] > 0.5
    # exact where the model is linear in z: last layer, no final norm, no MLP
    lin = small_model(task, seed=4, norm="none", mlp="none", d_mlp=0)
    act = activation_patching(lin, c, x)["effect"].values
    att = attribution_patching(lin, c, x)["attribution"].values
    np.testing.assert_allclose(att[:, -1], act[:, -1], atol=1e-4)


def test_head_ablation_zero_all_equals_model_without_attention_output():
    task, batch = search_batch(30, seed=9, max_vertices=6)
    m = small_model(task, seed=5)
    r = ablate_heads(m, batch, [(l, h) for l in range(2) for h in range(2)], mode="zero")
    m2 = small_model(task, seed=5)
    for blk in m2.blocks:
        blk.attn.W_O[...] = jnp.zeros_like(blk.attn.W_O[...])
    acts2 = collect(m2, batch)
    ans = batch.answers[:, -1]
    lp = np.asarray(acts2.logits) - np.log(np.exp(acts2.logits - acts2.logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - acts2.logits.max(-1, keepdims=True)
    loss = -np.log(np.array([np.exp(lp[i, a[a >= 0]]).sum() for i, a in enumerate(ans)]))
    assert r["loss"] == pytest.approx(float(loss.mean()), rel=1e-4)
    sw = head_ablation_sweep(m, batch, mode="mean")["effects"]
    one = ablate_heads(m, batch, [(1, 0)], mode="mean")
    assert sw.sel(layer=1, metric="loss").values[0] == pytest.approx(one["loss"], rel=1e-5)
    with pytest.raises(ParameterError):
        ablate_heads(m, batch, [(5, 0)])


# --- verdict ---------------------------------------------------------------------------------------

def test_verdict_is_none_for_a_random_weights_model():
    task, batch = search_batch(300, seed=10)
    m = small_model(task, seed=11, n_layers=3, d_model=32, d_mlp=64)
    res = run_all(m, batch, control="random", n_perm=32, causal=False)
    v = res["verdict"]
    assert v["verdict"].startswith("none") and v["best"] is None
    assert all(r["verdict"] == "none" for r in v["table"])
    assert {r["algorithm"] for r in v["table"]} == {"BFS", "DFS", "path-merging", "value iteration"}


def test_verdict_rule_uses_chance_and_margin():
    good = {"score": 0.9, "chance": 0.5, "p_perm": 1e-5, "control": 0.55, "p_control": 1e-4}
    weak = {"score": 0.53, "chance": 0.5, "p_perm": 1e-5}
    v = verdict({"orders": {"summary": {"order_dfs": good, "order_bfs": weak}}})
    assert v["best"] == "DFS"
    row = {r["algorithm"]: r for r in v["table"]}
    assert row["BFS"]["verdict"] == "none" and row["DFS"]["verdict"] == "supported"
    assert row["DFS"]["alignment"] == pytest.approx((0.9 - 0.55) / 0.45)
    v2 = verdict({"orders": {"summary": {"order_dfs": dict(good, p_control=0.2)}}})
    assert v2["verdict"].startswith("none")


def test_analyze_cli_writes_report(tmp_path):
    from algeval.models.io import save_model

    task = get_task("search", max_vertices=6)
    m = small_model(task, seed=12)
    save_model(m, tmp_path / "m")
    rc = analyze_main([str(tmp_path / "m"), "--task", "search", "--task-opt", "max_vertices=6", "--out",
                       str(tmp_path / "out"), "--count", "48", "--perms", "8", "--exact-pairs", "3"])
    assert rc == 0
    js = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"attention", "geometry", "orders", "probes", "causal", "verdict"} <= set(js)
    assert js["attention"]["per_layer"]["axes"] == ["layer", "stat"]
    assert "Verdict" in (tmp_path / "out" / "report.md").read_text()
    assert np.load(tmp_path / "out" / "arrays.npz")["geometry.reps"].shape[:2] == (48, 3)
    assert analyze_main([str(tmp_path / "m"), "--task", "search", "--task-opt", "bogus=1", "--out",
                         str(tmp_path / "o2")]) == 2
