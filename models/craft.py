"""The craft level: transformer weights defined by their action on *named* directions.

This is tracr's ``craft`` layer, vectorised and targeting the one
:class:`~algeval.models.Transformer` class.  The residual stream is a
:class:`Space`: an ordered tuple of labels such as ``"one"``,
``"tokens:3"``, ``"reach:5"`` or ``"indices:0"``.  A block is written as a
sparse map between labels:

* :class:`HeadSpec` -- one attention head.  For query position ``i`` and key
  position ``j`` (``x`` the residual stream)::

      score(i, j) = sum_{(a, b)} x_i[a] * QK[a, b] * x_j[b]
      out_i[d]   += sum_j softmax_j(score(i, .))_j * sum_{(c, d)} x_j[c] * OV[c, d]

  The inverse temperature lives inside ``QK`` (the model's ``attn_scale``
  is 1), so it is explicit and auditable.
* :class:`MLPSpec` -- a ReLU MLP with named hidden units::

      h[k]    = relu(sum_a x[a] * W_in[a, k] + b[k])
      out[d] += sum_k h[k] * W_out[k, d]

A :class:`CraftModel` stacks layers of heads and MLPs (heads of one layer run
in parallel, as do MLPs) and lowers to a ``Transformer`` whose residual
dimension ``r`` keeps its label ``residual.labels[r]``, saved in the model
directory's meta.  A user can hand-write blocks at this level and mix them
with compiled ones: the compiler produces a ``CraftModel`` too.

Lowering (``to_transformer``): a head with query labels ``Q`` and value labels
``C`` gets ``d_head >= max(|Q|, |C|)``; ``W_Q[h]`` copies each query label to
its own head dimension, ``W_K[h]`` carries ``QK``; ``W_V[h]`` copies each
value label, ``W_O[h]`` carries ``OV``.  So ``q_i . k_j = x_i^T QK x_j``
exactly, and the head's output is exactly ``OV`` applied to the attention
average.  MLPs of one layer are concatenated along the hidden axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from algeval.errors import ParameterError


def dirs(name: str, values) -> tuple[str, ...]:
    """Labels ``name:value`` for each value (the one-hot directions of a categorical variable)."""
    return tuple(f"{name}:{v}" for v in values)


@dataclass(frozen=True)
class Space:
    """An ordered set of named basis directions."""

    labels: tuple[str, ...]

    def __post_init__(self):
        if len(set(self.labels)) != len(self.labels):
            dup = next(x for x in self.labels if self.labels.count(x) > 1)
            raise ParameterError("labels", dup, "appears twice in one space")
        object.__setattr__(self, "_index", {lab: i for i, lab in enumerate(self.labels)})

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label) -> bool:
        return label in self._index

    def index(self, label: str) -> int:
        try:
            return self._index[label]
        except KeyError:
            raise ParameterError("label", label, "is not a direction of this space") from None

    def indices(self, labels) -> np.ndarray:
        return np.array([self.index(x) for x in labels], dtype=np.int64)

    def __add__(self, other: "Space") -> "Space":
        return Space(self.labels + tuple(x for x in other.labels if x not in self))

    def read(self, x, prefix: str) -> tuple[tuple[str, ...], np.ndarray]:
        """The coordinates of ``x (..., len(self))`` on directions named ``prefix`` or ``prefix:*``."""
        sel = [i for i, lab in enumerate(self.labels) if lab == prefix or lab.startswith(prefix + ":")]
        return tuple(self.labels[i] for i in sel), np.asarray(x)[..., sel]


@dataclass
class HeadSpec:
    """An attention head as sparse bilinear (``qk``) and linear (``ov``) maps between labels."""

    name: str
    qk: dict[tuple[str, str], float]
    ov: dict[tuple[str, str], float]
    beta: float = 1.0  # the inverse temperature already folded into qk, recorded for certificates
    delta: float = 0.5  # the score gap (in units of beta) between intended and other keys

    @property
    def query_labels(self) -> tuple[str, ...]:
        return tuple(sorted({a for a, _ in self.qk}))

    @property
    def value_labels(self) -> tuple[str, ...]:
        return tuple(sorted({c for c, _ in self.ov}))


@dataclass
class MLPSpec:
    """A ReLU MLP with named hidden units: ``out += relu(x W_in + b) W_out``."""

    name: str
    hidden: tuple[str, ...]
    w_in: dict[tuple[str, str], float]
    b_in: dict[str, float]
    w_out: dict[tuple[str, str], float]


@dataclass
class CraftLayer:
    heads: list[HeadSpec] = field(default_factory=list)
    mlps: list[MLPSpec] = field(default_factory=list)


@dataclass
class CraftModel:
    """Layers of named blocks over a labelled residual space, plus the token embedding.

    ``vocab`` lists token strings by id; ``embed[token] = {label: value}`` is
    each token's embedding; the last ``max_len`` residual labels must be the
    one-hot position directions (``positions="onehot"``).  ``readout`` maps
    residual labels to vocabulary entries (the unembedding).
    """

    residual: Space
    vocab: tuple[str, ...]
    embed: dict[str, dict[str, float]]
    layers: list[CraftLayer]
    max_len: int
    readout: dict[str, str]
    attention: str = "full"
    pad_token: str | None = None  # keys holding this token are never attended
    meta: dict[str, Any] = field(default_factory=dict)

    def scale_betas(self, factor: float) -> "CraftModel":
        """Multiply every head's inverse temperature (its whole ``qk`` map and recorded ``beta``) by ``factor``,
        in place; returns ``self``.  Certificates use it to probe how much the derived betas can be lowered."""
        for layer in self.layers:
            for h in layer.heads:
                h.qk = {k: v * factor for k, v in h.qk.items()}
                h.beta *= factor
        return self

    def check(self) -> None:
        """Every label a block reads or writes exists; positions are the last ``max_len`` dims."""
        res = self.residual
        for layer in self.layers:
            for h in layer.heads:
                for (a, b) in h.qk:
                    res.index(a), res.index(b)
                for (c, d) in h.ov:
                    res.index(c), res.index(d)
            for m in layer.mlps:
                hid = set(m.hidden)
                for (a, k) in m.w_in:
                    res.index(a)
                    if k not in hid:
                        raise ParameterError(f"{m.name}.w_in", k, "is not a hidden unit of this MLP")
                for (k, d) in m.w_out:
                    res.index(d)
                    if k not in hid:
                        raise ParameterError(f"{m.name}.w_out", k, "is not a hidden unit of this MLP")
        for lab in self.readout:
            res.index(lab)

    def to_transformer(self, dtype: str = "float32"):
        """``(Transformer, meta)``: the craft model lowered to the one transformer class."""
        import jax.numpy as jnp

        from algeval.models.config import TransformerConfig
        from algeval.models.transformer import Transformer

        self.check()
        res = self.residual
        D = len(res)
        n_heads = max([len(l.heads) for l in self.layers] + [1])
        d_head = max([max(len(h.query_labels), len(h.value_labels)) for l in self.layers for h in l.heads] + [1])
        d_mlp = max([sum(len(m.hidden) for m in l.mlps) for l in self.layers] + [1])
        out_vocab = tuple(self.readout.values())
        vocab = self.vocab + tuple(v for v in out_vocab if v not in self.vocab)
        cfg = TransformerConfig(
            vocab_size=len(vocab), max_len=self.max_len, n_layers=max(len(self.layers), 1), d_model=D,
            n_heads=n_heads, d_head=d_head, d_mlp=d_mlp, attention=self.attention, norm="none", mlp="relu",
            positions="onehot", use_bias=True, attn_scale=1.0, dtype=dtype, param_dtype=dtype,
            pad_token_id=None if self.pad_token is None else vocab.index(self.pad_token),
        )
        model = Transformer(cfg, seed=0)
        f = np.float64
        W_E = np.zeros((len(vocab), D), f)
        for tok, vec in self.embed.items():
            for lab, val in vec.items():
                W_E[vocab.index(tok), res.index(lab)] = val
        if np.any(W_E[:, D - self.max_len:]):
            raise ParameterError("embed", "position directions", "token embeddings must leave the last max_len dims at zero")
        W_U = np.zeros((D, len(vocab)), f)
        for lab, tok in self.readout.items():
            W_U[res.index(lab), vocab.index(tok)] = 1.0
        setp = lambda p, arr: p.__setitem__(..., jnp.asarray(arr, dtype=p[...].dtype))  # noqa: E731
        setp(model.W_E, W_E)
        setp(model.W_U, W_U)
        setp(model.b_U, np.zeros(len(vocab)))
        for li, layer in enumerate(self.layers):
            blk = model.blocks[li]
            WQ = np.zeros((n_heads, D, d_head), f)
            WK, WV = np.zeros_like(WQ), np.zeros_like(WQ)
            WO = np.zeros((n_heads, d_head, D), f)
            for h, hs in enumerate(layer.heads):
                qi = {a: i for i, a in enumerate(hs.query_labels)}
                for a, i in qi.items():
                    WQ[h, res.index(a), i] = 1.0
                for (a, b), w in hs.qk.items():
                    WK[h, res.index(b), qi[a]] += w
                ci = {c: i for i, c in enumerate(hs.value_labels)}
                for c, i in ci.items():
                    WV[h, res.index(c), i] = 1.0
                for (c, d), w in hs.ov.items():
                    WO[h, ci[c], res.index(d)] += w
            for name, arr in (("W_Q", WQ), ("W_K", WK), ("W_V", WV), ("W_O", WO)):
                setp(getattr(blk.attn, name), arr)
            for name in ("b_Q", "b_K", "b_V", "b_O"):
                setp(getattr(blk.attn, name), np.zeros(getattr(blk.attn, name).shape))
            W_in, b_in, W_out = np.zeros((D, d_mlp), f), np.zeros(d_mlp, f), np.zeros((d_mlp, D), f)
            k0 = 0
            for m in layer.mlps:
                hid = {k: k0 + i for i, k in enumerate(m.hidden)}
                for (a, k), w in m.w_in.items():
                    W_in[res.index(a), hid[k]] += w
                for k, b in m.b_in.items():
                    b_in[hid[k]] += b
                for (k, d), w in m.w_out.items():
                    W_out[hid[k], res.index(d)] += w
                k0 += len(m.hidden)
            setp(blk.mlp.W_in, W_in)
            setp(blk.mlp.b_in, b_in)
            setp(blk.mlp.W_out, W_out)
            setp(blk.mlp.b_out, np.zeros(D))
        meta = {
            "kind": "craft",
            "residual_labels": list(res.labels),
            "vocab": list(vocab),
            "layers": [{"heads": [{"name": h.name, "beta": h.beta, "delta": h.delta, "reads_q": list(h.query_labels),
                                   "reads_v": list(h.value_labels),
                                   "writes": sorted({d for _, d in h.ov})} for h in l.heads],
                        "mlps": [{"name": m.name, "hidden": len(m.hidden),
                                  "reads": sorted({a for a, _ in m.w_in}),
                                  "writes": sorted({d for _, d in m.w_out})} for m in l.mlps]}
                       for l in self.layers],
            **self.meta,
        }
        return model, meta


# -- building blocks whose derivation is stated once ------------------------------------

def step_units(name: str, inputs: dict[str, float], threshold: float, width: float,
               out: dict[str, float], bias_label: str = "one", gate: dict[str, float] | None = None):
    """Two ReLUs computing an exact step ``out * [s > threshold]`` of ``s = sum inputs[a] x[a]``.

    With ``z = (s - threshold) / width``::

        relu(z + 1/2) - relu(z - 1/2) = 0        for s <= threshold - width/2
                                      = 1        for s >= threshold + width/2

    so every input within ``width/2`` of the clean side maps to *exactly* the
    clean value: the dead zone that absorbs attention leakage.  ``gate`` adds
    ``-big * x[g]`` to both pre-activations (used to silence a unit at the
    BOS position).  Returns ``(hidden, w_in, b_in, w_out)`` fragments.
    """
    if width <= 0:
        raise ParameterError("width", width, "must be > 0")
    hid = (f"{name}+", f"{name}-")
    w_in, b_in, w_out = {}, {}, {}
    for k, sign_b in zip(hid, (0.5, -0.5)):
        for a, w in inputs.items():
            w_in[(a, k)] = w_in.get((a, k), 0.0) + w / width
        b_in[k] = -threshold / width + sign_b
        for g, big in (gate or {}).items():
            w_in[(g, k)] = w_in.get((g, k), 0.0) - big
    for d, v in out.items():
        w_out[(hid[0], d)] = v
        w_out[(hid[1], d)] = -v
    return hid, w_in, b_in, w_out


def mlp_from_steps(name: str, steps: list[tuple]) -> MLPSpec:
    """Concatenate :func:`step_units` fragments into one :class:`MLPSpec`."""
    hidden, w_in, b_in, w_out = [], {}, {}, {}
    for hid, wi, bi, wo in steps:
        hidden += list(hid)
        for k, v in wi.items():
            w_in[k] = w_in.get(k, 0.0) + v
        b_in.update(bi)
        for k, v in wo.items():
            w_out[k] = w_out.get(k, 0.0) + v
    return MLPSpec(name, tuple(hidden), w_in, b_in, w_out)
