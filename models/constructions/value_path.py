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

**Layer 0 -- read the prompt.**  Heads ``prev``/``prev2`` copy the previous
token (``E R V`` and room labels) and the one before (``E R``).  The MLP
marks an edge end ``E u v`` with ``edge:u:v`` and ``is_edge`` (exact steps of
``prev2:E + prev:u + tok:v`` at 2.5, as in :mod:`.search`), marks the decision
position (``qmark``: a step of ``prev:V``), and writes the reward at the
token ``r<k>`` of ``R v r<k>`` as a number: with ``z = G (prev2:R + prev:v +
isr - 5/2)`` (``isr``/``rval``: the reward token's embedding, 1 and ``k``),

    rw:v = relu(rval + z) - relu(z)  =  k  if the statement is about v,  0 otherwise,

exactly whenever ``|z| >= |k|``, i.e. ``G >= 3 R_abs`` given the heads' leak
``<= 1/12`` each (the gated identity: both ReLUs open, or both shut).

**Layer 1 -- gather at the decision position.**  Head ``edges`` attends
uniformly to ``is_edge`` keys (``adjf = A / m``, thresholded by the MLP into
the exact 0/1 ``adj:u:v``).  Head ``rewards`` attends to the reward tokens
and to the decision position itself, all with the same score; values there
are exact and zero elsewhere, so its output is *exactly proportional*:
``rwf:v = w r(v)``, ``unit = w`` with one common weight ``w in (0, 1]``.
Everything below is positively homogeneous in ``(rwf, unit)`` (its gates use
the exact ``adj`` and absolute constants), so ``w`` scales the decision
margin and changes no decision: this head needs no minimum beta.

**Layers 2 .. H+1 -- forward path sums (in place, the same MLP each
time).**  Per vertex: ``R:v`` (reached), ``sc:v = S0 + w (K P(v) - d(v))``
(``S0 = 1 + K H R_neg + H`` keeps it ``>= 1``) and ``fi:v`` (first step +1).
With ``Rt(u) = R:u + tok:u`` (the start counts as reached; ``tok`` is the
decision token ``s``), for every ``u != v``::

    R:v  <- sum_u relu(Rt(u) + adj:u:v - 1)
    sc:v <- sum_u relu(sc:u + S0 tok:u + K rwf:v - unit - B_s (2 - adj:u:v - Rt(u)))
    fi:v <- sum_u relu(fi:u + (v+1) tok:u        - B_f (2 - adj:u:v - Rt(u)))

On an out-tree at most one ``u`` passes the gate (the reachable parent), so
the sums copy that parent's values; the old values are removed by
``-relu(x)`` (all are ``>= 0``).  After ``j`` such layers every vertex at
depth ``<= j`` holds its final values, deeper ones hold zeros.
``B_s = S0 + K (H+1) R_pos`` and ``B_f = n`` shut every other unit.

**Gate.**  ``h:x:v = sc:v [fi:v = x + 1]`` from integers ``f = fi:v``,
``a = x + 1`` and ``B_g = S0 + K H R_pos + 1 > sc``::

    h = relu(sc + B_g (f - a)) - relu(sc + B_g (f - a - 1)) - B_g (relu(f - a) - relu(f - a - 1)).

**Max.**  ``out:x = max_v h:x:v`` by a pairwise tournament,
``max(a, b) = relu(a - b) + relu(b)`` for ``a, b >= 0``, in place over
``ceil(log2 n)`` layers.  Children of ``s`` score ``>= 1``, every other token
0, and two children with different best ``K P - d`` differ by ``>= w``: the
argmax is a first step of an optimal path.

Resources (``n`` room labels, ``H`` steps, prompt width ``T``): layers
``H + 3 + ceil(log2 n)``, 2 heads, ``d_model = 4 n^2 + 5 n + 16 + T``,
``d_mlp = 3 n^2``; see :mod:`algeval.proofs.value_path_claims`.
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
    return {"K": K, "S0": S0, "B_s": S0 + K * (H + 1) * r_pos, "B_f": n, "B_g": S0 + K * H * r_pos + 1,
            "G": 4 * max(abs(min_reward), abs(max_reward), 1)}


def value_path_layers(n: int, max_steps: int) -> int:
    """Layers of the construction: ``H + 3 + ceil(log2 n)``."""
    return max_steps + 3 + math.ceil(math.log2(n))


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
    K, S0, B_s, B_f, B_g, G = c["K"], c["S0"], c["B_s"], c["B_f"], c["B_g"], c["G"]
    max_edges = (T - 2) // 3
    pairs = [(u, v) for u in V for v in V if u != v]

    specials = [t for t in voc.specials]
    labels = ["one"] + [f"tok:{t}" for t in specials + V] + ["isr", "rval"]
    labels += [f"prev:{t}" for t in ["E", "R", "V"] + V] + ["prev2:E", "prev2:R"]
    labels += [f"edge:{u}:{v}" for u, v in pairs] + ["is_edge"] + [f"rw:{v}" for v in V] + ["qmark"]
    labels += [f"adjf:{u}:{v}" for u, v in pairs] + [f"rwf:{v}" for v in V] + ["unit"]
    labels += [f"adj:{u}:{v}" for u, v in pairs]
    labels += [f"{q}:{v}" for q in ("R", "sc", "fi") for v in V]
    labels += [f"h:{x}:{v}" for x in V for v in V] + [f"out:{v}" for v in V] + [f"pos:{i}" for i in range(T)]

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

    # layer 1: the graph and the rewards at the decision position
    b_e = min_beta(T, 1.0, 1.0 / (4 * max_edges), 1.0)
    b_r = min_beta(T, 1.0, 1.0, 1.0)  # only sets the margin's scale w >= 1 / (2 (m_R + 1))
    betas["edges"], betas["rewards"] = b_e, b_r
    edges = HeadSpec("edges", {("one", "is_edge"): b_e},
                     {(f"edge:{u}:{v}", f"adjf:{u}:{v}"): 1.0 for u, v in pairs}, b_e, 1.0)
    rew = HeadSpec("rewards", {("one", "isr"): b_r, ("one", "qmark"): b_r},
                   {**{(f"rw:{v}", f"rwf:{v}"): 1.0 for v in V}, ("qmark", "unit"): 1.0}, b_r, 1.0)
    th = 1.0 / (2 * max_edges)
    adj_steps = [step_units(f"adj.{u}.{v}", {f"adjf:{u}:{v}": 1.0, **({f"adjf:{v}:{u}": 1.0} if und else {})},
                            th, th, {f"adj:{u}:{v}": 1.0}) for u, v in pairs]
    layers.append(CraftLayer(heads=[edges, rew], mlps=[mlp_from_steps("graph", adj_steps)]))

    # layers 2 .. H+1: forward path sums, in place
    prop = []
    for u, v in pairs:
        gate = {f"adj:{u}:{v}": 1.0, f"R:{u}": 1.0, f"tok:{u}": 1.0}
        prop.append(_unit(f"R.{u}.{v}", gate, -1.0, {f"R:{v}": 1.0}))
        sc_in = {f"sc:{u}": 1.0, f"rwf:{v}": float(K), "unit": -1.0}
        sc_in.update({k: w * B_s for k, w in gate.items()})
        sc_in[f"tok:{u}"] += S0
        prop.append(_unit(f"sc.{u}.{v}", sc_in, -2.0 * B_s, {f"sc:{v}": 1.0}))
        fi_in = {f"fi:{u}": 1.0, **{k: w * B_f for k, w in gate.items()}}
        fi_in[f"tok:{u}"] += int(v) + 1
        prop.append(_unit(f"fi.{u}.{v}", fi_in, -2.0 * B_f, {f"fi:{v}": 1.0}))
    for v in V:
        for q in ("R", "sc", "fi"):
            prop.append(_unit(f"old.{q}.{v}", {f"{q}:{v}": 1.0}, 0.0, {f"{q}:{v}": -1.0}))
    prop_mlp = mlp_from_steps("propagate", prop)
    layers += [CraftLayer(mlps=[prop_mlp]) for _ in range(H)]

    # gate: h:x:v = sc:v [fi:v = x + 1]
    gate_units = []
    for v in V:
        for x in V:
            a = int(x) + 1
            gate_units.append(_unit(f"g1.{x}.{v}", {f"sc:{v}": 1.0, f"fi:{v}": B_g}, -B_g * a, {f"h:{x}:{v}": 1.0}))
            gate_units.append(_unit(f"g2.{x}.{v}", {f"sc:{v}": 1.0, f"fi:{v}": B_g}, -B_g * (a + 1),
                                    {f"h:{x}:{v}": -1.0}))
        for j in range(1, n + 1):  # relu(f - j): -B_g for a = j (x = j - 1), +B_g for a + 1 = j (x = j - 2)
            outs = {}
            if j - 1 < n:
                outs[f"h:{j - 1}:{v}"] = -B_g
            if j >= 2:
                outs[f"h:{j - 2}:{v}"] = B_g
            gate_units.append(_unit(f"f.{v}.{j}", {f"fi:{v}": 1.0}, -float(j), outs))
    layers.append(CraftLayer(mlps=[mlp_from_steps("gate", gate_units)]))

    # tournament: out:x = max_v h:x:v
    stride, level = 1, 0
    while stride < n:
        last = 2 * stride >= n
        units = []
        for x in V:
            for j in range(0, n, 2 * stride):
                a, b = f"h:{x}:{j}", f"h:{x}:{j + stride}" if j + stride < n else None
                tgt = f"out:{x}" if last else a
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

    embed = {t: {"one": 1.0, f"tok:{t}": 1.0} for t in specials + V}
    embed.update({t: {"one": 1.0, "isr": 1.0, "rval": float(k)} for t, k in rtoks})
    meta = {"construction": "value-path", "task": "cogeval", "task_options": dict(task.config), "betas": betas,
            "max_steps": H, "undirected": und, "constants": c, "propagate_layers": [2, 1 + H]}
    return CraftModel(residual=Space(tuple(labels)), vocab=tuple(voc.tokens), embed=embed, layers=layers, max_len=T,
                      readout={f"out:{v}": v for v in V}, attention="causal", pad_token="<pad>", meta=meta)
