"""Linear probes for reference-trace variables, per layer, at node tokens and at the decision position.

**Variables.**  All are hop-threshold indicators, read off the reference
traces: for a threshold ``h >= 1``

==============  ==================================  ====================================================
relation        label                               Trace variable it equals
==============  ==================================  ====================================================
``fwd``  (x)    ``0 <= d(s, x) <= h``               ``bfs(adj, s)["visited"][h][x]`` (``s`` the decision vertex);
                                                    ``path_merging(adj)["reach"][k][s, x]`` for ``h = 2^k``
``bwd``  (x)    ``0 <= d(x, g) <= h``               ``bfs(adj.T, g)["visited"][h][x]`` (``g`` the target);
                                                    ``path_merging(adj)["reach"][k][x, g]`` for ``h = 2^k``
``pair`` (u,v)  ``0 <= d(u, v) <= h``               ``path_merging(adj)["reach"][k][u, v]`` for ``h = 2^k``
``value`` (x)   ``V_h(x) > 0``                      ``value_iteration(adj, rewards)["value"][h][x] > 0``
==============  ==================================  ====================================================

(``value`` only for tasks whose rewards are not just the goal -- CogEval
value paths; with a goal-only reward it *is* ``bwd``.)

**Sites** (the *families* ``site.relation``):

* ``node.fwd``, ``node.bwd``, ``node.value``: one row per mentioned vertex
  ``x`` of an example, features ``[r_l(x), r_l(x) * r_l(ref)]`` -- the node
  representation and its elementwise product with the reference vertex's
  (``s`` for ``fwd``, ``g`` otherwise; vertex labels are random per
  example, so a relation to ``ref`` can be linear only in the product; the
  reference vertex itself is left out); ``features="node"`` drops the product;
* ``decision.fwd``, ``decision.bwd``, ``decision.value``, ``decision.pair``:
  one row per example, features the decision-position residual ``dec_l``,
  one probe per vertex label (per label pair for ``pair``) -- labels are
  fixed tokens, so a model that keeps ``[x reaches g]`` or ``reach[u, v]``
  in label-indexed directions (a hand-built construction) is read directly.

**Probe.**  Per family and layer, multi-output ridge regression of ``+-1``
targets (all thresholds, labels and pairs at once; a row's target is 0 where
it is not defined) on features standardised on the training rows, closed
form (primal or dual, whichever is smaller), penalty ``ridge * n_train``
(``ridge = 1e-2``), so deterministic.  Each output predicts positive above
the threshold with the best balanced accuracy on its training rows (so a
feature that codes a label as a count, ``>= 1`` iff true, is read exactly).
Train on 75% of the examples, test on the held-out 25% (split by example).  **Balanced accuracy** (mean of the two
class recalls, pooled over the outputs of one threshold) on the test rows;
NaN when a class is missing.  **Boundary accuracy** at threshold ``h``: the
same, on the test entries whose *onset* (the first threshold at which the
label is true: the distance, or the first step with a positive value) is
``h`` (positives) or ``h + 1`` (negatives) -- the entries that tell
"within ``h``" from "within ``h + 1`` or more" apart, so a model that holds
reach within ``2h`` fails it.

**Controls.**  ``shuffled``: targets permuted among training rows and,
independently, among test rows (chance with its sampling noise);
``control``: the same probes on a random-weights model of the same config.

**Schedules** (the hypotheses).  Block ``l`` (layer index ``l + 1``; the
embedding is not used) should hold threshold

* ``linear`` (BFS; ``value`` for value iteration): ``h = l - o + 1`` -- one hop per block,
* ``exponential`` (path merging): ``h = 2^(l - o)`` -- reach doubling per block,

for an offset ``o >= 0`` (preamble blocks), ``h`` capped at the largest
distance.  The score of a hypothesis is the best, over families and offsets
with at least two defined points, of the mean *boundary* accuracy at its
(block, ``h``) points; the shuffled and control scores are maximised the same way, and
``chance`` is the larger of the two; ``p`` is the one-sided normal tail of
``(score - chance) / se`` with ``se`` from the binomial variance of the
recalls (points treated as independent).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from algeval.errors import ParameterError
from algeval.sim.analyses.common import Acts, GraphInfo, collect, graph_info, norm_sf, value_iteration_positive
from algeval.sim.analyses.named import Named

RIDGE = 1e-2
MAX_HOPS = 16
RELATIONS = ("fwd", "bwd", "pair", "value")
FAMILIES = ("node.fwd", "node.bwd", "node.value", "decision.fwd", "decision.bwd", "decision.value", "decision.pair")
HYPOTHESES = {"linear": ("fwd", "bwd", "pair"), "exponential": ("fwd", "bwd", "pair"), "value": ("value",)}


# --- labels ------------------------------------------------------------------------------------

def max_hops(info: GraphInfo) -> int:
    d = info.dist if info.dist is not None else np.stack([info.dist_from, info.dist_to])
    return int(max(1, min(MAX_HOPS, info.V - 1, int(d.max()) if d.size else 1)))


def hop_labels(info: GraphInfo, relation: str, H: int) -> np.ndarray:
    """``(B, V, H)`` (``pair``: ``(B, V, V, H)``) bool: the label for thresholds ``h = 1..H``."""
    h = np.arange(1, H + 1)
    if relation == "fwd":
        d = info.dist_from[..., None]
    elif relation == "bwd":
        d = info.dist_to[..., None]
    elif relation == "pair":
        d = info.dist[..., None]
    elif relation == "value":
        vi = value_iteration_positive(info.adj, info.rewards, H)  # (H + 1, B, V)
        return np.transpose(vi[1:], (1, 2, 0))
    else:
        raise ParameterError("relation", relation, f"must be one of {', '.join(RELATIONS)}")
    return (d >= 0) & (d <= h)


NEVER = 1 << 30


def onsets(labels: np.ndarray) -> np.ndarray:
    """First threshold ``h`` (1-based) at which a monotone label becomes true; ``NEVER`` if it never does
    (unreachable entries are never boundary entries)."""
    return np.where(labels.any(-1), np.argmax(labels, axis=-1) + 1, NEVER)


def _ref(info: GraphInfo, relation: str) -> np.ndarray:
    return info.decision if relation == "fwd" else info.target


def _row_valid(info: GraphInfo, relation: str) -> np.ndarray:
    """``(B,)``: examples for which the relation is defined."""
    if relation == "bwd":
        return info.target >= 0
    if relation == "value":
        rq = info.reward_query if info.reward_query is not None else np.zeros(info.B, bool)
        return rq & (info.rewards != 0).any(-1)
    return np.ones(info.B, bool)


def _vertex_valid(info: GraphInfo, relation: str) -> np.ndarray:
    """``(B, V)``: mentioned vertices other than the reference vertex, in valid examples."""
    ok = info.mentioned & _row_valid(info, relation)[:, None]
    if relation in ("fwd", "bwd"):
        ok &= np.arange(info.V)[None, :] != _ref(info, relation)[:, None]
    return ok


# --- the probe ------------------------------------------------------------------------------------

def _standardise(X):
    X = X.astype(np.float64)
    mu = X.mean(0)
    sd = X.std(0)
    sd = np.where(sd > 1e-9 * max(1.0, float(np.abs(X).max(initial=0.0))), sd, 1.0)
    return mu, sd


def best_thresholds(S: np.ndarray, Y: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Per column, the threshold on ``S (n, K)`` with the best training balanced accuracy.

    Predict positive where ``S > thr``; candidates are midpoints between consecutive sorted
    scores (and +-inf); ties go to the candidate nearest the median of the two class means.
    """
    n, K = S.shape
    o = np.argsort(S, axis=0, kind="stable")
    Ss = np.take_along_axis(S, o, 0)
    pos = np.take_along_axis(M & Y, o, 0).astype(np.float64)
    neg = np.take_along_axis(M & ~Y, o, 0).astype(np.float64)
    P, N = pos.sum(0), neg.sum(0)
    # threshold after the j-th sorted score (j = 0..n): negatives predicted for rows < j
    tn = np.vstack([np.zeros((1, K)), np.cumsum(neg, 0)])
    fn = np.vstack([np.zeros((1, K)), np.cumsum(pos, 0)])
    with np.errstate(invalid="ignore", divide="ignore"):
        bal = 0.5 * ((P - fn) / P + tn / N)
    bal = np.where(np.isfinite(bal), bal, -1.0)
    # candidate thresholds: below everything, midpoints, above everything
    mids = np.vstack([Ss[:1] - 1.0, 0.5 * (Ss[1:] + Ss[:-1]), Ss[-1:] + 1.0]) if n else np.zeros((1, K))
    # only cut between distinct scores
    distinct = np.vstack([np.ones((1, K), bool), Ss[1:] > Ss[:-1], np.ones((1, K), bool)]) if n else np.ones((1, K), bool)
    bal = np.where(distinct, bal, -1.0)
    j = np.argmax(bal, axis=0)
    thr = mids[j, np.arange(K)]
    return np.where((P > 0) & (N > 0), thr, np.inf)


