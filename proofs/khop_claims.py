"""Existence claims for the k-hop induction construction, and their checks.

A :class:`KHopClaim` says: *the* ``floor(log2 k) + 2``-*layer construction of*
:mod:`algeval.models.constructions.khop`, *built for sequences of length* ``T``
*over* ``m`` *symbols, outputs* ``hop_k(X)[i]`` *at every position* ``i`` (the
token ``<none>`` where :func:`algeval.theory.khop.khop` says undefined).
Domains:

* ``exhaustive`` -- every one of the ``m^T`` sequences of length ``T`` (each
  position ``i`` sees the prefix ``X[:i+1]`` under the causal mask, so every
  shorter sequence is covered too); allowed when ``m^T <= 10^6``;
* ``sampled`` -- ``samples`` seeded uniform draws from the same set.

A sequence passes when the argmax at every one of its ``T`` positions is the
reference's answer.  The certificate also records the smallest decoding margin
(correct logit minus the best other one), and per head the worst measured
leak (attention mass off the intended key, taken from the reference's
``find`` chain) beside the leak the derived beta guarantees,
``(T - 1) e^{-beta Delta}`` (:mod:`algeval.theory.bounds`).

Resources are sympy expressions in ``k``, ``T`` and ``m``, derived from the
construction's named directions and hidden units (``t = floor(log2 k)`` the
top bit, ``s`` the number of one bits of ``k``, written with Legendre's
identity ``s = k - sum_{j=1}^{t} floor(k / 2^j)``):

* ``layers = t + 2``, ``heads = 1``;
* ``d_model = 1 + m + T`` (``one``, tokens, positions) ``+ (T - 1)(2t + 2)``
  (layer 0's position copy and pointer, a raw and a clean pointer for each of
  the ``t`` doublings) ``+ (2m + 2) s`` (a raw and a clean token-with-``none``
  per one bit);
* ``d_mlp = 2(T - 1) + (2m + 2)`` when some layer both doubles the pointer and
  moves the token (``k`` not a power of two), else ``max(2(T - 1), 2m + 2)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import sympy as sp

from algeval.errors import ParameterError, check_int_range

k, T, m, j = sp.symbols("k T m j", positive=True, integer=True)
TOP_BIT = sp.floor(sp.log(k, 2))
ONE_BITS = k - sp.Sum(sp.floor(k / 2 ** j), (j, 1, TOP_BIT))  # Legendre: k - v_2(k!) = popcount(k)

RESOURCES = dict(
    layers=TOP_BIT + 2,
    heads=sp.Integer(1),
    d_model=1 + m + T + (T - 1) * (2 * TOP_BIT + 2) + (2 * m + 2) * ONE_BITS,
    d_mlp=sp.Piecewise((sp.Max(2 * T - 2, 2 * m + 2), sp.Eq(ONE_BITS, 1)), (2 * T + 2 * m, True)),
)
#: the Sanford--Hsu--Telgarsky upper bound the construction is held to
DEPTH_BOUND = sp.floor(sp.log(k, 2)) + 2
EXHAUSTIVE_LIMIT = 1_000_000


def resources_at(k_: int, seq_len: int, alphabet: int) -> dict[str, int]:
    """The sympy resource formulas evaluated at ``k, T, m``."""
    subs = {k: k_, T: seq_len, m: alphabet}
    return {name: int(sp.sympify(e).subs(subs).doit()) for name, e in RESOURCES.items()}


@dataclass(frozen=True)
class KHopClaim:
    k: int
    alphabet: int
    seq_len: int
    method: str  # "exhaustive" | "sampled"

    def __post_init__(self):
        check_int_range("k", self.k, 1, 64)
        check_int_range("alphabet", self.alphabet, 1, 64)
        check_int_range("seq_len", self.seq_len, 2, 512)
        if self.method not in ("exhaustive", "sampled"):
            raise ParameterError("method", self.method, "must be exhaustive or sampled")
        if self.method == "exhaustive" and self.domain_size() > EXHAUSTIVE_LIMIT:
            raise ParameterError("seq_len", self.seq_len, f"an exhaustive check needs alphabet^seq_len <= "
                                 f"{EXHAUSTIVE_LIMIT:.0e} (here {self.alphabet}^{self.seq_len})")

    @property
    def name(self) -> str:
        return f"k-hop-k{self.k}-m{self.alphabet}-T{self.seq_len}-{self.method}"

    def domain_size(self) -> int:
        return self.alphabet ** self.seq_len

    def domain(self) -> str:
        what = "every" if self.method == "exhaustive" else "uniformly random"
        return (f"{what} sequence of length {self.seq_len} over {self.alphabet} symbols (so every prefix), "
                "every position")

    def task(self):
        from algeval.sim.tasks import get_task

        return get_task("k-hop-induction", alphabet=self.alphabet, seq_len=self.seq_len, k=self.k,
                        all_positions=True)

    def expected_resources(self) -> dict[str, int]:
        return resources_at(self.k, self.seq_len, self.alphabet)

    def depth_bound(self) -> int:
        return int(DEPTH_BOUND.subs(k, self.k))


def build(claim: KHopClaim, beta_scale: float = 1.0, dtype: str = "float32"):
    """``(model, meta, craft)`` for the claim (every inverse temperature times ``beta_scale``)."""
    from algeval.models.constructions.khop import khop_induction

    craft = khop_induction(claim.task(), beta_scale=beta_scale)
    model, meta = craft.to_transformer(dtype)
    return model, meta, craft


def _sequences(claim: KHopClaim, samples: int, seed: int, chunk: int):
    """Chunks of ``(count, T)`` alphabet indices: all ``m^T`` in base-``m`` order, or seeded uniform draws."""
    mm, TT = claim.alphabet, claim.seq_len
    if claim.method == "exhaustive":
        place = mm ** np.arange(TT - 1, -1, -1, dtype=np.int64)
        total = claim.domain_size()
        for a in range(0, total, chunk):
            n = np.arange(a, min(a + chunk, total), dtype=np.int64)
            yield (n[:, None] // place[None, :]) % mm
        return
    rng = np.random.default_rng(seed)
    for a in range(0, samples, chunk):
        yield rng.integers(mm, size=(min(chunk, samples - a), TT))


def certify_khop(claim: KHopClaim, samples: int = 100_000, seed: int = 0, beta_scale: float = 1.0,
                 dtype: str = "float32", chunk: int = 4096) -> dict:
    """Check ``claim`` against :func:`algeval.theory.khop.khop`; return its certificate (see the module docstring)."""
    import contextlib

    import jax

    from algeval import __version__
    from algeval.models.constructions.khop import NONE_TOKEN, intended_keys
    from algeval.proofs.certify import _versions
    from algeval.theory.bounds import leak_bound
    from algeval.theory.khop import khop

    if dtype not in ("float32", "float64"):
        raise ParameterError("dtype", dtype, "must be float32 or float64")
    samples = check_int_range("samples", samples, 1)
    ctx = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    with ctx:
        t0 = time.perf_counter()
        model, meta, craft = build(claim, beta_scale, dtype)
        vocab = meta["vocab"]
        off, none_id = vocab.index("a0"), vocab.index(NONE_TOKEN)
        L = model.cfg.n_layers
        names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
        t_build = time.perf_counter() - t0
        t1 = time.perf_counter()
        n_checked = n_failed = 0
        counterexample = None
        min_margin = np.inf
        worst_leak = np.zeros(L)
        for seq in _sequences(claim, samples, seed, chunk):
            traces = [khop(s, claim.k) for s in seq]  # the specification
            want = np.stack([tr.answer for tr in traces])
            want_id = np.where(want >= 0, want + off, none_id)
            finds = np.stack([tr["find"] for tr in traces], axis=1)  # (step, batch, T)
            logits, cache = model.run_with_cache(seq + off, names)  # jitted once per model shape
            logits = np.asarray(logits, np.float64)
            pred = logits.argmax(-1)
            ok = (pred == want_id).all(1)
            right = np.take_along_axis(logits, want_id[..., None], -1)[..., 0]
            np.put_along_axis(logits, want_id[..., None], -np.inf, -1)
            min_margin = min(min_margin, float((right - logits.max(-1)).min()))
            for l, key in enumerate(intended_keys(finds, claim.k)):
                pat = np.asarray(cache[names[l]], np.float64)[:, 0]  # (batch, query, key)
                hit = np.take_along_axis(pat, key[..., None], -1)[..., 0]
                worst_leak[l] = max(worst_leak[l], float((1.0 - hit).max()))
            if counterexample is None and not ok.all():
                b = int(np.flatnonzero(~ok)[0])
                counterexample = {"sequence": " ".join(f"a{x}" for x in seq[b]),
                                  "expected": [vocab[x] for x in want_id[b]],
                                  "got": [vocab[x] for x in pred[b]]}
            n_checked += len(seq)
            n_failed += int((~ok).sum())
        t_check = time.perf_counter() - t1
    built = {"layers": model.cfg.n_layers, "heads": model.cfg.n_heads, "d_model": model.cfg.d_model,
             "d_mlp": model.cfg.d_mlp}
    expected = claim.expected_resources()
    bound = claim.depth_bound()
    passed = n_failed == 0 and expected == built and min_margin > 0
    Tn = claim.seq_len
    exact = passed and claim.method == "exhaustive"
    return {
        "claim": claim.name,
        "construction": "k-hop",
        "statement": (f"a {built['layers']}-layer, 1-head transformer outputs hop_{claim.k} (or <none> where undefined) "
                      + (f"at every position of {claim.domain()}" if exact else
                         f"with no failure in {n_checked} samples of {claim.domain()}" if passed else
                         f"NOT established: {n_failed} of {n_checked} sequences failed"
                         + ("" if expected == built else ", resources differ from the formulas"))),
        "domain": claim.domain(),
        "domain_size": claim.domain_size(),
        "method": claim.method,
        "checked": n_checked,
        "positions_checked": n_checked * Tn,
        "failed": n_failed,
        "passed": passed,
        "exact_on_domain": exact,
        "first_counterexample": counterexample,
        "min_decoding_margin": float(min_margin),
        "depth": {"built": built["layers"], "bound": bound, "bound_formula": str(DEPTH_BOUND),
                  "above_bound": built["layers"] - bound},
        "heads": [{"name": h.name, "layer": li, "beta": h.beta, "delta": h.delta,
                   "derived_leak_bound": leak_bound(Tn, h.beta, h.delta), "worst_leak_measured": worst_leak[li]}
                  for li, layer in enumerate(craft.layers) for h in layer.heads],
        "beta_scale": beta_scale,
        "resources": {name: {"formula": str(RESOURCES[name]), "expected": expected[name], "built": built[name]}
                      for name in built},
        "resources_match": expected == built,
        "sizes": {"k": claim.k, "T": Tn, "m": claim.alphabet},
        "dtype": dtype,
        "seed": seed,
        "seconds": {"build": round(t_build, 3), "check": round(t_check, 3)},
        "inputs_per_second": round(n_checked / max(t_check, 1e-9), 1),
        "versions": _versions(__version__),
    }


def smallest_passing_beta_scale(claim: KHopClaim, samples: int = 2000, seed: int = 1, tol: float = 0.02) -> float:
    """Bisection on the factor multiplying every derived beta: the smallest that still passes.

    Exhaustive claims are probed on their whole domain, sampled ones on
    ``samples`` seeded inputs.  Raises if the claim fails at the derived beta.
    """
    from algeval.proofs.certify import smallest_passing_scale

    return smallest_passing_scale(
        lambda s: certify_khop(claim, samples=samples, seed=seed, beta_scale=s)["passed"], claim.name, tol)


def beta_report(claims: list[KHopClaim], samples: int = 2000, seed: int = 1, tol: float = 0.02) -> dict:
    """The smallest passing beta scale per claim, set against the derived betas (a certificate-style record)."""
    from algeval.models.constructions.khop import derived_betas
    from algeval.proofs.certify import min_beta_report

    sizes = sorted({(c.alphabet, c.seq_len) for c in claims})
    return min_beta_report(
        "k-hop-min-beta-" + "-".join(f"m{a}-T{t}" for a, t in sizes), "k-hop",
        "the smallest factor on the derived inverse temperatures (find: log(4(T-1)), "
        "lookup: 2 log(12(T-1))) at which each claim still passes, by bisection", claims,
        lambda c: smallest_passing_beta_scale(c, samples, seed, tol), lambda c: derived_betas(c.seq_len),
        lambda c: {"k": c.k, "T": c.seq_len, "m": c.alphabet, "method": c.method},
        {"samples_if_sampled": samples, "seed": seed, "tolerance": tol})


def default_khop_claims() -> list[KHopClaim]:
    """What ``algeval prove --all`` checks: k = 1, 2, 3, 4 exhaustively (all 3^10 sequences) and sampled at T = 32."""
    out = [KHopClaim(kk, 3, 10, "exhaustive") for kk in (1, 2, 3, 4)]
    out += [KHopClaim(kk, 4, 32, "sampled") for kk in (1, 2, 3, 4)]
    return out
