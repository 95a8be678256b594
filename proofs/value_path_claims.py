"""Existence claims for the CogEval valuePath construction, and their checks.

A :class:`ValuePathClaim` says: *the construction of*
:mod:`algeval.models.constructions.value_path`, *built for ``n`` room labels,
budget ``H`` and rewards in ``[min_reward, max_reward]``, puts its argmax on a
first step of a most rewarding path* (:func:`algeval.theory.value_path.value_path_first_steps`)
on the domain.  Domains:

* ``exhaustive`` -- every out-tree (edges directed away from the start)
  spanning any subset of the ``n`` labels that holds the start and at least
  one more room, every start, every assignment of rewards from
  ``reward_set`` (a small set of integers, ``0`` = no statement) to the
  rooms other than the start; queries whose best move is to stay put (no
  vertex answer) are left out and counted.  Edges and reward statements in
  sorted order; a separate check confirms that shuffling both never changes
  the prediction where it is not a tie (top-two logits within ``1e-3``: tied
  optimal first steps may break either way under rounding) and that every
  shuffled prediction is right.
* ``sampled`` -- ``samples`` seeded prompts of the ``cogeval`` task itself,
  half from the ``tree`` family (a reward at every leaf) and half from
  ``two-branch`` (a lobby, two chains, a reward at each end), ``3 .. n`` rooms
  randomly relabelled into ``n`` labels, rewards uniform over the non-zero
  integers of ``[min_reward, max_reward]``, budget ``H`` (CogEval: 7).

Resources are sympy expressions in ``n``, ``H`` and the prompt width ``T``,
read off the construction (its named directions and hidden units), and every
certificate compares them with the built model.

**Evaluation.**  Logits come from the sparse fast path
(:func:`algeval.models.fastpath.last_position_logits`: the same weights, zero
terms skipped, summed in another order).  Each certificate also runs the dense
forward pass on a subset (:func:`algeval.proofs.search_claims.fastpath_crosscheck`)
and a float64 dense pass on a smaller one, and passes only if, besides every
prediction being right, the fast and dense passes agree (every logit within
``1e-4 max(1, |logit|)``, the same argmax) and the smallest decision margin
exceeds ``ROUNDING_FACTOR`` times the measured rounding (the largest logit
difference fast vs dense and fast vs float64).  The construction is written
so that float32 rounding stays relative to the scores (its module docstring):
at ``n = 16``, ``H = 7`` the rounding measured is ~2e-4 against a smallest
margin of ~0.08 in 10^5 prompts (the committed certificate).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import sympy as sp

from algeval.errors import ParameterError, check_int_range

n, H, T = sp.symbols("n H T", positive=True, integer=True)

RESOURCES = dict(layers=H + 3 + sp.ceiling(sp.log(n, 2)), heads=sp.Integer(2),
                 d_model=5 * n**2 + 6 * n + n * sp.ceiling(n / 2) + 16 + T,
                 d_mlp=sp.Max(3 * n**2 - 3 * n, 2 * n**2 + 2))
SAMPLED_FAMILIES = ("tree", "two-branch")
ROUNDING_FACTOR = 100  # a certificate needs min margin > ROUNDING_FACTOR x the measured float rounding


@dataclass(frozen=True)
class ValuePathClaim:
    max_vertices: int  # n: room labels (and the largest graph)
    max_steps: int  # H: the budget (CogEval's search cutoff)
    method: str  # "exhaustive" | "sampled"
    min_reward: int = -20
    max_reward: int = 60
    reward_set: tuple[int, ...] = ()  # exhaustive: the rewards enumerated (0 = none)

    def __post_init__(self):
        check_int_range("max_vertices", self.max_vertices, 3, 24)
        check_int_range("max_steps", self.max_steps, 1, 16)
        if self.method not in ("exhaustive", "sampled"):
            raise ParameterError("method", self.method, "must be exhaustive or sampled")
        if self.min_reward > self.max_reward:
            raise ParameterError("max_reward", self.max_reward, f"must be >= min_reward={self.min_reward}")
        if self.method == "exhaustive":
            if self.max_vertices > 5:
                raise ParameterError("max_vertices", self.max_vertices, "an exhaustive check enumerates trees: <= 5")
            if not self.reward_set or any(not self.min_reward <= r <= self.max_reward for r in self.reward_set):
                raise ParameterError("reward_set", self.reward_set,
                                     f"must be a non-empty set inside [{self.min_reward}, {self.max_reward}]")

    @property
    def name(self) -> str:
        rs = "rs" + "_".join(map(str, self.reward_set)) if self.method == "exhaustive" else \
            f"r{self.min_reward}..{self.max_reward}"
        return f"value-path-n{self.max_vertices}-H{self.max_steps}-{rs}-{self.method}"

    def task(self, family: str = "tree"):
        from algeval.sim.tasks import get_task

        return get_task("cogeval", family=family, query="value-path", min_vertices=3, max_vertices=self.max_vertices,
                        num_labels=self.max_vertices, min_reward=self.min_reward, max_reward=self.max_reward,
                        max_steps=self.max_steps)

    def domain(self) -> str:
        if self.method == "exhaustive":
            return (f"every out-tree rooted at the start on a subset of {self.max_vertices} room labels (>= 2 rooms), "
                    f"every start, every assignment of rewards from {{{', '.join(map(str, self.reward_set))}}} to the "
                    f"other rooms, budget {self.max_steps}; queries where staying put is optimal left out "
                    "(edges and rewards in sorted order, plus a shuffled-order check)")
        return (f"cogeval prompts from the tree (leaf rewards) and two-branch families, 3..{self.max_vertices} rooms "
                f"relabelled into {self.max_vertices} labels, non-zero rewards in "
                f"[{self.min_reward}, {self.max_reward}], "
                f"budget {self.max_steps}")

    def expected_resources(self, width: int) -> dict[str, int]:
        subs = {n: self.max_vertices, H: self.max_steps, T: width}
        return {k: int(sp.sympify(e).subs(subs)) for k, e in RESOURCES.items()}


def build(claim: ValuePathClaim, beta_scale: float = 1.0, dtype: str = "float32"):
    """``(model, meta, craft)``: the claim's construction, every beta multiplied by ``beta_scale``."""
    from algeval.models.constructions.value_path import value_path_model

    craft = value_path_model(claim.task(), claim.max_steps)
    if beta_scale != 1.0:
        craft.scale_betas(beta_scale)
    model, meta = craft.to_transformer(dtype)
    return model, meta, craft


