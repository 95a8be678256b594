"""The ``algeval`` command line.

    algeval --help
    algeval tasks list
    algeval tasks sample TASK [--OPTION VALUE ...] --count N --seed S
    algeval demo [--count N] [--seed S]
    algeval build NAME [--max-len T] [--vocab a,b,c] --out DIR [--force]
    algeval show DIR
    algeval prove NAME | --all [--dtype float32|float64|both] [--samples N]
    algeval train --task search --task-opt max_vertices=8 --layers 4 ... --out DIR
    algeval analyze MODEL_DIR --task search --out DIR
    algeval experiment NAME --scale smoke|cpu|full
    algeval case-study --model CHECKPOINT_DIR --graph n7line --out DIR
    algeval figures [--scale smoke|cpu|full] [--only NAME] [--out DIR] [--llama RESULTS_DIR]
    algeval bench train [--shapes l2d64,l6d128] [--steps N] [--repeats R] [--out FILE]
    algeval pipeline [--out runs/pipeline] [--scale smoke|cpu] [--samples N]

A user mistake prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys

from algeval.errors import ParameterError
from algeval.sim.options import coerce


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def parse_task_options(task_name: str, args: list[str]) -> dict:
    """``["--max-vertices", "8"]`` -> ``{"max_vertices": 8}``, checked against the task's options."""
    from algeval.sim.tasks import TASKS

    if task_name not in TASKS:
        raise ParameterError("TASK", task_name, f"unknown task; known: {', '.join(sorted(TASKS))}")
    params = TASKS[task_name].params
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ParameterError("argument", a, "unexpected; task options look like --max-vertices 8")
        key, _, val = a[2:].partition("=")
        name = key.replace("-", "_")
        if name not in params:
            if not val and i + 1 < len(args) and not args[i + 1].startswith("--"):
                val = args[i + 1]
            known = ", ".join("--" + k.replace("_", "-") for k in sorted(params)) or "none"
            raise ParameterError(f"--{key}", val or None, f"unknown option of task {task_name}; known: {known}")
        if not val:
            if i + 1 >= len(args):
                raise ParameterError(f"--{key}", None, "needs a value")
            val, i = args[i + 1], i + 1
        try:
            out[name] = coerce(val, params[name][0])
        except ValueError:
            raise ParameterError(f"--{key}", val, f"must be of type {type(params[name][0]).__name__}") from None
        i += 1
    return out


def cmd_tasks_list(args) -> int:
    from algeval.sim.tasks import TASKS

    for name in sorted(TASKS):
        cls = TASKS[name]
        doc = (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        line = doc[0].split(": ", 1)[-1] if doc else ""
        print(f"{name:18s} {line}  [attention: {cls.attention}]")
        for k, (d, h) in cls.params.items():
            print(f"    --{k.replace('_', '-'):18s} {h}" + ("" if "default" in h else f" (default: {d})"))
    return 0


def cmd_tasks_sample(args) -> int:
    from algeval.sim.tasks import get_task

    opts = parse_task_options(args.task, args.options)
    task = get_task(args.task, **opts)
    batch = task.sample(args.count, args.seed)
    print(f"# task {task.name}  options {task.config}  vocab {batch.vocab.size} tokens  "
          f"max_len {task.max_len}  attention {task.attention}  seed {args.seed}")
    for i in range(len(batch)):
        print(f"\n## example {i}")
        print(task.describe(batch, i))
    return 0


def cmd_demo(args) -> int:
    from algeval.sim.demo import run_demo

    return run_demo(count=args.count, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="algeval", description="algeval: which algorithm has a transformer learned? "
                "Tasks, reference algorithms, hand-built and trained transformers, AlgEval analyses.")
    from algeval import __version__
    p.add_argument("--version", action="version", version=f"algeval {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tasks = sub.add_parser("tasks", help="list tasks, print sampled examples")
    tsub = tasks.add_subparsers(dest="tasks_command", required=True, parser_class=_Parser)
    tl = tsub.add_parser("list", help="every task with its options")
    tl.set_defaults(func=cmd_tasks_list)
    ts = tsub.add_parser("sample", help="print readable examples of a task",
                         description="Task options follow the task name, e.g. "
                         "`algeval tasks sample search --max-vertices 8 --count 2 --seed 0`; "
                         "`algeval tasks list` shows each task's options.")
    ts.add_argument("task")
    ts.add_argument("--count", type=int, default=3, help="examples to print (default 3)")
    ts.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ts.set_defaults(func=cmd_tasks_sample)

    demo = sub.add_parser("demo", help="the main job: sample every task, run the references and a model")
    demo.add_argument("--count", type=int, default=256, help="examples per task (default 256)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    from algeval.sim.analyses import add_analyze_parser
    from algeval.sim.construct_cli import add_parsers
    from algeval.sim.experiments import add_experiment_parser
    from algeval.sim.train import add_train_parser
    add_parsers(sub)
    add_train_parser(sub)
    add_analyze_parser(sub)
    add_experiment_parser(sub)
    from algeval.figures.make import add_figures_parser
    add_figures_parser(sub)
    from algeval.sim.case_study import add_case_study_parser
    add_case_study_parser(sub)
    from algeval.sim.bench import add_bench_parser
    add_bench_parser(sub)
    from algeval.sim.pipeline import add_pipeline_parser
    add_pipeline_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "func", None) is cmd_tasks_sample:
        args.options = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        for name in ("count", "seed", "max_len", "samples"):
            v = getattr(args, name, None)
            if v is not None and v < (1 if name != "seed" else 0):
                raise ParameterError(f"--{name.replace('_', '-')}", v, f"must be >= {1 if name != 'seed' else 0}")
        return args.func(args)
    except ParameterError as e:
        sys.stderr.write(f"algeval: error: {e}\n")
        return 2
    except BrokenPipeError:  # `algeval tasks sample ... | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