def fit_ridge(X: np.ndarray, Y: np.ndarray, M: np.ndarray, ridge: float = RIDGE) -> dict:
    """Multi-output ridge on rows ``X (n, D)``, targets ``Y (n, K)`` bool defined where ``M (n, K)``.

    Returns the standardisation, weights, intercepts and per-output thresholds (module docstring).
    """
    X = np.asarray(X, np.float64)
    mu, sd = _standardise(X)
    Z = (X - mu) / sd
    T = np.where(Y, 1.0, -1.0)
    ybar = (T * M).sum(0) / np.maximum(M.sum(0), 1)
    Tc = np.where(M, T - ybar, 0.0)
    n, D = Z.shape
    lam = ridge * max(n, 1)
    if n >= D:
        beta = np.linalg.solve(Z.T @ Z + lam * np.eye(D), Z.T @ Tc)
    else:
        beta = Z.T @ np.linalg.solve(Z @ Z.T + lam * np.eye(n), Tc)
    S = Z @ beta + ybar
    return {"mu": mu, "sd": sd, "beta": beta, "ybar": ybar, "thr": best_thresholds(S, Y, M)}


def predict(fit: dict, X: np.ndarray) -> np.ndarray:
    return ((X - fit["mu"]) / fit["sd"]) @ fit["beta"] + fit["ybar"] > fit["thr"]


