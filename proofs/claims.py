"""Existence claims: "this L-layer transformer computes that program exactly on this domain".

A :class:`Claim` names a program maker, its sizes, the input domain, and the
resources of its construction as sympy expressions in the size symbols
``T`` (maximum length) and ``V`` (vocabulary size).  The formulas are derived
from the compiler's allocation rules (:mod:`algeval.models.compiler`):

* ``d_model = 3 + V + T + sum over nodes of their directions`` (``one``,
  ``tokens:BOS``, the tokens, the ``T + 1`` positions; a Categorical node
  owns one direction per value, a Numerical one, a SelectorWidth ``T + 2``);
* ``d_mlp`` = the largest layer's total hidden units (a categorical Map: 2 per
  input value; a clean-up: 4 per direction; a SelectorWidth: ``2T + 1``);
* ``layers`` = attention/MLP dependency depth.

A check (:mod:`algeval.proofs.certify`) compares them with the built model,
so a formula that drifts from the compiler fails its certificate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import sympy as sp

from algeval.errors import ParameterError
from algeval.theory import programs_library as lib

T, V = sp.symbols("T V", positive=True, integer=True)


@dataclass(frozen=True)
class Claim:
    name: str
    program: str
    make: Callable
    max_len: int
    vocab: tuple
    resources: dict[str, sp.Expr]
    distinct_tokens: bool = False  # domain: sequences with pairwise distinct tokens (sort_unique)
    description: str = ""
    sizes: dict = field(default_factory=dict)

    def domain(self) -> str:
        kind = "with pairwise distinct tokens " if self.distinct_tokens else ""
        return f"every sequence {kind}over {{{', '.join(map(str, self.vocab))}}} of length 1..{self.max_len}"

    def domain_size(self) -> int:
        v = len(self.vocab)
        if self.distinct_tokens:
            return sum(math.perm(v, n) for n in range(1, min(v, self.max_len) + 1))
        return sum(v ** n for n in range(1, self.max_len + 1))

    def expected_resources(self) -> dict[str, int]:
        subs = {T: self.max_len, V: len(self.vocab)}
        return {k: int(sp.sympify(e).subs(subs)) for k, e in self.resources.items()}


RESOURCES = {
    "length": dict(layers=1, heads=1, d_model=2 * T + V + 5, d_mlp=2 * T + 1),
    "histogram": dict(layers=1, heads=1, d_model=2 * T + V + 5, d_mlp=2 * T + 1),
    "copy": dict(layers=1, heads=1, d_model=2 * V + T + 3, d_mlp=4 * V),
    "sort_unique": dict(layers=2, heads=1, d_model=2 * T + 2 * V + 5, d_mlp=sp.Max(2 * T + 1, 4 * V)),
    "reverse": dict(layers=3, heads=1, d_model=4 * T + 2 * V + 5, d_mlp=sp.Max(2 * T * (T + 1), 4 * V)),
    "frac_prevs": dict(layers=2, heads=1, d_model=V + T + 5, d_mlp=2),
    "dyck1": dict(layers=5, heads=2, d_model=3 * T + 23, d_mlp=2 * T + 7),
    "induction": dict(layers=3, heads=1, d_model=2 * T + 3 * V + 3, d_mlp=sp.Max(2 * T, 4 * V)),
}

MAKERS = {
    "length": lambda vocab, T: lib.make_length(vocab, T),
    "histogram": lib.make_histogram,
    "copy": lib.make_copy,
    "sort_unique": lib.make_sort_unique,
    "reverse": lib.make_reverse,
    "frac_prevs": lambda vocab, T: lib.make_frac_prevs(vocab, T, vocab[0]),
    "dyck1": lambda vocab, T: lib.make_dyck1(T, vocab),
    "induction": lib.make_induction,
}


def make_claim(program: str, max_len: int, vocab: tuple | None = None) -> Claim:
    """The claim for a library program at the given sizes."""
    if program not in MAKERS:
        raise ParameterError("program", program, f"unknown; known: {', '.join(sorted(MAKERS))}")
    if vocab is None:
        vocab = ("(", ")") if program == "dyck1" else lib.DEFAULT_VOCAB
    vocab = tuple(vocab)
    if program == "dyck1" and set(vocab) != {"(", ")"}:
        raise ParameterError("vocab", vocab, "dyck1 is stated over ( and )")
    return Claim(
        name=f"{program}-T{max_len}-V{len(vocab)}", program=program,
        make=partial(MAKERS[program], vocab, max_len), max_len=max_len, vocab=vocab,
        resources=RESOURCES[program], distinct_tokens=program == "sort_unique",
        description=(lib.LIBRARY[program].func.__doc__ if hasattr(lib.LIBRARY[program], "func")
                     else lib.LIBRARY[program].__doc__ or "").strip().splitlines()[0],
        sizes={"T": max_len, "V": len(vocab)},
    )


def default_claims() -> list[Claim]:
    """What ``algeval prove --all`` checks: each program exhaustively at a small size, sampled at a larger one."""
    out = []
    for prog in MAKERS:
        small = ("(", ")") if prog == "dyck1" else tuple("abcdef") if prog == "sort_unique" else ("a", "b", "c")
        out.append(make_claim(prog, 6 if prog != "dyck1" else 10, small))
        big = ("(", ")") if prog == "dyck1" else lib.DEFAULT_VOCAB
        out.append(make_claim(prog, 12, big))
    return out


CLAIMS = {c.name: c for c in default_claims()}
