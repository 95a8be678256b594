"""Training speed as a benchmark: ``algeval bench train``.

For each benchmark shape (a :class:`~algeval.models.Transformer` with
``n_layers`` blocks of width ``d_model``, ``n_heads`` heads of width
``d_head``, MLP width ``d_mlp``, vocabulary ``vocab``, trained on batches of
``batch`` sequences of ``seq`` tokens) it times training steps on one fixed
synthetic batch and reports, per implementation, the median over ``repeats``
of ``steps`` steps each:

* ``jax`` -- the step :mod:`algeval.sim.train` runs (:func:`~algeval.sim.train.jit_train_step`:
  one ``jax.jit`` of a pure function of the split state, buffers donated);
* ``nnx`` -- (optional) the plain Flax NNX way, ``nnx.jit`` over the model and an
  ``nnx.Optimizer`` (the graph is traversed on every call);
* ``jax+xla`` -- (optional) the ``jax`` step compiled with extra XLA options;
* ``torch`` -- the same model, loss and optimiser in PyTorch eager
  (:mod:`algeval.sim.bench_torch`); torch is an optional extra.

All implementations use :func:`~algeval.sim.train.make_optimizer`'s AdamW
(``lr=1e-3``, linear warm-up over 100 steps, cosine decay over 10000, weight
decay 0.01 on matrices, global-norm clip 1.0) and the ``answer_set_nll`` loss,
and they are timed **interleaved** (one repeat of each in turn, the order
rotating), so load from other processes hits them alike.

**Model FLOPs** per step (PaLM's convention, Chowdhery et al. 2022, app. B:
forward + backward = 3 x forward, a multiply-add is 2 FLOPs, the attention
score and mix matmuls counted over the full ``T x T`` square)::

    N      = L * (2*H + 2*KV) * d_model * d_head      (W_Q, W_K, W_V, W_O)
           + L * 2 * d_model * d_mlp                  (W_in, W_out; 3x for swiglu)
           + d_model * vocab                          (the unembedding W_U)
    FLOPs  = 6 * N * B * T  +  12 * L * B * T^2 * H * d_head

``N`` counts the matrix-multiply parameters only: the embedding lookups,
biases and norms do no matmul.  ``model FLOP/s = FLOPs * steps/s``; **MFU** is
that over the machine's **matmul peak**, measured in the same run as the
median FLOP/s of a jitted ``n x n`` float32 matmul (``2 n^3`` FLOPs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from algeval.errors import ParameterError, check_int_range

__all__ = ["BenchShape", "SHAPES", "DEFAULT_SHAPES", "IMPLS", "matmul_params", "flops_per_step",
           "synthetic_batch", "matmul_peak", "resolve_impls", "run_bench", "format_table", "add_bench_parser", "bench_main"]


@dataclass(frozen=True)
class BenchShape:
    """A benchmark shape: the model (GELU MLP, LayerNorm, learned positions, causal) and its batch."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    vocab: int
    seq: int
    batch: int

    def model_config(self):
        from algeval.models.config import TransformerConfig

        return TransformerConfig(vocab_size=self.vocab, max_len=self.seq, n_layers=self.n_layers,
                                 d_model=self.d_model, n_heads=self.n_heads, d_head=self.d_head,
                                 d_mlp=self.d_mlp, attention="causal")


SHAPES = {s.name: s for s in (
    BenchShape("tiny", 1, 32, 2, 16, 64, 16, 16, 8),          # the tests' smoke shape
    BenchShape("l2d64", 2, 64, 4, 16, 256, 32, 64, 64),       # the experiments' cpu scale, about
    BenchShape("l6d128", 6, 128, 4, 32, 512, 32, 64, 64),     # the 6-layer d_model 128 model
)}
DEFAULT_SHAPES = ("l2d64", "l6d128")
IMPLS = ("jax", "nnx", "torch")


