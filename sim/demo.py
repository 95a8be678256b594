"""The main job at its default configuration (``make demo`` / ``algeval demo``).

For every registered task: sample a batch, check it (token range, answer
sets present), run the task's reference algorithms on a few examples, and
run an untrained model of the one transformer class on the batch with a hook
cache, scoring it with the shared objective.  Later issues grow this into the
whole pipeline (build, certify, train, analyse, figures).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

from algeval.models import Transformer, TransformerConfig
from algeval.sim.tasks import TASKS, answer_set_correct, answer_set_nll, get_task

DEMO_OPTIONS = {"search": {"max_vertices": 8}}


def run_demo(count: int = 256, seed: int = 0) -> int:
    console = Console(width=max(Console().width, 132))
    console.print(f"[bold]algeval demo[/bold]: {len(TASKS)} tasks, {count} examples each, seed {seed}")
    table = Table(title="tasks -> references -> model (untrained)")
    for col in ("task", "options", "seq x vocab", "examples/s", "references run (steps)", "model",
                "hooks cached", "loss", "acc (chance)"):
        table.add_column(col, overflow="fold")
    for name in sorted(TASKS):
        task = get_task(name, **DEMO_OPTIONS.get(name, {}))
        t0 = time.perf_counter()
        batch = task.sample(count, seed)
        rate = count / (time.perf_counter() - t0)
        assert batch.tokens.max() < batch.vocab.size and batch.tokens.min() >= 0
        refs = {}
        for i in range(min(4, len(batch))):
            for rname, tr in task.references(batch, i).items():
                refs[rname] = tr.num_steps
        cfg = TransformerConfig(vocab_size=batch.vocab.size, max_len=task.max_len, n_layers=2, d_model=32,
                                n_heads=2, d_head=16, d_mlp=64, attention=task.attention)
        model = Transformer(cfg, seed=seed)
        logits, cache = model.run_with_cache(batch.tokens, names_filter="blocks.*.attn.hook_pattern",
                                             prefix_end=batch.meta.get("prefix_end"))
        loss = float(answer_set_nll(logits, batch.answers, batch.loss_mask))
        _, exact = answer_set_correct(logits, batch.answers, batch.loss_mask)
        k = (batch.answers >= 0).sum(-1)[batch.loss_mask]
        chance = float(np.mean(k / batch.vocab.size))
        opts = ", ".join(f"{a}={b}" for a, b in DEMO_OPTIONS.get(name, {}).items()) or "defaults"
        table.add_row(name, opts, f"{batch.tokens.shape[1]} x {batch.vocab.size}", f"{rate:,.0f}",
                      ", ".join(f"{r} ({s})" for r, s in refs.items()) or "-",
                      f"{model.num_params():,} params", str(len(cache)), f"{loss:.2f}",
                      f"{float(exact.mean()):.3f} ({chance:.3f})")
        jax.clear_caches()
    console.print(table)
    first = "search"
    task = get_task(first, **DEMO_OPTIONS.get(first, {}))
    batch = task.sample(1, seed)
    console.print(f"\n[bold]one {first} example[/bold]\n{task.describe(batch, 0)}")
    for rname, tr in task.references(batch, 0).items():
        console.print(f"\n[bold]reference {rname}[/bold]\n{tr.describe()}")
    console.print("\nNext: `algeval tasks sample search --count 2`, `algeval build path-merging --max-vertices 8 "
                  "--out runs/pm8`, `algeval show runs/pm8`, `algeval prove reverse`, `algeval train --help` "
                  "(README: the construction stack, graph constructions, training, analyses).")
    return 0
