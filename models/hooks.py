"""Named hook sites, caching and array-valued patches.

Hook names follow TransformerLens's HookedTransformer, so analyses written
for it read naturally here::

    hook_embed, hook_pos_embed
    blocks.{l}.hook_resid_pre / hook_resid_mid / hook_resid_post
    blocks.{l}.ln1.hook_normalized, blocks.{l}.ln2.hook_normalized
    blocks.{l}.attn.hook_q / hook_k / hook_v           (batch, pos, head, d_head)
    blocks.{l}.attn.hook_rot_q / hook_rot_k            (rotary models only)
    blocks.{l}.attn.hook_attn_scores / hook_pattern    (batch, head, query_pos, key_pos)
    blocks.{l}.attn.hook_z                             (batch, pos, head, d_head)
    blocks.{l}.attn.hook_result                        (batch, pos, head, d_model)
    blocks.{l}.hook_attn_out, blocks.{l}.hook_mlp_out  (batch, pos, d_model)
    blocks.{l}.mlp.hook_pre / hook_pre_linear / hook_post   (batch, pos, d_mlp)
    ln_final.hook_normalized

``l`` counts *unrolled* layers: each iteration of a looped group gets its own
``l``.  A **patch** edits one activation::

    replace:  x <- where(mask, value, x)
    add:      x <- x + mask * value

with ``mask`` and ``value`` broadcastable to the activation.  The
**layer-stacked** form ``blocks.*.attn.hook_z`` patches every layer at once:
its mask and value carry a leading layer axis (size = unrolled layers), and
layer ``l`` uses ``mask[l]`` and ``value[l]``.  Because patches are plain
arrays, a sweep over layers x positions x heads is one ``jax.vmap`` over the
mask, under one ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from typing import Callable, Iterable, Union

import jax
import jax.numpy as jnp

from algeval.errors import ParameterError
from algeval.models.config import TransformerConfig

BLOCK_SITES = (
    "hook_resid_pre",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_rot_q",
    "attn.hook_rot_k",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_pre_linear",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)


def block_sites(cfg: TransformerConfig) -> tuple[str, ...]:
    """The per-block sites that exist for this architecture."""
    out = []
    for s in BLOCK_SITES:
        if s.startswith("ln") and cfg.norm == "none":
            continue
        if s.startswith("attn.hook_rot") and cfg.positions != "rotary":
            continue
        if s.startswith(("mlp.", "ln2.", "hook_mlp_out", "hook_resid_mid")) and not cfg.has_mlp:
            continue
        if s == "mlp.hook_pre_linear" and cfg.mlp != "swiglu":
            continue
        out.append(s)
    return tuple(out)


def hook_names(cfg: TransformerConfig, loop_iterations: int | None = None) -> tuple[str, ...]:
    """Every hook name of a model, in execution order."""
    names = ["hook_embed"]
    if cfg.positions in ("learned", "onehot"):
        names.append("hook_pos_embed")
    sites = block_sites(cfg)
    for l in range(cfg.n_unrolled(loop_iterations)):
        names += [f"blocks.{l}.{s}" for s in sites]
    if cfg.norm != "none":
        names.append("ln_final.hook_normalized")
    return tuple(names)


NamesFilter = Union[None, str, Iterable[str], Callable[[str], bool]]


def resolve_names(cfg: TransformerConfig, names_filter: NamesFilter,
                  loop_iterations: int | None = None) -> frozenset[str]:
    """Concrete hook names selected by a filter.

    ``None`` selects every hook; a string selects the names it matches as a
    glob (``"blocks.*.attn.hook_pattern"``) or exactly; a list selects the
    union; a predicate selects names for which it returns true.  A string or
    list entry that matches nothing is an error (a typo must not silently
    cache nothing).
    """
    allnames = hook_names(cfg, loop_iterations)
    if names_filter is None:
        return frozenset(allnames)
    if callable(names_filter):
        return frozenset(n for n in allnames if names_filter(n))
    pats = [names_filter] if isinstance(names_filter, str) else list(names_filter)
    out: set[str] = set()
    for p in pats:
        hit = [n for n in allnames if n == p or fnmatch.fnmatchcase(n, p)]
        if not hit:
            raise ParameterError("names_filter", p, "matches no hook of this model (see hook_names())")
        out.update(hit)
    return frozenset(out)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Patch:
    """Edit of one activation: ``replace`` (``where(mask, value, x)``) or ``add`` (``x + mask*value``)."""

    mask: jax.Array
    value: jax.Array
    mode: str = dataclasses.field(default="replace", metadata=dict(static=True))

    def apply(self, x: jax.Array) -> jax.Array:
        m = jnp.asarray(self.mask)
        v = jnp.asarray(self.value, dtype=x.dtype)
        if self.mode == "replace":
            return jnp.where(m.astype(bool), v, x)
        if self.mode == "add":
            return x + m.astype(x.dtype) * v
        raise ParameterError("mode", self.mode, "must be 'replace' or 'add'")


_STACKED = re.compile(r"^blocks\.\*\.(.+)$")


def check_patches(cfg: TransformerConfig, patches: dict, loop_iterations: int | None = None) -> None:
    """Refuse a patch for a site this model does not have, or a stacked one of the wrong depth."""
    allnames = set(hook_names(cfg, loop_iterations))
    sites = set(block_sites(cfg))
    n = cfg.n_unrolled(loop_iterations)
    for name, p in patches.items():
        if not isinstance(p, Patch):
            raise ParameterError(f"patches[{name!r}]", type(p).__name__, "must be a Patch")
        m = _STACKED.match(name)
        if m:
            if m.group(1) not in sites:
                raise ParameterError("patches", name, f"unknown block site; known: {', '.join(sorted(sites))}")
            for field in ("mask", "value"):
                arr = getattr(p, field)
                if jnp.ndim(arr) == 0 or jnp.shape(arr)[0] != n:
                    raise ParameterError(f"patches[{name!r}].{field}", jnp.shape(arr),
                                         f"stacked patches need a leading layer axis of {n}")
        elif name not in allnames:
            raise ParameterError("patches", name, "matches no hook of this model (see hook_names())")


class HookContext:
    """Applies patches and records activations during one traced forward pass."""

    def __init__(self, cache_names: frozenset[str] = frozenset(), patches: dict | None = None):
        self.cache_names = cache_names
        self.patches = patches or {}
        self.cache: dict[str, jax.Array] = {}

    def wants(self, name: str) -> bool:
        """Whether the site must be materialised (cached or patched)."""
        if name in self.cache_names or name in self.patches:
            return True
        m = re.match(r"^blocks\.\d+\.(.+)$", name)
        return bool(m) and f"blocks.*.{m.group(1)}" in self.patches

    def __call__(self, name: str, x: jax.Array) -> jax.Array:
        p = self.patches.get(name)
        if p is not None:
            x = p.apply(x)
        m = re.match(r"^blocks\.(\d+)\.(.+)$", name)
        if m:
            sp = self.patches.get(f"blocks.*.{m.group(2)}")
            if sp is not None:
                l = int(m.group(1))
                x = Patch(sp.mask[l], sp.value[l], sp.mode).apply(x)
        if name in self.cache_names:
            self.cache[name] = x
        return x
