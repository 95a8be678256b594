"""The analyses library (algeval.sim.analyses): exact small cases with known answers."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

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
    hop_labels,
    order_scores,
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
    H = 6
    fwd, bwd, pair = (hop_labels(info, r, H) for r in ("fwd", "bwd", "pair"))
    for i in range(10):
        adj, s, g = info.adj[i], int(info.decision[i]), int(info.target[i])
        tb, tg, tp = bfs(adj, s), bfs(adj.T, g), path_merging(adj)
        for h in range(1, H + 1):
            np.testing.assert_array_equal(fwd[i, :, h - 1], tb["visited"][min(h, tb.num_steps - 1)])
            np.testing.assert_array_equal(bwd[i, :, h - 1], tg["visited"][min(h, tg.num_steps - 1)])
        for k in range(tp.num_steps):
            h = min(2 ** k, H)
            if 2 ** k <= H:
                np.testing.assert_array_equal(pair[i, :, :, h - 1], tp["reach"][k])
    cog = get_task("cogeval", family="tree", query="value-path", max_vertices=9).sample(10, 1)
    ci = graph_info(cog)
    val = hop_labels(ci, "value", 5)
    for i in range(10):
        tv = value_iteration(ci.adj[i], ci.rewards[i], 5)
        np.testing.assert_array_equal(val[i].T, tv["value"][1:] > 0)


def _fake_acts(reps, info, n_layers, dec=None):
    B, _, V, D = reps.shape
    return Acts(reps.astype(np.float32), np.zeros((B, n_layers, 1, 4), np.float32), np.zeros((B, 4)),
                info.mentioned, np.zeros(B, np.int32), dec)


def test_probe_finds_a_planted_schedule_and_controls_stay_at_chance():
    _, batch = search_batch(400, seed=5, max_vertices=12)
    info = graph_info(batch)
    L, D = 4, 12
    fwd = hop_labels(info, "fwd", 8)  # (B, V, H)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(batch), L + 1, info.V, D))
    u = rng.normal(size=D)
    lab = np.zeros(noise.shape[:3])
    for i in range(1, L + 1):  # block i - 1 holds "within i hops of s": one hop per block
        lab[:, i] = fwd[:, :, i - 1]
    planted = noise + 3.0 * lab[..., None] * u
    res = probes(None, batch, acts=_fake_acts(planted, info, L), info=info,
                 control=_fake_acts(noise, info, L), families=("node.fwd", "node.bwd"))
    acc = res["accuracy"].sel(family="node.fwd").values
    assert all(acc[i, i - 1] > 0.97 for i in range(1, L + 1))  # the planted threshold, at its layer
    for name in ("shuffled", "control"):
        a = res[name].sel(family="node.fwd").values
        assert np.all(np.abs(a[np.isfinite(a)] - 0.5) < 0.1), name
    lin, exp = res["summary"]["linear"], res["summary"]["exponential"]
    assert lin["score"] > 0.97 and lin["family"] == "node.fwd" and lin["offset"] == 0 and lin["p"] < 1e-6
    assert lin["chance"] < 0.62 and exp["score"] < lin["score"] - 0.05
    # the per-threshold probe scores are descriptive: the verdict counts the onset items (test below)
    assert verdict({"probes": res})["best"] is None


# --- newly-reached probes and onsets ---------------------------------------------------------------

def _logistic_problem(seed, n=160, D=6, F=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)).astype(np.float32)
    T = np.stack([(X[:, 0] + 0.5 * X[:, f + 1] + 0.7 * rng.normal(size=n)) > 0.3 for f in range(F)], -1)
    from algeval.sim.analyses.logistic import balanced_weights

    W = balanced_weights(T, ~T)
    return X, T, W


def _objective(X, t, w, beta, c, lam=0.0, l2=0.0):
    z = X @ beta + c
    return float((w * (np.logaddexp(0, z) - t * z)).sum() + lam * np.abs(beta).sum() + 0.5 * l2 * beta @ beta)


def test_lasso_and_ridge_logistic_match_scipy():
    from scipy.optimize import minimize

    from algeval.sim.analyses.logistic import l1_logistic, newton

    X, T, W = _logistic_problem(0)
    n, D = X.shape
    rows = np.arange(n)[None]
    res = l1_logistic(X, rows, T[None], W[None], np.array([0.2, 0.05]), support=3, rounds=3, steps=3000)
    for f in range(2):
        lam = float(res["lam"][0, f])
        t, w = T[:, f].astype(float), W[:, f].astype(float)

        def obj(v):  # beta = v[:D] - v[D:2D] (both >= 0), intercept v[-1]
            return _objective(X.astype(float), t, w, v[:D] - v[D:2 * D], v[-1], lam)

        ref = minimize(obj, np.zeros(2 * D + 1), method="L-BFGS-B", bounds=[(0, None)] * (2 * D) + [(None, None)],
                       options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-10})
        ours = _objective(X, t, w, res["beta"][0, :, f], res["c"][0, f], lam)
        assert ours <= ref.fun + 1e-5, (f, ours, ref.fun)
        assert res["kkt"][0, f] <= 1e-2   # the working set (3 of 6 features) was grown until KKT holds
    assert (res["beta"][0, 0] != 0).any() and np.argmax(np.abs(res["beta"][0, :, 1])) == 0
    B = newton(X[None], T[None], W[None], np.array([[1e-2, 1e-1]]), iters=25)
    for f, l2 in enumerate((1e-2, 1e-1)):
        t, w = T[:, f].astype(float), W[:, f].astype(float)
        ref = minimize(lambda v: _objective(X.astype(float), t, w, v[:D], v[-1], 0.0, l2), np.zeros(D + 1),
                       method="BFGS", options={"gtol": 1e-9})
        np.testing.assert_allclose(B[0, :D, f], ref.x[:D], atol=2e-3)
    with pytest.raises(ParameterError):
        l1_logistic(X, rows, T[None], W[None], np.array([0.0, 0.1]))


def test_bin_probe_reads_a_planted_count_and_not_before():
    """A count variable (0 when never reached, 1-3 when reached) in one coordinate per output, among noise
    coordinates, a few positives per output and bin: the probe of every bin is exact where the count holds it,
    at chance where the count is still 0, and at chance with shuffled labels."""
    from algeval.sim.analyses.binprobe import layer_probe
    from algeval.sim.analyses.onsets import band_accuracy, parts, standardise

    rng = np.random.default_rng(0)
    n, K, D = 900, 6, 30
    dist = rng.choice([-1, 1, 2, 3], size=(n, K), p=[0.5, 0.3, 0.15, 0.05])
    M = np.ones((n, K), bool)
    part = parts(n, 0)
    count = np.where(dist > 0, rng.integers(1, 4, size=(n, K)), 0).astype(float)
    noise = rng.normal(size=(n, D))
    early = np.concatenate([np.where(dist == 1, count, 0), noise], 1)   # only distance 1 is reached yet
    late = np.concatenate([count, noise], 1)
    bins = [(1,), (2,), (3,)]
    r_late = layer_probe(standardise(late, part != 2), dist, M, part, bins)
    r_early = layer_probe(standardise(early, part != 2), dist, M, part, bins)
    assert np.all(r_late["acc"] >= 0.99), r_late
    assert r_early["acc"][0] >= 0.99 and np.all(r_early["acc"][1:] < 0.65), r_early
    A, _, meta = band_accuracy(np.stack([early, late], 1), dist, M, np.arange(n), part, bins, shuffle_seed=3)
    assert np.all(np.abs(A - 0.5) < 0.1), A
    assert len(meta["kind"]) == 2 and all(k in ("top", "own", "shared") for k in meta["kind"][1])
    with pytest.raises(ParameterError):
        parts(n, 0, val_frac=1.0)



def _planted_dec(info, schedule, L, noise=0.05, seed=0):
    """Decision-site features: coordinate x holds [x reaches the target within R(block)] plus noise, where
    R grows one hop per block from block 2 (linear) or doubles from block 1 (exponential); 8 noise dims."""
    B, V = info.B, info.V
    rng = np.random.default_rng(seed)
    d = info.dist_to
    dec = rng.normal(0, noise, (B, L + 1, V + 8))
    for l in range(L):
        R = (l - 1 if l >= 2 else 0) if schedule == "linear" else (2 ** (l - 1) if l >= 1 else 0)
        if schedule is not None:
            dec[:, l + 1, :V] += ((d >= 1) & (d <= R))
    return Acts(np.zeros((B, L + 1, V, 1), np.float32), np.zeros((B, L, 1, 4), np.float32), np.zeros((B, 4)),
                info.mentioned, np.zeros(B, np.int32), dec.astype(np.float32))


def test_onsets_name_a_planted_schedule_and_stay_silent_on_noise():
    from algeval.sim.analyses import newly_reached_check, reach_onsets

    _, batch = search_batch(400, seed=13, max_vertices=12, distribution="balanced")
    info = graph_info(batch)
    fam = ("decision.bwd",)
    out = {}
    for sched, L in (("linear", 7), ("exponential", 6), (None, 6)):
        acts = _planted_dec(info, sched, L)
        ctl = _planted_dec(info, None, L, seed=1)
        r = reach_onsets(None, batch, acts=acts, info=info, control=ctl, families=fam, n_null=500)
        out[sched] = (r, verdict({"onsets": r}))
    r, v = out["linear"]
    assert r["onset"].values[0, :4].tolist() == [3, 4, 5, 6]  # distance d reached at block d + 1
    assert v["best"] == "BFS" and r["summary"]["linear"]["score"] == 1.0
    assert r["summary"]["exponential"]["score"] < 1.0 and r["summary"]["linear"]["p"] < 0.01
    chk = newly_reached_check(r, "decision.bwd", {d: d + 2 for d in range(1, 5)})
    assert chk["ok"] and all(b["drop"] > 0.3 for b in chk["bands"].values())
    r, v = out["exponential"]
    assert r["onset"].values[0, :4].tolist() == [2, 3, 4, 4]  # 1, 2, 4 hops after blocks 1, 2, 3
    assert v["best"] == "path-merging" and r["summary"]["exponential"]["score"] == 1.0
    assert r["summary"]["linear"]["score"] < 1.0
    r, v = out[None]
    assert v["best"] is None and v["verdict"].startswith("none")
    assert (r["onset"].values == -1).all()


def test_onset_schedules_disagree_from_distance_four():
    from algeval.sim.analyses.onsets import match_schedule, planted_onsets, schedule_step

    d = np.arange(1, 9)
    lin, exp = schedule_step("linear", d), schedule_step("exponential", d)
    assert (lin[:3] == exp[:3]).all() and (lin[3:] > exp[3:]).all()
    on = 1 + lin + 2  # offset 2: layer index c + step + 1
    assert match_schedule(on, d, 12, "linear") == (1.0, 2)
    assert match_schedule(on, d, 12, "exponential")[0] == pytest.approx(3 / 8)
    assert planted_onsets("bfs", [1, 4]) == {1: 3, 4: 6}
    assert planted_onsets("path-merging", [1, 2, 3, 4, 5]) == {1: 2, 2: 3, 3: 4, 4: 4, 5: 5}
    with pytest.raises(ParameterError):
        schedule_step("cubic", d)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bfs", "path-merging"])
def test_constructions_get_their_verdict_and_random_weights_none(name):
    """On 2,000 balanced n=12 graphs (distances up to 5, where the schedules disagree)."""
    from algeval.models.constructions.search import bfs_search, path_merging_search, to_model
    from algeval.sim.analyses import newly_reached_check, planted_onsets, random_model_like, reach_onsets

    task = get_task("search", max_vertices=12, distribution="balanced")
    model, _ = to_model((bfs_search if name == "bfs" else path_merging_search)(task))
    batch = task.sample(2000, 0)
    info = graph_info(batch)
    acts = collect(model, batch)
    ctl = collect(random_model_like(model), batch)
    fams = ("decision.bwd", "decision.pair")
    r = reach_onsets(model, batch, acts=acts, info=info, control=ctl, families=fams)
    v = verdict({"onsets": r})
    assert v["best"] == ("BFS" if name == "bfs" else "path-merging"), v["verdict"]
    fam = "decision.bwd" if name == "bfs" else "decision.pair"
    chk = newly_reached_check(r, fam, planted_onsets(name, range(1, 6)))
    assert len(chk["bands"]) >= 4
    for d, b in chk["bands"].items():
        # issue 6 part 7: >= 0.99 from the computing layer on, clearly lower before (results/validation/README.md;
        # path merging's d = 4 has ~4 training positives per vertex pair and sits closest to the line)
        assert b["after"] >= 0.99 and b["drop"] >= 0.2, (d, b)
    assert chk["ok"]
    from algeval.sim.analyses import order_matching

    ctl2 = collect(random_model_like(model, 7), batch)
    rr = reach_onsets(None, batch, acts=ctl, info=info, control=ctl2, families=fams)
    ro = order_matching(None, batch, acts=ctl, info=info, control=ctl2, n_perm=32)
    assert verdict({"onsets": rr, "orders": ro})["best"] is None
    assert verdict({"onsets": r, "orders": order_matching(None, batch, acts=acts, info=info, control=ctl,
                                                          n_perm=32)})["best"] == v["best"]


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
    first_diff = int(np.flatnonzero((c.tokens != x.tokens).any(0))[0])
    assert not eff[:, :, :first_diff].any()  # causal attention: nothing before the rewired edge changes
    checked = 0
    for l in range(2):
        for t in range(T - 10, T):
            for h in range(2):
                mask = np.zeros((1, T, 2, 1), bool)
                mask[0, t, h] = True
                lg = np.asarray(m.run_with_patches(x.tokens, {f"blocks.{l}.attn.hook_z":
                                                              Patch(mask, cache[f"blocks.{l}.attn.hook_z"])}))
                ld = lg[np.arange(3), -1, a1] - lg[np.arange(3), -1, a2]
                np.testing.assert_allclose(ld - ld_x, eff[:, l, t, h], atol=2e-5)
                checked += 1
    assert checked == 2 * 10 * 2 and np.abs(eff).max() > 1e-3  # something moved
    # resuming each patched pass at its layer (the default) equals running it from the embedding
    full = activation_patching(m, c, x, resume=False)
    np.testing.assert_allclose(full["effect"].values, eff, atol=2e-5)
    assert full["n_runs"] == res["n_runs"] > 0


def test_attribution_patching_tracks_activation_patching():
    task, batch = search_batch(40, seed=8, max_vertices=6)
    m = small_model(task, seed=4)
    clean, corrupt, _ = corrupted_pairs(batch)
    c, x = clean[:6], corrupt[:6]
    act = activation_patching(m, c, x)["effect"].values
    ap = attribution_patching(m, c, x)
    att = ap["attribution"].values
    assert np.corrcoef(act.ravel(), att.ravel())[0, 1] > 0.5
    # the logit differences it returns are the plain runs' (same passes)
    for got, want in zip((ap["ld_clean"].values, ap["ld_corrupt"].values), logit_diffs(m, c, x)):
        np.testing.assert_allclose(got, want, atol=1e-5)
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
    from scipy.special import log_softmax

    lp = log_softmax(np.asarray(acts2.logits, np.float64), axis=-1)
    loss = -np.log(np.array([np.exp(lp[i, a[a >= 0]]).sum() for i, a in enumerate(ans)]))
    assert r["loss"] == pytest.approx(float(loss.mean()), rel=1e-4)
    sw = head_ablation_sweep(m, batch, mode="mean")["effects"]
    for l, h in ((0, 1), (1, 0)):  # layer 0: full pass; layer 1: resumed from the cached resid_pre
        one = ablate_heads(m, batch, [(l, h)], mode="mean")
        assert sw.sel(layer=l, metric="loss").values[h] == pytest.approx(one["loss"], rel=1e-5)
        assert sw.sel(layer=l, metric="accuracy").values[h] == pytest.approx(one["accuracy"], abs=1e-6)
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
    # order matching enters the verdict (its "skipped" count does not drop the section)
    assert {"order_bfs", "order_dfs", "order_path_merging"} <= {i["item"] for r in v["table"] for i in r["items"]}


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


def test_verdict_counts_only_items_that_separate_the_candidates():
    # the BFS construction's order scores (results/validation/README.md, old run): all beat chance, none separates
    o = {"order_bfs": (0.946, 0.603), "order_path_merging": (0.957, 0.631), "order_dfs": (0.977, 0.814)}
    orders = {"summary": {k: {"score": a, "chance": c, "p_perm": 1e-6} for k, (a, c) in o.items()}}
    onsets = {"summary": {"linear": {"score": 1.0, "chance": 0.482, "p": 0.003},
                          "exponential": {"score": 0.75, "chance": 0.503, "p": 0.12}}}
    v = verdict({"orders": orders})
    assert v["best"] is None and "none separates" in v["verdict"]
    row = {r["algorithm"]: r for r in v["table"]}
    assert row["DFS"]["beats_not_separating"] == 1 and row["DFS"]["verdict"] == "none"
    v = verdict({"orders": orders, "onsets": onsets})
    assert v["best"] == "BFS"
    items = {i["item"]: i for r in v["table"] for i in r["items"]}
    assert items["onset_linear"]["counts"] and not any(items[k]["counts"] for k in o)
    assert items["onset_linear"]["margin_min"] == pytest.approx((1.0 - 0.482) - (0.75 - 0.503))
    # per-example scores: the paired test decides; a large mean difference on noisy examples does not separate
    rng = np.random.default_rng(0)
    names = ["order_path_merging", "order_bfs", "order_dfs"]

    def with_examples(excess, noise, n):
        pe = np.stack([0.5 + e + noise * rng.normal(size=n) for e in excess])
        ch = np.full((3, n), 0.5)
        summ = {k: {"score": float(pe[i].mean()), "chance": 0.5, "p_perm": 1e-6} for i, k in enumerate(names)}
        return {"summary": summ, "per_example": Named(pe, ("score", "example"), {"score": names}),
                "chance_per_example": Named(ch, ("score", "example"), {"score": names})}

    v = verdict({"orders": with_examples([0.1, 0.3, 0.1], 0.05, 200)})
    assert v["best"] == "BFS" and v["table"][0]["items"][0]["p_max"] < 1e-6
    v = verdict({"orders": with_examples([0.1, 0.3, 0.1], 1.0, 6)})
    assert v["best"] is None and "none separates" in v["verdict"]


def test_analyze_cli_writes_report(tmp_path):
    from algeval.models.io import save_model

    task = get_task("search", max_vertices=6)
    m = small_model(task, seed=12)
    save_model(m, tmp_path / "m")
    rc = analyze_main([str(tmp_path / "m"), "--task", "search", "--task-opt", "max_vertices=6", "--out",
                       str(tmp_path / "out"), "--count", "48", "--perms", "8", "--no-causal"])
    assert rc == 0
    js = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"attention", "geometry", "orders", "probes", "verdict"} <= set(js) and "causal" not in js
    assert js["attention"]["per_layer"]["axes"] == ["layer", "stat"]
    assert "Verdict" in (tmp_path / "out" / "report.md").read_text()
    assert np.load(tmp_path / "out" / "arrays.npz")["geometry.reps"].shape[:2] == (48, 3)
    assert analyze_main([str(tmp_path / "m"), "--task", "search", "--task-opt", "bogus=1", "--out",
                         str(tmp_path / "o2")]) == 2


def test_event_times_and_order_matching_recognise_a_planted_bfs_wave():
    from algeval.sim.analyses import event_times, order_matching

    _, batch = search_batch(200, seed=11, max_vertices=14)
    info = graph_info(batch)
    B, V, L, D = len(batch), info.V, 6, 16
    rng = np.random.default_rng(0)
    reps = np.repeat(rng.normal(size=(B, 1, V, D)), L + 1, 1) + 0.01 * rng.normal(size=(B, L + 1, V, D)).cumsum(1)
    d = info.dist_from
    wave = (d >= 1) & (d <= L) & info.mentioned
    for b, v in zip(*np.nonzero(wave)):  # block d - 1 moves the vertex at distance d
        reps[b, d[b, v]:, v] += 5.0 * rng.normal(size=D)
    acts = _fake_acts(reps, info, L)
    tau = event_times(acts)
    assert (tau[wave] == d[wave] - 1).mean() > 0.98  # (noise alone crosses 1.5x now and then)
    assert (tau[info.mentioned & ~wave] == L).mean() > 0.9
    om = order_matching(None, batch, acts=acts, info=info, n_perm=32, control=_fake_acts(
        np.repeat(reps[:, :1], L + 1, 1) + 0.01 * rng.normal(size=reps.shape).cumsum(1), info, L))
    s = om["summary"]
    assert s["order_bfs"]["score"] > 0.99 and s["order_bfs"]["p_perm"] < 1e-3 and s["order_bfs"]["n_examples"] > 100
    assert s["schedule_bfs"]["score"] > 0.9 and s["schedule_bfs"]["score"] - s["schedule_bfs"]["chance"] > 0.2
    assert s["schedule_bfs"]["p_perm"] < 1e-3 and s["schedule_bfs"]["p_control"] < 1e-3
    assert s["schedule_path_merging"]["score"] < s["schedule_bfs"]["score"] - 0.05
    assert s["order_dfs"]["score"] < 1.0
    v = verdict({"orders": om})
    assert v["best"] == "BFS", v["verdict"]
