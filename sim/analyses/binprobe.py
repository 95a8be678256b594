"""The newly-reached probe of one layer: a logistic probe per distance bin, penalties chosen on held-out rows.

**Variables.**  Per output ``k`` (a vertex, or a vertex pair; see
:mod:`~algeval.sim.analyses.onsets` for the families) a row has a hop
distance ``d`` (``-1``: never reached; ``0``: the reference itself,
excluded).  For a bin ``b`` (a set of distances: the vertices an algorithm
newly reaches at one step) the probe's label is

    positive:  d in b                (newly reached at that step),
    negative:  d = -1                (never reached, at any step),

and entries at other distances are left out.  Negatives are the vertices
that stay unreached, so for a monotone algorithm (once reached, reached for
good) the label is decodable from the layer that computes the bin *on*, and
its accuracy there is not capped by vertices that later layers reach.

**Probe** (a relaxed lasso, Meinshausen 2007; class-balanced throughout;
rows split by example into fit / validation (20% of the training examples)
/ test; every penalty and choice below is made on the validation rows by the
balanced log-loss pooled over outputs):

1. *Selection.*  Per output, an L1-penalised logistic regression
   (:func:`~algeval.sim.analyses.logistic.l1_logistic`) of ``d >= 1`` vs
   ``d = -1`` ("reached at all": every bin's positives) on the standardised
   features, penalty ``rel * lam_max``, ``rel`` in :data:`GRID_L1`.  It
   selects the coordinates ``S_k`` (at most :data:`MAX_SUPPORT`, the
   largest ``|beta|``); a ridge logistic regression of the same label on
   ``S_k`` (``l2`` in :data:`GRID_L2`; :func:`~algeval.sim.analyses.logistic.newton`)
   gives the *reach score* ``s_k``.
2. *Per bin.*  A ridge logistic regression of the bin's own label, ``l2`` in
   :data:`GRID_L2`, on one of three nested designs: ``top`` -- the selected
   coordinate with the largest ``|beta|``; ``own`` -- all of ``S_k``; or
   ``shared`` -- the reach score ``s_k`` (standardised; the bin fits only a
   slope and an intercept).  Design and ``l2`` are chosen per bin, then the
   probe is refitted on the fit + validation rows.
3. *Test.*  Balanced accuracy of ``logit > 0`` on the held-out test rows,
   pooled over the outputs whose bin fit has a training positive
   (``coverage``: the fraction of test positives in such outputs); NaN
   unless ``>= min_class`` covered test positives and negatives.

Why two stages: an output (a vertex pair) can have a handful of training
positives in a bin (path merging at distance 4 on n = 12: ~4 per pair in
2,000 graphs), too few to pick one coordinate out of hundreds (a direct
lasso or ridge fit of the bin's label alone scored 0.58-0.76 there, where
the construction holds the variable exactly), but enough to place a
threshold on coordinates that step 1 found with all bins' positives.  The
bin's label still decides the weights, the design and the threshold.
"""

from __future__ import annotations

import numpy as np

from algeval.sim.analyses.logistic import balanced_log_loss, balanced_weights, l1_logistic, newton
from algeval.sim.analyses.probes import balanced_accuracy

GRID_L1 = (0.3, 0.1, 0.03)
GRID_L2 = (1e-3, 1e-2, 1e-1)
MAX_SUPPORT = 16
MIN_CLASS = 10
ITERS2 = 15
FIT, VAL, TEST, UNUSED = 0, 1, 2, 3


