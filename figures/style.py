"""The one figure style, and a deterministic save (same figure -> byte-identical PNG and PDF).

:func:`apply_style` sets matplotlib's rcParams for every figure (Agg backend,
DejaVu Sans, 9 pt text, light grid, no top/right spines); :data:`COLORS` names the
colours of the recurring roles (construction, trained model, chance, the random
control, ...), so a role has the same colour in every figure.

:func:`save` writes ``NAME.png`` and ``NAME.pdf`` atomically with the metadata
that would differ between runs removed: PNG ``Software`` (matplotlib's version)
and PDF ``CreationDate`` / ``Producer`` / ``Creator``.  With those gone the bytes
depend only on the figure's content (tested in ``tests/test_figures.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 150
WIDTH = 7.0   # inches: one full-width figure
COLORS = {
    "construction": "#1f77b4",   # hand-built models
    "bfs": "#2ca02c",
    "dfs": "#9467bd",
    "path-merging": "#1f77b4",
    "trained": "#d62728",
    "llm": "#8c564b",
    "chance": "#7f7f7f",
    "control": "#bdbdbd",
    "reference": "#ff7f0e",
    "correct": "#2ca02c",
    "competing": "#d62728",
    "target": "#000000",
    "other": "#c7c7c7",
}
MODEL_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")  # red/brown are kept for trained/LLM
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}

_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,
    "svg.hashsalt": "algeval",
    "path.simplify": False,
}


def apply_style() -> None:
    """Set the shared rcParams (idempotent)."""
    matplotlib.rcParams.update(_RC)


def figure(nrows: int = 1, ncols: int = 1, *, height: float = 3.0, width: float = WIDTH, **kw):
    """``plt.subplots`` in the shared style, with constrained layout (no overlapping labels)."""
    apply_style()
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(width, height), **kw)


def blank(*, height: float = 3.0, width: float = WIDTH):
    """An empty figure in the shared style (constrained layout), for custom grids."""
    apply_style()
    return plt.figure(figsize=(width, height), layout="constrained")


def model_color(i: int, label: str = "") -> str:
    """Colour of the ``i``-th model of a comparison (trained models red, LLMs brown, else by index)."""
    low = label.lower()
    if "trained" in low:
        return COLORS["trained"]
    if "llama" in low or "llm" in low:
        return COLORS["llm"]
    return MODEL_COLORS[i % len(MODEL_COLORS)]


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(fig, out_dir, name: str) -> list[Path]:
    """Write ``out_dir/name.png`` and ``out_dir/name.pdf`` deterministically; close ``fig``; return the paths."""
    out = Path(out_dir)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    _atomic(paths[0], lambda p: fig.savefig(p, format="png", metadata=PNG_METADATA))
    _atomic(paths[1], lambda p: fig.savefig(p, format="pdf", metadata=PDF_METADATA))
    plt.close(fig)
    return paths


def wrap(text: str, width: int = 100) -> str:
    """``text`` wrapped to lines of at most ``width`` characters (for long titles)."""
    import textwrap

    return "\n".join(textwrap.fill(t, width) for t in text.split("\n"))


def note(ax, text: str, **kw) -> None:
    """A grey note centred in ``ax`` (used where an input has nothing to show)."""
    kw = {"ha": "center", "va": "center", "fontsize": 8, "color": "#555555", "wrap": True, **kw}
    ax.text(0.5, 0.5, text, transform=ax.transAxes, **kw)
