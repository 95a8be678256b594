"""Figures 2 and 3: the case study, on the analysis results of any set of models.

Both functions take ``models = {label: analysis}`` where an analysis is what
:func:`algeval.figures.inputs.load_analysis` returns for a directory written by
``algeval analyze`` (``results.json`` + ``arrays.npz`` + optional ``roles.npz``), and a
``task`` string naming the task the models were analysed on (it goes into the title).

* :func:`fig_attention` -- per layer, the OLS slope ``b`` (mean attention weight from the
  decision position on a correct-path node token minus that on a competing-path token) with
  its 95% confidence interval, beside the random-weights control; one panel per model.
* :func:`fig_representations` -- per model, 2-D PCA of node-token representations at up to
  five layers (coloured by the vertex's role), the goal-competitor distance per layer
  (target to nearest competing vertex, divided by the median node distance) and the cosine
  similarity of a node's representation before and after each block.
"""

from __future__ import annotations

import numpy as np

from algeval.figures.inputs import ROLES
from algeval.figures.style import COLORS, blank, figure, model_color, note, wrap
from algeval.sim.analyses.named import Named

ROLE_COLORS = {"other": COLORS["other"], "decision": "#1f77b4", "correct path": COLORS["correct"],
               "competing": COLORS["competing"], "target": COLORS["target"]}


def _layer_label(l) -> str:
    return "embed" if int(l) == -1 else str(int(l))


def fig_attention(models: dict[str, dict], task: str):
    """Per-layer attention to correct- vs competing-path node tokens, with 95% CIs (see module docstring)."""
    n = max(len(models), 1)
    fig, axes = figure(1, n, height=3.2, width=min(3.3 * n + 0.6, 10.5), sharey=True)
    axes = np.atleast_1d(axes)
    for i, (ax, (label, res)) in enumerate(zip(axes, models.items())):
        att = res.get("attention") or {}
        if "per_layer" not in att:
            note(ax, "no attention results")
            ax.set_title(label)
            continue
        pl = Named.from_json(att["per_layer"])
        layers = np.asarray(pl.coords["layer"], int)
        st = pl.coords["stat"]

        def col(p, s):
            return p.values[:, st.index(s)]

        b, lo, hi = col(pl, "b"), col(pl, "ci_lo"), col(pl, "ci_hi")
        c = model_color(i, label)
        ax.errorbar(layers, b, yerr=[b - lo, hi - b], fmt="-o", ms=4, capsize=3, color=c, label="model")
        if "control" in att and "per_layer" in att["control"]:
            cp = Named.from_json(att["control"]["per_layer"])
            cb = col(cp, "b")
            ax.errorbar(layers + 0.15, cb, yerr=[cb - col(cp, "ci_lo"), col(cp, "ci_hi") - cb], fmt="-s", ms=3,
                        capsize=2, color=COLORS["control"], label="random-weights control")
        ax.axhline(0, color="#333333", lw=0.7)
        ax.set_xticks(layers)
        ax.set_xlabel("layer (attention pattern of block l)")
        ov = att.get("overall", {})
        acc = res.get("accuracy")
        ax.set_title(f"{label}\n(accuracy {acc:.0%}; overall b = {ov.get('b', float('nan')):.3f})"
                     if acc is not None else label, fontsize=9)
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("b = attention on correct - on competing\n(weight per node token, 95% CI)")
    fig.suptitle(wrap(f"Attention to the correct path per layer on {task}; models: {', '.join(models) or 'none'}", 80))
    return fig


def _pick_layers(layers: list, k: int = 5) -> list[int]:
    """Indices of up to ``k`` layers, evenly spaced, always the first and the last."""
    n = len(layers)
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def _tick_layers(ax, layers) -> None:
    layers = [int(l) for l in layers]
    ax.set_xticks(layers, [_layer_label(l) for l in layers])


