"""Many class-balanced, penalised logistic regressions at once (the solver behind :mod:`~algeval.sim.analyses.binprobe`).

**Problem.**  A *fit* ``f`` of *output* ``k`` has rows ``i`` with features
``x_i (m,)``, labels ``t_if in {0, 1}`` and weights ``w_if >= 0`` (``0``:
the row is not in the fit; :func:`balanced_weights` puts ``1/2`` on each
class), and solves

    min_{beta, c}  sum_i w_if [log(1 + exp(z_if)) - t_if z_if] + lam_f ||beta||_1 + (l2_f / 2) ||beta||_2^2,
    z_if = x_i . beta + c,

an elastic-net logistic regression with an unpenalised intercept.  With both
classes present and ``lam_f > 0`` or ``l2_f > 0`` the minimum is attained,
also for separable rows.

**Solvers.**  :func:`fista` (any ``lam``, ``l2``): accelerated proximal
gradient with step ``1/L_f``, ``L_f = 1.1 lambda_max(sum_i w_if x_i x_i^T) / 4
+ l2_f`` (power iteration on ``x_i = [features, 1]``), soft-thresholding for
the L1 term, and the gradient restart of O'Donoghue & Candes (momentum
dropped for a fit whose step goes against it).  :func:`newton` (``lam = 0``,
few features): damped Newton, each step the better of the Newton step and
its half, or none.  Both run a fixed number of steps (deterministic) on all
fits of all outputs at once: the math is written once over an array module,
run by numpy for small problems (no compilation) and as one jitted XLA
computation for large ones, with rows and features padded to buckets
(padding rows and fits have weight 0, padding features are 0) so that few
shapes are compiled.

**Lasso on many features** (:func:`l1_logistic`).  Penalties relative to
``lam_max`` (the smallest ``lam`` giving ``beta = 0``: ``max_j |gradient_j|``
at ``beta = 0`` and the weighted class rate as intercept).  Each output is
solved on a *working set* of features, the union over its fits: first the
``support`` features with the largest ``|gradient at 0| / lam``; after a
solve the KKT condition ``|d loss / d beta_j| <= lam_f`` is checked on every
feature outside the set, the worst violators are added and the solve
resumes (at most ``rounds`` times).  ``kkt`` is the largest relative
violation ``|grad_j| / lam_f - 1`` left outside the set (``<= 0``: the
working-set solution is the lasso solution).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from algeval.errors import ParameterError

SUPPORT = 32
ROUNDS = 2
STEPS = 200
ROW_BUCKET = 64
JAX_FROM = 1 << 23   # K R F (m + 1) above which the solvers run jitted (below: numpy, no compilation)


def _sigmoid(xp, z):
    return 0.5 * (1.0 + xp.tanh(0.5 * z))


def _fista_math(xp, loop, X, T, W, lam, l2, B0, steps):
    """FISTA on ``X (K, R, m)``; ``xp`` numpy or jax.numpy, ``loop(n, body, init)`` a for loop."""
    K, R, m = X.shape
    Xa = xp.concatenate([X, xp.ones((K, R, 1), X.dtype)], -1)
    XaT = xp.swapaxes(Xa, 1, 2)
    pen = xp.concatenate([xp.ones(m, X.dtype), xp.zeros(1, X.dtype)])[None, :, None]

    def hv(v):
        return XaT @ (W * (Xa @ v))

    def grad(B):
        return XaT @ (W * (_sigmoid(xp, Xa @ B) - T)) + pen * l2[:, None, :] * B

    def power(_, v):
        u = hv(v)
        return u / (xp.sqrt((u * u).sum(1, keepdims=True)) + 1e-30)

    v = loop(30, power, xp.ones_like(B0))
    step = (1.0 / (0.25 * 1.1 * xp.sqrt((hv(v) ** 2).sum(1)) + l2 + 1e-12))[:, None, :]
    thr = step * lam[:, None, :] * pen

    def body(_, c):
        B, Y, q = c
        G = Y - step * grad(Y)
        Bn = xp.sign(G) * xp.maximum(xp.abs(G) - thr, 0.0)
        qn = 0.5 * (1.0 + xp.sqrt(1.0 + 4.0 * q * q))
        restart = ((Y - Bn) * (Bn - B)).sum(1) > 0
        mom = xp.where(restart, 0.0, (q - 1.0) / qn)
        return Bn, Bn + mom[:, None, :] * (Bn - B), xp.where(restart, 1.0, qn)

    return loop(steps, body, (B0, B0, xp.ones(lam.shape, X.dtype)))[0]


def _newton_math(xp, loop, solve, X, T, W, l2, iters):
    """Damped Newton on ``X (K, R, m)`` (ridge only); ``solve(H, g)`` solves the batched SPD systems."""
    K, R, m = X.shape
    F = T.shape[-1]
    Xa = xp.concatenate([X, xp.ones((K, R, 1), X.dtype)], -1)
    XaT = xp.swapaxes(Xa, 1, 2)
    pen = xp.concatenate([xp.ones(m, X.dtype), xp.zeros(1, X.dtype)])            # (m + 1,)
    steps = xp.asarray([0.5, 1.0], X.dtype)[:, None, None, None]
    ridge = (l2[..., None] * pen + 1e-6)[..., None] * xp.eye(m + 1, dtype=X.dtype)  # (K, F, m + 1, m + 1)

    def objective(Bs):  # (..., K, m + 1, F) -> (..., K, F)
        z = Xa @ Bs
        return (W * (xp.logaddexp(0.0, z) - T * z)).sum(-2) + 0.5 * l2 * (pen[:, None] * Bs * Bs).sum(-2)

    def body(_, c):
        B, cur = c
        p = _sigmoid(xp, Xa @ B)                                                   # (K, R, F)
        g = xp.swapaxes(XaT @ (W * (p - T)), 1, 2) + (l2[..., None] * pen) * xp.swapaxes(B, 1, 2)
        V = xp.swapaxes(W * p * (1 - p), 1, 2)[..., None] * Xa[:, None]            # (K, F, R, m + 1)
        H = xp.swapaxes(V, 2, 3) @ Xa[:, None] + ridge
        d = xp.swapaxes(-solve(H, g), 1, 2)                                        # (K, m + 1, F)
        Bs = B[None] + steps * d[None]                                             # (2, K, m + 1, F)
        vals = objective(Bs)                                                       # (2, K, F)
        j = xp.argmin(vals, axis=0)
        new = xp.take_along_axis(vals, j[None], 0)[0]
        a = xp.where(new < cur, steps[j, 0, 0, 0], 0.0)                            # never increase the objective
        return B + a[:, None, :] * d, xp.minimum(new, cur)

    B0 = xp.zeros((K, m + 1, F), X.dtype)
    return loop(iters, body, (B0, objective(B0)))[0]


def _np_loop(n, body, init):
    x = init
    for i in range(n):
        x = body(i, x)
    return x


def _np_loop_fixed(n, body, init):
    """At most ``n`` steps of ``body``, stopping at a fixed point of its first component (the rest are then
    no-ops too, so the result is that of all ``n`` steps)."""
    x = init
    for i in range(n):
        y = body(i, x)
        if np.array_equal(y[0], x[0]):
            return y
        x = y
    return x


def _jax_loop_fixed(n, body, init):
    def cond(c):
        i, x, moved = c
        return (i < n) & moved

    def step(c):
        i, x, _ = c
        y = body(i, x)
        return i + 1, y, jnp.any(y[0] != x[0])

    return jax.lax.while_loop(cond, step, (0, init, jnp.asarray(True)))[1]


def _np_solve(H, g):
    return np.linalg.solve(H, g[..., None])[..., 0]


def _jax_solve(H, g):
    return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(H), True), g[..., None])[..., 0]


def _jax_loop(n, body, init):
    return jax.lax.fori_loop(0, n, body, init)


_fista_jit = jax.jit(partial(_fista_math, jnp, _jax_loop), static_argnames=("steps",))
_newton_jit = jax.jit(partial(_newton_math, jnp, _jax_loop_fixed, _jax_solve), static_argnames=("iters",))


def _bucket(n: int, b: int) -> int:
    return max(b, -(-n // b) * b)


def _small(K, R, m, F) -> bool:
    """Problems this small run in numpy (no compilation); larger ones as one jitted XLA computation."""
    return K * R * F * (m + 1) <= JAX_FROM


def fista(X, T, W, lam=None, l2=None, B0=None, steps: int | None = None) -> np.ndarray:
    """Solve every fit of the module docstring on given features: ``X (K, R, m)``, ``T, W (K, R, F)``,
    penalties ``lam, l2 (K, F)`` (``None``: 0).  Returns ``(K, m + 1, F)``: ``beta`` rows, then the intercept."""
    steps = STEPS if steps is None else steps
    X = np.asarray(X, np.float32)
    K, R, m = X.shape
    F = np.shape(T)[-1]
    lam = np.zeros((K, F), np.float32) if lam is None else np.asarray(lam, np.float32)
    l2 = np.zeros((K, F), np.float32) if l2 is None else np.asarray(l2, np.float32)
    B0 = np.zeros((K, m + 1, F), np.float32) if B0 is None else np.asarray(B0, np.float32)
    T, W = np.asarray(T, np.float32), np.asarray(W, np.float32)
    if _small(K, R, m, F):
        return _fista_math(np, _np_loop, X, T, W, lam, l2, B0, steps)
    Rb, mb = _bucket(R, ROW_BUCKET), _bucket(m, 8)
    Xp = np.zeros((K, Rb, mb), np.float32)
    Xp[:, :R, :m] = X
    Tp = np.zeros((K, Rb, F), np.float32)
    Tp[:, :R] = T
    Wp = np.zeros((K, Rb, F), np.float32)
    Wp[:, :R] = W
    Bp = np.zeros((K, mb + 1, F), np.float32)
    Bp[:, :m] = B0[:, :m]
    Bp[:, -1] = B0[:, -1]
    B = np.asarray(_fista_jit(jnp.asarray(Xp), jnp.asarray(Tp), jnp.asarray(Wp), jnp.asarray(lam), jnp.asarray(l2),
                              jnp.asarray(Bp), steps=steps))
    return np.concatenate([B[:, :m], B[:, -1:]], 1)


def newton(X, T, W, l2, iters: int = 15) -> np.ndarray:
    """Damped Newton for the ridge-only fits of the module docstring (``lam = 0``, ``l2 > 0``): ``X (K, R, m)``
    (few features), ``T, W (K, R, F)``, ``l2 (K, F)``; each step takes the better of the Newton step and its
    half, or none if neither lowers the objective.  Returns ``(K, m + 1, F)``."""
    X = np.asarray(X, np.float32)
    K, R, m = X.shape
    F = np.shape(T)[-1]
    T, W = np.asarray(T, np.float32), np.asarray(W, np.float32)
    l2 = np.broadcast_to(np.asarray(l2, np.float32), (K, F))
    if _small(K, R, m, F):
        return _newton_math(np, _np_loop_fixed, _np_solve, X, T, W, l2, iters)
    Rb, mb, Fb = _bucket(R, ROW_BUCKET), next(b for b in (1, 4, 16, 64, _bucket(m, 64)) if b >= m), _bucket(F, 8)
    Xp = np.zeros((K, Rb, mb), np.float32)
    Xp[:, :R, :m] = X
    Tp = np.zeros((K, Rb, Fb), np.float32)
    Tp[:, :R, :F] = T
    Wp = np.zeros((K, Rb, Fb), np.float32)
    Wp[:, :R, :F] = W
    lp = np.ones((K, Fb), np.float32)
    lp[:, :F] = l2
    B = np.asarray(_newton_jit(jnp.asarray(Xp), jnp.asarray(Tp), jnp.asarray(Wp), jnp.asarray(lp), iters=iters))
    return np.concatenate([B[:, :m, :F], B[:, -1:, :F]], 1)


def balanced_weights(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Weights ``1 / (2 #pos)`` on positives and ``1 / (2 #neg)`` on negatives, per fit (reduced over axis
    ``-2``, the rows); a fit missing a class gets weight 0 everywhere (it is undefined)."""
    npos = pos.sum(-2, keepdims=True)
    nneg = neg.sum(-2, keepdims=True)
    w = np.where(pos, 0.5 / np.maximum(npos, 1), 0.0) + np.where(neg, 0.5 / np.maximum(nneg, 1), 0.0)
    return (w * ((npos > 0) & (nneg > 0))).astype(np.float32)


