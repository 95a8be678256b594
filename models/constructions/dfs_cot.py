"""DFS as chain of thought: a 5-layer transformer that writes the smallest-id-first DFS visit order.

It runs on the ``dfs-trace`` task's own tokens (left-padded, ``prefix-full``
mask)::

    E u v  E u v ...  S s |  v1 v2 ... vR          (predict: | -> v1, v_t -> v_{t+1}, vR -> .)

and at every scored position predicts the next trace token from the correct
prefix, so greedy decoding from ``... S s |`` writes the whole trace.

**Why a fixed depth suffices.**  Let ``P`` be the set of visited vertices
after ``v1..vt`` and call ``y`` *live* if ``y in P`` and ``y`` has an
out-neighbour outside ``P``.  In the DFS the stack is the path
``v1 = p_0 -> ... -> p_k``; after backtracking, its top is the deepest path
vertex with an unvisited neighbour.  Every vertex visited after that top is a
DFS descendant of it that has been popped (and popping means "no unvisited
neighbour", which stays true as ``P`` grows) or lies on the path above it
(popped just now).  So **the top is the most recently visited live vertex**,
and the next token is

    v_{t+1} = min { x not in P : A[y*, x] },   y* = the latest-emitted live vertex,

or ``.`` when no vertex is live.  This is a function of (graph, emitted set,
emission order) that one recency-weighted attention head can read.

**Layers** (``L`` vertex labels, ``T`` positions, ``m`` the most edges a
prompt lists; ``[.]`` an exact 0/1 step from :func:`step_units`):

0. heads ``prev`` / ``prev2`` copy the tokens at ``i - 1`` / ``i - 2``
   (score ``beta`` on that key).  MLP: ``edge:u:v``, ``is_edge`` at the end of
   each ``E u v``  (``[prev2:E + prev:u + tok:v > 2.5]``); the *trace-vertex*
   flag ``trv:y = [tok:y - prev:E - prev:S - prev2:E > 1/2]`` (a vertex token
   that is neither an edge endpoint nor the start after ``S``); at the
   separator ``out:x += [prev:x + tok:| > 3/2]`` (the first trace vertex is
   the start).
1. head ``edges`` attends uniformly to ``is_edge`` keys: ``adjf:u:v = A/m``;
   head ``visited`` attends uniformly to ``|`` and trace-vertex keys:
   ``visf:y = [y emitted] / (t + 1)``.  MLP thresholds them:
   ``adj:u:v = [adjf:u:v (+ adjf:v:u if undirected) > 1/(2m)]``,
   ``vis:y = [visf:y > 1/(2(L+1))]``.
2. MLP: ``cnt:y = sum_x relu(vis[y] + adj[y, x] - vis[x] - 1)`` -- the number
   of unvisited out-neighbours of a visited ``y`` (0 for unvisited ``y``).
3. MLP: ``live:y = min(cnt:y, 1)``; ``out:. += relu(sum_y trv:y - sum_y cnt:y)``
   (1 exactly at a trace vertex with nothing live: the end token).
4. head ``recent``: query ``i``, key ``j``::

       score(i, j) = beta * ((T + 1) * sum_y live_i[y] trv_j[y] + j)

   The latest live trace key wins by ``beta`` over every older live key and
   by ``>= 2 beta`` over every non-live key; it copies ``trv`` into ``cur``.
   MLP: ``out:x += (L - x) * [cur[y] + adj[y, x] - vis[x] > 3/2]`` summed over
   ``y``: exactly ``(L - x) [x is an unvisited neighbour of y*]``.

Readout: ``out:x`` -> vertex ``x``, ``out:.`` -> ``.``; every other logit is
0.  The smallest unvisited neighbour scores ``L - x >= 1``, a larger one at
least 1 less, the end token 1 exactly when nothing is live, so the decoding
margin is 1 everywhere.

**Inverse temperatures** (:func:`~algeval.theory.bounds.min_beta`, gap 1,
value deviation 1): ``prev``, ``prev2`` absorb ``1/12`` (three leaky inputs
share the 1/4 dead zone of ``trv``); ``edges`` ``1/(4m)`` (threshold
``1/(2m)``); ``visited`` ``1/(4(L+1))`` (at most ``L + 1`` keys: ``|`` and
``L`` vertices); ``recent`` ``1/4`` (``cur[y*] >= 3/4``, others ``<= 1/4``:
the step at 3/2 is exact).  After layer 1 every quantity except ``cur`` is an
exact small integer, so no error accumulates.

**Resources**: 5 layers, 2 heads, ``d_model = 3 L^2 + 6 L + 12 + T``,
``d_mlp = 2 L^2 + 2 L`` (layer 0: ``2 L (L - 1)`` edge units, ``2 L`` trace
flags, ``2 L`` separator copies).
"""