def matmul_params(cfg) -> int:
    """``N`` of the module docstring for a :class:`~algeval.models.TransformerConfig`."""
    attn = (2 * cfg.n_heads + 2 * cfg.kv_heads) * cfg.d_model * cfg.d_head
    mlp = (3 if cfg.mlp == "swiglu" else 2) * cfg.d_model * cfg.d_mlp if cfg.has_mlp else 0
    return cfg.n_unrolled() * (attn + mlp) + cfg.d_model * cfg.vocab_size


def flops_per_step(shape: BenchShape) -> int:
    """Model FLOPs of one training step: ``6 N B T + 12 L B T^2 H d_head``."""
    cfg = shape.model_config()
    tokens = shape.batch * shape.seq
    return 6 * matmul_params(cfg) * tokens + 12 * cfg.n_unrolled() * shape.batch * shape.seq ** 2 * \
        shape.n_heads * shape.d_head


def synthetic_batch(shape: BenchShape, seed: int = 0) -> dict:
    """A fixed batch: tokens in ``[1, vocab)`` (no padding), one or two answers per scored position
    (answers padded to 4 with ``-1``, as the trainer pads them), the last quarter of positions scored."""
    rng = np.random.default_rng(seed)
    b, t = shape.batch, shape.seq
    answers = np.full((b, t, 4), -1, np.int32)
    answers[..., 0] = rng.integers(1, shape.vocab, (b, t))
    two = rng.random((b, t)) < 0.5
    answers[..., 1] = np.where(two, rng.integers(1, shape.vocab, (b, t)), -1)
    mask = np.zeros((b, t), bool)
    mask[:, t - max(1, t // 4):] = True
    return {"tokens": rng.integers(1, shape.vocab, (b, t)).astype(np.int32), "answers": answers,
            "loss_mask": mask}


# --- the optimiser of `algeval train` ----------------------------------------------------------

_OPT = dict(lr=1e-3, warmup_steps=100, steps=10_000, weight_decay=0.01, grad_clip=1.0)


def _train_config(shape: BenchShape):
    from algeval.sim.train import TrainConfig

    return TrainConfig(task="search", n_layers=shape.n_layers, d_model=shape.d_model, n_heads=shape.n_heads,
                       d_head=shape.d_head, d_mlp=shape.d_mlp, out_dir="unused", **_OPT)


# --- the timed steps --------------------------------------------------------------------------

class _JaxStep:
    """The trainer's jitted step (``jit_train_step``) on a one-device mesh, one seed."""

    def __init__(self, shape, batch, compiler_options=None):
        import jax
        from flax import nnx
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        from algeval.models.transformer import Transformer
        from algeval.sim.train import jit_train_step, make_optimizer

        mcfg = shape.model_config()
        model = Transformer(mcfg, seed=0)
        fn, state = model.functional()
        tx = make_optimizer(_train_config(shape), state, mcfg)
        mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
        rep, bsh = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "data"))
        self.fn = jit_train_step(fn, tx, rep, bsh, compiler_options=compiler_options)
        self.params = jax.device_put(jax.tree.map(lambda x: np.asarray(x)[None], state), rep)
        self.opt = jax.jit(jax.vmap(tx.init), out_shardings=rep)(self.params)
        self.batch = jax.device_put({k: v[None] for k, v in batch.items()}, bsh)

    def run(self, n: int) -> float:
        import jax

        loss = None
        for _ in range(n):
            self.params, self.opt, loss, _ = self.fn(self.params, self.opt, self.batch)
        jax.block_until_ready(loss)
        return float(np.asarray(loss)[0])


