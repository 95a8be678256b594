"""Hand-built transformer for CogEval's valuePath: the first room of the most rewarding path.

It reads the ``cogeval`` task's own tokens (left-padded, causal)::

    E u v ...  R v r<k> ...  V s            predict: the first step of the best path from s

and is written at the craft level (:mod:`algeval.models.craft`) on named
residual directions.  The quantity decided is the one of
:func:`algeval.theory.value_path.value_path_first_steps` with budget ``H``
(``max_steps``): among simple paths ``s = p_0 -> ... -> p_m``, ``m <= H``,
maximise ``value = sum_{i>=1} r(p_i)``, ties to the fewest edges.

**Domain.**  The part of the graph reachable from ``s`` is an out-tree
(arborescence) rooted at ``s``: every reachable vertex other than ``s`` has
exactly one reachable in-neighbour, and ``s`` none.  Then every walk from
``s`` is a simple path and every vertex ``v`` at depth ``d(v) <= H`` is the
end of exactly one path, with value ``P(v)`` (the rewards summed along it).
CogEval's ``n7line``, ``n7tree``, ``n13line`` and the generator's
``tree`` / ``two-branch`` families are such graphs (rewards at the leaves
are a special case; this construction takes integer rewards anywhere).
The best path's first step is, with ``K = H + 1``,

    argmax_x  max { K P(v) - d(v) :  v reached within H steps through first step x },

because ``K`` exceeds every length difference (value first, then fewest
edges).  This is value iteration run forwards: on an out-tree
``V_H(s) = max_v P(v)``, and the path sums ``P`` need only additions
(one parent per vertex), leaving a single max at the end.

**Float32 design rule.**  Scores are carried at the scale ``w`` of the
``rewards`` head (below), ``w`` in ``(0, 1]``, so the decision margin is ``w``.
Every gate that switches a score on or off is written ``- B * g`` with ``g`` a
residual value that is an *exact* ``0`` when the gate passes (both ReLUs of a
step shut, or a sum of exact small integers) and ``>= 1`` otherwise.  A
passing unit therefore adds ``B * 0``: no large constant ever cancels against
a score, every float32 rounding is relative to the score itself
(``|sc| <= w (S0 + K H R_pos)``), and the 0/1 bookkeeping (``R``, ``nR``,
``fi``, ``ne``, ``eq``) is exact integer arithmetic.  (An earlier version gated
with ``B (2 - adj - R)``, summing ``+-B`` terms against the score and reading
``relu(R + adj - 1)`` exactly at its kink: rounding of ``~2e-7`` in ``adj`` grew
about 13x per propagation layer and flipped decisions at ``n = 16``.)

**Layer 0 -- read the prompt.**  Heads ``prev``/``prev2`` copy the previous
token (``E R V`` and room labels) and the one before (``E R``).  The MLP
marks an edge end ``E u v`` with ``edge:u:v`` and ``is_edge`` (exact steps of
``prev2:E + prev:u + tok:v`` at 2.5, as in :mod:`.search`), marks the decision
position (``qmark``: a step of ``prev:V``), and writes the reward at the
token ``r<k>`` of ``R v r<k>`` as a number: with ``z = G (prev2:R + prev:v +
isr - 5/2)`` (``isr``/``rval``: the reward token's embedding, 1 and ``k``),

    rw:v = relu(rval + z) - relu(z)  =  k  if the statement is about v,  0 otherwise,

exactly whenever ``|z| >= |k|``, i.e. ``G >= 3 R_abs`` given the heads' leak
``<= 1/12`` each (the gated identity: both ReLUs open, or both shut).  The
embedding of a token ``t`` also writes ``R:t = 1`` (a room) and ``nR:v = 1``
for every room ``v != t``: at the decision position ``R:v = [v = s]``,
``nR:v = 1 - R:v`` exactly.

**Layer 1 -- gather at the decision position.**  Head ``edges`` attends
uniformly to ``is_edge`` keys (``adjf = A / m``); the MLP turns it into
``nadj:u:v = [no edge u -> v]`` (a step of ``-adjf`` with threshold
``-1/(2 m_max)``: an edge leaves *both* ReLUs shut, so ``nadj`` is exactly 0
there).  Head ``rewards`` attends to the reward tokens and to the decision
position itself, all with the same score; values there are exact and zero
elsewhere, so its output is *exactly proportional*: ``rwf:v = w r(v)``,
``unit = w`` with one common weight ``w in (0, 1]``.  The MLP also seeds the
start's score ``sc:u = relu(S0 unit - B_0 nR:u)`` (``= w S0`` at ``u = s``,
0 elsewhere; ``B_0 = S0 + 1``).  Everything below is positively homogeneous in
``(rwf, unit)`` (its gates use exact 0/1 or integer values and absolute
constants that multiply an exact 0 when they pass), so ``w`` scales the
decision margin and changes no decision: this head needs no minimum beta.

**Layers 2 .. H+1 -- forward path sums, each vertex set once (the same MLP
each time).**  With the exact gate ``g(u, v) = nR:u + nadj:u:v + R:v``
(``0`` iff ``u`` is reached, ``u -> v`` is an edge and ``v`` is not yet
reached; else an integer ``>= 1`` up to ``nadj``'s rounding), for every
``u != v``::

    R:v += relu(1 - 2 g(u, v)),   nR:v -= relu(1 - 2 g(u, v))
    sc:v += relu(sc:u + K rwf:v - unit       - B_s g(u, v))
    fi:v += relu(fi:u + (v+1) tok:u          - B_f g(u, v))

On an out-tree at most one ``u`` passes for each ``v`` (its parent, in the
layer after the parent was reached), so ``v`` receives
``sc:v = sc:u + w (K r(v) - 1)`` and the parent's first step (``fi`` = first
step + 1; a child of ``s`` gets ``v + 1``) exactly once.  After ``j`` such
layers every vertex at depth ``<= j`` holds ``sc:v = w (S0 + K P(v) - d(v))``
(``S0 = 1 + K H R_neg + H`` keeps it ``>= w``), deeper ones hold zeros.
``B_s = S0 + K (H+1) R_pos + 1 > sc:u + K rwf:v`` and ``B_f = n + 1 > fi:u +
(v+1) tok:u`` shut every other unit (``w <= 1``).

**Layer H+2 -- first-step indicators** from the exact integer ``f = fi:v``
and ``a = x + 1``, with ``q_j = relu(f - j)``, ``j = 0..n``::

    ne:x:v = |f - a| = 2 q_a - q_0 + a relu(one),     eq:x:v = [f = a] = q_{a-1} - 2 q_a + q_{a+1}

(exact small integers; ``q_{n+1} = 0`` as ``f <= n``; the start and unreached
rooms have ``f = 0``, so ``ne >= 1``, ``eq = 0``).

**Max (layers H+3 ..).**  ``out:x = max { sc:v : ne:x:v = 0 }`` (0 if none) by a
pairwise tournament over ``v`` in ``ceil(log2 n)`` layers.  The first level
gates while it compares: for rooms ``v1, v2`` with ``p = sc:v1``, ``q = sc:v2``
and ``B_g = S0 + K H R_pos + 1 > sc``::

    relu(p - q - B_g ne:x:v1 - B_g ne:x:v2) + relu(q - B_g ne:x:v2) + relu(p - B_g ne:x:v1 - B_g eq:x:v2)

is ``max(p, q)``, ``p``, ``q`` or ``0`` as both, only ``v1``, only ``v2`` or
neither has first step ``x`` (check the four cases; in each, the large terms
of the passing units multiply an exact 0).  Later levels take ``max(a, b) =
relu(a - b) + relu(b)`` for ``a, b >= 0`` in place.  Children of ``s`` score
``>= w``, every other token 0, and two children with different best
``K P - d`` differ by ``>= w``: the argmax is a first step of an optimal path.

Resources (``n`` room labels, ``H`` steps, prompt width ``T``): layers
``H + 3 + ceil(log2 n)``, 2 heads, ``d_model = 5 n^2 + 6 n + n ceil(n/2) + 16 + T``,
``d_mlp = max(3 n^2 - 3 n, 2 n^2 + 2)``; see :mod:`algeval.proofs.value_path_claims`.
"""

