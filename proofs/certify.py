"""Check an existence claim and write its certificate.

``certify(claim)`` compiles the claim's program, then runs the built
transformer against the interpreter (the specification):

* **exhaustive** over the whole domain when it has at most
  ``exhaustive_limit`` (10^6) inputs;
* **sampled** on ``samples`` (10^5) seeded random inputs beyond that -- the
  certificate then says "no failure in N samples", never "exact".

It records the smallest decoding margin (how far every output coordinate
stays from its decision threshold), the worst softmax leakage measured on
every head (attention mass outside the keys the selector intends, BOS
included where intended) beside the leak the derived beta guarantees, the
resource figures (formula, value at these sizes, built model), dtype,
package versions and seed.  A single failing input fails the certificate and
is reported as the first counterexample.  Certificates are JSON files under
``proofs/certificates/``, written atomically.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from algeval.errors import ParameterError
from algeval.proofs.claims import Claim

CERT_DIR = Path(__file__).parent / "certificates"


def _inputs(claim: Claim, method: str, samples: int, seed: int):
    vocab = list(claim.vocab)
    if method == "exhaustive":
        for n in range(1, claim.max_len + 1):
            it = itertools.permutations(vocab, n) if claim.distinct_tokens else itertools.product(vocab, repeat=n)
            for seq in it:
                yield list(seq)
        return
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        n = int(rng.integers(1, claim.max_len + 1))
        if claim.distinct_tokens:
            n = min(n, len(vocab))
            yield [vocab[i] for i in rng.permutation(len(vocab))[:n]]
        else:
            yield [vocab[i] for i in rng.integers(0, len(vocab), n)]


def _intended(node, trace_vars, n: int) -> np.ndarray:
    """``(n + 1, n + 1)`` mask of the keys a head should attend to, in model positions (0 = BOS)."""
    from algeval.theory import program as P

    sel_label = node.selector.label
    sel = np.asarray(trace_vars[sel_label][0], dtype=bool)  # (query, key)
    out = np.zeros((n + 1, n + 1), dtype=bool)
    out[1:, 1:] = sel
    empty = ~sel.any(1)
    if isinstance(node, P.SelectorWidth):
        out[1:, 0] = True
    elif isinstance(node, P.SelectBest):
        score = np.asarray(trace_vars[node.score.label][0], dtype=float)
        for q in range(n):
            ks = np.flatnonzero(sel[q])
            out[q + 1, 1:] = False
            if len(ks):
                best = max(ks, key=lambda k: (score[k], k))
                out[q + 1, best + 1] = True
    out[1:, 0] |= empty
    return out


def certify(claim: Claim, dtype: str = "float32", samples: int = 100_000, seed: int = 0,
            exhaustive_limit: int = 1_000_000, batch: int = 2048, beta: float | None = None,
            beta_scale: float = 1.0) -> dict:
    """Check ``claim``; return the certificate as a dict (see the module docstring)."""
    import jax

    from algeval import __version__
    from algeval.models.compiler import compile_program
    from algeval.theory import program as P
    from algeval.theory.bounds import leak_bound
    from algeval.theory.interpret import interpret

    if dtype not in ("float32", "float64"):
        raise ParameterError("dtype", dtype, "must be float32 or float64")
    ctx = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        prog = claim.make()
        comp = compile_program(prog, claim.max_len, beta=beta, beta_scale=beta_scale)
        if dtype == "float64":
            comp.model, comp.meta = comp.craft.to_transformer("float64")
        t_compile = time.perf_counter() - t0
        size = claim.domain_size()
        method = "exhaustive" if size <= exhaustive_limit else "sampled"
        nodes = {n.label: n for n in P.topological(prog)}
        heads = [(li, hi, nodes[h.name], h) for li, layer in enumerate(comp.craft.layers)
                 for hi, h in enumerate(layer.heads)]
        names = [f"blocks.{li}.attn.hook_pattern" for li in sorted({li for li, *_ in heads})]
        last = f"blocks.{comp.model.cfg.n_layers - 1}.hook_resid_post"
        n_checked = n_failed = 0
        counterexample = None
        min_margin, worst_leak = np.inf, {n.label: 0.0 for _, _, n, _ in heads}
        t1 = time.perf_counter()
        it = _inputs(claim, method, samples, seed)
        while True:
            chunk = list(itertools.islice(it, batch))
            if not chunk:
                break
            toks = comp.encode_inputs(chunk)
            _, cache = comp.model.run_with_cache(toks, names_filter=names + [last])
            outs, margins = comp.decode(comp.output_coordinates(cache[last]), [len(s) for s in chunk])
            pats = {k: np.asarray(v) for k, v in cache.items() if k != last}
            for b, (x, o) in enumerate(zip(chunk, outs)):
                tr = interpret(prog, x)
                want = list(tr.answer)
                ok = want == o
                n_checked += 1
                if not ok:
                    n_failed += 1
                    if counterexample is None:
                        counterexample = {"input": [str(t) for t in x], "expected": [repr(v) for v in want],
                                          "got": [repr(v) for v in o]}
                n = len(x)
                min_margin = min(min_margin, float(np.min(margins[b, 1:n + 1])))
                for li, hi, node, _ in heads:
                    pat = pats[f"blocks.{li}.attn.hook_pattern"][b, hi, : n + 1, : n + 1]
                    mask = _intended(node, tr.variables, n)
                    leak = 1.0 - (pat * mask).sum(-1)[1:]
                    worst_leak[node.label] = max(worst_leak[node.label], float(leak.max()))
        t_check = time.perf_counter() - t1
    built = {"layers": comp.model.cfg.n_layers, "heads": comp.model.cfg.n_heads,
             "d_model": comp.model.cfg.d_model, "d_mlp": comp.model.cfg.d_mlp}
    expected = claim.expected_resources()
    resources_ok = expected == built
    passed = n_failed == 0 and resources_ok and min_margin > 0
    T = claim.max_len + 1
    cert = {
        "claim": claim.name,
        "statement": f"a {built['layers']}-layer transformer computes {claim.program} exactly on {claim.domain()}"
        if method == "exhaustive" else
        f"a {built['layers']}-layer transformer computes {claim.program} with no failure in {n_checked} "
        f"samples from {claim.domain()}",
        "program": claim.program,
        "description": claim.description,
        "domain": claim.domain(),
        "domain_size": size,
        "method": method,
        "checked": n_checked,
        "failed": n_failed,
        "passed": passed,
        "exact_on_domain": passed and method == "exhaustive",
        "first_counterexample": counterexample,
        "min_decoding_margin": min_margin,
        "heads": [{"node": n.label, "layer": li, "head": hi, "beta": h.beta, "delta": h.delta,
                   "derived_leak_bound": leak_bound(T, h.beta, h.delta),
                   "worst_leak_measured": worst_leak[n.label]} for li, hi, n, h in heads],
        "error_bounds": {k: v for k, v in comp.errors.items() if v > 0},
        "resources": {k: {"formula": str(claim.resources[k]), "expected": expected[k], "built": built[k]}
                      for k in built},
        "resources_match": resources_ok,
        "sizes": claim.sizes,
        "dtype": dtype,
        "seed": seed,
        "beta_override": beta,
        "beta_scale": beta_scale,
        "seconds": {"compile": round(t_compile, 3), "check": round(t_check, 3)},
        "inputs_per_second": round(n_checked / max(t_check, 1e-9), 1),
        "versions": _versions(__version__),
    }
    return cert


def smallest_passing_scale(passes, name: str, tol: float = 0.02) -> float:
    """Bisection on ``(0, 1]`` for the smallest factor ``s`` on every derived beta with ``passes(s)`` true, to
    within ``tol`` (assumes passing is monotone in ``s``).  Raises if ``passes(1.0)`` is false: the claim
    ``name`` fails even at the derived betas."""
    if not passes(1.0):
        raise ParameterError("claim", name, "fails even at the derived beta")
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return hi


def min_beta_report(name: str, construction: str, statement: str, claims, smallest, derived, describe,
                    probe: dict) -> dict:
    """A certificate-style record of the smallest passing beta factor per claim, beside the derived betas.

    ``smallest(claim)`` is the factor (:func:`smallest_passing_scale`), ``derived(claim)`` the derived betas
    by head name, ``describe(claim)`` the claim's sizes for its row.
    """
    from algeval import __version__

    rows = []
    for c in claims:
        t0 = time.perf_counter()
        s = smallest(c)
        d = derived(c)
        rows.append({"claim": c.name, **describe(c), "derived_beta": d, "smallest_passing_scale": s,
                     "smallest_passing_beta": {k: b * s for k, b in d.items()},
                     "seconds": round(time.perf_counter() - t0, 2)})
    return {"claim": name, "construction": construction, "statement": statement, "probe": probe, "rows": rows,
            "dtype": "float32", "versions": _versions(__version__)}


def _versions(algeval_version: str) -> dict:
    import flax
    import jax
    import sympy

    return {"algeval": algeval_version, "jax": jax.__version__, "flax": flax.__version__,
            "numpy": np.__version__, "sympy": sympy.__version__, "python": platform.python_version()}


def write_certificate(cert: dict, directory: Path | str = CERT_DIR) -> Path:
    """Write ``cert`` as ``<claim>[-float64].json`` atomically (temp file + rename)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    suffix = "" if cert["dtype"] == "float32" else f"-{cert['dtype']}"
    path = d / f"{cert['claim']}{suffix}.json"
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(cert, f, indent=1, sort_keys=True, default=float)
        f.write("\n")
    os.replace(tmp, path)
    return path
