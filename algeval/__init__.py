"""algeval: a JAX/Flax workbench for finding which algorithm a transformer has learned.

Subpackages (each a top-level folder of the repository):

- ``algeval.theory``  reference algorithms as exact executors returning a :class:`~algeval.theory.Trace`.
- ``algeval.models``  the one Flax NNX transformer class, its hooks, and model directories.
- ``algeval.sim``     tasks and data, the CLI (training and experiments land here later).
- ``algeval.proofs``  existence-claim certificates.
- ``algeval.figures`` figures regenerated from saved results.
"""

from algeval.errors import ParameterError

__version__ = "0.1.0"
__all__ = ["ParameterError", "__version__"]
