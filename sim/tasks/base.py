"""What every task shares: the vocabulary, the batch format, the objective.

A task turns a seed into a :class:`TaskBatch`:

* ``tokens``     ``(batch, seq)`` int32, **left-padded** with ``<pad>`` (id 0),
  so the decision position of single-answer tasks is always ``seq - 1``;
* ``answers``    ``(batch, seq, K)`` int32: at each position, the *set* of
  correct next tokens, padded with ``-1`` (several answers can be correct);
* ``loss_mask``  ``(batch, seq)`` bool: the positions that are scored;
* ``meta``       per-example arrays whose first axis is the batch (the graph
  as an adjacency over vertex labels, start, goal, lookahead, ...);
* ``attention``  the mask every model of the task uses: ``causal``, ``full``
  or ``prefix-full``; for ``prefix-full``, ``meta["prefix_end"]`` gives per
  example the (absolute, exclusive) position where the bidirectional prefix
  ends: positions ``i, j < prefix_end`` see each other, later ones are causal
  (see :func:`algeval.models.attention_mask`).

Objective (the same for training and evaluation everywhere):

    loss(position) = -log sum_{a in answers} softmax(logits)[a]
    correct(position) = argmax(logits) in answers

An example is exactly right when every scored position is correct.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from algeval.errors import ParameterError, check_int_range

PAD = "<pad>"
MASKS = ("causal", "full", "prefix-full")


@dataclass(frozen=True)
class Vocab:
    """Token strings by id.  Vertex ``v`` is token ``vertex_offset + v``.

    ``tokens[0]`` is always ``<pad>``.  Vertex tokens print as their label
    (``"7"``), so a decoded sequence reads like the paper's examples.
    """

    specials: tuple[str, ...]
    num_vertices: int = 0
    extra: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.specials or self.specials[0] != PAD:
            raise ValueError("specials must start with '<pad>'")

    @property
    def vertex_offset(self) -> int:
        return len(self.specials)

    @property
    def extra_offset(self) -> int:
        return len(self.specials) + self.num_vertices

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.specials + tuple(str(v) for v in range(self.num_vertices)) + self.extra

    @property
    def size(self) -> int:
        return len(self.specials) + self.num_vertices + len(self.extra)

    def id(self, name: str) -> int:
        """Token id of a special or extra symbol."""
        if name in self.specials:
            return self.specials.index(name)
        if name in self.extra:
            return self.extra_offset + self.extra.index(name)
        raise KeyError(f"token {name!r} is not in this vocabulary")

    def vertex(self, v):
        """Token id(s) of vertex label(s) ``v`` (int or array)."""
        return np.asarray(v) + self.vertex_offset if not isinstance(v, int) else v + self.vertex_offset

    def decode(self, ids) -> list[str]:
        toks = self.tokens
        return [toks[int(i)] for i in np.asarray(ids).ravel()]

    def to_json(self) -> dict:
        return {"specials": list(self.specials), "num_vertices": self.num_vertices, "extra": list(self.extra)}


@dataclass
class TaskBatch:
    """A batch of examples; see the module docstring for the format."""

    task: str
    tokens: np.ndarray
    answers: np.ndarray
    loss_mask: np.ndarray
    vocab: Vocab
    attention: str
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        b, t = self.tokens.shape
        assert self.answers.shape[:2] == (b, t), (self.answers.shape, self.tokens.shape)
        assert self.loss_mask.shape == (b, t)
        assert self.attention in MASKS
        for k, v in self.meta.items():
            assert len(v) == b, f"meta[{k!r}] has {len(v)} rows for a batch of {b}"

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def vertex_positions(self, i: int, v: int) -> np.ndarray:
        """Token positions in example ``i`` that mention vertex label ``v``.

        This is the documented map from a :class:`~algeval.theory.Trace`'s
        vertex axis to sequence positions: a vertex is mentioned wherever its
        token ``vocab.vertex(v)`` appears.
        """
        return np.flatnonzero(self.tokens[i] == self.vocab.vertex(int(v)))

    def answer_set(self, i: int, pos: int | None = None) -> list[int]:
        """Correct tokens at position ``pos`` (default: the last scored one) of example ``i``."""
        if pos is None:
            pos = int(np.flatnonzero(self.loss_mask[i])[-1])
        a = self.answers[i, pos]
        return [int(x) for x in a[a >= 0]]

    def __getitem__(self, idx) -> "TaskBatch":
        """Sub-batch by slice or index array (metadata sliced alike)."""
        idx = np.arange(len(self))[idx] if not isinstance(idx, np.ndarray) else idx
        idx = np.atleast_1d(idx)
        return TaskBatch(
            task=self.task,
            tokens=self.tokens[idx],
            answers=self.answers[idx],
            loss_mask=self.loss_mask[idx],
            vocab=self.vocab,
            attention=self.attention,
            meta={k: v[idx] for k, v in self.meta.items()},
        )


class Task(abc.ABC):
    """A seeded, vectorised example generator.

    Subclasses set ``name``, ``attention``, ``params`` (name -> (default,
    help)), build ``self.vocab`` and ``self.max_len`` in ``__init__``, and
    implement :meth:`_sample`.  :meth:`sample` is deterministic in ``seed``.
    """

    name: ClassVar[str]
    attention: ClassVar[str] = "causal"
    params: ClassVar[dict[str, tuple[Any, str]]] = {}
    vocab: Vocab
    max_len: int

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.params)
        if unknown:
            k = sorted(unknown)[0]
            raise ParameterError(k, kwargs[k], f"unknown option for task {self.name}; "
                                 f"known: {', '.join(sorted(self.params)) or 'none'}")
        self.config = {k: kwargs.get(k, d) for k, (d, _) in self.params.items()}

    def sample(self, count: int, seed: int) -> TaskBatch:
        """``count`` examples drawn from ``numpy.random.default_rng(seed)``."""
        count = check_int_range("count", count, 1, None)
        seed = check_int_range("seed", seed, 0, None)
        batch = self._sample(count, np.random.default_rng(seed))
        assert batch.tokens.shape[1] <= self.max_len
        return batch

    @abc.abstractmethod
    def _sample(self, count: int, rng: np.random.Generator) -> TaskBatch: ...

    def references(self, batch: TaskBatch, i: int) -> dict:
        """Run the reference algorithms on example ``i``: name -> Trace."""
        return {}

    def describe(self, batch: TaskBatch, i: int) -> str:
        """A readable rendering of example ``i`` (graph, query, tokens, answer set)."""
        toks = [t for t in batch.vocab.decode(batch.tokens[i]) if t != PAD]
        ans = batch.vocab.decode(batch.answer_set(i))
        return f"tokens: {' '.join(toks)}\nanswer set: {{{', '.join(ans)}}}"


# --- objective ---------------------------------------------------------------

def answer_set_nll(logits, answers, loss_mask):
    """Mean over scored positions of ``-log sum_{a in answers} p(a)``.

    ``logits (B, T, V)``, ``answers (B, T, K)`` padded with ``-1``,
    ``loss_mask (B, T)``.  Works on numpy or jax arrays (uses ``jax.numpy``).
    """
    import jax
    import jax.numpy as jnp

    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    valid = answers >= 0
    picked = jnp.take_along_axis(logp, jnp.where(valid, answers, 0), axis=-1)
    picked = jnp.where(valid, picked, -jnp.inf)
    nll = -jax.scipy.special.logsumexp(picked, axis=-1)
    nll = jnp.where(loss_mask, nll, 0.0)
    return nll.sum() / jnp.maximum(loss_mask.sum(), 1)


def answer_set_correct(logits, answers, loss_mask):
    """``(per_position (B, T), per_example (B,))``: argmax lands in the answer set.

    Unscored positions count as correct in ``per_position``; an example is
    exact when all its scored positions are correct.
    """
    import jax.numpy as jnp

    pred = jnp.argmax(logits, axis=-1)
    hit = (answers == pred[..., None]).any(-1) | ~loss_mask
    return hit, hit.all(-1)


# --- registry ----------------------------------------------------------------

TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def get_task(name: str, **params) -> Task:
    """Instantiate a registered task by name, with validated parameters."""
    if name not in TASKS:
        raise ParameterError("task", name, f"unknown task; known: {', '.join(sorted(TASKS))}")
    return TASKS[name](**params)


def left_pad(rows: list[np.ndarray], width: int, fill: int = 0) -> np.ndarray:
    """Stack 1-D rows right-aligned in a ``(len(rows), width)`` array."""
    out = np.full((len(rows), width), fill, dtype=np.int32)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise ValueError(f"row of length {len(r)} exceeds width {width}")
        if len(r):
            out[i, width - len(r):] = r
    return out
