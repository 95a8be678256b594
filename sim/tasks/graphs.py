"""Graph families, relabelling and token packing shared by the graph tasks.

Builders are batched: ``build_family(...)`` returns ``(adj, n)`` with ``adj``
``(B, N, N)`` bool and ``n`` ``(B,)``: example ``b``'s graph lives on vertices
``0..n[b]-1`` (the rest are isolated).  Families:

* ``er``       Erdős–Rényi: each pair (each ordered pair when directed) is an
  edge with probability ``edge_prob``; may be disconnected;
* ``chain``    the path ``0 - 1 - ... - n-1`` (directed: away from 0);
* ``tree``     a random recursive tree (vertex ``i`` hangs below a uniform
  earlier vertex; directed: edges point away from the root 0);
* ``grid``     a full ``rows x cols`` grid, ``rows, cols >= 2``, the shape drawn
  uniformly among those with ``min_vertices <= rows*cols <= max_vertices``
  (directed: edges point right and down);
* ``cluster``  2..max(2, n//3) communities of near-equal size, each a random
  spanning tree plus every other inside pair with probability ``CLUSTER_PROB``,
  consecutive communities joined by one edge (directed: each edge gets a
  random orientation, inside pairs are drawn per ordered pair);
* ``connected`` a random spanning tree (directed: an arborescence from 0) plus
  every other pair (ordered pair when directed) with probability ``edge_prob``.

In every directed family except ``er`` and ``cluster`` all vertices are
reachable from vertex 0.  :class:`GraphSpec` bundles the options the graph
tasks share and samples graphs already relabelled into a label space of
``num_labels`` vertex tokens (a uniformly random injection per example).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algeval.errors import ParameterError, check, check_int_range

FAMILIES = ("er", "chain", "tree", "grid", "cluster", "connected")
CLUSTER_PROB = 0.7
MIN_SIZE = {"er": 1, "chain": 2, "tree": 2, "grid": 4, "cluster": 4, "connected": 2}

GRAPH_PARAMS = {
    "max_vertices": (8, "largest number of graph vertices"),
    "min_vertices": (3, "smallest number of graph vertices (graph sizes are uniform in between)"),
    "family": ("er", f"graph family: {', '.join(FAMILIES)}"),
    "directed": (False, "directed graphs (edges listed as u -> v)"),
    "edge_prob": (0.3, "edge probability of the 'er' and 'connected' families"),
    "num_labels": (None, "vertex labels in the vocabulary (default: max_vertices)"),
    "max_len": (None, "sequence width (default: the longest possible sequence)"),
}


# --- small batched utilities ------------------------------------------------------

def choose(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per row of ``mask (B, n)``, a uniformly random index where it is true (rows must have one)."""
    r = rng.random(mask.shape)
    return np.argmax(np.where(mask, r, -1.0), axis=-1)


def uniform_int(lo, hi, rng: np.random.Generator, size) -> np.ndarray:
    """Integers uniform in ``[lo, hi]`` (inclusive; ``lo``/``hi`` may be arrays)."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    return (lo + np.floor(rng.random(size) * (hi - lo + 1))).astype(np.int64)


def grid_shapes(lo: int, hi: int) -> list[tuple[int, int]]:
    """``(rows, cols)`` with both >= 2 and ``lo <= rows*cols <= hi``."""
    return [(r, c) for r in range(2, hi + 1) for c in range(2, hi + 1) if lo <= r * c <= hi]


def _symmetrise(a: np.ndarray) -> np.ndarray:
    return a | np.swapaxes(a, -1, -2)


def _orient(a_upper: np.ndarray, directed: bool, rng, random_direction: bool) -> np.ndarray:
    """Turn edges given as ``u < v`` entries into the final adjacency."""
    if not directed:
        return _symmetrise(a_upper)
    if not random_direction:
        return a_upper
    flip = rng.random(a_upper.shape) < 0.5
    return (a_upper & ~flip) | np.swapaxes(a_upper & flip, -1, -2)


def _tree_edges(count, N, n, first, rng) -> np.ndarray:
    """Upper-triangular ``(B, N, N)``: vertex ``i`` (``first[b,i] < i < n[b]``) hangs below a
    uniform vertex of ``[first[b,i], i)``; ``first`` marks each vertex's block start."""
    i = np.arange(N)[None, :]
    par = first + np.floor(rng.random((count, N)) * np.maximum(i - first, 1)).astype(np.int64)
    ok = (i > first) & (i < n[:, None])
    a = np.zeros((count, N, N), dtype=bool)
    b, v = np.nonzero(ok)
    a[b, par[b, v], v] = True
    return a


