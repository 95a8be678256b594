"""Existence claims for the ``search`` constructions, and their checks.

A :class:`SearchClaim` says: *the construction (path merging, BFS, or looped
path merging with ``r`` iterations), built for graphs with at most ``n``
vertices and lookahead at most ``D``, predicts a correct next vertex on the
domain*.  Domains:

* ``exhaustive`` -- every DAG on the ``n`` vertex labels (vertices without
  edges are simply absent from the prompt, so every DAG on at most ``n``
  vertices is included), every start and every goal reachable from it within
  ``D`` hops, edges listed in sorted order; a separate sampled check confirms
  that shuffling the edge order never changes the prediction;
* ``sampled`` -- ``samples`` seeded draws from the task's ``balanced`` and
  ``naive`` distributions with random path prefixes.

Resources are sympy expressions in ``n``, ``D`` and the prompt length ``T``
(derived from the construction's named directions and hidden units; see
:mod:`algeval.models.constructions.search`), and every certificate compares
them with the built model.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import sympy as sp

from algeval.errors import ParameterError, check_int_range

n, D, T, r = sp.symbols("n D T r", positive=True, integer=True)

CONSTRUCTIONS = ("path-merging", "bfs", "path-merging-looped", "shortest-path")
FAMILIES = ("er", "tree", "grid", "chain", "cluster")  # shortest-path claims sample every family

RESOURCES = {
    "path-merging": dict(
        layers=sp.ceiling(sp.log(D, 2)) + 3, heads=2,
        d_model=4 * n**2 + 5 * n + 12 + T,
        d_mlp=sp.Piecewise((4 * n**2 - n, sp.Eq(D, 1)), (n**3 + 2 * n**2, True))),
    "bfs": dict(layers=sp.Max(D, 2) + 2, heads=2, d_model=3 * n**2 + 6 * n + 12 + T, d_mlp=2 * n**2),
    "path-merging-looped": dict(layers=r + 3, heads=2, d_model=4 * n**2 + 5 * n + 12 + T,
                                d_mlp=n**3 + 2 * n**2),
    "shortest-path": dict(layers=sp.Max(D, 2) + 2, heads=2, d_model=3 * n**2 + 7 * n + 12 + T,
                          d_mlp=sp.Max(2 * n**2, n**2 + 3 * n)),
}


@dataclass(frozen=True)
class SearchClaim:
    construction: str
    max_vertices: int
    max_lookahead: int
    method: str  # "exhaustive" | "sampled"
    iterations: int | None = None  # looped construction only

    def __post_init__(self):
        if self.construction not in CONSTRUCTIONS:
            raise ParameterError("construction", self.construction, f"must be one of {', '.join(CONSTRUCTIONS)}")
        check_int_range("max_vertices", self.max_vertices, 3, 32)
        if self.method not in ("exhaustive", "sampled"):
            raise ParameterError("method", self.method, "must be exhaustive or sampled")
        if self.construction == "shortest-path" and self.method != "sampled":
            raise ParameterError("method", self.method, "shortest-path claims are sampled over graph families")
        if self.method == "exhaustive" and self.max_vertices > 5:
            raise ParameterError("max_vertices", self.max_vertices, "an exhaustive check enumerates every DAG: <= 5")

    @property
    def name(self) -> str:
        it = f"-r{self.iterations}" if self.iterations is not None else ""
        return f"{self.construction}{it}-n{self.max_vertices}-D{self.max_lookahead}-{self.method}"

    def task(self, distribution: str = "naive"):
        from algeval.sim.tasks import get_task

        if self.construction == "shortest-path":  # the family whose prompts are longest (er)
            return get_task("shortest-path", max_vertices=self.max_vertices,
                            family=distribution if distribution in FAMILIES else "er")
        opts = dict(max_vertices=self.max_vertices, distribution=distribution)
        if distribution == "naive":
            opts["max_out_degree"] = self.max_vertices - 1  # every DAG fits the prompt
            opts["max_lookahead"] = self.max_lookahead
        else:
            opts["max_lookahead"] = min(self.max_lookahead, (self.max_vertices - 1) // 2)
            opts["path_prefix"] = "random"
        return get_task("search", **opts)

    def domain(self) -> str:
        if self.construction == "shortest-path":
            return (f"random shortest-path prompts on undirected {', '.join(FAMILIES)} graphs with at most "
                    f"{self.max_vertices} vertices, random path prefixes")
        if self.method == "exhaustive":
            return (f"every DAG on at most {self.max_vertices} labelled vertices, every start and every goal "
                    f"reachable from it within {self.max_lookahead} hops (edges in sorted order)")
        return (f"random search prompts, n <= {self.max_vertices}, lookahead <= {self.max_lookahead} "
                "(balanced and naive distributions, random path prefixes)")

    def lookahead_reached(self) -> int:
        return 2 ** self.iterations if self.iterations is not None else self.max_lookahead

    def expected_resources(self, prompt_len: int) -> dict[str, int]:
        subs = {n: self.max_vertices, D: self.max_lookahead, T: prompt_len, r: self.iterations or 0}
        return {k: int(sp.sympify(e).subs(subs)) for k, e in RESOURCES[self.construction].items()}


def build(claim: SearchClaim, task, beta_scale: float = 1.0, dtype: str = "float32"):
    """The claim's model for ``task`` (all inverse temperatures multiplied by ``beta_scale``)."""
    from algeval.models.constructions.search import bfs_search, path_merging_search, shortest_path_next_hop, to_model

    if claim.construction == "shortest-path":
        craft = shortest_path_next_hop(task, claim.max_lookahead)
    elif claim.construction == "bfs":
        craft = bfs_search(task, claim.max_lookahead)
    else:
        looped = claim.construction == "path-merging-looped"
        craft = path_merging_search(task, claim.max_lookahead, loop=looped, iterations=claim.iterations)
    if beta_scale != 1.0:
        craft.scale_betas(beta_scale)
    return to_model(craft, dtype) + (craft,)


