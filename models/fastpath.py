"""Exact, fast evaluation of a sparse model at its last position: for checking constructions.

Hand-built models are mostly zeros: the path-merging construction at ``n = 16``
has a ``1,300``-dimensional residual stream and ``4,608`` hidden units, but a
merge unit reads two residual directions and a residual direction is written by
``n + 2`` units.  A certificate only needs the logits at the decision (last)
position.  :func:`last_position_fn` evaluates *the same weights* with two
savings that change no term of the computation other than dropping products
with an exact zero:

1. **Positions.**  The logits are wanted at the last position (or the last
   ``Q``: teacher-forced checks).  Every head's keys and values run at every
   position; a head's query, and an MLP, run at every position only if what
   they write is read at every position later (a backward liveness pass over
   the unrolled schedule), else at the query positions only.  Exact for any
   mask: a query position's output depends on other positions only through
   attention.  At every position only the residual directions that some
   all-position computation reads are kept (the *stream* ``C``); the query
   positions keep all of them.  A head whose query and key
   read only the one-hot position directions, which nothing writes, has the
   same scores for every example and computes them once; at every position
   it never forms a ``(batch, T, T)`` array (:func:`shared_score_attention`).
2. **Sparsity.**  Every linear map ``y = x W`` is stored by its non-zero
   pattern.  A map whose columns have at most ``K`` non-zeros with
   ``K * cols <= density * rows * cols`` is stored in ELL form
   (``idx (cols, K)``, ``w (cols, K)``) and applied as
   ``y[j] = sum_k w[j, k] x[idx[j, k]]`` (term by term, so XLA fuses it);
   otherwise densely on its non-zero rows only; an output map with a few
   heavy columns is split into an ELL and a dense part.  Hidden units with no
   live output (zero ``W_out`` row), or no live input and a non-positive bias
   (``relu`` is then ``0``), are dropped; so are heads with a zero ``W_O`` or
   ``W_V``.  Index sets that are contiguous runs become slices, and writes to
   a contiguous run of the stream in-place slice updates.

Speed is memory traffic: the all-position stream is ``|C| x batch x T``
floats, so :func:`last_position_logits` works in chunks of ``128`` prompts,
whose arrays stay in cache (on the 2-core CI machine, path merging at
``n = 16``: ~2,700 graphs/s in chunks of 2,048 before these changes, ~19,000
in chunks of 128 after; ``benchmarks/bench_search_check.py``).

Floating point: the sums run over the same non-zero terms in another order, so
logits agree with the dense forward pass to rounding (tested); argmax and the
certificate's decoding margins are what the checks use.

Supported: ``norm="none"``, ``mlp="relu"``, ``positions`` one-hot, learned or
none (not rotary): the configuration every construction uses.  Anything else
raises a :class:`~algeval.errors.ParameterError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from algeval.errors import ParameterError
from algeval.models.masks import attention_mask


_UNROLL = 32  # ELL maps with at most this many non-zeros per column are applied term by term


@dataclass(frozen=True)
class _Map:
    """A linear map from a vector of length ``n_in`` to its live outputs ``cols``.

    ``kind == "ell"``: ``y[..., j] = sum_k w[j, k] * x[..., idx[j, k]]``;
    ``kind == "dense"``: ``y = x[..., rows] @ W``.
    """

    kind: str
    a: np.ndarray  # ell: idx (cols, K);   dense: rows (R,)
    b: np.ndarray  # ell: w   (cols, K);   dense: W (R, cols)
    cols: np.ndarray  # the live output columns of the full map

    def reads(self) -> set[int]:
        """The input entries the map reads."""
        if self.kind == "ell":
            return set(self.a[self.b != 0].tolist())
        return set(self.a.tolist())

    def __call__(self, x, arrays):
        """Apply to ``x (n_in, *batch)`` (entries first: row gathers are contiguous); returns ``(cols, *batch)``."""
        a, b = arrays
        if self.kind == "ell":
            col = lambda c: c.reshape(c.shape + (1,) * (x.ndim - 1))  # noqa: E731
            if a.shape[1] <= _UNROLL:  # K gathers summed elementwise: XLA fuses it, a reduce over K it does not
                y = _rows(x, self.a[:, 0]) * col(b[:, 0])   # static rows: a slice when contiguous
                for j in range(1, a.shape[1]):
                    y = y + _rows(x, self.a[:, j]) * col(b[:, j])
                return y
            return (x[a] * col(b)).sum(1)
        return jnp.tensordot(b, _rows(x, self.a), axes=[[0], [0]])  # static rows: a slice if contiguous

    def arrays(self):
        return (self.a, self.b)


@dataclass(frozen=True)
class _Split:
    """Columns with few non-zeros in ELL form, the rest dense: ``y = concat(ell(x), dense(x))`` over
    ``cols = concat(ell.cols, dense.cols)`` (output maps only, where ``cols`` says where each output goes)."""

    parts: tuple
    cols: np.ndarray

    def reads(self) -> set[int]:
        return set().union(*(p.reads() for p in self.parts))

    def __call__(self, x, arrays):
        return jnp.concatenate([p(x, arr) for p, arr in zip(self.parts, arrays)], 0)

    def arrays(self):
        return tuple(p.arrays() for p in self.parts)


def _ell(W: np.ndarray, nz: np.ndarray, cols: np.ndarray) -> _Map:
    K = max(int(nz[:, cols].sum(0).max()) if len(cols) else 0, 1)
    idx = np.zeros((len(cols), K), np.int32)
    w = np.zeros((len(cols), K), W.dtype)
    for j, c in enumerate(cols):
        r = np.flatnonzero(nz[:, c])
        idx[j, :len(r)] = r
        w[j, :len(r)] = W[r, c]
    return _Map("ell", idx, w, cols)


def _dense(W: np.ndarray, nz: np.ndarray, cols: np.ndarray) -> _Map:
    """Dense on the live rows; on their whole span (zero rows included) when that is at most twice as many,
    so the input is a slice of ``x`` rather than a gathered copy."""
    rows = np.flatnonzero(nz[:, cols].any(1)).astype(np.int32)
    if len(rows) and rows[-1] + 1 - rows[0] <= 2 * len(rows):
        rows = np.arange(rows[0], rows[-1] + 1, dtype=np.int32)
    return _Map("dense", rows, W[np.ix_(rows, cols)], cols)


def _compress(W: np.ndarray, density: float, keep_cols: np.ndarray | None = None):
    """The sparse form of ``W (rows, cols)``, restricted to ``keep_cols`` (default: non-zero columns).

    A column is *light* when its non-zeros are at most ``density`` times the map's live rows.  All light:
    ELL; none: dense on the live rows.  Both, and the output order is free (``keep_cols`` not given): a
    :class:`_Split` (one heavy column, such as a flag every unit writes, no longer forces the whole map dense).
    """
    nz = W != 0
    cols = np.flatnonzero(nz.any(0)) if keep_cols is None else np.asarray(keep_cols)
    counts = nz[:, cols].sum(0)
    light = counts <= density * max(int(nz[:, cols].any(1).sum()), 1)
    if light.all() and len(cols):
        return _ell(W, nz, cols)
    if keep_cols is None and light.any():
        return _Split((_ell(W, nz, cols[light]), _dense(W, nz, cols[~light])),
                      np.concatenate([cols[light], cols[~light]]))
    return _dense(W, nz, cols)


def _np(p) -> np.ndarray:
    return np.asarray(p[...])


def _head_weights(at, cfg, h, bias):
    g = h // (cfg.n_heads // cfg.kv_heads)
    z = np.zeros(cfg.d_head, _np(at.W_Q).dtype)
    b = {nm: (_np(getattr(at, nm))[i] if bias else z) for nm, i in (("b_Q", h), ("b_K", g), ("b_V", g))}
    return _np(at.W_Q)[h], _np(at.W_K)[g], _np(at.W_V)[g], _np(at.W_O)[h], b["b_Q"], b["b_K"], b["b_V"]


def _rows(x, rows):
    """``x[rows]`` for a static index array: a slice when ``rows`` is a contiguous run (no copy), else a gather."""
    rows = np.asarray(rows)
    if len(rows) and (rows == np.arange(rows[0], rows[0] + len(rows))).all():
        return x[int(rows[0]):int(rows[0]) + len(rows)]
    return x[rows]


def _write(x, m, h, arrays, width: int):
    """``x[m.cols] += m(h)``; a :class:`_Split` places each part's output on its own (no concatenation)."""
    if isinstance(m, _Split):
        for part, arr in zip(m.parts, arrays):
            x = _place(x, part, part(h, arr), width)
        return x
    return _place(x, m, m(h, arrays), width)