def in_domain(adj, start: int) -> bool:
    """True iff the part of ``adj`` reachable from ``start`` is an out-tree rooted at ``start``.

    That is: ``start`` has no reachable in-neighbour and every other reachable
    vertex exactly one (the construction's domain; an undirected edge is a
    2-cycle, so no undirected graph with an edge at ``start`` qualifies).
    """
    a = np.asarray(adj, bool)
    reach = np.zeros(len(a), bool)
    reach[start] = True
    frontier = reach.copy()
    while frontier.any():
        frontier = a[frontier].any(0) & ~reach
        reach |= frontier
    indeg = a[reach][:, reach].sum(0)
    want = np.ones(int(reach.sum()), np.int64)
    want[int(reach[:start].sum())] = 0
    return bool((indeg == want).all())


# --- the exhaustive domain -------------------------------------------------------------

def out_trees(nv: int) -> list[tuple[int, np.ndarray]]:
    """``(root, adj)`` for every out-tree on a subset of ``nv`` labels with >= 2 vertices (edges parent -> child)."""
    out = []
    for root in range(nv):
        others = [v for v in range(nv) if v != root]
        for k in range(1, nv):
            for sub in itertools.combinations(others, k):
                verts = (root,) + sub
                for parents in itertools.product(verts, repeat=k):
                    if any(p == c for p, c in zip(parents, sub)):
                        continue
                    par = dict(zip(sub, parents))
                    ok = True
                    for c in sub:  # every vertex must climb to the root within k steps
                        x, steps = c, 0
                        while x != root and steps <= k:
                            x, steps = par[x], steps + 1
                        ok &= x == root
                    if ok:
                        a = np.zeros((nv, nv), bool)
                        for c, p in par.items():
                            a[p, c] = True
                        out.append((root, a))
    return out


def exhaustive_queries(claim: ValuePathClaim):
    """``(adj (B, n, n), rewards (B, n), start (B,), skipped)``: the exhaustive domain (see the module docstring)."""
    nv, rs = claim.max_vertices, tuple(claim.reward_set)
    adjs, rews, starts = [], [], []
    for root, a in out_trees(nv):
        verts = [v for v in range(nv) if v != root and a[:, v].any()]
        for vals in itertools.product(rs, repeat=len(verts)):
            r = np.zeros(nv, np.int64)
            r[verts] = vals
            adjs.append(a)
            rews.append(r)
            starts.append(root)
    return np.stack(adjs), np.stack(rews), np.array(starts)


