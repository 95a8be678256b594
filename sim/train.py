"""Train transformers on the workbench tasks: ``algeval train``.

One run trains ``n_seeds`` models at once (each with its own initialisation
and its own data order) as one jitted step vmapped over a leading seed axis,
data-parallel over every local device, with resumable orbax checkpoints::

    from algeval.sim.train import TrainConfig, train
    cfg = TrainConfig(task="search", task_options={"max_vertices": 8}, n_layers=2,
                      steps=2000, n_seeds=3, out_dir="runs/search8")
    result = train(cfg)                  # result.final: the last evaluation per seed

    algeval train --task search --task-opt max_vertices=8 --layers 2 --seeds 3 --out runs/search8

**Objective.**  ``answer_set_nll`` of :mod:`algeval.sim.tasks.base` (``-log`` of
the probability mass on the answer set, averaged over scored positions),
optimised with AdamW (weight decay on matrices only: parameters with 2 or more
axes; the key biases ``b_K``, whose gradient is zero in exact arithmetic, are
frozen, see :func:`frozen_mask`), a linear warm-up to ``lr`` then cosine decay to 0
(``optax.warmup_cosine_decay_schedule``), and global-norm gradient clipping.

**Data.**  Every random draw is a pure function of named integers, no Python
``hash``: :func:`stream_seed` maps ``(stream, *keys)`` through
``numpy.random.SeedSequence`` to the seed given to ``task.sample``.  Update
``i`` (0-based) of seed ``k`` trains on ``task.sample(batch_size,
stream_seed(TRAIN, k, i))``; with ``train_set_size=N`` it instead takes the
examples ``i*B .. i*B+B-1`` of an endless sequence of epochs over one fixed
set of ``N`` examples (drawn from ``stream_seed(TRAIN_SET, k)``, or from
``train_set_seed`` shared by all seeds), each epoch ``e`` a permutation drawn
from ``stream_seed(SHUFFLE, k, e)``.  The data position is thus a function of
the step, and a resumed run sees exactly the batches an uninterrupted one
would.  The held-out set (``eval_count`` examples) comes from its own stream,
``stream_seed(EVAL, eval_seed)``, and is shared by all seeds.

**Evaluation** every ``eval_every`` steps and at the end: the loss over scored
positions, exact-match accuracy (every scored position right) and both broken
down by each integer ``meta`` field named in ``breakdown`` (by default
``lookahead`` and ``n_vertices`` where the task has them).  Each evaluation
appends one JSON object per seed to ``out_dir/metrics.jsonl``::

    {"step": 100, "seed": 0, "train_loss": .., "loss": .., "acc": ..,
     "breakdowns": {"lookahead": {"1": {"acc": .., "loss": .., "n": ..}, ...}},
     "lr": .., "examples_seen": 6400, "wallclock": 12.3}

``train_loss`` is the mean training loss of the updates since the previous
evaluation; ``lr`` the learning rate of the last update.

**Output directory**::

    out_dir/train_config.json    the TrainConfig (a restart must match it)
    out_dir/metrics.jsonl        one line per evaluation and seed
    out_dir/checkpoints/<step>/  orbax: params + optimiser state + step + data position
    out_dir/model/               the trained model (one seed), a model directory
    out_dir/model_seed<k>/       one per seed when n_seeds > 1

**Resuming.**  Re-running on the same ``out_dir`` with the same config continues
from the last checkpoint: ``metrics.jsonl`` is rewritten (atomically) to the
lines up to that step, so lines of a killed run past its last checkpoint are
not duplicated, and the final metrics and parameters are bit-identical to those
of an uninterrupted run.  A non-finite loss or gradient norm stops the run with
:class:`TrainingDiverged` naming the step; no checkpoint of the bad state is
ever written, so the last good one stays.

**Devices.**  A ``jax.sharding.Mesh`` with one axis, ``data``, spans the devices
(default ``jax.devices()``): each batch is split along its batch axis,
parameters and optimiser state are replicated, and ``jax.jit`` inserts the
gradient all-reduce.  ``batch_size`` must be a multiple of the device count.
On several hosts, start the same command on every host after
``jax.distributed.initialize()`` (it reads the coordinator address, process
count and id from the cluster environment -- SLURM, Cloud TPU -- or takes
them as arguments): ``jax.devices()`` then lists every host's devices, every
process draws the same global batch and feeds only its own shards
(``jax.make_array_from_callback``), orbax writes the checkpoints
collectively, and only process 0 writes ``metrics.jsonl`` and the model
directories.  The ``out_dir`` must then be on storage shared by all hosts.

**Performance.**  The model is ``nnx.split`` once; the step is a pure function
of ``(params, opt_state, batch)``, jitted once with the parameter and
optimiser buffers donated.  The loss of step ``i`` is read back while step
``i + 1`` runs, so the host never waits on the device except at evaluations
and checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from algeval.errors import ParameterError, check
from algeval.sim.options import parse_literal

__all__ = [
    "TrainConfig", "TrainResult", "Trainer", "TrainingDiverged", "train", "stream_seed",
    "lr_schedule", "make_optimizer", "frozen_mask", "train_step_fn", "jit_train_step", "read_metrics",
    "add_train_parser", "train_main",
    "TRAIN", "EVAL", "TRAIN_SET", "SHUFFLE",
]

# Named random streams (see stream_seed).
TRAIN, EVAL, TRAIN_SET, SHUFFLE = 1, 2, 3, 4

_OWN_MODEL_FIELDS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp")
_TASK_MODEL_FIELDS = ("vocab_size", "max_len", "attention")


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite; one line naming the step."""

    def __init__(self, step: int, seed: int, loss: float, grad_norm: float, checkpoint: str):
        self.step, self.seed, self.loss, self.grad_norm = step, seed, loss, grad_norm
        super().__init__(
            f"training diverged at step {step} (seed {seed}): loss={loss}, grad_norm={grad_norm}; "
            f"{checkpoint} (try a smaller --lr or --grad-clip)")


