"""Figure 10: every certificate in ``proofs/certificates/`` as one table.

One row per claim (the float32 and float64 certificates of a claim share a row): the
construction and sizes, its resource formulas (``resources[*].formula``, sympy strings as
certified) with the built values, the domain, method and number of inputs checked, the result
per dtype, and the smallest decoding margin.  The certificates present at drawing time are
read, never a fixed list.
"""

from __future__ import annotations

import re
import textwrap

from algeval.figures.style import figure

_COLS = (("claim", 0.0, 22), ("resources: formula = built", 0.16, 50), ("domain", 0.47, 54),
         ("check", 0.77, 18), ("result", 0.885, 12), ("margin", 0.955, 8))


def _pretty(formula: str, limit: int = 70) -> str:
    """A readable form of a sympy formula string; longer than ``limit`` characters: cut, ending in '...'."""
    s = str(formula).replace("**", "^").replace("*", "")
    s = re.sub(r"ceiling\(log\((\w+)\)/log\(2\)\)", r"ceil(log2 \1)", s)
    s = re.sub(r"Piecewise\(\((.+?), Eq\((\w+), (\d+)\)\), \((.+?), True\)\)", r"[\2=\3: \1, else \4]", s)
    s = re.sub(r"floor\(log\((\w+)\)/log\(2\)\)", r"floor(log2 \1)", s)
    return s if len(s) <= limit else s[:limit - 4].rstrip() + " ..."


def rows(certs: list[dict]) -> list[dict]:
    """One row per claim name (``-float64`` suffix merged), sorted by name; files without ``passed`` are skipped."""
    out: dict[str, dict] = {}
    for c in certs:
        if "passed" not in c:  # not a claim's certificate (e.g. a min-beta bisection report)
            continue
        name = str(c.get("claim") or c.get("_file", "?")).removesuffix("-float64")
        row = out.setdefault(name, dict(name=name, results={}, cert=c))
        dt = c.get("dtype", "?")
        ok = c.get("passed")
        row["results"][dt] = "pass" if ok else ("FAIL" if ok is False else "?")
        if dt == "float32" or "float32" not in row["results"]:
            row["cert"] = c
    return [out[k] for k in sorted(out)]


def fig_certificates(certs: list[dict]):
    """The certificate table (see the module docstring)."""
    R = rows(certs)
    cells = []
    for r in R:
        c = r["cert"]
        res = c.get("resources") or {}
        order = [k for k in ("layers", "heads", "d_model", "d_mlp") if k in res] + \
                [k for k in res if k not in ("layers", "heads", "d_model", "d_mlp")]
        rl = [f"{k}: {_pretty(res[k].get('formula', '?'))} = {res[k].get('built', '?')}" for k in order]
        sizes = ", ".join(f"{k}={v}" for k, v in (c.get("sizes") or {}).items() if v is not None)
        method = c.get("method", "?")
        n = c.get("checked")
        check = f"{method}\n{n:,} inputs" if isinstance(n, int) else method
        result = "\n".join(f"f{d[-2:]}: {v}" for d, v in sorted(r["results"].items()))
        if c.get("resources_match") is False:
            result += "\nresources differ"
        m = c.get("min_decoding_margin")
        texts = [f"{r['name']}\n({sizes})" if sizes else r["name"], "\n".join(rl), str(c.get("domain", "?")),
                 check, result, "-" if m is None else f"{m:.3g}"]
        wrapped = ["\n".join(textwrap.fill(line, w) for line in t.split("\n")) for t, (_, _, w) in zip(texts, _COLS)]
        cells.append((wrapped, r))
    heights = [max(t.count("\n") + 1 for t in w) for w, _ in cells]
    line_h = 0.108  # inches per text line at 6.5 pt
    total = sum(heights) * line_h + len(cells) * 0.08 + 1.1
    fig, ax = figure(height=max(total, 2.0), width=10.0, layout=None)
    fig.subplots_adjust(0.01, 0.005, 0.99, 1 - 0.75 / max(total, 2.0))
    ax.set_axis_off()
    ax.grid(False)
    H = sum(heights) * line_h + len(cells) * 0.08 + 0.25
    ax.set_xlim(0, 1)
    ax.set_ylim(H, 0)
    for name, x, _ in _COLS:
        ax.text(x, 0.05, name, fontsize=7.5, weight="bold", va="top")
    y = 0.25
    ax.axhline(0.22, color="#333333", lw=0.8)
    for i, ((texts, r), h) in enumerate(zip(cells, heights)):
        if i % 2:
            ax.axhspan(y - 0.03, y + h * line_h + 0.05, color="#f0f0f0", zorder=0)
        failed = any(v != "pass" for v in r["results"].values())
        for t, (_, x, _) in zip(texts, _COLS):
            ax.text(x, y, t, fontsize=6.5, va="top", family="DejaVu Sans", linespacing=1.15,
                    color="#b00000" if failed else "black")
        y += h * line_h + 0.08
    n_fail = sum(any(v != "pass" for v in r["results"].values()) for _, r in cells)
    other = sorted(c.get("_file", "?") for c in certs if "passed" not in c)
    title = (f"Certificates: {len(cells)} claims from {len(certs) - len(other)} files in proofs/certificates/, "
             f"{n_fail} with a failure")
    if other:
        title += f"\n({len(other)} files without a pass/fail result left out: {', '.join(other)})"
    fig.suptitle(title, y=1 - 0.12 / max(total, 2.0), va="top", fontsize=10)
    return fig