def encode(task, adj, rewards, start, max_steps: int, rng: np.random.Generator | None = None):
    """A ``TaskBatch`` of value-path prompts for given graphs over the task's labels (no relabelling).

    Edges ``(u, v)`` and reward statements are listed in sorted order, or in a
    random order per example when ``rng`` is given.  Answers: the reference
    first steps with budget ``max_steps``; examples with none are dropped
    (returned ``keep`` marks the kept rows).
    """
    from algeval.sim.tasks.base import TaskBatch
    from algeval.sim.tasks.graphs import answers_from_mask, assemble, ragged
    from algeval.theory.value_path import value_path_first_steps

    adj, rewards, start = np.asarray(adj, bool), np.asarray(rewards, np.int64), np.asarray(start, np.int64)
    v = task.vocab
    first = np.zeros(rewards.shape, bool)
    for i in range(len(adj)):
        first[i, list(value_path_first_steps(adj[i], rewards[i], int(start[i]), max_steps))] = True
    keep = first.any(1)
    adj, rewards, start, first = adj[keep], rewards[keep], start[keep], first[keep]
    B = len(adj)

    def triples(mask, lead, third):
        b, x, y = np.nonzero(mask) if mask.ndim == 3 else (*np.nonzero(mask), None)
        key = rng.random(len(b)) if rng is not None else (x * mask.shape[1] + (y if y is not None else 0))
        order = np.lexsort((key, b))
        b, x = b[order], x[order]
        y = y[order] if y is not None else None
        vals = np.stack([np.full(len(b), v.id(lead)), v.vertex(x), third(b, x, y)], 1).ravel()
        return vals, 3 * np.bincount(b, minlength=B)

    edges = triples(adj, "E", lambda b, x, y: v.vertex(y))
    stmts = triples(rewards != 0, "R", lambda b, x, y: v.extra_offset + rewards[b, x] - task.min_reward)
    q = np.stack([np.full(B, v.id("V")), v.vertex(start)], 1)
    tokens, _ = assemble([edges, stmts, ragged(q, np.full(B, 2))], task.max_len)
    answers = np.full((B, task.max_len, task.answer_width), -1, np.int32)
    answers[:, -1] = answers_from_mask(first, task.answer_width, v.vertex_offset)
    mask = np.zeros((B, task.max_len), bool)
    mask[:, -1] = True
    meta = {"adj": adj, "rewards": rewards, "start": start}
    return TaskBatch(task.name, tokens, answers, mask, v, task.attention, meta), keep


# --- the check ---------------------------------------------------------------------------

def fast_logits(model, tokens: np.ndarray) -> np.ndarray:
    """Last-position logits by the sparse fast path (:func:`algeval.models.fastpath.last_position_logits`)."""
    from algeval.models.fastpath import last_position_logits

    return last_position_logits(model, np.asarray(tokens))


