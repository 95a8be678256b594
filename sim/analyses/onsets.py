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
distance exactly ``d`` (positives: newly reached at the step that reaches
``d``) from the entries that are never reached (negatives: unreachable).
This label is monotone in depth for both algorithms: once a vertex is
reached it stays reached, so its probe should be at chance-or-correlates
before the block that reaches it and exact from that block on.  The probe
is :func:`~algeval.sim.analyses.binprobe.layer_probe` (one class-balanced
logistic probe per distance bin and output, penalties and design chosen on
a validation split of the training examples) on features standardised on
the training rows.  Balanced accuracy ``A[layer, d]`` on the held-out
examples (25%), NaN unless ``>= 10`` covered test positives and negatives.

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
from algeval.sim.analyses.binprobe import FIT, TEST, UNUSED, VAL, layer_probe
from algeval.sim.analyses.probes import _row_valid, _vertex_valid, _ref, split

FAMILIES = ("node.fwd", "node.bwd", "decision.fwd", "decision.bwd", "decision.pair")
SCHEDULES = ("linear", "exponential")
VAL_FRAC = 0.2       # validation share of the training examples (penalties and design are chosen on it)
NODE_ROWS = 4000     # fit + validation rows kept for node families (one row per vertex: ~7 per example)
MIN_STEP = 0.1
STEP_Z = 3.0
DIVERGE = 4          # the first distance at which the two schedules disagree
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

def parts(B: int, seed: int = 0, test_frac: float = 0.25, val_frac: float = VAL_FRAC) -> np.ndarray:
    """``(B,)`` int: each example's part, ``FIT``, ``VAL`` (``val_frac`` of the non-test examples) or
    ``TEST`` (the held-out examples of :func:`~algeval.sim.analyses.probes.split`)."""
    for name, v in (("test_frac", test_frac), ("val_frac", val_frac)):
        if not 0 < v < 1:
            raise ParameterError(name, v, "must lie strictly between 0 and 1")
    test = split(B, seed, test_frac)
    idx = np.flatnonzero(~test)
    rng = np.random.default_rng(seed + 1)
    k = min(len(idx) - 1, max(1, int(round(len(idx) * val_frac)))) if len(idx) > 1 else 0
    part = np.where(test, TEST, FIT)
    part[rng.permutation(idx)[:k]] = VAL
    return part


def standardise(X: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``X (n, D)`` centred and scaled by the mean and sd of the ``train`` rows; constant features dropped."""
    X = np.asarray(X, np.float64)
    mu, sd = X[train].mean(0), X[train].std(0)
    keep = sd > 1e-9 * max(1.0, float(np.abs(X[train]).max(initial=0.0)))
    return ((X[:, keep] - mu[keep]) / sd[keep]).astype(np.float32)


def band_accuracy(R, dist, M, ex, part_ex, bins, shuffle_seed: int | None = None,
                  max_rows: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(A, SE)`` each ``(L1, len(bins))``: held-out balanced accuracy of the newly-reached probe of every bin
    (a collection of distances) at every layer (:func:`~algeval.sim.analyses.binprobe.layer_probe` on
    standardised features), and ``meta``: per layer the selection penalty ``rel``, the median selected
    coordinates ``support``, the largest KKT violation ``kkt``; per layer and bin the chosen design
    ``kind``, ``l2`` and the ``coverage``.  ``part_ex (B,)``: each example's part (:func:`parts`).
    With ``shuffle_seed`` the labels (distances and masks) are permuted among the fit + validation rows
    and, independently, among the test rows.  ``max_rows``: at most this many fit + validation rows (a
    random subset, ``seed``); test rows are all kept."""
    L1 = R.shape[1]
    part = part_ex[ex].copy()
    dist, M = dist.copy(), M.copy()
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        for sel in (part != TEST, part == TEST):
            idx = np.flatnonzero(sel)
            p = idx[rng.permutation(len(idx))]
            dist[idx], M[idx] = dist[p], M[p]
    tr = np.flatnonzero(part != TEST)
    if max_rows is not None and len(tr) > max_rows:
        drop = np.random.default_rng(seed + 1).permutation(tr)[max_rows:]
        part[drop] = UNUSED
    A = np.full((L1, len(bins)), np.nan)
    S_E = np.full((L1, len(bins)), np.nan)
    meta = {k: [] for k in ("rel", "support", "kkt", "kind", "l2", "coverage")}
    train = (part == FIT) | (part == VAL)
    if train.sum() < 2 or not (part == TEST).any():
        return A, S_E, meta
    for i in range(L1):
        r = layer_probe(standardise(R[:, i], train), dist, M, part, bins)
        A[i], S_E[i] = r["acc"], r["se"]
        for k in meta:
            v = r[k]
            meta[k].append(v.tolist() if isinstance(v, np.ndarray) else v)
    return A, S_E, meta


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
    ``counted`` (families with a defined band ``>= 4``), ``probe`` (the probe's choices: Named ``rel``,
    ``support``, ``kkt`` per family and layer, ``kind``, ``l2``, ``coverage`` per family, layer and distance) and
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
    part_ex = parts(len(batch), seed, test_frac)
    dmax = int(max(1, min(info.V - 1, info.dist.max() if info.dist is not None else info.V - 1)))
    bands = np.arange(1, dmax + 1)
    bins = [(int(d),) for d in bands]
    acc, se, sh, sh_se, ctl, ctl_se, meta = {}, {}, {}, {}, {}, {}, {}
    for j, f in enumerate(fams):
        R, dist, M, ex = _rows(f, acts, info, features == "pair")
        cap = NODE_ROWS if f.startswith("node") else None
        acc[f], se[f], meta[f] = band_accuracy(R, dist, M, ex, part_ex, bins, max_rows=cap, seed=seed)
        sh[f], sh_se[f], _ = band_accuracy(R, dist, M, ex, part_ex, bins, shuffle_seed=seed + 7919 * (j + 1),
                                           max_rows=cap, seed=seed)
        if control is not None:
            Rc = _rows(f, control, info, features == "pair")[0]
            ctl[f], ctl_se[f], _ = band_accuracy(Rc, dist, M, ex, part_ex, bins, max_rows=cap, seed=seed)

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
           "counted": counted, "probe": _probe_meta(meta, fams, coords), "summary": summary,
           "rule": f"probe: class-balanced logistic per distance and output, penalties chosen on a validation split "
                   f"(algeval.sim.analyses.binprobe); onset: step >= {MIN_STEP} and >= {STEP_Z} SE; families need a "
                   f"band >= {DIVERGE}; null: uniform onsets, {n_null} draws"}
    if control is not None:
        out["control"] = named(ctl)
    return out


