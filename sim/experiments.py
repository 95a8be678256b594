"""The training experiments: ``algeval experiment NAME --scale smoke|cpu|full [--out DIR]``.

Each experiment is a function ``scale -> results dict`` (registered in
:data:`EXPERIMENTS`); :func:`run_experiment` runs one, writes
``OUT/<scale>.json`` (atomically) and a short markdown report
``OUT/<scale>.md`` (``OUT`` defaults to ``results/<name>/``).  Training runs go
to a scratch directory (deleted afterwards unless ``--work DIR`` is given).

Scales (every setting lives in :data:`SCALES`, below):

* ``smoke`` -- seconds; what the tests run.  Nothing is expected to be learned.
* ``cpu`` -- at most ~10 minutes on 2 idle CPU cores, small graphs (``n <= 8``);
  its outputs are committed under ``results/``.  For ``search`` it uses the
  **balanced** distribution at ``n = 8`` (lookahead ``D <= 3``): the naive
  distribution at ``n = 8`` nominally allows ``D <= 7`` but almost never draws
  ``D >= 3`` (about 1 in 100 examples; ``D >= 4`` about 1 in 4000), so a held-out
  accuracy there would rest on a handful of examples.
* ``full`` -- our reading of the papers' scale (Saparov et al. 2025; Sanford,
  Hsu & Telgarsky 2024), for a GPU; documented here, never run by the tests.

A target a scale does not reach is a result: the JSON carries
``"reached": false`` with the best figure, and the report says "not reached at
this scale".  A lookahead a scale cannot even pose (``D = 8`` on 8-vertex
balanced graphs) is listed as "not posed at this scale".

Numbers are deterministic: every draw is a function of named seeds (see
:mod:`algeval.sim.train`); only the ``timing`` entry differs between runs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from algeval.errors import ParameterError

__all__ = ["SCALES", "EXPERIMENTS", "run_experiment", "evaluate_model", "add_experiment_parser",
           "experiment_main", "THRESHOLD", "SANFORD_K4_ERRORS"]

THRESHOLD = 0.99  # held-out exact-match accuracy that counts as "reached"
SANFORD_K4_ERRORS = {2: 0.42, 3: 0.15, 4: 0.015}  # Sanford, Hsu & Telgarsky (2024), k = 4, error by layers

_MODEL = {
    "smoke": dict(d_model=16, n_heads=2, d_head=8, d_mlp=32, batch_size=8, lr=3e-3, eval_count=48, n_seeds=2),
    "cpu": dict(d_model=32, n_heads=2, d_head=16, d_mlp=64, batch_size=32, lr=3e-3, eval_count=512, n_seeds=3),
    "full": dict(d_model=256, n_heads=4, d_head=64, d_mlp=1024, batch_size=256, lr=3e-4, eval_count=4096,
                 n_seeds=3),
}
_SEARCH = {"smoke": dict(max_vertices=5, distribution="balanced"),      # D <= 2
           "cpu": dict(max_vertices=8, distribution="balanced"),        # D <= 3
           "full": dict(max_vertices=24, distribution="balanced")}      # D <= 11

# Every per-scale setting, in one table: SCALES[scale][experiment].
SCALES = {
    scale: {
        "train": _MODEL[scale],
        "depth-threshold": dict(task=_SEARCH[scale], lookaheads=(1, 2, 4, 8),
                                depths={"smoke": (1, 2), "cpu": (1, 2, 3, 4, 5, 6), "full": (1, 2, 3, 4, 5, 6)}[scale],
                                steps={"smoke": 4, "cpu": 700, "full": 50_000}[scale]),
        "khop-depth": dict(task={"smoke": dict(alphabet=3, seq_len=12), "cpu": dict(alphabet=4, seq_len=24),
                                 "full": dict(alphabet=4, seq_len=100)}[scale],
                           ks=(1, 2, 4), depths={"smoke": (1,), "cpu": (1, 2, 3, 4), "full": (1, 2, 3, 4, 5)}[scale],
                           steps={"smoke": 4, "cpu": 1000, "full": 30_000}[scale]),
        "sample-efficiency": dict(task=_SEARCH[scale], sizes={"smoke": (16, 64), "cpu": (100, 316, 1000, 3162, 10000),
                                                              "full": (100, 316, 1000, 3162, 10000, 31623, 100000)}[scale],
                                  n_layers={"smoke": 1, "cpu": 5, "full": 7}[scale],
                                  steps={"smoke": 4, "cpu": 400, "full": 50_000}[scale], bits=32, delta=0.01),
        "lookahead-generalization": dict(max_vertices=_SEARCH[scale]["max_vertices"],
                                         n_layers={"smoke": 1, "cpu": 5, "full": 7}[scale],
                                         steps={"smoke": 4, "cpu": 400, "full": 50_000}[scale]),
        "inference-compute": dict(task={"smoke": dict(max_vertices=5, distribution="balanced", max_lookahead=1),
                                        "cpu": dict(max_vertices=8, distribution="balanced", max_lookahead=2),
                                        "full": dict(max_vertices=24, distribution="balanced", max_lookahead=4)}[scale],
                                  train_iterations={"smoke": 1, "cpu": 1, "full": 2}[scale],
                                  eval_iterations={"smoke": (1, 2), "cpu": (1, 2, 3), "full": (1, 2, 3, 4)}[scale],
                                  test_lookahead={"smoke": 2, "cpu": 3, "full": 11}[scale],
                                  steps={"smoke": 4, "cpu": 400, "full": 50_000}[scale]),
    }
    for scale in ("smoke", "cpu", "full")
}


# --- helpers ---------------------------------------------------------------------

class _Ctx:
    """Where an experiment trains: a scratch directory and a run counter."""

    def __init__(self, scale: str, work: Path):
        self.scale, self.work, self.n = scale, Path(work), 0

    def train(self, task: str, task_options: dict, n_layers: int, steps: int, **kw):
        from algeval.sim.train import TrainConfig, train

        self.n += 1
        t = dict(SCALES[self.scale]["train"])
        t.update(kw)
        cfg = TrainConfig(task=task, task_options=dict(task_options), n_layers=n_layers, steps=steps,
                          eval_every=steps, checkpoint_every=steps, keep_checkpoints=1,
                          out_dir=str(self.work / f"run{self.n:03d}"), **t)
        return train(cfg, progress=False, force=True)


def _search_task(opts: dict):
    from algeval.sim.tasks import get_task

    return get_task("search", **opts)


def _by_lookahead(final: list[dict]) -> dict[int, list[float]]:
    """``{lookahead: [acc per seed]}`` from a run's final evaluations."""
    out: dict[int, list[float]] = {}
    for f in final:
        for k, v in (f.get("breakdowns", {}).get("lookahead") or {}).items():
            out.setdefault(int(k), []).append(float(v["acc"]))
    return dict(sorted(out.items()))