def _place(x, m, y, width: int):
    """``x[m.cols] += y`` (entries first).  When ``m.cols`` covers a contiguous run, an in-place update of
    that slice; else a row gather (which XLA's CPU backend does far faster than a scatter): entry ``d`` of
    the update reads ``y`` at its place in ``m.cols``, or an appended zero row."""
    cols = np.asarray(m.cols)
    order = np.argsort(cols, kind="stable")
    lo = int(cols[order[0]]) if len(cols) else 0
    if len(cols) and (cols[order] == np.arange(lo, lo + len(cols))).all():
        return x.at[lo:lo + len(cols)].add(_rows(y, order))
    place = np.full(width, len(m.cols), np.int32)
    place[m.cols] = np.arange(len(m.cols))
    y0 = jnp.concatenate([y, jnp.zeros((1,) + y.shape[1:], y.dtype)], 0)
    return x + y0[place]


def _nonzero_or_none(b):
    """A bias that is exactly zero is skipped (no pass over the stream)."""
    return None if b is None or not np.any(b) else b


def _col(b, like):
    """A bias vector shaped to add to an entries-first array like ``like``."""
    return b.reshape(b.shape + (1,) * (like.ndim - 1))


def shared_score_attention(s, v, readable, causal: bool):
    """Attention whose scores ``s (T, T)`` are the same for every example, ``v (E, B, T)`` -> ``(z (E, B, T), ok)``,
    without a ``(B, T, T)`` array.

    The model's mask (:func:`~algeval.models.masks.attention_mask`, kinds ``causal`` and ``full``) is
    ``S[i, j] and (readable[b, j] or j == i)`` with ``S`` shared (lower-triangular or all ones).  With
    ``P = exp(s - max_{j: S[i, j]} s[i, j])`` (``T x T``, once) and ``r = readable``::

        z[:, b, i] = (sum_j P[i, j] r[b, j] v[:, b, j] + P[i, i] (1 - r[b, i]) v[:, b, i]) / den[b, i],
        den[b, i]  =  sum_j P[i, j] r[b, j]            + P[i, i] (1 - r[b, i]),

    which is the masked softmax with one shift per row instead of one per example and row: the same terms,
    so equal up to rounding -- unless every readable key of a row scores ~87 below the row's best (masked)
    key, when ``den`` underflows.  ``ok`` is false if any ``den < 1e-30``; ``z`` must then not be used.
    """
    T = s.shape[0]
    S = jnp.tril(jnp.ones((T, T), bool)) if causal else jnp.ones((T, T), bool)
    acc = jnp.promote_types(s.dtype, jnp.float32)          # float32, or float64 for a float64 model
    s = jnp.where(S, s.astype(acc), -jnp.inf)
    P = jnp.exp(s - s.max(1, keepdims=True))
    r = readable.astype(acc)                                # (B, T)
    selfw = jnp.diagonal(P) * (1 - r)                       # pad queries read themselves
    den = r @ P.T + selfw
    vf = v.astype(acc)
    num = jnp.einsum("ebj,ij->ebi", vf * r, P) + vf * selfw
    return (num / den).astype(v.dtype), jnp.all(den >= 1e-30)