class _NnxStep:
    """The plain Flax NNX step: ``nnx.jit`` over the model and an ``nnx.Optimizer``."""

    def __init__(self, shape, batch):
        import jax
        from flax import nnx

        from algeval.models.transformer import Transformer
        from algeval.sim.tasks.base import answer_set_nll
        from algeval.sim.train import make_optimizer

        mcfg = shape.model_config()
        self.model = Transformer(mcfg, seed=0)
        tx = make_optimizer(_train_config(shape), nnx.as_pure(nnx.state(self.model, nnx.Param)), mcfg)
        self.opt = nnx.Optimizer(self.model, tx, wrt=nnx.Param)
        self.batch = jax.device_put(batch)

        @nnx.jit
        def step(model, opt, batch):
            def loss_fn(m):
                return answer_set_nll(m(batch["tokens"]), batch["answers"], batch["loss_mask"])

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            opt.update(model, grads)
            return loss

        self.fn = step

    def run(self, n: int) -> float:
        import jax

        loss = None
        for _ in range(n):
            loss = self.fn(self.model, self.opt, self.batch)
        jax.block_until_ready(loss)
        return float(loss)


def _torch_step(shape, batch, total_steps: int):
    import jax

    from algeval.sim.bench_torch import TorchStep
    from algeval.sim.train import lr_schedule

    lrs = np.asarray(jax.vmap(lr_schedule(_train_config(shape)))(np.arange(total_steps)))
    return TorchStep(shape, batch, lrs, weight_decay=_OPT["weight_decay"], grad_clip=_OPT["grad_clip"])


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
    """Median FLOP/s (``2 n^3`` per product) of a jitted float32 ``n x n`` matmul, and of torch's when present."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    out = {"n": n, "jax_flops_per_s": 2 * n ** 3 / statistics.median(times)}
    from algeval.sim.bench_torch import torch_available

    if torch_available():
        import torch

        ta, tb = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))
        ta @ tb
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            ta @ tb
            times.append(time.perf_counter() - t)
        out["torch_flops_per_s"] = 2 * n ** 3 / statistics.median(times)
    return out


# --- the benchmark ------------------------------------------------------------------------------

def resolve_impls(impls, xla_options: dict | None = None) -> tuple[list[str], list[str]]:
    """``(impls to time, notes)``: checks the names, drops ``torch`` with a note when it is not
    installed, adds ``jax+xla`` after ``jax`` when there are ``xla_options``."""
    from algeval.sim.bench_torch import torch_available

    impls = list(dict.fromkeys(impls))
    for i in impls:
        if i not in IMPLS:
            raise ParameterError("impls", i, f"unknown; known: {', '.join(IMPLS)}")
    notes = []
    if "torch" in impls and not torch_available():
        impls.remove("torch")
        notes.append("torch is not installed (pip install 'algeval[llm]'): PyTorch comparison skipped")
    if not impls:
        raise ParameterError("impls", "torch" if notes else "", "torch is not installed, nothing else to time"
                             if notes else f"needs at least one of {', '.join(IMPLS)}")
    if xla_options:
        impls.insert(impls.index("jax") + 1 if "jax" in impls else 0, "jax+xla")
    return impls, notes


def run_bench(shapes=DEFAULT_SHAPES, *, steps: int = 5, repeats: int = 5, impls=("jax", "torch"),
              xla_options: dict | None = None, matmul_n: int = 2048, log=None) -> dict:
    """Time every implementation on every shape (interleaved repeats); returns the results dict.

    ``impls``: a subset of :data:`IMPLS`; ``xla_options`` adds ``jax+xla``, the
    ``jax`` step compiled with those XLA options.  A missing torch drops
    ``torch`` and says so in ``results["notes"]``.
    """
    import jax

    check_int_range("steps", steps, 1)
    check_int_range("repeats", repeats, 1)
    check_int_range("matmul_n", matmul_n, 16)
    shapes = [s if isinstance(s, BenchShape) else _shape(s) for s in shapes]
    if not shapes:
        raise ParameterError("shapes", shapes, "needs at least one shape")
    log = log or (lambda msg: None)
    impls, notes = resolve_impls(impls, xla_options)
    for n in notes:
        log(f"note: {n}")
    peak = matmul_peak(matmul_n, repeats)
    log(f"matmul peak: {peak['jax_flops_per_s'] / 1e9:.1f} GFLOP/s (jax, n={matmul_n})")
    out = {"matmul": peak, "steps": steps, "repeats": repeats, "impls": impls, "xla_options": xla_options or {},
           "notes": notes, "shapes": [], "env": _environment()}
    for shape in shapes:
        batch = synthetic_batch(shape)
        runners, compile_s = {}, {}
        for name in impls:
            t = time.perf_counter()
            if name == "jax":
                r = _JaxStep(shape, batch)
            elif name == "jax+xla":
                r = _JaxStep(shape, batch, compiler_options=xla_options)
            elif name == "nnx":
                r = _NnxStep(shape, batch)
            else:
                r = _torch_step(shape, batch, 2 + (repeats + 1) * steps)
            r.run(1)                      # compiles (JAX); first touch (torch)
            compile_s[name] = time.perf_counter() - t
            r.run(1)
            runners[name] = r
        rates = {name: [] for name in impls}
        losses = {}
        for rep in range(repeats):
            order = impls[rep % len(impls):] + impls[:rep % len(impls)]
            for name in order:
                t = time.perf_counter()
                losses[name] = runners[name].run(steps)
                rates[name].append(steps / (time.perf_counter() - t))
        flops = flops_per_step(shape)
        row = {**asdict(shape), "matmul_params": matmul_params(shape.model_config()), "flops_per_step": flops,
               "impls": {}}
        for name in impls:
            med = statistics.median(rates[name])
            row["impls"][name] = {"steps_per_s": med, "steps_per_s_all": rates[name],
                                  "flops_per_s": flops * med, "mfu": flops * med / peak["jax_flops_per_s"],
                                  "setup_s": compile_s[name], "last_loss": losses[name]}
        if "torch" in impls:
            for name in impls:
                if name != "torch":
                    row["impls"][name]["vs_torch"] = row["impls"][name]["steps_per_s"] / \
                        row["impls"]["torch"]["steps_per_s"]
        out["shapes"].append(row)
        log(format_table({**out, "shapes": [row]}, header=False))
        del runners
        jax.clear_caches()
    if hasattr(os, "getloadavg"):
        out["env"]["load_avg_end"] = os.getloadavg()
    return out


def _shape(name: str) -> BenchShape:
    if name not in SHAPES:
        raise ParameterError("shapes", name, f"unknown shape; known: {', '.join(SHAPES)}")
    return SHAPES[name]


def _environment() -> dict:
    import jax

    env = {"python": platform.python_version(), "jax": jax.__version__, "backend": jax.default_backend(),
           "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
           "cpu": _cpu_name(), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "nice": os.nice(0),
           "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
           "load_avg_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    try:
        import flax

        env["flax"] = flax.__version__
        import torch

        env["torch"], env["torch_threads"] = torch.__version__, torch.get_num_threads()
    except ImportError:
        pass
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_table(res: dict, header: bool = True) -> str:
    """A plain-text table: one line per shape and implementation."""
    lines = []
    if header:
        p = res["matmul"]
        extra = f", torch {p['torch_flops_per_s'] / 1e9:.1f}" if "torch_flops_per_s" in p else ""
        lines.append(f"matmul peak (f32 n={p['n']}): jax {p['jax_flops_per_s'] / 1e9:.1f} GFLOP/s{extra}; "
                     f"medians of {res['repeats']} repeats x {res['steps']} steps")
        lines += [f"note: {n}" for n in res.get("notes", [])]
        lines.append(f"{'shape':8s} {'impl':8s} {'steps/s':>9s} {'GFLOP/s':>9s} {'MFU':>6s} {'vs torch':>9s} "
                     f"{'setup s':>8s} {'GFLOP/step':>10s}")
    for row in res["shapes"]:
        for name, r in row["impls"].items():
            vs = f"{r['vs_torch']:.2f}x" if "vs_torch" in r else "-"
            lines.append(f"{row['name']:8s} {name:8s} {r['steps_per_s']:9.3f} {r['flops_per_s'] / 1e9:9.2f} "
                         f"{r['mfu']:6.1%} {vs:>9s} {r['setup_s']:8.1f} {row['flops_per_step'] / 1e9:10.3f}")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------

def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``bench`` (with its one benchmark, ``train``) to an argparse ``subparsers``."""
    p = subparsers.add_parser("bench", help="benchmarks: training speed against the matmul peak and PyTorch")
    sub = p.add_subparsers(dest="bench_command", required=True, parser_class=type(p))
    t = sub.add_parser("train", help="training steps/s, model FLOP/s and MFU, next to PyTorch eager",
                       description="Time training steps of fixed model shapes on one synthetic batch: "
                       "steps/s, model FLOP/s (6 N B T + 12 L B T^2 H d_head) and MFU against a matmul peak "
                       "measured in the same run, for our jitted step (jax), optionally the plain nnx.jit step "
                       "(nnx), and PyTorch eager (torch), timed interleaved; medians over repeats.")
    t.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                   help=f"comma-separated shapes (default {','.join(DEFAULT_SHAPES)}; known: {', '.join(SHAPES)})")
    t.add_argument("--steps", type=int, default=5, help="steps per timed repeat (default 5)")
    t.add_argument("--repeats", type=int, default=5, help="timed repeats per implementation (default 5)")
    t.add_argument("--impls", default="jax,torch", help=f"comma-separated subset of {','.join(IMPLS)} "
                   "(default jax,torch)")
    t.add_argument("--xla-option", action="append", metavar="NAME=VALUE",
                   help="also time the jax step compiled with this XLA option (repeatable), e.g. "
                   "xla_cpu_use_onednn=true")
    t.add_argument("--matmul-n", type=int, default=2048, help="size of the peak-measuring matmul (default 2048)")
    t.add_argument("--profile", action="store_true",
                   help="also profile each shape's jax step (time per op category, jax.profiler) and torch step "
                   "(time per aten op, torch.profiler)")
    t.add_argument("--out", metavar="FILE", help="also write the results as JSON here")
    t.set_defaults(func=bench_main)
    return p


