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
for _mod in ("search", "graph_queries", "cogeval", "induction", "dfs_trace"):
    try:  # task modules land one by one; a missing one must not break the rest
        __import__(f"algeval.sim.tasks.{_mod}")
    except ModuleNotFoundError as _e:
        if _e.name != f"algeval.sim.tasks.{_mod}":
            raise

__all__ = [
    "MASKS", "PAD", "TASKS", "Task", "TaskBatch", "Vocab",
    "answer_set_correct", "answer_set_nll", "get_task", "register",
]
