"""The whole AlgEval pipeline at a small scale: what ``make demo`` runs first.

    algeval pipeline [--out runs/pipeline] [--scale smoke|cpu] [--samples N]

1. **Build and certify** the path-merging and BFS constructions for ``search``
   (``n = 8``, lookahead ``<= 7``): sampled certificates with ``--samples`` inputs each,
   written to ``OUT/certificates`` (``algeval prove --all`` writes the committed ones).
2. **Train** a small model of the same class on the same task, and 3. **analyse**
   all three models (attention to path, representation geometry, order matching,
   probes; :func:`algeval.sim.analyses.analyze`) -- both through the figures' input
   maker (:class:`algeval.figures.inputs.Inputs`) at ``--scale``, so the models and
   settings are exactly those the figures show.
4. **Print the verdict table**: per model, accuracy and the one-line verdict.
5. **Write every figure** (:func:`algeval.figures.make.make_figures`) to ``OUT/figures``.

At the default ``smoke`` scale the analysed graphs are tiny (``n = 5``, lookahead
``<= 2``), where path merging and BFS reach every distance at the same layer, so
the onset items cannot be computed and "none" is the expected verdict for all three
models there: it means *undecided*, not *neither*.  ``--scale cpu`` uses the
committed figures' settings (``n = 8``; tens of minutes on 2 cores); the planted
algorithms are told apart on ``n = 12`` graphs (``results/validation/README.md``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from algeval.errors import ParameterError, check_int_range

CONSTRUCTIONS = ("path-merging", "bfs")


def run_pipeline(out="runs/pipeline", scale: str = "smoke", samples: int = 2000, log=None) -> dict:
    """Run the five steps; return ``{"certificates": [...], "verdicts": {...}, "figures": {...}}``."""
    from algeval.figures.inputs import Inputs
    from algeval.figures.make import make_figures
    from algeval.proofs.certify import write_certificate
    from algeval.proofs.search_claims import SearchClaim, certify_search

    if scale not in ("smoke", "cpu"):
        raise ParameterError("--scale", scale, "must be smoke or cpu")
    check_int_range("--samples", samples, 1, 10_000_000)
    console = Console(width=max(Console().width, 120))
    log = log or console.print
    out = Path(out)
    t0 = time.perf_counter()

    log("[bold]1. build and certify the constructions[/bold] (search, n=8, lookahead <= 7)")
    certs = []
    for name in CONSTRUCTIONS:
        cert = certify_search(SearchClaim(name, 8, 7, "sampled"), samples=samples)
        path = write_certificate(cert, out / "certificates")
        certs.append(cert)
        log(f"  {'PASS' if cert['passed'] else 'FAIL'} {cert['claim']}: {cert['resources']['layers']['built']} layers, "
            f"{cert['checked']:,} prompts, {cert['failed']} failed, min margin {cert['min_decoding_margin']:.3g}, "
            f"{cert['graphs_per_second']:,.0f} prompts/s -> {path}")

    log(f"[bold]2-3. train a model and analyse all three[/bold] ({scale} scale settings of the figures)")
    inputs = Inputs(scale, out / "figures", root=out / "inputs", log=lambda m: log(f"  {m}"))
    dirs = inputs.search_models()
    table = Table(title=f"verdicts on {inputs.search_desc()}")
    for col in ("model", "accuracy", "random-weights control", "verdict", "best alignment"):
        table.add_column(col)
    verdicts = {}
    for label, d in dirs.items():
        res = json.loads((Path(d) / "results.json").read_text())
        v = res["verdict"]
        best = max((r for r in v["table"] if r.get("alignment") is not None), key=lambda r: r["alignment"],
                   default=None)
        verdicts[label] = v["verdict"]
        table.add_row(label, _num(res.get("accuracy")), _num(res.get("control_accuracy")), v["verdict"],
                      "-" if best is None else f"{best['algorithm']} {best['alignment']:+.3f}")
    log("[bold]4. verdicts[/bold]")
    console.print(table)

    log(f"[bold]5. figures[/bold] -> {out / 'figures'}")
    figs = make_figures(scale, out_dir=out / "figures", root=out / "inputs", log=lambda m: log(f"  {m}"))
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return {"certificates": certs, "verdicts": verdicts, "figures": figs}


def _num(x) -> str:
    if isinstance(x, dict):  # per-seed or per-condition accuracies: show the mean
        vals = [v for v in x.values() if isinstance(v, (int, float))]
        x = sum(vals) / len(vals) if vals else None
    return "-" if x is None else f"{float(x):.3f}"


def add_pipeline_parser(sub) -> None:
    p = sub.add_parser("pipeline", help="the whole pipeline at a small scale: build, certify, train, analyse, "
                       "verdicts, figures", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/pipeline", help="output folder (default runs/pipeline)")
    p.add_argument("--scale", default="smoke", help="smoke (default, minutes) or cpu (the committed settings)")
    p.add_argument("--samples", type=int, default=2000, help="certificate inputs per construction (default 2000)")
    p.set_defaults(func=lambda a: (run_pipeline(a.out, a.scale, a.samples), 0)[1])
