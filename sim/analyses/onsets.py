"""Newly-reached probes and their onset layers: does reachability grow one hop per block, or double?

BFS and path merging both end up holding reachability; they differ in *when*
each vertex becomes reached.  After block ``l`` (offset ``c`` preamble blocks)

* BFS (linear schedule) has reached every vertex within ``l - c + 1`` hops,
* path merging (exponential schedule) every vertex within ``2^(l - c)`` hops,

so a vertex at distance ``d`` is *newly reached* at block

    lambda_linear(d) = c + d - 1,        lambda_exponential(d) = c + ceil(log2 d).

With the offset free, the two agree on ``d = 1, 2, 3`` (steps 0, 1, 2 after
the first) and disagree from ``d = 4`` on; only distances ``>= 4`` tell them
apart.  (Scoring "is reach within ``h`` decodable where the schedule says"
on all (layer, ``h``) points mixes the few points where they disagree with
many where they agree -- the old probe summary of
:mod:`~algeval.sim.analyses.probes`, kept there as a description.)

**Probes of newly reached vertices.**  For a relation (``fwd``: from the
decision vertex, ``bwd``: to the target, ``pair``: all pairs; see
:mod:`~algeval.sim.analyses.probes` for the sites ``node`` and
``decision``) and a distance ``d``, the probe separates the entries at
distance exactly ``d`` (positives) from the entries that are never reached
(negatives: unreachable).  This label is monotone in depth for both
algorithms: once a vertex is reached it stays reached, so its probe should be
at chance-or-correlates before the block that reaches it and exact from that
block on.  Per family and layer one ridge regression of the ``+-1``
"reachable" target (features standardised on the training rows; penalty
``lambda`` chosen from ``n * 10^{-4..2}`` by exact leave-one-out error on the
training rows, closed form from one eigendecomposition, so it works with
fewer rows than dimensions) gives a score per entry; per distance ``d`` a
threshold (pooled over a family's outputs, best balanced accuracy on the
training entries of that band) turns it into the band's probe.  Balanced
accuracy ``A[layer, d]`` on the held-out examples (25%), NaN unless the test
set has ``>= 10`` positives and negatives.

For ``fwd`` the target and for ``bwd`` the decision vertex are left out, and
for ``pair`` every pair from the decision vertex or into the target: these are
reachable by construction of the task (the decision vertex reaches the goal)
and named by the prompt's tokens, so they are decodable from the embedding on
(on the balanced distribution the decision vertex is the only one at the
largest distances).

**Onsets.**  Per band, the least-squares single step over layers ``0..L``
(0 = embedding): split ``k`` maximising ``k (L+1-k)/(L+1) (mean A[k:] -
mean A[:k])^2``.  The band has an onset at layer index ``k`` (block ``k - 1``)
iff the step is up, ``>= 0.1`` and ``>= 3`` standard errors (errors of the
worst layer on each side).

**Schedule score.**  For a schedule and offset, the fraction of a family's
defined bands whose onset is exactly ``lambda(d) + 1`` (layer index).  A
family counts only if it has a defined band ``d >= 4`` (where the schedules
disagree).  The score of a schedule is the best over families and offsets.
Null: onsets drawn uniformly over layer indices ``1..L`` for every defined
band of every counted family (2,000 draws, fixed seed), scored the same way;
``p = (1 + #{null >= score}) / 2001``.  ``chance`` is the largest of the null
mean, the same score with labels shuffled among training rows and among test
rows, and on a random-weights control model.
"""

from __future__ import annotations

import math

import numpy as np

from algeval.errors import ParameterError
from algeval.sim.analyses.common import Acts, GraphInfo, collect, graph_info
from algeval.sim.analyses.named import Named
from algeval.sim.analyses.probes import _row_valid, _vertex_valid, _ref, balanced_accuracy, best_thresholds, split

FAMILIES = ("node.fwd", "node.bwd", "decision.fwd", "decision.bwd", "decision.pair")
SCHEDULES = ("linear", "exponential")
RIDGE_GRID = 10.0 ** np.arange(-4, 3)
MIN_CLASS = 10
MIN_STEP = 0.1
STEP_Z = 3.0
DIVERGE = 4          # the first distance at which the two schedules disagree
NODE_ROWS = 1500     # training rows kept for node families (the Gram matrix is rows x (2 d_model)^2)
N_NULL = 2000


