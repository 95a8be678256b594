"""A RASP dialect with set-valued variables: the AST of the construction stack.

A *program* is a DAG of frozen nodes.  Every :class:`SOp` denotes one value per
position of the input sequence ``x_0 .. x_{n-1}``; every :class:`Selector`
denotes an ``n x n`` boolean matrix ``sel[q][k]`` (query ``q`` attends to key
``k``).  The interpreter (``theory/interpret.py``) is the specification of what
each node computes; a compiler may only *read* this module.

Value kinds (the type of an SOp, fixing its residual-stream encoding):

* :class:`Categorical` ``(values)``  one of finitely many hashable values (one-hot);
  ``None`` is the reserved *no value* (the zero vector) and never a declared value;
* :class:`Numerical` ``(values)``    a real number from a declared finite set (one
  dimension; the set lets a compiler build exact discretising MLPs);
* :class:`SetOf` ``(universe)``      a subset of a finite universe (indicator vector);
* :class:`SetFraction` ``(universe, values)``  per element ``u`` the fraction of
  selected keys whose set contains ``u`` (the output of ``Aggregate`` over a
  ``SetOf``); its only legal consumer is :class:`Threshold`.

Primitives (``n`` = sequence length, ``S_q = {k : sel[q][k]}``):

======================  =================================================  =========
node                    value at position ``q``                             layer
======================  =================================================  =========
Tokens                  ``x_q``                                             input
Indices                 ``q``                                               input
Map(f, a)               ``f(a_q)``                                          MLP
SequenceMap(f, a, b)    ``f(a_q, b_q)``                                     MLP
Aggregate(sel, a)       ``mean_{k in S_q} a_k`` (``default`` if empty)      attention
SelectBest(sel, s, a)   ``a_{k*}``, ``k* = argmax_{k in S_q} (s_k, k)``      attention
SelectorWidth(sel)      ``|S_q|``                                           attention
SetUnion(a, b)          ``a_q ∪ b_q``                                       MLP
SetFromCategorical(a)   ``{a_q}``                                           MLP
Threshold(a, t)         ``a_q > t`` (numerical) / ``{u : a_q[u] > t}``      MLP
Contains(s, a)          ``a_q ∈ s_q``                                       MLP
Select(k, q, p)         ``sel[q][k] = p(keys_k, queries_q)``                (selector)
And(s1, s2)             ``s1[q][k] and s2[q][k]``                           (selector)
======================  =================================================  =========

*No value* (``None``) propagates as the zero vector does through a compiled
layer: an MLP whose input is ``None`` outputs the zero of its kind (``None``,
``0.0`` or the empty set); ``None`` never satisfies a predicate; ``{None} = ∅``;
``None ∈ s`` is false.

Nodes are frozen dataclasses compared by identity (the inputs Tokens and
Indices by value); within one program labels are unique (:func:`topological`
checks), so a compiler should key by label.  Every node carries ``max_len``,
the bound its inputs declare (all inputs must agree), or None.
Every node validates its arguments at construction and raises
:class:`~algeval.errors.ParameterError` naming the bad argument.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, NamedTuple

from algeval.errors import ParameterError

__all__ = [
    "Categorical", "Numerical", "SetOf", "SetFraction", "Kind", "BOOL", "zero", "fits",
    "Expr", "SOp", "Selector", "Tokens", "Indices", "Map", "SequenceMap", "SetUnion",
    "SetFromCategorical", "Threshold", "Contains", "Predicate", "Select", "And", "Aggregate",
    "SelectBest", "SelectorWidth", "ATTENTION", "MLP", "dependencies", "topological", "Depth", "depth",
]

MAX_DERIVED_VALUES = 100_000  # larger derived Numerical domains must be declared


# ------------------------------------------------------------------ value kinds


def _dedupe(name: str, values: Any) -> tuple:
    try:
        vals = tuple(dict.fromkeys(values))
    except TypeError as e:
        raise ParameterError(name, values, f"values must be hashable ({e})") from None
    if not vals:
        raise ParameterError(name, values, "must be non-empty")
    if any(v is None for v in vals):
        raise ParameterError(name, values, "None is reserved for 'no value'")
    return vals


def _reals(name: str, values: Any) -> tuple[float, ...]:
    try:
        vals = sorted({float(v) for v in values})
    except (TypeError, ValueError):
        raise ParameterError(name, values, "must be real numbers") from None
    if not vals or not all(math.isfinite(v) for v in vals):
        raise ParameterError(name, values, "must be non-empty and finite")
    return tuple(vals)


@dataclass(frozen=True)
class Categorical:
    """One of ``values`` (distinct, hashable, not ``None``); encoded one-hot in that order."""

    values: tuple

    def __post_init__(self):
        object.__setattr__(self, "values", _dedupe("values", self.values))

    def index(self, value: Any) -> int:
        """Position of ``value`` in :attr:`values` (hash and ``==``); ``KeyError`` if absent."""
        return self._positions[value]

    @functools.cached_property
    def _positions(self) -> dict:
        return {v: i for i, v in enumerate(self.values)}


@dataclass(frozen=True)
class Numerical:
    """A real number from ``values`` (stored sorted, as floats); encoded in one dimension."""

    values: tuple

    def __post_init__(self):
        object.__setattr__(self, "values", _reals("values", self.values))

    @functools.cached_property
    def _members(self) -> frozenset:
        return frozenset(self.values)


@dataclass(frozen=True)
class SetOf:
    """A subset of ``universe``; encoded as an indicator vector in universe order."""

    universe: tuple

    def __post_init__(self):
        object.__setattr__(self, "universe", _dedupe("universe", self.universe))

    @functools.cached_property
    def _members(self) -> frozenset:
        return frozenset(self.universe)


@dataclass(frozen=True)
class SetFraction:
    """Per universe element a fraction in ``values`` (a subset of ``[0, 1]``); only ``Threshold`` reads it."""

    universe: tuple
    values: tuple

    def __post_init__(self):
        object.__setattr__(self, "universe", _dedupe("universe", self.universe))
        object.__setattr__(self, "values", _reals("values", self.values))

    @functools.cached_property
    def _members(self) -> frozenset:
        return frozenset(self.values)


Kind = Categorical | Numerical | SetOf | SetFraction
BOOL = Categorical((False, True))


def zero(kind: Kind) -> Any:
    """The value a zero vector decodes to: ``None``, ``0.0``, ``∅`` or all-zero fractions."""
    if isinstance(kind, Categorical):
        return None
    if isinstance(kind, Numerical):
        return 0.0
    if isinstance(kind, SetOf):
        return frozenset()
    return (0.0,) * len(kind.universe)


def fractions_upto(max_len: int) -> tuple[float, ...]:
    """``{k/m : 0 <= k <= m <= max_len}`` as floats (exactly ``float(Fraction(k, m))``)."""
    return tuple(sorted({float(Fraction(k, m)) for m in range(1, max_len + 1) for k in range(m + 1)}))


def means_upto(values: tuple[float, ...], max_len: int) -> tuple[float, ...]:
    """Every mean of a multiset of 1..max_len elements of ``values`` (floats of exact means)."""
    out, sums = set(), {Fraction(0)}
    for m in range(1, max_len + 1):
        sums = {s + Fraction(v) for s in sums for v in values}
        if len(sums) > MAX_DERIVED_VALUES:
            raise ParameterError("kind", None, f"derived mean domain exceeds {MAX_DERIVED_VALUES} "
                                 "values; declare kind=Numerical(values)")
        out |= {float(s / m) for s in sums}
    return tuple(sorted(out))


def fits(kind: Kind, value: Any) -> bool:
    """Whether ``value`` is a declared value of ``kind`` (``None`` is not)."""
    try:
        if isinstance(kind, Categorical):
            return value is not None and value in kind._positions
        if isinstance(kind, Numerical):
            return not isinstance(value, str) and float(value) in kind._members
        if isinstance(kind, SetOf):
            return set(value) <= kind._members
        return len(value) == len(kind.universe) and all(float(v) in kind._members for v in value)
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------ node base

_ids = itertools.count(1)


def _check_sop(name: str, x: Any, *kinds: type) -> "SOp":
    if not isinstance(x, SOp):
        raise ParameterError(name, x, "must be an SOp")
    if kinds and not isinstance(x.kind, kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise ParameterError(name, x.label, f"kind {type(x.kind).__name__} must be {want}")
    return x


def _check_selector(name: str, x: Any) -> "Selector":
    if not isinstance(x, Selector):
        raise ParameterError(name, x, "must be a Select or And")
    return x


@dataclass(frozen=True, eq=False, repr=False)
class Expr:
    """Base of every node: a unique ``label`` and the ``max_len`` its inputs declare (or None)."""

    label: str | None = field(default=None, kw_only=True)
    max_len: int | None = field(default=None, init=False)

    def children(self) -> tuple["Expr", ...]:
        """The direct dependencies, in a fixed order."""
        return ()

    def named(self, label: str):
        """A copy of this node labelled ``label``."""
        return dataclasses.replace(self, label=label)

    def _finish(self, prefix: str, max_len: int | None = None) -> None:
        if self.label is None:
            object.__setattr__(self, "label", f"{prefix}_{next(_ids)}")
        elif not isinstance(self.label, str) or not self.label:
            raise ParameterError("label", self.label, "must be a non-empty string")
        lens = {c.max_len for c in self.children() if c.max_len is not None}
        lens |= {max_len} if max_len is not None else set()
        if len(lens) > 1:
            raise ParameterError("max_len", sorted(lens), f"inputs of {self.label} disagree")
        object.__setattr__(self, "max_len", lens.pop() if lens else None)

    def _need_max_len(self, what: str) -> int:
        if self.max_len is None:
            raise ParameterError("max_len", None, f"{what} needs Indices(max_len) or Tokens(max_len=...) upstream")
        return self.max_len

    def __repr__(self) -> str:
        kind = getattr(self, "kind", None)
        return f"{type(self).__name__}({self.label}" + (f": {kind})" if kind is not None else ")")


class SOp(Expr):
    """A sequence operation: one value of kind ``self.kind`` per position."""

    kind: Kind


class Selector(Expr):
    """An attention pattern: ``sel[q][k]`` for query ``q``, key ``k``."""


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True, repr=False)
class Tokens(SOp):
    """The input token at each position; ``max_len`` (keyword) optionally bounds the length.

    Compared by value (kind, max_len, label), so re-creating the same input is harmless.
    """

    kind: Categorical
    max_len: int | None = field(default=None, kw_only=True)
    label: str | None = field(default="tokens", kw_only=True)

    def __post_init__(self):
        if not isinstance(self.kind, Categorical):
            raise ParameterError("kind", self.kind, "Tokens kind must be Categorical")
        if self.max_len is not None:
            _check_len(self.max_len)
        self._finish("tokens", self.max_len)


@dataclass(frozen=True, repr=False)
class Indices(SOp):
    """The position ``0 .. max_len-1``, Categorical."""

    max_len: int
    kind: Categorical = field(init=False)
    label: str | None = field(default="indices", kw_only=True)

    def __post_init__(self):
        _check_len(self.max_len)
        object.__setattr__(self, "kind", Categorical(tuple(range(self.max_len))))
        self._finish("indices", self.max_len)


def _check_len(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError("max_len", n, "must be a positive int")


# ------------------------------------------------------------------ MLP primitives


def _image(name: str, f: Callable, args: list[tuple], kind: Any, default_cls: type) -> Kind:
    """The output kind of ``f`` over the argument tuples ``args``: declared (checked) or derived."""
    try:
        outs = [f(*a) for a in args]
    except Exception as e:  # noqa: BLE001 - any failure of user code on a declared input
        raise ParameterError("f", getattr(f, "__name__", f), f"fails on a declared input ({e!r})") from None
    cls = kind if isinstance(kind, type) else type(kind) if kind is not None else default_cls
    if kind is None or isinstance(kind, type):
        if cls is Categorical:
            return Categorical(outs)
        if cls is Numerical:
            return Numerical(outs)
        raise ParameterError("kind", kind, "derivable only as Categorical or Numerical; declare SetOf(universe)")
    if not isinstance(kind, (Categorical, Numerical, SetOf)):
        raise ParameterError("kind", kind, "must be Categorical, Numerical or SetOf")
    bad = [o for o in outs if not fits(kind, o)]
    if bad:
        raise ParameterError("kind", kind, f"f returns {bad[0]!r} outside the declared kind")
    return kind


@dataclass(frozen=True, eq=False, repr=False)
class Map(SOp):
    """``f(a_q)`` elementwise.  ``kind``: None (derived Categorical), a class (derived), or declared.

    The input must be Categorical or Numerical; the output domain is ``f`` over the input's values.
    """

    f: Callable
    inner: SOp
    kind: Any = None

    def children(self):
        return (self.inner,)

    def __post_init__(self):
        if not callable(self.f) or isinstance(self.f, Expr):
            raise ParameterError("f", self.f, "must be a callable")
        _check_sop("inner", self.inner, Categorical, Numerical)
        vals = self.inner.kind.values
        object.__setattr__(self, "kind", _image("f", self.f, [(v,) for v in vals], self.kind, Categorical))
        self._finish("map")


@dataclass(frozen=True, eq=False, repr=False)
class SequenceMap(SOp):
    """``f(a_q, b_q)`` elementwise; domain ``f`` over the product of the inputs' values."""

    f: Callable
    a: SOp
    b: SOp
    kind: Any = None

    def children(self):
        return (self.a, self.b)

    def __post_init__(self):
        if not callable(self.f) or isinstance(self.f, Expr):
            raise ParameterError("f", self.f, "must be a callable")
        _check_sop("a", self.a, Categorical, Numerical)
        _check_sop("b", self.b, Categorical, Numerical)
        args = list(itertools.product(self.a.kind.values, self.b.kind.values))
        object.__setattr__(self, "kind", _image("f", self.f, args, self.kind, Categorical))
        self._finish("sequence_map")


