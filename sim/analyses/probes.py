"""Linear probes for reference-algorithm variables on node-token representations.

**Variables** (one binary label per example, layer and vertex; layer index
``i = 0`` is the embedding, ``i = l + 1`` the output of block ``l``).  Each
is a :class:`~algeval.theory.Trace` variable of a reference, read at the step
the hypothesis assigns to the layer -- a linear schedule (one step per block)
or an exponential one (reach doubling per block):

==================  ===============================================  ==========================================
name                label of vertex v at layer index i                Trace variable
==================  ===============================================  ==========================================
``bfs_visited``     ``0 <= d(s, v) <= i``                             ``bfs(adj, s)["visited"][min(i, D)][v]``
``bfs_frontier``    ``d(s, v) == i``                                  ``bfs(adj, s)["frontier"][i][v]`` (0 past D)
``pm_reach``        ``0 <= d(s, v) <= 2^(i-1)`` (``i = 0``: ``v = s``)  ``path_merging(adj)["reach"][i-1][s, v]``
``pm_goal``         ``0 <= d(v, g) <= 2^(i-1)`` (``i = 0``: ``v = g``)  ``path_merging(adj)["reach"][i-1][v, g]``
``vi_positive``     ``V_i(v) > 0``                                    ``value_iteration(adj, r)["value"][i][v] > 0``
``reachable``       ``d(s, v) >= 0``                                   ``bfs(adj, s)["visited"][-1][v]``
``reaches_target``  ``d(v, g) >= 0``                                   ``path_merging(adj).answer[v, g]``
``on_path``         ``v`` on the correct path after ``s``             (the task's path; see ``graph_info``)
==================  ===============================================  ==========================================

``s`` is the decision vertex, ``g`` the target, ``r`` the rewards of
:func:`~algeval.sim.analyses.common.graph_info` (the goal indicator unless
the task gives rewards); steps past a reference's last step read its last.

**Probe.**  Per variable and layer: ridge regression of ``+-1`` labels on the
standardised representation (``ridge = 1e-2``, class-balanced sample
weights, unpenalised intercept), closed form, so deterministic; predict the
sign.  Train on 75% of the examples, test on the held-out 25% (split by
example, seed ``seed``).  Reported: **balanced accuracy** (mean of the
per-class recalls) on the test nodes, NaN when a class is missing.

**Controls.**  ``shuffled``: the same probe trained on labels permuted among
the training nodes, tested on the true labels (chance 0.5); ``control``: the
same probe on a random-weights model of the same config (when given).  The
per-variable summary averages over the blocks (the embedding left out) and
compares with ``chance = mean over blocks of max(shuffled, control)``; its
``p`` is the one-sided normal tail of ``(score - chance) / se`` with ``se``
from the binomial variance of each per-class recall, treating blocks as
independent.
"""

from __future__ import annotations

import math

import numpy as np

from algeval.sim.analyses.common import Acts, GraphInfo, collect, graph_info, norm_sf, value_iteration_positive
from algeval.sim.analyses.named import Named

VARIABLES = ("bfs_visited", "bfs_frontier", "pm_reach", "pm_goal", "vi_positive",
             "reachable", "reaches_target", "on_path")
RIDGE = 1e-2


