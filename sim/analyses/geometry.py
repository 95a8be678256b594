"""Geometry of node-token representations across layers.

Node representations ``r_l(v)`` are the mean of the residual stream over the
positions mentioning vertex ``v`` (:class:`~algeval.sim.analyses.common.Acts`:
layer index 0 = embedding, ``l + 1`` = after block ``l``).

:func:`representation_geometry` reports, per layer:

* ``pca``: a 2-D PCA of all mentioned node representations of the batch
  (pooled over examples, centred, numpy SVD), with the explained-variance
  ratio of the first two components;
* ``tsne``: only when scikit-learn is installed (it is not a dependency),
  else ``None``;
* ``goal_competitor``: per example, the Euclidean distance from the target's
  representation to the nearest competing vertex's, raw and divided by the
  median pairwise distance between the example's mentioned nodes;
* ``consecutive_cosine``: the cosine similarity of each node's
  representation before and after each block.

:func:`event_times` defines when a node representation *changes* (the
order-change rule used by :mod:`~algeval.sim.analyses.orders`):

    step_l(v)   = || r_{l+1}(v) - r_l(v) ||                 (the change made by block l)
    rel_l(v)    = step_l(v) / (median_k step_k(v) + 1e-6 * mean_k ||r_k(v)||)
    tau(v)      = min { l : rel_l(v) >= threshold }     (threshold 1.5; n_layers when never)

with ``k`` over the blocks: the first block that changes ``v`` at least 1.5
times as much as ``v``'s typical (median) block does.  The baseline is the
node's own, so a wave that moves most nodes of a graph in one block (BFS
from the centre of a star) is still seen.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from algeval.sim.analyses.common import Acts, GraphInfo, collect, graph_info
from algeval.sim.analyses.named import Named

THRESHOLD = 1.5


def step_changes(acts: Acts) -> np.ndarray:
    """``rel (B, L, V)`` of the module docstring (NaN for unmentioned vertices)."""
    r = acts.reps.astype(np.float64)
    step = np.linalg.norm(r[:, 1:] - r[:, :-1], axis=-1)  # (B, L, V)
    norm = np.linalg.norm(r, axis=-1).mean(1)  # (B, V)
    base = np.median(step, axis=1) + 1e-6 * norm + 1e-30  # the node's typical change per block
    rel = step / base[:, None, :]
    return np.where(acts.mentioned[:, None, :], rel, np.nan)


def event_times(acts: Acts, threshold: float = THRESHOLD) -> np.ndarray:
    """``tau (B, V)`` int: the first block whose relative change of the node is ``>= threshold``.

    ``n_layers`` when no block qualifies; ``-1`` for vertices not mentioned.
    """
    rel = step_changes(acts)
    hit = np.nan_to_num(rel, nan=-np.inf) >= threshold
    L = rel.shape[1]
    tau = np.where(hit.any(1), np.argmax(hit, axis=1), L)
    return np.where(acts.mentioned, tau, -1).astype(np.int64)


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection on the top-2 principal axes and their explained-variance ratios (eigh of X^T X)."""
    xc = x - x.mean(0, keepdims=True)
    if len(xc) < 2:
        return np.zeros((len(xc), 2)), np.full(2, np.nan)
    C = xc.T @ xc
    w, vec = np.linalg.eigh(C)
    w, vec = w[::-1], vec[:, ::-1]
    k = min(2, len(w))
    proj = xc @ vec[:, :k]
    tot = max(float(np.trace(C)), 0.0)
    ratio = np.maximum(w[:k], 0) / tot if tot > 0 else np.full(k, np.nan)
    if k < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - k)))
        ratio = np.pad(ratio, (0, 2 - k), constant_values=np.nan)
    return proj, ratio


def _tsne(x: np.ndarray, seed: int) -> np.ndarray | None:
    if importlib.util.find_spec("sklearn") is None:
        return None
    from sklearn.manifold import TSNE  # pragma: no cover - not installed here

    perp = max(2.0, min(30.0, (len(x) - 1) / 3))
    return TSNE(2, perplexity=perp, random_state=seed, init="pca").fit_transform(x)


