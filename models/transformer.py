"""The one transformer class: every model of the workbench is a ``Transformer``.

Parameters are laid out per head, as in TransformerLens, so a single head can
be read or written by hand::

    W_E (vocab, d_model)            W_pos (max_len, d_model)      [learned positions]
    blocks[b].attn.W_Q (head, d_model, d_head)     b_Q (head, d_head)
    blocks[b].attn.W_K (kv_head, d_model, d_head)  b_K (kv_head, d_head)
    blocks[b].attn.W_V (kv_head, d_model, d_head)  b_V (kv_head, d_head)
    blocks[b].attn.W_O (head, d_head, d_model)     b_O (d_model,)
    blocks[b].mlp.W_in (d_model, d_mlp)  b_in   [W_gate for swiglu]   W_out (d_mlp, d_model)  b_out
    blocks[b].ln1/ln2/ln_final .w (d_model,) [.b]
    W_U (d_model, vocab)  b_U (vocab,)          [absent when the unembedding is tied to W_E]

Head ``h`` computes, for query position ``i`` (``x`` the normalised residual)::

    q_i = x_i W_Q[h] + b_Q[h]      k_j = x_j W_K[g(h)] + b_K[g(h)]    v_j likewise
    A_ij = softmax_j( scale * q_i . k_j  over allowed j )
    z_i = sum_j A_ij v_j           result_i = z_i W_O[h]

with ``g(h) = h // (n_heads / n_kv_heads)`` (grouped-query attention).  See
:mod:`algeval.models.hooks` for the hook names, caching and patching.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from algeval.errors import ParameterError
from algeval.models.config import TransformerConfig
from algeval.models.hooks import HookContext
from algeval.models.masks import attention_mask
from algeval.models.rotary import apply_rotary, inv_frequencies

_DT = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16}


def _normal(rngs: nnx.Rngs, shape, std, dtype):
    return nnx.Param((jax.random.normal(rngs.params(), shape, jnp.float32) * std).astype(dtype))


def _zeros(shape, dtype):
    return nnx.Param(jnp.zeros(shape, dtype))


class Norm(nnx.Module):
    """LayerNorm ``w * (x - mean) / sqrt(var + eps) + b`` or RMSNorm ``w * x / sqrt(mean(x^2) + eps)``."""

    def __init__(self, cfg: TransformerConfig):
        self.kind, self.eps = cfg.norm, cfg.norm_eps
        pd = _DT[cfg.param_dtype]
        self.w = nnx.Param(jnp.ones((cfg.d_model,), pd))
        if cfg.norm == "layernorm":
            self.b = _zeros((cfg.d_model,), pd)

    def __call__(self, x):
        xf = x.astype(jnp.float32)
        if self.kind == "layernorm":
            xf = xf - xf.mean(-1, keepdims=True)
            y = xf * jax.lax.rsqrt((xf * xf).mean(-1, keepdims=True) + self.eps)
            return (y.astype(x.dtype) * self.w[...].astype(x.dtype)) + self.b[...].astype(x.dtype)
        y = xf * jax.lax.rsqrt((xf * xf).mean(-1, keepdims=True) + self.eps)
        return y.astype(x.dtype) * self.w[...].astype(x.dtype)


class Attention(nnx.Module):
    """Multi-head (grouped-query) softmax attention with per-head weights."""

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        H, KV, D, E = cfg.n_heads, cfg.kv_heads, cfg.d_model, cfg.d_head
        pd = _DT[cfg.param_dtype]
        s_in, s_out = D ** -0.5, (H * E) ** -0.5 / np.sqrt(2 * cfg.n_layers)
        self.W_Q = _normal(rngs, (H, D, E), s_in, pd)
        self.W_K = _normal(rngs, (KV, D, E), s_in, pd)
        self.W_V = _normal(rngs, (KV, D, E), s_in, pd)
        self.W_O = _normal(rngs, (H, E, D), s_out, pd)
        if cfg.use_bias:
            self.b_Q, self.b_K, self.b_V = _zeros((H, E), pd), _zeros((KV, E), pd), _zeros((KV, E), pd)
            self.b_O = _zeros((D,), pd)

    def __call__(self, x, ctx: HookContext, l: int, mask, positions):
        cfg, dt = self.cfg, x.dtype
        p = f"blocks.{l}.attn."
        w = lambda name: getattr(self, name)[...].astype(dt)  # noqa: E731
        q = jnp.einsum("btd,hde->bthe", x, w("W_Q"))
        k = jnp.einsum("btd,hde->bthe", x, w("W_K"))
        v = jnp.einsum("btd,hde->bthe", x, w("W_V"))
        if cfg.use_bias:
            q, k, v = q + w("b_Q"), k + w("b_K"), v + w("b_V")
        q, k, v = ctx(p + "hook_q", q), ctx(p + "hook_k", k), ctx(p + "hook_v", v)
        if cfg.positions == "rotary":
            inv = inv_frequencies(cfg.d_head, cfg.rope_theta, cfg.rope_scaling)
            q = ctx(p + "hook_rot_q", apply_rotary(q, positions, inv))
            k = ctx(p + "hook_rot_k", apply_rotary(k, positions, inv))
        rep = cfg.n_heads // cfg.kv_heads
        if rep > 1:
            k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
        scale = cfg.d_head ** -0.5 if cfg.attn_scale is None else cfg.attn_scale
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k).astype(jnp.float32) * scale
        scores = ctx(p + "hook_attn_scores", jnp.where(mask[:, None], scores, -jnp.inf))
        pattern = ctx(p + "hook_pattern", jax.nn.softmax(scores, axis=-1)).astype(dt)
        z = ctx(p + "hook_z", jnp.einsum("bhqk,bkhe->bqhe", pattern, v))
        if ctx.wants(p + "hook_result"):
            result = ctx(p + "hook_result", jnp.einsum("bqhe,hed->bqhd", z, w("W_O")))
            out = result.sum(2)
        else:
            out = jnp.einsum("bqhe,hed->bqd", z, w("W_O"))
        return out + w("b_O") if cfg.use_bias else out


class MLP(nnx.Module):
    """``W_out act(x W_in + b_in) + b_out``; swiglu: ``W_out (silu(x W_gate) * (x W_in))``."""

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        D, M = cfg.d_model, cfg.d_mlp
        pd = _DT[cfg.param_dtype]
        self.W_in = _normal(rngs, (D, M), D ** -0.5, pd)
        if cfg.mlp == "swiglu":
            self.W_gate = _normal(rngs, (D, M), D ** -0.5, pd)
        self.W_out = _normal(rngs, (M, D), M ** -0.5 / np.sqrt(2 * cfg.n_layers), pd)
        if cfg.use_bias:
            self.b_in, self.b_out = _zeros((M,), pd), _zeros((D,), pd)

    def __call__(self, x, ctx: HookContext, l: int):
        cfg, dt, p = self.cfg, x.dtype, f"blocks.{l}.mlp."
        w = lambda name: getattr(self, name)[...].astype(dt)  # noqa: E731
        if cfg.mlp == "swiglu":
            gate = ctx(p + "hook_pre", x @ w("W_gate"))
            lin = ctx(p + "hook_pre_linear", x @ w("W_in"))
            post = jax.nn.silu(gate) * lin
        else:
            pre = x @ w("W_in") + (w("b_in") if cfg.use_bias else 0)
            pre = ctx(p + "hook_pre", pre)
            post = jax.nn.relu(pre) if cfg.mlp == "relu" else jax.nn.gelu(pre, approximate=False)
        post = ctx(p + "hook_post", post)
        out = post @ w("W_out")
        return out + w("b_out") if cfg.use_bias else out


class Block(nnx.Module):
    """Pre-norm residual block: attention, then MLP."""

    def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        if cfg.norm != "none":
            self.ln1 = Norm(cfg)
        self.attn = Attention(cfg, rngs)
        if cfg.has_mlp:
            if cfg.norm != "none":
                self.ln2 = Norm(cfg)
            self.mlp = MLP(cfg, rngs)

    def __call__(self, x, ctx: HookContext, l: int, mask, positions):
        p = f"blocks.{l}."
        x = ctx(p + "hook_resid_pre", x)
        h = ctx(p + "ln1.hook_normalized", self.ln1(x)) if self.cfg.norm != "none" else x
        x = x + ctx(p + "hook_attn_out", self.attn(h, ctx, l, mask, positions))
        if self.cfg.has_mlp:
            x = ctx(p + "hook_resid_mid", x)
            h = ctx(p + "ln2.hook_normalized", self.ln2(x)) if self.cfg.norm != "none" else x
            x = x + ctx(p + "hook_mlp_out", self.mlp(h, ctx, l))
        return ctx(p + "hook_resid_post", x)


class Transformer(nnx.Module):
    """Decoder-style transformer with named hooks; see the module docstring.

    ``model(tokens)`` returns logits ``(batch, pos, vocab)``.  Analyses use
    :meth:`run_with_cache` and :meth:`run_with_patches`; training and sweeps
    use :meth:`functional` to get a pure function for ``jax.jit``/``vmap``.
    """

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs | None = None, seed: int = 0):
        rngs = rngs if rngs is not None else nnx.Rngs(seed)
        self.cfg = cfg
        pd = _DT[cfg.param_dtype]
        self.W_E = _normal(rngs, (cfg.vocab_size, cfg.d_model), 1.0 if cfg.norm != "none" else 0.02, pd)
        if cfg.positions == "learned":
            self.W_pos = _normal(rngs, (cfg.max_len, cfg.d_model), 0.02, pd)
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        if cfg.norm != "none":
            self.ln_final = Norm(cfg)
        if not cfg.tied_unembed:
            self.W_U = _normal(rngs, (cfg.d_model, cfg.vocab_size), cfg.d_model ** -0.5, pd)
            if cfg.use_bias:
                self.b_U = _zeros((cfg.vocab_size,), pd)

    # -- the forward pass --------------------------------------------------------
    def forward(self, tokens, ctx: HookContext, prefix_end=None, loop_iterations: int | None = None, *,
                start: int = 0, resid=None):
        """Logits for ``tokens (batch, pos)``; ``ctx`` applies patches and records the cache.

        With ``start > 0`` the pass resumes at unrolled layer ``start`` from ``resid``, that layer's
        ``hook_resid_pre`` (e.g. cached from an earlier run of the same tokens): the embedding and
        layers ``< start`` are not computed, and their hooks never fire.
        """
        cfg = self.cfg
        dt = _DT[cfg.dtype]
        b, t = tokens.shape
        if cfg.attention == "prefix-full" and prefix_end is None:
            raise ParameterError("prefix_end", None, "attention 'prefix-full' needs prefix_end (one per example)")
        mask = attention_mask(cfg.attention, tokens, prefix_end, cfg.pad_token_id)
        positions = jnp.arange(t)
        if start:
            if resid is None:
                raise ParameterError("resid", None, f"resuming at layer start={start} needs its hook_resid_pre")
            x = resid.astype(dt)
        else:
            x = ctx("hook_embed", self.W_E[...].astype(dt)[tokens])
            if cfg.positions == "learned":
                x = x + ctx("hook_pos_embed", jnp.broadcast_to(self.W_pos[...].astype(dt)[:t], x.shape))
            elif cfg.positions == "onehot":
                pos = jax.nn.one_hot(positions, cfg.max_len, dtype=dt)
                pos = jnp.pad(pos, ((0, 0), (cfg.d_model - cfg.max_len, 0)))
                x = x + ctx("hook_pos_embed", jnp.broadcast_to(pos, x.shape))
        for l, blk in enumerate(cfg.schedule(loop_iterations)):
            if l >= start:
                x = self.blocks[blk](x, ctx, l, mask, positions)
        if cfg.norm != "none":
            x = ctx("ln_final.hook_normalized", self.ln_final(x))
        W_U = self.W_E[...].T if cfg.tied_unembed else self.W_U[...]
        logits = x @ W_U.astype(dt)
        if not cfg.tied_unembed and cfg.use_bias:
            logits = logits + self.b_U[...].astype(dt)
        return logits

    def __call__(self, tokens, *, prefix_end=None, loop_iterations: int | None = None):
        return self.forward(jnp.asarray(tokens), HookContext(), prefix_end, loop_iterations)

    # -- analysis entry points ----------------------------------------------------
    def hook_names(self, loop_iterations: int | None = None) -> tuple[str, ...]:
        from algeval.models.hooks import hook_names
        return hook_names(self.cfg, loop_iterations)

    def functional(self, names_filter=(), loop_iterations: int | None = None, start: int = 0):
        """``(fn, state)`` with ``fn(state, tokens, patches=None, prefix_end=None) -> (logits, cache)``.

        ``fn`` is pure and un-jitted: wrap it in ``jax.jit`` / ``jax.vmap`` /
        ``jax.grad`` as needed.  ``names_filter`` picks the cached hooks
        (``()`` caches nothing; ``None`` caches everything).  With ``start > 0``
        the signature is ``fn(state, tokens, patches, prefix_end, resid)``: the
        pass resumes at unrolled layer ``start`` from ``resid``, that layer's
        ``hook_resid_pre`` (see :meth:`forward`).
        """
        from algeval.models.hooks import check_patches, resolve_names

        names = frozenset() if names_filter == () else resolve_names(self.cfg, names_filter, loop_iterations)
        graphdef, state = nnx.split(self)
        cfg = self.cfg

        n = cfg.n_unrolled(loop_iterations)
        if not 0 <= start < n:
            raise ParameterError("start", start, f"must be a layer index in 0..{n - 1}")

        def fn(state, tokens, patches=None, prefix_end=None, resid=None):
            if patches:
                check_patches(cfg, patches, loop_iterations)
            model = nnx.merge(graphdef, state)
            ctx = HookContext(names, patches)
            logits = model.forward(tokens, ctx, prefix_end, loop_iterations, start=start, resid=resid)
            return logits, ctx.cache

        return fn, state

    def run_with_cache(self, tokens, names_filter=None, *, patches=None, prefix_end=None,
                       loop_iterations: int | None = None):
        """``(logits, cache)``: the activations named by ``names_filter`` (default: all), jitted."""
        tokens = self._check_tokens(tokens)
        fn, state = self.functional(names_filter, loop_iterations)
        return _jit(fn)(state, tokens, patches, prefix_end)

    def run_with_patches(self, tokens, patches: dict, *, names_filter=(), prefix_end=None,
                         loop_iterations: int | None = None):
        """Logits with the named activations edited by ``patches`` (see :class:`~algeval.models.hooks.Patch`).

        With a ``names_filter``, returns ``(logits, cache)`` of the patched run.
        """
        tokens = self._check_tokens(tokens)
        fn, state = self.functional(names_filter, loop_iterations)
        logits, cache = _jit(fn)(state, tokens, patches, prefix_end)
        return (logits, cache) if names_filter != () else logits

    def _check_tokens(self, tokens):
        arr = np.asarray(tokens)
        if arr.ndim != 2:
            raise ParameterError("tokens", arr.shape, "must be (batch, pos)")
        if arr.shape[1] > self.cfg.max_len:
            raise ParameterError("tokens", f"length {arr.shape[1]}", f"must be <= max_len={self.cfg.max_len}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.cfg.vocab_size):
            raise ParameterError("tokens", f"range [{arr.min()}, {arr.max()}]",
                                 f"ids must lie in [0, vocab_size={self.cfg.vocab_size})")
        return jnp.asarray(arr, jnp.int32)

    def num_params(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(self, nnx.Param))))


_JIT_CACHE: dict = {}


def _jit(fn):
    """jit ``fn`` once per (graph structure, cached names, loops): keyed by its closure."""
    key = tuple(c.cell_contents for c in fn.__closure__ if _hashable(c.cell_contents))
    f = _JIT_CACHE.get(key)
    if f is None:
        f = _JIT_CACHE[key] = jax.jit(fn)
    return f


def _hashable(x) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False
