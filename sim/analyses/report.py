"""``analyze``: every analysis on one model and batch, written as JSON + markdown; the CLI command.

    algeval analyze MODEL_DIR --task TASK [--task-opt k=v ...] --out DIR
                    [--count N] [--seed S] [--control random|none] [--perms N] [--exact-pairs N]

Writes to ``DIR``:

* ``results.json``  summaries and the moderately sized named arrays (every
  array is ``{"axes", "shape", "coords", "values"}``, see :class:`Named`);
* ``arrays.npz``    the large arrays (node representations, PCA points,
  per-example and per-pair values), keyed ``<section>.<name>``;
* ``report.md``     a short human-readable report with the alignment table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from algeval.errors import ParameterError
from algeval.sim.options import parse_literal
from algeval.sim.analyses.attention import attention_to_path
from algeval.sim.analyses.causal import causal_tests
from algeval.sim.analyses.common import answer_accuracy, collect, graph_info, resolve_control
from algeval.sim.analyses.geometry import representation_geometry
from algeval.sim.analyses.named import Named, to_jsonable
from algeval.sim.analyses.orders import order_matching
from algeval.sim.analyses.onsets import reach_onsets
from algeval.sim.analyses.probes import probes
from algeval.sim.analyses.verdict import format_table, verdict

_BIG = {  # section -> keys stored in arrays.npz instead of results.json
    "attention": ("mass",),
    "geometry": ("reps", "pca", "pca_nodes", "tsne", "goal_competitor", "goal_competitor_rel",
                 "consecutive_cosine", "event_times"),
    "orders": ("tau", "per_example", "chance_per_example"),
    "causal": ("activation", "attribution", "pair_index"),
}


def run_all(model, batch, *, control="random", n_perm: int = 64, n_exact: int = 50, seed: int = 0,
            causal: bool = True, chunk: int = 256, onsets: bool = True) -> dict:
    """Run every analysis; returns ``{section: result}`` plus ``verdict`` and ``timing`` (seconds)."""
    timing = {}
    t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        timing[name] = round(now - t, 3)
        t = now

    acts = collect(model, batch, chunk)
    info = graph_info(batch)
    lap("forward")
    ctrl = resolve_control(model, control, batch, chunk)
    lap("control_forward")
    res = {"accuracy": float(answer_accuracy(acts, batch).mean())}
    if ctrl is not None:
        res["control_accuracy"] = float(answer_accuracy(ctrl, batch).mean())
    res["attention"] = attention_to_path(model, batch, acts=acts, info=info, control=ctrl)
    lap("attention")
    res["geometry"] = representation_geometry(model, batch, acts=acts, info=info, seed=seed)
    lap("geometry")
    res["orders"] = order_matching(model, batch, acts=acts, info=info, control=ctrl, n_perm=n_perm, seed=seed)
    lap("orders")
    res["probes"] = probes(model, batch, acts=acts, info=info, control=ctrl, seed=seed)
    lap("probes")
    if onsets:
        res["onsets"] = reach_onsets(model, batch, acts=acts, info=info, control=ctrl, seed=seed)
        lap("onsets")
    if causal:
        try:
            res["causal"] = causal_tests(model, batch, n_exact=n_exact, seed=seed, attention=res["attention"])
        except ParameterError as e:
            res["causal"] = {"skipped": str(e)}
        lap("causal")
    # a section skipped as a whole carries its reason as a string (``causal``); ``orders["skipped"]`` is a count
    # of examples past the DP budget, and order matching still counts
    res["verdict"] = verdict({k: v for k, v in res.items() if isinstance(v, dict) and not isinstance(v.get("skipped"), str)})
    res["timing"] = timing
    return res


def _split(res: dict) -> tuple[dict, dict]:
    """``(json_part, npz_arrays)``."""
    arrays = {}

    def pull(section, d):
        out = {}
        for k, v in d.items():
            if k in _BIG.get(section, ()):
                _flatten(f"{section}.{k}", v, arrays)
                out[k] = f"<arrays.npz: {section}.{k}>"
            else:
                out[k] = v
        return out

    js = {k: (pull(k, v) if isinstance(v, dict) else v) for k, v in res.items()}
    return to_jsonable(js), arrays


def _flatten(prefix, v, arrays):
    if v is None:
        return
    if isinstance(v, Named):
        arrays[prefix] = v.values
        arrays[prefix + ".axes"] = np.asarray(v.axes)
    elif isinstance(v, dict):
        for k, x in v.items():
            _flatten(f"{prefix}.{k}", x, arrays)
    elif isinstance(v, np.ndarray):
        arrays[prefix] = v
    elif isinstance(v, (int, float)):
        arrays[prefix] = np.asarray(v)


def _markdown(res: dict, title: str) -> str:
    v = res["verdict"]
    L = ["# AlgEval analysis: " + title, "", f"**Verdict: {v['verdict']}**", "",
         f"Accuracy at the decision position: {res['accuracy']:.3f}"
         + (f" (random-weights control: {res['control_accuracy']:.3f})" if "control_accuracy" in res else ""), "",
         "## Algorithm alignment", "", format_table(v), "", v["rule"], ""]
    a = res.get("attention")
    if a:
        L += ["## Attention to the correct path", "", f"Overall: {a['summary']}.",
              f"Node tokens: {a['tokens']['correct']} correct-path, {a['tokens']['competing']} competing."]
        if "control" in a:
            L.append(f"Random-weights control: {a['control']['summary']}.")
        L += ["", "| layer | b | SE | t | p | n |", "|---|---|---|---|---|---|"]
        pl = a["per_layer"]
        for i, l in enumerate(pl.coords["layer"]):
            b, se, t, p, df, n = (pl.values[i, pl.coords["stat"].index(s)] for s in ("b", "se", "t", "p", "df", "n"))
            L.append(f"| {l} | {b:.4g} | {se:.2g} | {t:.3g} | {p:.2g} | {int(n)} |")
        L.append("")
    g = res.get("geometry")
    if g:
        rel = g["goal_competitor_rel_mean"]
        cos = g["consecutive_cosine_mean"]
        L += ["## Representation geometry", "",
              "Target-to-nearest-competitor distance (relative to the median node distance), by layer: "
              + ", ".join(f"{'embed' if l == -1 else l}: {x:.3f}" for l, x in zip(rel.coords["layer"], rel.values)),
              "",
              "Cosine between consecutive layers: "
              + ", ".join(f"{t}: {x:.3f}" for t, x in zip(cos.coords["transition"], cos.values)), "",
              f"t-SNE: {g['tsne_note'] or 'computed'}", ""]
    o = res.get("orders")
    if o:
        L += ["## Order matching", "", f"Rule: {o['rule']}; {o['n_perm']} permutations for chance.", "",
              "| score | model | chance | control | p (perm) | examples |", "|---|---|---|---|---|---|"]
        for k, s in o["summary"].items():
            c = s.get("control")
            L.append(f"| {k} | {s['score']:.3f} | {s['chance']:.3f} | {'-' if c is None else f'{c:.3f}'} | "
                     f"{s['p_perm']:.2g} | {s['n_examples']} |")
        if o["incomplete"]:
            L.append(f"\n{o['incomplete']} examples exceeded the state cap (BFS/DFS scores NaN).")
        if o.get("skipped"):
            L.append(f"\n{o['skipped']} examples past the DP work budget (BFS/DFS scores NaN).")
        L.append("")
    p = res.get("probes")
    if p:
        L += ["## Probes (balanced accuracy at the schedule's points, best family and offset)", "",
              "| schedule | probe | chance | shuffled | control model | p | family | offset |",
              "|---|---|---|---|---|---|---|---|"]
        for k, s in p["summary"].items():
            c = s.get("control")
            L.append(f"| {k} | {s['score']:.3f} | {s['chance']:.3f} | {s['shuffled']:.3f} | "
                     f"{'-' if c is None else f'{c:.3f}'} | {s['p']:.2g} | {s['family']} | {s['offset']} |")
        acc = p["accuracy"]
        if acc.values.size:
            L += ["", "Best accuracy over hop thresholds, per family and layer:", "",
                  "| family | " + " | ".join(("embed" if l == -1 else str(l)) for l in acc.coords["layer"]) + " |",
                  "|---|" + "---|" * len(acc.coords["layer"])]
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                best = np.nanmax(acc.values, axis=-1)
            for f, row in zip(acc.coords["family"], best):
                L.append(f"| {f} | " + " | ".join(f"{x:.3f}" for x in row) + " |")
        L.append("")
    n = res.get("onsets")
    if n:
        L += ["## Newly reached vertices: onset layers (linear = BFS, exponential = path merging)", "",
              f"Rule: {n['rule']}. Families counted: {', '.join(n['counted']) or 'none'}.", "",
              "| schedule | score | chance | null | shuffled | control model | p | family | offset | bands matched |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for k, s in n["summary"].items():
            c = s.get("control")
            L.append(f"| {k} | {s['score']:.3f} | {s['chance']:.3f} | {s['null']:.3f} | {s['shuffled']:.3f} | "
                     f"{'-' if c is None else f'{c:.3f}'} | {s['p']:.2g} | {s['family']} | {s['offset']} | "
                     f"{s['matched']}/{s['bands']} |")
        acc, on = n["accuracy"], n["onset"]
        for fi, f in enumerate(acc.coords["family"]):
            A = acc.values[fi]
            if not np.isfinite(A).any(axis=0).any():
                continue
            L += ["", f"`{f}`: held-out balanced accuracy of the newly-reached probe (distance d vs never reached) by "
                  "distance (rows) and layer; onset = first layer index of the step (-1: none); the last columns: "
                  "the highest over layers with shuffled labels and on the random-weights control model", "",
                  "| distance | onset | " + " | ".join(("embed" if l == -1 else str(l)) for l in acc.coords["layer"])
                  + " | shuffled max | control max |", "|---|---|" + "---|" * (len(acc.coords["layer"]) + 2)]
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                shm = np.nanmax(n["shuffled"].values[fi], axis=0)
                ctm = np.nanmax(n["control"].values[fi], axis=0) if "control" in n else np.full(len(shm), np.nan)
            for j, d in enumerate(acc.coords["distance"]):
                if np.isfinite(A[:, j]).any():
                    L.append(f"| {d} | {int(on.values[fi, j])} | " + " | ".join(f"{x:.3f}" for x in A[:, j])
                             + f" | {shm[j]:.3f} | {ctm[j]:.3f} |")
        L.append("")
    c = res.get("causal")
    if c:
        L += ["## Causal tests", ""]
        if "skipped" in c:
            L.append(f"Skipped: {c['skipped']}")
        else:
            L += [f"{c['n_pairs']} one-edge corrupted pairs; logit difference clean {c['ld_clean_mean']:.3f}, "
                  f"corrupted {c['ld_corrupt_mean']:.3f}.",
                  f"Exact activation patching on {c['n_exact']} pairs; attribution patching on "
                  f"{c['n_attribution']}; correlation attribution vs exact: {c['attribution_vs_activation_r']:.3f}."]
            ph = c.get("path_heads")
            if ph:
                L.append(f"Heads' correct-path preference vs their ablation damage: r = {ph['r']:.3f} "
                         f"(permutation p = {ph['p']:.3g}, {ph['n']} heads).")
        L.append("")
    L += ["Timing (s): " + ", ".join(f"{k} {v}" for k, v in res["timing"].items()), ""]
    return "\n".join(L)


def results_json(res: dict) -> tuple[dict, dict]:
    """``(results.json part, arrays.npz arrays)`` of a :func:`run_all`-shaped result, as :func:`analyze` writes them."""
    return _split(res)


def report_markdown(res: dict, title: str) -> str:
    """The markdown report of a :func:`run_all`-shaped result, as :func:`analyze` writes it."""
    return _markdown(res, title)


def analyze(model, batch, out_dir, *, title: str = "", **kw) -> dict:
    """Run every analysis (:func:`run_all`) and write ``results.json``, ``arrays.npz``, ``report.md``."""
    res = run_all(model, batch, **kw)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, arrays = _split(res)
    js["batch"] = {"task": batch.task, "examples": len(batch), "seq_len": int(batch.tokens.shape[1])}
    js["model"] = model.cfg.to_json()
    (out / "results.json").write_text(json.dumps(js, indent=1, allow_nan=False) + "\n")
    np.savez_compressed(out / "arrays.npz", **arrays)
    (out / "report.md").write_text(_markdown(res, title or f"{batch.task}, {len(batch)} examples"))
    return res


# --- command line ------------------------------------------------------------------------------

def add_analyze_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``analyze`` command to an argparse ``subparsers``; it calls :func:`analyze_main`."""
    p = subparsers.add_parser(
        "analyze", help="run the AlgEval analyses on a model directory and write a report",
        description="Attention to the correct path, representation geometry, order matching against "
        "BFS/DFS/path merging, probes, causal tests and the algorithm-alignment verdict, on a fresh batch "
        "of TASK. Writes results.json, arrays.npz and report.md to --out.")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--task", required=True, metavar="NAME", help="task to sample (`algeval tasks list`)")
    p.add_argument("--task-opt", action="append", metavar="NAME=VALUE", help="a task option, repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--count", type=int, default=1000, help="examples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="sampling and analysis seed (default 0)")
    p.add_argument("--control", default="random", help="random (random-weights model of the same config) or none")
    p.add_argument("--perms", type=int, default=64, help="permutations for order-matching chance (default 64)")
    p.add_argument("--exact-pairs", type=int, default=50, help="pairs for exact activation patching (default 50)")
    p.add_argument("--no-causal", action="store_true", help="skip the causal tests")
    p.set_defaults(func=analyze_main)
    return p


def analyze_main(args) -> int:
    """``algeval analyze``: ``args`` is the parsed namespace (or an argv list).  Returns the exit code."""
    if args is None or isinstance(args, (list, tuple)):
        parser = argparse.ArgumentParser(prog="algeval")
        sub = parser.add_subparsers(dest="command")
        add_analyze_parser(sub)
        args = parser.parse_args(["analyze", *(args or [])])
    try:
        from algeval.models.io import load_model
        from algeval.sim.tasks import get_task

        opts = {}
        for item in args.task_opt or []:
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise ParameterError("--task-opt", item, "must look like NAME=VALUE, e.g. max_vertices=8")
            opts[k.strip().replace("-", "_")] = parse_literal(v.strip())
        if args.count < 2:
            raise ParameterError("--count", args.count, "must be >= 2")
        if args.control not in ("random", "none"):
            raise ParameterError("--control", args.control, "must be 'random' or 'none'")
        model, meta = load_model(args.model_dir)
        task = get_task(args.task, **opts)
        batch = task.sample(args.count, args.seed)
        res = analyze(model, batch, args.out, control=None if args.control == "none" else "random",
                      n_perm=args.perms, n_exact=args.exact_pairs, seed=args.seed, causal=not args.no_causal,
                      title=f"{args.model_dir} on {args.task}")
    except ParameterError as e:
        sys.stderr.write(f"algeval: error: {e}\n")
        return 2
    print(f"verdict: {res['verdict']['verdict']}")
    for r in res["verdict"]["table"]:
        print("  " + r["line"])
    print(f"report: {Path(args.out) / 'report.md'}  results: {Path(args.out) / 'results.json'}")
    return 0