def stream_seed(stream: int, *keys: int) -> int:
    """A 64-bit seed for ``task.sample``, a pure function of ``(stream, *keys)``.

    ``numpy.random.SeedSequence`` mixes the integers, so different streams
    (``TRAIN``, ``EVAL``, ``TRAIN_SET``, ``SHUFFLE``) and keys give unrelated seeds.
    """
    words = np.random.SeedSequence([int(stream), *(int(k) for k in keys)]).generate_state(2, np.uint32)
    return int(words[0]) | (int(words[1]) << 32)


# --- configuration -------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and its results, bit for bit).

    Model: ``n_layers``, ``d_model``, ``n_heads``, ``d_head``, ``d_mlp`` and any
    other :class:`~algeval.models.TransformerConfig` field in ``model_options``
    (``vocab_size``, ``max_len`` and ``attention`` come from the task).
    Seeds ``seed .. seed + n_seeds - 1`` are trained at once.
    ``train_set_size=None`` streams fresh examples; ``N`` cycles a fixed set of
    ``N`` examples in shuffled epochs.  ``grad_clip=None`` turns clipping off.
    """

    task: str = "search"
    task_options: dict = field(default_factory=dict)
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    model_options: dict = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int | None = None  # None: min(100, steps // 10)
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    seed: int = 0
    n_seeds: int = 1
    eval_every: int = 100
    eval_count: int = 1024
    eval_seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    train_set_size: int | None = None
    train_set_seed: int | None = None
    breakdown: tuple = ("lookahead", "n_vertices")
    out_dir: str = "runs/train"

    def __post_init__(self):
        from algeval.errors import check_int_range

        check(isinstance(self.task, str), "task", self.task, "must be a task name")
        check(isinstance(self.task_options, dict), "task_options", self.task_options, "must be a dict")
        check(isinstance(self.model_options, dict), "model_options", self.model_options, "must be a dict")
        check_int_range("steps", self.steps, 1)
        check_int_range("batch_size", self.batch_size, 1)
        if self.warmup_steps is None:
            object.__setattr__(self, "warmup_steps", min(100, int(self.steps) // 10))
        check_int_range("warmup_steps", self.warmup_steps, 0, self.steps)
        check_int_range("seed", self.seed, 0)
        check_int_range("n_seeds", self.n_seeds, 1)
        check_int_range("eval_every", self.eval_every, 1)
        check_int_range("eval_count", self.eval_count, 1)
        check_int_range("eval_seed", self.eval_seed, 0)
        check_int_range("checkpoint_every", self.checkpoint_every, 1)
        check_int_range("keep_checkpoints", self.keep_checkpoints, 1)
        if self.train_set_size is not None:
            check_int_range("train_set_size", self.train_set_size, 1)
        if self.train_set_seed is not None:
            check_int_range("train_set_seed", self.train_set_seed, 0)
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                  name, v, "must be a finite number")
        check(self.lr > 0, "lr", self.lr, "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        if self.grad_clip is not None:
            g = self.grad_clip
            check(isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g) and g > 0,
                  "grad_clip", g, "must be a number > 0 (or None: no clipping)")
        bd = (self.breakdown,) if isinstance(self.breakdown, str) else tuple(self.breakdown)
        check(all(isinstance(b, str) and b for b in bd), "breakdown", self.breakdown, "must be meta field names")
        object.__setattr__(self, "breakdown", bd)
        check(isinstance(self.out_dir, (str, os.PathLike)) and str(self.out_dir) != "", "out_dir",
              self.out_dir, "must be a directory path")
        object.__setattr__(self, "out_dir", str(self.out_dir))
        from algeval.models.config import TransformerConfig

        known = {f.name for f in dataclasses.fields(TransformerConfig)}
        for k in self.model_options:
            if k in _OWN_MODEL_FIELDS:
                raise ParameterError(f"model_options[{k!r}]", self.model_options[k],
                                     f"set it as the train config field {k}")
            if k in _TASK_MODEL_FIELDS:
                raise ParameterError(f"model_options[{k!r}]", self.model_options[k], "is set by the task")
            if k not in known:
                raise ParameterError("model_options", k, "unknown transformer config field; known: "
                                     + ", ".join(sorted(known - set(_OWN_MODEL_FIELDS) - set(_TASK_MODEL_FIELDS))))
        self.model_config(self.build_task())  # validates the task options and the model shape

    # -- derived ----------------------------------------------------------------
    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.n_seeds))

    def build_task(self):
        from algeval.sim.tasks import get_task

        return get_task(self.task, **self.task_options)

    def model_config(self, task=None):
        from algeval.models.config import RopeScaling, TransformerConfig

        task = task if task is not None else self.build_task()
        opts = dict(self.model_options)
        if isinstance(opts.get("rope_scaling"), dict):
            opts["rope_scaling"] = RopeScaling(**opts["rope_scaling"])
        return TransformerConfig(
            vocab_size=task.vocab.size, max_len=task.max_len, attention=task.attention,
            n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, d_head=self.d_head,
            d_mlp=self.d_mlp, **opts)

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    # -- JSON -----------------------------------------------------------------------
    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["breakdown"] = list(self.breakdown)
        d["task_options"] = dict(self.task_options)
        d["model_options"] = dict(self.model_options)
        return json.loads(json.dumps(d))

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ParameterError("train config", type(d).__name__, "must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParameterError("train config", unknown[0], f"unknown field; known: {', '.join(sorted(known))}")
        d = dict(d)
        if "breakdown" in d and isinstance(d["breakdown"], list):
            d["breakdown"] = tuple(d["breakdown"])
        return cls(**d)

    def save(self, path) -> None:
        _atomic_write(Path(path), json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path) -> "TrainConfig":
        p = Path(path)
        try:
            return cls.from_json(json.loads(p.read_text()))
        except FileNotFoundError:
            raise ParameterError("config", str(p), "no such file") from None
        except json.JSONDecodeError as e:
            raise ParameterError("config", str(p), f"is not valid JSON ({e.msg}, line {e.lineno})") from None


# --- optimiser -----------------------------------------------------------------

def lr_schedule(cfg: TrainConfig):
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, cosine decay to 0 at ``steps``."""
    import optax

    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=float(cfg.lr), warmup_steps=cfg.warmup_steps,
        decay_steps=max(cfg.steps, cfg.warmup_steps + 1), end_value=0.0)