def last_position_fn(model, density: float = 0.25, stream_density: float = 0.05,
                     loop_iterations: int | None = None):
    """``(fn, arrays)`` with ``fn(arrays, tokens, prefix_end=None, start=0, last=None)`` -> logits ``(batch, vocab)``
    at the last position (``last=Q``: ``(batch, Q, vocab)`` at the last ``Q``).

    ``fn`` is pure: wrap it in ``jax.jit`` with ``static_argnames=("start", "last")``
    (``arrays`` is a pytree of the compressed weights; pass it as an argument,
    not a closure constant).  ``density`` / ``stream_density``: the largest
    fraction of non-zeros per column for the ELL form, for maps applied at the
    last position / at every position (where a gather costs more than a dense
    row of a matmul).
    """
    cfg = model.cfg
    for field, ok in (("norm", cfg.norm == "none"), ("mlp", cfg.mlp == "relu"),
                      ("positions", cfg.positions != "rotary")):
        if not ok:
            raise ParameterError(field, getattr(cfg, field), "the fast path supports norm=none, mlp=relu, "
                                 "positions onehot/learned/none")
    D, bias = cfg.d_model, cfg.use_bias
    scale = cfg.d_head ** -0.5 if cfg.attn_scale is None else cfg.attn_scale
    W_E = _np(model.W_E)
    pos_dims = set(range(D - cfg.max_len, D)) if cfg.positions == "onehot" else set()
    written = set(np.flatnonzero(W_E.any(0)).tolist())

    # 1. per scheduled block: live heads (and whether positional), live MLP units
    blocks = []
    for blk in cfg.schedule(loop_iterations):
        block = model.blocks[blk]
        heads = []
        for h in range(cfg.n_heads):
            WQ, WK, WV, WO, bq, bk, bv = _head_weights(block.attn, cfg, h, bias)
            eqk = np.flatnonzero((WQ.any(0) | (bq != 0)) & (WK.any(0) | (bk != 0)))
            eov = np.flatnonzero((WV.any(0) | (bv != 0)) & WO.any(1))
            if not len(eov):
                continue
            WQ, WK, bq, bk = WQ[:, eqk], WK[:, eqk], bq[eqk], bk[eqk]
            WV, bv, WO = WV[:, eov], bv[eov], WO[eov]
            qk_reads = set(np.flatnonzero(WQ.any(1) | WK.any(1)).tolist())
            positional = bool(pos_dims) and qk_reads <= pos_dims and not written & pos_dims
            heads.append(dict(WQ=WQ, WK=WK, WV=WV, WO=WO, bq=bq, bk=bk, bv=bv, positional=positional))
        b_O = _np(block.attn.b_O) if bias else None
        mlp = None
        if cfg.has_mlp:
            W_in, W_out = _np(block.mlp.W_in), _np(block.mlp.W_out)
            b_in = _np(block.mlp.b_in) if bias else np.zeros(W_in.shape[1], W_in.dtype)
            units = np.flatnonzero(W_out.any(1) & (W_in.any(0) | (b_in > 0)))
            mlp = dict(W_in=W_in[:, units], b_in=b_in[units], W_out=W_out[units],
                       b_out=_np(block.mlp.b_out) if bias else None)
        for hd in heads:
            written |= set(np.flatnonzero(hd["WO"].any(0)).tolist())
        for extra in ([b_O] if b_O is not None else []) + ([mlp["W_out"].any(0)] if mlp else []) + \
                ([mlp["b_out"]] if mlp and mlp["b_out"] is not None else []):
            written |= set(np.flatnonzero(extra).tolist())
        blocks.append(dict(heads=heads, b_O=b_O, mlp=mlp))

    # 2. which computations run at every position, and the stream C they read (backward liveness): the
    #    keys and values of every head; a head's query / an MLP only where its output feeds the stream.
    rows_of = lambda W: set(np.flatnonzero(W.any(1)).tolist())  # noqa: E731
    cols_of = lambda W: set(np.flatnonzero(W.any(0)).tolist())  # noqa: E731
    need: set[int] = set()
    for b in reversed(blocks):
        b["mlp_all"] = b["mlp"] is not None and bool(cols_of(b["mlp"]["W_out"]) & need)
        if b["mlp_all"]:
            need |= rows_of(b["mlp"]["W_in"])
        for hd in b["heads"]:
            hd["all"] = bool(cols_of(hd["WO"]) & need)
            need |= rows_of(hd["WV"]) | (set() if hd["positional"] else rows_of(hd["WK"]))
            if hd["all"] and not hd["positional"]:
                need |= rows_of(hd["WQ"])
    C = np.array(sorted(need), np.int32)

    # 3. compressed maps: stream (inputs/outputs in C) and query positions (all of D)
    plans, arrays = [], []
    for i, b in enumerate(blocks):
        hp, ha = [], []
        for hd in b["heads"]:
            stream_q = hd["all"] and not hd["positional"]
            q_in = hd["WQ"][C] if stream_q else hd["WQ"]
            k_in = hd["WK"] if hd["positional"] else hd["WK"][C]
            maps = dict(q=_compress(q_in, stream_density if stream_q else density, np.arange(q_in.shape[1])),
                        k=_compress(k_in, stream_density, np.arange(k_in.shape[1])),
                        v=_compress(hd["WV"][C], stream_density, np.arange(hd["WV"].shape[1])),
                        o_full=_compress(hd["WO"], density))
            if hd["all"]:
                maps["o_stream"] = _compress(hd["WO"][:, C], stream_density)
            hp.append((maps, hd["positional"], hd["all"]))
            ha.append(({k: m.arrays() for k, m in maps.items()}, hd["bq"], hd["bk"], hd["bv"]))
        mp = ma = None
        if b["mlp"] is not None:
            m = b["mlp"]
            mp = dict(i_full=_compress(m["W_in"], density, np.arange(m["W_in"].shape[1])),
                      o_full=_compress(m["W_out"], density))
            if b["mlp_all"]:
                mp["i_stream"] = _compress(m["W_in"][C], stream_density, np.arange(m["W_in"].shape[1]))
                mp["o_stream"] = _compress(m["W_out"][:, C], stream_density)
            ma = ({k: mm.arrays() for k, mm in mp.items()}, m["b_in"], _nonzero_or_none(m["b_out"]))
        plans.append((hp, mp, b["mlp_all"]))
        arrays.append((ha, _nonzero_or_none(b["b_O"]), ma))
    W_U = W_E.T if cfg.tied_unembed else _np(model.W_U)
    urows = np.flatnonzero(W_U.any(1)).astype(np.int32)
    emb = {"W_E": W_E, "W_E_C": W_E[:, C], "U": (urows, W_U[urows]),
           "W_pos": _np(model.W_pos) if cfg.positions == "learned" else None,
           "b_U": _np(model.b_U) if (not cfg.tied_unembed and bias) else None}
    all_arrays = {"emb": emb, "blocks": arrays}
    nC = len(C)

    def attend(q, k, v, mask):
        """``q (E, [B,] Tq)``, ``k (E, [B,] T)`` (no batch axis: positional), ``v (E, B, T)``, ``mask (B, Tq, T)``
        -> ``z (E, B, Tq)``."""
        qs, ks = ("eq" if q.ndim == 2 else "ebq"), ("ek" if k.ndim == 2 else "ebk")
        out = "bqk" if "b" in qs + ks else "qk"
        s = jnp.einsum(f"{qs},{ks}->{out}", q, k).astype(jnp.promote_types(q.dtype, jnp.float32)) * scale
        p = jax.nn.softmax(jnp.where(mask, s, -jnp.inf), -1).astype(v.dtype)
        return jnp.einsum("bqk,ebk->ebq", p, v)

    def attend_shared(q, k, v, tokens, prefix_end):
        """A positional head at every position: :func:`shared_score_attention`, or, if a denominator
        underflowed, the per-example softmax for the whole batch (``lax.cond`` runs one branch)."""
        s = (q.T @ k).astype(jnp.promote_types(q.dtype, jnp.float32)) * scale
        readable = (tokens != cfg.pad_token_id) if cfg.pad_token_id is not None else jnp.ones(tokens.shape, bool)
        z, ok = shared_score_attention(s, v, readable, cfg.attention == "causal")
        return jax.lax.cond(ok, lambda: z, lambda: attend(q, k, v, attention_mask(cfg.attention, tokens, prefix_end,
                                                                                  cfg.pad_token_id)))

    def fn(arrs, tokens, prefix_end=None, start: int = 0, last: int | None = None):
        """``tokens`` are columns ``start, start+1, ...`` of the model's input (``start > 0`` when leading
        columns that are padding in every row were cut: pad keys are never read, so that is exact).
        ``last=None``: logits ``(B, vocab)`` at the last position; ``last=Q``: ``(B, Q, vocab)`` at the last
        ``Q`` positions."""
        tokens = jnp.asarray(tokens)
        B, T = tokens.shape
        Q = 1 if last is None else last
        e = arrs["emb"]
        dt = e["W_E"].dtype
        if cfg.positions == "learned":
            pe = e["W_pos"][start:start + T]
        elif cfg.positions == "onehot":
            pe = jnp.pad(jax.nn.one_hot(jnp.arange(T) + start, cfg.max_len, dtype=dt),
                         ((0, 0), (D - cfg.max_len, 0)))
        else:
            pe = jnp.zeros((T, D), dt)
        if prefix_end is not None:
            prefix_end = jnp.asarray(prefix_end) - start
        pe = pe.T                                       # (D, T): entries first, like the streams
        xs = e["W_E_C"].T[:, tokens] + pe[C][:, None]   # (|C|, B, T): the stream
        xl = e["W_E"].T[:, tokens[:, -Q:]] + pe[:, None, -Q:]  # (D, B, Q): the query positions
        mask = attention_mask(cfg.attention, tokens, prefix_end, cfg.pad_token_id)  # XLA keeps the rows used
        shared = cfg.attention in ("causal", "full")  # the mask is S[i, j] & (key not pad or j == i)
        for (hp, mp, mlp_all), (ha, b_O, ma) in zip(plans, arrs["blocks"]):
            upd_s, upd_l = xs, xl
            for (maps, positional, every), (arr, bq, bk, bv) in zip(hp, ha):
                src_k = pe if positional else xs
                k = maps["k"](src_k, arr["k"]) + _col(bk, src_k)
                v = maps["v"](xs, arr["v"]) + _col(bv, xs)
                if every:  # its output feeds the stream: the query at every position too
                    q = maps["q"](src_k, arr["q"]) + _col(bq, src_k)
                    z = (attend_shared(q, k, v, tokens, prefix_end) if positional and shared
                         else attend(q, k, v, mask))                             # (E, B, T)
                    upd_s = _write(upd_s, maps["o_stream"], z, arr["o_stream"], nC)
                    z = z[..., -Q:]
                else:
                    src_q = pe[:, -Q:] if positional else xl
                    q = maps["q"](src_q, arr["q"]) + _col(bq, src_q)
                    z = attend(q, k, v, mask[:, -Q:])                            # (E, B, Q)
                upd_l = _write(upd_l, maps["o_full"], z, arr["o_full"], D)
            xs, xl = upd_s, upd_l
            if b_O is not None:
                xs, xl = xs + _col(b_O[C], xs), xl + _col(b_O, xl)
            if mp is not None:
                arr, b_in, b_out = ma
                if mlp_all:
                    h = jax.nn.relu(mp["i_stream"](xs, arr["i_stream"]) + _col(b_in, xs))
                    xs = _write(xs, mp["o_stream"], h, arr["o_stream"], nC)
                    h = h[..., -Q:]
                else:
                    h = jax.nn.relu(mp["i_full"](xl, arr["i_full"]) + _col(b_in, xl))
                xl = _write(xl, mp["o_full"], h, arr["o_full"], D)
                if b_out is not None:
                    xs, xl = xs + _col(b_out[C], xs), xl + _col(b_out, xl)
        rows, Wu = e["U"]
        logits = jnp.einsum("dbq,dv->bqv", xl[rows], Wu)  # (B, Q, vocab)
        if e["b_U"] is not None:
            logits = logits + e["b_U"]
        return logits[:, 0] if last is None else logits

    return fn, jax.tree.map(jnp.asarray, all_arrays)


