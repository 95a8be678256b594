"""Attention masks: which key positions each query position may read.

For query ``i`` and key ``j`` of one example:

* ``causal``       ``j <= i``
* ``full``         every ``j``
* ``prefix-full``  ``j <= i``, or both ``i, j < prefix_end`` (a bidirectional
  prefix followed by causal generation; ``prefix_end`` is absolute and
  exclusive, one per example)

Keys holding the pad token are never read, except that every position may
read itself, so no row of the softmax is empty.
"""

from __future__ import annotations

import jax.numpy as jnp


def attention_mask(kind: str, tokens, prefix_end=None, pad_token_id: int | None = 0):
    """Boolean ``(batch, query_pos, key_pos)`` mask; true means "may attend"."""
    b, t = tokens.shape
    i = jnp.arange(t)[:, None]
    j = jnp.arange(t)[None, :]
    if kind == "causal":
        m = jnp.broadcast_to(j <= i, (b, t, t))
    elif kind == "full":
        m = jnp.ones((b, t, t), dtype=bool)
    elif kind == "prefix-full":
        if prefix_end is None:
            raise ValueError("attention 'prefix-full' needs prefix_end (one per example)")
        pe = jnp.asarray(prefix_end)[:, None, None]
        m = (j <= i)[None] | ((i < pe) & (j < pe))
    else:
        raise ValueError(f"unknown attention mask {kind!r}")
    if pad_token_id is not None:
        m = m & (tokens != pad_token_id)[:, None, :]
        m = m | jnp.eye(t, dtype=bool)[None]
    return m