from __future__ import annotations

import math

from algeval.errors import ParameterError, check_int_range
from algeval.models.craft import CraftLayer, CraftModel, HeadSpec, Space, mlp_from_steps, step_units
from algeval.theory.bounds import min_beta


def _unit(name: str, inputs: dict, bias: float, outs: dict):
    """One ReLU ``relu(sum inputs[a] x[a] + bias)`` adding ``outs[d]`` times itself to ``x[d]`` (a fragment)."""
    return (name,), {(a, name): w for a, w in inputs.items()}, {name: bias}, {(name, d): v for d, v in outs.items()}


def constants(max_steps: int, min_reward: int, max_reward: int, n: int) -> dict:
    """The integer constants of the module docstring for budget ``H``, rewards in ``[min, max]``, ``n`` labels."""
    H = max_steps
    r_neg, r_pos = max(0, -min_reward), max(0, max_reward)
    K = H + 1
    S0 = 1 + K * H * r_neg + H
    return {"K": K, "S0": S0, "B_0": S0 + 1, "B_s": S0 + K * (H + 1) * r_pos + 1, "B_f": n + 1,
            "B_g": S0 + K * H * r_pos + 1, "G": 4 * max(abs(min_reward), abs(max_reward), 1)}


def value_path_layers(n: int, max_steps: int) -> int:
    """Layers of the construction: ``H + 3 + ceil(log2 n)``."""
    return max_steps + 3 + math.ceil(math.log2(n))


