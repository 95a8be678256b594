"""Exactness bounds for compiled attention, derived with sympy.

A compiled head scores every *selected* key at ``beta * s*`` and every other
key (the BOS key included) at most ``beta * (s* - Delta)``.  Selected keys tie
exactly (their scores come from clean one-hot inputs), so with ``w >= 1``
selected keys among ``T`` keys, softmax gives each selected key weight
``a = e^{beta s*} / Z`` and the target output is their mean ``v*``.  Since the
weights sum to one and the selected ones are equal,

    o - v* = sum_{j not selected} a_j (v_j - v*),

hence ``|o - v*| <= eps * max_j |v_j - v*|`` with the leaked mass

    eps = R / (w e^{beta s*} + R),   R = sum_{j not selected} e^{beta s_j} <= (T - w) e^{beta (s* - Delta)},

    eps <= (T - w) e^{-beta Delta} / (w + (T - w) e^{-beta Delta}) <= (T - 1) e^{-beta Delta}.

A consumer that absorbs input errors up to ``eta`` (the dead zone of the
next threshold MLP, or an output tolerance) is safe when
``eps * M <= eta``, ``M`` the largest value deviation: that gives the
smallest inverse temperature

    beta_min = log((T - 1) M / eta) / Delta.

Errors are carried through layers additively: a head whose values already
carry error ``e_in`` outputs error at most ``e_in + eps M``; a threshold MLP
whose input error lies within its dead zone outputs the clean value exactly
(error 0).  :func:`min_beta` evaluates the sympy expression.
"""

from __future__ import annotations

import functools

import sympy as sp

T, w, beta, Delta, M, eta = sp.symbols("T w beta Delta M eta", positive=True)

#: exact leaked mass in the worst case: every non-selected key at the largest allowed score
LEAK_EXACT = (T - w) * sp.exp(-beta * Delta) / (w + (T - w) * sp.exp(-beta * Delta))
#: the bound used by the compiler (w >= 1)
LEAK_BOUND = (T - 1) * sp.exp(-beta * Delta)
#: the error of one head: leaked mass times the largest value deviation
HEAD_ERROR = LEAK_BOUND * M
#: the smallest beta for which HEAD_ERROR <= eta
BETA_MIN = sp.solve(sp.Eq(HEAD_ERROR, eta), beta)[0]


@functools.lru_cache(maxsize=None)
def _beta_min_fn():
    return sp.lambdify((T, M, eta, Delta), BETA_MIN, "math")


def min_beta(n_keys: int, max_dev: float, slack: float, gap: float) -> float:
    """``log((n_keys - 1) * max_dev / slack) / gap`` (0 when nothing can leak)."""
    if n_keys <= 1 or max_dev <= 0:
        return 0.0
    return max(float(_beta_min_fn()(n_keys, max_dev, slack, gap)), 0.0)


def leak_bound(n_keys: int, beta_: float, gap: float) -> float:
    """``(n_keys - 1) e^{-beta gap}``: the leaked attention mass bound."""
    return float(LEAK_BOUND.subs({T: n_keys, beta: beta_, Delta: gap}))


def check_bound_dominates_exact() -> bool:
    """Symbolic check that the exact worst-case leak never exceeds the bound for ``1 <= w <= T``.

    With ``x = e^{-beta Delta}``: ``(T-w) x / w - LEAK_EXACT = (T-w)^2 x^2 / (w (w + (T-w) x)) >= 0``
    (dropping a positive term from the denominator), and
    ``(T - 1) - (T - w)/w = T (w - 1) / w >= 0`` for ``w >= 1``.
    """
    x = sp.Symbol("x", positive=True)
    exact = (T - w) * x / (w + (T - w) * x)
    gap1 = sp.simplify((T - w) * x / w - exact - (T - w) ** 2 * x ** 2 / (w * (w + (T - w) * x)))
    gap2 = sp.simplify((T - 1) - (T - w) / w - T * (w - 1) / w)
    return gap1 == 0 and gap2 == 0
