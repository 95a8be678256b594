"""The configuration of the one transformer class.

One frozen dataclass describes every model of the workbench: hand-built
constructions, models trained here and pretrained Llama-family checkpoints.
It is hashable (so it can be static under ``jax.jit``) and round-trips
through JSON (it is half of a model directory).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from algeval.errors import ParameterError, check

ATTENTION_MASKS = ("causal", "full", "prefix-full")
NORMS = ("none", "layernorm", "rmsnorm")
MLPS = ("none", "relu", "gelu", "swiglu")
POSITIONS = ("none", "learned", "onehot", "rotary")
DTYPES = ("float32", "float64", "bfloat16")


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style rotary frequency scaling (``rope_type="llama3"``)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and architecture of a :class:`~algeval.models.Transformer`.

    Residual stream width ``d_model``; ``n_heads`` query heads of width
    ``d_head`` sharing ``n_kv_heads`` key/value heads (grouped-query attention
    when fewer); MLP width ``d_mlp`` (``mlp="none"`` or ``d_mlp=0`` drops the
    MLP).  Blocks are pre-norm::

        x = x + attn(norm1(x));  x = x + mlp(norm2(x));  logits = unembed(norm_f(x))

    Positions: ``learned`` adds a trained table; ``onehot`` writes the one-hot
    position into the **last** ``max_len`` residual dimensions (tracr's
    concatenated encoding: the token embedding must leave them at zero);
    ``rotary`` rotates queries and keys; ``none`` adds nothing.

    Looping: blocks ``loop_start .. loop_start + loop_length - 1`` form a
    weight-tied group run ``loop_iterations`` times (overridable per call).
    Hook names number the *unrolled* layers, so iteration ``r`` of the group
    appears as its own layers.

    ``attn_scale`` multiplies ``q . k``; ``None`` means ``1/sqrt(d_head)``.
    Hand-built constructions set it to 1 and put their inverse temperature in
    ``W_Q``.
    """

    vocab_size: int
    max_len: int
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    n_kv_heads: int | None = None
    attention: str = "causal"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"
    positions: str = "learned"
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tied_unembed: bool = False
    use_bias: bool = True
    attn_scale: float | None = None
    pad_token_id: int | None = 0
    loop_start: int = 0
    loop_length: int = 0
    loop_iterations: int = 1
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "n_layers", "d_model", "n_heads", "d_head"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 1, name, v, "must be an integer >= 1")
        check(isinstance(self.d_mlp, int) and self.d_mlp >= 0, "d_mlp", self.d_mlp, "must be >= 0")
        check(self.attention in ATTENTION_MASKS, "attention", self.attention, f"must be one of {ATTENTION_MASKS}")
        check(self.norm in NORMS, "norm", self.norm, f"must be one of {NORMS}")
        check(self.mlp in MLPS, "mlp", self.mlp, f"must be one of {MLPS}")
        check(self.positions in POSITIONS, "positions", self.positions, f"must be one of {POSITIONS}")
        check(self.dtype in DTYPES, "dtype", self.dtype, f"must be one of {DTYPES}")
        check(self.param_dtype in DTYPES, "param_dtype", self.param_dtype, f"must be one of {DTYPES}")
        kv = self.kv_heads
        check(1 <= kv <= self.n_heads and self.n_heads % kv == 0, "n_kv_heads", self.n_kv_heads,
              f"must divide n_heads={self.n_heads}")
        if self.positions == "onehot":
            check(self.d_model >= self.max_len, "d_model", self.d_model,
                  f"onehot positions need d_model >= max_len={self.max_len}")
        if self.positions == "rotary":
            check(self.d_head % 2 == 0, "d_head", self.d_head, "rotary positions need an even d_head")
        check(0 <= self.loop_length and self.loop_start + self.loop_length <= self.n_layers,
              "loop_length", self.loop_length,
              f"loop blocks {self.loop_start}..{self.loop_start + self.loop_length - 1} "
              f"must lie within n_layers={self.n_layers}")
        check(self.loop_start >= 0, "loop_start", self.loop_start, "must be >= 0")
        check(isinstance(self.loop_iterations, int) and self.loop_iterations >= 1,
              "loop_iterations", self.loop_iterations, "must be an integer >= 1")
        if self.pad_token_id is not None:
            check(0 <= self.pad_token_id < self.vocab_size, "pad_token_id", self.pad_token_id,
                  f"must be in [0, vocab_size={self.vocab_size})")

    # -- derived -------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def has_mlp(self) -> bool:
        return self.mlp != "none" and self.d_mlp > 0

    def schedule(self, loop_iterations: int | None = None) -> tuple[int, ...]:
        """Block index run at each unrolled layer.

        Example: 4 blocks, loop over blocks 1..2 run 3 times ->
        ``(0, 1, 2, 1, 2, 1, 2, 3)``.
        """
        r = self.loop_iterations if loop_iterations is None else loop_iterations
        if self.loop_length == 0:
            return tuple(range(self.n_layers))
        s, n = self.loop_start, self.loop_length
        return tuple(range(s)) + tuple(range(s, s + n)) * r + tuple(range(s + n, self.n_layers))

    def n_unrolled(self, loop_iterations: int | None = None) -> int:
        return len(self.schedule(loop_iterations))

    def replace(self, **kw) -> "TransformerConfig":
        return dataclasses.replace(self, **kw)

    # -- JSON ------------------------------------------------------------------
    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TransformerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParameterError("config", unknown[0], f"unknown config field; known: {', '.join(sorted(known))}")
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)
