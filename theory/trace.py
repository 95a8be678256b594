"""The Trace: the one schema every reference algorithm returns.

A :class:`Trace` records an algorithm's answer and every intermediate variable
step by step.  The schema is fixed once for the whole workbench:

* ``variables[name]`` is a numpy array whose **first axis is the step**
  (step 0 is the initial state, step ``s`` the state after ``s`` updates);
* ``axes[name]`` names every axis of that array, always starting with
  ``"step"``, e.g. ``reach: ("step", "vertex", "vertex")`` is forward reach
  from each vertex as a vertex-indexed indicator;
* ``answer`` is the algorithm's output (an int, a tuple, an array...).

Vertices are integers ``0..n-1`` (the rows of the adjacency matrix).  A task
that draws a graph relabels vertices into its token vocabulary; mapping a
vertex to its token positions in a sequence is the task's job, see
:meth:`algeval.sim.tasks.TaskBatch.vertex_positions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Trace:
    """Answer plus step-indexed intermediate variables with named axes."""

    algorithm: str
    answer: Any
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    axes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self):
        if set(self.variables) != set(self.axes):
            raise ValueError(
                f"trace {self.algorithm}: variables {sorted(self.variables)} "
                f"and axes {sorted(self.axes)} name different sets"
            )
        for name, arr in self.variables.items():
            ax = self.axes[name]
            if not ax or ax[0] != "step":
                raise ValueError(f"trace {self.algorithm}: {name} axes {ax} must start with 'step'")
            if np.ndim(arr) != len(ax):
                raise ValueError(
                    f"trace {self.algorithm}: {name} has {np.ndim(arr)} dims but axes {ax}"
                )

    def __getitem__(self, name: str) -> np.ndarray:
        return self.variables[name]

    def __contains__(self, name: str) -> bool:
        return name in self.variables

    @property
    def num_steps(self) -> int:
        """Number of recorded states (the largest first-axis length)."""
        return max((len(v) for v in self.variables.values()), default=0)

    def at(self, step: int) -> dict[str, np.ndarray]:
        """Every variable's value at ``step`` (variables with fewer steps are left out)."""
        return {k: v[step] for k, v in self.variables.items() if step < len(v)}

    def describe(self) -> str:
        """One line per variable: ``name (axis=size, ...)``."""
        ans = self.answer
        if isinstance(ans, np.ndarray) and ans.size > 16:
            ans = f"<{ans.dtype} array {ans.shape}>"
        else:
            ans = repr(ans)
        lines = [f"{self.algorithm}: answer={ans}"]
        for k, v in self.variables.items():
            dims = ", ".join(f"{a}={s}" for a, s in zip(self.axes[k], np.shape(v)))
            lines.append(f"  {k} ({dims})")
        return "\n".join(lines)
