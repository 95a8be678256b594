"""CogEval with a language model: prompts, greedy answers, accuracy per graph and condition.

Conditions (the CogEval paper's), on each packaged graph:

* ``valuePath``   the graph's own value-path queries; correct first rooms =
  :func:`~algeval.theory.value_path.value_path_first_steps` (search cutoff from the query);
* ``shortest-1``, ``shortest-2``, ``shortest-3``  start/goal pairs ``(s, g)``
  with hop distance ``D[s, g] = 1, 2, 3`` (:func:`~algeval.theory.graph.hop_distances`
  of the edges), and ``shortest-max`` at the graph's largest finite
  distance; correct first rooms = :func:`~algeval.theory.shortest_path.next_hops`.
  Up to ``pairs`` pairs per condition are drawn without replacement from
  the sorted list of all pairs, by ``numpy.random.default_rng([seed, crc32(graph), condition])``,
  so the choice is deterministic per seed and independent of the other
  graphs/conditions asked for.  A graph with no pair at a distance has no
  example there (``total`` 0, ``accuracy`` None).

Every example relabels the rooms: ``n`` distinct labels drawn from
``1..max_label``.  The prompt is :func:`algeval.sim.tasks.cogeval.prompt`
(our wording; it asks for the first room) followed by ``"\\nAnswer:"``.
With ``route=True`` shortest-path examples use :func:`shortest_path_prompt`,
which asks for the whole route, scored against every shortest path of
:func:`~algeval.theory.shortest_path.shortest_paths`.

Answer parsing (:data:`ANSWER_RE` = ``\\d+``): in the generated text (after
its first ``"Answer:"``, if it repeats one), the **first** run of digits is
the room; for a route, every run of digits on the first non-empty line, in
order.  No number -> wrong.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from dataclasses import dataclass

import numpy as np

from algeval.errors import ParameterError, check_int_range
from algeval.sim.tasks.cogeval import CogevalGraph, CogevalQuery, load_cogeval_graphs, prompt
from algeval.theory.graph import hop_distances
from algeval.theory.shortest_path import next_hops, shortest_paths
from algeval.theory.value_path import value_path_first_steps

CONDITIONS = ("valuePath", "shortest-1", "shortest-2", "shortest-3", "shortest-max")
ANSWER_RE = re.compile(r"\d+")
SUFFIX = "\nAnswer:"


def parse_answer(text: str) -> int | None:
    """The first room number of a reply (see the module docstring), or None."""
    m = ANSWER_RE.search(_after_answer(text))
    return int(m.group()) if m else None


def parse_route(text: str) -> list[int]:
    """Every room number on the first non-empty line of a reply, in order."""
    lines = [ln for ln in _after_answer(text).splitlines() if ln.strip()]
    return [int(x) for x in ANSWER_RE.findall(lines[0])] if lines else []


def _after_answer(text: str) -> str:
    return text.split("Answer:", 1)[1] if "Answer:" in text else text


def shortest_path_prompt(graph: CogevalGraph, start: int, goal: int, labels=None) -> str:
    """The graph as :func:`prompt` describes it, then a request for the whole shortest route."""
    name = [str(x) for x in (graph.nodes if labels is None else labels)]
    q = CogevalQuery("shortest-path", start, goal, (), ())
    rooms = prompt(graph, q, labels).rsplit("\n", 1)[0]  # the description, without prompt's question
    return (f"{rooms}\nYou stand in room {name[start]} and want to get to room {name[goal]} through as few "
            "doors as possible. List the rooms of your route in order, starting with "
            f"room {name[start]} and ending with room {name[goal]}, separated by commas.")


def select_pairs(graph: CogevalGraph, condition: str, pairs: int, seed: int) -> list[tuple[int, int]]:
    """``pairs`` (start, goal) pairs of a shortest-path condition, deterministic per ``seed``."""
    D = hop_distances(graph.adj)
    k = int(D.max()) if condition == "shortest-max" else int(condition.rsplit("-", 1)[1])
    cands = sorted((int(s), int(g)) for s, g in zip(*np.nonzero(D == k)) if k > 0)
    if not cands:
        return []
    rng = np.random.default_rng([seed, zlib.crc32(graph.name.encode()), CONDITIONS.index(condition)])
    pick = rng.choice(len(cands), size=min(pairs, len(cands)), replace=False)
    return [cands[i] for i in sorted(pick)]


@dataclass(frozen=True)
class Example:
    graph: str
    condition: str
    start: int
    goal: int | None
    labels: tuple[int, ...]  # labels[i]: the number room i is called in this example
    prompt: str
    answers: tuple  # correct first-room labels, or correct routes (tuples of labels) when route
    route: bool = False

    def score(self, text: str) -> tuple[object, bool]:
        """``(parsed answer, correct)`` for the model's reply ``text``."""
        if self.route:
            r = tuple(parse_route(text))
            return list(r), r in self.answers
        a = parse_answer(text)
        return a, a in self.answers


