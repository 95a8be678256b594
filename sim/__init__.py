"""algeval.sim: tasks and data, training, analyses, the demo and the ``algeval`` command line."""
