"""Training: config, data streams, optimiser schedule, S seeds in one jit, data
parallelism, checkpoints that survive SIGKILL, divergence, the CLI entry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from algeval.errors import ParameterError
from algeval.sim.train import (EVAL, SHUFFLE, TRAIN, TRAIN_SET, TrainConfig, Trainer, TrainingDiverged,
                               lr_schedule, read_metrics, stream_seed, train, train_main)

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]

TINY = dict(task="search", task_options={"max_vertices": 6}, n_layers=1, d_model=32, n_heads=2, d_head=16,
            d_mlp=64, steps=12, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=4, eval_count=20,
            checkpoint_every=4)


def tiny(out, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "out_dir": str(out), **kw})


def _no_wall(lines):
    return [{k: v for k, v in m.items() if k != "wallclock"} for m in lines]


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


# --- config -------------------------------------------------------------------------

def test_config_json_round_trip(tmp_path):
    cfg = tiny(tmp_path / "r", n_seeds=2, train_set_size=50, grad_clip=None,
               model_options={"norm": "rmsnorm", "positions": "rotary"}, breakdown=["lookahead"])
    assert cfg.breakdown == ("lookahead",)
    back = TrainConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert back == cfg
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    assert cfg.model_config().norm == "rmsnorm" and cfg.seeds == (0, 1)


@pytest.mark.parametrize("kw, name", [
    (dict(steps=0), "steps"), (dict(lr=-1.0), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(warmup_steps=13), "warmup_steps"), (dict(n_seeds=0), "n_seeds"), (dict(grad_clip=0.0), "grad_clip"),
    (dict(batch_size=0), "batch_size"), (dict(train_set_size=0), "train_set_size"),
    (dict(task="nope"), "task"), (dict(task_options={"max_vertices": 1}), "max_vertices"),
    (dict(task_options={"colour": 3}), "colour"), (dict(model_options={"n_layers": 3}), "model_options"),
    (dict(model_options={"vocab_size": 3}), "model_options"), (dict(model_options={"wings": 2}), "model_options"),
    (dict(d_model=0), "d_model"), (dict(model_options={"n_kv_heads": 3}), "n_kv_heads"),
])
def test_config_validation_is_one_line(tmp_path, kw, name):
    with pytest.raises(ParameterError) as e:
        tiny(tmp_path, **kw)
    assert str(e.value).startswith(name) and "\n" not in str(e.value)


def test_from_json_rejects_unknown_field():
    with pytest.raises(ParameterError, match="unknown field"):
        TrainConfig.from_json({"stepz": 3})


# --- schedule and data --------------------------------------------------------------

def test_lr_warmup_then_cosine_to_zero(tmp_path):
    cfg = tiny(tmp_path, steps=100, warmup_steps=10, lr=1e-2)
    f = lambda s: float(lr_schedule(cfg)(s))  # noqa: E731
    assert f(0) == 0.0 and f(5) == pytest.approx(5e-3) and f(10) == pytest.approx(1e-2)
    assert f(55) == pytest.approx(5e-3, rel=1e-4) and f(100) == pytest.approx(0.0, abs=1e-9)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_stream_seeds_are_deterministic_and_disjoint():
    assert stream_seed(TRAIN, 0, 5) == stream_seed(TRAIN, 0, 5)
    seeds = {stream_seed(st, k, i) for st in (TRAIN, SHUFFLE) for k in range(3) for i in range(50)}
    seeds |= {stream_seed(st, k) for st in (EVAL, TRAIN_SET) for k in range(3)}
    assert len(seeds) == 2 * 3 * 50 + 2 * 3


def test_batches_are_a_function_of_seed_and_step(tmp_path):
    tr = Trainer(tiny(tmp_path, n_seeds=2))
    a, b = tr.host_batch(3), tr.host_batch(3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["tokens"].shape == (2, 8, tr.task.max_len)
    assert not np.array_equal(a["tokens"][0], a["tokens"][1])           # each seed its own data
    assert not np.array_equal(a["tokens"], tr.host_batch(4)["tokens"])   # each step fresh data
    # the same seed in another run sees the same data at the same step
    other = Trainer(tiny(tmp_path, seed=1))
    assert np.array_equal(other.host_batch(3)["tokens"][0], a["tokens"][1])


def test_fixed_training_set_is_cycled_in_shuffled_epochs(tmp_path):
    tr = Trainer(tiny(tmp_path, train_set_size=12, batch_size=4))
    rows = lambda t: sorted(map(tuple, t))  # noqa: E731
    full = rows(tr._train_set(0).tokens)
    seen = np.concatenate([tr.host_batch(i)["tokens"][0] for i in range(6)])  # two epochs
    assert rows(seen[:12]) == full and rows(seen[12:]) == full
    assert not np.array_equal(seen[:12], seen[12:])  # reshuffled


# --- training -------------------------------------------------------------------------

def test_seeds_vmapped_in_one_jit_match_single_seed_runs(tmp_path):
    from algeval.models.io import load_model

    many = train(tiny(tmp_path / "many", n_seeds=3), progress=False)
    one = train(tiny(tmp_path / "one", seed=1), progress=False)
    p1, pm = _flat(one.params[0]), [_flat(p) for p in many.params]
    for k in p1:
        np.testing.assert_allclose(pm[1][k], p1[k], atol=1e-5, rtol=1e-5)
    assert not np.allclose(pm[0]["W_E"], pm[1]["W_E"])  # each seed its own init
    assert not pm[1]["blocks/0/attn/b_K"].any()  # zero gradient in exact arithmetic: frozen
    np.testing.assert_allclose(many.losses[:, 1], one.losses[:, 0], atol=1e-5)
    f1, fm = one.final[0], many.final[1]
    assert fm["seed"] == f1["seed"] == 1 and fm["step"] == 12
    assert fm["loss"] == pytest.approx(f1["loss"], abs=1e-5)
    # metrics: one line per evaluation and seed, breakdowns that add up
    lines = read_metrics(tmp_path / "many")
    assert [(m["step"], m["seed"]) for m in lines] == [(s, k) for s in (4, 8, 12) for k in (0, 1, 2)]
    for m in lines:
        assert set(m) >= {"step", "loss", "acc", "breakdowns", "lr", "examples_seen", "wallclock", "train_loss"}
        assert m["examples_seen"] == m["step"] * 8
        for field in ("lookahead", "n_vertices"):
            groups = m["breakdowns"][field]
            assert sum(g["n"] for g in groups.values()) == 20
            acc = sum(g["acc"] * g["n"] for g in groups.values()) / 20
            assert acc == pytest.approx(m["acc"])
    # one model directory per seed, loadable, carrying the task, config and final metrics
    assert [d.name for d in many.model_dirs] == ["model_seed0", "model_seed1", "model_seed2"]
    model, meta = load_model(many.model_dirs[1])
    assert meta["task"] == "search" and meta["task_options"]["max_vertices"] == 6
    assert meta["train_config"]["n_seeds"] == 3 and meta["final_metrics"] == fm
    np.testing.assert_array_equal(np.asarray(model.W_E[...]), pm[1]["W_E"])
    assert (tmp_path / "one" / "model" / "model.json").is_file()


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    orig = Trainer.host_batch

    def poisoned(self, i):
        b = orig(self, i)
        if i >= 13:  # update 13 is step 14: an empty answer set at a scored position -> infinite loss
            b["answers"][:] = -1
        return b

    monkeypatch.setattr(Trainer, "host_batch", poisoned)
    cfg = tiny(tmp_path / "r", steps=20, checkpoint_every=5, eval_every=5)
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, progress=False)
    msg = str(e.value)
    assert "step 14" in msg and "\n" not in msg and "step 10" in msg, msg
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(tmp_path / "r" / "checkpoints") as m:
        assert m.latest_step() == 10 and m.all_steps() == [5, 10]
    assert [m["step"] for m in read_metrics(tmp_path / "r")] == [5, 10]
    assert not (tmp_path / "r" / "model").exists()


RESUME = dict(task="search", task_options={"max_vertices": 6}, n_layers=2, d_model=32, n_heads=2, d_head=16,
              d_mlp=64, steps=60, batch_size=8, lr=3e-3, warmup_steps=5, eval_every=5, eval_count=16,
              checkpoint_every=10)

DRIVER = """
import sys, time
from algeval.sim.train import Trainer, train_main
orig = Trainer.host_batch
def slow(self, i):  # from update 12 on, slow enough for the test to kill it between checkpoints
    if i >= 12:
        time.sleep(0.3)
    return orig(self, i)