def frozen_mask(model_cfg, params):
    """True for parameters the optimiser leaves alone: the key biases ``b_K``, unless positions are rotary.

    Softmax attention is invariant to adding the same number to every score of
    a query, and ``q . b_K`` is such a number, so ``b_K`` gets a zero gradient
    in exact arithmetic; Adam's ``m / sqrt(v)`` would turn its rounding noise
    into a random walk of ``lr`` per step.  (With rotary positions the rotated
    bias depends on the key position and does get a gradient.)
    """
    import jax

    freeze = model_cfg.positions != "rotary"

    def is_frozen(path, x):
        return freeze and any(getattr(p, "key", None) == "b_K" for p in path)

    return jax.tree_util.tree_map_with_path(is_frozen, params)


def make_optimizer(cfg: TrainConfig, params, model_cfg=None):
    """AdamW on ``lr_schedule(cfg)`` after global-norm clipping; see the module docstring.

    Weight decay applies to matrices (parameters with 2 or more axes) only;
    the parameters of :func:`frozen_mask` get zero updates.
    """
    import jax
    import optax

    model_cfg = model_cfg if model_cfg is not None else cfg.model_config()
    parts = [optax.masked(optax.set_to_zero(), frozen_mask(model_cfg, params))]
    if cfg.grad_clip is not None:
        parts.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
    decay = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)  # noqa: E731
    parts.append(optax.adamw(lr_schedule(cfg), weight_decay=float(cfg.weight_decay), mask=decay))
    return optax.chain(*parts)


def train_step_fn(fn, tx):
    """The pure update ``(params, opt_state, batch) -> (params, opt_state, loss, grad_norm)``.

    ``fn`` is :meth:`Transformer.functional`'s pure forward; ``loss`` is
    ``answer_set_nll`` of the batch (``tokens``, ``answers``, ``loss_mask``
    and, for prefix-full attention, ``prefix_end``), ``grad_norm`` the global
    norm of the raw gradient, and the new parameters are ``params +
    tx.update(grad)``.  No NNX graph is traversed at run time: ``fn`` merges
    the graph once, while tracing.
    """
    import jax
    import optax

    def loss_fn(params, batch):
        logits, _ = fn(params, batch["tokens"], None, batch.get("prefix_end"))
        return _nll(logits, batch["answers"], batch["loss_mask"])

    def one_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        gnorm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, gnorm

    return one_step


def jit_train_step(fn, tx, replicated, batch_sharding, compiler_options: dict | None = None):
    """:func:`train_step_fn` vmapped over a leading seed axis and jitted, parameter and optimiser buffers donated.

    Parameters and optimiser state are ``replicated``; the batch ``(seed,
    batch, ...)`` is split by ``batch_sharding``.  ``compiler_options``: XLA
    options for this one executable (e.g. ``{"xla_cpu_use_onednn": True}``).
    """
    import jax

    rep = replicated
    return jax.jit(jax.vmap(train_step_fn(fn, tx)), donate_argnums=(0, 1),
                   in_shardings=(rep, rep, batch_sharding), out_shardings=(rep, rep, rep, rep),
                   compiler_options=compiler_options)


# --- files ---------------------------------------------------------------------

