"""Figures 6-9: the training experiments (:mod:`algeval.sim.experiments`), one function each.

Each function takes the experiment's saved JSON (``results/<name>/<scale>.json``, the whole
document: ``settings`` + ``results``) and returns a matplotlib figure.  Nothing is recomputed
except the idealised-learner curves of figure 8, which are evaluated from the sympy formulas
the experiment saved (``formula_coverage``, ``formula_error``) on a dense grid of sizes.
"""

from __future__ import annotations

import math

import numpy as np

from algeval.figures.style import COLORS, MODEL_COLORS, figure, note

THRESHOLD_STYLE = dict(color=COLORS["chance"], ls=":", lw=1)
SERIES = ("#17becf", "#9467bd", "#bcbd22", "#e377c2", "#8c564b")  # lookaheads / k values (not model roles)


def _scale(doc: dict) -> str:
    return doc.get("scale", "?")


def fig_depth_threshold(doc: dict):
    """Smallest depth reaching 99% against lookahead D: each trained seed vs the construction depths.

    Left: ``min{L : acc_seed(L, D) >= 0.99}`` per seed (open triangles at the top when no
    tested depth reaches it), beside the path-merging depth ``ceil(log2 D) + 3`` and the BFS
    depth ``max(D, 2) + 2`` (``proofs.search_claims.RESOURCES``, as saved per D).
    Right: held-out accuracy on lookahead-D prompts against depth (line: best seed; dots: seeds).
    """
    r = doc["results"]
    thr = r.get("threshold", 0.99)
    depths = [int(L) for L in r["depths"]]
    rows = {int(D): row for D, row in r["lookaheads"].items()}
    Ds = sorted(rows)
    fig, (a, b) = figure(1, 2, height=4.2)
    pm = [rows[D]["construction_layers"]["path-merging"] for D in Ds]
    bfs = [rows[D]["construction_layers"]["bfs"] for D in Ds]
    from algeval.figures.certificates import _pretty
    from algeval.proofs.search_claims import RESOURCES

    a.plot(Ds, pm, "-s", color=COLORS["path-merging"],
           label=f"path-merging construction: {_pretty(RESOURCES['path-merging']['layers'])}")
    a.plot(Ds, bfs, "-D", color=COLORS["bfs"], label=f"BFS construction: {_pretty(RESOURCES['bfs']['layers'])}")
    top = max(depths + pm + bfs) + 1
    seen_reached = seen_not = False
    for D in Ds:
        row = rows[D]
        if not row["posed"]:
            a.annotate("not posed", (D, 0.6), ha="center", fontsize=7, color="#666666", rotation=90, va="bottom")
            continue
        per = row["acc_per_depth"]
        n_seeds = max(len(v) for v in per.values())
        for s in range(n_seeds):
            hit = [int(L) for L, acc in per.items() if s < len(acc) and acc[s] >= thr]
            dx = (s - (n_seeds - 1) / 2) * 0.06 * D
            if hit:
                a.plot(D + dx, min(hit), "o", color=COLORS["trained"], ms=6,
                       label=None if seen_reached else "trained seed: smallest depth reaching 99%")
                seen_reached = True
            else:
                a.plot(D + dx, top, "^", mfc="none", color=COLORS["trained"], ms=6,
                       label=None if seen_not else f"trained seed: not reached at depth <= {max(depths)}")
                seen_not = True
    a.axhline(max(depths) + 0.5, color="#999999", lw=0.6, ls="--")
    a.annotate(f"deepest trained model: {max(depths)} layers", (Ds[0], max(depths) + 0.6), ha="left", va="bottom",
               fontsize=7, color="#666666")
    a.set_xscale("log", base=2)
    a.set_xticks(Ds, [str(D) for D in Ds])
    a.set_ylim(0, top + 1.5)
    a.set_xlabel("lookahead D (hops from start to goal)")
    a.set_ylabel("depth (layers)")
    a.set_title("(a) depth needed for 99%")
    a.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7)
    posed = [D for D in Ds if rows[D]["posed"]]
    for i, D in enumerate(posed):
        per = rows[D]["acc_per_depth"]
        Ls = sorted(int(L) for L in per)
        c = SERIES[i % len(SERIES)]
        best = [max(per[str(L)]) if per[str(L)] else np.nan for L in Ls]
        b.plot(Ls, best, "-", color=c, label=f"D = {D} (best seed)")
        for L in Ls:
            b.plot([L] * len(per[str(L)]), per[str(L)], ".", color=c, alpha=0.6)
    b.axhline(thr, **THRESHOLD_STYLE, label=f"{thr:.0%} threshold")
    b.set_ylim(0, 1.02)
    b.set_xticks(depths)
    b.set_xlabel("depth (layers)")
    b.set_ylabel("held-out exact-match accuracy")
    b.set_title("(b) accuracy at lookahead D (dots: seeds)")
    b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7, ncol=2)
    t = r["task"]
    fig.suptitle(f"Depth threshold: trained vs constructions (search, {t['distribution']} graphs, "
                 f"n = {t['max_vertices']}; {_scale(doc)} scale)")
    return fig


