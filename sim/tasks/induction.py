"""``k-hop-induction`` and ``induction`` (Sanford, Hsu & Telgarsky, ICML 2024).

A sequence ``X`` of ``seq_len`` symbols drawn uniformly from an alphabet of
``alphabet`` symbols, tokens ``a0 .. a{m-1}`` (extra tokens; no vertex
tokens).  The target is ``hop_k(X)`` as :func:`algeval.theory.khop.khop`
defines it (0-indexed): ``find_1(i)`` is the position right after the most
recent earlier occurrence of ``X[i]`` (``j <= i`` with ``X[j-1] = X[i]``),
``find_k = find_1`` applied ``k`` times, ``hop_k(X)[i] = X[find_k(i)]``.
``induction`` is ``k = 1`` (the classic induction head: "what followed the
last occurrence of this token?").

Scored positions: the last one (the target is at ``seq_len - 1``), or with
``all_positions=True`` every position where ``hop_k`` is defined.  The
answer set at a scored position ``i`` is ``{hop_k(X)[i]}`` (the target *at*
``i``, not the next input token).  Example, ``k = 1``::

    a2 a0 a1 a2 a3 a1        answer at the last position: {a2}

(the last ``a1`` occurred at position 2, followed by ``a2``).

Definedness: sequences are drawn by rejection sampling, so examples are
uniform among the sequences whose target at the last position is defined
(with ``all_positions``: sequences with at least one defined position).
Acceptance is at least ``1/alphabet``: ``X[T-2] = X[T-1]`` gives
``find_1(T-1) = T-1``, a fixed point, so ``hop_k`` is then defined for every
``k``; with a short ``seq_len`` and a large ``k`` such examples dominate.

``attention`` causal.  ``meta``: ``hop (B, T)`` (alphabet index of
``hop_k`` per position, ``-1`` undefined), ``find (B, T)`` (``find_k`` per
position, ``-1`` undefined), ``seq (B, T)`` (alphabet indices).
"""

from __future__ import annotations

import numpy as np

from algeval.errors import check, check_int_range
from algeval.sim.tasks.base import Task, TaskBatch, Vocab, register
from algeval.sim.tasks.graphs import fill
from algeval.theory.khop import khop


@register
class KHopInduction(Task):
    """k-hop induction heads; see the module docstring."""

    name = "k-hop-induction"
    attention = "causal"
    params = {
        "alphabet": (4, "alphabet size m (tokens a0..a{m-1})"),
        "seq_len": (64, "sequence length"),
        "k": (2, "number of hops"),
        "all_positions": (False, "score every position where hop_k is defined (else only the last)"),
    }

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.config
        self.m = check_int_range("alphabet", c["alphabet"], 1, 4096)
        self.max_len = check_int_range("seq_len", c["seq_len"], 2, 65536)
        self.k = check_int_range("k", c.get("k", 1), 1, self.max_len)
        check(isinstance(c["all_positions"], (bool, np.bool_)), "all_positions", c["all_positions"],
              "must be true or false")
        self.all_positions = bool(c["all_positions"])
        self.vocab = Vocab(("<pad>",), 0, tuple(f"a{i}" for i in range(self.m)))

    def _sample(self, count, rng):
        T = self.max_len

        def draw(rows):
            seq = rng.integers(self.m, size=(len(rows), T))
            traces = [khop(s, self.k) for s in seq]
            hop = np.stack([t.answer for t in traces])
            find = np.stack([t["find"][-1] for t in traces])
            ok = (hop >= 0).any(1) if self.all_positions else hop[:, -1] >= 0
            return dict(ok=ok, seq=seq, hop=hop, find=find)

        x = fill(count, draw)
        off = self.vocab.extra_offset
        tokens = (x["seq"] + off).astype(np.int32)
        mask = x["hop"] >= 0
        if not self.all_positions:
            mask[:, :-1] = False
        answers = np.where(mask, x["hop"] + off, -1).astype(np.int32)[..., None]
        meta = {"hop": x["hop"], "find": x["find"], "seq": x["seq"]}
        return TaskBatch(self.name, tokens, answers, mask, self.vocab, self.attention, meta)

    def references(self, batch, i):
        return {"khop": khop(batch.meta["seq"][i], self.k)}

    def describe(self, batch, i):
        seq, find = batch.meta["seq"][i], batch.meta["find"][i]
        chain = [len(seq) - 1]
        f1 = khop(seq, 1)["find"][-1]
        for _ in range(self.k):
            chain.append(int(f1[chain[-1]]) if chain[-1] >= 0 else -1)
        hop = int(batch.meta["hop"][i, -1])
        return "\n".join([
            f"k={self.k}, alphabet={self.m}, seq_len={len(seq)}",
            f"find chain from the last position: {' -> '.join(map(str, chain))} "
            f"(find_k={int(find[-1])}), target a{hop}",
            f"scored positions: {int(batch.loss_mask[i].sum())}",
            super().describe(batch, i),
        ])


@register
class Induction(KHopInduction):
    """The classic induction head: ``k-hop-induction`` with ``k = 1``."""

    name = "induction"
    params = {k: v for k, v in KHopInduction.params.items() if k != "k"}