def balanced_accuracy(pred: np.ndarray, y: np.ndarray, m: np.ndarray | None = None) -> tuple[float, float]:
    """``(balanced accuracy, its standard error)`` over entries ``m``; NaN when a class is missing."""
    m = np.ones(y.shape, bool) if m is None else m
    n1, n0 = int((y & m).sum()), int((~y & m).sum())
    if n1 == 0 or n0 == 0:
        return float("nan"), float("nan")
    r1, r0 = (pred & y & m).sum() / n1, (~pred & ~y & m).sum() / n0
    se = 0.5 * math.sqrt(r1 * (1 - r1) / n1 + r0 * (1 - r0) / n0)
    return float(0.5 * (r1 + r0)), se


def probe_accuracy(X, y, train, test, ridge: float = RIDGE, shuffle_seed: int | None = None) -> tuple[float, float]:
    """One binary probe: fit on ``train`` rows, balanced accuracy on ``test`` rows (``y (n,)`` bool).

    With ``shuffle_seed`` the labels are permuted among the training rows and, independently,
    among the test rows.
    """
    y = np.asarray(y, bool).copy()
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        for part in (train, test):
            idx = np.flatnonzero(part)
            y[idx] = y[idx][rng.permutation(len(idx))]
    if y[train].all() or not y[train].any() or not test.any():
        return float("nan"), float("nan")
    f = fit_ridge(X[train], y[train, None], np.ones((train.sum(), 1), bool), ridge)
    return balanced_accuracy(predict(f, X[test])[:, 0], y[test])


def split(B: int, seed: int = 0, test_frac: float = 0.25) -> np.ndarray:
    """``(B,)`` bool: the held-out examples."""
    rng = np.random.default_rng(seed)
    k = min(B - 1, max(1, int(round(B * test_frac))))
    test = np.zeros(B, bool)
    test[rng.permutation(B)[:k]] = True
    return test


