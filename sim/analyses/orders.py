"""Order matching: in which order do node representations change, and which search order is that?

**The model's order.**  Each vertex ``v`` gets an event time ``tau(v)``, the
first block whose change of ``v``'s representation is at least 1.5 times
``v``'s median change per block (:func:`algeval.sim.analyses.geometry.event_times`;
``n_layers`` = never).  Only the vertices reachable from the decision vertex
``s`` take part, and ``s`` itself is left out (every search order starts with
it, so it carries no information).

**Scores.**  For a total order ``pi`` of those vertices, the *agreement* is
Kendall's concordance restricted to the pairs the model orders strictly:

    A(pi, tau) = #{ u before v in pi : tau(u) < tau(v) } / #{ {u, v} : tau(u) != tau(v) }

(in ``[0, 1]``; undefined -- NaN -- when ``tau`` has no strict pair).  The
score of an algorithm is the agreement of its *best-matching* valid order:

* ``bfs``: the maximum over every queue-based BFS order from ``s``
  (:func:`algeval.theory.orders.all_bfs_orders`);
* ``dfs``: the maximum over every preorder DFS order from ``s``
  (:func:`algeval.theory.orders.all_dfs_orders`);
* ``path_merging``: the maximum over the orders that sort vertices by the
  path-merging step at which ``s`` first reaches them,
  ``sigma(v) = ceil(log2 d(s, v))`` (``reach[l][s, v]`` holds from step
  ``sigma(v)`` on), ties in any order -- closed form: a strict ``tau`` pair
  counts as agreeing when ``sigma`` ties or orders it the same way.

The BFS and DFS maxima are found exactly by dynamic programming over the
search's **state graph**, never by listing orders.  The agreement is a sum
over placements: placing ``v`` when the set ``S`` is already placed gains
``#{u not in S, u != v : tau(v) < tau(u)}``, which depends on ``S`` only.
The future of a search depends on a small canonical state:

* BFS: ``(S, queue)``, the queue holding the placed vertices that still have
  an undiscovered out-neighbour, in placement order (its head is the vertex
  being expanded; the choices are the head's undiscovered out-neighbours);
* DFS: ``(S, stack)``, the stack filtered the same way (the choices are the
  top's unvisited out-neighbours).

Vertices without an undiscovered out-neighbour are dropped (they can never
offer a choice again), so equal futures share one state.  The best total is
then ``f(state) = max_v gain(S, v) + f(next)``, solved level by level (level
= ``|S|``) for all examples, the model's ``tau``, the control model's and
the permutations at once (numpy).  State graphs are cached by graph
structure (vertices in ``meta["vertex_labels"]`` order when the task gives
it, so a fixed CogEval graph is built once).

**Schedule scores** (which layer, not only which order): the fraction of the
scored vertices with ``tau(v) = pred(v) + o < n_layers`` (the hypothesis
names the block that changes ``v``, and the model has that block),
maximised over a global offset ``o in {0, 1, 2}`` per example, with ``pred_bfs(v) = d(s, v) - 1``
(one hop per block) and ``pred_path_merging(v) = ceil(log2 d(s, v))``
(doubling reach per block).

**Chance.**  The same scores for ``n_perm`` random permutations of the
``tau`` values among the scored vertices of each example (same search, same
maximisation).  Reported: the mean score over examples, the mean chance,
``p_perm`` (normal approximation to the permutation distribution of the
mean; also the empirical ``(1 + #{perm mean >= score}) / (n_perm + 1)``),
and, with a control model, its score and a one-sided paired t-test over
examples (an example where the control's ``tau`` has no strict pair counts
at that example's permutation chance).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from algeval.errors import ParameterError
from algeval.sim.analyses.common import Acts, GraphInfo, collect, graph_info, norm_sf, paired_greater
from algeval.sim.analyses.geometry import THRESHOLD, event_times
from algeval.sim.analyses.named import Named

MAX_STATES = 200_000
MAX_WORK = 5e8
OFFSETS = (0, 1, 2)


# --- state graphs -------------------------------------------------------------------------

@dataclass
class StateGraph:
    """Canonical search states of one graph: transitions ``src -> dst`` placing vertex ``v``."""

    n: int
    src: np.ndarray     # (E,) state ids
    dst: np.ndarray     # (E,)
    v: np.ndarray       # (E,) the vertex placed
    rem: np.ndarray     # (E, n) bool: still unplaced after placing v (v excluded)
    level: np.ndarray   # (E,) |S| of the source state
    n_states: int
    start: int = 0
    complete: bool = True


def _succ_masks(adj: np.ndarray) -> list[int]:
    return [int(sum(1 << int(j) for j in np.flatnonzero(row))) for row in adj]


def state_graph(adj: np.ndarray, start: int, kind: str, max_states: int = MAX_STATES) -> StateGraph:
    """The BFS or DFS state graph of ``adj (n, n)`` from ``start`` (see the module docstring)."""
    if kind not in ("bfs", "dfs"):
        raise ParameterError("kind", kind, "must be 'bfs' or 'dfs'")
    n = adj.shape[0]
    succ = _succ_masks(adj)
    full = (1 << n) - 1

    def canon(seq, S):
        return tuple(w for w in seq if succ[w] & ~S & full)

    S0 = 1 << start
    root = (S0, canon((start,), S0))
    ids = {root: 0}
    todo = [root]
    src, dst, vs, rems, lev = [], [], [], [], []
    complete = True
    while todo:
        S, seq = state = todo.pop()
        if not seq:
            continue
        u = seq[0] if kind == "bfs" else seq[-1]
        cand = succ[u] & ~S & full
        sid = ids[state]
        while cand:
            low = cand & -cand
            v = low.bit_length() - 1
            cand ^= low
            S2 = S | low
            nxt = (S2, canon(seq + (v,), S2))
            j = ids.get(nxt)
            if j is None:
                if len(ids) >= max_states:
                    complete = False
                    continue
                j = ids[nxt] = len(ids)
                todo.append(nxt)
            src.append(sid)
            dst.append(j)
            vs.append(v)
            rems.append(full & ~S2)
            lev.append(bin(S).count("1"))
    rem = np.zeros((len(rems), n), bool)
    if rems:
        bits = np.array(rems, dtype=object)
        for k in range(n):
            rem[:, k] = [(r >> k) & 1 for r in bits]
    return StateGraph(n, np.asarray(src, np.int64), np.asarray(dst, np.int64), np.asarray(vs, np.int64),
                      rem, np.asarray(lev, np.int64), len(ids), start, complete)


def best_agreement_counts(graphs: list[StateGraph], W: np.ndarray) -> np.ndarray:
    """Max over valid orders of ``sum_{u before v} W[p, u, v]``, per graph and weight row.

    ``W (G, P, N, N)`` (``N >= every graph's n``, padding rows unused).  Returns ``(G, P)``.
    Solved by the level-synchronous DP of the module docstring over all graphs at once; the
    start vertex, placed first by every order, contributes ``sum_u W[p, start, u]``.
    """
    G, P, N, _ = W.shape
    first = np.stack([W[i, :, g.start, : g.n].sum(-1) - W[i, :, g.start, g.start] for i, g in enumerate(graphs)]) \
        if G else np.zeros((0, P))
    offs = np.cumsum([0] + [g.n_states for g in graphs])
    E = sum(len(g.src) for g in graphs)
    if E == 0:
        return first.astype(np.float64)
    src = np.empty(E, np.int64)
    dst = np.empty(E, np.int64)
    gid = np.empty(E, np.int64)
    v = np.empty(E, np.int64)
    lev = np.empty(E, np.int64)
    rem = np.zeros((E, N), np.float32)
    k = 0
    for i, g in enumerate(graphs):
        e = len(g.src)
        src[k:k + e], dst[k:k + e] = g.src + offs[i], g.dst + offs[i]
        gid[k:k + e], v[k:k + e], lev[k:k + e] = i, g.v, g.level
        rem[k:k + e, : g.n] = g.rem
        k += e
    gains = np.empty((E, P), np.float32)
    Wf = W.astype(np.float32)
    step = max(1, 4_000_000 // max(1, P * N))
    for a in range(0, E, step):
        sl = slice(a, a + step)
        gains[sl] = np.einsum("epn,en->ep", Wf[gid[sl], :, v[sl], :], rem[sl])
    f = np.zeros((offs[-1], P), np.float32)
    order = np.lexsort((src, -lev))  # by level descending, then by source
    src, dst, lev, gains = src[order], dst[order], lev[order], gains[order]
    bounds = np.flatnonzero(np.diff(lev)) + 1
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, E]):
        val = gains[a:b] + f[dst[a:b]]
        s = src[a:b]
        starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
        f[s[starts]] = np.maximum.reduceat(val, starts, axis=0)
    return f[offs[:-1]].astype(np.float64) + first


# --- per-example local graphs -----------------------------------------------------------------

def _local_order(batch, info: GraphInfo, i: int, reach: np.ndarray) -> np.ndarray:
    """Labels of the reachable vertices of example ``i`` in canonical order."""
    vl = batch.meta.get("vertex_labels")
    if vl is not None:
        labs = [int(x) for x in vl[i] if x >= 0 and reach[int(x)]]
        if len(labs) == int(reach.sum()):
            return np.asarray(labs, np.int64)
    return np.flatnonzero(reach)


class _Cache:
    def __init__(self, max_states):
        self.d: dict = {}
        self.max_states = max_states

    def get(self, adj_local: np.ndarray, s: int, kind: str) -> StateGraph:
        key = (kind, adj_local.shape[0], s, np.packbits(adj_local).tobytes())
        g = self.d.get(key)
        if g is None:
            g = self.d[key] = state_graph(adj_local, s, kind, self.max_states)
        return g


_GLOBAL_CACHE = _Cache(MAX_STATES)


def strict_pairs(tau: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """``(..., V, V)`` bool: ``u, v`` both scored and ``tau(u) < tau(v)``."""
    s = scored[..., :, None] & scored[..., None, :]
    return s & (tau[..., :, None] < tau[..., None, :])


def _pm_sigma(dist: np.ndarray) -> np.ndarray:
    d = np.maximum(dist, 1)
    return np.where(dist <= 1, 0, np.ceil(np.log2(d))).astype(np.int64)


def order_scores(batch, info: GraphInfo, taus: np.ndarray, *, cache: _Cache | None = None,
                 kinds=("bfs", "dfs", "path_merging"), max_work: float = MAX_WORK) -> tuple[dict, dict]:
    """Best-match agreement per example for each row of ``taus (R, B, V)`` (row 0: the model's).

    Returns ``(scores, meta)`` with ``scores[kind] (R, B)``: NaN where undefined -- no strict
    pair in row 0, a state graph over the state cap (``meta["incomplete"]``), or past the work
    budget ``max_work`` (transitions x rows x vertices summed over examples, in example order;
    ``meta["skipped"]``), which bounds the time on graphs with very many search states.
    """
    cache = cache or _GLOBAL_CACHE
    Rr, B, V = taus.shape
    b = np.arange(B)
    reach = info.dist_from >= 0
    scored = reach & info.mentioned
    scored[b, info.decision] = False
    lt = strict_pairs(taus, scored[None])  # (R, B, V, V)
    npairs = lt.sum((-1, -2)).astype(np.float64)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "path_merging" in kinds:
            sig = _pm_sigma(info.dist_from)
            ok = sig[:, :, None] <= sig[:, None, :]  # u may precede v
            out["path_merging"] = np.where(npairs > 0, (lt & ok[None]).sum((-1, -2)) / npairs, np.nan)
    incomplete = np.zeros(B, bool)
    skipped = np.zeros(B, bool)
    active = npairs[0] > 0  # the first row is the model's: without a strict pair it has no score
    for kind in [k for k in kinds if k in ("bfs", "dfs")]:
        graphs, idx, nmax, work = [], [], 1, 0.0
        for i in np.flatnonzero(active):
            labs = _local_order(batch, info, i, reach[i])
            a = info.adj[i][np.ix_(labs, labs)]
            s = int(np.flatnonzero(labs == info.decision[i])[0])
            g = cache.get(a, s, kind)
            if not g.complete:
                incomplete[i] = True
                continue
            w = float(len(g.src)) * Rr * g.n
            if work + w > max_work:
                skipped[i] = True
                continue
            work += w
            graphs.append(g)
            idx.append((i, labs))
            nmax = max(nmax, g.n)
        sc = np.full((Rr, B), np.nan)
        if graphs:
            W = np.zeros((len(graphs), Rr, nmax, nmax), np.float32)
            for j, (i, labs) in enumerate(idx):
                W[j, :, : len(labs), : len(labs)] = lt[:, i][:, labs][:, :, labs]
            best = best_agreement_counts(graphs, W).T  # (R, G)
            cols = np.array([i for i, _ in idx])
            with np.errstate(invalid="ignore", divide="ignore"):
                sc[:, cols] = np.where(npairs[:, cols] > 0, best / npairs[:, cols], np.nan)
        out[kind] = sc
    return out, {"incomplete": incomplete, "skipped": skipped, "strict_pairs": npairs}


def schedule_scores(info: GraphInfo, taus: np.ndarray, n_layers: int, offsets=OFFSETS) -> dict:
    """Fraction of scored vertices whose ``tau`` equals the predicted block (a block of the model;
    best offset), per row and example."""
    B = taus.shape[1]
    b = np.arange(B)
    scored = (info.dist_from >= 0) & info.mentioned
    scored[b, info.decision] = False
    cnt = scored.sum(-1).astype(np.float64)
    preds = {"bfs": info.dist_from - 1, "path_merging": _pm_sigma(info.dist_from)}
    out = {}
    for k, pred in preds.items():
        best = np.zeros(taus.shape[:2])
        for o in offsets:
            p = pred + o
            best = np.maximum(best, ((taus == p[None]) & (p < n_layers)[None] & scored[None]).sum(-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = np.where(cnt > 0, best / cnt, np.nan)
    return out


def permuted_taus(tau: np.ndarray, info: GraphInfo, mentioned: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
    """``(n_perm, B, V)``: ``tau`` shuffled among each example's scored vertices."""
    rng = np.random.default_rng(seed)
    B, V = tau.shape
    b = np.arange(B)
    scored = (info.dist_from >= 0) & mentioned
    scored[b, info.decision] = False
    keys = np.where(scored[None], rng.random((n_perm, B, V)), 2.0 + np.arange(V)[None, None] / V)
    order = np.argsort(keys, -1)           # scored vertices first, in a random order
    base = np.argsort(np.where(scored, 0.0, 1.0 + np.arange(V) / V), -1, kind="stable")  # scored first, in order
    out = np.broadcast_to(tau, (n_perm, B, V)).copy()
    vals = np.take_along_axis(np.broadcast_to(tau, (n_perm, B, V)), np.broadcast_to(base, (n_perm, B, V)), -1)
    np.put_along_axis(out, order, vals, -1)
    return out


def _summarise(score: np.ndarray, perm: np.ndarray, ctrl: np.ndarray | None) -> dict:
    """``score (B,)``, ``perm (P, B)``, ``ctrl (B,)`` -> summary with chance levels and p-values."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ok = np.isfinite(score)
        s = float(np.nanmean(score)) if ok.any() else float("nan")
        pm = np.nanmean(np.where(ok[None], perm, np.nan), axis=1)  # mean per permutation
        chance = float(np.nanmean(pm)) if np.isfinite(pm).any() else float("nan")
        sd = float(np.nanstd(pm, ddof=1)) if np.isfinite(pm).sum() > 1 else float("nan")
    if np.isfinite(s) and np.isfinite(chance):
        z = (s - chance) / sd if sd > 0 else (np.inf if s > chance else 0.0)
        p_norm = float(norm_sf(z)) if np.isfinite(z) else 0.0
        p_emp = float((1 + np.sum(pm >= s)) / (len(pm) + 1))
    else:
        p_norm = p_emp = float("nan")
    out = {"score": s, "chance": chance, "chance_sd": sd,
           "chance_q95": float(np.nanquantile(pm, 0.95)) if np.isfinite(pm).any() else float("nan"),
           "p_perm": p_norm, "p_perm_empirical": p_emp, "n_examples": int(ok.sum())}
    if ctrl is not None:
        # a control without strict pairs carries no order information: it scores the example's chance
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ctrl = np.where(np.isfinite(ctrl), ctrl, np.nanmean(perm, axis=0))
        both = ok & np.isfinite(ctrl)
        diff, p, n = paired_greater(score[both], ctrl[both])
        out.update({"control": float(np.nanmean(ctrl)) if np.isfinite(ctrl).any() else float("nan"),
                    "p_control": p, "n_control": n})
    return out


def order_matching(model, batch, *, acts: Acts | None = None, info: GraphInfo | None = None,
                   control: Acts | None = None, n_perm: int = 64, seed: int = 0,
                   threshold: float = THRESHOLD, tau: np.ndarray | None = None,
                   max_states: int = MAX_STATES, max_work: float = MAX_WORK, n_layers: int | None = None) -> dict:
    """Event-time order of node representations vs BFS, DFS and path merging; see the module docstring.

    ``tau`` (``(B, V)`` event times, ``n_layers`` = never) overrides the rule (a construction may
    supply its own; give ``n_layers`` then, or it is read from ``acts``).
    Returns ``tau`` (Named: example, vertex), ``per_example`` (Named: score, example) for the
    model, ``chance_per_example`` (the same, mean over the permutations), ``summary[score_name]`` dicts (``score``, ``chance``, ``p_perm``, [``control``,
    ``p_control``]) for ``order_bfs``, ``order_dfs``, ``order_path_merging``, ``schedule_bfs``,
    ``schedule_path_merging``, ``incomplete`` (examples whose state graph exceeded ``max_states``)
    and ``skipped`` (examples past the DP work budget ``max_work``; their BFS/DFS scores are NaN).
    """
    acts = acts if acts is not None else (collect(model, batch) if tau is None else None)
    info = info if info is not None else graph_info(batch)
    mentioned = acts.mentioned if acts is not None else info.mentioned
    L = n_layers if n_layers is not None else (acts.n_layers if acts is not None else int(np.max(tau)))
    tau = event_times(acts, threshold) if tau is None else np.asarray(tau, np.int64)
    rows = [tau[None]]
    if control is not None:
        rows.append(event_times(control, threshold)[None])
    rows.append(permuted_taus(tau, info, mentioned, n_perm, seed))
    taus = np.concatenate(rows)
    info_m = GraphInfo(**{**info.__dict__, "mentioned": info.mentioned & mentioned})
    cache = _GLOBAL_CACHE if max_states == MAX_STATES else _Cache(max_states)
    osc, meta = order_scores(batch, info_m, taus, cache=cache, max_work=max_work)
    ssc = schedule_scores(info_m, taus, L)
    c = 1 if control is not None else 0
    allsc = {f"order_{k}": v for k, v in osc.items()}
    allsc.update({f"schedule_{k}": v for k, v in ssc.items()})
    summary = {k: _summarise(v[0], v[1 + c:], v[1] if c else None) for k, v in allsc.items()}
    names = list(allsc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        chance = np.stack([np.nanmean(allsc[k][1 + c:], axis=0) for k in names])
    return {
        "tau": Named(tau, ("example", "vertex")),
        "per_example": Named(np.stack([allsc[k][0] for k in names]), ("score", "example"), {"score": names}),
        "chance_per_example": Named(chance, ("score", "example"), {"score": names}),
        "summary": summary,
        "incomplete": int(meta["incomplete"].sum()),
        "skipped": int(meta["skipped"].sum()),
        "rule": f"tau(v) = first block whose change of v is >= {threshold} x v's median change per block",
        "n_perm": n_perm,
    }
