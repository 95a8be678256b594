"""Figure 1: the AlgEval pipeline, drawn from the code's own registries.

Boxes: task -> reference algorithms -> (hand-built constructions | trained model |
imported LLM) -> analyses -> verdict.  Every name in a box is read at run time:

* tasks: ``algeval.sim.tasks.TASKS``;
* references: the functions of ``algeval.theory`` that return a ``Trace``;
* constructions: the compiled programs (``algeval.proofs.claims.MAKERS``), the graph
  constructions (``algeval.proofs.search_claims.CONSTRUCTIONS``) and any other module of
  ``algeval.models.constructions``;
* analyses: the table in ``algeval.sim.analyses``'s docstring (``:func:`name```  rows);
* verdict candidates: ``algeval.sim.analyses.verdict.ALGORITHMS``.

So the figure changes when the code does.
"""

from __future__ import annotations

import inspect
import pkgutil
import re
import textwrap

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from algeval.figures.style import COLORS, figure


def registry() -> dict[str, list[str]]:
    """``{box: [names]}`` read from the code (see the module docstring)."""
    import algeval.models.constructions as cons
    import algeval.sim.analyses as an
    import algeval.theory as th
    from algeval.proofs.claims import MAKERS
    from algeval.proofs.search_claims import CONSTRUCTIONS
    from algeval.sim.analyses.verdict import ALGORITHMS
    from algeval.sim.tasks import TASKS

    refs = [n for n in th.__all__ if inspect.isfunction(getattr(th, n))
            and str(inspect.signature(getattr(th, n)).return_annotation).endswith("Trace")]
    other = sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(cons.__path__) if m.name != "search")
    analyses = [m for m in re.findall(r"^:func:`(\w+)`", an.__doc__ or "", re.M) if m != "analyze"]
    return {"tasks": sorted(TASKS), "references": refs, "compiled programs": sorted(MAKERS),
            "graph constructions": list(CONSTRUCTIONS), "other constructions": other,
            "analyses": analyses, "verdict candidates": list(ALGORITHMS)}


def _box(ax, x, y, w, h, title, lines, color, wrap=34):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.008,rounding_size=0.015",
                                fc=color + "22", ec=color, lw=1.2))
    ax.text(x + w / 2, y + h - 0.025, title, ha="center", va="top", fontsize=8.5, weight="bold")
    body = "\n".join(textwrap.fill(s, wrap) for s in lines)
    ax.text(x + w / 2, y + h - 0.075, body, ha="center", va="top", fontsize=7, family="DejaVu Sans Mono",
            linespacing=1.25)


def _arrow(ax, a, b, text=""):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=11, lw=1.1, color="#444444"))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.018, text, ha="center", va="bottom", fontsize=6.5,
                color="#444444")


def fig_overview(reg: dict[str, list[str]] | None = None):
    """The pipeline figure; ``reg`` defaults to :func:`registry`."""
    reg = reg or registry()
    fig, ax = figure(height=4.6, width=9.0, layout=None)
    fig.subplots_adjust(0.005, 0.005, 0.995, 0.94)
    ax.set_axis_off()
    ax.set_xlim(-0.01, 1.015)
    ax.set_ylim(0, 1)
    ax.grid(False)
    c_task, c_ref, c_mod, c_an, c_ver = "#555555", COLORS["reference"], COLORS["construction"], "#9467bd", "#2ca02c"
    _box(ax, 0.0, 0.14, 0.12, 0.68, f"task ({len(reg['tasks'])})", reg["tasks"], c_task, 18)
    _box(ax, 0.175, 0.45, 0.175, 0.37, f"references ({len(reg['references'])})",
         [f"theory.{r}" for r in reg["references"]] + ["-> Trace: every step's variables"], c_ref, 24)
    _box(ax, 0.405, 0.55, 0.235, 0.27, "hand-built constructions",
         ["compiled: " + ", ".join(reg["compiled programs"]),
          "graph search: " + ", ".join(reg["graph constructions"]),
          "other: " + (", ".join(reg["other constructions"]) or "none"), "certified: proofs/certificates"], c_mod, 36)
    _box(ax, 0.405, 0.33, 0.235, 0.16, "trained model", ["algeval train --task ANY", "(same Transformer class)"],
         COLORS["trained"], 38)
    _box(ax, 0.405, 0.12, 0.235, 0.16, "imported LLM", ["models.llama.load_llama", "(Llama checkpoints)"],
         COLORS["llm"], 38)
    _box(ax, 0.695, 0.12, 0.155, 0.70, f"analyses ({len(reg['analyses'])})", reg["analyses"], c_an, 24)
    _box(ax, 0.88, 0.30, 0.125, 0.40, "verdict", ["which of:"] + reg["verdict candidates"] + ["or none"],
         c_ver, 16)
    _arrow(ax, (0.12, 0.70), (0.175, 0.70), "sample")
    _arrow(ax, (0.35, 0.70), (0.405, 0.70), "program")
    _arrow(ax, (0.12, 0.41), (0.405, 0.41), "tokens")
    _arrow(ax, (0.12, 0.20), (0.405, 0.20), "prompts")
    for y in (0.70, 0.41, 0.20):
        _arrow(ax, (0.64, y), (0.695, y), "acts")
    _arrow(ax, (0.85, 0.50), (0.88, 0.50))
    ax.add_patch(FancyArrowPatch((0.27, 0.83), (0.77, 0.83), connectionstyle="arc3,rad=-0.18", arrowstyle="-|>",
                                 mutation_scale=11, lw=1.1, color="#444444"))
    ax.text(0.52, 0.935, "reference traces: probe labels, valid orders, layer schedules", ha="center", fontsize=7,
            color="#444444")
    ax.text(0.5, 0.015, "Every name above is read from the code at drawing time: algeval.sim.tasks.TASKS, the "
            "Trace-returning functions of algeval.theory,\nproofs.claims.MAKERS, proofs.search_claims.CONSTRUCTIONS, "
            "the modules of algeval.models.constructions, algeval.sim.analyses, verdict.ALGORITHMS.",
            ha="center", va="bottom", fontsize=6.5, color="#555555")
    fig.suptitle("AlgEval pipeline: task -> references -> construction / trained model -> analyses -> verdict")
    return fig
