"""algeval.models: the one Flax NNX transformer class, hooks, and model directories."""

from algeval.models.config import RopeScaling, TransformerConfig
from algeval.models.hooks import Patch, hook_names, resolve_names
from algeval.models.masks import attention_mask
from algeval.models.transformer import Transformer

__all__ = ["Patch", "RopeScaling", "Transformer", "TransformerConfig", "attention_mask",
           "hook_names", "resolve_names"]
