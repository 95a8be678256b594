"""The training-speed benchmark: FLOP counting by hand, a tiny smoke run, the torch reference's
loss and shapes against the JAX model's, the op categories of the profile, bad CLI input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from algeval.errors import ParameterError
from algeval.sim import bench
from algeval.sim.bench import SHAPES, BenchShape, flops_per_step, matmul_params, run_bench
from algeval.sim.bench_torch import torch_available
from algeval.sim.cli import main

needs_torch = pytest.mark.skipif(not torch_available(), reason="torch (the llm extra) is not installed")


def test_flops_match_a_hand_count():
    s = SHAPES["tiny"]  # L=1, d=32, H=2, E=16, M=64, V=16, T=16, B=8
    assert (s.n_layers, s.d_model, s.n_heads, s.d_head, s.d_mlp, s.vocab, s.seq, s.batch) == \
        (1, 32, 2, 16, 64, 16, 16, 8)
    n = 4 * (32 * 2 * 16) + 2 * 32 * 64 + 32 * 16          # W_Q W_K W_V W_O, W_in W_out, W_U
    assert matmul_params(s.model_config()) == n == 8704
    attn = 12 * 1 * 8 * 16 ** 2 * 2 * 16                    # 2 matmuls x 2 FLOPs x 3 (fwd+bwd), T x T
    assert flops_per_step(s) == 6 * n * 8 * 16 + attn == 7_471_104


@pytest.mark.parametrize("name", ["tiny", "l2d64"])
def test_matmul_params_are_the_models_matrices(name):
    """N counts exactly the model's projection matrices (not W_E, W_pos, biases, norms)."""
    import jax
    from flax import nnx

    from algeval.models.transformer import Transformer

    model = Transformer(SHAPES[name].model_config(), seed=0)
    flat = jax.tree_util.tree_flatten_with_path(nnx.as_pure(nnx.state(model, nnx.Param)))[0]
    names = lambda path: {getattr(p, "key", getattr(p, "name", None)) for p in path}  # noqa: E731
    mats = sum(x.size for path, x in flat
               if names(path) & {"W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U"})
    assert matmul_params(model.cfg) == mats


def test_smoke_run_fields_are_finite(monkeypatch):
    res = run_bench(["tiny"], steps=2, repeats=2, impls=("jax", "torch"), matmul_n=64)
    assert res["matmul"]["jax_flops_per_s"] > 0 and math.isfinite(res["matmul"]["jax_flops_per_s"])
    (row,) = res["shapes"]
    assert row["flops_per_step"] == flops_per_step(SHAPES["tiny"])
    want = ["jax", "torch"] if torch_available() else ["jax"]
    assert list(row["impls"]) == want
    for name, r in row["impls"].items():
        for key in ("steps_per_s", "flops_per_s", "mfu", "setup_s", "last_loss"):
            assert math.isfinite(r[key]) and r[key] > 0, (name, key, r[key])
        assert len(r["steps_per_s_all"]) == 2
        assert r["flops_per_s"] == pytest.approx(r["steps_per_s"] * row["flops_per_step"])
        assert 1.0 < r["last_loss"] < 5.0  # about -log(2/16) at initialisation
    if torch_available():
        assert row["impls"]["jax"]["vs_torch"] == pytest.approx(
            row["impls"]["jax"]["steps_per_s"] / row["impls"]["torch"]["steps_per_s"])
    table = bench.format_table(res)
    assert "tiny" in table and "MFU" in table


def test_missing_torch_is_one_note_and_jax_still_runs(monkeypatch):
    import algeval.sim.bench_torch as bt

    monkeypatch.setattr(bt, "torch_available", lambda: False)
    with pytest.raises(ParameterError, match="torch is not installed"):
        run_bench(["tiny"], impls=("torch",))
    impls, notes = bench.resolve_impls(("jax", "torch"), {"xla_cpu_enable_fast_math": False})
    assert impls == ["jax", "jax+xla"] and len(notes) == 1 and "torch is not installed" in notes[0]
    assert "torch_flops_per_s" not in bench.matmul_peak(32, 1)
    with pytest.raises(ParameterError, match="needs at least one"):
        bench.resolve_impls(())


@needs_torch
def test_torch_loss_and_parameter_count_match_the_jax_model():
    import jax.numpy as jnp
    import torch

    from algeval.models.transformer import Transformer
    from algeval.sim.bench_torch import _modules
    from algeval.sim.tasks.base import answer_set_nll

    Model, nll = _modules()
    s = BenchShape("t", 2, 24, 3, 8, 40, 11, 9, 5)
    assert Model(s).__class__ and sum(p.numel() for p in Model(s).parameters()) == \
        Transformer(s.model_config(), seed=0).num_params()
    b = bench.synthetic_batch(s, seed=3)
    b["loss_mask"][0] = False                                  # an example with nothing scored
    logits = np.random.default_rng(1).normal(size=(s.batch, s.seq, s.vocab)).astype(np.float32) * 3
    want = float(answer_set_nll(jnp.asarray(logits), jnp.asarray(b["answers"]), jnp.asarray(b["loss_mask"])))
    got = float(nll(torch.from_numpy(logits), torch.from_numpy(b["answers"]).long(),
                    torch.from_numpy(b["loss_mask"])))
    assert got == pytest.approx(want, rel=1e-5)


def test_categorize_hlo_finds_the_matmul():
    import jax
    import jax.numpy as jnp

    from algeval.sim.bench_profile import categorize_hlo

    f = jax.jit(lambda a, b: (jnp.exp(a @ b).sum(), a.T + 1.0))
    x = jnp.ones((8, 8))
    cats = categorize_hlo(f.lower(x, x).compile().as_text())
    assert "matmul" in cats.values() and set(cats.values()) <= {
        "matmul", "gather/scatter", "reduce", "transcendental", "layout", "elementwise"}


@pytest.mark.parametrize("argv, msg", [
    (["--shapes", "l99d7"], "unknown shape"),
    (["--steps", "0"], "steps=0"),
    (["--repeats", "-1"], "repeats=-1"),
    (["--impls", "jax,tensorflow"], "impls='tensorflow'"),
    (["--xla-option", "fast"], "--xla-option"),
    (["--matmul-n", "2"], "matmul_n=2"),
])
def test_bad_cli_input_exits_2(argv, msg, capsys):
    assert main(["bench", "train", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err


def test_cli_usage_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["bench", "train", "--steps", "many"])
    assert e.value.code == 2


@pytest.mark.slow
def test_nnx_and_xla_option_variants_run(tmp_path):
    import json

    out = tmp_path / "b.json"
    assert main(["bench", "train", "--shapes", "tiny", "--steps", "1", "--repeats", "1", "--impls", "jax,nnx,torch",
                 "--xla-option", "xla_cpu_enable_fast_math=false", "--matmul-n", "32", "--profile",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert list(res["shapes"][0]["impls"])[:3] == ["jax", "jax+xla", "nnx"]
    assert res["profiles"][0]["op_ms_per_step"] > 0 and res["command"].startswith("algeval bench train")
    if torch_available():
        assert 0 < res["torch_profiles"][0]["matmul_ms_per_step"] <= res["torch_profiles"][0]["op_ms_per_step"]
