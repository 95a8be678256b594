"""``make_figures``: regenerate every figure (or one) at a scale; the ``algeval figures`` command.

    algeval figures [--scale smoke|cpu|full] [--only NAME] [--out DIR] [--llama RESULTS_DIR]

For each figure of :data:`algeval.figures.registry.FIGURES` (in number order): fetch its
inputs through :class:`algeval.figures.inputs.Inputs` (which reruns a missing experiment,
construction, training run or analysis at the scale), draw it, and write
``OUT/figNN-NAME.png`` and ``.pdf`` deterministically (:func:`algeval.figures.style.save`).
``OUT`` defaults to ``figures/out`` for ``cpu`` (the committed figures) and
``figures/out-<scale>`` otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from algeval.errors import ParameterError
from algeval.figures.registry import FIGURES, file_name

SCALES = ("smoke", "cpu", "full")
REPO = Path(__file__).resolve().parent.parent


def default_out(scale: str) -> Path:
    return REPO / "figures" / ("out" if scale == "cpu" else f"out-{scale}")


def make_figures(scale: str = "cpu", only: str | list[str] | None = None, out_dir=None, *, llama=None,
                 root=None, log=print, rerun: bool = True) -> dict[str, list[Path]]:
    """Draw the figures named in ``only`` (default: all) at ``scale``; return ``{name: [png, pdf]}``.

    ``root`` overrides where inputs are read and written (default: see
    :class:`~algeval.figures.inputs.Inputs`); ``rerun=False`` raises :class:`ParameterError` on a
    missing input instead of making it.  An unknown name raises :class:`ParameterError`.
    """
    if scale not in SCALES:
        raise ParameterError("--scale", scale, f"must be one of {', '.join(SCALES)}")
    names = list(FIGURES) if only is None else ([only] if isinstance(only, str) else list(only))
    for n in names:
        if n not in FIGURES:
            raise ParameterError("--only", n, f"unknown figure; known: {', '.join(FIGURES)}")
    names.sort(key=lambda n: FIGURES[n].number)
    from algeval.figures.inputs import Inputs
    from algeval.figures.style import save

    out = Path(out_dir) if out_dir is not None else default_out(scale)
    inputs = Inputs(scale, out, root=root, llama=llama, log=log, rerun=rerun)
    written = {}
    for n in names:
        spec = FIGURES[n]
        t = time.perf_counter()
        fig = spec.draw(*spec.load(inputs))
        written[n] = save(fig, out, file_name(n))
        log(f"{written[n][0]}  (.pdf too; {time.perf_counter() - t:.1f} s)")
    return written


def add_figures_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("figures", help="regenerate the figures from saved results",
                              description="Regenerate every figure (PNG + PDF) from the saved results of the "
                              "constructions, training experiments and analyses, rerunning whatever is missing "
                              "at the scale. Figures: " + ", ".join(FIGURES) + ".")
    p.add_argument("--scale", default="cpu", help="smoke | cpu (default; committed in figures/out) | full")
    p.add_argument("--only", metavar="NAME", action="append", help="draw only this figure (repeatable)")
    p.add_argument("--out", metavar="DIR", help="output folder (default figures/out for cpu, figures/out-SCALE)")
    p.add_argument("--llama", metavar="DIR", help="an `algeval analyze` results directory of a Llama checkpoint, "
                   "added to the case-study figures")
    p.set_defaults(func=figures_main)
    return p


def figures_main(args) -> int:
    try:
        make_figures(args.scale, args.only, args.out, llama=args.llama)
    except ParameterError as e:
        sys.stderr.write(f"algeval: error: {e}\n")
        return 2
    return 0