def _family_rows(fam: str, acts: Acts, info: GraphInfo, H: int, pair_features: bool):
    """Features ``R (n, L1, D')``, targets ``Y (n, K)``, mask ``M (n, K)``, onsets ``O (n, K)``,
    the example of each row ``ex (n,)`` and the threshold index of each output ``hk (K,)``."""
    site, rel = fam.split(".")
    lab = hop_labels(info, rel, H)
    ons = onsets(lab)
    if site == "node":
        ok = _vertex_valid(info, rel)
        eb, ev = np.nonzero(ok)
        Y = lab[eb, ev]  # (n, H)
        O = np.repeat(ons[eb, ev][:, None], H, axis=1)
        M = np.ones_like(Y, bool)
        R = acts.reps[eb, :, ev].astype(np.float64)  # (n, L1, D)
        if pair_features:
            ref = _ref(info, rel)[eb]
            R = np.concatenate([R, R * acts.reps[eb, :, np.maximum(ref, 0)]], -1)
        return R, Y, M, O, eb, np.arange(H)
    if acts.dec is None:
        raise ParameterError("acts", "without dec", "decision-site probes need Acts.dec (use collect)")
    rows = np.flatnonzero(_row_valid(info, rel))
    n = len(rows)
    if rel == "pair":
        V = info.V
        m = info.mentioned[rows]
        pm = m[:, :, None] & m[:, None, :] & ~np.eye(V, dtype=bool)[None]
        Y = lab[rows].reshape(n, V * V * H)
        O = np.repeat(ons[rows].reshape(n, V * V), H, axis=1)
        M = np.repeat(pm.reshape(n, V * V), H, axis=1)
        hk = np.tile(np.arange(H), V * V)
    else:
        ok = _vertex_valid(info, rel)[rows]
        Y = lab[rows].reshape(n, -1)  # (n, V * H), output (x, h)
        O = np.repeat(ons[rows], H, axis=1)
        M = np.repeat(ok, H, axis=1)
        hk = np.tile(np.arange(H), info.V)
    return acts.dec[rows].astype(np.float64), Y, M, O, rows, hk


def _probe_family(R, Y, M, O, ex, hk, test_ex, H, ridge, shuffle_seed=None):
    """``(acc, se, boundary acc, boundary se)``, each ``(L1, H)``, for one family."""
    L1 = R.shape[1]
    te = test_ex[ex]
    tr = ~te
    Y, M, O = Y.copy(), M.copy(), O.copy()
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        for part in (tr, te):
            idx = np.flatnonzero(part)
            p = idx[rng.permutation(len(idx))]
            Y[idx], M[idx], O[idx] = Y[p], M[p], O[p]
    out = [np.full((L1, H), np.nan) for _ in range(4)]
    if tr.sum() < 2 or te.sum() < 1:
        return tuple(out)
    Yt, Mt, Ot = Y[te], M[te], O[te]
    for i in range(L1):
        f = fit_ridge(R[tr, i], Y[tr], M[tr], ridge)
        P = predict(f, R[te, i])
        for h in range(H):
            k = hk == h
            out[0][i, h], out[1][i, h] = balanced_accuracy(P[:, k], Yt[:, k], Mt[:, k])
            edge = Mt[:, k] & ((Ot[:, k] == h + 1) | (Ot[:, k] == h + 2))
            out[2][i, h], out[3][i, h] = balanced_accuracy(P[:, k], Yt[:, k], edge)
    return tuple(out)


def _schedule_points(hyp: str, L: int, H: int, o: int) -> list[tuple[int, int]]:
    """(layer index, threshold index) points of a hypothesis with offset ``o``."""
    pts = []
    for l in range(o, L):
        k = l - o
        h = k + 1 if hyp in ("linear", "value") else 2 ** k
        pts.append((l + 1, min(h, H) - 1))
    return pts


def _best_schedule(acc, se, fams, hyp, L, H):
    """Best (family, offset) by mean accuracy at the hypothesis's points."""
    best = {"score": float("nan"), "se": float("nan"), "family": None, "offset": None, "points": 0}
    for f in fams:
        for o in range(0, max(L - 1, 1)):
            pts = [(i, h) for i, h in _schedule_points(hyp, L, H, o) if np.isfinite(acc[f][i, h])]
            if len(pts) < 2:
                continue
            a = np.array([acc[f][i, h] for i, h in pts])
            s = np.array([se[f][i, h] for i, h in pts])
            sc = float(a.mean())
            if not (sc <= best["score"]):  # NaN-safe max
                best = {"score": sc, "se": float(np.sqrt(np.nansum(s ** 2)) / len(pts)), "family": f, "offset": o,
                        "points": len(pts)}
    return best


