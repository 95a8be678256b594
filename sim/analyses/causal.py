"""Causal tests: corrupted pairs, activation patching, attribution patching, head ablation.

**Pairs** (:func:`corrupted_pairs`, search batches).  The corrupted example
rewires *one edge*: the edge into the goal from its predecessor on the
correct path, ``a -> g``, becomes ``x -> g`` with ``x`` a competing vertex
(reached from another child of the current vertex, not reachable from the
goal, so the graph stays acyclic).  Only the source token of that edge's
``E a g`` triple changes (``a`` -> ``x``), so every token position stays
aligned.  A pair is kept when the corrupted answer set is non-empty and
disjoint from the clean one (the old branch no longer reaches the goal).

**Metric.**  ``LD = logit[clean answer] - logit[corrupt answer]`` at the
decision position (the first token of each answer set).

**Activation patching** (:func:`activation_patching`): run the *corrupted*
input and replace ``blocks.{l}.attn.hook_z[:, pos, head]`` by its value on
the clean input; ``effect = LD(patched) - LD(corrupt)``, for every
``(layer, pos, head)``.  All ``layers x positions x heads`` configurations
are one jitted call: ``jax.vmap`` over configuration indices (the patch mask
of the layer-stacked site ``blocks.*.attn.hook_z`` is built from the index
inside the vmapped function), ``jax.lax.map`` over chunks of them.

**Attribution patching** (:func:`attribution_patching`): the first-order
estimate of the same effect, ``grad_z LD(corrupt) . (z_clean - z_corrupt)``,
with one gradient (``jax.grad`` through an ``add`` patch of zeros at
``blocks.*.attn.hook_z``) for all layers, positions and heads.

**Ablation** (:func:`ablate_heads`, :func:`head_ablation_sweep`): replace a
set of heads' ``hook_z`` by zero or by its mean over the batch's non-pad
positions; report accuracy and answer-set loss at the decision position.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from algeval.errors import ParameterError
from algeval.models.hooks import Patch
from algeval.sim.analyses.common import decision_positions, graph_info
from algeval.sim.analyses.named import Named
from algeval.theory.graph import transitive_closure

SITE = "attn.hook_z"


# --- pairs --------------------------------------------------------------------------------

def corrupted_pairs(batch, seed: int = 0, max_pairs: int | None = None):
    """``(clean, corrupt, index)``: aligned pairs that differ in one edge (module docstring).

    ``index`` are the rows of ``batch`` that gave a pair (``clean = batch[index]``).
    """
    if batch.task != "search":
        raise ParameterError("task", batch.task, "corrupted pairs are made from search batches")
    from algeval.sim.tasks.base import TaskBatch

    rng = np.random.default_rng(seed)
    info = graph_info(batch)
    vo = batch.vocab.vertex_offset
    E = batch.vocab.id("E")
    keep, toks, adjs, answers, paths, looks = [], [], [], [], [], []
    K = batch.answers.shape[2]
    for i in range(len(batch)):
        if max_pairs is not None and len(keep) >= max_pairs:
            break
        path = [int(v) for v in batch.meta["path"][i] if v >= 0]
        c, g = int(info.decision[i]), int(info.target[i])
        if g < 0 or c not in path or path.index(c) >= len(path) - 1:
            continue
        a = path[-2]
        adj = info.adj[i]
        tc = transitive_closure(adj)
        tok = np.asarray(batch.tokens[i])
        hits = np.flatnonzero((tok[:-2] == E) & (tok[1:-1] == vo + a) & (tok[2:] == vo + g))
        if len(hits) != 1:
            continue
        cands = [x for x in np.flatnonzero(info.competing[i] & info.mentioned[i]) if not tc[g, x] and x != a]
        rng.shuffle(cands)
        old = set(np.flatnonzero(info.answer_children[i]).tolist())
        for x in cands:
            new = adj.copy()
            new[a, g], new[x, g] = False, True
            reach_g = transitive_closure(new)[:, g]
            ans = set(np.flatnonzero(new[c] & reach_g).tolist())
            if not ans or ans & old or len(ans) > K:
                continue
            t2 = tok.copy()
            t2[hits[0] + 1] = vo + x
            keep.append(i)
            toks.append(t2)
            adjs.append(new)
            row = np.full(K, -1, np.int32)
            row[: len(ans)] = vo + np.asarray(sorted(ans))
            answers.append(row)
            # the new correct path: greedy descent from the start along vertices that reach the goal
            p, cur = [int(batch.meta["start"][i])], int(batch.meta["start"][i])
            while cur != g and len(p) <= new.shape[0]:
                cur = int(np.flatnonzero(new[cur] & reach_g)[0])
                p.append(cur)
            pr = np.full(batch.meta["path"].shape[1], -1, np.int64)
            pr[: min(len(p), len(pr))] = p[: len(pr)]
            paths.append(pr)
            looks.append(len(p) - 1 - p.index(c) if c in p else -1)
            break
    idx = np.asarray(keep, np.int64)
    if not len(idx):
        raise ParameterError("batch", f"{len(batch)} examples", "no example admits a one-edge corruption")
    clean = batch[idx]
    ans = clean.answers.copy()
    qpos = decision_positions(clean)
    ans[np.arange(len(idx)), qpos] = np.stack(answers)
    meta = dict(clean.meta)
    meta.update(adj=np.stack(adjs), path=np.stack(paths), lookahead=np.asarray(looks))
    corrupt = TaskBatch(clean.task, np.stack(toks).astype(np.int32), ans, clean.loss_mask.copy(), clean.vocab,
                        clean.attention, meta)
    return clean, corrupt, idx


# --- helpers ---------------------------------------------------------------------------------

def _first_answer(batch) -> np.ndarray:
    q = decision_positions(batch)
    return np.asarray(batch.answers)[np.arange(len(batch)), q, 0]


def _ld(logits, qpos, a_clean, a_corr):
    b = jnp.arange(logits.shape[0])
    row = logits[b, qpos].astype(jnp.float32)
    return row[b, a_clean] - row[b, a_corr]


def _stack(cache, L):
    return jnp.stack([cache[f"blocks.{l}.{SITE}"] for l in range(L)])


def _prefix(batch):
    pe = batch.meta.get("prefix_end")
    return None if pe is None else jnp.asarray(pe)


def logit_diffs(model, clean, corrupt) -> tuple[np.ndarray, np.ndarray]:
    """``(LD_clean (P,), LD_corrupt (P,))``."""
    fn, state = model.functional(())
    q = jnp.asarray(decision_positions(clean))
    a1, a2 = jnp.asarray(_first_answer(clean)), jnp.asarray(_first_answer(corrupt))
    f = jax.jit(lambda s, t, pe: _ld(fn(s, t, None, pe)[0], q, a1, a2))
    return (np.asarray(f(state, jnp.asarray(clean.tokens), _prefix(clean))),
            np.asarray(f(state, jnp.asarray(corrupt.tokens), _prefix(corrupt))))


# --- activation patching ------------------------------------------------------------------------

def activation_patching(model, clean, corrupt, *, chunk: int = 128, positions=None, resume: bool = True) -> dict:
    """Effect of patching clean ``hook_z`` into the corrupted run, per (pair, layer, pos, head).

    Every configuration ``(pair, layer, pos, head)`` whose clean and corrupted ``hook_z``
    differ is one forward of that pair's corrupted tokens with ``blocks.{layer}.attn.hook_z``
    replaced at ``(pos, head)``.  Layers before ``layer`` are the corrupted run's, so each
    forward resumes at ``layer`` from the cached corrupted ``hook_resid_pre``
    (:meth:`~algeval.models.transformer.Transformer.functional` with ``start``): on average
    about half the layers are run.  Per layer, all its configurations are one jitted call
    (``jax.vmap`` over configurations, ``jax.lax.map`` over chunks of ``chunk``).  Where the
    two activations are identical (e.g. positions before the rewired edge under causal
    attention) patching changes nothing, so the effect is exactly 0 and is not run.

    ``positions``: the positions swept (default all).  ``resume=False`` runs every forward from the
    embedding instead (the same numbers, for benchmarks and tests).  Returns ``effect`` (Named: pair, layer,
    pos, head) = ``LD(patched) - LD(corrupt)``, ``ld_clean``, ``ld_corrupt`` (Named: pair),
    ``normalized`` (Named: layer, pos, head) = mean effect / mean(LD_clean - LD_corrupt), and
    ``n_runs`` (forward passes made).
    """
    cfg = model.cfg
    L, H = cfg.n_unrolled(), cfg.n_heads
    P, T = clean.tokens.shape
    pos = np.arange(T) if positions is None else np.asarray(positions, np.int64)
    fn_c, state = model.functional(f"blocks.*.{SITE}")
    pe_c, pe_x = _prefix(clean), _prefix(corrupt)
    q = jnp.asarray(decision_positions(clean))
    a1, a2 = jnp.asarray(_first_answer(clean)), jnp.asarray(_first_answer(corrupt))
    lc, cc = jax.jit(fn_c)(state, jnp.asarray(clean.tokens), None, pe_c)
    zc = _stack(cc, L)  # (L, P, T, H, E)
    fn_x, _ = model.functional([f"blocks.*.{SITE}", "blocks.*.hook_resid_pre"])
    lx, cx = jax.jit(fn_x)(state, jnp.asarray(corrupt.tokens), None, pe_x)
    zx = _stack(cx, L)
    ld_clean, ld_corr = np.asarray(_ld(lc, q, a1, a2)), np.asarray(_ld(lx, q, a1, a2))
    differs = np.array(jnp.any(zc != zx, axis=-1))  # (L, P, T, H)
    sel = np.zeros(T, bool)
    sel[pos] = True
    differs &= sel[None, None, :, None]
    eff = np.zeros((P, L, T, H))
    toks = jnp.asarray(corrupt.tokens)
    n_runs = 0
    for l in range(L):
        pp, tt, hh = np.nonzero(differs[l])
        N = len(pp)
        if not N:
            continue
        n_runs += N
        start = l if resume else 0
        fn, _ = model.functional((), start=start)
        site = f"blocks.{l}.{SITE}"
        zl = zc[l]                                                           # (P, T, H, E)
        resid = None if start == 0 else cx[f"blocks.{l}.hook_resid_pre"]    # (P, T, d_model)

        def one(state, e, toks, zl, resid, q, a1, a2, pe, fn=fn, site=site, l=start):
            p, t, h = e[0], e[1], e[2]
            mask = (jnp.arange(T) == t)[None, :, None, None] & (jnp.arange(H) == h)[None, None, :, None]
            tk = jax.lax.dynamic_slice_in_dim(toks, p, 1, 0)
            pre = None if pe is None else jax.lax.dynamic_slice_in_dim(pe, p, 1, 0)
            r = None if l == 0 else jax.lax.dynamic_slice_in_dim(resid, p, 1, 0)
            z = jax.lax.dynamic_slice_in_dim(zl, p, 1, 0)
            logits, _ = fn(state, tk, {site: Patch(mask, z)}, pre, r)
            return _ld(logits, q[p][None], a1[p][None], a2[p][None])[0]

        @jax.jit
        def sweep(state, entries, *args, one=one):
            return jax.lax.map(jax.vmap(lambda e: one(state, e, *args)), entries)

        c = max(1, min(chunk, N))
        n_chunks = -(-N // c)
        ent = np.stack([pp, tt, hh], 1)
        ent = np.concatenate([ent, np.repeat(ent[-1:], n_chunks * c - N, 0)]).reshape(n_chunks, c, 3)
        ld = np.asarray(sweep(state, jnp.asarray(ent, jnp.int32), toks, zl, resid, q, a1, a2, pe_x)).reshape(-1)[:N]
        eff[pp, l, tt, hh] = ld - ld_corr[pp]
    eff = eff[:, :, pos]
    denom = float(np.mean(ld_clean - ld_corr))
    coords = {"layer": list(range(L)), "pos": pos.tolist()}
    return {"effect": Named(eff, ("pair", "layer", "pos", "head"), coords),
            "ld_clean": Named(ld_clean, ("pair",)), "ld_corrupt": Named(ld_corr, ("pair",)),
            "normalized": Named(eff.mean(0) / denom if denom != 0 else np.full(eff.shape[1:], np.nan),
                                ("layer", "pos", "head"), coords),
            "n_runs": int(n_runs)}


def attribution_patching(model, clean, corrupt, *, chunk: int = 256) -> dict:
    """First-order estimate of :func:`activation_patching`'s effect, per (pair, layer, pos, head), and the
    logit differences of both runs (``ld_clean``, ``ld_corrupt``: Named pair), from the same passes."""
    cfg = model.cfg
    L = cfg.n_unrolled()
    P, T = clean.tokens.shape
    fn_c, state = model.functional(f"blocks.*.{SITE}")
    q_all = decision_positions(clean)
    a1_all, a2_all = _first_answer(clean), _first_answer(corrupt)

    @jax.jit
    def one(state, tc, tx, q, a1, a2, pe_c, pe_x):
        lc, cc = fn_c(state, tc, None, pe_c)
        zc = _stack(cc, L)

        def total(delta):
            logits, cx = fn_c(state, tx, {f"blocks.*.{SITE}": Patch(jnp.ones((L, 1, 1, 1, 1), bool), delta, "add")}, pe_x)
            ld = _ld(logits, q, a1, a2)
            return ld.sum(), (_stack(cx, L), ld)

        g, (zx, ld_x) = jax.grad(total, has_aux=True)(jnp.zeros_like(zc))
        return jnp.einsum("lbthe,lbthe->blth", g, zc - zx), _ld(lc, q, a1, a2), ld_x

    outs = []
    pc, px = clean.meta.get("prefix_end"), corrupt.meta.get("prefix_end")
    for s in range(0, P, chunk):
        sl = slice(s, min(s + chunk, P))
        outs.append([np.asarray(o) for o in one(
            state, jnp.asarray(clean.tokens[sl]), jnp.asarray(corrupt.tokens[sl]), jnp.asarray(q_all[sl]),
            jnp.asarray(a1_all[sl]), jnp.asarray(a2_all[sl]), None if pc is None else jnp.asarray(pc[sl]),
            None if px is None else jnp.asarray(px[sl]))])
    attr, ld_c, ld_x = (np.concatenate(o) for o in zip(*outs))
    return {"attribution": Named(attr, ("pair", "layer", "pos", "head"),
                                 {"layer": list(range(L)), "pos": list(range(T))}),
            "ld_clean": Named(ld_c, ("pair",)), "ld_corrupt": Named(ld_x, ("pair",))}


# --- ablation -------------------------------------------------------------------------------

def _decision_targets(batch):
    q = decision_positions(batch)
    return jnp.asarray(q), jnp.asarray(np.asarray(batch.answers)[np.arange(len(batch)), q])


def _decision_metrics(logits, q, ans):
    b = jnp.arange(logits.shape[0])
    row = logits[b, q].astype(jnp.float32)
    valid = ans >= 0
    logp = jax.nn.log_softmax(row, -1)
    picked = jnp.where(valid, jnp.take_along_axis(logp, jnp.maximum(ans, 0), -1), -jnp.inf)
    loss = -jax.scipy.special.logsumexp(picked, -1)
    acc = (ans == row.argmax(-1)[:, None]).any(-1)
    return acc.mean(), loss.mean()


def _clean_pass(model, batch, mode: str, resid: bool = False):
    """One clean pass: ``(value, logits, resid_pre)``.  ``value (L, 1, 1, H, E)`` replaces ``hook_z`` when
    ablating: zeros, or its mean over the batch's non-pad positions; ``resid_pre`` is ``{layer:
    hook_resid_pre (B, T, d_model)}`` with ``resid``, else ``None``."""
    cfg = model.cfg
    L, H, E = cfg.n_unrolled(), cfg.n_heads, cfg.d_head
    if mode not in ("zero", "mean"):
        raise ParameterError("mode", mode, "must be 'zero' or 'mean'")
    names = ([f"blocks.*.{SITE}"] if mode == "mean" else []) + (["blocks.*.hook_resid_pre"] if resid else [])
    fn, state = model.functional(names or ())
    logits, cache = jax.jit(fn)(state, jnp.asarray(batch.tokens), None, _prefix(batch))
    if mode == "zero":
        val = jnp.zeros((L, 1, 1, H, E))
    else:
        z = _stack(cache, L)  # (L, B, T, H, E)
        w = jnp.asarray(np.asarray(batch.tokens) != 0, jnp.float32)[None, :, :, None, None]
        val = ((z * w).sum((1, 2)) / w.sum((1, 2)))[:, None, None]
    return val, logits, ({l: cache[f"blocks.{l}.hook_resid_pre"] for l in range(L)} if resid else None)


def ablate_heads(model, batch, heads, mode: str = "zero") -> dict:
    """Accuracy and loss at the decision position with ``heads`` (list of ``(layer, head)``) ablated."""
    cfg = model.cfg
    L, H = cfg.n_unrolled(), cfg.n_heads
    m = np.zeros((L, 1, 1, H, 1), bool)
    for l, h in heads:
        if not (0 <= l < L and 0 <= h < H):
            raise ParameterError("heads", (l, h), f"layer must be < {L} and head < {H}")
        m[l, 0, 0, h, 0] = True
    fn, state = model.functional(())
    val, logits0, _ = _clean_pass(model, batch, mode)
    toks, pe = jnp.asarray(batch.tokens), _prefix(batch)
    qa = _decision_targets(batch)
    a0, l0 = _decision_metrics(logits0, *qa)
    a1, l1 = _decision_metrics(jax.jit(fn)(state, toks, {f"blocks.*.{SITE}": Patch(jnp.asarray(m), val)}, pe)[0], *qa)
    return {"accuracy": float(a1), "loss": float(l1), "accuracy_clean": float(a0), "loss_clean": float(l0),
            "heads": [list(map(int, x)) for x in heads], "mode": mode}


def head_ablation_sweep(model, batch, mode: str = "mean") -> dict:
    """Ablate each head alone: Named (layer, head, metric) of accuracy/loss changes.

    A head of layer ``l`` is ablated by resuming the clean pass at ``l`` from its cached
    ``hook_resid_pre`` with ``blocks.{l}.attn.hook_z`` replaced for that head; per layer,
    all heads are one vmapped call."""
    cfg = model.cfg
    L, H = cfg.n_unrolled(), cfg.n_heads
    val, logits0, resid = _clean_pass(model, batch, mode, resid=True)
    _, state = model.functional(())
    toks, pe = jnp.asarray(batch.tokens), _prefix(batch)
    q, ans = _decision_targets(batch)
    a0, l0 = _decision_metrics(logits0, q, ans)
    r = np.zeros((L, H, 2))
    for l in range(L):
        fn, _ = model.functional((), start=l)
        site = f"blocks.{l}.{SITE}"

        @jax.jit
        def per_layer(state, toks, v, q, ans, pe, x, fn=fn, site=site):
            def one(h):
                mask = (jnp.arange(H) == h)[None, None, :, None]
                logits, _ = fn(state, toks, {site: Patch(mask, v)}, pe, x)
                return jnp.stack(_decision_metrics(logits, q, ans))
            return jax.vmap(one)(jnp.arange(H))

        r[l] = np.asarray(per_layer(state, toks, val[l], q, ans, pe, None if l == 0 else resid[l]))
    vals = np.stack([r[..., 0], r[..., 1], r[..., 0] - float(a0), r[..., 1] - float(l0)], -1)
    return {"effects": Named(vals, ("layer", "head", "metric"),
                             {"layer": list(range(L)), "metric": ["accuracy", "loss", "delta_accuracy", "delta_loss"]}),
            "accuracy_clean": float(a0), "loss_clean": float(l0), "mode": mode}


def causal_tests(model, batch, *, n_exact: int = 50, n_attr: int | None = None, seed: int = 0,
                 ablation_mode: str = "mean", n_ablation: int = 128, attention: dict | None = None) -> dict:
    """Pairs, exact patching on ``n_exact`` pairs, attribution on ``n_attr`` (default all), and the
    single-head ablation sweep on the first ``n_ablation`` examples.

    With ``attention`` (the result of :func:`~algeval.sim.analyses.attention.attention_to_path`),
    also ``path_heads``: the correlation over heads of the per-head correct-path preference ``b``
    with the head's ablation damage (``delta_loss``), with a permutation p-value.
    """
    clean, corrupt, idx = corrupted_pairs(batch, seed)
    n_attr = len(idx) if n_attr is None else min(n_attr, len(idx))
    attr = attribution_patching(model, clean[:n_attr], corrupt[:n_attr])
    ne = min(n_exact, len(idx))
    act = activation_patching(model, clean[:ne], corrupt[:ne])
    a = attr["attribution"].values[:ne]
    e = act["effect"].values
    ok = np.isfinite(a) & np.isfinite(e)
    r = float(np.corrcoef(a[ok], e[ok])[0, 1]) if ok.sum() > 2 and a[ok].std() > 0 and e[ok].std() > 0 else float("nan")
    ld_c, ld_x = attr["ld_clean"].values, attr["ld_corrupt"].values
    sweep = head_ablation_sweep(model, batch[: min(n_ablation, len(batch))], ablation_mode)
    out = {"n_pairs": int(len(idx)), "n_exact": int(ne), "n_attribution": int(n_attr),
           "pair_index": idx, "activation": act, "attribution": attr,
           "attribution_vs_activation_r": r,
           "attribution_by_layer_head": Named(np.abs(attr["attribution"].values).mean((0, 2)), ("layer", "head"),
                                              {"layer": list(range(model.cfg.n_unrolled()))}),
           "ld_clean_mean": float(np.mean(ld_c)), "ld_corrupt_mean": float(np.mean(ld_x)),
           "head_ablation": sweep}
    if attention is not None:
        b = attention["per_head"].sel(stat="b").values.ravel()
        d = sweep["effects"].sel(metric="delta_loss").values.ravel()
        out["path_heads"] = _perm_corr(b, d, seed)
    return out


def _perm_corr(x, y, seed, n_perm: int = 1000) -> dict:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return {"r": float("nan"), "p": float("nan"), "n": int(len(x))}
    r = float(np.corrcoef(x, y)[0, 1])
    rng = np.random.default_rng(seed)
    null = np.array([np.corrcoef(x, rng.permutation(y))[0, 1] for _ in range(n_perm)])
    return {"r": r, "p": float((1 + (null >= r).sum()) / (n_perm + 1)), "n": int(len(x))}
