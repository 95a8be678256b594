"""The algorithm-alignment table: which candidate algorithm does the evidence support?

**Evidence items.**  Each candidate algorithm owns the items whose
prediction is specific to it:

=================  ==========================================================================
algorithm          items (result -> key)
=================  ==========================================================================
BFS                orders: ``order_bfs``, ``schedule_bfs``; onsets: ``linear`` (one hop per block)
DFS                orders: ``order_dfs``
path-merging       orders: ``order_path_merging``, ``schedule_path_merging``; onsets: ``exponential``
value iteration    probes: ``value`` (only when the task's rewards are not just the goal)
=================  ==========================================================================

The onset items (:mod:`~algeval.sim.analyses.onsets`) score where the two
depth schedules *disagree*: the layer from which a vertex at distance ``d``
becomes decodable, ``c + d - 1`` (linear) or ``c + ceil(log2 d)``
(exponential).  The per-threshold probe scores ``linear`` / ``exponential``
of :mod:`~algeval.sim.analyses.probes` are reported but not counted: at
small distances the two schedules share most of their points, so those
scores do not separate BFS from path merging (on the BFS construction both
beat chance and the exponential one scored higher).

BFS counts layer-synchronous BFS in any direction: from the decision vertex
(``fwd``), from the goal over reversed edges (``bwd``; with a goal-only
reward this is also value iteration's computation, which is why ``value``
needs task rewards), or all pairs (``pair``); path merging likewise.

An item has a ``score`` in ``[0, 1]``, a ``chance`` level and a one-sided
``p``.  For order/schedule items ``chance`` is the larger of the
permutation chance and the control (random-weights) model's score, and ``p``
the larger of the permutation p-value and the paired test against the
control; for probes ``chance`` is the larger of the shuffled-label and
control-model schedule scores, each maximised like the model's (see
:mod:`~algeval.sim.analyses.probes`); for onsets it is the largest of the
random-onset null mean, the shuffled-label and the control-model scores, and
``p`` the random-onset null's tail.  An item **beats chance** iff

    p < alpha (0.01)   and   excess = score - chance >= margin (0.05).

**Separation.**  Items come in groups that score the same measurement
against different candidates (:data:`GROUPS`): the best-matching BFS, DFS
and path-merging orders of the same event times; the BFS and path-merging
schedules; the linear and exponential onset schedules.  Beating chance is
not enough: on graphs where the candidates' orders mostly coincide (the
BFS construction's balanced graphs are chains with short side branches)
every order item beats chance by a wide margin (order_bfs 0.946 vs chance
0.603, order_path_merging 0.957 vs 0.631, order_dfs 0.977 vs 0.814), so
those scores say "some search order" and not which.  An item **separates**
iff its excess exceeds the excess of every defined competitor in its group
by ``>= margin``; for order and schedule items, whose per-example scores
are known, the per-example excess difference
``(s_i - c_i) - (s_j - c_j)`` (``c`` the example's permutation chance) must
also be ``> 0`` by a one-sided paired t-test at ``p < alpha``.  An item
**counts** iff it beats chance and separates (an item alone in its group
separates trivially); items that beat chance without separating are listed
but do not count.

**Combination.**  Per algorithm, over its counted items: ``score`` and
``chance`` are the means of the item scores and chances, ``alignment`` the
mean normalised excess ``(score_i - chance_i) / (1 - chance_i)``, ``beats``
the number of counted items (``n_items``: its defined items).  The one-line
verdict of an algorithm is ``supported`` when at least half of its defined
items that are informative (all but those beating chance without
separating) count, ``partial`` when at least one counts, else ``none``.  The model's
verdict names the algorithm with the largest alignment among those with a
counted item (``ambiguous`` when another is within 0.05 of it); when no item
of any algorithm counts it is ``none`` (saying so when some items beat
chance without separating the candidates).

**Shared evidence** (reported beside the table, never counted for an
algorithm, because every candidate is compatible with it): attention to the
correct path (overall ``b`` beats the control model's, ``p < alpha`` and
``b > 0``) and the causal tests (the answer flips with the rewired edge:
mean ``LD_clean - LD_corrupt > 0``; faithfulness of attribution patching;
correlation of the heads' path preference with their ablation damage).
"""

from __future__ import annotations

import math

import numpy as np

from algeval.sim.analyses.common import paired_greater

ALGORITHMS = {
    "BFS": {"orders": ("order_bfs", "schedule_bfs"), "probes": (), "onsets": ("linear",)},
    "DFS": {"orders": ("order_dfs",), "probes": (), "onsets": ()},
    "path-merging": {"orders": ("order_path_merging", "schedule_path_merging"), "probes": (),
                     "onsets": ("exponential",)},
    "value iteration": {"orders": (), "probes": ("value",), "onsets": ()},
}
#: items that score one measurement against different candidates (module docstring: separation)
GROUPS = (("order_bfs", "order_dfs", "order_path_merging"), ("schedule_bfs", "schedule_path_merging"),
          ("onset_linear", "onset_exponential"))