def schedule_step(schedule: str, d) -> np.ndarray:
    """Blocks after the first at which distance ``d >= 1`` is newly reached: ``d - 1`` or ``ceil(log2 d)``."""
    d = np.asarray(d, np.int64)
    if schedule == "linear":
        return d - 1
    if schedule == "exponential":
        return np.ceil(np.log2(np.maximum(d, 1))).astype(np.int64)
    raise ParameterError("schedule", schedule, f"must be one of {', '.join(SCHEDULES)}")


def planted_onsets(construction: str, bands) -> dict:
    """Layer index (block + 1) at which a search construction of :mod:`algeval.models.constructions.search`
    first holds distance ``d`` in its reach variable: BFS (``reachg``, relation ``bwd``) at block ``d + 1``,
    path merging (``reach``, relation ``pair``) at block ``1 + ceil(log2 d)``."""
    if construction == "bfs":
        return {int(d): int(d) + 2 for d in bands}
    if construction == "path-merging":
        return {int(d): 2 + int(schedule_step("exponential", d)) for d in bands}
    raise ParameterError("construction", construction, "must be 'bfs' or 'path-merging'")


# --- rows ----------------------------------------------------------------------------------------

def _rows(fam: str, acts: Acts, info: GraphInfo, pair_features: bool):
    """Features ``R (n, L1, D)``, distances ``dist (n, K)`` (-1 unreachable), mask ``M (n, K)``, example ``ex (n,)``."""
    site, rel = fam.split(".")
    d = {"fwd": info.dist_from, "bwd": info.dist_to, "pair": info.dist}[rel]
    if site == "node":
        eb, ev = np.nonzero(_valid(info, rel))
        R = acts.reps[eb, :, ev]
        if pair_features:
            R = np.concatenate([R, R * acts.reps[eb, :, np.maximum(_ref(info, rel)[eb], 0)]], -1)
        return R, d[eb, ev][:, None], np.ones((len(eb), 1), bool), eb
    if acts.dec is None:
        raise ParameterError("acts", "without dec", "decision-site probes need Acts.dec (use collect)")
    rows = np.flatnonzero(_row_valid(info, rel))
    n, V = len(rows), info.V
    if rel == "pair":
        m = info.mentioned[rows]
        M = (m[:, :, None] & m[:, None, :] & ~np.eye(V, dtype=bool)[None]).reshape(n, V * V)
        dist = d[rows].reshape(n, V * V)
        M = M.reshape(n, V, V)
        M[np.arange(n), info.decision[rows], :] = False  # pairs from the vertex the prompt names last
        t = info.target[rows]
        M[np.flatnonzero(t >= 0), :, t[t >= 0]] = False  # pairs into the target
        M = M.reshape(n, V * V)
    else:
        M, dist = _valid(info, rel)[rows], d[rows]
    return acts.dec[rows], dist, M, rows


def _valid(info: GraphInfo, rel: str) -> np.ndarray:
    """``(B, V)`` entries of a vertex relation: mentioned, not the reference vertex and not the other end of
    the query (``fwd``: the target, ``bwd``: the decision vertex), which is reachable by construction of the
    task and named by the prompt's tokens."""
    ok = _vertex_valid(info, rel).copy()
    other = info.target if rel == "fwd" else info.decision
    has = other >= 0
    ok[np.flatnonzero(has), other[has]] = False
    return ok


# --- the probe -----------------------------------------------------------------------------------

