"""The reference interpreter: runs a program (``theory/program.py``) on one input.

This is the specification of the dialect.  Each node is evaluated by a short
function that reads like its definition, over plain Python lists (one value per
position) and selector matrices ``sel[q][k]``; nothing here is shared with the
compiler.

:func:`interpret` returns a :class:`~algeval.theory.trace.Trace` whose
``answer`` is the program's output at every position (a tuple) and whose
``variables`` hold every node under its label, with a first ``step`` axis of
length 1 (a program is one parallel pass):

==============  =====================================  =========================
kind            array                                  axes
==============  =====================================  =========================
Categorical     object array of the values (None =     (step, position)
                no value)
Numerical       float64                                (step, position)
SetOf           bool indicators, universe order        (step, position, element)
SetFraction     float64 fractions, universe order      (step, position, element)
selector        bool ``sel[q][k]``                     (step, query, key)
==============  =====================================  =========================

Run-time violations of a program's contract (an input token outside the
vocabulary, a categorical Aggregate over differing values, a value outside a
declared kind) raise :class:`~algeval.errors.ParameterError`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from algeval.errors import ParameterError
from algeval.theory.program import (
    Aggregate,
    And,
    Categorical,
    Contains,
    Expr,
    Indices,
    Map,
    Numerical,
    Select,
    SelectBest,
    SelectorWidth,
    SequenceMap,
    SetFraction,
    SetFromCategorical,
    SetOf,
    SetUnion,
    SOp,
    Threshold,
    Tokens,
    fits,
    topological,
    zero,
)
from algeval.theory.trace import Trace

__all__ = ["interpret", "interpret_batch", "evaluate"]

Env = dict[str, list]  # label -> per-position values, or a selector matrix [query][key]


def _output(node: SOp, value: Any) -> Any:
    """``value`` in the canonical form of ``node.kind``; an error if it is outside the kind."""
    kind = node.kind
    if not fits(kind, value):
        _fail(node, value)
    if isinstance(kind, Categorical):
        return kind.values[kind.index(value)]
    if isinstance(kind, Numerical):
        return float(value)
    if isinstance(kind, SetOf):
        return frozenset(value)
    return tuple(float(v) for v in value)


def _fail(node: Expr, value: Any):
    raise ParameterError(node.label, value, f"outside the declared kind {node.kind}")


def _mean(xs: list) -> float:
    """The exact mean, rounded once (matches the derived Numerical domains)."""
    return float(sum(Fraction(x) for x in xs) / len(xs))


# ------------------------------------------------------------------ per-node semantics


def _tokens(node: Tokens, env: Env, xs: tuple) -> list:
    for q, x in enumerate(xs):
        if not fits(node.kind, x):
            raise ParameterError("tokens", list(xs), f"token {x!r} at {q} not in vocabulary {node.kind.values}")
    return [_output(node, x) for x in xs]


def _indices(node: Indices, env: Env, xs: tuple) -> list:
    return list(range(len(xs)))


def _map(node: Map, env: Env, xs: tuple) -> list:
    return [zero(node.kind) if a is None else _output(node, node.f(a)) for a in env[node.inner.label]]


def _sequence_map(node: SequenceMap, env: Env, xs: tuple) -> list:
    return [
        zero(node.kind) if a is None or b is None else _output(node, node.f(a, b))
        for a, b in zip(env[node.a.label], env[node.b.label])
    ]


def _set_union(node: SetUnion, env: Env, xs: tuple) -> list:
    return [a | b for a, b in zip(env[node.a.label], env[node.b.label])]


def _set_from(node: SetFromCategorical, env: Env, xs: tuple) -> list:
    return [frozenset() if x is None else frozenset([x]) for x in env[node.x.label]]


def _threshold(node: Threshold, env: Env, xs: tuple) -> list:
    if isinstance(node.x.kind, Numerical):
        return [x > node.t for x in env[node.x.label]]
    universe = node.kind.universe
    return [frozenset(u for u, f in zip(universe, fr) if f > node.t) for fr in env[node.x.label]]


def _contains(node: Contains, env: Env, xs: tuple) -> list:
    return [x is not None and x in s for s, x in zip(env[node.s.label], env[node.x.label])]


def _select(node: Select, env: Env, xs: tuple) -> list:
    keys, queries = env[node.keys.label], env[node.queries.label]
    return [[node.predicate(k, q) for k in keys] for q in queries]


def _and(node: And, env: Env, xs: tuple) -> list:
    a, b = env[node.a.label], env[node.b.label]
    return [[x and y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]


def _selector_width(node: SelectorWidth, env: Env, xs: tuple) -> list:
    return [sum(row) for row in env[node.selector.label]]


def _aggregate(node: Aggregate, env: Env, xs: tuple) -> list:
    sel, vals, out = env[node.selector.label], env[node.sop.label], []
    for q, row in enumerate(sel):
        chosen = [v for v, s in zip(vals, row) if s]
        if not chosen:
            out.append(zero(node.kind) if node.default is None else _output(node, node.default))
        elif isinstance(node.sop.kind, Numerical):
            out.append(_output(node, _mean(chosen)))
        elif isinstance(node.sop.kind, SetOf):
            universe = node.sop.kind.universe
            out.append(_output(node, [_mean([u in s for s in chosen]) for u in universe]))
        elif all(v == chosen[0] for v in chosen):
            out.append(chosen[0])
        else:
            raise ParameterError("tokens", list(xs), f"{node.label}: categorical Aggregate averages "
                                 f"differing values {sorted(set(map(repr, chosen)))} at query {q}")
    return out


def _select_best(node: SelectBest, env: Env, xs: tuple) -> list:
    sel, score, vals = env[node.selector.label], env[node.score.label], env[node.sop.label]
    out = []
    for row in sel:
        chosen = [k for k, s in enumerate(row) if s]
        if not chosen:
            out.append(node.default)
        else:
            best = max(chosen, key=lambda k: (score[k], k))  # ties: the largest position
            out.append(vals[best])
    return out


_SEMANTICS = {
    Tokens: _tokens,
    Indices: _indices,
    Map: _map,
    SequenceMap: _sequence_map,
    SetUnion: _set_union,
    SetFromCategorical: _set_from,
    Threshold: _threshold,
    Contains: _contains,
    Select: _select,
    And: _and,
    SelectorWidth: _selector_width,
    Aggregate: _aggregate,
    SelectBest: _select_best,
}


# ------------------------------------------------------------------ traces


def _record(node: Expr, values: list) -> tuple[np.ndarray, tuple[str, ...]]:
    """One node's values as a step-1 array and its axis names."""
    if not isinstance(node, SOp):
        return np.array([values], dtype=bool).reshape(1, len(values), len(values)), ("step", "query", "key")
    kind = node.kind
    if isinstance(kind, Categorical):
        arr = np.empty((1, len(values)), dtype=object)
        for q, v in enumerate(values):  # element-wise: values may themselves be tuples
            arr[0, q] = v
        return arr, ("step", "position")
    if isinstance(kind, Numerical):
        return np.array([values], dtype=np.float64), ("step", "position")
    if isinstance(kind, SetOf):
        arr = [[u in s for u in kind.universe] for s in values]
        return np.array([arr], dtype=bool).reshape(1, len(values), -1), ("step", "position", "element")
    assert isinstance(kind, SetFraction)
    return np.array([values], dtype=np.float64).reshape(1, len(values), -1), ("step", "position", "element")