ALPHA = 0.01
MARGIN = 0.05


def _f(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return x


def _item(name, kind, score, chance, p, alpha, margin) -> dict:
    score, chance, p = _f(score), _f(chance), _f(p)
    ok = all(math.isfinite(v) for v in (score, chance, p))
    beats = bool(ok and p < alpha and score - chance >= margin)
    excess = (score - chance) / (1 - chance) if ok and chance < 1 else (0.0 if ok else float("nan"))
    return {"item": name, "kind": kind, "score": score, "chance": chance, "p": p, "excess": excess,
            "beats": beats, "defined": ok}


def order_item(name: str, s: dict, alpha=ALPHA, margin=MARGIN) -> dict:
    chance = _f(s.get("chance"))
    p = _f(s.get("p_perm"))
    if s.get("control") is not None and math.isfinite(_f(s.get("control"))):
        chance = max(chance, _f(s["control"]))
        pc = _f(s.get("p_control"))
        p = max(p, pc) if math.isfinite(pc) else float("nan")
    return _item(name, "orders", s.get("score"), chance, p, alpha, margin)


def probe_item(name: str, s: dict, alpha=ALPHA, margin=MARGIN) -> dict:
    return _item(name, "probes", s.get("score"), s.get("chance"), s.get("p"), alpha, margin)


def _per_example_excess(orders: dict) -> dict:
    """``{score name: (B,) excess over the example's permutation chance}`` when the order-matching result
    carries per-example arrays (``per_example``, ``chance_per_example``), else ``{}``."""
    pe, ch = orders.get("per_example"), orders.get("chance_per_example")
    if pe is None or ch is None or not hasattr(pe, "coords") or not hasattr(ch, "coords"):
        return {}
    return {k: np.asarray(pe.values[i], float) - np.asarray(ch.values[ch.coords["score"].index(k)], float)
            for i, k in enumerate(pe.coords["score"]) if k in ch.coords["score"]}


def separation(items: dict, per_example: dict, alpha: float = ALPHA, margin: float = MARGIN) -> dict:
    """Per item name: ``{separates, margin_min, p_max, against}`` -- its excess minus each defined competitor's in
    its group (:data:`GROUPS`; mean over examples with a paired t-test where ``per_example`` has both, else the
    summary excesses), the smallest difference, the largest p and the competitors compared."""
    out = {}
    for name, it in items.items():
        group = next((g for g in GROUPS if name in g), ())
        rivals = [items[j] for j in group if j != name and j in items and items[j]["defined"]]
        diffs, ps = [], []
        for r in rivals:
            a, b = per_example.get(name), per_example.get(r["item"])
            if a is not None and b is not None:
                d, p, n = paired_greater(a, b)
                diffs.append(d)
                ps.append(p if n >= 2 else float("nan"))
            else:
                diffs.append((it["score"] - it["chance"]) - (r["score"] - r["chance"]))
        dmin = min(diffs) if diffs else float("nan")
        pmax = max(ps) if ps else float("nan")
        ok = it["defined"] and (not rivals or (dmin >= margin and (not ps or (math.isfinite(pmax) and pmax < alpha))))
        out[name] = {"separates": bool(ok), "margin_min": dmin, "p_max": pmax, "against": [r["item"] for r in rivals]}
    return out


def verdict(results: dict, alpha: float = ALPHA, margin: float = MARGIN) -> dict:
    """Algorithm-alignment table from analysis results (see the module docstring).

    ``results`` may hold ``orders`` (from :func:`~algeval.sim.analyses.orders.order_matching`),
    ``probes`` (:func:`~algeval.sim.analyses.probes.probes`), ``onsets``
    (:func:`~algeval.sim.analyses.onsets.reach_onsets`), ``attention``
    (:func:`~algeval.sim.analyses.attention.attention_to_path`) and ``causal``
    (:func:`~algeval.sim.analyses.causal.causal_tests`); missing ones leave their items out.
    Returns ``table`` (one row per algorithm; each item with ``beats``, ``separates`` and ``counts``),
    ``verdict`` (a line), ``best``, ``shared``.
    """
    orders = results.get("orders") or {}
    osum = orders.get("summary", {})
    psum = (results.get("probes") or {}).get("summary", {})
    nsum = (results.get("onsets") or {}).get("summary", {})
    per_alg, items = {}, {}
    for alg, spec in ALGORITHMS.items():
        its = [order_item(k, osum[k], alpha, margin) for k in spec["orders"] if k in osum]
        its += [probe_item(f"probe_{k}", psum[k], alpha, margin) for k in spec["probes"] if k in psum]
        its += [_item(f"onset_{k}", "onsets", nsum[k].get("score"), nsum[k].get("chance"), nsum[k].get("p"),
                      alpha, margin) for k in spec["onsets"] if k in nsum]
        per_alg[alg] = its
        items.update({i["item"]: i for i in its})
    sep = separation(items, _per_example_excess(orders), alpha, margin)
    for i in items.values():
        i.update(sep[i["item"]])
        i["counts"] = bool(i["beats"] and i["separates"])
    rows = []
    for alg, its in per_alg.items():
        d = [i for i in its if i["defined"]]
        c = [i for i in d if i["counts"]]
        loose = sum(i["beats"] and not i["separates"] for i in d)
        row = {"algorithm": alg, "items": its, "n_items": len(d), "beats": len(c), "beats_not_separating": loose,
               "score": float(np.mean([i["score"] for i in c])) if c else float("nan"),
               "chance": float(np.mean([i["chance"] for i in c])) if c else float("nan"),
               "alignment": float(np.mean([i["excess"] for i in c])) if c else float("nan")}
        row["verdict"] = "supported" if c and len(c) * 2 >= len(d) - loose else "partial" if c else "none"
        if c:
            row["line"] = (f"{alg}: {row['verdict']} -- score {row['score']:.3f} vs chance {row['chance']:.3f}, "
                           f"alignment {row['alignment']:+.3f}, {len(c)}/{len(d)} items count")
        elif d:
            row["line"] = (f"{alg}: none -- 0/{len(d)} items count"
                           + (f" ({loose} beat chance without separating the candidates)" if loose else ""))
        else:
            row["line"] = f"{alg}: none -- no evidence item could be computed"
        rows.append(row)
    cands = [r for r in rows if r["beats"] > 0]
    if not cands:
        loose = sum(r["beats_not_separating"] for r in rows)
        line, best = ("none: no algorithm's evidence beats chance" if not loose else
                      f"none: {loose} item(s) beat chance but none separates the candidates"), None
    else:
        cands.sort(key=lambda r: -r["alignment"])
        best = cands[0]["algorithm"]
        close = [r["algorithm"] for r in cands[1:] if cands[0]["alignment"] - r["alignment"] < 0.05]
        line = (f"{best} (alignment {cands[0]['alignment']:+.3f}, {cands[0]['beats']}/{cands[0]['n_items']} items count)"
                if not close else f"ambiguous: {' / '.join([best] + close)} (alignments within 0.05)")
    return {"table": rows, "verdict": line, "best": best, "shared": _shared(results, alpha),
            "rule": (f"an item counts iff it beats chance (p < {alpha}, score - chance >= {margin}) and separates "
                     f"(excess >= every rival's in its group + {margin}, paired p < {alpha}); "
                     "see algeval.sim.analyses.verdict")}


def _shared(results: dict, alpha: float) -> dict:
    out = {}
    att = results.get("attention")
    if att:
        o = att["overall"]
        vc = att.get("vs_control")
        yes = o["b"] > 0 and _f(o["p"]) < alpha and (vc is None or _f(vc.get("p")) < alpha)
        out["attention_to_path"] = {"b": o["b"], "p": o["p"], "b_control": None if vc is None else vc["b_control"],
                                    "p_vs_control": None if vc is None else vc["p"], "goal_directed": bool(yes),
                                    "layers_positive": att["layers_positive"], "layers_negative": att["layers_negative"]}
    ca = results.get("causal")
    if ca:
        d = _f(ca.get("ld_clean_mean")) - _f(ca.get("ld_corrupt_mean"))
        out["causal"] = {"ld_difference": d, "attribution_vs_activation_r": ca.get("attribution_vs_activation_r"),
                         "path_heads": ca.get("path_heads")}
    return out


def _fmt(x, spec=".3f") -> str:
    x = _f(x)
    return format(x, spec) if math.isfinite(x) else "-"


def format_table(v: dict) -> str:
    """The table as markdown."""
    lines = ["| algorithm | verdict | score | chance | alignment | items counted |",
             "|---|---|---|---|---|---|"]
    for r in v["table"]:
        lines.append(f"| {r['algorithm']} | {r['verdict']} | {_fmt(r['score'])} | {_fmt(r['chance'])} | "
                     f"{_fmt(r['alignment'], '+.3f')} | {r['beats']}/{r['n_items']} |")
    lines.append("")
    lines.append("| item | algorithm | score | chance | p | beats chance | separates (min excess diff, p) | counts |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in v["table"]:
        for i in r["items"]:
            sep = ("-" if not i.get("against") else
                   f"{'yes' if i.get('separates') else 'no'} ({_fmt(i.get('margin_min'), '+.3f')}, "
                   f"{_fmt(i.get('p_max'), '.2g')})")
            lines.append(f"| {i['item']} | {r['algorithm']} | {_fmt(i['score'])} | {_fmt(i['chance'])} | "
                         f"{_fmt(i['p'], '.2g')} | {'yes' if i['beats'] else 'no'} | {sep} | "
                         f"{'yes' if i.get('counts') else 'no'} |")
    return "\n".join(lines)
