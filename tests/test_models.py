"""The one transformer class: hooks, caching, patching, architectures, model directories."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from algeval.errors import ParameterError
from algeval.models import Patch, Transformer, TransformerConfig, hook_names
from algeval.models.io import load_model, save_model

BASE = dict(vocab_size=13, max_len=12, n_layers=2, d_model=16, n_heads=4, d_head=4, d_mlp=32)


def toks(b=3, t=9, seed=0, vocab=13):
    return np.random.default_rng(seed).integers(1, vocab, (b, t)).astype(np.int32)


def test_cache_holds_every_hook_and_matches_plain_call():
    m = Transformer(TransformerConfig(**BASE), seed=1)
    x = toks()
    logits, cache = m.run_with_cache(x)
    assert set(cache) == set(m.hook_names())
    np.testing.assert_allclose(logits, m(x), atol=1e-5)
    assert cache["blocks.1.attn.hook_pattern"].shape == (3, 4, 9, 9)
    assert cache["blocks.0.attn.hook_z"].shape == (3, 9, 4, 4)
    assert cache["blocks.0.attn.hook_result"].shape == (3, 9, 4, 16)
    # the per-head results sum to the attention output
    np.testing.assert_allclose(cache["blocks.0.attn.hook_result"].sum(2) + m.blocks[0].attn.b_O[...],
                               cache["blocks.0.hook_attn_out"], atol=1e-5)
    # residual bookkeeping
    np.testing.assert_allclose(cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"],
                               cache["blocks.0.hook_resid_mid"], atol=1e-5)
    np.testing.assert_allclose(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])
    # attention rows are distributions over allowed (causal) keys
    pat = np.asarray(cache["blocks.0.attn.hook_pattern"])
    np.testing.assert_allclose(pat.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(pat, 1) == 0)


def test_names_filter_forms():
    m = Transformer(TransformerConfig(**BASE), seed=1)
    x = toks()
    _, c = m.run_with_cache(x, names_filter="blocks.*.attn.hook_pattern")
    assert sorted(c) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    _, c = m.run_with_cache(x, names_filter=["hook_embed", "blocks.1.hook_resid_post"])
    assert sorted(c) == ["blocks.1.hook_resid_post", "hook_embed"]
    _, c = m.run_with_cache(x, names_filter=lambda n: n.endswith("hook_q"))
    assert sorted(c) == ["blocks.0.attn.hook_q", "blocks.1.attn.hook_q"]
    with pytest.raises(ParameterError, match="names_filter"):
        m.run_with_cache(x, names_filter="blocks.7.hook_resid_pre")


def test_patching_resid_with_other_run_transplants_its_output():
    m = Transformer(TransformerConfig(**BASE), seed=2)
    a, b = toks(seed=1), toks(seed=2)
    _, cb = m.run_with_cache(b, names_filter="blocks.1.hook_resid_pre")
    val = cb["blocks.1.hook_resid_pre"]
    out = m.run_with_patches(a, {"blocks.1.hook_resid_pre": Patch(jnp.ones(()), val)})
    np.testing.assert_allclose(out, m(b), atol=1e-5)


def test_head_ablation_equals_zeroing_its_output_weights():
    m = Transformer(TransformerConfig(**BASE), seed=3)
    x = toks()
    mask = jnp.zeros((1, 1, 4, 1)).at[0, 0, 2, 0].set(1.0)
    ablated = m.run_with_patches(x, {"blocks.0.attn.hook_z": Patch(mask, jnp.zeros(()))})
    m.blocks[0].attn.W_O[...] = m.blocks[0].attn.W_O[...].at[2].set(0.0)
    np.testing.assert_allclose(ablated, m(x), atol=1e-5)


def test_add_patch_and_stacked_patch_match_single_layer_patch():
    cfg = TransformerConfig(**BASE)
    m = Transformer(cfg, seed=4)
    x = toks()
    delta = jax.random.normal(jax.random.key(0), (3, 9, 16))
    single = m.run_with_patches(x, {"blocks.1.hook_resid_mid": Patch(jnp.ones(()), delta, "add")})
    smask = jnp.zeros((2, 1, 1, 1)).at[1].set(1.0)
    stacked = m.run_with_patches(x, {"blocks.*.hook_resid_mid": Patch(smask, jnp.stack([delta, delta]), "add")})
    np.testing.assert_allclose(single, stacked, atol=1e-6)
    assert np.abs(np.asarray(single) - np.asarray(m(x))).max() > 1e-3
    with pytest.raises(ParameterError, match="leading layer axis"):
        m.run_with_patches(x, {"blocks.*.hook_resid_mid": Patch(jnp.ones((3, 1, 1, 1)), jnp.zeros((3, 1, 1, 1)))})


def test_sweep_layers_positions_heads_is_one_vmap():
    """Activation patching over layers x positions x heads as a single vmapped call."""
    cfg = TransformerConfig(**BASE)
    m = Transformer(cfg, seed=5)
    clean, corrupt = toks(b=2, seed=6), toks(b=2, seed=7)
    _, cc = m.run_with_cache(corrupt, names_filter="blocks.*.attn.hook_z")
    zc = jnp.stack([cc[f"blocks.{l}.attn.hook_z"] for l in range(2)])  # (L, B, T, H, E)
    L, T, H = 2, 9, 4
    masks = jnp.eye(L * T * H).reshape(L * T * H, L, 1, T, H, 1)
    fn, state = m.functional()

    def run(mask):
        logits, _ = fn(state, jnp.asarray(clean), {"blocks.*.attn.hook_z": Patch(mask, zc)})
        return logits[:, -1]

    swept = jax.jit(jax.vmap(run))(masks).reshape(L, T, H, 2, -1)
    for l, t, h in [(0, 3, 1), (1, 8, 2), (1, 0, 0)]:
        mask = jnp.zeros((1, T, H, 1)).at[0, t, h, 0].set(1.0)
        one = m.run_with_patches(clean, {f"blocks.{l}.attn.hook_z": Patch(mask, zc[l])})
        np.testing.assert_allclose(swept[l, t, h], one[:, -1], atol=1e-5)


@pytest.mark.parametrize("norm,mlp,positions,tied,bias", [
    ("layernorm", "gelu", "learned", False, True),
    ("rmsnorm", "swiglu", "rotary", True, False),
    ("none", "relu", "onehot", False, True),
    ("layernorm", "none", "none", False, False),
])
def test_architecture_variants_run_and_are_causal(norm, mlp, positions, tied, bias):
    cfg = TransformerConfig(**{**BASE, "d_model": 16 if positions != "onehot" else 24}, norm=norm, mlp=mlp,
                            positions=positions, tied_unembed=tied, use_bias=bias)
    m = Transformer(cfg, seed=0)
    x = toks()
    y = x.copy()
    y[:, -1] = (y[:, -1] % 12) + 1
    lx, ly = np.asarray(m(x)), np.asarray(m(y))
    assert np.isfinite(lx).all()
    np.testing.assert_allclose(lx[:, :-1], ly[:, :-1], atol=1e-5)  # the future is invisible
    assert np.abs(lx[:, -1] - ly[:, -1]).max() > 1e-4
    names = set(hook_names(cfg))
    assert ("blocks.0.attn.hook_rot_q" in names) == (positions == "rotary")
    assert ("blocks.0.mlp.hook_pre_linear" in names) == (mlp == "swiglu")
    assert ("hook_pos_embed" in names) == (positions in ("learned", "onehot"))


def test_full_and_prefix_full_masks():
    x = toks()
    full = Transformer(TransformerConfig(**BASE, attention="full"), seed=0)
    y = x.copy()
    y[:, -1] = (y[:, -1] % 12) + 1
    assert np.abs(np.asarray(full(x))[:, 0] - np.asarray(full(y))[:, 0]).max() > 1e-4
    pf = Transformer(TransformerConfig(**BASE, attention="prefix-full"), seed=0)
    pe = np.array([5, 5, 5])
    z = x.copy()
    z[:, 4] = (z[:, 4] % 12) + 1  # inside the prefix: visible to position 0
    assert np.abs(np.asarray(pf(x, prefix_end=pe))[:, 0] - np.asarray(pf(z, prefix_end=pe))[:, 0]).max() > 1e-4
    w = x.copy()
    w[:, 6] = (w[:, 6] % 12) + 1  # after the prefix: invisible before position 6
    np.testing.assert_allclose(np.asarray(pf(x, prefix_end=pe))[:, :6], np.asarray(pf(w, prefix_end=pe))[:, :6],
                               atol=1e-5)
    with pytest.raises(ParameterError, match="prefix_end"):
        pf(x)


def test_padding_keys_are_ignored():
    m = Transformer(TransformerConfig(**BASE, positions="rotary"), seed=0)
    x = toks(t=6)
    padded = np.concatenate([np.zeros((3, 3), np.int32), x], 1)
    # rotary attention depends on relative position only, so left padding changes nothing
    np.testing.assert_allclose(np.asarray(m(padded))[:, 3:], np.asarray(m(x)), atol=1e-4)


def test_grouped_query_attention_equals_repeated_kv_heads():
    gqa = Transformer(TransformerConfig(**BASE, n_kv_heads=2), seed=0)
    mha = Transformer(TransformerConfig(**BASE), seed=1)
    g, st = nnx.split(gqa)
    for name in ("W_E", "W_pos", "W_U", "b_U"):
        getattr(mha, name)[...] = getattr(gqa, name)[...]
    for bg, bm in zip(gqa.blocks, mha.blocks):
        for n in ("W_Q", "b_Q", "W_O", "b_O"):
            getattr(bm.attn, n)[...] = getattr(bg.attn, n)[...]
        for n in ("W_K", "W_V", "b_K", "b_V"):
            getattr(bm.attn, n)[...] = jnp.repeat(getattr(bg.attn, n)[...], 2, axis=0)
        for n in ("W_in", "b_in", "W_out", "b_out"):
            getattr(bm.mlp, n)[...] = getattr(bg.mlp, n)[...]
    x = toks()
    np.testing.assert_allclose(gqa(x), mha(x), atol=1e-5)
    _, c = gqa.run_with_cache(x, names_filter="blocks.0.attn.hook_k")
    assert c["blocks.0.attn.hook_k"].shape == (3, 9, 2, 4)


def test_resuming_at_a_layer_from_its_resid_pre_equals_the_full_pass():
    cfg = TransformerConfig(**{**BASE, "n_layers": 3}, loop_start=1, loop_length=1, loop_iterations=2)
    m = Transformer(cfg, seed=4)
    x = jnp.asarray(toks())
    full, cache = m.run_with_cache(x, names_filter=["blocks.*.hook_resid_pre", "blocks.*.attn.hook_z"])
    for start in (1, 2, 3):
        fn, state = m.functional("blocks.*.attn.hook_z", start=start)
        logits, c = jax.jit(fn)(state, x, None, None, cache[f"blocks.{start}.hook_resid_pre"])
        np.testing.assert_allclose(logits, full, atol=1e-5)
        # hooks of the skipped layers never fire; later ones match the full pass
        assert sorted(c) == [f"blocks.{l}.attn.hook_z" for l in range(start, 4)]
        np.testing.assert_allclose(c["blocks.3.attn.hook_z"], cache["blocks.3.attn.hook_z"], atol=1e-5)
    fn, state = m.functional((), start=2)
    with pytest.raises(ParameterError, match="resid"):
        fn(state, x)
    with pytest.raises(ParameterError, match="start"):
        m.functional((), start=4)


def test_looped_model_equals_unrolled_copy_and_names_each_iteration():
    cfg = TransformerConfig(**{**BASE, "n_layers": 3}, loop_start=1, loop_length=1, loop_iterations=2)
    assert cfg.schedule() == (0, 1, 1, 2) and cfg.schedule(4) == (0, 1, 1, 1, 1, 2)
    looped = Transformer(cfg, seed=0)
    unrolled = Transformer(TransformerConfig(**{**BASE, "n_layers": 5}), seed=1)
    for name in ("W_E", "W_pos", "W_U", "b_U"):
        getattr(unrolled, name)[...] = getattr(looped, name)[...]
    _, st = nnx.split(looped)
    for dst, src in zip(range(5), (0, 1, 1, 1, 2)):
        nnx.update(unrolled.blocks[dst], nnx.state(looped.blocks[src]))
    x = toks()
    np.testing.assert_allclose(looped(x, loop_iterations=3), unrolled(x), atol=1e-5)
    _, c = looped.run_with_cache(x, loop_iterations=3, names_filter="blocks.*.hook_resid_post")
    assert sorted(c) == [f"blocks.{l}.hook_resid_post" for l in range(5)]
    assert not np.allclose(c["blocks.1.hook_resid_post"], c["blocks.2.hook_resid_post"])


def test_bad_inputs_are_refused_with_named_parameter():
    m = Transformer(TransformerConfig(**BASE), seed=0)
    with pytest.raises(ParameterError, match="max_len=12"):
        m.run_with_cache(toks(t=13))
    with pytest.raises(ParameterError, match="vocab_size=13"):
        m.run_with_cache(toks() + 13)
    with pytest.raises(ParameterError, match="n_kv_heads"):
        TransformerConfig(**BASE, n_kv_heads=3)
    with pytest.raises(ParameterError, match="norm"):
        TransformerConfig(**BASE, norm="batchnorm")
    with pytest.raises(ParameterError, match="loop_length"):
        TransformerConfig(**BASE, loop_start=1, loop_length=2)
    with pytest.raises(ParameterError, match="patches"):
        m.run_with_patches(toks(), {"blocks.0.attn.hook_nope": Patch(jnp.ones(()), jnp.zeros(()))})


@pytest.mark.parametrize("extra", [dict(), dict(norm="rmsnorm", mlp="swiglu", positions="rotary", n_kv_heads=2,
                                               tied_unembed=True, use_bias=False),
                                   dict(n_layers=3, loop_start=1, loop_length=2, loop_iterations=2)])
def test_model_directory_round_trip(tmp_path, extra):
    cfg = TransformerConfig(**{**BASE, **extra})
    m = Transformer(cfg, seed=7)
    d = save_model(m, tmp_path / "m", meta={"task": "search", "labels": ["a", "b"]})
    m2, meta = load_model(d)
    assert m2.cfg == cfg and meta["labels"] == ["a", "b"]
    x = toks()
    np.testing.assert_array_equal(np.asarray(m(x)), np.asarray(m2(x)))
    with pytest.raises(ParameterError, match="already exists"):
        save_model(m, d)
    save_model(Transformer(cfg, seed=8), d, overwrite=True)
    assert not np.array_equal(np.asarray(load_model(d)[0](x)), np.asarray(m(x)))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary leftovers


def test_model_directory_refusals(tmp_path):
    m = Transformer(TransformerConfig(**BASE), seed=0)
    d = save_model(m, tmp_path / "m")
    with pytest.raises(ParameterError, match="is not a directory"):
        load_model(tmp_path / "nope")
    # weights that don't fit the config
    doc = json.loads((d / "model.json").read_text())
    doc["config"]["d_mlp"] = 48
    (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ParameterError, match="shape does not fit the config"):
        load_model(d)
    doc["config"]["d_mlp"] = 32
    doc["config"]["mlp"] = "swiglu"
    (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ParameterError, match="W_gate"):
        load_model(d)
    doc["config"]["mlp"] = "gelu"
    doc["config"]["colour"] = "blue"
    (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ParameterError, match="colour"):
        load_model(d)
    del doc["config"]["colour"]
    (d / "model.json").write_text(json.dumps(doc))
    load_model(d)  # repaired: loads again
    shutil.rmtree(d / "params")
    with pytest.raises(ParameterError, match="params"):
        load_model(d)
    (d / "model.json").unlink()
    with pytest.raises(ParameterError, match="model.json"):
        load_model(d)