def build_family(family: str, count: int, rng: np.random.Generator, min_n: int, max_n: int,
                 directed: bool = False, edge_prob: float = 0.3):
    """``(adj (count, max_n, max_n) bool, n (count,))`` for one family; see the module docstring."""
    N = max_n
    i = np.arange(N)
    if family == "grid":
        shapes = np.array(grid_shapes(min_n, max_n))
        pick = shapes[rng.integers(len(shapes), size=count)]
        rows, cols = pick[:, 0], pick[:, 1]
        n = rows * cols
        c = cols[:, None]
        right = ((i[None, :] + 1) % c != 0) & (i[None, :] + 1 < n[:, None])
        down = i[None, :] + c < n[:, None]
        a = np.zeros((count, N, N), dtype=bool)
        b, u = np.nonzero(right)
        a[b, u, u + 1] = True
        b, u = np.nonzero(down)
        a[b, u, u + cols[b]] = True
        return _orient(a, directed, rng, False), n
    n = uniform_int(min_n, max_n, rng, count)
    valid = (i[None, :] < n[:, None])
    pair = valid[:, :, None] & valid[:, None, :] & ~np.eye(N, dtype=bool)
    upper = np.triu(np.ones((N, N), dtype=bool), 1)
    if family == "er":
        r = rng.random((count, N, N)) < edge_prob
        if directed:
            return r & pair, n
        return _symmetrise(r & pair & upper), n
    if family == "chain":
        a = np.zeros((count, N, N), dtype=bool)
        a[:, i[:-1], i[1:]] = i[None, 1:] < n[:, None]
        return _orient(a, directed, rng, False), n
    if family == "tree":
        a = _tree_edges(count, N, n, np.zeros((count, N), dtype=np.int64), rng)
        return _orient(a, directed, rng, False), n
    if family == "connected":
        a = _tree_edges(count, N, n, np.zeros((count, N), dtype=np.int64), rng)
        a = _orient(a, directed, rng, False)
        extra = rng.random((count, N, N)) < edge_prob
        extra &= pair if directed else pair & upper
        return a | (extra if directed else _symmetrise(extra)), n
    if family == "cluster":
        k = uniform_int(2, np.maximum(2, n // 3), rng, count)
        comm = (i[None, :] * k[:, None]) // n[:, None]  # community of each vertex
        first = (comm * n[:, None] + k[:, None] - 1) // k[:, None]  # first vertex of that community
        a = _tree_edges(count, N, n, first, rng)
        same = (comm[:, :, None] == comm[:, None, :]) & pair
        inside = (rng.random((count, N, N)) < CLUSTER_PROB) & same
        for j in range(int(k.max()) - 1):  # one bridge between communities j and j+1
            on = j + 1 < k
            lo = (j * n + k - 1) // k
            mid = ((j + 1) * n + k - 1) // k
            hi = ((j + 2) * n + k - 1) // k
            u = uniform_int(lo, mid - 1, rng, count)
            v = uniform_int(mid, hi - 1, rng, count)
            b = np.flatnonzero(on)
            a[b, u[b], v[b]] = True
        a = _orient(a, directed, rng, True)
        return a | (inside if directed else _symmetrise(inside & upper)), n
    raise ParameterError("family", family, f"unknown family; known: {', '.join(FAMILIES)}")


def disjoint_union(parts, N: int):
    """Place graphs ``[(adj_j, n_j), ...]`` side by side in ``(B, N, N)``: returns ``(adj, n, comp)``,
    ``comp (B, N)`` the component of each vertex (``-1`` beyond ``n``)."""
    count = parts[0][0].shape[0]
    out = np.zeros((count, N, N), dtype=bool)
    comp = np.full((count, N), -1, dtype=np.int64)
    off = np.zeros(count, dtype=np.int64)
    for j, (a, n) in enumerate(parts):
        b, u, v = np.nonzero(a)
        out[b, off[b] + u, off[b] + v] = True
        idx = np.arange(a.shape[-1])[None, :]
        bb, uu = np.nonzero(idx < n[:, None])
        comp[bb, off[bb] + uu] = j
        off = off + n
    return out, off, comp


def relabel(adj: np.ndarray, n: np.ndarray, num_labels: int, rng: np.random.Generator):
    """Map each example's vertices into ``num_labels`` labels by a random injection.

    Returns ``(adj_lab (B, L, L), labels (B, N), present (B, L))`` where ``labels[b, u]`` is the
    label of graph vertex ``u`` and ``present`` marks the labels in use (``u < n[b]``).
    """
    count, N = adj.shape[:2]
    labels = np.argsort(rng.random((count, num_labels)), axis=1)[:, :N]
    out = np.zeros((count, num_labels, num_labels), dtype=bool)
    b, u, v = np.nonzero(adj)
    out[b, labels[b, u], labels[b, v]] = True
    present = np.zeros((count, num_labels), dtype=bool)
    b, u = np.nonzero(np.arange(N)[None, :] < n[:, None])
    present[b, labels[b, u]] = True
    return out, labels, present


# --- token packing ----------------------------------------------------------------

def ragged(arr: np.ndarray, lengths: np.ndarray):
    """``(values, lengths)``: the first ``lengths[b]`` entries of each row of ``arr (B, K)``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return arr[np.arange(arr.shape[1])[None, :] < lengths[:, None]], lengths


def edge_tokens(adj_lab: np.ndarray, directed: bool, rng: np.random.Generator, vocab, edge: str = "E"):
    """Ragged ``E u v`` triples of every edge, in a random order per example.

    Undirected edges are listed once, endpoints in random order.
    """
    a = adj_lab if directed else np.triu(adj_lab, 1)
    b, u, v = np.nonzero(a)
    if not directed:
        swap = rng.random(len(b)) < 0.5
        u, v = np.where(swap, v, u), np.where(swap, u, v)
    order = np.lexsort((rng.random(len(b)), b))
    b, u, v = b[order], u[order], v[order]
    vals = np.stack([np.full(len(b), vocab.id(edge)), vocab.vertex(u), vocab.vertex(v)], 1).ravel()
    return vals, 3 * np.bincount(b, minlength=adj_lab.shape[0])


def assemble(parts, width: int):
    """Concatenate per-example parts and left-pad to ``width``.

    ``parts``: dense ``(B, k)`` arrays or ragged ``(values, lengths)`` pairs.  Returns
    ``(tokens (B, width) int32, starts)`` with ``starts[j] (B,)`` the absolute position of part j.
    """
    dense = [p for p in parts if not isinstance(p, tuple)]
    count = dense[0].shape[0] if dense else len(parts[0][1])
    lens = [np.full(count, p.shape[1]) if not isinstance(p, tuple) else p[1] for p in parts]
    total = np.sum(lens, axis=0)
    if total.max() > width:
        raise ValueError(f"sequence of length {int(total.max())} exceeds width {width}")
    out = np.zeros((count, width), dtype=np.int32)
    pos = width - total
    starts = []
    for p, ln in zip(parts, lens):
        starts.append(pos.copy())
        if isinstance(p, tuple):
            vals, _ = p
            row = np.repeat(np.arange(count), ln)
            within = np.arange(len(vals)) - np.repeat(np.cumsum(ln) - ln, ln)
            out[row, pos[row] + within] = vals
        elif p.shape[1]:
            out[np.arange(count)[:, None], pos[:, None] + np.arange(p.shape[1])] = p
        pos = pos + ln
    return out, starts


def answers_from_mask(mask: np.ndarray, k: int, offset: int) -> np.ndarray:
    """``(B, k)`` token ids ``offset + j`` for the true entries of ``mask (B, n)``, padded ``-1``."""
    order = np.argsort(~mask, axis=1, kind="stable")[:, :k]
    taken = np.take_along_axis(mask, order, axis=1)
    assert not (mask.sum(1) > k).any(), "answer set larger than its width"
    return np.where(taken, order + offset, -1).astype(np.int32)


def edge_list(adj: np.ndarray, directed: bool) -> list[tuple[int, int]]:
    """Edges of one ``(n, n)`` adjacency (undirected: each once, ``u < v``)."""
    a = adj if directed else np.triu(adj | adj.T, 1)
    return [(int(u), int(v)) for u, v in zip(*np.nonzero(a))]


# --- the shared options ------------------------------------------------------------

@dataclass(frozen=True)
class GraphSpec:
    """Validated graph options of a graph task; :meth:`sample` draws relabelled graphs."""

    family: str
    min_vertices: int
    max_vertices: int
    directed: bool
    edge_prob: float
    num_labels: int
    components: int = 1

    @classmethod
    def from_config(cls, config: dict, components: int = 1) -> "GraphSpec":
        family = config["family"]
        check(family in FAMILIES, "family", family, f"unknown family; known: {', '.join(FAMILIES)}")
        mx = check_int_range("max_vertices", config["max_vertices"], 2, 256)
        mn = check_int_range("min_vertices", config["min_vertices"], 1, mx)
        d = config["directed"]
        check(isinstance(d, (bool, np.bool_)), "directed", d, "must be true or false")
        p = config["edge_prob"]
        check(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1,
              "edge_prob", p, "must be a probability in [0, 1]")
        labels = config["num_labels"]
        labels = mx if labels is None else check_int_range("num_labels", labels, 1, 4096)
        check(labels >= mx, "num_labels", labels,
              f"more vertices than the vocabulary holds: needs >= max_vertices={mx}")
        c = check_int_range("components", components, 1, mx)
        per_max, per_min = mx // c, max(1, -(-mn // c))
        need = MIN_SIZE[family]
        check(per_max >= need, "max_vertices", mx,
              f"family {family} needs >= {need} vertices per component ({c} component(s))")
        per_min = max(per_min, need)
        if family == "grid":
            check(bool(grid_shapes(per_min, per_max)), "min_vertices", mn,
                  f"no rows x cols grid (>= 2x2) with {per_min} <= rows*cols <= {per_max}")
        return cls(family, per_min * c if c > 1 else max(mn, need), mx, bool(d), float(p), labels, c)

    def max_edges(self) -> int:
        """An upper bound on the number of listed edges."""
        m = self.max_vertices // self.components
        if self.family in ("chain", "tree"):
            per = m - 1
        elif self.family == "grid":
            per = max(r * (c - 1) + c * (r - 1) for r, c in grid_shapes(1, m)) if m >= 4 else 0
        else:
            per = m * (m - 1) // (1 if self.directed else 2)
        return per * self.components

    def sample(self, count: int, rng: np.random.Generator):
        """``(adj_lab (B, L, L), labels (B, N), present (B, L), n (B,), comp (B, N))``."""
        c = self.components
        if c == 1:
            adj, n = build_family(self.family, count, rng, self.min_vertices, self.max_vertices,
                                  self.directed, self.edge_prob)
            comp = np.where(np.arange(self.max_vertices)[None, :] < n[:, None], 0, -1)
        else:
            lo, hi = self.min_vertices // c, self.max_vertices // c
            parts = [build_family(self.family, count, rng, lo, hi, self.directed, self.edge_prob)
                     for _ in range(c)]
            adj, n, comp = disjoint_union(parts, self.max_vertices)
        adj_lab, labels, present = relabel(adj, n, self.num_labels, rng)
        return adj_lab, labels, present, n, comp


def resolve_max_len(value, need: int) -> int:
    """The sequence width: ``need`` by default; an explicit ``max_len`` must be >= ``need``."""
    if value is None:
        return need
    v = check_int_range("max_len", value, 1, None)
    check(v >= need, "max_len", v, f"sequence longer than max_len: this configuration needs {need}")
    return v


def fill(count: int, draw, max_rounds: int = 1000) -> dict:
    """Rejection sampling by rows: ``draw(rows)`` returns a dict of arrays for the output rows
    ``rows`` still missing plus ``"ok"``, the rows it accepts; repeat until every row is filled."""
    out: dict = {}
    need = np.arange(count)
    for _ in range(max_rounds):
        d = draw(need)
        ok = np.asarray(d.pop("ok"), dtype=bool)
        for k, v in d.items():
            if k not in out:
                out[k] = np.zeros((count,) + v.shape[1:], dtype=v.dtype)
            out[k][need[ok]] = v[ok]
        need = need[~ok]
        if not len(need):
            return out
    raise RuntimeError(f"rejection sampling: {len(need)} of {count} rows still rejected after "
                       f"{max_rounds} rounds; the configuration almost never yields a valid example")