@dataclass(frozen=True, eq=False, repr=False)
class SetUnion(SOp):
    """``a_q ∪ b_q``; both SetOf over the same universe (as a set; the output keeps a's order)."""

    a: SOp
    b: SOp
    kind: SetOf = field(init=False)

    def children(self):
        return (self.a, self.b)

    def __post_init__(self):
        _check_sop("a", self.a, SetOf)
        _check_sop("b", self.b, SetOf)
        if set(self.a.kind.universe) != set(self.b.kind.universe):
            raise ParameterError("b", self.b.label, f"universe {self.b.kind.universe} != {self.a.kind.universe}")
        object.__setattr__(self, "kind", self.a.kind)
        self._finish("set_union")


@dataclass(frozen=True, eq=False, repr=False)
class SetFromCategorical(SOp):
    """``{x_q}`` (``∅`` when ``x_q`` is None); ``universe`` defaults to x's values and must contain them."""

    x: SOp
    universe: tuple | None = None
    kind: SetOf = field(init=False)

    def children(self):
        return (self.x,)

    def __post_init__(self):
        _check_sop("x", self.x, Categorical)
        universe = self.x.kind.values if self.universe is None else self.universe
        kind = SetOf(universe)
        if not set(self.x.kind.values) <= set(kind.universe):
            raise ParameterError("universe", universe, f"must contain every value of {self.x.label}")
        object.__setattr__(self, "universe", kind.universe)
        object.__setattr__(self, "kind", kind)
        self._finish("set_from")