Trainer.host_batch = slow
sys.exit(train_main(sys.argv[1:]))
"""


def _resume_cli(out):
    c = RESUME
    return ["--task", c["task"], "--task-opt", "max_vertices=6", "--layers", "2", "--d-model", "32",
            "--heads", "2", "--d-head", "16", "--d-mlp", "64", "--steps", "60", "--batch-size", "8",
            "--lr", "3e-3", "--warmup-steps", "5", "--eval-every", "5", "--eval-count", "16",
            "--checkpoint-every", "10", "--out", str(out)]


def _finished_checkpoints(ckdir: Path) -> list[int]:
    if not ckdir.is_dir():
        return []
    return sorted(int(p.name) for p in ckdir.iterdir() if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists())


def test_sigkilled_run_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    killed = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([PY, str(driver), *_resume_cli(killed), "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # meanwhile, the uninterrupted reference run in this process
        ref = train(TrainConfig(**RESUME, out_dir=str(tmp_path / "ref")), progress=False)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            done = _finished_checkpoints(killed / "checkpoints")
            steps = [m["step"] for m in read_metrics(killed)]
            if done and steps and max(steps) > max(done):
                break
            time.sleep(0.02)
        else:
            pytest.fail("no checkpoint appeared")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    at_kill = [m["step"] for m in read_metrics(killed)]
    ck = max(_finished_checkpoints(killed / "checkpoints"))
    assert max(at_kill) > ck >= 10 and ck < 60, (at_kill, ck)
    assert not (killed / "model").exists()

    res = train(TrainConfig(**RESUME, out_dir=str(killed)), progress=False)
    assert res.resumed_from == ck
    assert len(res.losses) == 60 - ck
    np.testing.assert_array_equal(res.losses, ref.losses[ck:])
    # the same final metrics, every metrics line once, and the same parameters, bit for bit
    assert _no_wall(res.metrics) == _no_wall(ref.metrics)
    assert [m["step"] for m in res.metrics] == list(range(5, 61, 5))
    assert _no_wall(res.final) == _no_wall(ref.final)
    a, b = _flat(res.params[0]), _flat(ref.params[0])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # a finished run restarted does nothing more and reports the same result
    again = train(TrainConfig(**RESUME, out_dir=str(killed)), progress=False)
    assert again.resumed_from == 60 and len(again.losses) == 0
    assert _no_wall(again.metrics) == _no_wall(ref.metrics)


DP_SCRIPT = """
import json, jax, numpy as np
from jax.sharding import PartitionSpec as P
from algeval.errors import ParameterError
from algeval.sim.train import TrainConfig, Trainer
assert len(jax.devices()) == 4, jax.devices()
kw = dict(task="search", task_options={"max_vertices": 6}, n_layers=1, d_model=32, n_heads=2, d_head=16,
          d_mlp=64, steps=8, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=4, eval_count=12,
          checkpoint_every=8, n_seeds=2)