def ridge_loo(X: np.ndarray, Y: np.ndarray, M: np.ndarray, grid=RIDGE_GRID) -> dict:
    """Multi-output ridge of ``+-1`` targets ``Y (n, K)`` (defined where ``M``) on standardised ``X (n, D)``,
    penalty ``lambda = g n`` with ``g`` from ``grid`` minimising the exact leave-one-out squared error
    ``sum_{i,k in M} ((t_ik - yhat_ik) / (1 - H_ii))^2`` (``H`` the hat matrix; undefined targets are set to
    the output's mean).  Returns ``mu, sd, beta, ybar, lam``."""
    X = np.asarray(X, np.float64)
    n, D = X.shape
    mu = X.mean(0)
    sd = X.std(0)
    sd = np.where(sd > 1e-9 * max(1.0, float(np.abs(X).max(initial=0.0))), sd, 1.0)
    Z = (X - mu) / sd
    T = np.where(Y, 1.0, -1.0)
    ybar = (T * M).sum(0) / np.maximum(M.sum(0), 1)
    Tc = np.where(M, T - ybar, 0.0)
    if n >= D:
        s2, W = np.linalg.eigh(Z.T @ Z)
        P = Z @ W                      # (n, D): Z in the eigenbasis
        PT = P.T @ Tc
    else:
        s2, P = np.linalg.eigh(Z @ Z.T)  # P = U (n, n)
        PT = P.T @ Tc
    s2 = np.maximum(s2, 0.0)
    P2 = P * P
    best = (np.inf, None)
    for g in grid:
        lam = g * max(n, 1)
        shrink = 1.0 / (s2 + lam) if n >= D else s2 / (s2 + lam)
        fitted = P @ (PT * shrink[:, None])
        h = np.minimum(P2 @ shrink, 1 - 1e-9)
        err = float((((Tc - fitted) / (1 - h)[:, None]) ** 2 * M).sum())
        if err < best[0]:
            best = (err, lam)
    lam = best[1]
    beta = W @ (PT / (s2 + lam)[:, None]) if n >= D else Z.T @ (P @ (PT / (s2 + lam)[:, None]))
    return {"mu": mu, "sd": sd, "beta": beta, "ybar": ybar, "lam": lam}


def _score(fit, X):
    return ((X - fit["mu"]) / fit["sd"]) @ fit["beta"] + fit["ybar"]