def balanced_log_loss(z: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """Mean logistic loss over the positive entries and over the negative ones, averaged (NaN if a class is
    empty): the held-out criterion."""
    if not pos.any() or not neg.any():
        return float("nan")
    return float(0.5 * (np.logaddexp(0.0, -z[pos]).mean() + np.logaddexp(0.0, z[neg]).mean()))


def _grad_rows(Z, rows, G):
    """``sum_r G[k, r, f] Z[rows[k, r]]`` as ``(K, D, F)``: per-row residuals scattered to the shared rows of ``Z``,
    then one matrix product (no ``(K, R, D)`` copy of ``Z``)."""
    K, R, F = G.shape
    S = np.zeros((Z.shape[0], K, F), np.float32)
    np.add.at(S, (rows, np.arange(K)[:, None]), G)
    return (Z.T @ S.reshape(len(Z), K * F)).reshape(Z.shape[1], K, F).transpose(1, 0, 2)


def l1_logistic(Z, rows, T, W, rel, *, support: int | None = None, rounds: int | None = None,
                steps: int | None = None) -> dict:
    """Lasso logistic regressions on the rows ``rows (K, R)`` of ``Z (N, D)`` (module docstring).

    ``T, W (K, R, F)`` labels and weights (pad ``rows`` with any row and weight 0); ``rel (F,)`` or
    ``(K, F)``: penalties relative to each fit's ``lam_max``, in ``(0, 1]``.  Returns ``beta (K, D, F)``,
    ``c (K, F)``, ``lam (K, F)`` (absolute), ``kkt (K, F)`` and ``support`` (working-set size).
    """
    support = SUPPORT if support is None else support
    rounds = ROUNDS if rounds is None else rounds
    steps = STEPS if steps is None else steps
    Z = np.asarray(Z, np.float32)
    rows = np.asarray(rows, np.int64)
    T = np.asarray(T, np.float32)
    W = np.asarray(W, np.float32)
    N, D = Z.shape
    K, R = rows.shape
    F = T.shape[-1]
    if T.shape != (K, R, F) or W.shape != (K, R, F):
        raise ParameterError("T, W", (T.shape, W.shape), f"must both have shape (K, R, F) = {(K, R, F)}")
    rel = np.broadcast_to(np.asarray(rel, np.float32), (K, F))
    if not ((rel > 0) & (rel <= 1)).all():
        raise ParameterError("rel", float(rel.min()), "relative penalties must lie in (0, 1]")
    p0 = (W * T).sum(1) / np.maximum(W.sum(1), 1e-30)                 # (K, F) weighted class rate
    g0 = _grad_rows(Z, rows, W * (p0[:, None, :] - T))                # (K, D, F)
    lam = np.maximum(rel * np.abs(g0).max(1), 1e-12).astype(np.float32)
    m = min(D, max(1, support))
    feats = np.sort(np.argsort(-(np.abs(g0) / lam[:, None, :]).max(-1), axis=1, kind="stable")[:, :m], axis=1)
    B = np.zeros((K, m + 1, F), np.float32)
    B[:, -1] = np.log(np.clip(p0, 1e-6, 1 - 1e-6) / np.clip(1 - p0, 1e-6, 1))
    kkt = np.full((K, F), -np.inf)
    for r in range(rounds + 1):
        B = fista(Z[rows[:, :, None], feats[:, None, :]], T, W, lam, None, B, steps)
        if feats.shape[1] == D:
            kkt = np.full((K, F), -np.inf)
            break
        out = np.ones((K, D), bool)
        np.put_along_axis(out, feats, False, axis=1)
        z = np.matmul(Z[rows[:, :, None], feats[:, None, :]], B[:, :-1]) + B[:, -1][:, None, :]
        grad = _grad_rows(Z, rows, W * (1.0 / (1.0 + np.exp(-z)) - T))
        viol = np.where(out[:, :, None], np.abs(grad) / lam[:, None, :] - 1.0, -np.inf)
        kkt = viol.max(1)
        if r == rounds or (kkt <= 0).all():
            break
        add = np.argsort(-viol.max(-1), axis=1, kind="stable")[:, :min(m, D - feats.shape[1])]
        new = np.sort(np.concatenate([feats, add], 1), axis=1)
        Bn = np.zeros((K, new.shape[1] + 1, F), np.float32)
        for k in range(K):
            Bn[k, np.searchsorted(new[k], feats[k])] = B[k, :-1]
        Bn[:, -1] = B[:, -1]
        feats, B = new, Bn
    beta = np.zeros((K, D, F), np.float32)
    for k in range(K):
        beta[k, feats[k]] = B[k, :-1]
    return {"beta": beta, "c": B[:, -1].copy(), "lam": lam, "kkt": kkt, "support": int(feats.shape[1])}