def evaluate(program: SOp, tokens: Sequence) -> dict[str, list]:
    """Every node's per-position values (selectors: ``[query][key]`` matrices), by label."""
    if not isinstance(program, SOp):
        raise ParameterError("program", program, "must be an SOp")
    xs = tuple(tokens)
    if not xs:
        raise ParameterError("tokens", list(xs), "must be non-empty")
    if program.max_len is not None and len(xs) > program.max_len:
        raise ParameterError("tokens", list(xs), f"length {len(xs)} exceeds max_len={program.max_len}")
    env: Env = {}
    for node in topological(program):
        env[node.label] = _SEMANTICS[type(node)](node, env, xs)
    return env


def interpret(program: SOp, tokens: Sequence) -> Trace:
    """Run ``program`` on ``tokens``; a Trace named after the program's label."""
    env = evaluate(program, tokens)
    variables, axes = {}, {}
    for node in topological(program):
        variables[node.label], axes[node.label] = _record(node, env[node.label])
    answer = tuple(env[program.label])
    return Trace(algorithm=program.label, answer=answer, variables=variables, axes=axes)


def interpret_batch(program: SOp, inputs: Sequence[Sequence]) -> list[Trace]:
    """:func:`interpret` on every input sequence."""
    return [interpret(program, xs) for xs in inputs]