def last_position_logits(model, tokens, prefix_end=None, chunk: int = 128, loop_iterations: int | None = None,
                         width_step: int = 16, last: int | None = None) -> np.ndarray:
    """Logits at the last position for ``tokens (batch, pos)``, in input order, by :func:`last_position_fn`:
    ``(batch, vocab)``; with ``last=Q``, at the last ``Q`` positions: ``(batch, Q, vocab)``.

    Rows are bucketed by their count of leading pad tokens (left padding), so each chunk drops the columns
    that are padding in all of its rows (rounded down to ``width_step`` columns to bound recompilation).
    """
    tokens = np.asarray(tokens)
    if last is not None and not 1 <= last <= tokens.shape[1]:
        raise ParameterError("last", last, f"between 1 and the prompt width {tokens.shape[1]}")
    key = (id(model), loop_iterations)
    if _CACHE.get("key") != key:
        fn, arrs = last_position_fn(model, loop_iterations=loop_iterations)
        # the model is kept alive with its entry, so no later model can take its id while it is cached
        _CACHE.update(key=key, model=model, fn=jax.jit(fn, static_argnames=("start", "last")), arrs=arrs)
    f, arrs = _CACHE["fn"], _CACHE["arrs"]
    pad = model.cfg.pad_token_id
    lead = (np.cumprod(tokens == pad, axis=1).sum(1) if pad is not None else np.zeros(len(tokens), int))
    order = np.argsort(-lead, kind="stable")
    out = np.zeros((len(tokens),) + ((last,) if last else ()) + (model.cfg.vocab_size,), np.float64)
    pe = None if prefix_end is None else np.asarray(prefix_end)
    for i in range(0, len(order), chunk):
        idx = order[i:i + chunk]
        start = int(lead[idx].min()) // width_step * width_step
        start = min(start, tokens.shape[1] - (last or 1))
        rows = idx if len(idx) == chunk else np.concatenate([idx, np.repeat(idx[-1:], chunk - len(idx))])
        logits = f(arrs, jnp.asarray(tokens[rows, start:]), None if pe is None else jnp.asarray(pe[rows]),
                   start=start, last=last)
        out[idx] = np.asarray(logits)[:len(idx)]
    return out


_CACHE: dict = {}
