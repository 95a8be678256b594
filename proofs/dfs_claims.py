"""Existence claims for the DFS chain-of-thought construction, and their checks.

A :class:`DFSClaim` says: *the construction of*
:mod:`algeval.models.constructions.dfs_cot`, *built for the* ``dfs-trace``
*task with* ``n`` *vertex labels, predicts the correct next trace token (the
smallest-id-first DFS order, then* ``.``) *at every scored position given the
correct prefix*.  Since that order is unique, being right at every position
under teacher forcing is the same as greedy generation from ``... S s |``
reproducing :func:`algeval.theory.dfs.dfs`; every certificate also runs
greedy generation on a sample and compares it with the reference.

Domains:

* ``exhaustive`` -- every graph on the ``n`` labels (undirected:
  ``2^(n(n-1)/2)``; directed: ``2^(n(n-1))``; a label without edges is just
  absent from the prompt, so every graph on fewer vertices is included, and
  an isolated start gives the trace ``s .``), every start, each prompt twice:
  edges in sorted order and in one seeded random order (random endpoint order
  when undirected);
* ``sampled`` -- ``samples`` seeded draws of the task itself, split over the
  families ``connected`` (edge probability 0.3 and 0.6), ``er`` (0.3, may be
  disconnected) and ``tree``, with ``1 <= |V| <= n``.

Resources are sympy expressions in ``n`` (the prompt width ``T`` is the
task's ``3 m + 3 + n`` with ``m = n(n-1)/2`` edges, ``n(n-1)`` directed);
every certificate compares them with the built model.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass

import numpy as np
import sympy as sp

from algeval.errors import ParameterError, check_int_range

n = sp.symbols("n", positive=True, integer=True)


def _resources(edges):
    T = 3 * edges + 3 + n
    return dict(layers=sp.Integer(5), heads=sp.Integer(2), max_len=sp.expand(T),
                d_model=sp.expand(3 * n**2 + 6 * n + 12 + T), d_mlp=2 * n**2 + 2 * n)


RESOURCES = {"undirected": _resources(n * (n - 1) / 2), "directed": _resources(n * (n - 1))}
SAMPLED_FAMILIES = (("connected", 0.3), ("connected", 0.6), ("er", 0.3), ("tree", 0.3))
EXHAUSTIVE_MAX = {False: 5, True: 4}  # 1024 * 5 resp. 4096 * 4 prompts; directed n = 5 would be 5.2M
DEFAULT_SAMPLES = 5000  # ``prove --all`` caps the sampled check at this many prompts (~60-300/s at n = 8 on CPU)


@dataclass(frozen=True)
class DFSClaim:
    max_vertices: int
    method: str  # "exhaustive" | "sampled"
    directed: bool = False

    def __post_init__(self):
        check_int_range("max_vertices", self.max_vertices, 3, 32)
        if self.method not in ("exhaustive", "sampled"):
            raise ParameterError("method", self.method, "must be exhaustive or sampled")
        lim = EXHAUSTIVE_MAX[bool(self.directed)]
        if self.method == "exhaustive" and self.max_vertices > lim:
            raise ParameterError("max_vertices", self.max_vertices,
                                 f"an exhaustive check enumerates every {self.kind} graph: <= {lim}")

    @property
    def kind(self) -> str:
        return "directed" if self.directed else "undirected"

    @property
    def name(self) -> str:
        return f"dfs-cot-n{self.max_vertices}{'-directed' if self.directed else ''}-{self.method}"

    def task(self, family: str = "connected", edge_prob: float = 0.3):
        from algeval.sim.tasks import get_task

        return get_task("dfs-trace", max_vertices=self.max_vertices, min_vertices=1, family=family,
                        directed=self.directed, edge_prob=edge_prob)

    def domain(self) -> str:
        if self.method == "exhaustive":
            return (f"every {self.kind} graph on {self.max_vertices} vertex labels and every start, edges in "
                    "sorted order and in one random order, every trace position (teacher forced)")
        fams = ", ".join(f"{f}" + (f" p={p}" if f != "tree" else "") for f, p in SAMPLED_FAMILIES)
        return (f"random dfs-trace prompts, {self.kind}, 1..{self.max_vertices} vertices ({fams}), "
                "every trace position (teacher forced)")

    def expected_resources(self) -> dict[str, int]:
        return {k: int(sp.sympify(e).subs(n, self.max_vertices)) for k, e in RESOURCES[self.kind].items()}


def build(claim: DFSClaim, beta_scale: float = 1.0, dtype: str = "float32"):
    """``(model, meta, craft)``: the construction for the claim's task, every beta times ``beta_scale``."""
    from algeval.models.constructions.dfs_cot import dfs_cot

    craft = dfs_cot(claim.task())
    if beta_scale != 1.0:
        craft.scale_betas(beta_scale)
    model, meta = craft.to_transformer(dtype)
    return model, meta, craft