def band_accuracy(R, dist, M, ex, test_ex, bands, seed: int = 0, shuffle_seed: int | None = None,
                  max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(A, SE)`` each ``(L1, len(bands))``: balanced accuracy of the newly-reached probe of every band
    at every layer (module docstring), and ``info`` (chosen penalties, test class counts)."""
    L1 = R.shape[1]
    te = test_ex[ex]
    tr = ~te
    dist, M = dist.copy(), M.copy()
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        for part in (tr, te):
            idx = np.flatnonzero(part)
            p = idx[rng.permutation(len(idx))]
            dist[idx], M[idx] = dist[p], M[p]
    tri = np.flatnonzero(tr)
    if max_rows is not None and len(tri) > max_rows:
        tri = np.sort(np.random.default_rng(seed + 1).choice(tri, max_rows, replace=False))
    tei = np.flatnonzero(te)
    A = np.full((L1, len(bands)), np.nan)
    S_E = np.full((L1, len(bands)), np.nan)
    Mtr, Mte, dtr, dte = M[tri], M[tei], dist[tri], dist[tei]
    neg_tr, neg_te = Mtr & (dtr < 0), Mte & (dte < 0)
    counts = {int(b): (int((Mte & (dte == b)).sum()), int(neg_te.sum())) for b in bands}
    lams = []
    if len(tri) < 2 or not len(tei):
        return A, S_E, {"lambda": lams, "test_counts": counts}
    for i in range(L1):
        fit = ridge_loo(R[tri, i], Mtr & (dtr > 0), Mtr & (dtr != 0))
        lams.append(fit["lam"])
        s_tr, s_te = _score(fit, R[tri, i]), _score(fit, R[tei, i])
        for j, b in enumerate(bands):
            pos_tr, pos_te = Mtr & (dtr == b), Mte & (dte == b)
            if pos_tr.sum() < 1 or not neg_tr.any() or min(counts[int(b)]) < MIN_CLASS:
                continue
            keep = pos_tr | neg_tr
            thr = best_thresholds(s_tr[keep][:, None], pos_tr[keep][:, None], np.ones((keep.sum(), 1), bool))[0]
            A[i, j], S_E[i, j] = balanced_accuracy(s_te > thr, pos_te, pos_te | neg_te)
    return A, S_E, {"lambda": lams, "test_counts": counts}


# --- onsets and schedules ----------------------------------------------------------------------------

def step_fit(a: np.ndarray, se: np.ndarray) -> tuple[int, float, float]:
    """``(onset, step, z)`` of the least-squares single step of ``a`` over layers; onset ``-1`` when there is
    no step up of ``>= MIN_STEP`` and ``>= STEP_Z`` standard errors (or ``a`` has NaNs)."""
    L1 = len(a)
    if L1 < 2 or not np.isfinite(a).all():
        return -1, float("nan"), float("nan")
    best = (-1.0, 0, 0.0)
    for k in range(1, L1):
        c = float(a[k:].mean() - a[:k].mean())
        red = k * (L1 - k) / L1 * c * c
        if red > best[0]:
            best = (red, k, c)
    _, k, c = best
    s = math.sqrt(float(np.nanmax(se[k:])) ** 2 + float(np.nanmax(se[:k])) ** 2)
    z = c / s if s > 0 else (math.inf if c > 0 else 0.0)
    return (k if c >= MIN_STEP and z >= STEP_Z else -1), c, z


def match_schedule(onset: np.ndarray, bands: np.ndarray, L: int, schedule: str) -> tuple[float, int]:
    """Best fraction of bands whose onset (layer index) equals ``c + step(d) + 1``, and its offset ``c``."""
    best = (0.0, 0)
    if not len(bands):
        return float("nan"), -1
    g = schedule_step(schedule, bands)
    for c in range(L):
        f = float(((onset == c + g + 1) & (onset >= 1)).mean())
        if f > best[0]:
            best = (f, c)
    return best


def _best(onsets: dict, bands: dict, L: int, schedule: str) -> dict:
    out = {"score": float("nan"), "family": None, "offset": None, "matched": 0, "bands": 0}
    for f in onsets:
        s, c = match_schedule(onsets[f], bands[f], L, schedule)
        if np.isfinite(s) and not (s <= out["score"]):
            out = {"score": s, "family": f, "offset": c, "matched": int(round(s * len(bands[f]))),
                   "bands": len(bands[f])}
    return out


def null_scores(n_bands: list[int], L: int, schedule: str, n: int = N_NULL, seed: int = 0) -> np.ndarray:
    """Scores of uniformly random onsets (layer indices ``1..L``) for families with ``n_bands`` bands
    ``1..n_b`` each -- the bands actually defined are passed through ``n_bands`` as arrays."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    for b in n_bands:
        b = np.asarray(b)
        g = schedule_step(schedule, b)
        on = rng.integers(1, L + 1, (n, len(b)))
        cs = np.arange(L)[:, None, None]
        hit = (on[None] == cs + g[None, None] + 1).mean(-1)  # (L, n)
        out = np.maximum(out, hit.max(0))
    return out


def reach_onsets(model, batch, *, acts: Acts | None = None, info: GraphInfo | None = None,
                 control: Acts | None = None, families=None, seed: int = 0, test_frac: float = 0.25,
                 features: str = "pair", n_null: int = N_NULL) -> dict:
    """Newly-reached probes per family, layer and distance; onsets; linear / exponential schedule scores.

    Returns ``accuracy`` (Named: family, layer, distance; balanced accuracy), ``se``, ``shuffled``,
    [``control``], ``onset`` (Named: family, distance; layer index, -1 none), ``step`` (its size),
    ``counted`` (families with a defined band ``>= 4``), ``lambda`` (penalty per family and layer) and
    ``summary[schedule]``: ``{score, chance, p, family, offset, matched, bands, null, shuffled, control}``.
    """
    acts = acts if acts is not None else collect(model, batch)
    info = info if info is not None else graph_info(batch)
    if features not in ("node", "pair"):
        raise ParameterError("features", features, "must be 'node' or 'pair'")
    fams = [f for f in (families or FAMILIES) if f in FAMILIES]
    fams = [f for f in fams if _row_valid(info, f.split(".")[1]).any()]
    fams = [f for f in fams if not (f.startswith("decision") and acts.dec is None)]
    L = acts.n_layers
    test_ex = split(len(batch), seed, test_frac)
    dmax = int(max(1, min(info.V - 1, info.dist.max() if info.dist is not None else info.V - 1)))
    bands = np.arange(1, dmax + 1)
    acc, se, sh, sh_se, ctl, ctl_se, lam = {}, {}, {}, {}, {}, {}, {}
    for j, f in enumerate(fams):
        R, dist, M, ex = _rows(f, acts, info, features == "pair")
        cap = NODE_ROWS if f.startswith("node") else None
        acc[f], se[f], meta = band_accuracy(R, dist, M, ex, test_ex, bands, seed, max_rows=cap)
        lam[f] = meta["lambda"]
        sh[f], sh_se[f], _ = band_accuracy(R, dist, M, ex, test_ex, bands, seed, shuffle_seed=seed + 7919 * (j + 1),
                                           max_rows=cap)
        if control is not None:
            Rc = _rows(f, control, info, features == "pair")[0]
            ctl[f], ctl_se[f], _ = band_accuracy(Rc, dist, M, ex, test_ex, bands, seed, max_rows=cap)

    def onsets_of(A, S):
        on, st, ok = {}, {}, {}
        for f in fams:
            defined = np.isfinite(A[f]).all(0)
            res = [step_fit(A[f][:, j], S[f][:, j]) if defined[j] else (-1, np.nan, np.nan) for j in range(len(bands))]
            on[f] = np.array([r[0] for r in res])
            st[f] = np.array([r[1] for r in res])
            ok[f] = defined
        return on, st, ok

    on, st, ok = onsets_of(acc, se)
    counted = [f for f in fams if (ok[f] & (bands >= DIVERGE)).any()]
    sel_on = {f: on[f][ok[f]] for f in counted}
    sel_b = {f: bands[ok[f]] for f in counted}
    sh_on = onsets_of(sh, sh_se)[0]
    ctl_on = onsets_of(ctl, ctl_se)[0] if control is not None else None
    summary = {}
    for k, s in enumerate(SCHEDULES):
        m = _best(sel_on, sel_b, L, s)
        nul = null_scores([sel_b[f] for f in counted], L, s, n_null, seed + 101 * k) if counted else np.zeros(1)
        shs = _best({f: sh_on[f][ok[f]] for f in counted}, sel_b, L, s)["score"]
        cts = _best({f: ctl_on[f][ok[f]] for f in counted}, sel_b, L, s)["score"] if ctl_on is not None else None
        chances = [float(nul.mean())] + [x for x in (shs, cts) if x is not None and np.isfinite(x)]
        score = m["score"]
        p = float((1 + (nul >= score - 1e-12).sum()) / (1 + len(nul))) if np.isfinite(score) else float("nan")
        summary[s] = {**m, "chance": max(chances) if counted else float("nan"), "p": p,
                      "null": float(nul.mean()) if counted else float("nan"), "shuffled": shs, "control": cts}
    coords = {"family": fams, "layer": acts.layer_coords, "distance": bands.tolist()}

    def named(d):
        return Named(np.stack([d[f] for f in fams]) if fams else np.zeros((0, L + 1, len(bands))),
                     ("family", "layer", "distance"), coords)

    fd = {"family": fams, "distance": bands.tolist()}
    out = {"accuracy": named(acc), "se": named(se), "shuffled": named(sh),
           "onset": Named(np.array([on[f] for f in fams]).reshape(len(fams), len(bands)), ("family", "distance"), fd),
           "step": Named(np.array([st[f] for f in fams]).reshape(len(fams), len(bands)), ("family", "distance"), fd),
           "counted": counted, "lambda": {f: [float(x) for x in lam[f]] for f in fams}, "summary": summary,
           "rule": f"onset: step >= {MIN_STEP} and >= {STEP_Z} SE; families need a band >= {DIVERGE}; "
                   f"null: uniform onsets, {n_null} draws"}
    if control is not None:
        out["control"] = named(ctl)
    return out


def newly_reached_check(res: dict, family: str, expected: dict, level: float = 0.99) -> dict:
    """Per distance ``d`` with expected onset layer index ``expected[d]``: ``after`` (lowest accuracy from
    that layer on), ``before`` (highest before it), ``drop = after - before``; ``ok`` iff every ``after``
    is ``>= level``.  ``res`` is :func:`reach_onsets`' result."""
    A = res["accuracy"].sel(family=family).values  # (L1, distance)
    ds = res["accuracy"].coords["distance"]
    rows = {}
    for d, k in expected.items():
        if d not in ds:
            continue
        a = A[:, ds.index(d)]
        if not np.isfinite(a).all():
            continue
        rows[int(d)] = {"layer": int(k), "after": float(a[k:].min()), "before": float(a[:k].max()) if k else float("nan"),
                        "drop": float(a[k:].min() - a[:k].max()) if k else float("nan")}
    return {"family": family, "level": level, "bands": rows,
            "ok": bool(rows) and all(r["after"] >= level for r in rows.values())}