def _formula(expr, **subs) -> int:
    import sympy as sp

    from algeval.proofs import search_claims as sc

    return int(sp.sympify(expr).subs({getattr(sc, k): v for k, v in subs.items()}))


def construction_layers(D: int) -> dict[str, int]:
    """Layers path merging, BFS need for lookahead ``D`` (from ``proofs.search_claims.RESOURCES``)."""
    from algeval.proofs.search_claims import RESOURCES

    return {"path-merging": _formula(RESOURCES["path-merging"]["layers"], D=D),
            "bfs": _formula(RESOURCES["bfs"]["layers"], D=D)}


def _repad(a: np.ndarray, length: int, fill) -> np.ndarray:
    """Left-pad or left-cut axis 1 of ``a`` to ``length``."""
    T = a.shape[1]
    if T >= length:
        return a[:, T - length:]
    pad = [(0, 0), (length - T, 0)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, constant_values=fill)


_EVAL_JIT: dict = {}


def evaluate_model(model, batch, loop_iterations: int | None = None, chunk: int = 256) -> np.ndarray:
    """Per example: exact-match correct (bool), ``False`` where the prompt does not fit the model.

    The prompts of ``batch`` (left-padded) are re-padded to the model's
    ``max_len``, so a model trained on one task's prompt length can be tested on
    another's; ``loop_iterations`` overrides a looped model's iteration count.
    """
    import jax
    import jax.numpy as jnp

    from algeval.sim.tasks.base import answer_set_correct

    M, T = model.cfg.max_len, batch.tokens.shape[1]
    fits = np.ones(len(batch), bool) if T <= M else ~(batch.tokens[:, :T - M] != 0).any(1)
    tokens = _repad(np.asarray(batch.tokens, np.int32), M, 0)
    answers = _repad(np.asarray(batch.answers, np.int32), M, -1)
    mask = _repad(np.asarray(batch.loss_mask, bool), M, False)
    fn, state = model.functional((), loop_iterations)
    key = (model.cfg, loop_iterations)
    if key not in _EVAL_JIT:  # one compile per model shape and loop count
        _EVAL_JIT[key] = jax.jit(lambda s, t, a, m: answer_set_correct(fn(s, t)[0], a, m)[1])
    run = _EVAL_JIT[key]
    out = []
    for lo in range(0, len(tokens), chunk):
        sl = slice(lo, lo + chunk)
        out.append(np.asarray(run(state, jnp.asarray(tokens[sl]), jnp.asarray(answers[sl]), jnp.asarray(mask[sl]))))
    return np.concatenate(out) & fits