def _xla_options(items) -> dict:
    from algeval.sim.options import parse_literal

    out = {}
    for item in items or []:
        key, eq, val = item.partition("=")
        if not eq or not key.strip().startswith("xla_"):
            raise ParameterError("--xla-option", item, "must look like xla_NAME=VALUE")
        out[key.strip()] = parse_literal(val.strip())
    return out


def bench_main(args) -> int:
    """``algeval bench train``; returns the exit code (2 on a bad argument)."""
    try:
        shapes = [_shape(s.strip()) for s in args.shapes.split(",") if s.strip()]
        impls = [s.strip() for s in args.impls.split(",") if s.strip()]
        res = run_bench(shapes, steps=args.steps, repeats=args.repeats, impls=impls,
                        xla_options=_xla_options(args.xla_option), matmul_n=args.matmul_n,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    except ParameterError as e:
        sys.stderr.write(f"algeval: error: {e}\n")
        return 2
    res["command"] = (f"algeval bench train --shapes {args.shapes} --steps {args.steps} --repeats {args.repeats} "
                      f"--impls {args.impls} --matmul-n {args.matmul_n}"
                      + "".join(f" --xla-option {o}" for o in args.xla_option or [])
                      + (" --profile" if args.profile else ""))
    print(format_table(res))
    if args.profile:
        from algeval.sim.bench_profile import format_profile, format_torch_profile, profile_step, profile_torch

        res["profiles"] = [profile_step(_shape(s["name"]), args.steps) for s in res["shapes"]]
        for p in res["profiles"]:
            print(format_profile(p))
        if "torch" in res["impls"]:
            res["torch_profiles"] = [profile_torch(_shape(s["name"]), args.steps) for s in res["shapes"]]
            for p in res["torch_profiles"]:
                print(format_torch_profile(p))
    if args.out:
        from algeval.sim.train import _atomic_write

        _atomic_write(Path(args.out), json.dumps(res, indent=1, sort_keys=True) + "\n")
        print(f"results: {args.out}")
    return 0
