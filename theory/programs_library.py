"""Classic programs in the RASP dialect of ``theory/program.py`` (after tracr's ``lib``).

Every maker takes the vocabulary and the maximum length and returns the output
SOp; :data:`LIBRARY` maps a name to a zero-argument maker with default sizes.
Positions are ``0..n-1`` and ``x`` is the input.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Hashable, Sequence

from algeval.theory.program import (
    Aggregate,
    And,
    Categorical,
    Indices,
    Map,
    Numerical,
    Predicate,
    Select,
    SelectBest,
    SelectorWidth,
    SequenceMap,
    SOp,
    Tokens,
)

__all__ = [
    "LIBRARY", "DEFAULT_VOCAB", "DEFAULT_MAX_LEN", "make_length", "make_reverse", "make_sort_unique",
    "make_histogram", "make_frac_prevs", "make_dyck1", "make_copy", "make_induction",
]

DEFAULT_VOCAB = ("a", "b", "c", "d", "e")
DEFAULT_MAX_LEN = 8


def _inputs(vocab: Sequence[Hashable], max_len: int) -> tuple[Tokens, Indices]:
    return Tokens(Categorical(tuple(vocab)), max_len=max_len), Indices(max_len)


def make_length(vocab: Sequence[Hashable] = DEFAULT_VOCAB, max_len: int = DEFAULT_MAX_LEN) -> SOp:
    """``length_q = n``: the width of the all-true selector."""
    tokens, _ = _inputs(vocab, max_len)
    all_true = Select(tokens, tokens, Predicate.TRUE).named("all_true")
    return SelectorWidth(all_true).named("length")


def make_reverse(vocab: Sequence[Hashable], max_len: int) -> SOp:
    """``reverse_q = x_{n-1-q}``: attend from ``q`` to the key whose index is ``n - 1 - q``."""
    tokens, indices = _inputs(vocab, max_len)
    opp = SequenceMap(lambda n, i: n - i - 1, make_length(vocab, max_len), indices).named("opp_index")
    flip = Select(indices, opp, Predicate.EQ).named("reverse_selector")
    return Aggregate(flip, tokens).named("reverse")


def make_sort_unique(vocab: Sequence[Hashable], max_len: int) -> SOp:
    """``x`` sorted ascending, for inputs whose tokens are distinct.

    ``target_k = |{j : x_j < x_k}|`` is where key ``k`` belongs; position ``q``
    reads the key with ``target_k = q``.
    """
    tokens, indices = _inputs(vocab, max_len)
    smaller = Select(tokens, tokens, Predicate.LT).named("smaller")
    target = SelectorWidth(smaller).named("target_pos")
    move = Select(target, indices, Predicate.EQ).named("sort_selector")
    return Aggregate(move, tokens).named("sort")


def make_histogram(vocab: Sequence[Hashable], max_len: int) -> SOp:
    """``hist_q = |{k : x_k = x_q}|``."""
    tokens, _ = _inputs(vocab, max_len)
    same = Select(tokens, tokens, Predicate.EQ).named("same_token")
    return SelectorWidth(same).named("hist")


def _frac_prevs(indicator: SOp, indices: Indices, name: str) -> SOp:
    prevs = Select(indices, indices, Predicate.LEQ).named(f"{name}_prevs")
    return Aggregate(prevs, indicator).named(name)


def make_frac_prevs(vocab: Sequence[Hashable], max_len: int, target: Hashable) -> SOp:
    """``frac_q = |{k <= q : x_k = target}| / (q + 1)``, Numerical."""
    tokens, indices = _inputs(vocab, max_len)
    is_target = Map(lambda t: float(t == target), tokens, kind=Numerical).named("is_target")
    return _frac_prevs(is_target, indices, "frac_prevs")


def make_dyck1(max_len: int, vocab: Sequence[Hashable] = ("(", ")")) -> SOp:
    """1 at every position iff ``x`` is balanced in "(" ")" (other tokens ignored), else 0.

    tracr's ``make_shuffle_dyck`` with one pair: ``balance_q`` = fraction of
    opens minus fraction of closes in ``x_0..x_q``; balanced iff no prefix
    balance is negative and the last one is zero.
    """
    tokens, indices = _inputs(vocab, max_len)
    opens = _frac_prevs(Map(lambda t: float(t == "("), tokens, kind=Numerical).named("is_open"), indices, "opens")
    closes = _frac_prevs(Map(lambda t: float(t == ")"), tokens, kind=Numerical).named("is_close"), indices, "closes")
    balance = SequenceMap(lambda o, c: o - c, opens, closes, kind=Numerical).named("balance")
    negative = Map(lambda b: float(b < 0), balance, kind=Numerical).named("any_negative")
    select_all = Select(indices, indices, Predicate.TRUE).named("select_all")
    has_neg = Aggregate(select_all, negative).named("has_neg")
    last = Map(lambda n: n - 1, make_length(vocab, max_len)).named("last_index")
    select_last = Select(indices, last, Predicate.EQ).named("select_last")
    last_zero = Aggregate(select_last, Map(lambda b: b == 0, balance).named("is_zero")).named("last_zero")
    not_has_neg = Map(lambda h: h == 0, has_neg).named("not_has_neg")
    return SequenceMap(lambda z, p: int(z and p), last_zero, not_has_neg).named("dyck1")


def make_copy(vocab: Sequence[Hashable], max_len: int) -> SOp:
    """``copy_q = x_q``, moved through an attention head attending to its own position."""
    tokens, indices = _inputs(vocab, max_len)
    return Aggregate(Select(indices, indices, Predicate.EQ).named("self"), tokens).named("copy")


def make_induction(vocab: Sequence[Hashable], max_len: int) -> SOp:
    """The two-layer induction head: ``x_{j*}`` with ``j* = max{j <= q : x_{j-1} = x_q}``, else None.

    Layer 1 writes the previous token ``prev_j = x_{j-1}`` (None at ``j = 0``);
    layer 2 attends from ``q`` to the latest ``j <= q`` with ``prev_j = x_q``
    (``j = q`` counts, as in ``theory/khop.py``) and reads ``x_j``.
    """
    tokens, indices = _inputs(vocab, max_len)
    shifted = Map(lambda i: i - 1, indices).named("prev_index")
    prev_token = Aggregate(Select(indices, shifted, Predicate.EQ).named("prev_selector"), tokens).named("prev_token")
    match = Select(prev_token, tokens, Predicate.EQ).named("match_prev")
    causal = Select(indices, indices, Predicate.LEQ).named("causal")
    return SelectBest(And(match, causal).named("induction_selector"), indices, tokens).named("induction")


LIBRARY: dict[str, Callable[[], SOp]] = {
    "length": make_length,
    "reverse": partial(make_reverse, DEFAULT_VOCAB, DEFAULT_MAX_LEN),
    "sort_unique": partial(make_sort_unique, DEFAULT_VOCAB, DEFAULT_MAX_LEN),
    "histogram": partial(make_histogram, DEFAULT_VOCAB, DEFAULT_MAX_LEN),
    "frac_prevs": partial(make_frac_prevs, DEFAULT_VOCAB, DEFAULT_MAX_LEN, "a"),
    "dyck1": partial(make_dyck1, DEFAULT_MAX_LEN),
    "copy": partial(make_copy, DEFAULT_VOCAB, DEFAULT_MAX_LEN),
    "induction": partial(make_induction, DEFAULT_VOCAB, DEFAULT_MAX_LEN),
}