from __future__ import annotations

from algeval.errors import ParameterError
from algeval.models.constructions.search import _min1_units
from algeval.models.craft import CraftLayer, CraftModel, HeadSpec, MLPSpec, Space, mlp_from_steps, step_units
from algeval.theory.bounds import min_beta

N_LAYERS = 5


def dfs_cot(task) -> CraftModel:
    """The DFS chain-of-thought construction for a ``dfs-trace`` task (smallest id first)."""
    if getattr(task, "name", None) != "dfs-trace":
        raise ParameterError("task", getattr(task, "name", task), "needs the dfs-trace task")
    if task.any_order:
        raise ParameterError("any_order", True, "the construction writes the smallest-id-first order")
    L = task.vocab.num_vertices
    V = [str(v) for v in range(L)]
    T = task.max_len
    me = max(task.spec.max_edges(), 1)
    directed = task.spec.directed
    toks = list(task.vocab.tokens)
    pairs = [(u, v) for u in V for v in V if u != v]

    betas = {
        "prev": min_beta(T, 1.0, 0.25 / 3, 1.0),
        "edges": min_beta(T, 1.0, 1.0 / (4 * me), 1.0),
        "visited": min_beta(T, 1.0, 1.0 / (4 * (L + 1)), 1.0),
        "recent": min_beta(T, 1.0, 0.25, 1.0),
    }
    betas["prev2"] = betas["prev"]

    # layer 0: read the previous two tokens; parse edges, trace vertices, the separator
    b = betas["prev"]
    prev = HeadSpec("prev", {(f"pos:{i}", f"pos:{i - 1}"): b for i in range(1, T)},
                    {(f"tok:{t}", f"prev:{t}"): 1.0 for t in ["E", "S", "|"] + V}, b, 1.0)
    prev2 = HeadSpec("prev2", {(f"pos:{i}", f"pos:{i - 2}"): b for i in range(2, T)},
                     {("tok:E", "prev2:E"): 1.0}, b, 1.0)
    steps = [step_units(f"edge.{u}.{v}", {"prev2:E": 1.0, f"prev:{u}": 1.0, f"tok:{v}": 1.0}, 2.5, 0.5,
                        {f"edge:{u}:{v}": 1.0, "is_edge": 1.0}) for u, v in pairs]
    steps += [step_units(f"trv.{y}", {f"tok:{y}": 1.0, "prev:E": -1.0, "prev:S": -1.0, "prev2:E": -1.0},
                         0.5, 0.5, {f"trv:{y}": 1.0}) for y in V]
    steps += [step_units(f"sep.{x}", {f"prev:{x}": 1.0, "tok:|": 1.0}, 1.5, 0.5, {f"out:{x}": 1.0}) for x in V]
    layer0 = CraftLayer(heads=[prev, prev2], mlps=[mlp_from_steps("parse", steps)])

    # layer 1: gather the adjacency and the emitted set at every position
    be, bv = betas["edges"], betas["visited"]
    edges = HeadSpec("edges", {("one", "is_edge"): be},
                     {(f"edge:{u}:{v}", f"adjf:{u}:{v}"): 1.0 for u, v in pairs}, be, 1.0)
    visited = HeadSpec("visited", {("one", "tok:|"): bv, **{("one", f"trv:{y}"): bv for y in V}},
                       {(f"trv:{y}", f"visf:{y}"): 1.0 for y in V}, bv, 1.0)
    th_e, th_v = 1.0 / (2 * me), 1.0 / (2 * (L + 1))
    steps = []
    for u, v in pairs:
        inp = {f"adjf:{u}:{v}": 1.0} if directed else {f"adjf:{u}:{v}": 1.0, f"adjf:{v}:{u}": 1.0}
        steps.append(step_units(f"adj.{u}.{v}", inp, th_e, th_e, {f"adj:{u}:{v}": 1.0}))
    steps += [step_units(f"vis.{y}", {f"visf:{y}": 1.0}, th_v, th_v, {f"vis:{y}": 1.0}) for y in V]
    layer1 = CraftLayer(heads=[edges, visited], mlps=[mlp_from_steps("graph", steps)])

    # layer 2: unvisited out-neighbours of each visited vertex (an exact count)
    hidden, w_in, b_in, w_out = [], {}, {}, {}
    for y, x in pairs:
        k = f"c.{y}.{x}"
        hidden.append(k)
        w_in[(f"vis:{y}", k)] = 1.0
        w_in[(f"adj:{y}:{x}", k)] = 1.0
        w_in[(f"vis:{x}", k)] = -1.0
        b_in[k] = -1.0
        w_out[(k, f"cnt:{y}")] = 1.0
    layer2 = CraftLayer(mlps=[MLPSpec("count", tuple(hidden), w_in, b_in, w_out)])

    # layer 3: live = min(cnt, 1); the end token where a trace vertex sees nothing live
    hidden, w_in, b_in, w_out = _min1_units(V, "cnt", "live", "lv")
    hidden = list(hidden) + ["end"]
    for y in V:
        w_in[(f"trv:{y}", "end")] = 1.0
        w_in[(f"cnt:{y}", "end")] = -1.0
    b_in["end"] = 0.0
    w_out[("end", "out:.")] = 1.0
    layer3 = CraftLayer(mlps=[MLPSpec("live", tuple(hidden), w_in, b_in, w_out)])

    # layer 4: the latest live trace vertex, then its smallest unvisited neighbour
    br = betas["recent"]
    qk = {(f"live:{y}", f"trv:{y}"): br * (T + 1) for y in V}
    qk.update({("one", f"pos:{j}"): br * j for j in range(1, T)})
    recent = HeadSpec("recent", qk, {(f"trv:{y}", f"cur:{y}"): 1.0 for y in V}, br, 1.0)
    steps = [step_units(f"g.{y}.{x}", {f"cur:{y}": 1.0, f"adj:{y}:{x}": 1.0, f"vis:{x}": -1.0}, 1.5, 0.5,
                        {f"out:{x}": float(L - int(x))}) for y, x in pairs]
    layer4 = CraftLayer(heads=[recent], mlps=[mlp_from_steps("decide", steps)])

    labels = ["one"] + [f"tok:{t}" for t in toks] + [f"prev:{t}" for t in ["E", "S", "|"] + V] + ["prev2:E"]
    labels += [f"edge:{u}:{v}" for u, v in pairs] + ["is_edge"] + [f"trv:{y}" for y in V]
    labels += [f"adjf:{u}:{v}" for u, v in pairs] + [f"visf:{y}" for y in V]
    labels += [f"adj:{u}:{v}" for u, v in pairs]
    for name in ("vis", "cnt", "live", "cur", "out"):
        labels += [f"{name}:{y}" for y in V]
    labels += ["out:."] + [f"pos:{i}" for i in range(T)]
    embed = {t: {"one": 1.0, f"tok:{t}": 1.0} for t in toks}
    readout = {f"out:{v}": v for v in V}
    readout["out:."] = "."
    return CraftModel(
        residual=Space(tuple(labels)), vocab=tuple(toks), embed=embed,
        layers=[layer0, layer1, layer2, layer3, layer4], max_len=T, readout=readout,
        attention="prefix-full", pad_token="<pad>",
        meta={"construction": "dfs-cot", "task": task.name, "task_options": dict(task.config),
              "betas": betas, "max_edges": me, "num_labels": L})