def build_examples(graphs=None, conditions=CONDITIONS, pairs: int = 3, relabelings: int = 1, seed: int = 0,
                   max_label: int = 99, route: bool = False) -> list[Example]:
    """Every example of the requested graphs (names; default all six) and conditions."""
    allg = load_cogeval_graphs()
    graphs = list(allg) if graphs is None else list(graphs)
    for g in graphs:
        if g not in allg:
            raise ParameterError("graphs", g, f"unknown graph; known: {', '.join(allg)}")
    for c in conditions:
        if c not in CONDITIONS:
            raise ParameterError("conditions", c, f"unknown condition; known: {', '.join(CONDITIONS)}")
    check_int_range("pairs", pairs, 1)
    check_int_range("relabelings", relabelings, 1)
    check_int_range("max_label", max_label, max((allg[g].n for g in graphs), default=1))
    out = []
    for gname in graphs:
        g = allg[gname]
        rng = np.random.default_rng([seed, zlib.crc32(gname.encode())])
        for cond in conditions:
            if cond == "valuePath":
                qs = [(q, value_path_first_steps(g.adj, g.rewards, q.start, q.max_steps))
                      for q in g.queries if q.kind == "value-path"]
            else:
                qs = [(CogevalQuery("shortest-path", s, t, (), ()), next_hops(g.adj, s, t))
                      for s, t in select_pairs(g, cond, pairs, seed)]
            for q, first in qs:
                if not first:
                    continue  # staying put is optimal: no first room to name
                for _ in range(relabelings):
                    lab = tuple(int(x) for x in rng.choice(np.arange(1, max_label + 1), g.n, replace=False))
                    if route and q.kind == "shortest-path":
                        text = shortest_path_prompt(g, q.start, q.goal, lab)
                        ans = tuple(tuple(lab[v] for v in p) for p in shortest_paths(g.adj, q.start, q.goal).answer)
                    else:
                        text, ans = prompt(g, q, lab), tuple(lab[v] for v in first)
                    out.append(Example(gname, cond, q.start, q.goal, lab, text + SUFFIX, ans,
                                       route and q.kind == "shortest-path"))
    return out


def evaluate(model, tokenizer, graphs=None, conditions=CONDITIONS, pairs: int = 3, relabelings: int = 1,
             seed: int = 0, max_label: int = 99, route: bool = False, max_new_tokens: int = 12) -> dict:
    """Greedy replies to :func:`build_examples`; JSON-ready accuracy and records.

    ``{"pattern", "settings", "accuracy": {graph: {condition: {"correct", "total", "accuracy"}}},
    "records": [{graph, condition, start, goal, labels, answers, reply, parsed, correct}]}``.
    """
    from algeval.models.llama import generate_greedy

    settings = dict(graphs=list(graphs or load_cogeval_graphs()), conditions=list(conditions), pairs=pairs,
                    relabelings=relabelings, seed=seed, max_label=max_label, route=route,
                    max_new_tokens=max_new_tokens)
    acc = {g: {c: {"correct": 0, "total": 0, "accuracy": None} for c in conditions} for g in settings["graphs"]}
    records = []
    for ex in build_examples(settings["graphs"], conditions, pairs, relabelings, seed, max_label, route):
        reply = tokenizer.decode(generate_greedy(model, tokenizer, ex.prompt, max_new_tokens))
        parsed, ok = ex.score(reply)
        cell = acc[ex.graph][ex.condition]
        cell["correct"] += int(ok)
        cell["total"] += 1
        cell["accuracy"] = cell["correct"] / cell["total"]
        records.append({"graph": ex.graph, "condition": ex.condition, "start": ex.start, "goal": ex.goal,
                        "labels": list(ex.labels), "reply": reply, "parsed": parsed, "correct": ok,
                        "answers": [list(a) if isinstance(a, tuple) else a for a in ex.answers]})
    return {"pattern": ANSWER_RE.pattern, "settings": settings, "accuracy": acc, "records": records}


def main(argv=None) -> int:
    """``python -m algeval.sim.llm_eval CHECKPOINT_DIR [--out results.json] ...``"""
    from algeval.models.llama import load_llama

    p = argparse.ArgumentParser(prog="algeval-llm-eval", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--graphs", nargs="*", default=None)
    p.add_argument("--conditions", nargs="*", default=list(CONDITIONS))
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--relabelings", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--route", action="store_true")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    try:
        model, tok = load_llama(a.checkpoint, a.dtype)
        res = evaluate(model, tok, a.graphs, tuple(a.conditions), a.pairs, a.relabelings, a.seed,
                       route=a.route, max_new_tokens=a.max_new_tokens)
    except ParameterError as e:
        print(f"algeval-llm-eval: {e}", file=sys.stderr)
        return 2
    text = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(json.dumps(res["accuracy"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
