"""The RASP dialect: library programs against plain-Python references, primitive semantics, traces, validation."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algeval.errors import ParameterError
from algeval.theory.interpret import interpret, interpret_batch
from algeval.theory.khop import khop
from algeval.theory.program import (
    Aggregate,
    And,
    Categorical,
    Contains,
    Indices,
    Map,
    Numerical,
    Predicate,
    Select,
    SelectBest,
    SelectorWidth,
    SequenceMap,
    SetFraction,
    SetFromCategorical,
    SetOf,
    SetUnion,
    Threshold,
    Tokens,
    dependencies,
    depth,
    topological,
)
from algeval.theory.programs_library import (
    LIBRARY,
    make_copy,
    make_dyck1,
    make_frac_prevs,
    make_histogram,
    make_induction,
    make_length,
    make_reverse,
    make_sort_unique,
)

SETTINGS = settings(max_examples=120, deadline=None)
VOCAB = ("a", "b", "c", "d")
N = 7


def random_inputs(rng, count=150, vocab=VOCAB, max_len=N):
    return [list(rng.choice(vocab, size=rng.integers(1, max_len + 1))) for _ in range(count)]


# ---------------------------------------------------------------- references


def ref_induction(x):
    out = []
    for q in range(len(x)):
        js = [j for j in range(1, q + 1) if x[j - 1] == x[q]]
        out.append(x[max(js)] if js else None)
    return tuple(out)


def ref_balanced(x):
    depth_ = 0
    for t in x:
        depth_ += (t == "(") - (t == ")")
        if depth_ < 0:
            return False
    return depth_ == 0


# ---------------------------------------------------------------- library


def test_length_reverse_copy_histogram_match_references():
    rng = np.random.default_rng(0)
    progs = {
        "length": (make_length(VOCAB, N), lambda x: (len(x),) * len(x)),
        "reverse": (make_reverse(VOCAB, N), lambda x: tuple(reversed(x))),
        "copy": (make_copy(VOCAB, N), tuple),
        "hist": (make_histogram(VOCAB, N), lambda x: tuple(x.count(t) for t in x)),
    }
    for name, (prog, ref) in progs.items():
        for x in random_inputs(rng):
            assert interpret(prog, x).answer == ref(x), (name, x)


def test_sort_unique_sorts_distinct_tokens():
    rng = np.random.default_rng(1)
    vocab = tuple(range(10, 20))
    prog = make_sort_unique(vocab, 6)
    for _ in range(150):
        x = [int(t) for t in rng.permutation(vocab)[: rng.integers(1, 7)]]
        assert interpret(prog, x).answer == tuple(sorted(x)), x


def test_frac_prevs_is_exact_prefix_fraction():
    rng = np.random.default_rng(2)
    prog = make_frac_prevs(VOCAB, N, "b")
    for x in random_inputs(rng):
        want = tuple(x[: q + 1].count("b") / (q + 1) for q in range(len(x)))
        assert interpret(prog, x).answer == want, x


def test_dyck1_flags_exactly_the_balanced_strings():
    rng = np.random.default_rng(3)
    prog = make_dyck1(8, vocab=("(", ")", "x"))
    seen = set()
    for _ in range(300):
        n = int(rng.integers(1, 9))
        x = list(rng.choice(["(", ")", "x"], size=n, p=[0.45, 0.45, 0.1]))
        want = int(ref_balanced(x))
        seen.add(want)
        assert interpret(prog, x).answer == (want,) * n, x
    for x, want in [("()", 1), ("(())()", 1), (")(", 0), ("(()", 0), ("x(x)x", 1), ("())(()", 0)]:
        assert interpret(prog, list(x)).answer == (want,) * len(x), x
    assert seen == {0, 1}


def test_induction_matches_reference_and_khop():
    rng = np.random.default_rng(4)
    prog = make_induction(VOCAB, N)
    for x in random_inputs(rng, count=200, vocab=VOCAB[:3]):
        assert interpret(prog, x).answer == ref_induction(x), x
    ints = make_induction(tuple(range(4)), N)
    for _ in range(100):
        x = [int(t) for t in rng.integers(0, 4, size=rng.integers(1, N + 1))]
        got = tuple(-1 if a is None else a for a in interpret(ints, x).answer)
        assert got == tuple(khop(x, 1).answer.tolist()), x


def test_library_registry_builds_and_runs():
    assert set(LIBRARY) >= {"length", "reverse", "sort_unique", "histogram", "frac_prevs", "dyck1", "copy", "induction"}
    for name, maker in LIBRARY.items():
        prog = maker()
        tr = interpret(prog, ["("] * 3 if name == "dyck1" else ["a", "c", "b"])
        assert tr.algorithm == prog.label and len(tr.answer) == 3


def test_interpret_batch_is_interpret_on_each():
    prog, xs = make_reverse(VOCAB, N), [list("abc"), list("d"), list("abca")]
    assert [t.answer for t in interpret_batch(prog, xs)] == [interpret(prog, x).answer for x in xs]


# ---------------------------------------------------------------- primitive semantics

INTS = tuple(range(6))
TOK = Tokens(Categorical(INTS), max_len=N)
IDX = Indices(N)
seqs = st.lists(st.integers(0, 5), min_size=1, max_size=N)
OPS = {
    Predicate.EQ: operator.eq, Predicate.NEQ: operator.ne, Predicate.LT: operator.lt,
    Predicate.LEQ: operator.le, Predicate.GT: operator.gt, Predicate.GEQ: operator.ge,
    Predicate.TRUE: lambda k, q: True, Predicate.FALSE: lambda k, q: False,
}


@SETTINGS
@given(x=seqs, pred=st.sampled_from(sorted(OPS, key=lambda p: p.value)), use_idx=st.booleans())
def test_select_and_selector_width(x, pred, use_idx):
    keys = IDX if use_idx else TOK
    sel = Select(keys, TOK, pred)
    tr = interpret(SelectorWidth(sel), x)
    kv = list(range(len(x))) if use_idx else x
    want = np.array([[OPS[pred](kv[k], x[q]) for k in range(len(x))] for q in range(len(x))])
    np.testing.assert_array_equal(tr[sel.label][0], want)
    assert tr.axes[sel.label] == ("step", "query", "key")
    assert tr.answer == tuple(want.sum(axis=1).tolist())


@SETTINGS
@given(x=seqs, table=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -3.0]), min_size=6, max_size=6),
       pred=st.sampled_from([Predicate.LT, Predicate.LEQ, Predicate.GT, Predicate.EQ]),
       default=st.sampled_from([None, -1.0]))
def test_numerical_aggregate_is_the_mean_or_default(x, table, pred, default):
    vals = Map(lambda t: table[t], TOK, kind=Numerical)
    agg = Aggregate(Select(IDX, IDX, pred), vals, default=default)
    got = interpret(agg, x).answer
    for q in range(len(x)):
        chosen = [table[x[k]] for k in range(len(x)) if OPS[pred](k, q)]
        want = sum(chosen) / len(chosen) if chosen else (0.0 if default is None else default)
        assert got[q] == pytest.approx(want, abs=1e-12)
        assert got[q] in agg.kind.values


@SETTINGS
@given(x=seqs, shift=st.integers(-3, 3))
def test_categorical_aggregate_moves_one_value_or_none(x, shift):
    src = Map(lambda i: i - shift, IDX)
    agg = Aggregate(Select(IDX, src, Predicate.EQ), TOK)
    want = tuple(x[q - shift] if 0 <= q - shift < len(x) else None for q in range(len(x)))
    assert interpret(agg, x).answer == want


def test_categorical_aggregate_of_differing_values_is_an_error():
    agg = Aggregate(Select(IDX, IDX, Predicate.TRUE), TOK).named("mix")
    assert interpret(agg, [2, 2, 2]).answer == (2, 2, 2)  # equal values: their mean is that one-hot
    with pytest.raises(ParameterError, match="mix"):
        interpret(agg, [1, 2])


@SETTINGS
@given(x=seqs, table=st.lists(st.integers(0, 2), min_size=6, max_size=6),
       pred=st.sampled_from([Predicate.LT, Predicate.LEQ, Predicate.NEQ]))
def test_select_best_takes_the_top_score_latest_on_ties(x, table, pred):
    score = Map(lambda t: table[t], TOK)
    best = SelectBest(Select(IDX, IDX, pred), score, TOK, default=5)
    got = interpret(best, x).answer
    for q in range(len(x)):
        ks = [k for k in range(len(x)) if OPS[pred](k, q)]
        if not ks:
            assert got[q] == 5
            continue
        top = max(table[x[k]] for k in ks)
        assert got[q] == x[max(k for k in ks if table[x[k]] == top)]


@SETTINGS
@given(x=seqs, t=st.sampled_from([0.0, 0.3, 0.5]))
def test_sets_member_fraction_threshold_union_contains(x, t):
    single = SetFromCategorical(TOK)
    prevs = Select(IDX, IDX, Predicate.LEQ)
    frac = Aggregate(prevs, single)
    seen = Threshold(frac, t)
    plus1 = SetFromCategorical(Map(lambda v: (v + 1) % 6, TOK))
    both = SetUnion(seen, plus1)
    member = Select(TOK, both, Predicate.MEMBER)
    has = Contains(seen, Map(lambda v: (v + 2) % 6, TOK))
    tr = interpret(SequenceMap(lambda a, b: (a, b), SelectorWidth(member), has), x)
    for q in range(len(x)):
        fr = {u: x[: q + 1].count(u) / (q + 1) for u in INTS}
        assert tr[frac.label][0, q].tolist() == [fr[u] for u in INTS]
        want_seen = {u for u in INTS if fr[u] > t}
        assert tr[seen.label][0, q].tolist() == [u in want_seen for u in INTS]
        want_both = want_seen | {(x[q] + 1) % 6}
        assert tr[member.label][0, q].tolist() == [x[k] in want_both for k in range(len(x))]
        assert tr.answer[q] == (sum(x[k] in want_both for k in range(len(x))), (x[q] + 2) % 6 in want_seen)
    assert tr.axes[frac.label] == ("step", "position", "element")
    assert tr[seen.label].dtype == bool and tr[seen.label].shape == (1, len(x), len(INTS))


@SETTINGS
@given(x=seqs)
def test_and_selector_and_none_propagation(x):
    a, b = Select(IDX, IDX, Predicate.LT), Select(TOK, TOK, Predicate.EQ)
    both = And(a, b)
    prev = Aggregate(Select(IDX, Map(lambda i: i - 1, IDX), Predicate.EQ), TOK)
    plus = Map(lambda v: v + 10, prev)  # no value in, no value out
    eq_prev = Select(plus, TOK, Predicate.TRUE)  # None never satisfies a predicate
    tr = interpret(SequenceMap(lambda u, v: (u, v), SelectorWidth(both), SelectorWidth(eq_prev)), x)
    n = len(x)
    want = np.array([[k < q and x[k] == x[q] for k in range(n)] for q in range(n)])
    np.testing.assert_array_equal(tr[both.label][0], want)
    assert tr[plus.label][0].tolist() == [None] + [v + 10 for v in x[:-1]]
    assert [w for w, _ in tr.answer] == want.sum(axis=1).tolist()
    assert [v for _, v in tr.answer] == [n - 1] * n


# ---------------------------------------------------------------- traces and graph helpers


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_trace_records_every_node_with_its_shape_and_kind(name):
    prog = LIBRARY[name]()
    x = list("(()") if name == "dyck1" else list("bdae")
    tr = interpret(prog, x)
    nodes = topological(prog)
    assert set(tr.variables) == {n.label for n in nodes}
    n = len(x)
    for node in nodes:
        arr, axes = tr[node.label], tr.axes[node.label]
        if not hasattr(node, "kind"):
            assert axes == ("step", "query", "key") and arr.shape == (1, n, n) and arr.dtype == bool
        elif isinstance(node.kind, (SetOf, SetFraction)):
            assert arr.shape == (1, n, len(node.kind.universe))
        else:
            assert axes == ("step", "position") and arr.shape == (1, n)
            vals = node.kind.values
            assert all(v is None or v in vals for v in arr[0].tolist()), node.label
    assert tr[prog.label][0].tolist() == list(tr.answer)


def test_topological_dependencies_depth_and_labels():
    prog = make_induction(VOCAB, N)
    order = [n.label for n in topological(prog)]
    assert order[-1] == "induction" and len(order) == len(set(order))
    for node in topological(prog):
        assert all(order.index(c.label) < order.index(node.label) for c in dependencies(node))
    d = depth(prog)
    assert d["induction"] == (2, 1) and d["prev_token"] == (1, 1) and d["tokens"] == (0, 0)
    assert depth(make_reverse(VOCAB, N))["reverse"] == (2, 1)
    m = Map(lambda v: v, TOK)
    assert m.label.startswith("map_") and m.named("y").label == "y" and m.label != "y"
    assert Map(lambda v: v, TOK).label != m.label


def test_shared_dag_is_walked_once_and_inputs_compare_by_value():
    x = Map(lambda v: v % 3, TOK)
    for _ in range(60):  # 2**60 paths: identity-based nodes keep this linear
        x = SequenceMap(lambda a, b: (a + b) % 3, x, x)
    assert len(topological(x)) == 62 and depth(x)[x.label] == (0, 61)
    assert interpret(x, [1, 2]).answer == (1 * 2**60 % 3, 2 * 2**60 % 3)
    assert Tokens(Categorical(INTS), max_len=N) == TOK and Map(abs, TOK) != Map(abs, TOK)
    y = SequenceMap(lambda a, b: a, Map(abs, Tokens(Categorical(INTS), max_len=N)), Map(abs, TOK))
    assert [n.label for n in topological(y)].count("tokens") == 1


# ---------------------------------------------------------------- validation


STR = Tokens(Categorical(("a", "b")))
SET_A = SetFromCategorical(TOK)
SET_B = SetFromCategorical(STR)
BAD = [
    (lambda: Categorical(()), "values"),
    (lambda: Categorical((1, None)), "values"),
    (lambda: Numerical(("x",)), "values"),
    (lambda: Tokens(Numerical((1.0,))), "kind"),
    (lambda: Indices(0), "max_len"),
    (lambda: Map(3, TOK), "f"),
    (lambda: Map(lambda v: 1 / (v - 2), TOK), "f"),
    (lambda: Map(lambda v: v, Select(TOK, TOK, Predicate.EQ)), "inner"),
    (lambda: Map(lambda v: v + 9, TOK, kind=Categorical(INTS)), "kind"),
    (lambda: Map(lambda v: v, SET_A), "inner"),
    (lambda: SequenceMap(lambda u, v: u, TOK, SET_A), "b"),
    (lambda: Select(TOK, TOK, "=="), "predicate"),
    (lambda: Select(TOK, TOK, Predicate.MEMBER), "queries"),
    (lambda: Select(SET_A, TOK, Predicate.EQ), "keys"),
    (lambda: Select(TOK, STR, Predicate.LT), "predicate"),
    (lambda: And(Select(TOK, TOK, Predicate.EQ), TOK), "b"),
    (lambda: SetUnion(SET_A, SET_B), "b"),
    (lambda: SetUnion(TOK, SET_A), "a"),
    (lambda: SetFromCategorical(TOK, universe=(0, 1)), "universe"),
    (lambda: Threshold(TOK, 0.5), "x"),
    (lambda: Threshold(Map(float, TOK, kind=Numerical), "0"), "t"),
    (lambda: Contains(TOK, TOK), "s"),
    (lambda: Aggregate(TOK, TOK), "selector"),
    (lambda: Aggregate(Select(TOK, TOK, Predicate.EQ), TOK, kind=Numerical((0.0,))), "kind"),
    (lambda: Aggregate(Select(IDX, IDX, Predicate.EQ), SET_A, default=frozenset()), "default"),
    (lambda: SelectorWidth(Select(STR, STR, Predicate.EQ)), "max_len"),
    (lambda: SelectorWidth(Select(Indices(3), TOK, Predicate.EQ)), "max_len"),
    (lambda: SelectBest(Select(STR, STR, Predicate.EQ), STR, STR), "score"),
    (lambda: SelectBest(Select(IDX, IDX, Predicate.EQ), IDX, SET_A, default={9}), "default"),
    (lambda: topological(SequenceMap(lambda u, v: u, Map(abs, TOK).named("z"), Map(abs, IDX).named("z"))), "label"),
    (lambda: interpret(make_copy(VOCAB, 3), list("abz")), "tokens"),
    (lambda: interpret(make_copy(VOCAB, 3), list("abcd")), "tokens"),
    (lambda: interpret(make_copy(VOCAB, 3), []), "tokens"),
    (lambda: interpret(Select(TOK, TOK, Predicate.EQ), [1]), "program"),
]


@pytest.mark.parametrize("build,name", BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_construction_errors_name_the_argument(build, name):
    with pytest.raises(ParameterError) as e:
        build()
    assert e.value.name == name
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{name}=")
