"""A hand-built transformer for ``k-hop-induction`` at depth ``floor(log2 k) + 2``.

It reads the task's own tokens (``a0 .. a{m-1}``, no BOS, causal mask) and
predicts, at *every* position ``i``, ``hop_k(X)[i]`` as
:func:`algeval.theory.khop.khop` defines it, or the extra output token
``<none>`` where ``hop_k`` is undefined.  Written at the craft level
(:mod:`algeval.models.craft`) on named residual directions, one head per layer.
(The compiler's ``SelectBest`` could express layer 0, but not the pointer
lookups below, which attend to the key whose *position* equals a one-hot
pointer stored at the query.)

**Pointers.**  ``f = find_1``; a pointer ``P(i)`` in ``1 .. T-1`` is the one-hot
``ptr:p``; "undefined" (``-1``) is the all-zero vector.  Position ``0`` is never a
value of ``f`` (``f(i) >= 1``), so key ``0`` serves as the *null* key: every
lookup attends there when its pointer is undefined, and every quantity stored
at position ``0`` is undefined for ``c >= 1`` hops, so "undefined" is absorbing.

**Layer 0 -- one hop in one attention layer.**  ``f(i) = j' + 1`` with ``j'`` the
latest ``j' < i`` holding ``X[j'] = X[i]`` (the definition's ``X[j-1] = X[i]``,
``j <= i``, with ``j = j' + 1``), so no previous-token layer is needed.  The head
scores key ``j <= i`` (``[.]`` the indicator)::

    score(i, j) = beta * (2T [X_j = X_i] + j) - beta (T + i) [j = i]

so an earlier match scores ``>= 2T beta``, later matches more; the query itself
scores ``T beta``; a non-match ``<= (T - 2) beta``: the latest earlier match wins
by a gap ``>= beta`` (``Delta = 1``), and with no earlier match the query
attends to itself.  The value copies the key's position, ``pos:j -> att:j``
(``j <= T-2``), and the MLP shifts it and discards "itself"::

    ptr0:(j+1) = step(att:j - pos:j > 1/2)      (pos:j is the query's own position)

an exact step (:func:`~algeval.models.craft.step_units`, dead zone 1/4).

**Layer l >= 1 -- one lookup, two compositions.**  With ``D_l = f^(2^l)`` (the
pointer ``ptr_l``) and ``Tok_l = X[f^(c_l)]`` (``tok_l:*``, ``none_l``; ``Tok_0 = X``),
the head attends from ``i`` to the key ``q = D_{l-1}(i)``::

    score(i, j) = beta * (sum_p ptr_{l-1}:p[i] pos:p[j] + 1/2 [j = 0])      (Delta = 1/2)

and reads ``D_{l-1}(q)`` and ``Tok_{l-1}(q)`` there.  Since powers of ``f`` commute,

    D_l(i)   = D_{l-1}(D_{l-1}(i)) = f^(2^l)(i),
    Tok_l(i) = Tok_{l-1}(D_{l-1}(i)) = X[f^(c_{l-1} + 2^(l-1))(i)]   when bit b_{l-1} of k is 1

(``Tok_l = Tok_{l-1}`` when the bit is 0: no head output, no directions).  So
``c_l = sum_{j < l} b_j 2^j`` and after layer ``t + 1``, ``t = floor(log2 k)`` the top
bit, ``c = k``: ``Tok = hop_k``.  The pointer is doubled only while a later layer
reads it (``l <= t``).  The MLP cleans the averaged values with exact steps::

    ptr_l:p = step(raw:p > 1/2),   tok_l:a = step(rawtok:a - rawnone > 1/2),   none_l = step(rawnone > 1/2)

where ``rawnone`` reads ``none_{l-1}`` *and* ``pos:0`` (the null key), so a lookup
through an undefined pointer yields ``<none>`` even when ``c_{l-1} = 0``.

**Depth.**  Layer 0 makes ``f`` (no token at the pointer yet); lookup layer
``l`` makes ``D_l = f^(2^l)`` and extends the token hop count by ``2^(l-1)``, so
``L`` layers reach any ``k <= 2^(L-1) - 1``: ``L = floor(log2 k) + 2``, the
Sanford--Hsu--Telgarsky bound, with 1 head per layer.

**Inverse temperatures** (:func:`algeval.theory.bounds.min_beta`): every
consumer is an exact step with dead zone ``eta = 1/4``; the largest value
deviation is ``M = 1`` for layer 0 and ``M = 3`` for a lookup
(``rawtok - rawnone`` spans ``[-2, 1]``), so ``beta_0 = log(4 (T - 1)) / 1``,
``beta_l = log(12 (T - 1)) / (1/2)``.  Every step output is clean, so no error
carries between layers.
"""

