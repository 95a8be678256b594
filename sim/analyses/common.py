"""Shared machinery of the analyses: one forward pass, graph facts of a batch, statistics.

* :func:`collect` runs a model once over a batch (in jitted chunks) and keeps
  only what the analyses read, as :class:`Acts`:

  - ``reps (example, layer, vertex, d_model)``: node-token representations,
    the mean over a vertex's mention positions of the residual stream.  The
    layer axis has ``n_layers + 1`` entries: index 0 is the embedding
    (``blocks.0.hook_resid_pre``, coordinate ``-1``), index ``l + 1`` is
    ``blocks.{l}.hook_resid_post`` (coordinate ``l``);
  - ``attn (example, layer, head, pos)``: the attention row of the decision
    position (the last scored position) from ``blocks.{l}.attn.hook_pattern``;
  - ``logits (example, vocab)`` at the decision position;
  - ``dec (example, layer, d_model)``: the residual stream at the decision
    position (same layer axis as ``reps``).

* :func:`graph_info` derives, per example, the graph facts every analysis
  needs (decision vertex, target, hop distances, correct and competing
  vertex sets, rewards for value iteration) from the batch metadata.

* :func:`ols` is ordinary least squares of ``y`` on one regressor with an
  intercept, vectorised over leading axes; :func:`t_sf` the Student-t tail.

A constructed model and a trained one go through the same calls: only the
:class:`~algeval.models.Transformer` interface (``functional``,
``cfg``) is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from algeval.errors import ParameterError
from algeval.sim.analyses.named import Named
from algeval.theory.graph import hop_distances

EMBED = -1  # layer coordinate of the embedding (blocks.0.hook_resid_pre)
#: the only hook names :func:`collect` caches (everything else is dropped by the forward pass)
COLLECT_HOOKS = ("blocks.0.hook_resid_pre", "blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern")


# --- batch geometry -------------------------------------------------------------------

def decision_positions(batch) -> np.ndarray:
    """``(B,)`` the last scored position of each example (``seq - 1`` for left-padded tasks)."""
    lm = np.asarray(batch.loss_mask)
    if not lm.any(1).all():
        raise ParameterError("batch.loss_mask", "an all-false row", "every example needs a scored position")
    T = lm.shape[1]
    return (T - 1 - np.argmax(lm[:, ::-1], axis=1)).astype(np.int32)


def mention_matrix(batch) -> np.ndarray:
    """``(B, V, T)`` float32: ``1/count`` at the positions mentioning vertex ``v`` (mean weights)."""
    V = batch.vocab.num_vertices
    tok = np.asarray(batch.tokens)
    hit = tok[:, None, :] == (batch.vocab.vertex_offset + np.arange(V))[None, :, None]
    cnt = hit.sum(-1, keepdims=True)
    return (hit / np.maximum(cnt, 1)).astype(np.float32)


# --- graph facts ----------------------------------------------------------------------

@dataclass
class GraphInfo:
    """Per-example graph facts over vertex labels ``0..V-1`` (see :func:`graph_info`)."""

    adj: np.ndarray            # (B, V, V) bool
    mentioned: np.ndarray      # (B, V) bool: the vertex token occurs in the sequence
    decision: np.ndarray       # (B,) the vertex the decision is made at (search: current; else start)
    target: np.ndarray         # (B,) goal / end of the optimal path (-1: none)
    dist_from: np.ndarray      # (B, V) hops decision -> v (-1 unreachable)
    dist_to: np.ndarray        # (B, V) hops v -> target (-1 unreachable or no target)
    rewards: np.ndarray        # (B, V) float: value-iteration rewards (goal indicator unless given)
    correct: np.ndarray        # (B, V) bool: vertices of the correct path after the decision vertex
    competing: np.ndarray      # (B, V) bool: vertices on the other branches (see graph_info)
    answer_children: np.ndarray  # (B, V) bool: the decision vertex's correct next vertices
    task: str = ""
    notes: dict = field(default_factory=dict)
    dist: np.ndarray | None = None          # (B, V, V) all-pairs hop distances (-1 unreachable)
    reward_query: np.ndarray | None = None  # (B,) bool: rewards come from the task (CogEval value path)

    @property
    def B(self) -> int:
        return self.adj.shape[0]

    @property
    def V(self) -> int:
        return self.adj.shape[1]

    def __getitem__(self, idx) -> "GraphInfo":
        idx = np.atleast_1d(np.arange(self.B)[idx])
        return GraphInfo(**{k: (getattr(self, k)[idx] if isinstance(getattr(self, k), np.ndarray) else getattr(self, k))
                            for k in self.__dataclass_fields__})


def _reach_avoiding(adj: np.ndarray, src: np.ndarray, avoid: np.ndarray) -> np.ndarray:
    """``(B, V)``: vertices reachable (>= 0 hops) from the set ``src (B, V)`` without entering ``avoid (B,)``."""
    B, V, _ = adj.shape
    a = adj.copy()
    a[np.arange(B), :, avoid] = False
    a[np.arange(B), avoid, :] = False
    r = src.copy()
    for _ in range(V):
        nxt = r | (np.einsum("bu,buv->bv", r.astype(np.float32), a.astype(np.float32)) > 0)
        if (nxt == r).all():
            break
        r = nxt
    return r


def graph_info(batch) -> GraphInfo:
    """Graph facts of every example of a graph-task batch.

    * decision vertex: ``meta["current"]`` when present (search, shortest-path), else ``meta["start"]``;
    * target: ``meta["goal"]``; for CogEval value-path queries (no goal) the last vertex of the
      first optimal path (:func:`algeval.theory.value_path.value_path`), ``-1`` when staying is optimal;
    * correct path: search -- the vertices of ``meta["path"]`` after the current vertex (up to the
      goal); CogEval value path -- every vertex of an optimal path except the start; otherwise the
      vertices of every shortest decision -> target path except the decision vertex;
    * answer children: the out-neighbours of the decision vertex in the correct set;
    * competing: vertices reachable from the *other* out-neighbours of the decision vertex without
      passing through it, minus the correct set (on a DAG: the descendants of the children that do
      not lead to the goal);
    * rewards: ``meta["rewards"]`` for CogEval value-path queries, else 1 at the target, 0 elsewhere.
    """
    m = batch.meta
    if "adj" not in m:
        raise ParameterError("task", batch.task, "graph analyses need a graph task (meta['adj'])")
    adj = np.asarray(m["adj"]).astype(bool)
    B, V, _ = adj.shape
    b = np.arange(B)
    tok = np.asarray(batch.tokens)
    mentioned = (tok[:, None, :] == (batch.vocab.vertex_offset + np.arange(V))[None, :, None]).any(-1)
    decision = np.asarray(m["current"] if "current" in m else m["start"]).astype(np.int64)
    goal = np.asarray(m["goal"]).astype(np.int64) if "goal" in m else np.full(B, -1)
    D = hop_distances(adj)
    dist_from = D[b, decision]
    rewards = np.zeros((B, V))
    correct = np.zeros((B, V), bool)
    target = goal.copy()
    notes = {}
    value_q = (np.asarray(m["query_kind"]) == 0) if (batch.task == "cogeval" and "query_kind" in m) else np.zeros(B, bool)
    if value_q.any():
        from algeval.theory.value_path import value_path

        for i in np.flatnonzero(value_q):
            t = value_path(adj[i], m["rewards"][i], int(m["start"][i]), int(m["max_steps"][i]) or None)
            paths = [p for p in t.answer if len(p) > 1]
            for p in paths:
                correct[i, list(p[1:])] = True
            target[i] = paths[0][-1] if paths else -1
        rewards[value_q] = np.asarray(m["rewards"])[value_q]
    has_t = (~value_q) & (target >= 0)
    rewards[b[has_t], target[has_t]] = 1.0
    dist_to = np.where(target[:, None] >= 0, D[b, :, np.maximum(target, 0)], -1)
    if batch.task == "search" and "path" in m:
        path = np.asarray(m["path"])
        k = np.argmax(path == decision[:, None], axis=1)  # index of the current vertex on the path
        after = (np.arange(path.shape[1])[None] > k[:, None]) & (path >= 0)
        bb, jj = np.nonzero(after)
        correct[bb, path[bb, jj]] = True
    else:
        sp = (~value_q) & (target >= 0)
        on = (dist_from >= 0) & (dist_to >= 0) & (dist_from + dist_to == dist_from[b, np.maximum(target, 0)][:, None])
        correct[sp] = on[sp]
        correct[b, decision] = False
    children = adj[b, decision]
    answer_children = children & correct
    other = children & ~correct
    comp = _reach_avoiding(adj, other, decision) & ~correct
    comp[b, decision] = False
    notes["value_path_queries"] = int(value_q.sum())
    return GraphInfo(adj, mentioned, decision, target, dist_from, dist_to, rewards, correct, comp,
                     answer_children, batch.task, notes, D, value_q)


def value_iteration_positive(adj: np.ndarray, rewards: np.ndarray, steps: int) -> np.ndarray:
    """``(steps + 1, B, V)``: ``V_k(v) > 0`` of :func:`algeval.theory.value_iteration` for ``k = 0..steps``.

    ``V_0 = 0``; ``V_{k+1}(u) = max(0, max_{u->v} rewards[v] + V_k(v))``, batched.
    """
    B, V, _ = adj.shape
    val = np.zeros((B, V))
    out = [val > 0]
    for _ in range(steps):
        q = np.where(adj, (rewards + val)[:, None, :], -np.inf)
        best = q.max(-1)
        val = np.where(best > 0, best, 0.0)
        out.append(val > 0)
    return np.stack(out)


# --- one forward pass ----------------------------------------------------------------------

@dataclass
class Acts:
    """What the analyses read from one model on one batch (see the module docstring)."""

    reps: np.ndarray        # (B, L + 1, V, D) float32; layer index 0 = embedding
    attn: np.ndarray        # (B, L, H, T) float32: the decision row of every attention pattern
    logits: np.ndarray      # (B, vocab) at the decision position
    mentioned: np.ndarray   # (B, V) bool
    qpos: np.ndarray        # (B,) decision positions
    dec: np.ndarray | None = None  # (B, L + 1, D) float32: the residual stream at the decision position

    @property
    def n_layers(self) -> int:
        return self.attn.shape[1]

    @property
    def layer_coords(self) -> list[int]:
        return [EMBED] + list(range(self.n_layers))

    def reps_named(self) -> Named:
        return Named(self.reps, ("example", "layer", "vertex", "d_model"), {"layer": self.layer_coords})

    def __getitem__(self, idx) -> "Acts":
        return Acts(self.reps[idx], self.attn[idx], self.logits[idx], self.mentioned[idx], self.qpos[idx],
                    None if self.dec is None else self.dec[idx])


_REDUCERS: dict = {}


def _reducer(model):
    cfg = model.cfg
    L = cfg.n_unrolled()
    names = list(COLLECT_HOOKS)
    fn, state = model.functional(names)

    def reduce(state, tokens, M, qpos, prefix_end):
        logits, cache = fn(state, tokens, None, prefix_end)
        resid = [cache["blocks.0.hook_resid_pre"]] + [cache[f"blocks.{l}.hook_resid_post"] for l in range(L)]
        reps, dec, rows = [], [], []
        for r in resid:
            r = r.astype(jnp.float32)
            reps.append(jnp.einsum("bvt,btd->bvd", M, r))
            dec.append(jnp.take_along_axis(r, qpos[:, None, None], axis=1)[:, 0])
        for l in range(L):
            pat = cache[f"blocks.{l}.attn.hook_pattern"].astype(jnp.float32)  # (B, H, T, T)
            rows.append(jnp.take_along_axis(pat, qpos[:, None, None, None], axis=2)[:, :, 0, :])
        lg = jnp.take_along_axis(logits.astype(jnp.float32), qpos[:, None, None], axis=1)[:, 0]
        return jnp.stack(reps, 1), jnp.stack(rows, 1), lg, jnp.stack(dec, 1)

    key = (id(type(model)), cfg, L)
    f = _REDUCERS.get(key)
    if f is None:
        f = _REDUCERS[key] = jax.jit(reduce)
    return f, state


def collect(model, batch, chunk: int = 256, *, tokens=None) -> Acts:
    """Run ``model`` over ``batch`` once (jitted, ``chunk`` examples at a time) and keep :class:`Acts`.

    ``tokens`` (optional, shape of ``batch.tokens``): the model's input ids when they are not
    ``batch.tokens`` -- a language model reads text ids while ``batch.tokens`` only marks which
    positions mention which vertex (:mod:`algeval.sim.case_study`).
    """
    own = tokens is not None
    if own:
        tokens = np.asarray(tokens, np.int32)
        if tokens.shape != np.shape(batch.tokens):
            raise ParameterError("tokens", tokens.shape, f"must have the batch's shape {np.shape(batch.tokens)}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= model.cfg.vocab_size):
            raise ParameterError("tokens", int(tokens.max()), f"ids must lie in [0, {model.cfg.vocab_size})")
    tokens = np.asarray(batch.tokens if tokens is None else tokens, np.int32)
    B, T = tokens.shape
    if T > model.cfg.max_len:
        raise ParameterError("batch", f"sequence length {T}", f"exceeds the model's max_len={model.cfg.max_len}")
    if not own and batch.vocab.size > model.cfg.vocab_size:
        raise ParameterError("batch", f"vocabulary of {batch.vocab.size}",
                             f"exceeds the model's vocab_size={model.cfg.vocab_size}")
    M = mention_matrix(batch)
    qpos = decision_positions(batch)
    pe = batch.meta.get("prefix_end")
    f, state = _reducer(model)
    chunk = max(1, min(chunk, B))
    outs = []
    for s in range(0, B, chunk):
        sl = slice(s, min(s + chunk, B))
        n = sl.stop - sl.start
        pad = chunk - n

        def padded(x):
            x = np.asarray(x)
            return np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x

        args = (padded(tokens[sl]), padded(M[sl]), padded(qpos[sl]),
                None if pe is None else padded(np.asarray(pe)[sl]))
        outs.append([np.asarray(x)[:n] for x in f(state, *args)])
    reps, attn, logits, dec = (np.concatenate([o[k] for o in outs]) for k in range(4))
    mentioned = M.sum(-1) > 0
    return Acts(reps, attn, logits, mentioned, qpos, dec)


def random_model_like(model, seed: int = 12345):
    """A random-weights :class:`~algeval.models.Transformer` of the same config (the control model)."""
    from algeval.models.transformer import Transformer

    return Transformer(model.cfg, seed=seed)


def resolve_control(model, control, batch, chunk: int = 256):
    """``control``: ``None`` (no control), ``"random"`` (random-weights model, seed 12345),
    an int seed, a model, or ready :class:`Acts`.  Returns :class:`Acts` or ``None``."""
    if control is None or isinstance(control, Acts):
        return control
    if isinstance(control, str):
        if control != "random":
            raise ParameterError("control", control, "must be 'random', a seed, a model, Acts or None")
        control = random_model_like(model)
    elif isinstance(control, (int, np.integer)):
        control = random_model_like(model, int(control))
    return collect(control, batch, chunk)


def answer_accuracy(acts: Acts, batch) -> np.ndarray:
    """``(B,)`` bool: the decision-position argmax lies in the answer set."""
    ans = np.asarray(batch.answers)[np.arange(len(batch)), acts.qpos]
    pred = acts.logits.argmax(-1)
    return (ans == pred[:, None]).any(-1)


# --- statistics -----------------------------------------------------------------------------

def t_sf(t, df):
    """Upper tail ``P(T > t)`` of Student's t (scipy when available, else mpmath)."""
    try:
        from scipy import stats

        return stats.t.sf(t, df)
    except ImportError:  # pragma: no cover - scipy ships with jax
        import mpmath

        f = np.vectorize(lambda x, d: float(0.5 * mpmath.betainc(d / 2, 0.5, 0, d / (d + x * x), regularized=True))
                         if x >= 0 else 1 - float(0.5 * mpmath.betainc(d / 2, 0.5, 0, d / (d + x * x), regularized=True)))
        return f(np.asarray(t, float), np.asarray(df, float))


