"""Attention from the decision position to the correct path versus the competing path.

For every example, layer ``l`` and head ``h``, take the attention row of the
decision position (the last scored position) and look at the **node tokens**:
the positions whose token is a vertex of the correct set ``C`` or of the
competing set ``K`` (:func:`~algeval.sim.analyses.common.graph_info`: search --
the rest of ``meta["path"]`` after the current vertex vs. the other branches
of the current vertex; CogEval value path -- the optimal path vs. the other
branch).

* ``mass[example, layer, head, set]``: the attention summed over the tokens
  of ``C`` (``set="correct"``) and of ``K`` (``set="competing"``).
* The AlgEval regression (Eberle et al. 2025, case study: ``b = 0.33, SE =
  0.07, t(2015) = 4.51``): one observation per node token, ``y`` = its
  attention weight, ``x`` = 1 if its vertex is on the correct path, else 0;
  OLS with intercept, so ``b`` = mean weight of a correct-path token minus
  that of a competing token.

  - ``per_layer``: ``y`` = the weight averaged over the layer's heads;
    ``n`` = node tokens over all examples;
  - ``per_head``: one regression per (layer, head);
  - ``overall``: ``y`` = the weight averaged over heads *and* layers (one
    observation per node token, so ``df = n - 2`` counts node tokens);
  - ``layers_positive`` / ``layers_negative``: layers with ``p < 0.05`` and
    ``b > 0`` / ``b < 0``.

  Observations of one example are not independent; the tests treat them as
  if they were, as the case study did.
"""

from __future__ import annotations

import numpy as np

from algeval.sim.analyses.common import Acts, GraphInfo, collect, graph_info, ols
from algeval.sim.analyses.named import Named

STATS = ("b", "se", "t", "p", "df", "n", "ci_lo", "ci_hi")


def node_token_sets(batch, info: GraphInfo) -> tuple[np.ndarray, np.ndarray]:
    """``(is_correct (B, T), is_competing (B, T))``: node tokens of the correct / competing sets."""
    tok = np.asarray(batch.tokens).astype(np.int64)
    v = tok - batch.vocab.vertex_offset
    isv = (v >= 0) & (v < batch.vocab.num_vertices)
    vv = np.where(isv, v, 0)
    b = np.arange(len(batch))[:, None]
    return isv & info.correct[b, vv], isv & info.competing[b, vv]


def _table(res: dict, shape_axes: tuple[str, ...], coords: dict) -> Named:
    vals = np.stack([np.asarray(res[s], np.float64) for s in STATS], -1)
    return Named(vals, shape_axes + ("stat",), {**coords, "stat": list(STATS)})


def _scalar_stats(res: dict) -> dict:
    return {s: float(np.asarray(res[s])) for s in STATS}


def path_regression(attn: np.ndarray, is_c: np.ndarray, is_k: np.ndarray, alpha: float = 0.05) -> dict:
    """The regressions of the module docstring from decision rows ``attn (B, L, H, T)``."""
    B, L, H, T = attn.shape
    obs = (is_c | is_k).reshape(-1)
    x = is_c.reshape(-1).astype(np.float64)
    y_lh = np.transpose(attn, (1, 2, 0, 3)).reshape(L, H, B * T)
    per_head = ols(y_lh, x, obs)
    per_layer = ols(y_lh.mean(1), x, obs)
    overall = ols(y_lh.mean((0, 1)), x, obs)
    sig = per_layer["p"] < alpha
    layers = list(range(L))
    o = _scalar_stats(overall)
    return {
        "per_layer": _table(per_layer, ("layer",), {"layer": layers}),
        "per_head": _table(per_head, ("layer", "head"), {"layer": layers}),
        "overall": o,
        "layers_positive": int((sig & (per_layer["b"] > 0)).sum()),
        "layers_negative": int((sig & (per_layer["b"] < 0)).sum()),
        "n_layers": L,
        "summary": (f"b = {o['b']:.4g}, SE = {o['se']:.2g}, t({int(o['df'])}) = {o['t']:.3g}, p = {o['p']:.3g}; "
                    f"significant (p < {alpha}) in {int((sig & (per_layer['b'] > 0)).sum())} of {L} layers, "
                    f"{int((sig & (per_layer['b'] < 0)).sum())} in the opposite direction"),
    }


def attention_to_path(model, batch, *, acts: Acts | None = None, info: GraphInfo | None = None,
                      control: Acts | None = None, alpha: float = 0.05) -> dict:
    """Attention mass from the decision position to correct- vs competing-path tokens, and the regressions.

    Returns ``mass`` (Named: example, layer, head, set), ``per_layer`` (Named: layer, stat),
    ``per_head`` (Named: layer, head, stat), ``overall`` (dict of b, se, t, p, df, n, ci_lo, ci_hi),
    ``layers_positive``, ``layers_negative``, ``summary``; with a ``control`` (the Acts of a
    random-weights model on the same batch) also ``control`` (its regressions) and
    ``vs_control`` (``z`` and one-sided ``p`` of ``b_model > b_control`` overall).
    """
    acts = acts if acts is not None else collect(model, batch)
    info = info if info is not None else graph_info(batch)
    is_c, is_k = node_token_sets(batch, info)
    mass = np.stack([(acts.attn * is_c[:, None, None, :]).sum(-1), (acts.attn * is_k[:, None, None, :]).sum(-1)], -1)
    out = {"mass": Named(mass, ("example", "layer", "head", "set"),
                         {"layer": list(range(acts.n_layers)), "set": ["correct", "competing"]}),
           "tokens": {"correct": int(is_c.sum()), "competing": int(is_k.sum())}}
    out.update(path_regression(acts.attn, is_c, is_k, alpha))
    if control is not None:
        c = path_regression(control.attn, is_c, is_k, alpha)
        out["control"] = {k: c[k] for k in ("per_layer", "overall", "layers_positive", "layers_negative", "summary")}
        from algeval.sim.analyses.common import norm_sf

        bm, bc = out["overall"]["b"], c["overall"]["b"]
        se = np.hypot(out["overall"]["se"], c["overall"]["se"])
        z = (bm - bc) / se if se > 0 else (np.inf if bm > bc else np.nan)
        out["vs_control"] = {"b_model": bm, "b_control": bc, "z": float(z),
                             "p": float(norm_sf(z)) if np.isfinite(z) else (0.0 if z == np.inf else float("nan"))}
    return out