out = {}
runs = {}
for nd in (1, 4):
    tr = Trainer(TrainConfig(**kw, out_dir=f"{OUT}/d{nd}"), devices=jax.devices()[:nd])
    x = tr.device_batch(tr.host_batch(0))["tokens"]
    out[f"shards{nd}"] = sorted(s.data.shape[1] for s in x.addressable_shards)
    out[f"devices{nd}"] = len(x.sharding.device_set)
    out[f"spec{nd}"] = str(x.sharding.spec)
    r = tr.run(progress=False)
    runs[nd] = r
    out[f"losses{nd}"] = r.losses.tolist()
    out[f"eval{nd}"] = [m["loss"] for m in r.metrics]
try:
    Trainer(TrainConfig(**{**kw, "batch_size": 6}, out_dir=f"{OUT}/bad"))
except ParameterError as e:
    out["error"] = str(e)
print("RESULT " + json.dumps(out))
"""


def test_data_parallel_over_4_devices_matches_1_device(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()}
    code = f"OUT = {str(tmp_path)!r}\n" + DP_SCRIPT
    p = subprocess.run([PY, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.split("RESULT ", 1)[1])
    assert out["devices1"] == 1 and out["shards1"] == [8]
    assert out["devices4"] == 4 and out["shards4"] == [2, 2, 2, 2]
    assert "data" in out["spec4"]
    np.testing.assert_allclose(out["losses4"], out["losses1"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out["eval4"], out["eval1"], atol=1e-5, rtol=1e-5)
    assert "batch_size=6" in out["error"] and "device count (4)" in out["error"]


# --- command line ---------------------------------------------------------------------

def test_train_main_cli(tmp_path, capsys):
    from algeval.models.io import load_model

    out = tmp_path / "cli"
    args = ["--task", "search", "--task-opt", "max_vertices=6", "--layers", "1", "--d-model", "32",
            "--heads", "2", "--d-head", "16", "--d-mlp", "64", "--steps", "12", "--batch-size", "8",
            "--lr", "3e-3", "--warmup-steps", "2", "--eval-every", "4", "--eval-count", "20",
            "--checkpoint-every", "4", "--breakdown", "lookahead", "--out", str(out)]
    assert train_main(args) == 0
    cap = capsys.readouterr()
    assert cap.err == ""  # no progress bar when stderr is not a terminal
    assert "seed 0: step 12" in cap.out and "model:" in cap.out
    cfg = TrainConfig.load(out / "train_config.json")
    assert cfg == tiny(out, breakdown=("lookahead",))
    model, meta = load_model(out / "model")
    assert meta["final_metrics"]["step"] == 12 and set(meta["final_metrics"]["breakdowns"]) == {"lookahead"}
    # the same directory with another config is refused in one line (exit code 2)
    assert train_main([*args[:-2], "--lr", "1e-3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different train config" in err and "lr" in err
    assert train_main(["--task", "search", "--task-opt", "max_vertices", "--out", str(out)]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert train_main(["--steps", "5"]) == 2
    assert "--out" in capsys.readouterr().err