def _acc_by_lookahead(correct: np.ndarray, lookahead: np.ndarray) -> dict[str, dict]:
    return {str(int(u)): {"acc": float(correct[lookahead == u].mean()), "n": int((lookahead == u).sum())}
            for u in np.unique(lookahead)}


def _eval_batch(task, count: int, seed: int = 12345):
    from algeval.sim.train import EVAL, stream_seed

    return task.sample(count, stream_seed(EVAL, seed))


# --- experiments -----------------------------------------------------------------------

def depth_threshold(scale: str, ctx: _Ctx) -> dict:
    """Smallest depth reaching 99% held-out accuracy per lookahead, beside the constructions' depths."""
    s = SCALES[scale]["depth-threshold"]
    task = _search_task(s["task"])
    per_depth = {}
    for L in s["depths"]:
        res = ctx.train("search", s["task"], L, s["steps"])
        per_depth[L] = _by_lookahead(res.final)
    rows = {}
    for D in s["lookaheads"]:
        cons = construction_layers(D)
        if D > task.L:
            rows[str(D)] = dict(posed=False, reached=False, threshold_depth=None, construction_layers=cons,
                                note=f"not posed at this scale: {s['task']['distribution']} graphs with "
                                f"n={task.N} admit lookahead <= {task.L}")
            continue
        accs = {str(L): per_depth[L].get(D, []) for L in s["depths"]}
        best_seed = {L: max(a) if a else 0.0 for L, a in accs.items()}
        hit = [int(L) for L, a in best_seed.items() if a >= THRESHOLD]
        bestL = max(best_seed, key=lambda L: best_seed[L])
        rows[str(D)] = dict(posed=True, reached=bool(hit), threshold_depth=min(hit) if hit else None,
                            best_acc=best_seed[bestL], best_depth=int(bestL), acc_per_depth=accs,
                            construction_layers=cons)
    return dict(threshold=THRESHOLD, criterion="best seed's held-out exact-match accuracy on examples of "
                "lookahead exactly D >= threshold; one model per depth trained on the whole lookahead mixture",
                task=s["task"], depths=list(s["depths"]), lookaheads=rows)


def khop_depth(scale: str, ctx: _Ctx) -> dict:
    """Held-out error against depth for k-hop induction heads."""
    s = SCALES[scale]["khop-depth"]
    rows = {}
    for k in s["ks"]:
        rows[str(k)] = {}
        for L in s["depths"]:
            res = ctx.train("k-hop-induction", {**s["task"], "k": k}, L, s["steps"], breakdown=())
            errs = [1.0 - float(f["acc"]) for f in res.final]
            rows[str(k)][str(L)] = dict(error_mean=float(np.mean(errs)), error_best=float(min(errs)),
                                        error_per_seed=errs)
    ref = {str(L): e for L, e in SANFORD_K4_ERRORS.items()}
    return dict(task=s["task"], depths=list(s["depths"]), error=rows, sanford_k4_error=ref,
                reached={k: {L: v["error_best"] <= 1 - THRESHOLD for L, v in r.items()} for k, r in rows.items()})


