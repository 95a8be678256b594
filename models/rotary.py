"""Rotary position embeddings (RoPE), with Llama-3 frequency scaling.

Pairs of dimensions ``(x_k, x_{k+d/2})`` of each query and key are rotated by
angle ``p * w_k`` at position ``p``, with ``w_k = theta^(-2k/d)``, so that
``q_p . k_s`` depends on ``p - s`` only.  This is the "rotate half" layout of
Hugging Face's Llama.  Llama-3 scaling divides low frequencies by ``factor``
and interpolates smoothly between ``low_freq_factor`` and
``high_freq_factor`` wavelengths.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from algeval.models.config import RopeScaling


def inv_frequencies(d_head: int, theta: float, scaling: RopeScaling | None = None) -> np.ndarray:
    inv = 1.0 / (theta ** (np.arange(0, d_head, 2, dtype=np.float64) / d_head))
    if scaling is None:
        return inv
    lo_wl = scaling.original_max_position_embeddings / scaling.low_freq_factor
    hi_wl = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wl = 2 * math.pi / inv
    out = np.where(wl > lo_wl, inv / scaling.factor, inv)
    smooth = (scaling.original_max_position_embeddings / wl - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * out / scaling.factor + smooth * out
    medium = (wl >= hi_wl) & (wl <= lo_wl)
    return np.where(medium, smoothed, out)


def apply_rotary(x, positions, inv_freq):
    """Rotate ``x (batch, pos, head, d_head)`` at integer ``positions (pos,)``."""
    ang = jnp.asarray(positions, jnp.float32)[:, None] * jnp.asarray(inv_freq, jnp.float32)[None, :]
    cos = jnp.concatenate([jnp.cos(ang)] * 2, -1)[None, :, None, :].astype(x.dtype)
    sin = jnp.concatenate([jnp.sin(ang)] * 2, -1)[None, :, None, :].astype(x.dtype)
    h = x.shape[-1] // 2
    rot = jnp.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    return x * cos + rot * sin