def fig_representations(models: dict[str, dict], task: str, *, max_points: int = 1500, n_layers: int = 5):
    """PCA of node representations at up to ``n_layers`` layers per model, goal-competitor distance, cosines."""
    names = list(models)
    fig = blank(height=1.9 * len(names) + 3.0, width=10.0)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.9 * len(names), 2.6])
    grid = top.subplots(max(len(names), 1), n_layers, squeeze=False)
    rng = np.random.default_rng(0)
    handles = {}
    for r, label in enumerate(names):
        res = models[label]
        arr = res.get("arrays", {})
        row = grid[r]
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        if "geometry.pca" not in arr:
            for ax in row:
                ax.set_axis_off()
            note(row[n_layers // 2], f"{label}: no PCA arrays (arrays.npz) in its analysis directory")
            continue
        pca = arr["geometry.pca"]  # (layer, node, 2)
        nodes = arr["geometry.pca_nodes"]  # (node, [example, vertex])
        ex = Named.from_json(res["geometry"]["pca_explained"])
        layers, expl = ex.coords["layer"], ex.values
        roles = res.get("roles")
        code = (roles["role"][nodes[:, 0], nodes[:, 1]].astype(int) if roles is not None
                else np.zeros(len(nodes), int))
        idx = np.arange(len(nodes))
        if len(idx) > max_points:
            idx = np.sort(rng.choice(idx, max_points, replace=False))
        order = idx[np.argsort(code[idx], kind="stable")]  # draw 'other' first, targets last
        picked = _pick_layers(layers, n_layers)
        for j, ax in enumerate(row):
            if j >= len(picked):
                ax.set_axis_off()
                continue
            li = picked[j]
            for rc in np.unique(code[order]):
                sel = order[code[order] == rc]
                name = ROLES[rc]
                h = ax.scatter(pca[li, sel, 0], pca[li, sel, 1], s=4 if rc == 0 else 6, lw=0,
                               color=ROLE_COLORS[name], alpha=0.35 if rc == 0 else 0.6)
                handles.setdefault(name, h)
            lab = "embedding" if int(layers[li]) == -1 else f"after layer {int(layers[li])}"
            ax.set_title(f"{lab} ({np.nansum(expl[li]):.0%} var.)", fontsize=7.5)
            ax.set_xlabel("PC 1", fontsize=7, labelpad=1)
            if j == 0:
                ax.set_ylabel(f"{label}\nPC 2", fontsize=7.5)
    if handles:
        top.legend(list(handles.values()), [f"{k} vertex" for k in handles], loc="outside lower center", ncol=5,
                   fontsize=7, markerscale=2.5)
    a, b = bottom.subplots(1, 2)
    for i, label in enumerate(names):
        g = models[label].get("geometry") or {}
        c = model_color(i, label)
        if "goal_competitor_rel_mean" in g:
            gc = Named.from_json(g["goal_competitor_rel_mean"])
            x = np.asarray(gc.coords["layer"], int)
            a.plot(x, gc.values, "-o", ms=3, color=c, label=label)
            if len(x) >= len(a.get_xticks()) or i == 0:
                _tick_layers(a, x)
        if "consecutive_cosine_mean" in g:
            cc = Named.from_json(g["consecutive_cosine_mean"])
            x = [int(t.split("->")[1]) for t in cc.coords["transition"]]  # block l: layer l-1 (or embedding) -> l
            b.plot(x, cc.values, "-o", ms=3, color=c, label=label)
    a.set_xlabel("layer")
    a.set_ylabel("target-competitor distance\n/ median node distance")
    a.set_title("goal-competitor distance per layer", fontsize=8.5)
    a.legend(fontsize=7)
    b.xaxis.get_major_locator().set_params(integer=True)
    b.set_xlabel("block l (cosine between the input and output of block l)")
    b.set_ylabel("cosine similarity")
    b.set_title("consecutive-layer similarity of node representations", fontsize=8.5)
    b.legend(fontsize=7)
    fig.suptitle(wrap(f"Node-token representations on {task}; models: {', '.join(names)}", 110), fontsize=10)
    return fig