def _reference_curves(task, sizes, bits: int, delta: float, D: int) -> dict:
    """Coupon-collector coverage and Occam bound for the path-merging construction (sympy)."""
    import sympy as sp

    from algeval.proofs.search_claims import SearchClaim, build

    Nn, q, R, P, b, dl, eps = sp.symbols("N q R P b delta epsilon", positive=True)
    V = task.V
    sample = task.sample(4096, 777)
    edges = float(sample.meta["adj"].sum((1, 2)).mean())
    R_val = V * (V - 1)
    q_val = edges / R_val  # by label symmetry every ordered pair is equally likely to be an edge
    coverage = 1 - (1 - q) ** Nn                      # P(a given rule has been exercised)
    all_cov = 1 - R * (1 - q) ** Nn                   # union bound: P(every rule exercised) >= this
    n_all = sp.log(R / dl) / -sp.log(1 - q)           # examples for all rules w.p. >= 1 - delta
    n_expected = sp.harmonic(R) / q                   # ~ expected examples to exercise all rules (q small)
    model = build(SearchClaim("path-merging", task.N, D, "sampled"), task)[0]
    from flax import nnx

    leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(nnx.state(model, nnx.Param))]
    P_nz, P_dense = int(sum(int((x != 0).sum()) for x in leaves)), int(sum(x.size for x in leaves))
    occam_err = (b * P * sp.log(2) + sp.log(1 / dl)) / Nn  # consistent learner, |H| = 2^(bP), realisable
    n_occam = sp.solve(sp.Eq(occam_err, eps), Nn)[0]
    sub = {q: q_val, R: R_val, dl: delta, b: bits, P: P_nz}
    f = lambda e, N: float(sp.N(e.subs({**sub, Nn: N})))  # noqa: E731
    return dict(
        coupon=dict(rules=R_val, rule="ordered vertex-label pair (u, v): one adjacency/reachability entry of the "
                    "construction", q_per_example=q_val, mean_edges=edges,
                    formula_coverage=str(coverage), formula_all_covered_lower=str(all_cov),
                    coverage=[f(coverage, N) for N in sizes],
                    all_covered_lower=[max(0.0, f(all_cov, N)) for N in sizes],
                    examples_all_covered=math.ceil(f(n_all, 1)), examples_expected=math.ceil(f(n_expected, 1)),
                    bounds="coverage(N) is the exact probability that a given vertex-pair rule occurs as an edge "
                    "in at least one of N i.i.d. training examples; all_covered_lower(N) lower-bounds the "
                    "probability that every rule has occurred. A learner that can apply a rule only after seeing "
                    "it (no sharing across labels) cannot be correct on a test prompt needing an unseen rule, so "
                    "these upper-bound such a learner's coverage; they do not bound a trained transformer, which "
                    "shares weights across labels."),
        occam=dict(parameters_nonzero=P_nz, parameters_dense=P_dense, bits=bits, delta=delta,
                   formula_error=str(occam_err),
                   accuracy_lower=[max(0.0, 1 - f(occam_err, N)) for N in sizes],
                   examples_for_99=math.ceil(float(sp.N(n_occam.subs({**sub, eps: 0.01})))),
                   bounds=f"with probability >= 1 - delta, any learner returning a hypothesis consistent with "
                   f"N i.i.d. examples from a class of description length b*P bits (P = the construction's "
                   f"{P_nz} nonzero parameters at b = {bits} bits; the class contains the target, by the "
                   "construction) has error <= (b P ln 2 + ln(1/delta)) / N; accuracy_lower = 1 - that "
                   "(clipped at 0). It is vacuous where it is 0."))


