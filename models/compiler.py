"""Compile a primitive program (``theory/program.py``) to exact transformer weights.

The compiler walks the program DAG and emits a :class:`~algeval.models.craft.CraftModel`
(named residual directions, heads and MLPs defined on them), then lowers it to
the one :class:`~algeval.models.Transformer` class.  It reads the AST only;
the interpreter (``theory/interpret.py``) is the specification and shares no
code with it.

Encoding.  The residual stream holds ``one`` (1 at every position),
``tokens:BOS`` and ``tokens:v`` (one-hot input token), one-hot positions at
the end (``pos:BOS``, then ``<indices label>:i``), and per program node:
Categorical ``label:value`` one-hot, Numerical ``label`` (one dimension),
SetOf / SetFraction ``label:element``.  The input is ``BOS x_0 .. x_{n-1}``
right-padded with ``PAD``, whose keys every head ignores.

Layers.  A node computed by attention goes in the first attention sublayer
after all its inputs are ready, an MLP node in the first MLP sublayer after
them (dependency depth; independent nodes share a layer and run in parallel).
Categorical and set-valued attention outputs are *cleaned* by an MLP in the
same layer, so every Select reads exact one-hot vectors.

Exactness.  Every head folds an explicit inverse temperature ``beta`` into
its query-key map.  Selected keys score ``beta * m`` (``m`` = number of
conjoined predicates), others at most ``beta * (m - 1)``, BOS
``beta * (m - 1/2)``: the gap is ``Delta = 1/2`` (``1`` for SelectorWidth,
where BOS ties with the selected keys).  Every MLP is built of exact steps
(:func:`~algeval.models.craft.step_units`) whose dead zone absorbs input
error up to a stated slack.  ``beta`` is the sympy-derived
:func:`~algeval.theory.bounds.min_beta` for the slack of the node's consumers,
so the leaked error ``(T - 1) e^{-beta Delta} M`` stays inside every dead
zone and output tolerance (``T`` = keys including BOS).  Errors are carried
through layers: see :class:`Compiled` ``.errors`` and ``.budgets``.  Every MLP
is silenced at BOS (a ``-big * tokens:BOS`` gate), so BOS carries no values
and an empty selection aggregates exactly the default zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from algeval.errors import ParameterError
from algeval.models.craft import CraftLayer, CraftModel, HeadSpec, MLPSpec, Space, mlp_from_steps, step_units
from algeval.theory import program as P
from algeval.theory.bounds import leak_bound, min_beta

BOS, PAD = "BOS", "PAD"
CAT_SLACK = 0.25  # dead zone of a one-hot clean-up / categorical MLP (threshold 1/2, ramp 1/2)


def _labels(node: P.SOp) -> tuple[str, ...]:
    k = node.kind
    if isinstance(node, P.Tokens):
        return tuple(f"tokens:{v}" for v in k.values)
    if isinstance(k, P.Categorical):
        return tuple(f"{node.label}:{v}" for v in k.values)
    if isinstance(k, P.Numerical):
        return (node.label,)
    return tuple(f"{node.label}:{u}" for u in k.universe)


def encode(node: P.SOp, value: Any) -> dict[str, float]:
    """The residual coordinates of ``value`` of ``node`` (the zero vector for None / 0 / the empty set)."""
    k = node.kind
    pre = "tokens" if isinstance(node, P.Tokens) else node.label
    if isinstance(k, P.Categorical):
        return {} if value is None else {f"{pre}:{value}": 1.0}
    if isinstance(k, P.Numerical):
        return {pre: float(value)} if float(value) != 0.0 else {}
    if isinstance(k, P.SetOf):
        return {f"{pre}:{u}": 1.0 for u in value}
    return {f"{pre}:{u}": float(x) for u, x in zip(k.universe, value) if x}


def _conjuncts(sel: P.Selector) -> list[P.Select]:
    return [sel] if isinstance(sel, P.Select) else _conjuncts(sel.a) + _conjuncts(sel.b)


def _selector_inputs(sel: P.Selector) -> list[P.SOp]:
    return [s for c in _conjuncts(sel) for s in (c.keys, c.queries)]


def _inputs(node: P.SOp) -> list[P.SOp]:
    """The SOps a node reads (through its selector for attention nodes)."""
    out = []
    for c in node.children():
        out += _selector_inputs(c) if isinstance(c, P.Selector) else [c]
    return out


def _span(values) -> float:
    vals = [float(v) for v in values] + [0.0]
    return max(vals) - min(vals)


def _breakpoints(xs: tuple[float, ...], f) -> list[tuple[float, float, float, float]]:
    """``(lo, hi, f(lo), f(hi))`` for consecutive declared inputs where ``f`` changes."""
    return [(a, b, f(a), f(b)) for a, b in zip(xs, xs[1:]) if f(a) != f(b)]


@dataclass
class Compiled:
    """A compiled program: the craft model, the lowered transformer, and its exactness budget."""

    program: P.SOp
    craft: CraftModel
    model: Any
    meta: dict
    max_len: int
    vocab: tuple[str, ...]
    input_values: tuple
    betas: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)

    def encode_inputs(self, inputs) -> np.ndarray:
        """``(batch, max_len + 1)`` token ids: BOS, the input, PAD to the right."""
        ids = {v: self.vocab.index(str(v)) for v in self.input_values}
        out = np.full((len(inputs), self.max_len + 1), self.vocab.index(PAD), dtype=np.int32)
        out[:, 0] = self.vocab.index(BOS)
        for i, seq in enumerate(inputs):
            if len(seq) > self.max_len:
                raise ParameterError("input length", len(seq), f"must be <= max_len={self.max_len}")
            try:
                out[i, 1:len(seq) + 1] = [ids[v] for v in seq]
            except KeyError as e:
                raise ParameterError("input token", e.args[0], f"not in the vocabulary {self.input_values}") from None
        return out

    def output_coordinates(self, resid: np.ndarray) -> np.ndarray:
        """The output node's coordinates ``(batch, pos, len(labels))`` from a final residual stream."""
        idx = self.craft.residual.indices(_labels(self.program))
        return np.asarray(resid)[..., idx]

    def decode(self, coords: np.ndarray, lengths) -> tuple[list[list], np.ndarray]:
        """Outputs per input position, and each position's decoding margin (> 0 means unambiguous).

        Categorical: the argmax label (None when every coordinate is below 1/2);
        margin = distance of the coordinates from the 1/2 threshold.  Numerical:
        the nearest declared value; margin = half the gap to its neighbours minus
        the distance.  SetOf: elements above 1/2.
        """
        k = self.program.kind
        outs, margins = [], np.full(coords.shape[:2], np.inf)
        for b, n in enumerate(lengths):
            row = []
            for p in range(1, n + 1):
                c = coords[b, p]
                if isinstance(k, P.Categorical):
                    j = int(np.argmax(c))
                    row.append(k.values[j] if c[j] > 0.5 else None)
                    margins[b, p] = float(np.min(np.abs(c - 0.5)))
                elif isinstance(k, P.Numerical):
                    xs = np.asarray(k.values)
                    j = int(np.argmin(np.abs(xs - c[0])))
                    gaps = np.diff(xs)
                    half = 0.5 * min([g for g in (gaps[j - 1] if j > 0 else None,
                                                   gaps[j] if j < len(gaps) else None) if g is not None] or [1.0])
                    row.append(float(xs[j]))
                    margins[b, p] = half - abs(float(c[0]) - float(xs[j]))
                elif isinstance(k, P.SetOf):
                    row.append(frozenset(u for u, x in zip(k.universe, c) if x > 0.5))
                    margins[b, p] = float(np.min(np.abs(c - 0.5)))
                else:
                    raise ParameterError("program", self.program.label, "a SetFraction output cannot be decoded")
            outs.append(row)
        return outs, margins

    def run(self, inputs) -> tuple[list[list], np.ndarray]:
        """Run the compiled transformer on a list of input sequences: ``(outputs, margins)``."""
        toks = self.encode_inputs(inputs)
        _, cache = self.model.run_with_cache(toks, names_filter=f"blocks.{self.model.cfg.n_layers - 1}.hook_resid_post")
        resid = cache[f"blocks.{self.model.cfg.n_layers - 1}.hook_resid_post"]
        return self.decode(self.output_coordinates(resid), [len(s) for s in inputs])