def last_logits(model, tokens: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Last-position logits of the model's own dense (jitted) forward pass on the task's full-width arrays."""
    import jax
    import jax.numpy as jnp

    fn, state = model.functional()
    run = jax.jit(lambda st, toks: fn(st, toks)[0][:, -1])
    out = [np.asarray(run(state, jnp.asarray(tokens[i:i + chunk]))) for i in range(0, len(tokens), chunk)]
    return np.concatenate(out) if out else np.zeros((0, model.cfg.vocab_size))


def float_checks(model, craft, token_sets: list[np.ndarray], crosscheck: int = 64, reference: int = 16) -> dict:
    """The fast path against the dense pass and against a float64 dense pass (the rounding actually incurred).

    For each array of ``token_sets``: :func:`algeval.proofs.search_claims.fastpath_crosscheck` on its first
    ``crosscheck`` rows, and the same weights in float64 (dense) on its first ``reference`` rows.
    ``rounding`` is the largest logit difference of either comparison.
    """
    import jax

    from algeval.proofs.search_claims import fastpath_crosscheck

    parts = [fastpath_crosscheck(model, t, count=crosscheck) for t in token_sets if crosscheck and len(t)]
    fast_vs_dense = {"checked": sum(p["checked"] for p in parts),
                     "max_abs_diff": max([p["max_abs_diff"] for p in parts], default=0.0),
                     "agrees": all(p["agrees"] for p in parts), "untied": sum(p["untied"] for p in parts),
                     "same_argmax": sum(p["same_argmax"] for p in parts)}
    ref = [np.asarray(t[:reference]) for t in token_sets if reference and len(t)]
    diff64 = 0.0
    if ref:
        fast = [fast_logits(model, t) for t in ref]
        with jax.enable_x64(True):
            m64, _ = craft.to_transformer("float64")
            dense64 = [np.asarray(m64(t))[:, -1] for t in ref]
        diff64 = float(max(np.abs(f - d).max() for f, d in zip(fast, dense64)))
    return {"fast_vs_dense": fast_vs_dense,
            "fast_vs_float64": {"checked": sum(len(t) for t in ref), "max_abs_diff": diff64},
            "rounding": max(fast_vs_dense["max_abs_diff"], diff64)}


def score_logits(logits: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example: argmax in the answer set, margin (best correct minus best other logit), prediction."""
    mask = np.zeros_like(logits, bool)
    rows = np.repeat(np.arange(len(answers))[:, None], answers.shape[1], 1)
    mask[rows[answers >= 0], answers[answers >= 0]] = True
    pred = logits.argmax(1)
    ok = mask[np.arange(len(pred)), pred]
    margin = np.where(mask, logits, -np.inf).max(1) - np.where(mask, -np.inf, logits).max(1)
    return ok, margin, pred


def certify_value_path(claim: ValuePathClaim, samples: int = 100_000, seed: int = 0, beta_scale: float = 1.0,
                       shuffle_samples: int = 20_000, dtype: str = "float32", crosscheck: int = 64,
                       reference: int = 16) -> dict:
    """Check ``claim``; return its certificate (the schema of :func:`algeval.proofs.search_claims.certify_search`).

    Logits by the fast path; ``crosscheck`` / ``reference`` rows per batch (for ``exhaustive``: of a random
    subset) also run densely in ``dtype`` and in float64 (:func:`float_checks`).
    """
    import contextlib

    import jax

    from algeval import __version__
    from algeval.proofs.certify import _versions

    if dtype not in ("float32", "float64"):
        raise ParameterError("dtype", dtype, "must be float32 or float64")
    ctx = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    task = claim.task()
    skipped = 0
    shuffled = pick = None
    if claim.method == "exhaustive":
        adj, rew, start = exhaustive_queries(claim)
        batch, keep = encode(task, adj, rew, start, claim.max_steps)
        skipped = int((~keep).sum())
        batches = [batch]
        pick = rng.choice(len(batch), min(shuffle_samples, len(batch)), replace=False)
        shuffled, _ = encode(task, batch.meta["adj"][pick], batch.meta["rewards"][pick], batch.meta["start"][pick],
                             claim.max_steps, rng)
        probes = [batch.tokens[pick]]
    else:
        samples = check_int_range("samples", samples, 1, None)
        per = [samples // 2 + (i < samples % 2) for i in range(2)]
        batches = [claim.task(f).sample(c, seed + i) for i, (f, c) in enumerate(zip(SAMPLED_FAMILIES, per)) if c]
        probes = [b.tokens for b in batches]
    with ctx:
        model, meta, craft = build(claim, beta_scale, dtype)
        t_build = time.perf_counter() - t0
        t1 = time.perf_counter()
        oks, margins, n_checked, counterexample = [], [], 0, None
        for b in batches:
            logits = fast_logits(model, b.tokens)
            ok, margin, _ = score_logits(logits, b.answers[:, -1])
            if counterexample is None and not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                counterexample = {"tokens": " ".join(t for t in b.vocab.decode(b.tokens[i]) if t != "<pad>"),
                                  "answer_set": b.vocab.decode(b.answer_set(i)),
                                  "predicted": b.vocab.decode([int(logits[i].argmax())])}
            oks.append(ok)
            margins.append(margin)
            n_checked += len(b)
        ok = np.concatenate(oks)
        t_check = time.perf_counter() - t1
        shuffle = None
        if shuffled is not None:  # tied optimal first steps may break either way: compare untied rows
            base, other = fast_logits(model, batches[0].tokens[pick]), fast_logits(model, shuffled.tokens)
            top2 = np.sort(base, 1)[:, -2:]
            untied = (top2[:, 1] - top2[:, 0]) > 1e-3
            same = base.argmax(1) == other.argmax(1)
            shuffle = {"checked": len(pick), "untied": int(untied.sum()), "same_prediction": int(same.sum()),
                       "same_prediction_untied": int(same[untied].sum()),
                       "shuffled_correct": int(score_logits(other, shuffled.answers[:, -1])[0].sum())}
        t2 = time.perf_counter()
        floats = float_checks(model, craft, probes, crosscheck, reference)
        t_float = time.perf_counter() - t2
    cfg = model.cfg
    built = {"layers": cfg.n_unrolled(), "heads": cfg.n_heads, "d_model": cfg.d_model, "d_mlp": cfg.d_mlp}
    expected = claim.expected_resources(cfg.max_len)
    min_margin = float(np.concatenate(margins).min())
    fd = floats["fast_vs_dense"]
    floats["fast_dense_consistent"] = fd["agrees"] and fd["same_argmax"] == fd["untied"]
    floats["margin_over_rounding"] = min_margin / floats["rounding"] if floats["rounding"] > 0 else None
    floats["margin_clear_of_rounding"] = min_margin > ROUNDING_FACTOR * floats["rounding"]
    shuffle_ok = shuffle is None or (shuffle["same_prediction_untied"] == shuffle["untied"]
                                     and shuffle["shuffled_correct"] == shuffle["checked"])
    passed = (bool(ok.all()) and expected == built and shuffle_ok
              and floats["fast_dense_consistent"] and floats["margin_clear_of_rounding"])
    return {
        "claim": claim.name,
        "construction": "value-path",
        "statement": (f"a {built['layers']}-layer transformer (value path) puts its argmax on a first step of a "
                      "most rewarding path " + (f"on {claim.domain()}" if claim.method == "exhaustive" else
                                                 f"with no failure in {n_checked} samples of {claim.domain()}")),
        "domain": claim.domain(),
        "method": claim.method,
        "checked": n_checked,
        "skipped_stay_put": skipped,
        "failed": int((~ok).sum()),
        "passed": passed,
        "exact_on_domain": passed and claim.method == "exhaustive",
        "first_counterexample": counterexample,
        "order_shuffle": shuffle,
        "min_decoding_margin": min_margin,
        "evaluation": "fast path (algeval.models.fastpath.last_position_logits); dense and float64 cross-checks",
        "float_checks": {**floats, "rounding_factor": ROUNDING_FACTOR},
        "heads": [{"name": h.name, "layer": li, "beta": h.beta, "delta": h.delta} for li, layer in
                  enumerate(craft.layers) for h in layer.heads],
        "beta_scale": beta_scale,
        "constants": craft.meta["constants"],
        "resources": {k: {"formula": str(RESOURCES[k]), "expected": expected[k], "built": built[k]} for k in built},
        "resources_match": expected == built,
        "sizes": {"n": claim.max_vertices, "H": claim.max_steps, "T": cfg.max_len,
                  "rewards": [claim.min_reward, claim.max_reward],
                  "reward_set": list(claim.reward_set) or None},
        "dtype": dtype,
        "seed": seed,
        "seconds": {"build": round(t_build, 3), "check": round(t_check, 3), "float_checks": round(t_float, 3)},
        "graphs_per_second": round(n_checked / max(t_check, 1e-9), 1),
        "versions": _versions(__version__),
    }


def smallest_passing_beta_scale(claim: ValuePathClaim, samples: int = 2000, seed: int = 1, tol: float = 0.02) -> float:
    """Bisection on the factor multiplying every derived beta: the smallest that still passes ``samples`` inputs."""
    from algeval.proofs.certify import smallest_passing_scale

    probe = ValuePathClaim(claim.max_vertices, claim.max_steps, "sampled", claim.min_reward, claim.max_reward)
    return smallest_passing_scale(
        lambda s: certify_value_path(probe, samples=samples, seed=seed, beta_scale=s, crosscheck=16,
                                     reference=8)["passed"], claim.name, tol)


def beta_report(claims: list[ValuePathClaim], samples: int = 2000, seed: int = 1, tol: float = 0.02) -> dict:
    """The smallest passing beta scale per claim, set against the derived betas (a certificate-style record)."""
    from algeval.proofs.certify import min_beta_report

    return min_beta_report(
        "value-path-min-beta-" + "-".join(f"n{c.max_vertices}-H{c.max_steps}" for c in claims), "value-path",
        "the smallest factor on every derived inverse temperature (min_beta: log((T-1) M / eta) / "
        "Delta per head) at which each claim still passes (correct argmax on every sampled prompt, "
        "fast path consistent with the dense pass, margin clear of rounding), by bisection", claims,
        lambda c: smallest_passing_beta_scale(c, samples, seed, tol), lambda c: build(c)[1]["betas"],
        lambda c: {"n": c.max_vertices, "H": c.max_steps, "T": c.task().max_len},
        {"samples": samples, "seed": seed, "tolerance": tol, "families": list(SAMPLED_FAMILIES)})


DEFAULT_SAMPLES = 10_000  # ``prove --all`` caps a sampled value-path check at this many prompts


def default_value_path_claims() -> list[ValuePathClaim]:
    """What ``algeval prove --all`` checks for the value-path construction.

    An exhaustive check at n = 4 (~5,500 prompts) and a sampled one at n = 8, H = 7
    (``DEFAULT_SAMPLES`` prompts under ``--all``): about a minute on two CPU cores with the fast path.
    """
    return [ValuePathClaim(4, 2, "exhaustive", -2, 2, (-2, -1, 0, 1, 2)),
            ValuePathClaim(8, 7, "sampled")]
