"""The fast last-position evaluator computes the same function as the dense forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from algeval.errors import ParameterError
from algeval.models import Transformer, TransformerConfig
from algeval.models.constructions.search import bfs_search, path_merging_search, shortest_path_next_hop, to_model
from algeval.models.fastpath import last_position_fn, last_position_logits
from algeval.sim.tasks import get_task


def _close(model, tokens, prefix_end=None, tol=1e-4):
    fast = last_position_logits(model, tokens, prefix_end=prefix_end, chunk=64)
    dense = np.asarray(model(tokens, prefix_end=prefix_end))[:, -1]
    scale = max(1.0, float(np.abs(dense).max()))
    assert np.abs(fast - dense).max() <= tol * scale
    top2 = np.sort(dense, 1)[:, -2:]
    untied = top2[:, 1] - top2[:, 0] > 1e-3  # constructions tie correct children exactly
    assert untied.sum() > len(dense) // 2
    assert (fast.argmax(1) == dense.argmax(1))[untied].all()


@pytest.mark.parametrize("which", ["path-merging", pytest.param("bfs", marks=pytest.mark.slow),
                                   pytest.param("looped", marks=pytest.mark.slow),
                                   pytest.param("shortest-path", marks=pytest.mark.slow)])
def test_constructions_match_dense(which):
    if which == "shortest-path":
        task = get_task("shortest-path", max_vertices=5, family="er")
        craft = shortest_path_next_hop(task)
    else:
        task = get_task("search", max_vertices=6, distribution="naive", path_prefix="random")
        craft = (bfs_search(task) if which == "bfs" else
                 path_merging_search(task, loop=which == "looped", iterations=2 if which == "looped" else None))
    model, _ = to_model(craft)
    batch = task.sample(150, 3)  # not a multiple of the chunk: the last chunk is padded with repeats
    _close(model, batch.tokens)


@pytest.mark.parametrize("attention,positions", [("causal", "onehot"),
                                                 pytest.param("causal", "learned", marks=pytest.mark.slow),
                                                 ("prefix-full", "onehot"),
                                                 pytest.param("full", "none", marks=pytest.mark.slow)])
def test_random_dense_model_matches(attention, positions):
    """A random (dense) model: no zeros to skip, every position live; left padding is cut exactly."""
    cfg = TransformerConfig(vocab_size=11, max_len=20, n_layers=3, d_model=32 if positions != "onehot" else 40,
                            n_heads=2, d_head=8, d_mlp=24, attention=attention, norm="none", mlp="relu",
                            positions=positions, pad_token_id=0)
    model = Transformer(cfg, seed=1)
    rng = np.random.default_rng(0)
    toks = rng.integers(1, 11, (40, 20))
    lead = rng.integers(0, 15, 40)
    toks[np.arange(20)[None, :] < lead[:, None]] = 0  # left padding of varying length
    pe = np.maximum(lead + 2, 17) if attention == "prefix-full" else None
    _close(model, toks, pe)


def test_unsupported_configuration_is_named():
    cfg = TransformerConfig(vocab_size=5, max_len=8, n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=16,
                            norm="layernorm")
    with pytest.raises(ParameterError, match="norm"):
        last_position_fn(Transformer(cfg))


def _positional_model(beta: float):
    """Two causal layers; layer 0's only head reads position one-hots (score ``beta`` on key ``i - 1``), so
    it runs at every position by the shared-score path; layer 1 is random."""
    T = 12
    cfg = TransformerConfig(vocab_size=9, max_len=T, n_layers=2, d_model=9 + T, n_heads=1, d_head=T, d_mlp=4,
                            attention="causal", norm="none", mlp="relu", positions="onehot", pad_token_id=0,
                            use_bias=False)
    model = Transformer(cfg, seed=2)
    W_E = np.asarray(model.W_E[...]).copy()
    W_E[:, 9:] = 0.0  # nothing but the position one-hots on the position directions
    model.W_E[...] = W_E
    at = model.blocks[0].attn
    WQ, WK = np.zeros(at.W_Q[...].shape, np.float32), np.zeros(at.W_K[...].shape, np.float32)
    for i in range(1, T):  # q_i = beta e_i, k_j = e_{j+1}: s[i, j] = beta [j == i - 1] (times 1/sqrt(d_head))
        WQ[0, 9 + i, i] = beta
        WK[0, 9 + i - 1, i] = 1.0
    at.W_Q[...], at.W_K[...] = WQ, WK
    return model


@pytest.mark.parametrize("beta", [6.0, 2000.0])
def test_positional_head_matches_dense_with_and_without_underflow(beta, monkeypatch):
    """beta = 2000: at the first real token the only high score is a pad key, so the shared-shift softmax
    underflows and the per-example softmax must take over; beta = 6: the shared path."""
    import jax.numpy as jnp

    from algeval.models.fastpath import shared_score_attention

    model = _positional_model(beta)
    rng = np.random.default_rng(1)
    toks = rng.integers(1, 9, (50, 12))
    toks[np.arange(12)[None, :] < rng.integers(0, 9, 50)[:, None]] = 0
    T = 12
    s = np.full((T, T), 0.0, np.float32)
    s[np.arange(1, T), np.arange(T - 1)] = beta / np.sqrt(T)
    v = rng.normal(size=(3, 50, T)).astype(np.float32)
    z, ok = shared_score_attention(jnp.asarray(s), jnp.asarray(v), jnp.asarray(toks != 0), causal=True)
    assert bool(ok) == (beta < 100)
    if ok:  # against the masked softmax of models.masks, per example
        from algeval.models.masks import attention_mask
        m = np.asarray(attention_mask("causal", jnp.asarray(toks), None, 0))
        e = np.where(m, np.exp(s - s.max()), 0.0)
        ref = np.einsum("bij,ebj->ebi", e / e.sum(-1, keepdims=True), v)
        np.testing.assert_allclose(np.asarray(z), ref, rtol=1e-5, atol=1e-6)
    from algeval.models import fastpath
    calls = []
    monkeypatch.setattr(fastpath, "shared_score_attention",
                        lambda *a, **k: calls.append(1) or shared_score_attention(*a, **k))
    _close(model, toks, tol=1e-5)
    assert calls  # the positional head took the shared-score path (with its fallback)


def test_split_output_map_places_light_and_heavy_columns():
    """A map with many one-entry columns and one column every row writes is split (ELL + dense) and applies
    exactly as the dense product."""
    import jax.numpy as jnp

    from algeval.models.fastpath import _compress, _write

    rng = np.random.default_rng(0)
    W = np.zeros((40, 30), np.float32)
    W[np.arange(20), np.arange(20) + 5] = rng.normal(size=20)
    W[:, 2] = rng.normal(size=40)  # heavy
    m = _compress(W, 0.05)
    assert type(m).__name__ == "_Split"
    h = rng.normal(size=(40, 7)).astype(np.float32)
    x = rng.normal(size=(30, 7)).astype(np.float32)
    got = _write(jnp.asarray(x), m, jnp.asarray(h), jax_tree(m.arrays()), 30)
    np.testing.assert_allclose(np.asarray(got), x + W.T @ h, rtol=1e-5, atol=1e-5)


def jax_tree(arrays):
    import jax
    import jax.numpy as jnp
    return jax.tree.map(jnp.asarray, arrays)


@pytest.mark.parametrize("attention", ["prefix-full", "causal"])
def test_last_q_positions_match_dense(attention):
    """``last=Q``: the logits at the last Q positions (teacher forcing) equal the dense pass's there."""
    cfg = TransformerConfig(vocab_size=11, max_len=20, n_layers=3, d_model=40, n_heads=2, d_head=8, d_mlp=24,
                            attention=attention, norm="none", mlp="relu", positions="onehot", pad_token_id=0)
    model = Transformer(cfg, seed=3)
    rng = np.random.default_rng(5)
    toks = rng.integers(1, 11, (40, 20))
    lead = rng.integers(0, 12, 40)
    toks[np.arange(20)[None, :] < lead[:, None]] = 0
    pe = np.maximum(lead + 2, 14) if attention == "prefix-full" else None
    fast = last_position_logits(model, toks, prefix_end=pe, chunk=16, last=6)
    dense = np.asarray(model(toks, prefix_end=pe))[:, -6:]
    assert fast.shape == dense.shape
    np.testing.assert_allclose(fast, dense, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(dense).max())))
    with pytest.raises(ParameterError, match="last"):
        last_position_logits(model, toks, last=21)


def test_cache_holds_the_model_so_its_id_is_not_reused():
    """The compiled function is cached under ``id(model)``; the cache keeps the model alive, so a new model
    never finds a stale entry under a recycled id."""
    import gc

    from algeval.models import fastpath

    toks = np.random.default_rng(0).integers(1, 11, (8, 20))
    cfg = TransformerConfig(vocab_size=11, max_len=20, n_layers=1, d_model=40, n_heads=2, d_head=8, d_mlp=8,
                            norm="none", mlp="relu", positions="onehot", pad_token_id=0)
    for seed in range(3):
        model = Transformer(cfg, seed=seed)
        fast = last_position_logits(model, toks)
        assert fastpath._CACHE["model"] is model
        np.testing.assert_allclose(fast, np.asarray(model(toks))[:, -1], rtol=1e-4, atol=1e-4)
        del model
        gc.collect()
