"""Hand-built transformers for the ``search`` task: path merging, layer-synchronous BFS, looped merging.

All three read the task's own tokens (``E u v ... Q s g P s``, left-padded,
causal mask) and are written at the craft level (:mod:`algeval.models.craft`)
on named residual directions.  They share the first two layers:

**Layer 0 -- read edges.**  Head ``prev`` copies the previous token into
``prev:*``, head ``prev2`` the one before it into ``prev2:*`` (score ``beta``
on key position ``i - 1`` resp. ``i - 2``).  The MLP marks every position that
ends an edge triple ``E u v`` with the one-hot ``edge:u:v`` and ``is_edge``,
an exact step of ``prev2:E + prev:u + tok:v`` at ``2.5`` (dead zone 1/4).

**Layer 1 -- gather the graph at the decision position.**  Head ``edges``
attends uniformly to ``is_edge`` positions and writes ``adjf:u:v = A[u, v] / m``
(``m`` edges); head ``goal`` attends to the position after ``Q s`` and copies
the goal into ``goalraw:*``.  The MLP thresholds ``adjf`` at ``1/(2 m_max)``
into the exact adjacency ``adj:u:v``, starts the reach counts and cleans the goal.

Then, with every quantity an exact small integer (no attention is involved
any more, so no error can accumulate):

* **path merging** keeps a count matrix ``reach:u:v`` that is ``>= 1`` iff
  ``v`` is reachable from ``u`` within ``2^k`` hops after ``k`` merge layers
  (``k = 0``: ``A or I``).  A merge layer squares it in one MLP::

      reach'[u, v] = sum_w AND(reach[u, w] >= 1, reach[w, v] >= 1),
      AND(a >= 1, b >= 1) = relu(a + b - 1) - relu(a - 1) - relu(b - 1)   (a, b >= 0 integers),

  with ``V^3 + 2 V^2`` hidden units (the ``relu(x - 1)`` terms are shared over
  ``w``; one more ``relu`` removes the old value, so the update is in place).
* **BFS** keeps a count vector ``reachg:x``, ``>= 1`` iff ``x`` reaches the
  goal within ``j + 1`` hops after ``j`` expansion layers, one hop per layer::

      reachg'[x] = min(reachg[x], 1) + sum_w AND(adj[x, w], reachg[w] >= 1).

**Decision.**  The last MLP scores each vertex ``x``::

      out:x = [x is a child of the current vertex] + [x reaches the goal]

so the correct children score 2 and every other token at most 1: the argmax
lands in the answer set.  The current vertex is the token at the decision
position (``path_prefix="start"`` or ``"random"`` alike).

Depth, for lookahead at most ``D`` (the child on a shortest path is ``D - 1``
hops from the goal): path merging ``ceil(log2 D) + 3`` layers (``c = 3``);
BFS ``max(D, 2) + 2`` layers; looped merging: the merge block weight-tied and
run ``r`` times reaches lookahead ``2^r``.
"""

from __future__ import annotations

import math

from algeval.errors import ParameterError, check_int_range
from algeval.models.craft import CraftLayer, CraftModel, HeadSpec, MLPSpec, Space, mlp_from_steps, step_units
from algeval.theory.bounds import min_beta


def _vertex_names(task) -> list[str]:
    return [str(v) for v in range(task.vocab.num_vertices)]


def merge_layers(max_lookahead: int) -> int:
    """Merge (squaring) layers path merging needs for lookahead ``D``: ``ceil(log2 D)``."""
    return max(math.ceil(math.log2(max_lookahead)), 0)


def bfs_layers(max_lookahead: int) -> int:
    """Expansion layers BFS needs for lookahead ``D``: ``max(D - 2, 0)`` (layer 2 already covers one hop)."""
    return max(max_lookahead - 2, 0)


def _and_units(items, hidden, w_in, b_in, w_out) -> None:
    """Append units ``relu(x[a] + x[b] - 1)`` (= ``a AND b`` for exact 0/1 inputs, ``b`` may be a count:
    then ``a AND b >= 1`` after subtracting ``relu(b - 1)``), each adding 1 to ``x[out]``; items ``(key, a, b, out)``."""
    for k, a, b, out in items:
        hidden.append(k)
        w_in[(a, k)] = w_in.get((a, k), 0.0) + 1.0
        w_in[(b, k)] = w_in.get((b, k), 0.0) + 1.0
        b_in[k] = -1.0
        w_out[(k, out)] = w_out.get((k, out), 0.0) + 1.0