def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from the group
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_metrics(out_dir) -> list[dict]:
    """The metric lines of a run (a torn last line, from a killed writer, is skipped)."""
    p = Path(out_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _truncate_metrics(out_dir: Path, step: int) -> None:
    """Keep the metric lines up to ``step`` (a resumed run rewrites what follows)."""
    p = out_dir / "metrics.jsonl"
    if not p.exists():
        return
    keep = [m for m in read_metrics(out_dir) if m.get("step", 0) <= step]
    _atomic_write(p, "".join(json.dumps(m, sort_keys=True) + "\n" for m in keep))


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# --- the trainer -----------------------------------------------------------------

_JIT_CACHE: dict = {}  # (model config, optimiser, devices) -> (tx, step, eval, init): sweeps compile once

@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``metrics``: every line of ``metrics.jsonl``; ``final``: the last line per
    seed; ``params``: per seed, the trained parameters as a nested dict of
    numpy arrays; ``losses``: ``(updates run by this call, n_seeds)`` training
    losses; ``steps_per_second``: updates per second of this call (excluding
    compilation of the first step).
    """

    out_dir: Path
    metrics: list[dict]
    final: list[dict]
    params: list[dict]
    losses: np.ndarray
    model_dirs: list[Path]
    steps_per_second: float
    resumed_from: int


class Trainer:
    """One training run; :meth:`run` trains (or resumes) it.  See the module docstring."""

    def __init__(self, cfg: TrainConfig, devices=None):
        import jax
        from flax import nnx
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        from algeval.models.transformer import Transformer

        self.cfg = cfg
        self.task = cfg.build_task()
        self.model_cfg = cfg.model_config(self.task)
        self.devices = list(jax.devices() if devices is None else devices)
        nd = len(self.devices)
        if cfg.batch_size % nd:
            raise ParameterError("batch_size", cfg.batch_size, f"must be a multiple of the device count ({nd})")
        self.mesh = Mesh(np.array(self.devices), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(None, "data"))   # (seed, batch, ...)
        self.eval_sharding = NamedSharding(self.mesh, P("data"))          # (batch, ...)
        self.out_dir = Path(cfg.out_dir).absolute()
        self.is_main = jax.process_index() == 0

        # the model, split once; S initialisations stacked on a leading axis (kept on the host:
        # the step donates its device buffers, so every run() puts fresh copies on the devices)
        models = [Transformer(self.model_cfg, seed=s) for s in cfg.seeds]
        self.graphdef, state0 = nnx.split(models[0])
        states = [state0] + [nnx.split(m)[1] for m in models[1:]]
        self._init_params = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)
        self.schedule = lr_schedule(cfg)
        self._train_sets: dict = {}
        self._perms: dict = {}
        self._prefix = self.task.attention == "prefix-full"
        key = (self.model_cfg, cfg.lr, cfg.steps, cfg.warmup_steps, cfg.weight_decay, cfg.grad_clip,
               tuple(d.id for d in self.devices), jax.process_count())
        if key not in _JIT_CACHE:
            while len(_JIT_CACHE) >= 8:
                _JIT_CACHE.pop(next(iter(_JIT_CACHE)))
            _JIT_CACHE[key] = self._compile(models[0], make_optimizer(cfg, state0, self.model_cfg))
        self.tx, self._step, self._eval, self._init_opt = _JIT_CACHE[key]

    def _compile(self, model, tx):
        """``(tx, step, eval, init)``: the jitted pure functions (cached per model shape, optimiser and mesh)."""
        import jax
        import jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec as P

        fn, _ = model.functional()

        def eval_one(params, batch):
            logits, _ = fn(params, batch["tokens"], None, batch.get("prefix_end"))
            per_ex = jax.vmap(lambda l, a, m: _nll(l[None], a[None], m[None]))(
                logits, batch["answers"], batch["loss_mask"])
            _, exact = _correct(logits, batch["answers"], batch["loss_mask"])
            return per_ex * jnp.maximum(batch["loss_mask"].sum(-1), 1), exact

        rep, bsh, esh = self.replicated, self.batch_sharding, self.eval_sharding
        step = jit_train_step(fn, tx, rep, bsh)
        evaluate = jax.jit(jax.vmap(eval_one, in_axes=(0, None)), in_shardings=(rep, esh),
                           out_shardings=NamedSharding(self.mesh, P(None, "data")))
        init = jax.jit(jax.vmap(tx.init), in_shardings=(rep,), out_shardings=rep)
        return tx, step, evaluate, init

    # -- data --------------------------------------------------------------------
    def _train_set(self, k: int):
        key = self.cfg.train_set_seed if self.cfg.train_set_seed is not None else ("seed", k)
        if key not in self._train_sets:
            s = stream_seed(TRAIN_SET, self.cfg.train_set_seed) if self.cfg.train_set_seed is not None \
                else stream_seed(TRAIN_SET, k)
            self._train_sets[key] = self.task.sample(self.cfg.train_set_size, s)
        return self._train_sets[key]

    def _perm(self, k: int, epoch: int) -> np.ndarray:
        key = (k, epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * self.cfg.n_seeds:
                self._perms.clear()
            self._perms[key] = np.random.default_rng(stream_seed(SHUFFLE, k, epoch)).permutation(
                self.cfg.train_set_size)
        return self._perms[key]

    def seed_batch(self, k: int, i: int):
        """The :class:`TaskBatch` seed ``k`` trains on at update ``i`` (0-based)."""
        cfg = self.cfg
        if cfg.train_set_size is None:
            return self.task.sample(cfg.batch_size, stream_seed(TRAIN, k, i))
        n = cfg.train_set_size
        pos = i * cfg.batch_size + np.arange(cfg.batch_size)
        epoch, within = pos // n, pos % n
        idx = np.empty(cfg.batch_size, np.int64)
        for e in np.unique(epoch):
            sel = epoch == e
            idx[sel] = self._perm(k, int(e))[within[sel]]
        return self._train_set(k)[idx]

    def _arrays(self, batches) -> dict:
        K = _next_pow2(max(4, max(b.answers.shape[-1] for b in batches)))
        pad = lambda a: np.pad(a, ((0, 0), (0, 0), (0, K - a.shape[-1])), constant_values=-1)  # noqa: E731
        out = {"tokens": np.stack([b.tokens for b in batches]).astype(np.int32),
               "answers": np.stack([pad(b.answers) for b in batches]).astype(np.int32),
               "loss_mask": np.stack([b.loss_mask for b in batches]).astype(bool)}
        if self._prefix:
            out["prefix_end"] = np.stack([b.meta["prefix_end"] for b in batches]).astype(np.int32)
        return out

    def host_batch(self, i: int) -> dict:
        """Numpy arrays ``(n_seeds, batch, ...)`` for update ``i``."""
        return self._arrays([self.seed_batch(k, i) for k in self.cfg.seeds])

    def device_batch(self, host: dict, sharding=None) -> dict:
        """``host`` as global arrays split along the batch axis over the mesh."""
        import jax

        sh = sharding or self.batch_sharding
        return {k: jax.make_array_from_callback(v.shape, sh, lambda idx, v=v: v[idx]) for k, v in host.items()}

    def _eval_set(self):
        cfg = self.cfg
        batch = self.task.sample(cfg.eval_count, stream_seed(EVAL, cfg.eval_seed))
        fields = {}
        for name in cfg.breakdown:
            if name not in batch.meta:
                continue
            v = np.asarray(batch.meta[name])
            if v.ndim != 1 or not np.issubdtype(v.dtype, np.integer):
                raise ParameterError("breakdown", name, f"meta field of task {cfg.task} is not one integer "
                                     f"per example (shape {v.shape}, {v.dtype})")
            fields[name] = v
        arrays = {k: v[0] for k, v in self._arrays([batch]).items()}
        chunk, n = cfg.batch_size, cfg.eval_count
        chunks = []
        for lo in range(0, n, chunk):
            idx = np.arange(lo, lo + chunk) % n  # the last chunk wraps around; its extra rows are dropped
            chunks.append((self.device_batch({k: v[idx] for k, v in arrays.items()}, self.eval_sharding),
                           min(chunk, n - lo)))
        return chunks, arrays["loss_mask"].sum(-1), fields

    def evaluate(self, params) -> list[dict]:
        """Per seed: ``loss``, ``acc`` and ``breakdowns`` on the held-out set."""
        if not hasattr(self, "_eval_cache"):
            self._eval_cache = self._eval_set()
        chunks, counts, fields = self._eval_cache
        nll, exact = [], []
        for dev, keep in chunks:
            a, b = self._eval(params, dev)
            nll.append(_host(a)[:, :keep])
            exact.append(_host(b)[:, :keep])
        nll, exact = np.concatenate(nll, 1).astype(np.float64), np.concatenate(exact, 1)
        counts = np.maximum(counts, 1)
        out = []
        for s in range(self.cfg.n_seeds):
            d = {"loss": float(nll[s].sum() / counts.sum()), "acc": float(exact[s].mean()), "breakdowns": {}}
            for name, v in fields.items():
                d["breakdowns"][name] = {
                    str(int(u)): {"acc": float(exact[s][v == u].mean()),
                                  "loss": float(nll[s][v == u].sum() / counts[v == u].sum()),
                                  "n": int((v == u).sum())}
                    for u in np.unique(v)}
            out.append(d)
        return out

    # -- checkpoints -----------------------------------------------------------
    def _manager(self):
        import orbax.checkpoint as ocp

        opts = ocp.CheckpointManagerOptions(max_to_keep=self.cfg.keep_checkpoints, create=True,
                                            cleanup_tmp_directories=True)
        return ocp.CheckpointManager(self.out_dir / "checkpoints", options=opts)

    @staticmethod
    def _flat(tree) -> dict:
        import jax

        return {f"{i:05d}": _host(x) for i, x in enumerate(jax.tree.leaves(tree))}

    def _save(self, mngr, step, params, opt_state, meta):
        import orbax.checkpoint as ocp

        tree = {"params": self._flat(params), "opt_state": self._flat(opt_state)}
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))

    def _restore(self, mngr, step, params, opt_state):
        import jax
        import orbax.checkpoint as ocp

        like = {"params": self._flat(params), "opt_state": self._flat(opt_state)}
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like)
        got = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                         meta=ocp.args.JsonRestore()))
        st = got["state"]
        unflat = lambda tree, d: jax.tree.unflatten(  # noqa: E731
            jax.tree.structure(tree), [d[k] for k in sorted(d)])
        put = lambda t: jax.device_put(t, self.replicated)  # noqa: E731
        return put(unflat(params, st["params"])), put(unflat(opt_state, st["opt_state"])), got["meta"]

    # -- the run ---------------------------------------------------------------
    def _check_out_dir(self, force: bool):
        cfg_path = self.out_dir / "train_config.json"
        if force and self.is_main:
            names = ["checkpoints", "metrics.jsonl", "train_config.json", "model"]
            names += [p.name for p in self.out_dir.glob("model_seed*")]
            for name in names:
                p = self.out_dir / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_text())
            except json.JSONDecodeError:
                old = None
            new = self.cfg.to_json()
            if old is not None:
                old.pop("out_dir", None)
            new.pop("out_dir")
            if old != new:
                diff = sorted(k for k in set(new) | set(old or {}) if (old or {}).get(k) != new.get(k))
                what = f" ({diff[0]}: {(old or {}).get(diff[0])!r} there, {new.get(diff[0])!r} now)" if diff else ""
                raise ParameterError("out_dir", str(self.out_dir), "holds a run with a different train config"
                                     f"{what}; use another --out, or --force to start it over")
        elif self.is_main:
            self.cfg.save(cfg_path)

    def run(self, progress: bool | None = None, force: bool = False) -> TrainResult:
        import jax

        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_out_dir(force)
        params = jax.device_put(self._init_params, self.replicated)
        opt_state = self._init_opt(params)
        S = cfg.n_seeds
        mngr = self._manager()
        try:
            start = mngr.latest_step() or 0
            loss_sum, loss_n, elapsed0 = np.zeros(S), 0, 0.0
            if start:
                params, opt_state, meta = self._restore(mngr, start, params, opt_state)
                saved = {k: v for k, v in (meta.get("config") or {}).items() if k != "out_dir"}
                if saved != {k: v for k, v in cfg.to_json().items() if k != "out_dir"}:
                    raise ParameterError("out_dir", str(self.out_dir), f"its checkpoint at step {start} belongs "
                                         "to another train config; use another --out, or --force to start over")
                loss_sum, loss_n = np.asarray(meta["train_loss_sum"], np.float64), int(meta["train_loss_count"])
                elapsed0 = float(meta["wallclock"])
            if self.is_main:
                _truncate_metrics(self.out_dir, start)
            t0 = time.perf_counter()
            losses, pending = [], []
            last_good = start
            t_first = None

            def settle(item):
                nonlocal loss_sum, loss_n
                step, loss, gnorm = item
                lv, gv = _host(loss).astype(np.float64), _host(gnorm).astype(np.float64)
                bad = ~(np.isfinite(lv) & np.isfinite(gv))
                if bad.any():
                    s = int(np.flatnonzero(bad)[0])
                    mngr.wait_until_finished()
                    where = (f"the last good checkpoint (step {last_good}) is kept in {self.out_dir / 'checkpoints'}"
                             if last_good else "no checkpoint was written")
                    raise TrainingDiverged(step, cfg.seeds[s], float(lv[s]), float(gv[s]), where)
                loss_sum = loss_sum + lv
                loss_n += 1
                losses.append(lv)
                return lv

            bar = _Progress(enabled=progress, total=cfg.steps, completed=start)
            with bar:
                for i in range(start, cfg.steps):
                    step = i + 1
                    batch = self.device_batch(self.host_batch(i))
                    params, opt_state, loss, gnorm = self._step(params, opt_state, batch)
                    pending.append((step, loss, gnorm))
                    while len(pending) > 1:
                        lv = settle(pending.pop(0))
                        bar.update(1, loss=float(lv.mean()))
                    if t_first is None:
                        jax.block_until_ready(loss)
                        t_first = (time.perf_counter(), step)
                    do_eval = step % cfg.eval_every == 0 or step == cfg.steps
                    do_ckpt = step % cfg.checkpoint_every == 0 or step == cfg.steps
                    if do_eval or do_ckpt:
                        while pending:
                            lv = settle(pending.pop(0))
                            bar.update(1, loss=float(lv.mean()))
                    if do_eval:
                        wall = elapsed0 + time.perf_counter() - t0
                        lr = float(self.schedule(step - 1))
                        for s, ev in enumerate(self.evaluate(params)):
                            line = {"step": step, "seed": cfg.seeds[s],
                                    "train_loss": float(loss_sum[s] / max(loss_n, 1)), **ev,
                                    "lr": lr, "examples_seen": step * cfg.batch_size, "wallclock": round(wall, 3)}
                            self._write_metric(line)
                        loss_sum, loss_n = np.zeros(S), 0
                    if do_ckpt:
                        meta = {"step": step, "examples_seen": step * cfg.batch_size,
                                "data": "streamed" if cfg.train_set_size is None else "fixed-set",
                                "seeds": list(cfg.seeds), "train_loss_sum": [float(x) for x in loss_sum],
                                "train_loss_count": loss_n, "wallclock": elapsed0 + time.perf_counter() - t0,
                                "config": cfg.to_json()}
                        self._save(mngr, step, params, opt_state, meta)
                        last_good = step
                while pending:
                    settle(pending.pop(0))
            mngr.wait_until_finished()
        finally:
            mngr.close()
        rate = 0.0
        if t_first is not None and cfg.steps > t_first[1]:
            rate = (cfg.steps - t_first[1]) / max(time.perf_counter() - t_first[0], 1e-9)
        metrics = read_metrics(self.out_dir)
        final = [next((m for m in reversed(metrics) if m.get("seed") == s), {}) for s in cfg.seeds]
        host_params = [self._seed_params(params, s) for s in range(S)]
        dirs = self._save_models(params, final) if self.is_main else []
        return TrainResult(self.out_dir, metrics, final, host_params,
                           np.array(losses).reshape(-1, S), dirs, rate, start)

    def _write_metric(self, line: dict):
        if not self.is_main:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
            f.flush()

    def _seed_state(self, params, s: int):
        import jax

        return jax.tree.map(lambda x: _host(x)[s], params)

    def _seed_params(self, params, s: int) -> dict:
        from flax import nnx

        return nnx.to_pure_dict(self._seed_state(params, s))

    def _save_models(self, params, final) -> list[Path]:
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from algeval.models.io import save_model

        cfg, dirs = self.cfg, []
        for s, seed in enumerate(cfg.seeds):
            state = jax.tree.map(jnp.asarray, self._seed_state(params, s))
            model = nnx.merge(self.graphdef, state)
            path = self.out_dir / ("model" if cfg.n_seeds == 1 else f"model_seed{seed}")
            meta = {"trained_by": "algeval.sim.train", "task": cfg.task, "task_options": dict(self.task.config),
                    "train_config": cfg.to_json(), "seed": seed, "final_metrics": final[s]}
            dirs.append(save_model(model, path, meta=json.loads(json.dumps(meta)), overwrite=True))
        return dirs


def _host(x) -> np.ndarray:
    """A numpy copy of a jax array, also one spread over several hosts."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _nll(logits, answers, loss_mask):
    from algeval.sim.tasks.base import answer_set_nll

    return answer_set_nll(logits, answers, loss_mask)


def _correct(logits, answers, loss_mask):
    from algeval.sim.tasks.base import answer_set_correct

    return answer_set_correct(logits, answers, loss_mask)


def train(cfg: TrainConfig, *, progress: bool | None = None, devices=None, force: bool = False) -> TrainResult:
    """Train (or resume) the run ``cfg`` describes; see the module docstring.

    ``progress``: show a progress bar (default: when stderr is a terminal).
    ``devices``: the data-parallel devices (default ``jax.devices()``).
    ``force``: discard a different run found in ``cfg.out_dir``.
    """
    return Trainer(cfg, devices=devices).run(progress=progress, force=force)


# --- progress bar ------------------------------------------------------------------

class _Progress:
    """rich progress bar with rate and ETA; silent when disabled or stderr is not a terminal."""

    def __init__(self, enabled: bool | None, total: int, completed: int):
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.total, self.completed = total, completed
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._p = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                               TimeRemainingColumn(), TextColumn("loss {task.fields[loss]}"),
                               console=Console(stderr=True), transient=False)
            self._p.__enter__()
            self._t = self._p.add_task("train", total=self.total, completed=self.completed, rate="", loss="-")
        return self

    def update(self, n: int, loss: float):
        if self._p is not None:
            self._p.update(self._t, advance=n, loss=f"{loss:.4f}")
            speed = self._p.tasks[0].speed
            if speed:
                self._p.update(self._t, rate=f"{speed:.1f} steps/s")

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False