def all_dags(nv: int) -> np.ndarray:
    """Every DAG on ``nv`` labelled vertices, ``(count, nv, nv)`` bool (29,281 for ``nv = 5``)."""
    out = []
    # choose, per unordered pair, one of: no edge, u->v, v->u; keep the acyclic ones
    unordered = [(u, v) for u in range(nv) for v in range(u + 1, nv)]
    from algeval.theory.graph import transitive_closure

    for choice in itertools.product((0, 1, 2), repeat=len(unordered)):
        a = np.zeros((nv, nv), bool)
        for (u, v), c in zip(unordered, choice):
            if c == 1:
                a[u, v] = True
            elif c == 2:
                a[v, u] = True
        out.append(a)
    adj = np.stack(out)
    closure = transitive_closure(adj)
    cyclic = (np.einsum("buv,bvu->b", adj.astype(np.int64), closure.astype(np.int64)) > 0)
    return adj[~cyclic]


def exhaustive_queries(nv: int, max_lookahead: int):
    """``(adj, start, goal)`` arrays for every DAG and every reachable (start, goal) within the lookahead."""
    from algeval.theory.graph import hop_distances

    adj = all_dags(nv)
    dist = hop_distances(adj)
    b, s, g = np.nonzero((dist >= 1) & (dist <= max_lookahead))
    return adj[b], s, g


