"""Hand-built transformers for the graph tasks, one module per task family.

``search``: :func:`path_merging_search`, :func:`bfs_search` (and the looped
path merging via ``path_merging_search(task, loop=True)``).
"""

from algeval.models.constructions.search import bfs_search, path_merging_search, to_model

__all__ = ["bfs_search", "path_merging_search", "to_model"]