# --- command line ------------------------------------------------------------------

def _key_values(items, flag: str) -> dict:
    out = {}
    for item in items or []:
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise ParameterError(flag, item, "must look like NAME=VALUE, e.g. max_vertices=8")
        out[key.strip().replace("-", "_")] = parse_literal(val.strip())
    return out


_CLI_FIELDS = {  # argparse dest -> TrainConfig field
    "task": "task", "layers": "n_layers", "d_model": "d_model", "heads": "n_heads", "d_head": "d_head",
    "d_mlp": "d_mlp", "steps": "steps", "batch_size": "batch_size", "lr": "lr",
    "warmup_steps": "warmup_steps", "weight_decay": "weight_decay", "seed": "seed", "seeds": "n_seeds",
    "eval_every": "eval_every", "eval_count": "eval_count", "eval_seed": "eval_seed",
    "checkpoint_every": "checkpoint_every", "keep_checkpoints": "keep_checkpoints",
    "train_set_size": "train_set_size", "train_set_seed": "train_set_seed", "out": "out_dir",
}


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` command to an argparse ``subparsers``; it calls :func:`train_main`."""
    d = TrainConfig.__dataclass_fields__
    dflt = lambda name: d[name].default  # noqa: E731
    p = subparsers.add_parser(
        "train", help="train transformers on a task (resumable, several seeds at once)",
        description="Train n_seeds transformers on a task, data-parallel over all devices, with "
        "checkpoints every --checkpoint-every steps. Re-running the same command on the same --out "
        "resumes from the last checkpoint. Flags override a --config JSON file.")
    g = p.add_argument_group("task and model")
    g.add_argument("--config", metavar="FILE", help="a train_config.json to start from (flags override it)")
    g.add_argument("--task", metavar="NAME", help=f"task name (default {dflt('task')}; `algeval tasks list`)")
    g.add_argument("--task-opt", action="append", metavar="NAME=VALUE", help="a task option, repeatable")
    g.add_argument("--layers", type=int, metavar="N", help=f"transformer blocks (default {dflt('n_layers')})")
    g.add_argument("--d-model", type=int, metavar="N", help=f"residual width (default {dflt('d_model')})")
    g.add_argument("--heads", type=int, metavar="N", help=f"attention heads (default {dflt('n_heads')})")
    g.add_argument("--d-head", type=int, metavar="N", help=f"head width (default {dflt('d_head')})")
    g.add_argument("--d-mlp", type=int, metavar="N", help=f"MLP width, 0 for none (default {dflt('d_mlp')})")
    g.add_argument("--model-opt", action="append", metavar="NAME=VALUE",
                   help="another TransformerConfig field, e.g. norm=rmsnorm, positions=rotary; repeatable")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, metavar="N", help=f"optimiser updates (default {dflt('steps')})")
    t.add_argument("--batch-size", type=int, metavar="N", help=f"examples per update and seed (default {dflt('batch_size')})")
    t.add_argument("--lr", type=float, metavar="X", help=f"peak learning rate (default {dflt('lr')})")
    t.add_argument("--warmup-steps", type=int, metavar="N", help="linear warm-up steps (default min(100, steps/10))")
    t.add_argument("--weight-decay", type=float, metavar="X", help=f"AdamW decay of matrices (default {dflt('weight_decay')})")
    t.add_argument("--grad-clip", metavar="X", help=f"global gradient-norm clip, 'none' for off (default {dflt('grad_clip')})")
    t.add_argument("--seed", type=int, metavar="N", help="first seed (default 0)")
    t.add_argument("--seeds", type=int, metavar="N", help="seeds trained at once: seed .. seed+seeds-1 (default 1)")
    t.add_argument("--train-set-size", type=int, metavar="N", help="train on a fixed set of N examples (default: fresh ones)")
    t.add_argument("--train-set-seed", type=int, metavar="N", help="share one fixed training set across seeds")
    e = p.add_argument_group("evaluation and output")
    e.add_argument("--eval-every", type=int, metavar="N", help=f"steps between evaluations (default {dflt('eval_every')})")
    e.add_argument("--eval-count", type=int, metavar="N", help=f"held-out examples (default {dflt('eval_count')})")
    e.add_argument("--eval-seed", type=int, metavar="N", help="seed of the held-out set (default 0)")
    e.add_argument("--breakdown", metavar="FIELDS", help="comma-separated integer meta fields to break accuracy down by "
                   "(default lookahead,n_vertices)")
    e.add_argument("--checkpoint-every", type=int, metavar="N", help=f"steps between checkpoints (default {dflt('checkpoint_every')})")
    e.add_argument("--keep-checkpoints", type=int, metavar="N", help=f"checkpoints kept (default {dflt('keep_checkpoints')})")
    e.add_argument("--out", metavar="DIR", help="output directory (metrics, checkpoints, model directories)")
    e.add_argument("--force", action="store_true", help="start over if --out holds a different run")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=train_main)
    return p


def config_from_args(args) -> TrainConfig:
    """The :class:`TrainConfig` that parsed ``algeval train`` arguments describe."""
    base = TrainConfig.load(args.config).to_json() if getattr(args, "config", None) else {}
    kw = dict(base)
    for dest, name in _CLI_FIELDS.items():
        v = getattr(args, dest, None)
        if v is not None:
            kw[name] = v
    if getattr(args, "task_opt", None):
        if args.task is not None and args.task != base.get("task", args.task):
            kw["task_options"] = {}
        kw["task_options"] = {**kw.get("task_options", {}), **_key_values(args.task_opt, "--task-opt")}
    elif args.task is not None and args.task != base.get("task", args.task):
        kw["task_options"] = {}
    if getattr(args, "model_opt", None):
        kw["model_options"] = {**kw.get("model_options", {}), **_key_values(args.model_opt, "--model-opt")}
    if getattr(args, "grad_clip", None) is not None:
        g = parse_literal(args.grad_clip)
        if g is not None and not isinstance(g, (int, float)):
            raise ParameterError("--grad-clip", args.grad_clip, "must be a number or 'none'")
        kw["grad_clip"] = None if g in (None, 0) else g
    if getattr(args, "breakdown", None) is not None:
        kw["breakdown"] = tuple(b.strip() for b in args.breakdown.split(",") if b.strip())
    if "out_dir" not in kw:
        raise ParameterError("--out", None, "is required (the run's output directory)")
    return TrainConfig.from_json(kw) if base else TrainConfig(**kw)


def train_main(args) -> int:
    """``algeval train``: ``args`` is the parsed namespace (or an argv list).  Returns the exit code."""
    if args is None or isinstance(args, (list, tuple)):
        parser = argparse.ArgumentParser(prog="algeval")
        sub = parser.add_subparsers(dest="command")
        add_train_parser(sub)
        args = parser.parse_args(["train", *(args or [])])
    try:
        cfg = config_from_args(args)
        res = train(cfg, progress=False if args.no_progress else None, force=args.force)
    except ParameterError as e:
        sys.stderr.write(f"algeval: error: {e}\n")
        return 2
    except TrainingDiverged as e:
        sys.stderr.write(f"algeval: error: {e}\n")
        return 1
    for f in res.final:
        print(f"seed {f.get('seed')}: step {f.get('step')}  loss {f.get('loss', float('nan')):.4f}  "
              f"acc {f.get('acc', float('nan')):.4f}")
    for d in res.model_dirs:
        print(f"model: {d}")
    print(f"metrics: {res.out_dir / 'metrics.jsonl'}  ({res.steps_per_second:.1f} steps/s)")
    return 0