def sample_efficiency(scale: str, ctx: _Ctx) -> dict:
    """Held-out accuracy against training-set size, beside two idealised-learner reference curves."""
    s = SCALES[scale]["sample-efficiency"]
    task = _search_task(s["task"])
    acc = []
    for N in s["sizes"]:
        res = ctx.train("search", s["task"], s["n_layers"], s["steps"], train_set_size=int(N))
        a = [float(f["acc"]) for f in res.final]
        acc.append(dict(size=int(N), acc_mean=float(np.mean(a)), acc_best=float(max(a)), acc_per_seed=a))
    best = max(acc, key=lambda r: r["acc_best"])
    hit = [r["size"] for r in acc if r["acc_best"] >= THRESHOLD]
    return dict(task=s["task"], n_layers=s["n_layers"], steps=s["steps"], trained=acc,
                reached=bool(hit), smallest_size_reaching=min(hit) if hit else None,
                best_acc=best["acc_best"], best_size=best["size"],
                reference=_reference_curves(task, s["sizes"], s["bits"], s["delta"], task.L))


def lookahead_generalization(scale: str, ctx: _Ctx) -> dict:
    """Train on naive and on balanced graphs; held-out accuracy per test lookahead on both."""
    from algeval.models.io import load_model

    s = SCALES[scale]["lookahead-generalization"]
    n = s["max_vertices"]
    dists = {"balanced": dict(max_vertices=n, distribution="balanced"),
             "naive": dict(max_vertices=n, distribution="naive")}
    count = SCALES[scale]["train"]["eval_count"]
    tests = {d: _eval_batch(_search_task(o), count) for d, o in dists.items()}
    table = {}
    for trained_on, opts in dists.items():
        res = ctx.train("search", opts, s["n_layers"], s["steps"])
        table[trained_on] = {}
        for tested_on, batch in tests.items():
            per_seed = [evaluate_model(load_model(d)[0], batch) for d in res.model_dirs]
            best = int(np.argmax([c.mean() for c in per_seed]))
            table[trained_on][tested_on] = dict(
                best_seed=best, by_lookahead=_acc_by_lookahead(per_seed[best], batch.meta["lookahead"]),
                acc=float(per_seed[best].mean()))
    return dict(max_vertices=n, n_layers=s["n_layers"], table=table,
                note="cell: the best seed's exact-match accuracy on held-out prompts of that lookahead; "
                "prompts are re-padded to each model's length")


def inference_compute(scale: str, ctx: _Ctx) -> dict:
    """A looped model trained at r iterations, evaluated at r' >= r on larger lookaheads."""
    from algeval.models.io import load_model

    s = SCALES[scale]["inference-compute"]
    r = s["train_iterations"]
    res = ctx.train("search", s["task"], 4, s["steps"],
                    model_options=dict(loop_start=2, loop_length=1, loop_iterations=r))
    test = _search_task({**s["task"], "max_lookahead": s["test_lookahead"]})
    batch = _eval_batch(test, SCALES[scale]["train"]["eval_count"])
    la = batch.meta["lookahead"]
    models = [load_model(d)[0] for d in res.model_dirs]
    rows = {}
    for rp in s["eval_iterations"]:
        per_seed = [evaluate_model(m, batch, loop_iterations=rp) for m in models]
        best = int(np.argmax([c.mean() for c in per_seed]))
        rows[str(rp)] = dict(construction_reach=2 ** rp, best_seed=best, acc=float(per_seed[best].mean()),
                             by_lookahead=_acc_by_lookahead(per_seed[best], la))
    return dict(task=s["task"], train_iterations=r, trained_lookahead=s["task"]["max_lookahead"],
                test_lookahead=s["test_lookahead"], layout="4 blocks; block 2 weight-tied, run r times "
                "(the looped path-merging layout: 2 + r + 1 layers)", iterations=rows)


EXPERIMENTS = {
    "depth-threshold": depth_threshold,
    "khop-depth": khop_depth,
    "sample-efficiency": sample_efficiency,
    "lookahead-generalization": lookahead_generalization,
    "inference-compute": inference_compute,
}