# -- inputs -------------------------------------------------------------------------------

def all_graphs(nv: int, directed: bool) -> np.ndarray:
    """Every graph on ``nv`` labelled vertices, ``(count, nv, nv)`` bool (symmetric when undirected)."""
    pairs = [(u, v) for u in range(nv) for v in range(nv) if u != v and (directed or u < v)]
    bits = np.array(list(itertools.product((False, True), repeat=len(pairs))), dtype=bool).reshape(-1, len(pairs))
    adj = np.zeros((len(bits), nv, nv), dtype=bool)
    for k, (u, v) in enumerate(pairs):
        adj[:, u, v] = bits[:, k]
        if not directed:
            adj[:, v, u] = bits[:, k]
    return adj


def encode_prompts(task, adj: np.ndarray, start: np.ndarray, rng: np.random.Generator | None = None):
    """A ``dfs-trace`` :class:`TaskBatch` for given graphs and starts (the task's own format).

    ``rng=None`` lists the edges in sorted order (``u < v`` first when
    undirected), else in the random order of :func:`edge_tokens`.
    """
    from algeval.sim.tasks.base import TaskBatch
    from algeval.sim.tasks.graphs import assemble, edge_tokens, ragged
    from algeval.theory.dfs import dfs

    v, V = task.vocab, task.spec.num_labels
    adj = np.asarray(adj, dtype=bool)
    start = np.asarray(start, dtype=np.int64)
    count = len(adj)
    if adj.shape[1:] != (V, V):
        raise ParameterError("adj", adj.shape, f"must be (count, {V}, {V}) for this task")
    if rng is None:
        b, x, y = np.nonzero(adj if task.spec.directed else np.triu(adj, 1))
        vals = np.stack([np.full(len(b), v.id("E")), v.vertex(x), v.vertex(y)], 1).ravel()
        edges = (vals, 3 * np.bincount(b, minlength=count))
    else:
        edges = edge_tokens(adj, task.spec.directed, rng, v)
    order = np.full((count, V), -1, dtype=np.int64)
    for i in range(count):
        o = dfs(adj[i], int(start[i])).answer
        order[i, : len(o)] = o
    R = (order >= 0).sum(1)
    head = np.stack([np.full(count, v.id("S")), v.vertex(start), np.full(count, v.id("|"))], 1)
    tokens, starts = assemble([edges, head, ragged(v.vertex(np.maximum(order, 0)), R)], task.max_len)
    prefix_end = starts[2]
    nxt = np.concatenate([order, np.full((count, 1), -1)], 1)
    sets = np.where(nxt >= 0, nxt + v.vertex_offset, -1).astype(np.int32)
    sets[np.arange(count), R] = v.id(".")
    answers = np.full((count, task.max_len, 1), -1, dtype=np.int32)
    loss_mask = np.zeros((count, task.max_len), dtype=bool)
    rb, t = np.nonzero(np.arange(V + 1)[None, :] <= R[:, None])
    answers[rb, prefix_end[rb] - 1 + t, 0] = sets[rb, t]
    loss_mask[rb, prefix_end[rb] - 1 + t] = True
    meta = {"adj": adj, "start": start, "prefix_end": prefix_end, "order": order, "order_len": R}
    return TaskBatch(task.name, tokens, answers, loss_mask, v, task.attention, meta)


def _exhaustive_batches(claim: DFSClaim, rng):
    task = claim.task()
    g = all_graphs(claim.max_vertices, claim.directed)
    adj = np.repeat(g, claim.max_vertices, axis=0)
    start = np.tile(np.arange(claim.max_vertices), len(g))
    return [encode_prompts(task, adj, start), encode_prompts(task, adj, start, rng)]