@dataclass(frozen=True, eq=False, repr=False)
class Threshold(SOp):
    """Numerical x: the bool ``x_q > t``.  SetFraction x: the SetOf ``{u : x_q[u] > t}``."""

    x: SOp
    t: float
    kind: Kind = field(init=False)

    def children(self):
        return (self.x,)

    def __post_init__(self):
        _check_sop("x", self.x, Numerical, SetFraction)
        if isinstance(self.t, bool) or not isinstance(self.t, (int, float)) or not math.isfinite(self.t):
            raise ParameterError("t", self.t, "must be a finite real")
        kind = BOOL if isinstance(self.x.kind, Numerical) else SetOf(self.x.kind.universe)
        object.__setattr__(self, "kind", kind)
        self._finish("threshold")


@dataclass(frozen=True, eq=False, repr=False)
class Contains(SOp):
    """The bool ``x_q ∈ s_q`` (false when ``x_q`` is None)."""

    s: SOp
    x: SOp
    kind: Categorical = field(init=False)

    def children(self):
        return (self.s, self.x)

    def __post_init__(self):
        _check_sop("s", self.s, SetOf)
        _check_sop("x", self.x, Categorical)
        object.__setattr__(self, "kind", BOOL)
        self._finish("contains")


# ------------------------------------------------------------------ selectors


