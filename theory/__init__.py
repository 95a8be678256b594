"""algeval.theory: reference algorithms as exact executors returning a :class:`Trace`."""

from algeval.theory.trace import Trace
from algeval.theory import graph

__all__ = ["Trace", "graph"]