def _rows_of(use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``use (n, K)`` -> ``rows (K, R)`` (row indices, padded with 0) and ``ok (K, R)``."""
    K = use.shape[1]
    R = max(1, int(use.sum(0).max()))
    rows = np.zeros((K, R), np.int64)
    ok = np.zeros((K, R), bool)
    for k in range(K):
        ix = np.flatnonzero(use[:, k])
        rows[k, : len(ix)] = ix
        ok[k, : len(ix)] = True
    return rows, ok


def _gather(A: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``A (n, K)`` -> ``(K, R)``: ``A[rows[k, r], k]``."""
    return np.take_along_axis(A, rows.T, 0).T


def _score(Xk, B):
    """``Xk (n, K, m)``, ``B (K, m + 1, F)`` -> logits ``(n, K, F)``."""
    return np.einsum("nkm,kmf->nkf", Xk, B[:, :-1]) + B[:, -1][None]


def _ridge(X: np.ndarray, dist: np.ndarray, use: np.ndarray, labels, ls) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced ridge-logistic fits on the design ``X (n, K, m)`` over the rows ``use (n, K)``: label ``j``
    is ``labels[j](dist)`` vs ``dist < 0``, once per L2 penalty in ``ls[j]`` (columns label by label).
    Returns the coefficients ``(K, m + 1, F)`` and ``defined (K, len(labels))`` (both classes present)."""
    r, o = _rows_of(use)
    d = _gather(dist, r)
    T = np.stack([o & lab(d) for lab in labels], -1)                     # (K, R, nl)
    W = balanced_weights(T, (o & (d < 0))[..., None])
    Xr = np.take_along_axis(X, r.T[:, :, None], 0).transpose(1, 0, 2)    # (K, R, m)
    reps = [len(l) for l in ls]
    l2 = np.concatenate([np.asarray(l, np.float32) for l in ls])
    B = newton(Xr, np.repeat(T, reps, -1), np.repeat(W, reps, -1), np.broadcast_to(l2, (X.shape[1], len(l2))),
               iters=ITERS2)
    return B, W.sum(1) > 0


def _choose(z: np.ndarray, pos: np.ndarray, neg: np.ndarray, defined: np.ndarray) -> tuple[float, int]:
    """``(loss, g)``: the column of ``z (n, K, G)`` with the smallest balanced log-loss over the outputs that are
    ``defined (K,)``; ``(inf, -1)`` when none is finite."""
    best = (np.inf, -1)
    for g in range(z.shape[-1]):
        L = balanced_log_loss(z[:, :, g], pos & defined[None], neg & defined[None])
        if np.isfinite(L) and L < best[0]:
            best = (L, g)
    return best


def layer_probe(Z: np.ndarray, dist: np.ndarray, M: np.ndarray, part: np.ndarray, bins, *,
                min_class: int = MIN_CLASS) -> dict:
    """The probes of every bin at one layer (module docstring).

    ``Z (n, D)`` features standardised on the fit + validation rows; ``dist (n, K)`` distances; ``M (n, K)``
    defined entries; ``part (n,)`` in ``{FIT, VAL, TEST}`` (any other value: row unused); ``bins`` a list of
    distance collections.
    Returns per bin ``acc``, ``se``, ``coverage``, ``kind`` (the design: ``top`` / ``own`` / ``shared``), ``l2``,
    and ``rel`` (the selection penalty), ``support`` (median selected coordinates per output), ``kkt``.
    """
    nb = len(bins)
    K = dist.shape[1]
    out = {"acc": np.full(nb, np.nan), "se": np.full(nb, np.nan), "coverage": np.full(nb, np.nan),
           "kind": [""] * nb, "l2": np.full(nb, np.nan), "rel": float("nan"), "support": float("nan"),
           "kkt": float("nan")}
    ent = M & (dist != 0)
    never = dist < 0
    fit, val, test = part == FIT, part == VAL, part == TEST
    train = fit | val
    if not (ent & fit[:, None] & never).any() or not (ent & fit[:, None] & (dist > 0)).any():
        return out
    ev, et = ent[val], ent[test]
    reached = [lambda d: d > 0]
    binlab = [lambda d, b=tuple(b): np.isin(d, b) for b in bins]
    # 1. selection: lasso of reached at all vs never reached, penalty chosen on the validation rows
    rows, ok = _rows_of(ent & fit[:, None])
    dk = _gather(dist, rows)
    pos, neg = ok & (dk > 0), ok & (dk < 0)
    W = balanced_weights(pos[..., None], neg[..., None])
    G1 = len(GRID_L1)
    sel = l1_logistic(Z, rows, np.repeat(pos[..., None], G1, -1), np.repeat(W, G1, -1), np.array(GRID_L1))
    zv = np.einsum("nd,kdf->nkf", Z[val], sel["beta"], optimize=True) + sel["c"][None]
    j1 = max(0, _choose(zv, ev & (dist[val] > 0), ev & never[val], np.ones(K, bool))[1])
    beta = sel["beta"][:, :, j1]
    nz = beta != 0
    out.update(rel=GRID_L1[j1], support=float(np.median(nz.sum(1))), kkt=float(sel["kkt"][:, j1].max()))
    m = max(1, min(MAX_SUPPORT, int(nz.sum(1).max())))
    feats = np.argsort(-np.abs(beta), axis=1, kind="stable")[:, :m]
    own = Z[:, feats] * np.take_along_axis(nz, feats, 1).astype(np.float32)[None]   # (n, K, m)
    # the reach probe on the selected coordinates (ridge, penalty chosen on the validation rows): its score
    B, _ = _ridge(own, dist, ent & fit[:, None], reached, [GRID_L2])
    g = max(0, _choose(_score(own[val], B), ev & (dist[val] > 0), ev & never[val], np.ones(K, bool))[1])
    s = _score(own, B[:, :, g:g + 1])[:, :, 0]                             # (n, K)
    ts = ent & train[:, None]
    mu = (s * ts).sum(0) / np.maximum(ts.sum(0), 1)
    sd = np.sqrt((((s - mu) ** 2) * ts).sum(0) / np.maximum(ts.sum(0), 1))
    designs = {"top": own[:, :, :1], "own": own, "shared": ((s - mu) / np.where(sd > 0, sd, 1.0))[:, :, None]}
    # 2. per bin: design and L2 penalty chosen on the validation rows, then refitted on fit + validation rows
    G2 = len(GRID_L2)
    best = [(np.inf, None, None)] * nb
    for name, X in designs.items():
        B, defined = _ridge(X, dist, ent & fit[:, None], binlab, [GRID_L2] * nb)
        z = _score(X[val], B)
        for j in range(nb):
            L, gj = _choose(z[:, :, j * G2:(j + 1) * G2], ev & binlab[j](dist[val]), ev & never[val], defined[:, j])
            if L < best[j][0]:
                best[j] = (L, name, GRID_L2[gj])
    for name, X in designs.items():
        js = [j for j in range(nb) if best[j][1] == name]
        if not js:
            continue
        B, defined = _ridge(X, dist, ent & train[:, None], [binlab[j] for j in js], [[best[j][2]] for j in js])
        z = _score(X[test], B)
        for i, j in enumerate(js):
            p, n = et & binlab[j](dist[test]), et & never[test]
            pc, nc = p & defined[:, i][None], n & defined[:, i][None]
            out["kind"][j], out["l2"][j] = name, best[j][2]
            out["coverage"][j] = pc.sum() / max(p.sum(), 1)
            if pc.sum() >= min_class and nc.sum() >= min_class:
                out["acc"][j], out["se"][j] = balanced_accuracy(z[:, :, i] > 0, pc, pc | nc)
    return out
