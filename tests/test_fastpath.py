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