class _Builder:
    def __init__(self, program: P.SOp, max_len: int, beta_scale: float, beta_override: float | None):
        self.program, self.T = program, max_len
        self.beta_scale, self.beta_override = beta_scale, beta_override
        self.nodes = [n for n in P.topological(program) if isinstance(n, P.SOp)]
        toks = [n for n in self.nodes if isinstance(n, P.Tokens)]
        if len(toks) != 1:
            raise ParameterError("program", program.label, "must read the input Tokens exactly once")
        self.tokens = toks[0]
        for n in self.nodes:
            if isinstance(n, P.Indices) and n.max_len != max_len:
                raise ParameterError("max_len", max_len, f"must equal Indices({n.max_len}) of the program")
        self.consumers: dict[str, list[tuple[P.SOp, str]]] = {n.label: [] for n in self.nodes}
        for n in self.nodes:
            for c in n.children():
                if isinstance(c, P.Selector):
                    for s in _selector_inputs(c):
                        self.consumers[s.label].append((n, "selector"))
                else:
                    role = "score" if isinstance(n, P.SelectBest) and c is n.score else "value"
                    self.consumers[c.label].append((n, role))

    # -- layer allocation ------------------------------------------------------------
    def schedule(self) -> dict[str, int]:
        """Sublayer slot per node: attention ``2l``, MLP ``2l + 1``; inputs ``-1``."""
        slot: dict[str, int] = {}
        self.ready: dict[str, int] = {}
        for n in self.nodes:
            if isinstance(n, (P.Tokens, P.Indices)):
                slot[n.label] = self.ready[n.label] = -1
                continue
            d = max(self.ready[c.label] for c in _inputs(n))
            if isinstance(n, P.ATTENTION):
                s = d + 1 if (d + 1) % 2 == 0 else d + 2
                cleaned = isinstance(n, P.SelectorWidth) or isinstance(n.kind, (P.Categorical, P.SetOf))
                slot[n.label], self.ready[n.label] = s, s + 1 if cleaned else s
            else:
                s = d + 1 if (d + 1) % 2 == 1 else d + 2
                slot[n.label] = self.ready[n.label] = s
        return slot

    # -- exactness budgets ---------------------------------------------------------------
    def input_slack(self, n: P.SOp, x: P.SOp) -> float:
        """How much error in ``x`` the node ``n`` absorbs (its dead zone)."""
        if isinstance(n, (P.Map, P.Threshold)) and isinstance(x.kind, (P.Numerical, P.SetFraction)):
            f = self._numeric_fn(n)
            xs = x.kind.values
            gaps = [b - a for a, b, _, _ in _breakpoints(xs, f)]
            return min(gaps) / 4 if gaps else math.inf
        if isinstance(n, P.SequenceMap) and isinstance(x.kind, P.Numerical):
            return self.budget.get(n.label, math.inf) / (2 * max(abs(self._affine(n)[1 if x is n.a else 2]), 1e-12))
        return CAT_SLACK

    def budgets(self) -> dict[str, float]:
        """Error each node's output may carry, from its consumers (reverse topological order)."""
        self.budget: dict[str, float] = {}
        for n in reversed(self.nodes):
            b = math.inf
            if n is self.program and isinstance(n.kind, P.Numerical):
                xs = n.kind.values
                b = min([(y - x) / 4 for x, y in zip(xs, xs[1:])] + [math.inf])
            for c, role in self.consumers[n.label]:
                if role in ("selector", "score"):
                    cleaned = isinstance(n, P.ATTENTION) and (isinstance(n, P.SelectorWidth) or
                                                              isinstance(n.kind, (P.Categorical, P.SetOf)))
                    b = min(b, math.inf if cleaned else 0.0)
                elif isinstance(c, P.ATTENTION):
                    b = min(b, self.budget[c.label] / 2)
                else:
                    b = min(b, self.input_slack(c, n))
            self.budget[n.label] = b
        return self.budget

    def _numeric_fn(self, n):
        if isinstance(n, P.Threshold):
            if isinstance(n.x.kind, P.Numerical):
                return lambda v: v > n.t
            return lambda v: v > n.t
        return n.f

    def _affine(self, n: P.SequenceMap):
        """``(c, alpha, beta)`` with ``f(a, b) = c + alpha a + beta b`` on every declared pair, else error."""
        A, B = n.a.kind.values, n.b.kind.values
        f = n.f
        c = float(f(A[0], B[0]))
        al = (float(f(A[1], B[0])) - c) / (A[1] - A[0]) if len(A) > 1 else 0.0
        be = (float(f(A[0], B[1])) - c) / (B[1] - B[0]) if len(B) > 1 else 0.0
        for a in A:
            for b in B:
                if abs(float(f(a, b)) - (c + al * (a - A[0]) + be * (b - B[0]))) > 1e-9:
                    raise ParameterError("SequenceMap", n.label, "of Numerical inputs compiles only when f is affine; "
                                         "Map the inputs to Categorical first")
        return c - al * A[0] - be * B[0], al, be

    # -- blocks --------------------------------------------------------------------------
    def gate(self):
        return {f"tokens:{BOS}": 1.0}

    def mlp_for(self, n: P.SOp) -> MLPSpec:
        name = n.label
        steps = []
        if isinstance(n, (P.Map, P.Threshold)) and isinstance(self._in(n).kind, P.Numerical):
            x = self._in(n)
            f = self._numeric_fn(n)
            xs = x.kind.values
            steps.append(self._const(name, encode(n, f(xs[0]))))
            for i, (a, b, fa, fb) in enumerate(_breakpoints(xs, f)):
                delta = _sub(encode(n, fb), encode(n, fa))
                steps.append(step_units(f"{name}.s{i}", {x.label: 1.0}, (a + b) / 2, (b - a) / 2, delta))
        elif isinstance(n, P.Threshold):  # SetFraction -> SetOf, per element
            x = n.x
            xs = x.kind.values
            lo = max([v for v in xs if v <= n.t], default=n.t - 1.0)
            hi = min([v for v in xs if v > n.t], default=n.t + 1.0)
            for u in x.kind.universe:
                steps.append(step_units(f"{name}.{u}", {f"{x.label}:{u}": 1.0}, (lo + hi) / 2, (hi - lo) / 2,
                                        {f"{name}:{u}": 1.0}))
        elif isinstance(n, P.Map):  # Categorical input
            x = n.inner
            for v, lab in zip(x.kind.values, _labels(x)):
                out = encode(n, n.f(v))
                if out:
                    steps.append(step_units(f"{name}.{v}", {lab: 1.0}, 0.5, 0.5, out))
        elif isinstance(n, P.SequenceMap):
            if isinstance(n.a.kind, P.Numerical):  # validate() checked both are, and f is affine
                return self._affine_mlp(n)
            for va, la in zip(n.a.kind.values, _labels(n.a)):
                for vb, lb in zip(n.b.kind.values, _labels(n.b)):
                    out = encode(n, n.f(va, vb))
                    if out:
                        steps.append(step_units(f"{name}.{va}.{vb}", {la: 1.0, lb: 1.0}, 1.5, 0.5, out))
        elif isinstance(n, P.SetUnion):
            for u in n.kind.universe:
                steps.append(step_units(f"{name}.{u}", {f"{n.a.label}:{u}": 1.0, f"{n.b.label}:{u}": 1.0},
                                        0.5, 0.5, {f"{name}:{u}": 1.0}))
        elif isinstance(n, P.SetFromCategorical):
            for v, lab in zip(n.x.kind.values, _labels(n.x)):
                steps.append(step_units(f"{name}.{v}", {lab: 1.0}, 0.5, 0.5, {f"{name}:{v}": 1.0}))
        elif isinstance(n, P.Contains):  # False everywhere but BOS, flipped to True where x in s
            steps.append(self._const(name, {f"{name}:False": 1.0}))
            for v, lab in zip(n.x.kind.values, _labels(n.x)):
                if v in n.s.kind.universe:
                    steps.append(step_units(f"{name}.{v}", {lab: 1.0, f"{n.s.label}:{v}": 1.0}, 1.5, 0.5,
                                            {f"{name}:True": 1.0, f"{name}:False": -1.0}))
        else:
            raise ParameterError("node", n.label, f"{type(n).__name__} is not an MLP primitive")
        return self._gated(mlp_from_steps(name, steps))

    def _in(self, n):
        return n.inner if isinstance(n, P.Map) else n.x

    def _const(self, name, out):
        """A unit that is 1 everywhere but BOS, carrying the constant ``out``."""
        return (f"{name}.const",), {("one", f"{name}.const"): 1.0}, {f"{name}.const": 0.0}, \
            {(f"{name}.const", d): v for d, v in out.items()}

    def _affine_mlp(self, n: P.SequenceMap) -> MLPSpec:
        c, al, be = self._affine(n)
        steps = [self._const(n.label, {n.label: c} if c else {})]
        for src, coef in ((n.a.label, al), (n.b.label, be)):
            if coef:
                hp, hm = f"{n.label}.{src}+", f"{n.label}.{src}-"
                steps.append(((hp, hm), {(src, hp): 1.0, (src, hm): -1.0}, {hp: 0.0, hm: 0.0},
                              {(hp, n.label): coef, (hm, n.label): -coef}))
        return self._gated(mlp_from_steps(n.label, steps))

    def _gated(self, m: MLPSpec) -> MLPSpec:
        """Add ``-big * tokens:BOS`` to every pre-activation: the MLP writes nothing at BOS."""
        span = {}
        for (a, k), w in m.w_in.items():
            span[k] = span.get(k, 0.0) + abs(w) * self.xmax
        for k in m.hidden:
            m.w_in[(f"tokens:{BOS}", k)] = -(span.get(k, 0.0) + abs(m.b_in.get(k, 0.0)) + 1.0)
        return m

    def cleanup(self, n: P.SOp) -> MLPSpec:
        """In-place clean-up of a one-hot / indicator attention output: ``x <- step(x)`` (0 at BOS)."""
        steps = []
        for lab in _labels(n):
            steps.append(step_units(f"{lab}.clean", {lab: 1.0}, 0.5, 0.5, {lab: 1.0}))
        m = self._gated(mlp_from_steps(f"{n.label}.clean", steps))
        for lab in _labels(n):  # minus the identity, ungated: relu(x) - relu(-x) = x
            hp, hm = f"{lab}.id+", f"{lab}.id-"
            m.hidden += (hp, hm)
            m.w_in[(lab, hp)], m.w_in[(lab, hm)] = 1.0, -1.0
            m.b_in[hp] = m.b_in[hm] = 0.0
            m.w_out[(hp, lab)], m.w_out[(hm, lab)] = -1.0, 1.0
        return m

    def selector_qk(self, sel: P.Selector, beta: float) -> dict:
        qk: dict[tuple[str, str], float] = {}
        for c in _conjuncts(sel):
            klabs = _labels(c.keys)
            if c.predicate is P.Predicate.MEMBER:
                uni = c.queries.kind.universe
                for kv, kl in zip(c.keys.kind.values, klabs):
                    if kv in uni:
                        key = (f"{c.queries.label}:{kv}", kl)
                        qk[key] = qk.get(key, 0.0) + beta
                continue
            for qv, ql in zip(c.queries.kind.values, _labels(c.queries)):
                for kv, kl in zip(c.keys.kind.values, klabs):
                    if c.predicate(kv, qv):
                        qk[(ql, kl)] = qk.get((ql, kl), 0.0) + beta
        return qk

    def head_for(self, n: P.SOp) -> tuple[HeadSpec, float, float]:
        """The head of an attention node, its beta and its leak bound ``eps``."""
        sel = n.selector
        m = len(_conjuncts(sel))
        nkeys = self.T + 1
        if isinstance(n, P.SelectorWidth):
            gap, dev, slack = 1.0, 1.0, 1.0 / (4 * self.T * (self.T + 1))
        elif isinstance(n, P.Aggregate):
            gap = 0.5
            vals = n.sop.kind.values if isinstance(n.sop.kind, P.Numerical) else (0.0, 1.0)
            dev = _span(vals)
            if isinstance(n.kind, (P.Categorical, P.SetOf)):
                slack = CAT_SLACK  # cleaned in the same layer
                if n.default is not None:
                    raise ParameterError("default", n.default, f"{n.label}: a compiled categorical Aggregate "
                                         "defaults to None (no value)")
            else:
                slack = self.budget[n.label] / 2 if self.errors_in(n) > 0 else self.budget[n.label]
                if isinstance(n.kind, P.Numerical) and n.default != 0.0:
                    raise ParameterError("default", n.default, f"{n.label}: a compiled numerical Aggregate "
                                         "defaults to 0")
        else:  # SelectBest: selection weight 2 per conjunct, plus a key priority in [0, 1)
            prio = self.priority(n)
            R = prio.pop("__levels__")
            gap = min(1.0 / R, 0.5)
            vals = n.sop.kind.values if isinstance(n.sop.kind, P.Numerical) else (0.0, 1.0)
            dev = _span(vals)
            slack = CAT_SLACK if isinstance(n.kind, (P.Categorical, P.SetOf)) else self.budget[n.label]
            if n.default not in (None, 0.0, frozenset()):
                raise ParameterError("default", n.default, f"{n.label}: a compiled SelectBest defaults to "
                                     "the zero of its kind")
        if slack <= 0:
            raise ParameterError("program", n.label, "an attention output is read by a Select; "
                                 "only clean (MLP or categorical) values may be")
        beta = self.beta_override if self.beta_override is not None else \
            self.beta_scale * min_beta(nkeys, dev, slack, gap)
        beta = max(beta, 1e-6)
        if isinstance(n, P.SelectBest):
            qk = self.selector_qk(sel, 2 * beta)
            for lab, w in prio.items():
                qk[("one", lab)] = qk.get(("one", lab), 0.0) + beta * w
            bos_score = beta * (2 * m - 0.5)
        else:
            qk = self.selector_qk(sel, beta)
            bos_score = beta * m if isinstance(n, P.SelectorWidth) else beta * (m - 0.5)
        qk[("one", f"tokens:{BOS}")] = bos_score
        if isinstance(n, P.SelectorWidth):
            ov = {(f"tokens:{BOS}", f"{n.label}.frac"): 1.0}
        else:
            ov = {(s, d): 1.0 for s, d in zip(_labels(n.sop), _labels(n))}
        return HeadSpec(n.label, qk, ov, beta, gap), beta, leak_bound(nkeys, beta, gap) * dev

    def priority(self, n: P.SelectBest) -> dict:
        """Key priority ``p_k = (rank(score_k) * T + k) / R`` on the query-independent ``one`` row.

        Distinct (score, position) pairs get distinct priorities at least ``1/R``
        apart, so the best selected key wins by ``beta / R``; ties on the score
        go to the larger position, as the interpreter specifies.
        """
        T, sc = self.T, n.score
        idx_label = next((x.label for x in self.nodes if isinstance(x, P.Indices)), "indices")
        if isinstance(sc.kind, P.Categorical):
            order = sorted(set(float(v) for v in sc.kind.values))
            levels = len(order)
            R = levels * T
            prio = {lab: order.index(float(v)) * T / R for v, lab in zip(sc.kind.values, _labels(sc))}
        else:
            xs = sc.kind.values
            g = min([b - a for a, b in zip(xs, xs[1:])] + [1.0])
            levels = int(round((xs[-1] - xs[0]) / g)) + 1
            R = levels * T
            prio = {sc.label: T / (g * R)}  # (score - min)/g * T / R: the -min term rides on the token dims
            for lab in _labels(self.tokens):
                prio[lab] = -xs[0] * T / (g * R)
        for j in range(T):
            prio[f"{idx_label}:{j}"] = prio.get(f"{idx_label}:{j}", 0.0) + j / R
        prio["__levels__"] = R
        return prio

    def errors_in(self, n) -> float:
        return self.err.get(n.sop.label, 0.0) if isinstance(n, (P.Aggregate, P.SelectBest)) else 0.0

    def width_mlp(self, n: P.SelectorWidth) -> MLPSpec:
        """``1/(w+1) -> w`` as exact steps between consecutive values."""
        xs = [1.0 / (w + 1) for w in range(self.T, -1, -1)]  # ascending
        ws = list(range(self.T, -1, -1))
        frac = f"{n.label}.frac"
        steps = [self._const(n.label, {f"{n.label}:{ws[0]}": 1.0})]
        for i in range(len(xs) - 1):
            a, b = xs[i], xs[i + 1]
            steps.append(step_units(f"{n.label}.s{i}", {frac: 1.0}, (a + b) / 2, (b - a) / 2,
                                    {f"{n.label}:{ws[i + 1]}": 1.0, f"{n.label}:{ws[i]}": -1.0}))
        # also clear the scratch fraction so it cannot leak into later heads
        m = self._gated(mlp_from_steps(n.label, steps))
        return m

    # -- the whole model -----------------------------------------------------------------------
    def validate(self) -> None:
        for n in self.nodes:
            if isinstance(n, P.SequenceMap) and (isinstance(n.a.kind, P.Numerical) or isinstance(n.b.kind, P.Numerical)):
                if not (isinstance(n.a.kind, P.Numerical) and isinstance(n.b.kind, P.Numerical)
                        and isinstance(n.kind, P.Numerical)):
                    raise ParameterError("SequenceMap", n.label, "mixing Numerical and Categorical inputs is not "
                                         "compiled; Map the Numerical input to Categorical first")
                self._affine(n)

    def build(self) -> Compiled:
        self.validate()
        slot = self.schedule()
        self.xmax = 1.0 + max([_span(getattr(n.kind, "values", (0.0, 1.0))) for n in self.nodes
                               if isinstance(n.kind, (P.Numerical, P.SetFraction))] + [1.0])
        self.budgets()
        n_layers = max([s // 2 for s in slot.values()] + [0]) + 1
        layers = [CraftLayer() for _ in range(n_layers)]
        self.err: dict[str, float] = {}
        betas = {}
        for n in self.nodes:
            s = slot[n.label]
            if s < 0:
                self.err[n.label] = 0.0
                continue
            if isinstance(n, P.ATTENTION):
                head, beta, eps = self.head_for(n)
                layers[s // 2].heads.append(head)
                betas[n.label] = beta
                if isinstance(n, P.SelectorWidth):
                    layers[s // 2].mlps.append(self.width_mlp(n))
                    self.err[n.label] = 0.0
                elif isinstance(n.kind, (P.Categorical, P.SetOf)):
                    layers[s // 2].mlps.append(self.cleanup(n))
                    self.err[n.label] = 0.0
                else:
                    self.err[n.label] = eps + self.errors_in(n)
            else:
                layers[s // 2].mlps.append(self.mlp_for(n))
                self.err[n.label] = self._mlp_err(n)
        for n in self.nodes:
            if self.err[n.label] > self.budget[n.label] + 1e-12:
                raise ParameterError("program", n.label, f"error bound {self.err[n.label]:.3g} exceeds the "
                                     f"slack {self.budget[n.label]:.3g} its consumers absorb")
        # residual space
        labels = ["one", f"tokens:{BOS}"] + list(_labels(self.tokens))
        idx_nodes = [n for n in self.nodes if isinstance(n, P.Indices)]
        idx_label = idx_nodes[0].label if idx_nodes else "indices"
        for n in self.nodes:
            if isinstance(n, (P.Tokens, P.Indices)):
                continue
            labels += list(_labels(n))
            if isinstance(n, P.SelectorWidth):
                labels.append(f"{n.label}.frac")
        labels += ["pos:BOS"] + [f"{idx_label}:{i}" for i in range(self.T)]
        residual = Space(tuple(labels))
        vals = self.tokens.kind.values
        vocab = (PAD, BOS) + tuple(str(v) for v in vals)
        if len(set(vocab)) != len(vocab):
            raise ParameterError("vocab", vals, f"token values must print distinctly and differ from {PAD}, {BOS}")
        embed = {BOS: {"one": 1.0, f"tokens:{BOS}": 1.0}, PAD: {"one": 1.0}}
        for v in vals:
            embed[str(v)] = {"one": 1.0, f"tokens:{v}": 1.0}
        craft = CraftModel(residual=residual, vocab=vocab, embed=embed, layers=layers, max_len=self.T + 1,
                           readout={}, attention="full", pad_token=PAD, meta={"program": self.program.label})
        model, meta = craft.to_transformer()
        meta.update({"max_len": self.T, "betas": betas, "output": self.program.label,
                     "input_values": [str(v) for v in vals]})
        return Compiled(self.program, craft, model, meta, self.T, vocab, vals, betas, dict(self.err),
                        dict(self.budget))

    def _mlp_err(self, n) -> float:
        if isinstance(n, P.SequenceMap) and isinstance(n.kind, P.Numerical) and isinstance(n.a.kind, P.Numerical):
            _, al, be = self._affine(n)
            return abs(al) * self.err[n.a.label] + abs(be) * self.err[n.b.label]
        for x in _inputs(n):
            if self.err[x.label] > self.input_slack(n, x) + 1e-12:
                raise ParameterError("program", n.label, f"input {x.label} error {self.err[x.label]:.3g} exceeds "
                                     f"the dead zone {self.input_slack(n, x):.3g}")
        return 0.0


def _sub(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) - v
    return {k: v for k, v in out.items() if v}


def compile_program(program: P.SOp, max_len: int, beta_scale: float = 1.0,
                    beta: float | None = None) -> Compiled:
    """Compile ``program`` for inputs of length ``1 .. max_len``.

    ``beta_scale`` multiplies every derived inverse temperature; ``beta``
    overrides them all (both for experiments on exactness: the certificate of a
    model built below the derived bound is expected to fail).
    """
    if not isinstance(program, P.SOp):
        raise ParameterError("program", program, "must be an SOp")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ParameterError("max_len", max_len, "must be a positive int")
    return _Builder(program, max_len, beta_scale, beta).build()