class Predicate(enum.Enum):
    """``predicate(key, query)``; ``None`` on either side never satisfies it."""

    EQ = "=="
    NEQ = "!="
    LT = "<"
    LEQ = "<="
    GT = ">"
    GEQ = ">="
    TRUE = "true"
    FALSE = "false"
    MEMBER = "in"  # key ∈ query, query a SetOf

    def __call__(self, key: Any, query: Any) -> bool:
        if key is None or query is None:
            return False
        return bool(_PREDICATES[self](key, query))


_PREDICATES = {
    Predicate.EQ: lambda k, q: k == q,
    Predicate.NEQ: lambda k, q: k != q,
    Predicate.LT: lambda k, q: k < q,
    Predicate.LEQ: lambda k, q: k <= q,
    Predicate.GT: lambda k, q: k > q,
    Predicate.GEQ: lambda k, q: k >= q,
    Predicate.TRUE: lambda k, q: True,
    Predicate.FALSE: lambda k, q: False,
    Predicate.MEMBER: lambda k, q: k in q,
}


@dataclass(frozen=True, eq=False, repr=False)
class Select(Selector):
    """``sel[q][k] = predicate(keys_k, queries_q)``.

    Keys and queries are Categorical; for MEMBER the query is a SetOf instead.
    Order predicates must be defined on every (key value, query value) pair.
    """

    keys: SOp
    queries: SOp
    predicate: Predicate

    def children(self):
        return (self.keys, self.queries)

    def __post_init__(self):
        if not isinstance(self.predicate, Predicate):
            raise ParameterError("predicate", self.predicate, "must be a Predicate")
        _check_sop("keys", self.keys, Categorical)
        if self.predicate is Predicate.MEMBER:
            _check_sop("queries", self.queries, SetOf)
        else:
            _check_sop("queries", self.queries, Categorical)
            try:
                for k, q in itertools.product(self.keys.kind.values, self.queries.kind.values):
                    self.predicate(k, q)
            except TypeError as e:
                raise ParameterError("predicate", self.predicate.name, f"undefined on key/query values ({e})") from None
        self._finish("select")


