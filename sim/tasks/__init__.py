"""algeval.sim.tasks: seeded, vectorised task generators.

``get_task(name, **options).sample(count, seed)`` returns a :class:`TaskBatch`.
Registered tasks: ``search``, ``shortest-path``, ``reachability``, ``cogeval``,
``induction``, ``k-hop-induction``, ``dfs-trace``.
"""

from algeval.sim.tasks.base import (
    MASKS,
    PAD,
    TASKS,
    Task,
    TaskBatch,
    Vocab,
    answer_set_correct,
    answer_set_nll,
    get_task,
    register,
)
from algeval.sim.tasks import cogeval, dfs_trace, graph_queries, induction, search  # noqa: F401,E402  (register)

__all__ = [
    "MASKS", "PAD", "TASKS", "Task", "TaskBatch", "Vocab",
    "answer_set_correct", "answer_set_nll", "get_task", "register",
]
