"""Model directories: one format for hand-built, trained and imported models.

A model directory holds::

    model.json   {"format": "algeval-model", "format_version": 1,
                  "config": <TransformerConfig>, "meta": {...free-form...}}
    params/      an orbax checkpoint of the parameter tree

``meta`` carries what a model's maker wants to keep beside it (the task and
its options, the residual-dimension labels of a construction, training
metrics...).  Saving is atomic: the directory is written under a temporary
name and renamed into place, so an interrupted save never leaves a
half-written model.  Loading refuses a directory that misses a file or whose
weights don't fit its config, naming what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from algeval.errors import ParameterError
from algeval.models.config import TransformerConfig
from algeval.models.transformer import Transformer

FORMAT, FORMAT_VERSION = "algeval-model", 1


def _flat(tree) -> dict[str, tuple]:
    """``{"blocks/0/attn/W_Q": shape, ...}`` for a nested dict of arrays or metadata."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
        out[key] = tuple(leaf.shape)
    return out


def _stringify(tree):
    """Orbax wants string keys: ``nnx.List`` indices become ``"0"``, ``"1"``..."""
    if isinstance(tree, dict):
        return {str(k): _stringify(v) for k, v in tree.items()}
    return tree


def _unstringify(tree, like):
    if isinstance(like, dict):
        return {k: _unstringify(tree[str(k)], v) for k, v in like.items()}
    return tree


def save_model(model: Transformer, path, meta: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` (and JSON-serialisable ``meta``) as a model directory at ``path``."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise ParameterError("out", str(path), "already exists (pass overwrite=True / --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "config": model.cfg.to_json(), "meta": meta or {}}
        (tmp / "model.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        params = _stringify(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
        params = jax.tree.map(np.asarray, params)
        with ocp.StandardCheckpointer() as ck:
            ck.save(tmp / "params", params)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_model_json(path) -> dict:
    """The parsed ``model.json`` of a model directory, validated."""
    path = Path(path)
    if not path.is_dir():
        raise ParameterError("model_dir", str(path), "is not a directory")
    mj = path / "model.json"
    if not mj.is_file():
        raise ParameterError("model_dir", str(path), "has no model.json")
    try:
        doc = json.loads(mj.read_text())
    except json.JSONDecodeError as e:
        raise ParameterError("model.json", str(mj), f"is not valid JSON ({e.msg}, line {e.lineno})") from None
    if doc.get("format") != FORMAT:
        raise ParameterError("model.json format", doc.get("format"), f"must be {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ParameterError("model.json format_version", doc.get("format_version"),
                             f"this algeval reads version {FORMAT_VERSION}")
    if "config" not in doc:
        raise ParameterError("model.json", str(mj), "has no 'config'")
    return doc


def load_model(path) -> tuple[Transformer, dict]:
    """``(model, meta)`` from a model directory written by :func:`save_model`."""
    path = Path(path).absolute()
    doc = read_model_json(path)
    cfg = TransformerConfig.from_json(doc["config"])
    if not (path / "params").is_dir():
        raise ParameterError("model_dir", str(path), "has no params/ checkpoint")
    abstract = nnx.eval_shape(lambda: Transformer(cfg, seed=0))
    graphdef, abs_state = nnx.split(abstract)
    want = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    with ocp.StandardCheckpointer() as ck:
        try:
            got_meta = ck.metadata(path / "params")
        except Exception as e:  # orbax raises several types for a damaged checkpoint
            raise ParameterError("model_dir", str(path), f"params/ is not a readable checkpoint ({type(e).__name__})") from None
        got_meta = getattr(got_meta, "item_metadata", got_meta)
        got, exp = _flat(got_meta), _flat(_stringify(want))
        missing = sorted(set(exp) - set(got))
        extra = sorted(set(got) - set(exp))
        if missing:
            raise ParameterError("params", missing[0], "is missing from the checkpoint but the config needs it")
        if extra:
            raise ParameterError("params", extra[0], "is in the checkpoint but not in the config's model")
        for k in exp:
            if got[k] != exp[k]:
                raise ParameterError(f"params {k}", got[k], f"shape does not fit the config, which needs {exp[k]}")
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), _stringify(want))
        restored = ck.restore(path / "params", target)
    restored = jax.tree.map(jax.numpy.asarray, _unstringify(restored, want))
    nnx.replace_by_pure_dict(abs_state, restored)
    return nnx.merge(graphdef, abs_state), doc.get("meta", {})