def probe_labels(info: GraphInfo, n_layers: int, variables=VARIABLES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (labels (B, L+1, V) bool, valid (B, V) bool)}`` of the module docstring's table."""
    L1 = n_layers + 1
    i = np.arange(L1)[None, :, None]
    lin = i
    exp = np.where(i == 0, 0, 2 ** np.maximum(i - 1, 0))
    ds = info.dist_from[:, None, :]
    dg = info.dist_to[:, None, :]
    base = info.mentioned
    has_t = (info.target >= 0)[:, None] & base
    out = {}
    for name in variables:
        if name == "bfs_visited":
            out[name] = ((ds >= 0) & (ds <= lin), base)
        elif name == "bfs_frontier":
            out[name] = (ds == lin, base)
        elif name == "pm_reach":
            out[name] = ((ds >= 0) & (ds <= exp), base)
        elif name == "pm_goal":
            out[name] = ((dg >= 0) & (dg <= exp), has_t)
        elif name == "vi_positive":
            vi = value_iteration_positive(info.adj, info.rewards, n_layers)  # (L1, B, V)
            out[name] = (np.transpose(vi, (1, 0, 2)), base & (info.rewards != 0).any(-1, keepdims=True))
        elif name == "reachable":
            out[name] = (np.broadcast_to(ds >= 0, (len(ds), L1, ds.shape[-1])), base)
        elif name == "reaches_target":
            out[name] = (np.broadcast_to(dg >= 0, (len(dg), L1, dg.shape[-1])), has_t)
        elif name == "on_path":
            out[name] = (np.broadcast_to(info.correct[:, None], (len(ds), L1, ds.shape[-1])), base)
        else:
            from algeval.errors import ParameterError

            raise ParameterError("variables", name, f"unknown probe variable; known: {', '.join(VARIABLES)}")
    return out


def fit_probe(X: np.ndarray, y: np.ndarray, train: np.ndarray, ridge: float = RIDGE):
    """Class-balanced ridge probe; returns ``(w (D,), c, mu, sd)`` with ``score = ((x - mu) / sd) @ w + c``."""
    Xt, yt = X[train].astype(np.float64), y[train]
    mu = Xt.mean(0)
    sd = Xt.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    Z = (Xt - mu) / sd
    n1, n0 = yt.sum(), (~yt).sum()
    w = np.where(yt, 0.5 / max(n1, 1), 0.5 / max(n0, 1))
    t = np.where(yt, 1.0, -1.0)
    zm = w @ Z / w.sum()
    tm = w @ t / w.sum()
    Zc = Z - zm
    A = (Zc * w[:, None]).T @ Zc + ridge * np.eye(Z.shape[1])
    beta = np.linalg.solve(A, (Zc * w[:, None]).T @ (t - tm))
    return beta, float(tm - zm @ beta), mu, sd


def balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(balanced accuracy, its standard error)``; NaN when a class is missing."""
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan"), float("nan")
    r1, r0 = (pred & y).sum() / n1, (~pred & ~y).sum() / n0
    se = 0.5 * math.sqrt(r1 * (1 - r1) / n1 + r0 * (1 - r0) / n0)
    return float(0.5 * (r1 + r0)), se


def probe_accuracy(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                   ridge: float = RIDGE, shuffle_seed: int | None = None) -> tuple[float, float]:
    """Fit on ``train`` rows (labels shuffled among them with ``shuffle_seed``), score on ``test`` rows."""
    ytr = y.copy()
    if shuffle_seed is not None:
        idx = np.flatnonzero(train)
        ytr[idx] = y[idx][np.random.default_rng(shuffle_seed).permutation(len(idx))]
    if ytr[train].all() or not ytr[train].any() or not test.any():
        return float("nan"), float("nan")
    beta, c, mu, sd = fit_probe(X, ytr, train, ridge)
    pred = ((X[test] - mu) / sd) @ beta + c > 0
    return balanced_accuracy(pred, y[test])


def split(B: int, seed: int = 0, test_frac: float = 0.25) -> np.ndarray:
    """``(B,)`` bool: the held-out examples."""
    rng = np.random.default_rng(seed)
    k = max(1, int(round(B * test_frac)))
    test = np.zeros(B, bool)
    test[rng.permutation(B)[:k]] = True
    return test


def _run(reps: np.ndarray, labels: dict, test_ex: np.ndarray, ridge: float, seed: int, shuffle: bool):
    B, L1, V, D = reps.shape
    names = list(labels)
    acc = np.full((len(names), L1), np.nan)
    se = np.full((len(names), L1), np.nan)
    acc_sh = np.full((len(names), L1), np.nan)
    se_sh = np.full((len(names), L1), np.nan)
    ntest = np.zeros((len(names), L1), np.int64)
    for k, name in enumerate(names):
        lab, valid = labels[name]
        eb, ev = np.nonzero(valid)
        tr, te = ~test_ex[eb], test_ex[eb]
        for i in range(L1):
            X = reps[eb, i, ev]
            y = np.asarray(lab[eb, i, ev], bool)
            ntest[k, i] = te.sum()
            acc[k, i], se[k, i] = probe_accuracy(X, y, tr, te, ridge)
            if shuffle:
                acc_sh[k, i], se_sh[k, i] = probe_accuracy(X, y, tr, te, ridge, shuffle_seed=seed + 1000 * k + i)
    return acc, se, acc_sh, se_sh, ntest


def probes(model, batch, *, acts: Acts | None = None, info: GraphInfo | None = None,
           control: Acts | None = None, variables=VARIABLES, ridge: float = RIDGE, seed: int = 0,
           test_frac: float = 0.25) -> dict:
    """Probe accuracy per variable and layer with controls; see the module docstring.

    Returns ``accuracy``, ``shuffled``, [``control``] (Named: variable, layer; balanced accuracy),
    ``n_test`` (Named: variable, layer), ``positive_rate`` (Named: variable, layer; test set)
    and ``summary[variable]`` = ``{score, chance, shuffled, control, p, best_layer}``.
    """
    acts = acts if acts is not None else collect(model, batch)
    info = info if info is not None else graph_info(batch)
    labels = probe_labels(info, acts.n_layers, variables)
    test_ex = split(len(batch), seed, test_frac)
    acc, se, sh, se_sh, ntest = _run(acts.reps, labels, test_ex, ridge, seed, True)
    names = list(labels)
    coords = {"variable": names, "layer": acts.layer_coords}
    pos = np.array([[np.asarray(labels[n][0])[test_ex][:, i][labels[n][1][test_ex]].mean()
                     if labels[n][1][test_ex].any() else np.nan for i in range(acts.n_layers + 1)] for n in names])
    out = {"accuracy": Named(acc, ("variable", "layer"), coords),
           "shuffled": Named(sh, ("variable", "layer"), coords),
           "n_test": Named(ntest, ("variable", "layer"), coords),
           "positive_rate": Named(pos, ("variable", "layer"), coords)}
    cacc = cse = None
    if control is not None:
        cacc, cse, _, _, _ = _run(control.reps, labels, test_ex, ridge, seed, False)
        out["control"] = Named(cacc, ("variable", "layer"), coords)
    summary = {}
    blocks = slice(1, None)
    import warnings

    for k, n in enumerate(names):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a, s_a = acc[k, blocks], se[k, blocks]
            ch = sh[k, blocks] if cacc is None else np.fmax(sh[k, blocks], cacc[k, blocks])
            s_c = se_sh[k, blocks] if cacc is None else np.where(cacc[k, blocks] >= sh[k, blocks], cse[k, blocks], se_sh[k, blocks])
            ok = np.isfinite(a) & np.isfinite(ch)
            score, chance = (float(np.mean(a[ok])), float(np.mean(ch[ok]))) if ok.any() else (float("nan"),) * 2
            var = (np.nan_to_num(s_a[ok]) ** 2 + np.nan_to_num(s_c[ok]) ** 2).sum() / max(ok.sum(), 1) ** 2
            z = (score - chance) / math.sqrt(var) if var > 0 else (np.inf if score > chance else 0.0)
            p = float(norm_sf(z)) if np.isfinite(z) else (0.0 if ok.any() else float("nan"))
            summary[n] = {"score": score, "chance": chance, "p": p,
                          "shuffled": float(np.nanmean(sh[k, blocks])) if np.isfinite(sh[k, blocks]).any() else float("nan"),
                          "control": (float(np.nanmean(cacc[k, blocks])) if cacc is not None and np.isfinite(cacc[k, blocks]).any()
                                      else None),
                          "best_layer": (int(np.nanargmax(acc[k, blocks])) if np.isfinite(acc[k, blocks]).any() else None),
                          "n_layers_scored": int(ok.sum())}
    out["summary"] = summary
    return out