# --- reports ------------------------------------------------------------------------------

def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _report(name: str, scale: str, res: dict) -> str:
    r = res["results"]
    out = [f"# {name} ({scale} scale)", "", f"Settings: `{json.dumps(res['settings'], sort_keys=True)}`",
           f"Wall time: {res['timing']['wall_seconds']:.0f} s.", ""]
    if name == "depth-threshold":
        out += [f"Smallest depth whose best seed reaches {THRESHOLD:.0%} held-out accuracy at lookahead D.", "",
                "| D | trained threshold | best (depth) | path merging ceil(log2 D)+3 | BFS max(D,2)+2 |",
                "|---|---|---|---|---|"]
        for D, row in r["lookaheads"].items():
            c = row["construction_layers"]
            if not row["posed"]:
                got, best = "not posed at this scale", row["note"]
            elif row["reached"]:
                got, best = str(row["threshold_depth"]), f"{_pct(row['best_acc'])} ({row['best_depth']})"
            else:
                got, best = "not reached at this scale", f"{_pct(row['best_acc'])} ({row['best_depth']})"
            out.append(f"| {D} | {got} | {best} | {c['path-merging']} | {c['bfs']} |")
    elif name == "khop-depth":
        ds = r["depths"]
        out += ["Held-out error (1 - exact-match accuracy at the last position), best seed / mean over seeds.", "",
                "| k | " + " | ".join(f"{L} layers" for L in ds) + " |", "|---|" + "---|" * len(ds)]
        for k, row in r["error"].items():
            out.append(f"| {k} | " + " | ".join(f"{row[str(L)]['error_best']:.3f} / {row[str(L)]['error_mean']:.3f}"
                                               for L in ds) + " |")
        ref = r["sanford_k4_error"]
        out.append("| k=4, Sanford et al. | " + " | ".join(f"{ref[str(L)]:.3f}" if str(L) in ref else "-"
                                                           for L in ds) + " |")
        miss = [k for k, v in r["reached"].items() if not any(v.values())]
        if miss:
            out += ["", f"Error <= {1 - THRESHOLD:.2f}: not reached at this scale for k = {', '.join(miss)}."]
    elif name == "sample-efficiency":
        ref = r["reference"]
        out += ["| training-set size | trained best / mean | coupon coverage | all rules covered (>=) | "
                "Occam accuracy (>=) |", "|---|---|---|---|---|"]
        for i, row in enumerate(r["trained"]):
            out.append(f"| {row['size']} | {_pct(row['acc_best'])} / {_pct(row['acc_mean'])} | "
                       f"{_pct(ref['coupon']['coverage'][i])} | {_pct(ref['coupon']['all_covered_lower'][i])} | "
                       f"{_pct(ref['occam']['accuracy_lower'][i])} |")
        out += ["", f"{THRESHOLD:.0%}: " + (f"reached at {r['smallest_size_reaching']} examples." if r["reached"] else
                f"not reached at this scale (best {_pct(r['best_acc'])} at {r['best_size']} examples)."), "",
                f"Coupon collector ({ref['coupon']['rules']} rules, q = {ref['coupon']['q_per_example']:.4f} per "
                f"example): all rules seen w.p. 0.99 after {ref['coupon']['examples_all_covered']} examples "
                f"(expected ~{ref['coupon']['examples_expected']}). {ref['coupon']['bounds']}", "",
                f"Occam: 99% needs N >= {ref['occam']['examples_for_99']}. {ref['occam']['bounds']}"]
    elif name == "lookahead-generalization":
        for tested_on in ("balanced", "naive"):
            las = sorted({int(k) for t in r["table"].values() for k in t[tested_on]["by_lookahead"]})
            out += ["", f"Tested on {tested_on} graphs (cell: accuracy, n examples):", "",
                    "| trained on | " + " | ".join(f"D={d}" for d in las) + " |", "|---|" + "---|" * len(las)]
            for trained_on, t in r["table"].items():
                bl = t[tested_on]["by_lookahead"]
                out.append(f"| {trained_on} | " + " | ".join(
                    f"{_pct(bl[str(d)]['acc'])} ({bl[str(d)]['n']})" if str(d) in bl else "-" for d in las) + " |")
        out += ["", r["note"]]
    elif name == "inference-compute":
        las = sorted({int(k) for v in r["iterations"].values() for k in v["by_lookahead"]})
        out += [f"Trained with r = {r['train_iterations']} on lookahead <= {r['trained_lookahead']}; "
                f"{r['layout']}.", "",
                "| r' | construction reaches 2^r' | " + " | ".join(f"D={d}" for d in las) + " |",
                "|---|---|" + "---|" * len(las)]
        for rp, v in r["iterations"].items():
            out.append(f"| {rp} | {v['construction_reach']} | " + " | ".join(
                _pct(v["by_lookahead"][str(d)]["acc"]) if str(d) in v["by_lookahead"] else "-" for d in las) + " |")
        beyond = [d for d in las if d > r["trained_lookahead"]]
        ok = [d for d in beyond if any(v["by_lookahead"].get(str(d), {}).get("acc", 0) >= THRESHOLD
                                       for v in r["iterations"].values())]
        out += ["", f"{THRESHOLD:.0%} beyond the trained lookahead: " +
                (f"reached at D = {ok}." if ok else "not reached at this scale.")]
    return "\n".join(out) + "\n"


