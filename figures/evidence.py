"""Figures 4 and 5: the algorithm-specific evidence, on the analysis results of any set of models.

* :func:`fig_orders` -- order matching (:mod:`algeval.sim.analyses.orders`): per model, the
  agreement of the best-matching BFS, DFS and path-merging order with the order in which node
  representations change, beside its permutation chance level (mean, and the 95th percentile
  as a whisker) and the random-weights control; then the schedule scores (does the predicted
  *block* change the node?).
* :func:`fig_probes` -- linear probes (:mod:`algeval.sim.analyses.probes`): held-out balanced
  accuracy per layer for reach-set variables (``reach within h hops``) at hop thresholds
  ``h``, one line per model, beside the shuffled-label chance.
"""

from __future__ import annotations

import numpy as np

from algeval.figures.style import COLORS, figure, model_color, note, wrap
from algeval.sim.analyses.named import Named

ORDER_KEYS = (("order_bfs", "BFS\norder"), ("order_dfs", "DFS\norder"), ("order_path_merging", "path-merging\norder"),
              ("schedule_bfs", "BFS\nschedule"), ("schedule_path_merging", "path-merging\nschedule"))


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def fig_orders(models: dict[str, dict], task: str):
    """Grouped bars: score per (model, order/schedule), with chance (mean, q95) and control markers."""
    fig, ax = figure(height=4.0, width=8.5)
    keys = [k for k, _ in ORDER_KEYS]
    n = max(len(models), 1)
    w = 0.8 / n
    x = np.arange(len(keys))
    chance_done = ctrl_done = False
    for i, (label, res) in enumerate(models.items()):
        summ = (res.get("orders") or {}).get("summary") or {}
        xs = x - 0.4 + w * (i + 0.5)
        sc = np.array([_num((summ.get(k) or {}).get("score")) for k in keys])
        ch = np.array([_num((summ.get(k) or {}).get("chance")) for k in keys])
        q95 = np.array([_num((summ.get(k) or {}).get("chance_q95")) for k in keys])
        ct = np.array([_num((summ.get(k) or {}).get("control")) for k in keys])
        ax.bar(xs, np.nan_to_num(sc), w * 0.9, color=model_color(i, label), alpha=0.85, label=label)
        for xi, s in zip(xs, sc):
            if not np.isfinite(s):
                ax.text(xi, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=6.5, color="#444444")
        ok = np.isfinite(ch)
        ax.errorbar(xs[ok], ch[ok], yerr=[np.zeros(ok.sum()), np.maximum(q95[ok] - ch[ok], 0)], fmt="_", ms=10,
                    mew=2, color="black", capsize=2, lw=0.8,
                    label=None if chance_done else "permutation chance (mean; whisker: 95th pct.)")
        chance_done = chance_done or bool(ok.any())
        okc = np.isfinite(ct)
        ax.plot(xs[okc], ct[okc], "v", color=COLORS["chance"], ms=4,
                label=None if ctrl_done else "random-weights control")
        ctrl_done = ctrl_done or bool(okc.any())
    ax.set_xticks(x, [lab for _, lab in ORDER_KEYS])
    ax.axvline(2.5, color="#999999", lw=0.8, ls="--")
    ax.text(1.0, 1.01, "order: agreement of the best valid order", ha="center", va="bottom", fontsize=7.5,
            transform=ax.get_xaxis_transform())
    ax.text(3.5, 1.01, "block: fraction at the predicted layer", ha="center", va="bottom", fontsize=7.5,
            transform=ax.get_xaxis_transform())
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("agreement / fraction of nodes")
    h, lab = ax.get_legend_handles_labels()
    first = [i for i, t in enumerate(lab) if t in models] + [i for i, t in enumerate(lab) if t not in models]
    ax.legend([h[i] for i in first], [lab[i] for i in first], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(wrap(f"Order matching on {task}; models: {', '.join(models)}"), fontsize=10)
    ax.set_xlabel("n/a: no scored example (no pair of nodes whose representations change at distinct layers)",
                  fontsize=7, color="#555555")
    return fig


FAMILY_NAMES = {"decision.pair": "reach[u, v] within h hops (read at the decision position)",
                "decision.bwd": "v reaches the goal within h hops (decision position)",
                "decision.fwd": "decision vertex reaches v within h hops (decision position)",
                "node.bwd": "v reaches the goal within h hops (read at v's tokens)",
                "node.fwd": "decision vertex reaches v within h hops (read at v's tokens)"}


def fig_probes(models: dict[str, dict], task: str, families=("decision.pair", "node.bwd"), max_hops: int = 4):
    """Held-out balanced probe accuracy per layer; rows = reach-set variable, columns = hop threshold."""
    from matplotlib.lines import Line2D

    from algeval.figures.style import blank

    first = next((r["probes"] for r in models.values() if "accuracy" in (r.get("probes") or {})), None)
    if first is None:
        fig, ax = figure(height=2.0)
        note(ax, "no probe results")
        return fig
    acc0 = Named.from_json(first["accuracy"])
    fams = [f for f in families if f in acc0.coords["family"]] or list(acc0.coords["family"][:2])
    hops = [h for h in acc0.coords["hops"] if h <= max_hops]
    fig = blank(height=2.5 * len(fams) + 1.2, width=2.2 * len(hops) + 1.0)
    subs = np.atleast_1d(fig.subfigures(len(fams), 1))
    axes = np.array([sf.subplots(1, len(hops), sharey=True, squeeze=False)[0] for sf in subs])
    for sf, fam in zip(subs, fams):
        sf.suptitle(FAMILY_NAMES.get(fam, fam), fontsize=8.5, weight="bold")
    handles = []
    for i, (label, res) in enumerate(models.items()):
        p = res.get("probes") or {}
        if "accuracy" not in p:
            continue
        acc = Named.from_json(p["accuracy"])
        sh = Named.from_json(p["shuffled"]) if "shuffled" in p else None
        c = model_color(i, label)
        handles.append(Line2D([], [], color=c, marker="o", ms=3, label=label))
        for r, fam in enumerate(fams):
            if fam not in acc.coords["family"]:
                continue
            for j, h in enumerate(hops):
                if h not in acc.coords["hops"]:
                    continue
                ax = axes[r, j]
                a = acc.sel(family=fam, hops=h)
                layers = np.asarray(a.coords["layer"], int)
                ax.plot(layers, a.values, "-o", ms=3, color=c)
                if sh is not None:
                    ax.plot(layers, sh.sel(family=fam, hops=h).values, ":", color=c, alpha=0.7, lw=1)
    handles.append(Line2D([], [], color="#555555", ls=":", label="same model, shuffled labels (chance)"))
    for r in range(len(fams)):
        for j, h in enumerate(hops):
            ax = axes[r, j]
            ax.axhline(0.5, color=COLORS["chance"], lw=0.7)
            ax.set_ylim(0.3, 1.02)
            ax.set_title(f"h = {h}", fontsize=8.5)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("layer (-1 = embed.)", fontsize=7.5)
        axes[r, 0].set_ylabel("held-out balanced acc.")
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=7)
    fig.suptitle(wrap(f"Linear probes of reach-set variables per layer on {task}; models: {', '.join(models)}", 90),
                 fontsize=10)
    return fig
