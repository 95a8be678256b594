"""algeval.theory: reference algorithms as exact executors returning a :class:`Trace`.

One module per algorithm, each a pure-numpy executor that records its
intermediate variables step by step:

- :func:`bfs` (``theory/bfs.py``)                    layer-synchronous breadth-first search
- :func:`dfs` (``theory/dfs.py``)                    iterative preorder depth-first search
- :func:`path_merging` (``theory/path_merging.py``)  exponential reachability by merging reach sets
- :func:`value_iteration` (``theory/value_iteration.py``)  finite-horizon Bellman backups, node rewards
- :func:`shortest_paths` (``theory/shortest_path.py``)     every shortest path between two vertices
- :func:`value_path` (``theory/value_path.py``)      CogEval valuePath: best simple reward path
- :func:`khop` (``theory/khop.py``)                  k-hop induction heads
- ``theory/orders.py``                               which BFS/DFS visit orders are possible
"""

from algeval.theory.trace import Trace
from algeval.theory import graph
from algeval.theory.bfs import bfs
from algeval.theory.dfs import dfs
from algeval.theory.khop import khop
from algeval.theory.orders import (
    all_bfs_orders,
    all_dfs_orders,
    count_bfs_orders,
    count_dfs_orders,
    is_valid_bfs_order,
    is_valid_dfs_order,
)
from algeval.theory.path_merging import path_merging, reach_steps_needed
from algeval.theory.shortest_path import next_hops, shortest_paths
from algeval.theory.value_iteration import value_iteration
from algeval.theory.value_path import value_path, value_path_first_steps

__all__ = [
    "Trace",
    "graph",
    "bfs",
    "dfs",
    "path_merging",
    "reach_steps_needed",
    "value_iteration",
    "shortest_paths",
    "next_hops",
    "value_path",
    "value_path_first_steps",
    "khop",
    "is_valid_bfs_order",
    "is_valid_dfs_order",
    "all_bfs_orders",
    "all_dfs_orders",
    "count_bfs_orders",
    "count_dfs_orders",
]