def t_ppf(q, df):
    try:
        from scipy import stats

        return stats.t.ppf(q, df)
    except ImportError:  # pragma: no cover
        import mpmath

        def one(d):
            return float(mpmath.findroot(lambda x: 1 - t_sf(float(x), d) - q, 2.0))
        return np.vectorize(one)(np.asarray(df, float))


def norm_sf(z):
    return 0.5 * np.vectorize(math.erfc)(np.asarray(z, float) / math.sqrt(2))


def ols(y, x, mask=None, axis: int = -1) -> dict:
    """OLS ``y = a + b x + e`` along ``axis`` (observations), vectorised over the other axes.

    Returns arrays ``b, a, se, t, p, df, n, ci_lo, ci_hi`` (95% CI ``b +- t_{.975, df} se``,
    ``p`` two-sided, ``df = n - 2``).  ``mask`` marks the observations used.  Undefined
    statistics (``n < 3``, no variance in ``x``, zero residual variance) are NaN (``t``
    is +-inf when the fit is exact but ``b != 0``).
    """
    y = np.moveaxis(np.asarray(y, np.float64), axis, -1)
    x = np.moveaxis(np.broadcast_to(np.asarray(x, np.float64), np.shape(y)) if np.ndim(x) < np.ndim(y)
                    else np.asarray(x, np.float64), axis, -1)
    x = np.broadcast_to(x, y.shape)
    w = np.ones(y.shape) if mask is None else np.broadcast_to(np.moveaxis(np.asarray(mask, bool), axis, -1), y.shape).astype(np.float64)
    n = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (w * x).sum(-1) / n, (w * y).sum(-1) / n
        dx, dy = x - mx[..., None], y - my[..., None]
        sxx, sxy, syy = (w * dx * dx).sum(-1), (w * dx * dy).sum(-1), (w * dy * dy).sum(-1)
        b = np.where(sxx > 0, sxy / sxx, np.nan)
        a = my - b * mx
        df = n - 2
        rss = np.maximum(syy - b * sxy, 0.0)
        s2 = np.where(df > 0, rss / df, np.nan)
        se = np.sqrt(s2 / sxx)
        tol = 1e-12 * np.maximum(syy, 1e-300)
        se = np.where(rss <= tol, 0.0, se)
        t = b / se
        t = np.where((se == 0) & (np.abs(b) <= 1e-15), np.nan, t)
        p = np.where(np.isfinite(t), 2 * t_sf(np.abs(np.nan_to_num(t)), np.maximum(df, 1)), np.where(np.isnan(t), np.nan, 0.0))
        q = np.where(df > 0, t_ppf(0.975, np.maximum(df, 1)), np.nan)
    return {"b": b, "a": a, "se": se, "t": t, "p": p, "df": df, "n": n, "ci_lo": b - q * se, "ci_hi": b + q * se}


def paired_greater(a, b) -> tuple[float, float, int]:
    """One-sided paired t-test of ``mean(a - b) > 0`` over finite pairs: ``(mean diff, p, n)``."""
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        return (float(d.mean()) if n else float("nan")), float("nan"), n
    sd = d.std(ddof=1)
    if sd == 0:
        return float(d.mean()), (0.0 if d.mean() > 0 else 1.0), n
    t = d.mean() / (sd / math.sqrt(n))
    return float(d.mean()), float(t_sf(t, n - 1)), n