class _SearchBuilder:
    """The shared residual space and the first two layers."""

    def __init__(self, task):
        if getattr(task, "name", None) not in ("search", "shortest-path"):
            raise ParameterError("task", getattr(task, "name", task), "needs the search or shortest-path task")
        self.task = task
        self.V = _vertex_names(task)
        self.T = task.max_len
        # at most this many "E u v" triples fit a prompt (the tail takes at least 4 tokens)
        self.max_edges = getattr(task, "max_edges", (task.max_len - 4) // 3)
        # an undirected graph lists each edge once, in either direction: read both
        self.undirected = task.name == "shortest-path" and not task.config.get("directed", False)
        toks = list(task.vocab.tokens)
        self.toks = toks
        V = self.V
        labels = ["one"] + [f"tok:{t}" for t in toks]
        labels += [f"prev:{t}" for t in ["E", "Q", "P"] + V] + ["prev2:E", "prev2:Q", "after_q"]
        labels += [f"edge:{u}:{v}" for u in V for v in V] + ["is_edge"]
        labels += [f"adjf:{u}:{v}" for u in V for v in V] + [f"goalraw:{v}" for v in V]
        labels += [f"adj:{u}:{v}" for u in V for v in V] + [f"goal:{v}" for v in V]
        self.labels = labels
        self.betas: dict[str, float] = {}

    def finish(self, extra_labels: list[str], layers: list[CraftLayer], name: str, meta: dict) -> CraftModel:
        V = self.V
        labels = self.labels + extra_labels + [f"out:{v}" for v in V] + [f"pos:{i}" for i in range(self.T)]
        embed = {t: {"one": 1.0, f"tok:{t}": 1.0} for t in self.toks}
        embed["<pad>"] = {"one": 1.0, "tok:<pad>": 1.0}
        return CraftModel(
            residual=Space(tuple(labels)), vocab=tuple(self.toks), embed=embed, layers=layers, max_len=self.T,
            readout={f"out:{v}": v for v in V}, attention="causal", pad_token="<pad>",
            meta={"construction": name, "task": "search", "task_options": dict(self.task.config),
                  "betas": dict(self.betas), **meta})

    def layer0(self) -> CraftLayer:
        T, V = self.T, self.V
        # three one-hot inputs summed; each may carry the head's leak, the step absorbs 1/4 in total
        beta = min_beta(T, 1.0, 0.25 / 3, 1.0)
        self.betas["prev"] = self.betas["prev2"] = beta
        prev = HeadSpec("prev", {(f"pos:{i}", f"pos:{i - 1}"): beta for i in range(1, T)},
                        {(f"tok:{t}", f"prev:{t}"): 1.0 for t in ["E", "Q", "P"] + V}, beta, 1.0)
        prev2 = HeadSpec("prev2", {(f"pos:{i}", f"pos:{i - 2}"): beta for i in range(2, T)},
                         {("tok:E", "prev2:E"): 1.0, ("tok:Q", "prev2:Q"): 1.0}, beta, 1.0)
        steps = [step_units(f"edge.{u}.{v}", {"prev2:E": 1.0, f"prev:{u}": 1.0, f"tok:{v}": 1.0}, 2.5, 0.5,
                            {f"edge:{u}:{v}": 1.0, "is_edge": 1.0}) for u in V for v in V if u != v]
        steps.append(step_units("after_q", {"prev2:Q": 1.0}, 0.5, 0.5, {"after_q": 1.0}))  # the goal's position
        return CraftLayer(heads=[prev, prev2], mlps=[mlp_from_steps("edges", steps)])

    def layer1(self, extra_steps: list | None = None) -> CraftLayer:
        T, V, me = self.T, self.V, self.max_edges
        slack = 1.0 / (4 * me)  # adjf takes values A/m, m <= max_edges: threshold 1/(2 me), ramp 1/(2 me)
        b_edges = min_beta(T, 1.0, slack, 1.0)
        b_goal = min_beta(T, 1.0, 0.25, 1.0)
        self.betas["edges"], self.betas["goal"] = b_edges, b_goal
        edges = HeadSpec("edges", {("one", "is_edge"): b_edges},
                         {(f"edge:{u}:{v}", f"adjf:{u}:{v}"): 1.0 for u in V for v in V if u != v}, b_edges, 1.0)
        goal = HeadSpec("goal", {("one", "after_q"): b_goal}, {(f"tok:{v}", f"goalraw:{v}"): 1.0 for v in V},
                        b_goal, 1.0)
        steps = []
        for u in V:
            for v in V:
                if u != v:
                    steps.append(step_units(f"adj.{u}.{v}", self.adj_inputs(u, v), 1.0 / (2 * me), 1.0 / (2 * me),
                                            {f"adj:{u}:{v}": 1.0}))
        for v in V:
            steps.append(step_units(f"goal.{v}", {f"goalraw:{v}": 1.0}, 0.5, 0.5, {f"goal:{v}": 1.0}))
        return CraftLayer(heads=[edges, goal], mlps=[mlp_from_steps("graph", steps + (extra_steps or []))])

    def adj_inputs(self, u, v) -> dict:
        """What the adjacency step reads: ``adjf:u:v`` (plus ``adjf:v:u`` for an undirected graph)."""
        return {f"adjf:{u}:{v}": 1.0, f"adjf:{v}:{u}": 1.0} if self.undirected else {f"adjf:{u}:{v}": 1.0}

    def decision(self, reach_goal_units: tuple) -> CraftLayer:
        """``out:x = [tok = u and adj:u:x] + [x reaches the goal]`` (the second part given as units)."""
        V = self.V
        hidden, w_in, b_in, w_out = list(reach_goal_units[0]), dict(reach_goal_units[1]), dict(reach_goal_units[2]), \
            dict(reach_goal_units[3])
        _and_units([(f"child.{u}.{x}", f"tok:{u}", f"adj:{u}:{x}", f"out:{x}") for u in V for x in V if u != x],
                   hidden, w_in, b_in, w_out)
        return CraftLayer(mlps=[MLPSpec("decide", tuple(hidden), w_in, b_in, w_out)])


def _const_reach_diag(V):
    """Units setting ``reach:u:u = 1`` (reflexive reach) from the ``one`` direction."""
    hidden = tuple(f"diag.{u}" for u in V)
    return (hidden, {("one", h): 1.0 for h in hidden}, {h: 0.0 for h in hidden},
            {(f"diag.{u}", f"reach:{u}:{u}"): 1.0 for u in V})


def merge_mlp(V) -> MLPSpec:
    """One path-merging step, in place: ``reach <- reach o reach`` on integer counts (see module docstring)."""
    hidden, w_in, b_in, w_out = [], {}, {}, {}
    for u in V:
        for w in V:
            for v in V:
                k = f"p.{u}.{w}.{v}"
                hidden.append(k)
                w_in[(f"reach:{u}:{w}", k)] = 1.0
                w_in[(f"reach:{w}:{v}", k)] = w_in.get((f"reach:{w}:{v}", k), 0.0) + 1.0
                b_in[k] = -1.0
                w_out[(k, f"reach:{u}:{v}")] = 1.0
    for x in V:
        for y in V:
            s, o = f"s.{x}.{y}", f"o.{x}.{y}"
            hidden += [s, o]
            w_in[(f"reach:{x}:{y}", s)] = 1.0
            b_in[s] = -1.0
            w_in[(f"reach:{x}:{y}", o)] = 1.0
            b_in[o] = 0.0
            for z in V:  # relu(reach[u,w]-1) is subtracted from every reach'[u, z]; relu(reach[w,v]-1) from reach'[z, v]
                w_out[(s, f"reach:{x}:{z}")] = w_out.get((s, f"reach:{x}:{z}"), 0.0) - 1.0
                w_out[(s, f"reach:{z}:{y}")] = w_out.get((s, f"reach:{z}:{y}"), 0.0) - 1.0
            w_out[(o, f"reach:{x}:{y}")] = -1.0  # remove the old count: the update is in place
    return MLPSpec("merge", tuple(hidden), w_in, b_in, w_out)


def _goal_reach_units(V, prefix: str):
    """``[x reaches goal] = sum_w relu(goal:w + R[x, w] - 1) - relu(R[x, w] - 1)`` for a count ``R``."""
    hidden, w_in, b_in, w_out = [], {}, {}, {}
    for x in V:
        for w in V:
            g, s = f"g.{x}.{w}", f"gs.{x}.{w}"
            r = f"{prefix}:{x}:{w}"
            hidden += [g, s]
            w_in[(f"goal:{w}", g)] = 1.0
            w_in[(r, g)] = 1.0
            b_in[g] = -1.0
            w_in[(r, s)] = 1.0
            b_in[s] = -1.0
            w_out[(g, f"out:{x}")] = 1.0
            w_out[(s, f"out:{x}")] = -1.0
    return hidden, w_in, b_in, w_out


def path_merging_search(task, max_lookahead: int | None = None, loop: bool = False,
                        iterations: int | None = None) -> CraftModel:
    """The path-merging construction; ``loop=True`` weight-ties the merge layer (run ``iterations`` times)."""
    b = _SearchBuilder(task)
    V = b.V
    D = check_int_range("max_lookahead", task.L if max_lookahead is None else max_lookahead, 1, task.L)
    K = merge_layers(D)
    reach = [f"reach:{u}:{v}" for u in V for v in V]
    # layer 1's MLP also starts reach = A (off-diagonal) + I
    extra = [step_units(f"r.{u}.{v}", b.adj_inputs(u, v), 1.0 / (2 * b.max_edges), 1.0 / (2 * b.max_edges),
                        {f"reach:{u}:{v}": 1.0}) for u in V for v in V if u != v]
    extra.append(_const_reach_diag(V))
    layers = [b.layer0(), b.layer1(extra)]
    if loop:
        layers.append(CraftLayer(mlps=[merge_mlp(V)]))
    else:
        layers += [CraftLayer(mlps=[merge_mlp(V)]) for _ in range(K)]
    layers.append(b.decision(_goal_reach_units(V, "reach")))
    r = K if iterations is None else iterations
    meta = {"max_lookahead": D, "merge_layers": K, "loop": loop, "loop_iterations": r if loop else None,
            "reach_layers": {str(k): 2 + k for k in range(K + 1)} if not loop else None}
    return b.finish(reach, layers, "path-merging" + ("-looped" if loop else ""), meta)


def bfs_mlp(V, first: bool) -> MLPSpec:
    """One BFS hop on the goal-reach count vector (``first``: start it from the goal)."""
    hidden, w_in, b_in, w_out = [], {}, {}, {}
    src = "goal" if first else "reachg"
    _and_units([(f"q.{x}.{w}", f"adj:{x}:{w}", f"{src}:{w}", f"reachg:{x}") for x in V for w in V if x != w],
               hidden, w_in, b_in, w_out)
    for w in V:
        if first:  # reachg = goal + (one hop towards it)
            k = f"g.{w}"
            hidden.append(k)
            w_in[(f"goal:{w}", k)] = 1.0
            b_in[k] = 0.0
            w_out[(k, f"reachg:{w}")] = 1.0
            continue
        s = f"s.{w}"
        hidden.append(s)
        w_in[(f"reachg:{w}", s)] = 1.0
        b_in[s] = -1.0
        # AND(adj[x,w], c_w >= 1) = relu(adj + c_w - 1) - relu(c_w - 1) and min(c_x, 1) = relu(c_x) - relu(c_x - 1);
        # in place the old c_x = relu(c_x) is removed, so the update is  sum_w q_xw - sum_w relu(c_w - 1)
        for x in V:
            if x != w:
                w_out[(s, f"reachg:{x}")] = w_out.get((s, f"reachg:{x}"), 0.0) - 1.0
        w_out[(s, f"reachg:{w}")] = w_out.get((s, f"reachg:{w}"), 0.0) - 1.0
    return MLPSpec("bfs-first" if first else "bfs-hop", tuple(hidden), w_in, b_in, w_out)


def bfs_search(task, max_lookahead: int | None = None) -> CraftModel:
    """The layer-synchronous BFS construction: backward BFS from the goal, one hop per layer."""
    b = _SearchBuilder(task)
    V = b.V
    D = check_int_range("max_lookahead", task.L if max_lookahead is None else max_lookahead, 1, task.L)
    J = bfs_layers(D)
    layers = [b.layer0(), b.layer1(), CraftLayer(mlps=[bfs_mlp(V, first=True)])]
    layers += [CraftLayer(mlps=[bfs_mlp(V, first=False)]) for _ in range(J)]
    hidden, w_in, b_in, w_out = [], {}, {}, {}
    for x in V:  # [x reaches goal] = min(reachg[x], 1)
        a, s = f"m.{x}", f"ms.{x}"
        hidden += [a, s]
        w_in[(f"reachg:{x}", a)] = 1.0
        b_in[a] = 0.0
        w_in[(f"reachg:{x}", s)] = 1.0
        b_in[s] = -1.0
        w_out[(a, f"out:{x}")] = 1.0
        w_out[(s, f"out:{x}")] = -1.0
    layers.append(b.decision((hidden, w_in, b_in, w_out)))
    meta = {"max_lookahead": D, "bfs_layers": J, "reach_layers": {str(j + 1): 2 + j for j in range(J + 1)}}
    return b.finish([f"reachg:{v}" for v in V], layers, "bfs", meta)


def _min1_units(V, src: str, out: str, tag: str):
    """``x[out:v] += min(x[src:v], 1) = relu(c) - relu(c - 1)`` for integer counts ``c >= 0``."""
    hidden, w_in, b_in, w_out = [], {}, {}, {}
    for v in V:
        a, s_ = f"{tag}.{v}", f"{tag}s.{v}"
        hidden += [a, s_]
        w_in[(f"{src}:{v}", a)], b_in[a] = 1.0, 0.0
        w_in[(f"{src}:{v}", s_)], b_in[s_] = 1.0, -1.0
        w_out[(a, f"{out}:{v}")], w_out[(s_, f"{out}:{v}")] = 1.0, -1.0
    return hidden, w_in, b_in, w_out


def _merge(*parts) -> MLPSpec:
    name = parts[0]
    hidden, w_in, b_in, w_out = [], {}, {}, {}
    for h, wi, bi, wo in parts[1:]:
        hidden += list(h)
        w_in.update(wi)
        b_in.update(bi)
        for k, v in wo.items():
            w_out[k] = w_out.get(k, 0.0) + v
    return MLPSpec(name, tuple(hidden), w_in, b_in, w_out)


def shortest_path_next_hop(task, max_distance: int | None = None) -> CraftModel:
    """Next vertex on a shortest path to the goal: backward BFS with a closeness score.

    The BFS layers of :func:`bfs_search` run from the goal; each stage ``s``
    also adds ``[dist(x, goal) <= s + 1]`` to ``close:x`` (and the decision
    adds ``[x = goal]``), so after ``J + 1`` stages ``close:x = J + 3 - dist``
    for ``dist <= J + 1``: strictly larger for closer vertices.  The decision
    scores ``out:x = (J + 3) [x adjacent to the current vertex] + close:x``:
    the argmax is a neighbour with the smallest distance, i.e. a next hop on a
    shortest path, provided the distance to the goal is at most ``J + 2``
    (``J = max(D - 2, 0)``, ``D`` the largest distance).  Layers: ``max(D, 2) + 2``.
    """
    b = _SearchBuilder(task)
    V = b.V
    limit = len(V) - 1
    D = check_int_range("max_distance", limit if max_distance is None else max_distance, 1, limit)
    J = bfs_layers(D)
    layers = [b.layer0(), b.layer1(), CraftLayer(mlps=[bfs_mlp(V, first=True)])]
    for j in range(J):
        layers.append(CraftLayer(mlps=[_merge("bfs-hop", _as_parts(bfs_mlp(V, first=False)),
                                              _min1_units(V, "reachg", "close", f"c{j}"))]))
    big = J + 3
    hidden, w_in, b_in, w_out = _min1_units(V, "reachg", "out", "last")
    for v in V:  # [x = goal] and the closeness so far
        for src in ("goal", "close"):
            k = f"{src}.{v}"
            hidden.append(k)
            w_in[(f"{src}:{v}", k)], b_in[k] = 1.0, 0.0
            w_out[(k, f"out:{v}")] = 1.0
    dec = b.decision((hidden, w_in, b_in, w_out)).mlps[0]
    dec.w_out = {k: (v * big if k[0].startswith("child.") else v) for k, v in dec.w_out.items()}
    layers.append(CraftLayer(mlps=[dec]))
    meta = {"max_distance": D, "bfs_layers": J}
    return b.finish([f"reachg:{v}" for v in V] + [f"close:{v}" for v in V], layers, "shortest-path", meta)


def _as_parts(m: MLPSpec):
    return m.hidden, m.w_in, m.b_in, m.w_out


def to_model(craft: CraftModel, dtype: str = "float32"):
    """Lower a search construction; a looped one gets its merge block weight-tied in the config."""
    model, meta = craft.to_transformer(dtype)
    if craft.meta.get("loop"):
        model.cfg = model.cfg.replace(loop_start=2, loop_length=1, loop_iterations=craft.meta["loop_iterations"])
    return model, meta