def _correct(model, batch, chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Per example: argmax in the answer set, and the margin (best correct logit minus best other logit).

    Logits come from :func:`algeval.models.fastpath.last_position_logits` (the same weights, zeros skipped,
    the last position only); :func:`fastpath_crosscheck` compares it with the dense forward pass.
    """
    from algeval.models.fastpath import last_position_logits

    logits = last_position_logits(model, batch.tokens, chunk=chunk)
    ans = batch.answers[:, -1]
    mask = np.zeros_like(logits, bool)
    rows = np.repeat(np.arange(len(ans))[:, None], ans.shape[1], 1)
    mask[rows[ans >= 0], ans[ans >= 0]] = True
    best_in = np.where(mask, logits, -np.inf).max(1)
    best_out = np.where(mask, -np.inf, logits).max(1)
    ok = (np.argmax(logits, 1)[:, None] == np.where(ans >= 0, ans, -1)).any(1)
    return ok, best_in - best_out


def _dense_logits(model, tokens, prefix_end=None, last: int = 1) -> np.ndarray:
    """The model's own dense forward pass, jitted (eager dispatch of a large model takes minutes), at the
    last ``last`` positions (``(B, last, vocab)``; XLA drops what those do not need)."""
    import jax

    fn, state = model.functional()
    return np.asarray(jax.jit(lambda st, t, pe: fn(st, t, None, pe)[0][:, -last:])(state, tokens, prefix_end))


def fastpath_crosscheck(model, tokens, count: int = 64, rtol: float = 1e-4, prefix_end=None,
                        last: int | None = None) -> dict:
    """The fast path against the dense forward pass on the first ``count`` inputs (at the last position, or
    at each of the last ``last`` positions: every position is a row).

    ``agrees``: every logit within ``rtol * max(1, max |dense logit|)``.  ``same_argmax`` counts the rows
    without a tie (top-two gap above ``1e-3``; tied correct children are common) whose argmax agrees.
    """
    from algeval.models.fastpath import last_position_logits

    t = np.asarray(tokens[:count])
    pe = None if prefix_end is None else np.asarray(prefix_end[:count])
    fast = last_position_logits(model, t, pe, chunk=len(t), last=last)
    dense = _dense_logits(model, t, pe, last or 1)
    if last is None:
        dense = dense[:, 0]
    else:
        fast, dense = fast.reshape(-1, fast.shape[-1]), dense.reshape(-1, dense.shape[-1])
    diff = float(np.abs(fast - dense).max())
    top2 = np.sort(dense, 1)[:, -2:]
    untied = (top2[:, 1] - top2[:, 0]) > 1e-3
    return {"checked": len(t), "max_abs_diff": diff, "agrees": diff <= rtol * max(1.0, float(np.abs(dense).max())),
            "untied": int(untied.sum()), "same_argmax": int((fast.argmax(1) == dense.argmax(1))[untied].sum())}


def certify_search(claim: SearchClaim, samples: int = 100_000, seed: int = 0, beta_scale: float = 1.0,
                   shuffle_samples: int = 20_000, dtype: str = "float32") -> dict:
    """Check ``claim``; return its certificate (same schema family as :func:`algeval.proofs.certify.certify`)."""
    from algeval import __version__
    from algeval.proofs.certify import _versions
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    if claim.method == "exhaustive":
        task = claim.task("naive")
        adj, s, g = exhaustive_queries(claim.max_vertices, claim.max_lookahead)
        batches = [task.encode_graphs(adj, s, g)]
        # the same prompts with a shuffled edge order must give the same predictions
        pick = rng.choice(len(adj), min(shuffle_samples, len(adj)), replace=False)
        shuffled = task.encode_graphs(adj[pick], s[pick], g[pick],
                                      edge_keys=rng.random((len(pick), claim.max_vertices ** 2)))
    else:
        kinds = FAMILIES if claim.construction == "shortest-path" else ("naive", "balanced")
        tasks = [claim.task(k) for k in kinds]
        per = [samples // len(tasks) + (i < samples % len(tasks)) for i in range(len(tasks))]
        batches = [t.sample(c, seed + i) for i, (t, c) in enumerate(zip(tasks, per)) if c > 0]
        pick = shuffled = None
    # a prompt length fits the model if it is at most the model's max_len: left-pad to one width
    width = max(b.tokens.shape[1] for b in batches)
    model, meta, craft = build(claim, claim.task("naive"), beta_scale, dtype)  # naive (er) prompts are the longest
    t_build = time.perf_counter() - t0
    t1 = time.perf_counter()
    oks, margins, n_checked, counterexample = [], [], 0, None
    for b in batches:
        b = _pad(b, width)
        ok, margin = _correct(model, b)
        if counterexample is None and not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            counterexample = {"tokens": " ".join(t for t in b.vocab.decode(b.tokens[i]) if t != "<pad>"),
                              "answer_set": b.vocab.decode(b.answer_set(i))}
        oks.append(ok)
        margins.append(margin)
        n_checked += len(b)
    ok = np.concatenate(oks)
    t_check = time.perf_counter() - t1
    shuffle_ok = None
    if shuffled is not None:
        base = _pad(batches[0][pick], width)
        sh = _pad(shuffled, width)
        from algeval.models.fastpath import last_position_logits
        shuffle_ok = int((last_position_logits(model, base.tokens).argmax(1)
                          == last_position_logits(model, sh.tokens).argmax(1)).sum())
    built = {"layers": model.cfg.n_unrolled(), "heads": model.cfg.n_heads, "d_model": model.cfg.d_model,
             "d_mlp": model.cfg.d_mlp}
    expected = claim.expected_resources(model.cfg.max_len)
    cross = fastpath_crosscheck(model, _pad(batches[0], width).tokens, count=16)  # dense: ~36 GFLOP each at n=16
    passed = (bool(ok.all()) and expected == built and (shuffle_ok is None or shuffle_ok == len(pick))
              and cross["agrees"] and cross["same_argmax"] == cross["untied"])
    return {
        "claim": claim.name,
        "construction": claim.construction,
        "statement": (f"a {built['layers']}-layer transformer ({claim.construction}) predicts a correct next vertex "
                      + (f"on {claim.domain()}" if claim.method == "exhaustive" else
                         f"with no failure in {n_checked} samples of {claim.domain()}")),
        "domain": claim.domain(),
        "method": claim.method,
        "checked": n_checked,
        "failed": int((~ok).sum()),
        "passed": passed,
        "exact_on_domain": passed and claim.method == "exhaustive",
        "first_counterexample": counterexample,
        "fastpath_vs_dense": cross,
        "edge_order_shuffle": None if shuffle_ok is None else {"checked": len(pick), "same_prediction": shuffle_ok},
        "min_decoding_margin": float(np.concatenate(margins).min()),
        "lookahead_reached": claim.lookahead_reached(),
        "heads": [{"name": h.name, "layer": li, "beta": h.beta, "delta": h.delta} for li, layer in
                  enumerate(craft.layers) for h in layer.heads],
        "beta_scale": beta_scale,
        "resources": {k: {"formula": str(RESOURCES[claim.construction][k]), "expected": expected[k],
                          "built": built[k]} for k in built},
        "resources_match": expected == built,
        "sizes": {"n": claim.max_vertices, "D": claim.max_lookahead, "T": model.cfg.max_len,
                  "r": claim.iterations},
        "dtype": dtype,
        "seed": seed,
        "seconds": {"build": round(t_build, 3), "check": round(t_check, 3)},
        "graphs_per_second": round(n_checked / max(t_check, 1e-9), 1),
        "versions": _versions(__version__),
    }


def _pad(b, width: int):
    """Left-pad a batch's tokens (and answers) to ``width`` positions."""
    from algeval.sim.tasks.base import TaskBatch

    extra = width - b.tokens.shape[1]
    if extra <= 0:
        return b
    return TaskBatch(task=b.task, tokens=np.pad(b.tokens, ((0, 0), (extra, 0))),
                     answers=np.pad(b.answers, ((0, 0), (extra, 0), (0, 0)), constant_values=-1),
                     loss_mask=np.pad(b.loss_mask, ((0, 0), (extra, 0))), vocab=b.vocab, attention=b.attention,
                     meta=b.meta)


def smallest_passing_beta_scale(claim: SearchClaim, samples: int = 2000, seed: int = 1, tol: float = 0.02) -> float:
    """Bisection on the factor multiplying every derived beta: the smallest that still passes ``samples`` inputs."""
    from algeval.proofs.certify import smallest_passing_scale

    probe = SearchClaim(claim.construction, claim.max_vertices, claim.max_lookahead, "sampled", claim.iterations)
    return smallest_passing_scale(
        lambda s: certify_search(probe, samples=samples, seed=seed, beta_scale=s)["passed"], claim.name, tol)


def default_search_claims() -> list[SearchClaim]:
    """What ``algeval prove --all`` checks for the search constructions."""
    out = [SearchClaim(c, 5, 4, "exhaustive", 2 if c.endswith("looped") else None) for c in CONSTRUCTIONS]
    out += [SearchClaim("path-merging", 8, 7, "sampled"), SearchClaim("bfs", 8, 7, "sampled")]
    out += [SearchClaim("path-merging-looped", 8, min(2 ** k, 7), "sampled", k) for k in (1, 2, 3)]
    out += [SearchClaim("shortest-path", 8, 7, "sampled")]
    return out


def beta_report(claims: list[SearchClaim], samples: int = 2000, seed: int = 1, tol: float = 0.02) -> dict:
    """The smallest factor on every derived inverse temperature at which each claim still passes ``samples``
    sampled inputs (bisection to ``tol``), beside the derived betas: how much slack the leak bound leaves."""
    from algeval.proofs.certify import min_beta_report

    return min_beta_report(
        "search-min-beta-" + "-".join(sorted({f"n{c.max_vertices}" for c in claims})), "search",
        "the smallest factor on the derived inverse temperatures (beta = log((T-1) M / eta) / "
        "Delta, theory.bounds.min_beta) at which each claim still passes, by bisection", claims,
        lambda c: smallest_passing_beta_scale(c, samples, seed, tol),
        lambda c: {h.name: h.beta for layer in build(c, c.task("naive"))[2].layers for h in layer.heads},
        lambda c: {"construction": c.construction, "n": c.max_vertices, "D": c.max_lookahead},
        {"samples": samples, "seed": seed, "tolerance": tol})