def _tournament(V: list[str], B_g: float) -> list[CraftLayer]:
    """``out:x = max {sc:v : ne:x:v = 0}`` (see the module docstring): a gated first level, then in-place maxes."""
    n = len(V)
    layers, stride, level = [], 1, 0
    while stride < n:
        last = 2 * stride >= n
        units = []
        for x in V:
            for j in range(0, n, 2 * stride):
                tgt = f"out:{x}" if last else f"h:{x}:{j}"
                k = j + stride if j + stride < n else None
                if level == 0:
                    p, gp, ep = f"sc:{j}", f"ne:{x}:{j}", f"eq:{x}:{j}"
                    if k is None:  # a room without a partner: its gated score
                        units.append(_unit(f"t0.{x}.{j}.a", {p: 1.0, gp: -B_g}, 0.0, {tgt: 1.0}))
                        continue
                    q, gq, eq = f"sc:{k}", f"ne:{x}:{k}", f"eq:{x}:{k}"
                    units.append(_unit(f"t0.{x}.{j}.d", {p: 1.0, q: -1.0, gp: -B_g, gq: -B_g}, 0.0, {tgt: 1.0}))
                    units.append(_unit(f"t0.{x}.{j}.b", {q: 1.0, gq: -B_g}, 0.0, {tgt: 1.0}))
                    units.append(_unit(f"t0.{x}.{j}.a", {p: 1.0, gp: -B_g, eq: -B_g}, 0.0, {tgt: 1.0}))
                    continue
                a, b = f"h:{x}:{j}", f"h:{x}:{k}" if k is not None else None
                if b is None:
                    if last:
                        units.append(_unit(f"t{level}.{x}.{j}.a", {a: 1.0}, 0.0, {tgt: 1.0}))
                    continue
                units.append(_unit(f"t{level}.{x}.{j}.d", {a: 1.0, b: -1.0}, 0.0, {tgt: 1.0}))
                units.append(_unit(f"t{level}.{x}.{j}.b", {b: 1.0}, 0.0, {tgt: 1.0}))
                if not last:
                    units.append(_unit(f"t{level}.{x}.{j}.o", {a: 1.0}, 0.0, {a: -1.0}))
        layers.append(CraftLayer(mlps=[mlp_from_steps(f"max{level}", units)]))
        stride, level = 2 * stride, level + 1
    return layers


