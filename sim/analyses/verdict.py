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

    p < alpha (0.01)   and   score - chance >= margin (0.05).

**Combination.**  Per algorithm, over its items with a defined score:
``score`` and ``chance`` are the means of the item scores and chances,
``alignment`` the mean normalised excess ``(score_i - chance_i) / (1 -
chance_i)``, ``beats`` the number of items beating chance.  The one-line
verdict of an algorithm is ``supported`` when at least half of its defined
items beat chance, ``partial`` when at least one does, else ``none``.  The
model's verdict names the algorithm with the largest alignment among those
with ``beats >= 1`` (``ambiguous`` when another such algorithm is within
0.05 of it); when no item of any algorithm beats chance it is ``none``.

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

ALGORITHMS = {
    "BFS": {"orders": ("order_bfs", "schedule_bfs"), "probes": (), "onsets": ("linear",)},
    "DFS": {"orders": ("order_dfs",), "probes": (), "onsets": ()},
    "path-merging": {"orders": ("order_path_merging", "schedule_path_merging"), "probes": (),
                     "onsets": ("exponential",)},
    "value iteration": {"orders": (), "probes": ("value",), "onsets": ()},
}
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


def verdict(results: dict, alpha: float = ALPHA, margin: float = MARGIN) -> dict:
    """Algorithm-alignment table from analysis results (see the module docstring).

    ``results`` may hold ``orders`` (from :func:`~algeval.sim.analyses.orders.order_matching`),
    ``probes`` (:func:`~algeval.sim.analyses.probes.probes`), ``onsets``
    (:func:`~algeval.sim.analyses.onsets.reach_onsets`), ``attention``
    (:func:`~algeval.sim.analyses.attention.attention_to_path`) and ``causal``
    (:func:`~algeval.sim.analyses.causal.causal_tests`); missing ones leave their items out.
    Returns ``table`` (one row per algorithm), ``verdict`` (a line), ``best``, ``shared``.
    """
    osum = (results.get("orders") or {}).get("summary", {})
    psum = (results.get("probes") or {}).get("summary", {})
    nsum = (results.get("onsets") or {}).get("summary", {})
    rows = []
    for alg, spec in ALGORITHMS.items():
        items = [order_item(k, osum[k], alpha, margin) for k in spec["orders"] if k in osum]
        items += [probe_item(f"probe_{k}", psum[k], alpha, margin) for k in spec["probes"] if k in psum]
        items += [_item(f"onset_{k}", "onsets", nsum[k].get("score"), nsum[k].get("chance"), nsum[k].get("p"),
                        alpha, margin) for k in spec["onsets"] if k in nsum]
        d = [i for i in items if i["defined"]]
        n_beat = sum(i["beats"] for i in d)
        row = {"algorithm": alg, "items": items, "n_items": len(d), "beats": n_beat,
               "score": float(np.mean([i["score"] for i in d])) if d else float("nan"),
               "chance": float(np.mean([i["chance"] for i in d])) if d else float("nan"),
               "alignment": float(np.mean([i["excess"] for i in d])) if d else float("nan")}
        row["verdict"] = ("supported" if d and n_beat * 2 >= len(d) and n_beat > 0 else
                          "partial" if n_beat > 0 else "none")
        row["line"] = (f"{alg}: {row['verdict']} -- score {row['score']:.3f} vs chance {row['chance']:.3f}, "
                       f"alignment {row['alignment']:+.3f}, {n_beat}/{len(d)} items beat chance"
                       if d else f"{alg}: none -- no evidence item could be computed")
        rows.append(row)
    cands = [r for r in rows if r["beats"] > 0]
    if not cands:
        line, best = "none: no algorithm's evidence beats chance", None
    else:
        cands.sort(key=lambda r: -r["alignment"])
        best = cands[0]["algorithm"]
        close = [r["algorithm"] for r in cands[1:] if cands[0]["alignment"] - r["alignment"] < 0.05]
        line = (f"{best} (alignment {cands[0]['alignment']:+.3f}, {cands[0]['beats']}/{cands[0]['n_items']} items beat chance)"
                if not close else f"ambiguous: {' / '.join([best] + close)} (alignments within 0.05)")
    return {"table": rows, "verdict": line, "best": best, "shared": _shared(results, alpha),
            "rule": f"item beats chance iff p < {alpha} and score - chance >= {margin}; see algeval.sim.analyses.verdict"}


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
    lines = ["| algorithm | verdict | score | chance | alignment | items beating chance |",
             "|---|---|---|---|---|---|"]
    for r in v["table"]:
        lines.append(f"| {r['algorithm']} | {r['verdict']} | {_fmt(r['score'])} | {_fmt(r['chance'])} | "
                     f"{_fmt(r['alignment'], '+.3f')} | {r['beats']}/{r['n_items']} |")
    lines.append("")
    lines.append("| item | algorithm | score | chance | p | beats |")
    lines.append("|---|---|---|---|---|---|")
    for r in v["table"]:
        for i in r["items"]:
            lines.append(f"| {i['item']} | {r['algorithm']} | {_fmt(i['score'])} | {_fmt(i['chance'])} | "
                         f"{_fmt(i['p'], '.2g')} | {'yes' if i['beats'] else 'no'} |")
    return "\n".join(lines)