@dataclass(frozen=True, eq=False, repr=False)
class And(Selector):
    """``a[q][k] and b[q][k]`` (both selectors' inputs must agree on max_len)."""

    a: Selector
    b: Selector

    def children(self):
        return (self.a, self.b)

    def __post_init__(self):
        _check_selector("a", self.a)
        _check_selector("b", self.b)
        self._finish("and")


# ------------------------------------------------------------------ attention primitives


def _with_default(name: str, kind: Kind, default: Any) -> Kind:
    """``kind`` widened so that ``default`` is a legal value of it."""
    if default is None:
        return kind
    if isinstance(kind, Categorical):
        return kind if default in kind.values else Categorical(kind.values + (default,))
    if isinstance(kind, Numerical):
        d = _reals(name, (default,))[0]
        return kind if d in kind.values else Numerical(kind.values + (d,))
    if isinstance(kind, SetOf):
        if not isinstance(default, (set, frozenset)) or not default <= set(kind.universe):
            raise ParameterError(name, default, "must be a subset of the universe")
        return kind
    raise ParameterError(name, default, "SetFraction has no default but zeros")


@dataclass(frozen=True, eq=False, repr=False)
class Aggregate(SOp):
    """``mean_{k in S_q} sop_k``; ``default`` when ``S_q`` is empty.

    * Numerical sop -> Numerical (exact mean); default 0.0 unless given.  Derived
      kind: every mean of 1..max_len declared values, plus the default.
    * Categorical sop -> Categorical: all selected values must be equal (the mean
      of equal one-hots); differing values are an error at run time.  Default
      None (no value) unless given (then added to the values).
    * SetOf sop -> SetFraction(universe, fractions k/m, m <= max_len): the
      elementwise mean of indicators; empty selection gives all zeros.
    """

    selector: Selector
    sop: SOp
    kind: Any = None
    default: Any = None

    def children(self):
        return (self.selector, self.sop)

    def __post_init__(self):
        _check_selector("selector", self.selector)
        _check_sop("sop", self.sop, Categorical, Numerical, SetOf)
        self._finish("aggregate")  # max_len first: derived kinds need it
        sk, kind = self.sop.kind, self.kind
        if isinstance(sk, SetOf):
            if self.default is not None:
                raise ParameterError("default", self.default, "Aggregate of a SetOf defaults to zeros")
            if kind is None or kind is SetFraction:
                kind = SetFraction(sk.universe, fractions_upto(self._need_max_len("Aggregate of a SetOf")))
            elif not isinstance(kind, SetFraction) or set(kind.universe) != set(sk.universe):
                raise ParameterError("kind", kind, f"must be SetFraction over {sk.universe}")
        elif isinstance(sk, Numerical):
            default = 0.0 if self.default is None else self.default
            object.__setattr__(self, "default", _reals("default", (default,))[0])
            if kind is None or kind is Numerical:
                kind = Numerical(means_upto(sk.values, self._need_max_len("derived Numerical Aggregate")))
            elif not isinstance(kind, Numerical):
                raise ParameterError("kind", kind, "Aggregate of a Numerical sop is Numerical")
            kind = _with_default("default", kind, self.default)
        else:
            if kind is None or kind is Categorical:
                kind = sk
            elif not isinstance(kind, Categorical) or not set(sk.values) <= set(kind.values):
                raise ParameterError("kind", kind, f"must be Categorical containing the values of {self.sop.label}")
            kind = _with_default("default", kind, self.default)
        object.__setattr__(self, "kind", kind)