def value_path_model(task, max_steps: int | None = None, undirected: bool | None = None) -> CraftModel:
    """The construction for a ``cogeval`` task (its labels, reward range and width); see the module docstring.

    ``max_steps`` (``H``, default the task's) is the budget; ``undirected``
    (default: the task's graphs are undirected) reads each listed edge both ways.
    """
    if getattr(task, "name", None) != "cogeval":
        raise ParameterError("task", getattr(task, "name", task), "needs the cogeval task")
    if "value-path" not in task.kinds:
        raise ParameterError("query", task.config["query"], "the construction answers value-path queries")
    H = check_int_range("max_steps", task.max_steps if max_steps is None else max_steps, 1, 64)
    und = (not task.graph_directed) if undirected is None else bool(undirected)
    voc = task.vocab
    n, T = voc.num_vertices, task.max_len
    if n < 2:
        raise ParameterError("num_labels", n, "needs at least 2 room labels")
    V = [str(v) for v in range(n)]
    rtoks = [(t, int(t[1:])) for t in voc.extra]
    c = constants(H, task.min_reward, task.max_reward, n)
    K, S0, B_0, B_s, B_f, B_g, G = (c[k] for k in ("K", "S0", "B_0", "B_s", "B_f", "B_g", "G"))
    max_edges = (T - 2) // 3
    pairs = [(u, v) for u in V for v in V if u != v]

    specials = [t for t in voc.specials]
    labels = ["one"] + [f"tok:{t}" for t in specials + V] + ["isr", "rval"]
    labels += [f"prev:{t}" for t in ["E", "R", "V"] + V] + ["prev2:E", "prev2:R"]
    labels += [f"edge:{u}:{v}" for u, v in pairs] + ["is_edge"] + [f"rw:{v}" for v in V] + ["qmark"]
    labels += [f"adjf:{u}:{v}" for u, v in pairs] + [f"rwf:{v}" for v in V] + ["unit"]
    labels += [f"nadj:{u}:{v}" for u, v in pairs]
    labels += [f"{q}:{v}" for q in ("R", "nR", "sc", "fi") for v in V]
    labels += [f"{q}:{x}:{v}" for q in ("ne", "eq") for x in V for v in V]
    labels += [f"h:{x}:{j}" for x in V for j in range(0, n, 2)] + [f"out:{v}" for v in V]
    labels += [f"pos:{i}" for i in range(T)]

    betas = {}
    # layer 0: previous tokens; exact steps (two attention inputs, leak <= 1/12 each)
    b0 = min_beta(T, 1.0, 0.25 / 3, 1.0)
    betas["prev"] = betas["prev2"] = b0
    prev = HeadSpec("prev", {(f"pos:{i}", f"pos:{i - 1}"): b0 for i in range(1, T)},
                    {(f"tok:{t}", f"prev:{t}"): 1.0 for t in ["E", "R", "V"] + V}, b0, 1.0)
    prev2 = HeadSpec("prev2", {(f"pos:{i}", f"pos:{i - 2}"): b0 for i in range(2, T)},
                     {("tok:E", "prev2:E"): 1.0, ("tok:R", "prev2:R"): 1.0}, b0, 1.0)
    steps = [step_units(f"edge.{u}.{v}", {"prev2:E": 1.0, f"prev:{u}": 1.0, f"tok:{v}": 1.0}, 2.5, 0.5,
                        {f"edge:{u}:{v}": 1.0, "is_edge": 1.0}) for u, v in pairs]
    for v in V:  # the gated identity rw:v = rval [statement about v]
        z = {"prev2:R": G, f"prev:{v}": G, "isr": G}
        steps.append(_unit(f"rw.{v}+", {**z, "rval": 1.0}, -2.5 * G, {f"rw:{v}": 1.0}))
        steps.append(_unit(f"rw.{v}-", z, -2.5 * G, {f"rw:{v}": -1.0}))
    steps.append(step_units("qmark", {"prev:V": 1.0}, 0.5, 0.5, {"qmark": 1.0}))
    layers = [CraftLayer(heads=[prev, prev2], mlps=[mlp_from_steps("read", steps)])]

    # layer 1: the graph and the rewards at the decision position; the start's score
    b_e = min_beta(T, 1.0, 1.0 / (4 * max_edges), 1.0)
    b_r = min_beta(T, 1.0, 1.0, 1.0)  # only sets the margin's scale w >= 1 / (2 (m_R + 1))
    betas["edges"], betas["rewards"] = b_e, b_r
    edges = HeadSpec("edges", {("one", "is_edge"): b_e},
                     {(f"edge:{u}:{v}", f"adjf:{u}:{v}"): 1.0 for u, v in pairs}, b_e, 1.0)
    rew = HeadSpec("rewards", {("one", "isr"): b_r, ("one", "qmark"): b_r},
                   {**{(f"rw:{v}", f"rwf:{v}"): 1.0 for v in V}, ("qmark", "unit"): 1.0}, b_r, 1.0)
    th = 1.0 / (2 * max_edges)
    graph = [step_units(f"nadj.{u}.{v}", {f"adjf:{u}:{v}": -1.0, **({f"adjf:{v}:{u}": -1.0} if und else {})},
                        -th, th, {f"nadj:{u}:{v}": 1.0}) for u, v in pairs]
    graph += [_unit(f"sc0.{u}", {"unit": float(S0), f"nR:{u}": -float(B_0)}, 0.0, {f"sc:{u}": 1.0}) for u in V]
    layers.append(CraftLayer(heads=[edges, rew], mlps=[mlp_from_steps("graph", graph)]))

    # layers 2 .. H+1: forward path sums, each vertex set once
    prop = []
    for u, v in pairs:
        gate = {f"nR:{u}": 1.0, f"nadj:{u}:{v}": 1.0, f"R:{v}": 1.0}
        prop.append(_unit(f"R.{u}.{v}", {"one": 1.0, **{k: -2.0 for k in gate}}, 0.0, {f"R:{v}": 1.0, f"nR:{v}": -1.0}))
        sc_in = {f"sc:{u}": 1.0, f"rwf:{v}": float(K), "unit": -1.0, **{k: -float(B_s) for k in gate}}
        prop.append(_unit(f"sc.{u}.{v}", sc_in, 0.0, {f"sc:{v}": 1.0}))
        fi_in = {f"fi:{u}": 1.0, f"tok:{u}": float(int(v) + 1), **{k: -float(B_f) for k in gate}}
        prop.append(_unit(f"fi.{u}.{v}", fi_in, 0.0, {f"fi:{v}": 1.0}))
    prop_mlp = mlp_from_steps("propagate", prop)
    layers += [CraftLayer(mlps=[prop_mlp]) for _ in range(H)]

    # layer H+2: ne:x:v = |fi:v - (x+1)|, eq:x:v = [fi:v = x+1] from q_j = relu(fi:v - j)
    ind = [_unit("const", {"one": 1.0}, 0.0, {f"ne:{x}:{v}": float(int(x) + 1) for x in V for v in V})]
    for v in V:
        for j in range(n + 1):
            outs = {}
            if j == 0:
                outs.update({f"ne:{x}:{v}": -1.0 for x in V})
            for x in V:
                a = int(x) + 1
                if j == a:
                    outs[f"ne:{x}:{v}"] = outs.get(f"ne:{x}:{v}", 0.0) + 2.0
                    outs[f"eq:{x}:{v}"] = -2.0
                elif j in (a - 1, a + 1):
                    outs[f"eq:{x}:{v}"] = 1.0
            ind.append(_unit(f"q.{v}.{j}", {f"fi:{v}": 1.0}, -float(j), outs))
    layers.append(CraftLayer(mlps=[mlp_from_steps("first-step", ind)]))

    layers += _tournament(V, float(B_g))

    embed = {t: {"one": 1.0, f"tok:{t}": 1.0, **({f"R:{t}": 1.0} if t in V else {}),
                 **{f"nR:{v}": 1.0 for v in V if v != t}} for t in specials + V}
    embed.update({t: {"one": 1.0, "isr": 1.0, "rval": float(k), **{f"nR:{v}": 1.0 for v in V}} for t, k in rtoks})
    meta = {"construction": "value-path", "task": "cogeval", "task_options": dict(task.config), "betas": betas,
            "max_steps": H, "undirected": und, "constants": c, "propagate_layers": [2, 1 + H]}
    return CraftModel(residual=Space(tuple(labels)), vocab=tuple(voc.tokens), embed=embed, layers=layers, max_len=T,
                      readout={f"out:{v}": v for v in V}, attention="causal", pad_token="<pad>", meta=meta)