def run_experiment(name: str, scale: str, out: str | Path | None = None, work: str | Path | None = None) -> dict:
    """Run experiment ``name`` at ``scale``; write ``OUT/<scale>.json`` and ``OUT/<scale>.md``; return the dict."""
    from algeval.sim.train import _atomic_write

    if name not in EXPERIMENTS:
        raise ParameterError("NAME", name, f"unknown experiment; known: {', '.join(EXPERIMENTS)}")
    if scale not in SCALES:
        raise ParameterError("--scale", scale, f"must be one of {', '.join(SCALES)}")
    out = Path(out) if out is not None else Path("results") / name
    scratch = work is None
    wdir = Path(tempfile.mkdtemp(prefix=f"algeval-{name}-")) if scratch else Path(work)
    t0 = time.perf_counter()
    try:
        results = EXPERIMENTS[name](scale, _Ctx(scale, wdir))
    finally:
        if scratch:
            shutil.rmtree(wdir, ignore_errors=True)
    settings = {"train": SCALES[scale]["train"], name: SCALES[scale][name]}
    res = json.loads(json.dumps({"experiment": name, "scale": scale, "settings": settings, "results": results,
                                 "timing": {"wall_seconds": round(time.perf_counter() - t0, 1)}}))
    _atomic_write(out / f"{scale}.json", json.dumps(res, indent=1, sort_keys=True) + "\n")
    _atomic_write(out / f"{scale}.md", _report(name, scale, res))
    return res


# --- command line -------------------------------------------------------------------------

def add_experiment_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("experiment", help="run a training experiment, write results JSON + report",
                              description="Run a training experiment at a scale and write OUT/<scale>.json and "
                              "OUT/<scale>.md (OUT defaults to results/NAME).")
    p.add_argument("name", metavar="NAME", help="one of: " + ", ".join(EXPERIMENTS))
    p.add_argument("--scale", default="smoke", help="smoke (seconds) | cpu (<= 10 min, 2 cores) | full (GPU)")
    p.add_argument("--out", metavar="DIR", help="output directory (default results/NAME)")
    p.add_argument("--work", metavar="DIR", help="keep the training runs here (default: a deleted scratch dir)")
    p.set_defaults(func=experiment_main)
    return p


def experiment_main(args) -> int:
    try:
        res = run_experiment(args.name, args.scale, args.out, args.work)
    except ParameterError as e:
        sys.stderr.write(f"algeval: error: {e}\n")
        return 2
    out = Path(args.out) if args.out else Path("results") / args.name
    print(f"{out / (args.scale + '.json')}  {out / (args.scale + '.md')}  ({res['timing']['wall_seconds']:.0f} s)")
    return 0