def fig_khop(doc: dict):
    """k-hop induction error against depth for each k, with the ``floor(log2 k) + 2`` depth line per k."""
    r = doc["results"]
    fig, ax = figure(height=3.4, width=7.0)
    depths = [int(L) for L in r["depths"]]
    for i, (k, row) in enumerate(sorted(r["error"].items(), key=lambda kv: int(kv[0]))):
        c = SERIES[i % len(SERIES)]
        Ls = sorted(int(L) for L in row)
        ax.plot(Ls, [row[str(L)]["error_mean"] for L in Ls], "-o", color=c, ms=4, label=f"k = {k} (mean of seeds)")
        for L in Ls:
            e = row[str(L)]["error_per_seed"]
            ax.plot([L] * len(e), e, ".", color=c, alpha=0.5)
        bound = math.floor(math.log2(int(k))) + 2
        ax.axvline(bound + 0.04 * (i - 1), color=c, ls="--", lw=1,
                   label=f"k = {k}: depth floor(log2 k) + 2 = {bound}")
    ref = r.get("sanford_k4_error") or {}
    if ref:
        Ls = sorted(int(L) for L in ref)
        ax.plot(Ls, [ref[str(L)] for L in Ls], "kx", ms=7, mew=1.5, label="k = 4, Sanford et al. (2024)")
    ax.set_xticks(sorted(set(depths) | {int(L) for L in ref}))
    ax.set_ylim(0, None)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("held-out error (1 - accuracy)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    t = r["task"]
    fig.suptitle(f"k-hop induction: error vs depth (alphabet {t['alphabet']}, length {t['seq_len']}; "
                 f"{_scale(doc)} scale)")
    return fig


def fig_sample_efficiency(doc: dict):
    """Held-out accuracy against training-set size, with the coverage and Occam reference curves."""
    import sympy as sp

    r = doc["results"]
    ref = r["reference"]
    cp, oc = ref["coupon"], ref["occam"]
    sizes = np.array([row["size"] for row in r["trained"]], float)
    fig, ax = figure(height=3.6, width=7.0)
    hi = max(oc.get("examples_for_99", sizes.max()) * 3, sizes.max() * 3)
    grid = np.logspace(0, math.log10(hi), 400)
    syms = {k: sp.Symbol(k, positive=True) for k in ("N", "q", "R", "P", "b", "delta", "epsilon")}

    def parse(expr):
        return sp.sympify(expr, locals=syms)

    sub = {syms["q"]: cp["q_per_example"], syms["R"]: cp["rules"], syms["delta"]: oc["delta"],
           syms["b"]: oc["bits"], syms["P"]: oc["parameters_nonzero"]}
    N = syms["N"]

    def curve(expr):
        f = sp.lambdify(N, parse(expr).subs(sub), "numpy")
        return np.broadcast_to(f(grid), grid.shape).astype(float)

    ax.plot(grid, np.clip(curve(cp["formula_coverage"]), 0, 1), color=COLORS["reference"],
            label="coverage: P(a given vertex-pair rule seen) = 1 - (1 - q)^N")
    ax.plot(grid, np.clip(curve(cp["formula_all_covered_lower"]), 0, 1), color=COLORS["reference"], ls="--",
            label="P(every rule seen) >= 1 - R (1 - q)^N")
    occ = 1 - np.clip(curve(oc["formula_error"]), 0, 1)
    ax.plot(grid, occ, color=COLORS["construction"],
            label=f"Occam accuracy >= 1 - (b P ln2 + ln 1/delta) / N  (P = {oc['parameters_nonzero']}, b = {oc['bits']})")
    ax.axvline(oc["examples_for_99"], color=COLORS["construction"], ls=":", lw=1)
    ax.annotate(f"Occam: 99% at N = {oc['examples_for_99']:.2g}", (oc["examples_for_99"], 0.5), rotation=90,
                ha="right", va="center", fontsize=7, color=COLORS["construction"])
    mean = [row["acc_mean"] for row in r["trained"]]
    ax.plot(sizes, mean, "-o", color=COLORS["trained"], ms=4, label="trained transformer (mean of seeds; dots: seeds)")
    for row in r["trained"]:
        ax.plot([row["size"]] * len(row["acc_per_seed"]), row["acc_per_seed"], ".", color=COLORS["trained"],
                alpha=0.5)
    ax.axhline(0.99, **THRESHOLD_STYLE)
    ax.set_xscale("log")
    ax.set_xlim(1, hi)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("training-set size N (examples)")
    ax.set_ylabel("held-out accuracy / probability")
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=1)
    t = r["task"]
    ax.set_title(f"Sample efficiency (search, {t['distribution']} graphs, n = {t['max_vertices']}, "
                 f"{r['n_layers']} layers; {_scale(doc)} scale)")
    return fig