def _sampled_batches(claim: DFSClaim, samples: int, seed: int):
    k = len(SAMPLED_FAMILIES)
    per = [samples // k + (i < samples % k) for i in range(k)]
    return [claim.task(f, p).sample(c, seed + i) for i, ((f, p), c) in enumerate(zip(SAMPLED_FAMILIES, per)) if c]


# -- running the model --------------------------------------------------------------------

_JITTED: dict = {}  # one compiled forward per model config: models that differ only in weights share it


def _runner(model):
    """``(jitted(state, tokens, prefix_end) -> logits, state)``."""
    import json

    import jax

    fn, state = model.functional()
    key = json.dumps(model.cfg.to_json(), sort_keys=True, default=str)
    if key not in _JITTED:
        _JITTED[key] = jax.jit(lambda st, toks, pe: fn(st, toks, None, pe)[0])
    return _JITTED[key], state


def _trim(tokens: np.ndarray, prefix_end: np.ndarray, pad: int = 0, multiple: int = 16):
    """Drop leading all-pad columns (rounded so few widths occur); the construction is shift invariant."""
    used = (tokens != pad).any(0)
    first = int(np.argmax(used)) if used.any() else tokens.shape[1] - 1
    width = tokens.shape[1] - first
    width = min(tokens.shape[1], -(-width // multiple) * multiple)
    cut = tokens.shape[1] - width
    return tokens[:, cut:], prefix_end - cut, cut


def teacher_forced(model, batch, chunk: int = 512, run=None, fast: bool = True):
    """Per example: every scored position's argmax in its answer set; the smallest margin; the first bad position.

    ``fast`` (default): logits at the scored positions by the exact sparse evaluator
    (:func:`algeval.models.fastpath.last_position_logits` with ``last`` = the scored tail: prompts are
    right-aligned, so the trace is the last columns); else the dense forward pass, examples sorted by
    prompt length, left padding trimmed per chunk.
    """
    if fast:
        from algeval.models.fastpath import last_position_logits

        used = batch.loss_mask.any(0)
        Q = batch.tokens.shape[1] - int(np.argmax(used)) if used.any() else 1
        logits = last_position_logits(model, batch.tokens, batch.meta["prefix_end"], last=Q)
        cut = batch.tokens.shape[1] - Q
        return _score(logits, batch.answers[:, cut:], batch.loss_mask[:, cut:], cut)
    import jax.numpy as jnp

    run, state = run or _runner(model)
    B = len(batch)
    length = (batch.tokens != 0).sum(1)
    idx = np.argsort(length, kind="stable")
    ok = np.ones(B, dtype=bool)
    margin = np.full(B, np.inf)
    bad_pos = np.full(B, -1)
    for s in range(0, B, chunk):
        rows = idx[s:s + chunk]
        toks, pe, cut = _trim(batch.tokens[rows], batch.meta["prefix_end"][rows])
        logits = np.asarray(run(state, jnp.asarray(toks), jnp.asarray(pe, dtype=jnp.int32)), dtype=np.float64)
        ok[rows], margin[rows], bad_pos[rows] = _score(logits, batch.answers[rows][:, cut:],
                                                       batch.loss_mask[rows][:, cut:], cut)
    return ok, margin, bad_pos


def _score(logits, ans, lm, cut: int):
    """``logits (B, P, vocab)`` at columns ``cut, cut+1, ...``: per example, all scored argmaxes right, the
    smallest margin (best correct minus best other logit), the first wrong column (``-1``: none)."""
    inset = np.zeros(logits.shape, dtype=bool)
    for k in range(ans.shape[-1]):
        a = ans[..., k]
        r, p = np.nonzero(a >= 0)
        inset[r, p, a[r, p]] = True
    best_in = np.where(inset, logits, -np.inf).max(-1)
    best_out = np.where(inset, -np.inf, logits).max(-1)
    right = np.take_along_axis(inset, logits.argmax(-1)[..., None], -1)[..., 0]
    wrong = lm & ~right
    return (~wrong.any(1), np.where(lm, best_in - best_out, np.inf).min(1),
            np.where(wrong.any(1), np.argmax(wrong, 1) + cut, -1))


def greedy_generate(model, batch, chunk: int = 512, run=None, fast: bool = True) -> list[list[int]]:
    """Greedy decoding from each prompt's prefix (``... S s |``): the emitted tokens up to and including ``.``.

    Every step re-runs the model on the buffer up to the current position (no cache; exact, as later
    columns are never read there); ``fast``: by the sparse evaluator, else the dense pass on the whole
    buffer.  A row stops at ``.`` or after ``L + 1`` tokens.
    """
    import jax.numpy as jnp

    from algeval.models.fastpath import last_position_logits

    run, state = run or _runner(model)
    v = batch.vocab
    L, end, pad = v.num_vertices, v.id("."), v.id("<pad>")
    out = []
    for s in range(0, len(batch), chunk):
        toks = batch.tokens[s:s + chunk]
        pe = batch.meta["prefix_end"][s:s + chunk]
        B = len(toks)
        lp = pe - np.argmax(toks != pad, axis=1)  # prefix lengths, without the left padding
        P = int(lp.max())
        buf = np.full((B, P + L), pad, dtype=np.int32)  # P + L <= max_len: the longest prompt fits
        for i in range(B):  # right-align every prefix so that "|" sits at P - 1
            buf[i, P - lp[i]: P] = toks[i, pe[i] - lp[i]: pe[i]]
        emitted = [[] for _ in range(B)]
        done = np.zeros(B, dtype=bool)
        for t in range(L + 1):
            if fast:  # one width for every step (one compile): the last L + 1 columns hold P - 1 + t
                tail = last_position_logits(model, buf, np.full(B, P), chunk=min(B, 128), last=L + 1)
                nxt = tail[:, t].argmax(-1)
            else:
                logits = run(state, jnp.asarray(buf), jnp.full(B, P, dtype=jnp.int32))
                nxt = np.asarray(logits[:, P - 1 + t].argmax(-1))
            for i in np.flatnonzero(~done):
                emitted[i].append(int(nxt[i]))
            done |= nxt == end
            if done.all() or t == L:
                break
            buf[:, P + t] = np.where(done, pad, nxt)
        out += emitted
    return out


def _reference_tokens(batch, i: int) -> list[int]:
    from algeval.theory.dfs import dfs

    order = dfs(batch.meta["adj"][i], int(batch.meta["start"][i])).answer
    return [int(batch.vocab.vertex(int(x))) for x in order] + [batch.vocab.id(".")]


# -- the certificate ------------------------------------------------------------------------

def certify_dfs(claim: DFSClaim, samples: int = 100_000, seed: int = 0, beta_scale: float = 1.0,
                dtype: str = "float32", greedy_samples: int | None = None, chunk: int = 512) -> dict:
    """Check ``claim``; return its certificate (the schema of :func:`algeval.proofs.search_claims.certify_search`).

    ``greedy_samples`` prompts (default ``min(1000, max(100, checked // 100))``) are also decoded greedily.
    """
    import jax

    from algeval import __version__
    from algeval.proofs.certify import _versions
    from algeval.proofs.search_claims import fastpath_crosscheck
    from algeval.theory.bounds import leak_bound

    if dtype not in ("float32", "float64"):
        raise ParameterError("dtype", dtype, "must be float32 or float64")
    check_int_range("samples", samples, 1, None)
    if greedy_samples is not None:
        check_int_range("greedy_samples", greedy_samples, 0, None)
    ctx = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    rng = np.random.default_rng(seed)
    with ctx:
        t0 = time.perf_counter()
        model, meta, craft = build(claim, beta_scale, dtype)
        if claim.method == "exhaustive":
            batches = _exhaustive_batches(claim, rng)
        else:
            batches = _sampled_batches(claim, samples, seed)
        t_build = time.perf_counter() - t0
        t1 = time.perf_counter()
        run = _runner(model)
        n_checked = n_failed = n_pos = 0
        min_margin, counterexample = np.inf, None
        for b in batches:
            ok, margin, bad = teacher_forced(model, b, chunk, run)
            n_checked += len(b)
            n_failed += int((~ok).sum())
            n_pos += int(b.loss_mask.sum())
            min_margin = min(min_margin, float(margin.min()))
            if counterexample is None and not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                p = int(bad[i])
                counterexample = {"tokens": " ".join(t for t in b.vocab.decode(b.tokens[i]) if t != "<pad>"),
                                  "position_in_trace": p - int(b.meta["prefix_end"][i]) + 1,
                                  "expected": b.vocab.decode(b.answer_set(i, p))}
        t_check = time.perf_counter() - t1
        b = batches[-1]
        used = b.loss_mask.any(0)
        cross = fastpath_crosscheck(model, b.tokens, prefix_end=b.meta["prefix_end"],
                                    last=b.tokens.shape[1] - int(np.argmax(used)))
        # greedy generation on a seeded sample of the prompts (all of them when fewer)
        pool = batches[-1]
        if greedy_samples is None:
            greedy_samples = min(1000, max(100, n_checked // 100))
        pick = np.sort(rng.choice(len(pool), min(greedy_samples, len(pool)), replace=False))
        same = 0
        if len(pick):
            gen = greedy_generate(model, pool[pick], chunk, run)
            same = sum(g == _reference_tokens(pool, int(i)) for g, i in zip(gen, pick))
    built = {"layers": model.cfg.n_unrolled(), "heads": model.cfg.n_heads, "max_len": model.cfg.max_len,
             "d_model": model.cfg.d_model, "d_mlp": model.cfg.d_mlp}
    expected = claim.expected_resources()
    T = model.cfg.max_len
    passed = (n_failed == 0 and expected == built and same == len(pick) and min_margin > 0
              and cross["agrees"] and cross["same_argmax"] == cross["untied"])
    return {
        "claim": claim.name,
        "construction": "dfs-cot",
        "statement": (f"a {built['layers']}-layer transformer writes the smallest-id-first DFS order "
                      + (f"exactly on {claim.domain()}" if claim.method == "exhaustive" else
                         f"with no failure in {n_checked} samples of {claim.domain()}")),
        "domain": claim.domain(),
        "method": claim.method,
        "checked": n_checked,
        "positions_checked": n_pos,
        "failed": n_failed,
        "passed": passed,
        "exact_on_domain": passed and claim.method == "exhaustive",
        "first_counterexample": counterexample,
        "greedy_generation": {"checked": int(len(pick)), "equal_to_reference": int(same)},
        "fastpath_vs_dense": cross,
        "min_decoding_margin": min_margin,
        "heads": [{"name": h.name, "layer": li, "beta": h.beta, "delta": h.delta,
                   "derived_beta": meta["betas"][h.name], "derived_leak_bound": leak_bound(T, h.beta, h.delta)}
                  for li, layer in enumerate(craft.layers) for h in layer.heads],
        "beta_scale": beta_scale,
        "resources": {k: {"formula": str(RESOURCES[claim.kind][k]), "expected": expected[k], "built": built[k]}
                      for k in built},
        "resources_match": expected == built,
        "sizes": {"n": claim.max_vertices, "T": T, "directed": claim.directed},
        "dtype": dtype,
        "seed": seed,
        "seconds": {"build": round(t_build, 3), "check": round(t_check, 3)},
        "graphs_per_second": round(n_checked / max(t_check, 1e-9), 1),
        "versions": _versions(__version__),
    }


def smallest_passing_beta_scale(claim: DFSClaim, samples: int = 2000, seed: int = 1, tol: float = 0.02) -> float:
    """Bisection on the factor multiplying every derived beta: the smallest that still passes.

    The probe is the claim itself when exhaustive, else ``samples`` sampled prompts (no greedy run:
    teacher-forced correctness is the criterion).
    """
    from algeval.proofs.certify import smallest_passing_scale

    return smallest_passing_scale(
        lambda s: certify_dfs(claim, samples=samples, seed=seed, greedy_samples=0, beta_scale=s)["passed"],
        claim.name, tol)


def default_dfs_claims() -> list[DFSClaim]:
    """What ``algeval prove --all`` checks for the DFS construction."""
    return [DFSClaim(5, "exhaustive"), DFSClaim(4, "exhaustive", directed=True), DFSClaim(8, "sampled")]


def beta_report(claims: list[DFSClaim], samples: int = 2000, seed: int = 1, tol: float = 0.02) -> dict:
    """The smallest passing beta scale per claim, set against the derived betas (a certificate-style record)."""
    from algeval.proofs.certify import min_beta_report

    return min_beta_report(
        "dfs-cot-min-beta-" + "-".join(f"n{c.max_vertices}{'d' if c.directed else ''}-{c.method}" for c in claims),
        "dfs-cot", "the smallest factor on every derived inverse temperature (min_beta: log((T-1) M / eta) / "
        "Delta per head) at which each claim still passes teacher-forced, by bisection", claims,
        lambda c: smallest_passing_beta_scale(c, samples, seed, tol), lambda c: build(c)[1]["betas"],
        lambda c: {"n": c.max_vertices, "directed": c.directed, "method": c.method,
                   "T": c.expected_resources()["max_len"]},
        {"samples_if_sampled": samples, "seed": seed, "tolerance": tol})
