"""Every figure: its file name, the function that draws it, and how its inputs are fetched.

``FIGURES[name] = FigureSpec(number, "module:function", load, title)``: ``load(inputs)`` returns the
positional arguments of the function (``spec.draw``) from an :class:`algeval.figures.inputs.Inputs` (which makes what is
missing); ``draw(*args)`` returns a matplotlib figure.  ``algeval figures --only NAME`` takes
these names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class FigureSpec:
    number: int
    function: str  # "module:function" under algeval.figures (imported on use: the CLI stays light)
    load: Callable  # Inputs -> tuple of the function's arguments
    title: str

    @property
    def draw(self) -> Callable:
        mod, fn = self.function.split(":")
        return getattr(importlib.import_module(f"algeval.figures.{mod}"), fn)


def _case(inp):
    from algeval.figures.inputs import load_analysis

    task, dirs = inp.case_study()
    return {k: load_analysis(d) for k, d in dirs.items()}, task


def _search(inp):
    from algeval.figures.inputs import load_analysis

    return {k: load_analysis(d) for k, d in inp.search_models().items()}, inp.search_desc()


FIGURES: dict[str, FigureSpec] = {
    "overview": FigureSpec(1, "overview:fig_overview", lambda inp: (), "AlgEval overview"),
    "case-attention": FigureSpec(2, "case_study:fig_attention", _case, "case study: attention"),
    "case-representations": FigureSpec(3, "case_study:fig_representations", _case, "case study: representations"),
    "order-matching": FigureSpec(4, "evidence:fig_orders", _search, "order matching"),
    "probes": FigureSpec(5, "evidence:fig_probes", _search, "probes"),
    "depth-threshold": FigureSpec(6, "training:fig_depth_threshold", lambda inp: (inp.experiment("depth-threshold"),),
                                  "depth threshold"),
    "khop-depth": FigureSpec(7, "training:fig_khop", lambda inp: (inp.experiment("khop-depth"),), "k-hop"),
    "sample-efficiency": FigureSpec(8, "training:fig_sample_efficiency",
                                    lambda inp: (inp.experiment("sample-efficiency"),), "sample efficiency"),
    "lookahead-generalization": FigureSpec(9, "training:fig_lookahead_generalization",
                                           lambda inp: (inp.experiment("lookahead-generalization"),),
                                           "lookahead generalization"),
    "certificates": FigureSpec(10, "certificates:fig_certificates", lambda inp: (inp.certificates(),),
                               "certificates"),
    "inference-compute": FigureSpec(11, "training:fig_inference_compute",
                                    lambda inp: (inp.experiment("inference-compute"),), "inference compute"),
}


def file_name(name: str) -> str:
    """``fig02-case-attention`` for ``case-attention``."""
    return f"fig{FIGURES[name].number:02d}-{name}"