def representation_geometry(model, batch, *, acts: Acts | None = None, info: GraphInfo | None = None,
                            tsne_points: int = 500, seed: int = 0) -> dict:
    """Node-representation geometry per layer; see the module docstring.

    Returns ``reps`` (Named: example, layer, vertex, d_model), ``pca`` (Named: layer, node, component),
    ``pca_nodes`` (Named: node, field=(example, vertex)), ``pca_explained`` (Named: layer, component),
    ``tsne`` (Named or None, on the first ``tsne_points`` nodes), ``goal_competitor`` and
    ``goal_competitor_rel`` (Named: example, layer), ``consecutive_cosine`` (Named: example,
    transition, vertex) with its mean per transition ``consecutive_cosine_mean``.
    """
    acts = acts if acts is not None else collect(model, batch)
    info = info if info is not None else graph_info(batch)
    R = acts.reps.astype(np.float64)
    B, L1, V, D = R.shape
    layers = acts.layer_coords
    nb, nv = np.nonzero(acts.mentioned)
    pts = R[nb, :, nv]  # (node, layer, D)
    pca = np.zeros((L1, len(nb), 2))
    expl = np.zeros((L1, 2))
    for l in range(L1):
        pca[l], expl[l] = _pca2(pts[:, l])
    ts = None
    if tsne_points and len(nb) >= 5:
        emb = [_tsne(pts[:tsne_points, l], seed) for l in range(L1)]
        if emb[0] is not None:
            ts = Named(np.stack(emb), ("layer", "node", "component"), {"layer": layers})

    # goal vs nearest competitor
    b = np.arange(B)
    tgt = np.maximum(info.target, 0)
    tr = R[b, :, tgt]  # (B, L1, D)
    d = np.linalg.norm(R - tr[:, :, None, :], axis=-1)  # (B, L1, V)
    comp = info.competing & acts.mentioned
    dmin = np.where(comp[:, None, :], d, np.inf).min(-1)
    ok = (info.target >= 0) & comp.any(-1) & acts.mentioned[b, tgt]
    dmin = np.where(ok[:, None], dmin, np.nan)
    G = np.einsum("blvd,blwd->blvw", R, R)
    sq = np.einsum("blvv->blv", G)
    pair = np.sqrt(np.maximum(sq[..., :, None] + sq[..., None, :] - 2 * G, 0.0))  # (B, L1, V, V)
    mm = acts.mentioned[:, :, None] & acts.mentioned[:, None, :] & ~np.eye(V, dtype=bool)[None]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(np.where(mm[:, None], pair, np.nan).reshape(B, L1, -1), axis=-1)
        rel = dmin / med
    # cosine between consecutive layers
    num = (R[:, 1:] * R[:, :-1]).sum(-1)
    den = np.linalg.norm(R[:, 1:], axis=-1) * np.linalg.norm(R[:, :-1], axis=-1)
    with np.errstate(all="ignore"):
        cos = np.where(acts.mentioned[:, None, :] & (den > 0), num / den, np.nan)
    trans = [f"{'embed' if a == -1 else a}->{b_}" for a, b_ in zip(layers[:-1], layers[1:])]
    cosn = Named(cos, ("example", "transition", "vertex"), {"transition": trans})
    return {
        "reps": acts.reps_named(),
        "pca": Named(pca, ("layer", "node", "component"), {"layer": layers}),
        "pca_nodes": Named(np.stack([nb, nv], 1), ("node", "field"), {"field": ["example", "vertex"]}),
        "pca_explained": Named(expl, ("layer", "component"), {"layer": layers}),
        "tsne": ts,
        "tsne_note": None if ts is not None else "scikit-learn is not installed: no t-SNE",
        "goal_competitor": Named(dmin, ("example", "layer"), {"layer": layers}),
        "goal_competitor_rel": Named(rel, ("example", "layer"), {"layer": layers}),
        "goal_competitor_rel_mean": Named(Named(rel, ("example", "layer")).mean("example").values,
                                          ("layer",), {"layer": layers}),
        "consecutive_cosine": cosn,
        "consecutive_cosine_mean": cosn.mean(("example", "vertex")),
        "event_times": Named(event_times(acts), ("example", "vertex")),
    }