def probes(model, batch, *, acts: Acts | None = None, info: GraphInfo | None = None, control: Acts | None = None,
           families=None, ridge: float = RIDGE, seed: int = 0, test_frac: float = 0.25,
           features: str = "pair") -> dict:
    """Probe accuracy per family, layer and hop threshold, with controls and schedule scores.

    Returns ``accuracy``, ``boundary``, ``shuffled``, ``shuffled_boundary``, [``control``,
    ``control_boundary``] (Named: family, layer, hops; balanced accuracy), ``n_test`` (Named:
    family) and ``summary[hypothesis]`` for ``linear``, ``exponential`` and ``value``:
    ``{score, chance, p, family, offset, points, shuffled, control}``.
    """
    acts = acts if acts is not None else collect(model, batch)
    info = info if info is not None else graph_info(batch)
    if features not in ("node", "pair"):
        raise ParameterError("features", features, "must be 'node' or 'pair'")
    H = max_hops(info)
    L = acts.n_layers
    fams = [f for f in (families or FAMILIES) if f in FAMILIES]
    fams = [f for f in fams if _row_valid(info, f.split(".")[1]).any()]
    fams = [f for f in fams if not (f.startswith("decision") and acts.dec is None)]
    test_ex = split(len(batch), seed, test_frac)
    keys = ("acc", "se", "bnd", "se_bnd")
    res = {f"{w}{k}": {} for w in ("", "sh_", "ctl_") for k in keys}
    ntest = {}
    for j, f in enumerate(fams):
        R, Y, M, O, ex, hk = _family_rows(f, acts, info, H, features == "pair")
        ntest[f] = int(test_ex[ex].sum())
        for k, v in zip(keys, _probe_family(R, Y, M, O, ex, hk, test_ex, H, ridge)):
            res[k][f] = v
        for k, v in zip(keys, _probe_family(R, Y, M, O, ex, hk, test_ex, H, ridge, shuffle_seed=seed + 7919 * j)):
            res["sh_" + k][f] = v
        if control is not None:
            Rc = _family_rows(f, control, info, H, features == "pair")[0]
            for k, v in zip(keys, _probe_family(Rc, Y, M, O, ex, hk, test_ex, H, ridge)):
                res["ctl_" + k][f] = v
    coords = {"family": fams, "layer": acts.layer_coords, "hops": list(range(1, H + 1))}

    def named(d):
        return Named(np.stack([d[f] for f in fams]) if fams else np.zeros((0, L + 1, H)),
                     ("family", "layer", "hops"), coords)

    out = {"accuracy": named(res["acc"]), "boundary": named(res["bnd"]), "shuffled": named(res["sh_acc"]),
           "shuffled_boundary": named(res["sh_bnd"]),
           "n_test": Named(np.array([ntest[f] for f in fams]), ("family",), {"family": fams}), "max_hops": H}
    if control is not None:
        out["control"] = named(res["ctl_acc"])
        out["control_boundary"] = named(res["ctl_bnd"])
    summary = {}
    for hyp, rels in HYPOTHESES.items():
        fs = [f for f in fams if f.split(".")[1] in rels]
        m = _best_schedule(res["bnd"], res["se_bnd"], fs, hyp, L, H)
        sh = _best_schedule(res["sh_bnd"], res["sh_se_bnd"], fs, hyp, L, H)
        ct = _best_schedule(res["ctl_bnd"], res["ctl_se_bnd"], fs, hyp, L, H) if control is not None else None
        chances = [c for c in (sh, ct) if c is not None and np.isfinite(c["score"])]
        ch = max(chances, key=lambda c: c["score"]) if chances else None
        score, chance = m["score"], (ch["score"] if ch else float("nan"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            var = np.nan_to_num(m["se"]) ** 2 + (np.nan_to_num(ch["se"]) ** 2 if ch else 0.0)
        if np.isfinite(score) and np.isfinite(chance):
            z = (score - chance) / math.sqrt(var) if var > 0 else (np.inf if score > chance else 0.0)
            p = float(norm_sf(z)) if np.isfinite(z) else 0.0
        else:
            p = float("nan")
        summary[hyp] = {"score": score, "chance": chance, "p": p, "family": m["family"], "offset": m["offset"],
                        "points": m["points"], "shuffled": sh["score"],
                        "control": None if ct is None else ct["score"]}
    out["summary"] = summary
    return out