from __future__ import annotations

from algeval.errors import ParameterError, check_int_range
from algeval.models.craft import CraftLayer, CraftModel, HeadSpec, Space, mlp_from_steps, step_units
from algeval.theory.bounds import min_beta

NONE_TOKEN = "<none>"
SLACK = 0.25  # the dead zone of every step (threshold 1/2, width 1/2)
DEV_FIND, DEV_LOOKUP = 1.0, 3.0  # largest value deviation seen by each head's consumer
GAP_FIND, GAP_LOOKUP = 1.0, 0.5


def khop_layers(k: int) -> int:
    """``floor(log2 k) + 2``: layer 0 finds one hop, each later layer adds the next bit of ``k``."""
    k = check_int_range("k", k, lo=1)
    return k.bit_length() + 1


def derived_betas(seq_len: int) -> dict[str, float]:
    """The inverse temperatures from the leak bound: ``find`` (layer 0) and ``lookup`` (layers >= 1)."""
    return {"find": min_beta(seq_len, DEV_FIND, SLACK, GAP_FIND),
            "lookup": min_beta(seq_len, DEV_LOOKUP, SLACK, GAP_LOOKUP)}


def khop_induction(task, beta_scale: float = 1.0) -> CraftModel:
    """The construction for a ``k-hop-induction`` (or ``induction``) task; see the module docstring.

    ``beta_scale`` multiplies every derived inverse temperature (for measuring
    the smallest that still works; 1 is the derived value).
    """
    if getattr(task, "name", None) not in ("k-hop-induction", "induction"):
        raise ParameterError("task", getattr(task, "name", task), "needs the k-hop-induction or induction task")
    if not beta_scale > 0:
        raise ParameterError("beta_scale", beta_scale, "must be > 0")
    T, k, m = task.max_len, task.k, task.m
    syms = [f"a{a}" for a in range(m)]
    t = k.bit_length() - 1  # the top bit of k
    bits = [(k >> j) & 1 for j in range(t + 1)]
    betas = {name: b * beta_scale for name, b in derived_betas(T).items()}
    P = range(1, T)  # pointer values (0 = the null key, never a value of find_1)

    labels = ["one"] + [f"tok:{a}" for a in syms]
    # layer 0: the latest earlier occurrence of the query's token, shifted by one
    bf = betas["find"]
    qk = {(f"tok:{a}", f"tok:{a}"): bf * 2 * T for a in syms}
    qk.update({("one", f"pos:{j}"): bf * j for j in range(1, T)})
    qk.update({(f"pos:{i}", f"pos:{i}"): -bf * (T + i) for i in range(T)})
    find = HeadSpec("find", qk, {(f"pos:{j}", f"att:{j}"): 1.0 for j in range(T - 1)}, bf, GAP_FIND)
    steps = [step_units(f"ptr0.{j + 1}", {f"att:{j}": 1.0, f"pos:{j}": -1.0}, 0.5, 0.5, {f"ptr0:{j + 1}": 1.0})
             for j in range(T - 1)]
    labels += [f"att:{j}" for j in range(T - 1)] + [f"ptr0:{p}" for p in P]
    layers = [CraftLayer(heads=[find], mlps=[mlp_from_steps("ptr0", steps)])]

    tok_src, none_src = "tok", None  # where Tok_{l-1} lives (Tok_0 = the input tokens, never undefined)
    c = 0
    bl = betas["lookup"]
    for l in range(1, t + 2):
        last = l == t + 1
        qk = {(f"ptr{l - 1}:{p}", f"pos:{p}"): bl for p in P}
        qk[("one", "pos:0")] = bl * GAP_LOOKUP
        ov, steps = {}, []
        if not last:  # D_l = D_{l-1} o D_{l-1}
            ov.update({(f"ptr{l - 1}:{p}", f"rawptr{l}:{p}"): 1.0 for p in P})
            steps += [step_units(f"ptr{l}.{p}", {f"rawptr{l}:{p}": 1.0}, 0.5, 0.5, {f"ptr{l}:{p}": 1.0}) for p in P]
            labels += [f"rawptr{l}:{p}" for p in P] + [f"ptr{l}:{p}" for p in P]
        if bits[l - 1]:  # Tok_l = Tok_{l-1} o D_{l-1}
            out_tok, out_none = ("out", "out:none") if last else (f"tok{l}", f"none{l}")
            ov.update({(f"{tok_src}:{a}", f"rawtok{l}:{a}"): 1.0 for a in syms})
            ov[("pos:0", f"rawnone{l}")] = 1.0
            if none_src is not None:
                ov[(none_src, f"rawnone{l}")] = 1.0
            steps += [step_units(f"{out_tok}.{a}", {f"rawtok{l}:{a}": 1.0, f"rawnone{l}": -1.0}, 0.5, 0.5,
                                 {f"{out_tok}:{a}": 1.0}) for a in syms]
            steps.append(step_units(f"{out_tok}.none", {f"rawnone{l}": 1.0}, 0.5, 0.5, {out_none: 1.0}))
            labels += [f"rawtok{l}:{a}" for a in syms] + [f"rawnone{l}"]
            labels += [f"{out_tok}:{a}" for a in syms] + [out_none]
            tok_src, none_src, c = out_tok, out_none, c + 2 ** (l - 1)
        head = HeadSpec(f"lookup{l}", qk, ov, bl, GAP_LOOKUP)
        layers.append(CraftLayer(heads=[head], mlps=[mlp_from_steps(f"clean{l}", steps)]))
    assert c == k and tok_src == "out", (c, k)

    labels += [f"pos:{i}" for i in range(T)]
    embed = {a: {"one": 1.0, f"tok:{a}": 1.0} for a in syms}
    embed["<pad>"] = {"one": 1.0}
    readout = {f"out:{a}": a for a in syms}
    readout["out:none"] = NONE_TOKEN
    meta = {"construction": "k-hop", "task": task.name, "task_options": dict(task.config), "k": k,
            "depth": len(layers), "depth_bound": khop_layers(k), "betas": betas, "beta_scale": beta_scale,
            "bits": bits, "outputs": "hop_k at every position; <none> where it is undefined"}
    return CraftModel(residual=Space(tuple(labels)), vocab=tuple(task.vocab.tokens), embed=embed, layers=layers,
                      max_len=T, readout=readout, attention="causal", pad_token=None, meta=meta)


def intended_keys(find_steps, k: int):
    """Per layer, the key each query should attend to, from the reference's ``find`` ``(steps, ..., T)``.

    Layer 0: ``find_1(i) - 1``, or ``i`` when undefined; layer ``l >= 1``:
    ``f^(2^(l-1))(i)``, or ``0`` (the null key) when undefined.  ``find_steps``
    must hold steps ``0 .. 2^t`` (``t = floor(log2 k)``).
    """
    import numpy as np

    f = np.asarray(find_steps)
    i = np.broadcast_to(np.arange(f.shape[-1]), f.shape[1:])
    out = [np.where(f[1] >= 0, f[1] - 1, i)]
    for l in range(1, khop_layers(k)):
        out.append(np.maximum(f[2 ** (l - 1)], 0))
    return out


__all__ = ["khop_induction", "khop_layers", "derived_betas", "intended_keys", "NONE_TOKEN"]