def _probe_meta(meta: dict, fams: list, coords: dict) -> dict:
    """The probe's choices (:func:`band_accuracy`'s ``meta`` per family) as Named arrays: ``rel``, ``support``,
    ``kkt`` (family, layer) and ``kind``, ``l2``, ``coverage`` (family, layer, distance); NaN / "" where no
    probe was fitted (a family without never-reached entries)."""
    L1, nd = len(coords["layer"]), len(coords["distance"])
    out = {}
    for k, per_bin in (("rel", False), ("support", False), ("kkt", False), ("kind", True), ("l2", True),
                       ("coverage", True)):
        shape = (len(fams), L1, nd) if per_bin else (len(fams), L1)
        a = np.full(shape, "", dtype=object) if k == "kind" else np.full(shape, np.nan)
        for i, f in enumerate(fams):
            v = meta[f][k]
            if len(v):
                a[i] = np.array(v, dtype=object if k == "kind" else float)
        axes = ("family", "layer", "distance") if per_bin else ("family", "layer")
        out[k] = Named(a.astype(str) if k == "kind" else a, axes, {x: coords[x] for x in axes})
    return out


def newly_reached_check(res: dict, family: str, expected: dict, level: float = 0.99) -> dict:
    """Per distance ``d`` with expected onset layer index ``expected[d]``: ``at`` (accuracy at that layer),
    ``after`` (lowest from that layer on), ``before`` (highest before it), ``drop = after - before``, and the
    highest accuracy over layers with shuffled labels and on the control model; ``ok`` iff every ``after`` is
    ``>= level``.  ``res`` is :func:`reach_onsets`' result, or its JSON form (``results.json["onsets"]``)."""
    def named(x):
        return Named.from_json(x) if isinstance(x, dict) else x

    acc = named(res["accuracy"])
    A = acc.sel(family=family).values  # (L1, distance)
    ds = [int(d) for d in acc.coords["distance"]]
    ctl = {k: named(res[k]).sel(family=family).values for k in ("shuffled", "control") if res.get(k) is not None}
    rows = {}
    for d, k in expected.items():
        if d not in ds:
            continue
        j = ds.index(d)
        a = A[:, j]
        if not np.isfinite(a).all():
            continue
        rows[int(d)] = {"layer": int(k), "at": float(a[k]), "after": float(a[k:].min()),
                        "before": float(a[:k].max()) if k else float("nan"),
                        "drop": float(a[k:].min() - a[:k].max()) if k else float("nan"),
                        **{f"{c}_max": float(np.nanmax(v[:, j])) if np.isfinite(v[:, j]).any() else float("nan")
                           for c, v in ctl.items()}}
    return {"family": family, "level": level, "bands": rows,
            "ok": bool(rows) and all(r["after"] >= level for r in rows.values())}


def check_table(chk: dict) -> str:
    """:func:`newly_reached_check`'s result as a markdown table."""
    def f(x):
        return "-" if not np.isfinite(x) else f"{x:.3f}"

    lines = ["| d | computing layer (index) | accuracy there | lowest after | highest before | drop | "
             "shuffled max | control max |", "|---|---|---|---|---|---|---|---|"]
    for d, r in chk["bands"].items():
        lines.append(f"| {d} | {r['layer']} | {f(r['at'])} | {f(r['after'])} | {f(r['before'])} | {f(r['drop'])} | "
                     f"{f(r.get('shuffled_max', float('nan')))} | {f(r.get('control_max', float('nan')))} |")
    return "\n".join(lines)