def fig_lookahead_generalization(doc: dict):
    """Heatmaps of accuracy by test lookahead: rows = training distribution, panels = test distribution."""
    r = doc["results"]
    table = r["table"]
    trained = [t for t in ("naive", "balanced") if t in table] + [t for t in table if t not in ("naive", "balanced")]
    tested = list(next(iter(table.values())))
    fig, axes = figure(1, len(tested), height=2.6, width=7.5)
    axes = np.atleast_1d(axes)
    im = None
    for ax, te in zip(axes, tested):
        las = sorted({int(k) for tr in trained for k in table[tr][te]["by_lookahead"]})
        M = np.full((len(trained), len(las)), np.nan)
        for i, tr in enumerate(trained):
            for j, D in enumerate(las):
                cell = table[tr][te]["by_lookahead"].get(str(D))
                if cell:
                    M[i, j] = cell["acc"]
                    ax.text(j, i, f"{cell['acc']:.0%}\nn={cell['n']}", ha="center", va="center", fontsize=7,
                            color="white" if cell["acc"] < 0.6 else "black")
        im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(las)), [str(D) for D in las])
        ax.set_yticks(range(len(trained)), trained)
        ax.grid(False)
        ax.set_xlabel("test lookahead D (hops)")
        ax.set_ylabel("trained on")
        ax.set_title(f"tested on {te} graphs")
    fig.colorbar(im, ax=list(axes), label="held-out accuracy (best seed)", shrink=0.9)
    fig.suptitle(f"Lookahead generalization: naive vs balanced training (n = {r['max_vertices']}, "
                 f"{r['n_layers']} layers; {_scale(doc)} scale)")
    return fig


def fig_inference_compute(doc: dict):
    """Accuracy by lookahead of a looped model run for r' iterations (trained at r)."""
    r = doc["results"]
    fig, ax = figure(height=3.2, width=6.0)
    its = sorted(r["iterations"], key=int)
    las = sorted({int(k) for v in r["iterations"].values() for k in v["by_lookahead"]})
    for i, rp in enumerate(its):
        v = r["iterations"][rp]["by_lookahead"]
        ax.plot(las, [v[str(D)]["acc"] if str(D) in v else np.nan for D in las], "-o", ms=4,
                color=SERIES[i % len(SERIES)],
                label=f"r' = {rp} iterations (construction reaches D <= {2 ** int(rp)})")
    ax.axvline(r["trained_lookahead"] + 0.5, color="#999999", ls="--", lw=0.8)
    x0 = r["trained_lookahead"] + 0.5
    ax.annotate(f"trained on D <= {r['trained_lookahead']}  ", (x0, 0.97), ha="right", fontsize=7, color="#555555")
    ax.annotate("  beyond the training lookahead", (x0, 0.97), ha="left", fontsize=7, color="#555555")
    ax.set_xticks(las)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("test lookahead D (hops)")
    ax.set_ylabel("held-out accuracy (best seed)")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"Inference compute: looped model trained at r = {r['train_iterations']} ({_scale(doc)} scale)")
    if not las:
        note(ax, "no evaluations")
    return fig