@dataclass(frozen=True, eq=False, repr=False)
class SelectBest(SOp):
    """Hard attention: ``sop_{k*}`` with ``k* = argmax_{k in S_q} (score_k, k)``.

    Ties on the score go to the largest position.  ``score`` is Numerical or
    Categorical with real values; ``sop`` Categorical, Numerical or SetOf, whose
    kind (widened by ``default``) is the output kind.  Empty ``S_q`` gives
    ``default``: None for Categorical, 0.0 for Numerical, ``∅`` for SetOf unless given.
    """

    selector: Selector
    score: SOp
    sop: SOp
    default: Any = None
    kind: Kind = field(init=False)

    def children(self):
        return (self.selector, self.score, self.sop)

    def __post_init__(self):
        _check_selector("selector", self.selector)
        _check_sop("score", self.score, Numerical, Categorical)
        if isinstance(self.score.kind, Categorical) and not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in self.score.kind.values
        ):
            raise ParameterError("score", self.score.label, "Categorical score values must be real numbers")
        _check_sop("sop", self.sop, Categorical, Numerical, SetOf)
        default = self.default
        if default is None and not isinstance(self.sop.kind, Categorical):
            default = zero(self.sop.kind)
        elif isinstance(default, set):
            default = frozenset(default)
        kind = _with_default("default", self.sop.kind, default)
        if isinstance(kind, Numerical):
            default = float(default)
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "kind", kind)
        self._finish("select_best")


@dataclass(frozen=True, eq=False, repr=False)
class SelectorWidth(SOp):
    """``|S_q|``, Categorical ``0 .. max_len``."""

    selector: Selector
    kind: Categorical = field(init=False)

    def children(self):
        return (self.selector,)

    def __post_init__(self):
        _check_selector("selector", self.selector)
        self._finish("selector_width")
        object.__setattr__(self, "kind", Categorical(tuple(range(self._need_max_len("SelectorWidth") + 1))))


ATTENTION = (Aggregate, SelectBest, SelectorWidth)
MLP = (Map, SequenceMap, SetUnion, SetFromCategorical, Threshold, Contains)


# ------------------------------------------------------------------ graph helpers


def dependencies(expr: Expr) -> tuple[Expr, ...]:
    """The direct children of ``expr``."""
    return expr.children()


def topological(expr: Expr) -> list[Expr]:
    """Every node reachable from ``expr`` (SOps and selectors), children before parents.

    Raises ParameterError("label") if two different nodes share a label (equal
    Tokens/Indices inputs count as the same node).
    """
    order: list[Expr] = []
    by_label: dict[str, Expr] = {}
    seen: set[int] = set()
    stack: list[tuple[Expr, bool]] = [(expr, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            other = by_label.get(node.label)
            if other is None:
                by_label[node.label] = node
                order.append(node)
            elif other is not node and other != node:
                raise ParameterError("label", node.label, "used by two different nodes")
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(node.children()) if id(c) not in seen)
    return order


class Depth(NamedTuple):
    """Longest-path counts from the inputs to a node, the node included."""

    attention: int  # Aggregate / SelectBest / SelectorWidth nodes
    mlp: int  # Map / SequenceMap / SetUnion / SetFromCategorical / Threshold / Contains nodes


def depth(expr: Expr) -> dict[str, Depth]:
    """For every node (by label): the most attention and the most MLP primitives on any input path.

    The two maxima are taken separately (they may come from different paths);
    selectors and inputs add nothing.
    """
    out: dict[str, Depth] = {}
    for node in topological(expr):
        kids = [out[c.label] for c in node.children()]
        a = max((d.attention for d in kids), default=0) + isinstance(node, ATTENTION)
        m = max((d.mlp for d in kids), default=0) + isinstance(node, MLP)
        out[node.label] = Depth(a, m)
    return out
