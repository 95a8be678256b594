"""The AlgEval case study on a language model: CogEval prompts -> node mentions -> the analyses.

    algeval case-study --model CHECKPOINT_DIR --graph n7line [--graph ...] [--condition valuePath ...]
                       [--seeds N] [--seed S] --out DIR

**Prompts.**  :func:`algeval.sim.llm_eval.build_examples`: every query of
the chosen conditions (``valuePath``, ``shortest-1/2/3/max``), each under
``seeds`` random relabellings of the rooms (labels drawn from
``1..max_label``), worded by :func:`algeval.sim.tasks.cogeval.prompt`.

**Node mentions.**  The prompt names room ``i`` only as ``"room <labels[i]>"``,
so the mentions of node ``i`` are the character spans ``[a, b)`` of the
label digits matched by :data:`MENTION_RE` (other numbers -- ``"7 rooms"``,
``"earns 50 points"``, ``"at most 7 doors"`` -- are not mentions).  A token
belongs to a mention iff its character span ``[s, e)`` (the tokenizer's
offsets) overlaps it, ``s < b and e > a``; special tokens (BOS) never do.
So a multi-token name (Llama-2 splits ``"34"`` into ``"3", "4"``) keeps all its
pieces, and a lone leading-space token (``"▁"`` before Llama-2 digits,
``" "`` before Llama-3 numbers) is not part of the name, while a merged
``" 34"`` token is.  ``span="last"`` (default) keeps the last token of each
mention -- in a causal model the first position where the whole name has
been read -- and ``span="all"`` every token of it.

**Layout batch.**  The analyses (:mod:`algeval.sim.analyses`) read node
mentions from ``batch.tokens``: position ``t`` mentions vertex ``v`` iff
``tokens[b, t] = vocab.vertex_offset + v``.  :func:`mention_layout` builds
that batch over *graph nodes* (vertex ``v`` = node index ``v`` of the
CogEval graph, whatever number it is called in the example): mention
positions hold their node's vertex token, other text positions a filler
token, padding ``<pad>``; the decision position (scored, ``loss_mask``) is
the prompt's last token (the ``:`` of ``"Answer:"``), where the reply starts;
``meta`` holds the graph facts :func:`~algeval.sim.analyses.graph_info`
reads (``adj``, ``rewards``, ``start``, ``goal``, ``query_kind``,
``max_steps``, ``vertex_labels``).  The model reads the real text ids,
right-padded (causal attention: padding after position ``t`` cannot change
position ``t``), through ``collect(model, layout, tokens=ids)``, which
caches only :data:`~algeval.sim.analyses.common.COLLECT_HOOKS`.

**Analyses** (as ``algeval analyze``, without the causal tests): attention
to the correct path with the regression, representation geometry, order
matching, probes and the verdict, with a random-weights control model of
the same config (``control="random"``).  **Accuracy**: the greedy reply
(``max_new_tokens`` tokens) scored by :func:`~algeval.sim.llm_eval.parse_answer`
(its first number must name a correct first room).

**Output** (``DIR/<graph>/``: ``results.json``, ``arrays.npz``, ``report.md``,
the schema of ``algeval analyze`` plus a ``case_study`` section; ``DIR/summary.json``
and ``DIR/report.md`` over the graphs), every file written atomically.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from algeval.errors import ParameterError, check_int_range
from algeval.sim.analyses.named import to_jsonable
from algeval.sim.llm_eval import CONDITIONS, build_examples
from algeval.sim.tasks.base import PAD, TaskBatch, Vocab
from algeval.sim.tasks.cogeval import GRAPH_NAMES, load_cogeval_graphs

MENTION_RE = re.compile(r"\broom (\d+)\b")
SPANS = ("last", "all")
FILL = "<text>"
LAYOUT_VOCAB_SPECIALS = (PAD, FILL)


# --- node mentions -------------------------------------------------------------------------

def mention_spans(prompt: str, labels) -> list[tuple[int, int, int]]:
    """``[(node, a, b)]``: the character span ``[a, b)`` of every ``"room <label>"`` mention, in text order."""
    node = {int(x): i for i, x in enumerate(labels)}
    out = []
    for m in MENTION_RE.finditer(prompt):
        lab = int(m.group(1))
        if lab not in node:
            raise ValueError(f"prompt names room {lab}, which is not one of the labels {list(labels)}")
        out.append((node[lab], m.start(1), m.end(1)))
    return out


def token_mentions(tokenizer, prompt: str, labels,
                   span: str = "last") -> tuple[list[int], list[tuple[int, tuple[int, ...]]]]:
    """``(ids, [(node, positions)])``: the prompt's token ids and, per mention, its token positions.

    ``tokenizer``: an :class:`algeval.models.llama.Tokenizer` or a ``tokenizers.Tokenizer``.
    Positions follow the module docstring's overlap rule (``span`` "last" or "all").
    """
    if span not in SPANS:
        raise ParameterError("span", span, f"must be one of {', '.join(SPANS)}")
    enc = getattr(tokenizer, "tok", tokenizer).encode(prompt)
    offs = np.asarray(enc.offsets, np.int64).reshape(-1, 2)
    special = np.asarray(enc.special_tokens_mask, bool)
    owner = np.full(len(enc.ids), -1)
    out = []
    for k, (v, a, b) in enumerate(mention_spans(prompt, labels)):
        pos = np.flatnonzero((offs[:, 0] < b) & (offs[:, 1] > a) & ~special)
        if not len(pos):
            raise ValueError(f"no token covers the mention of room {prompt[a:b]!r} at characters {a}:{b}")
        clash = owner[pos][owner[pos] >= 0]
        if len(clash):
            raise ValueError(f"a token of the mention at characters {a}:{b} also belongs to mention {int(clash[0])}")
        owner[pos] = k
        out.append((int(v), tuple(int(p) for p in (pos[-1:] if span == "last" else pos))))
    return [int(i) for i in enc.ids], out


def _value_steps(graph, start: int) -> int:
    qs = [q for q in graph.queries if q.kind == "value-path" and q.start == start]
    return int(qs[0].max_steps or 0) if qs else 0


def mention_layout(graph, examples, tokenized, pad_id: int = 0) -> tuple[TaskBatch, np.ndarray]:
    """``(layout batch, model ids (B, T))`` of one graph's examples; see the module docstring.

    ``tokenized[i] = (ids, mentions)`` of ``examples[i]`` (:func:`token_mentions`).
    """
    B, V = len(examples), graph.n
    T = max(len(ids) for ids, _ in tokenized)
    vocab = Vocab(LAYOUT_VOCAB_SPECIALS, V)
    tokens = np.zeros((B, T), np.int32)
    ids = np.full((B, T), pad_id, np.int32)
    loss = np.zeros((B, T), bool)
    answers = np.full((B, T, max(V - 1, 1)), -1, np.int32)
    meta = {k: np.zeros(B, np.int64) for k in ("start", "goal", "query_kind", "max_steps")}
    meta["adj"] = np.repeat(graph.adj[None], B, 0)
    meta["rewards"] = np.repeat(np.asarray(graph.rewards, np.int64)[None], B, 0)
    meta["vertex_labels"] = np.repeat(np.arange(V)[None], B, 0)
    meta["room_labels"] = np.asarray([ex.labels for ex in examples], np.int64).reshape(B, V)
    meta["graph"] = np.full(B, GRAPH_NAMES.index(graph.name) if graph.name in GRAPH_NAMES else -1)
    for i, (ex, (tid, ments)) in enumerate(zip(examples, tokenized)):
        n = len(tid)
        ids[i, :n] = tid
        tokens[i, :n] = vocab.id(FILL)
        for v, pos in ments:
            tokens[i, list(pos)] = vocab.vertex(v)
        loss[i, n - 1] = True
        first = sorted(ex.labels.index(a) for a in ex.answers)
        answers[i, n - 1, : len(first)] = vocab.vertex(np.asarray(first, np.int64))
        value = ex.condition == "valuePath"
        meta["start"][i] = ex.start
        meta["goal"][i] = -1 if value else ex.goal
        meta["query_kind"][i] = 0 if value else 1
        meta["max_steps"][i] = _value_steps(graph, ex.start) if value else 0
    return TaskBatch("cogeval", tokens, answers, loss, vocab, "causal", meta), ids


# --- memory ------------------------------------------------------------------------------------

def run_memory(cfg, seq_len: int, chunk: int, control: bool) -> dict[str, int]:
    """Estimated peak device bytes of the analyses' forward pass: :func:`~algeval.models.llama.peak_memory`
    with :data:`~algeval.sim.analyses.common.COLLECT_HOOKS`, ``batch = chunk``, plus a second copy of the
    weights when the random-weights control model is alive beside the model."""
    from algeval.models.llama import peak_memory
    from algeval.sim.analyses.common import COLLECT_HOOKS

    m = peak_memory(cfg, seq_len, COLLECT_HOOKS, batch=chunk)
    return {**m, "control_params": m["params"], "total": m["total"] + m["params"]} if control else m


def device_memory() -> int | None:
    """Bytes the default device may allocate (``memory_stats()["bytes_limit"]``), or None (CPU, unknown)."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory stats
        return None
    return int(stats["bytes_limit"]) if "bytes_limit" in stats else None


def fit_chunk(cfg, seq_len: int, chunk: int, control: bool, budget: int | None) -> int:
    """The largest ``c <= chunk`` whose :func:`run_memory` fits ``budget`` bytes (``chunk`` when no budget)."""
    if budget is None:
        return chunk
    for c in range(chunk, 0, -1):
        if run_memory(cfg, seq_len, c, control)["total"] <= budget:
            return c
    need = run_memory(cfg, seq_len, 1, control)["total"]
    raise ParameterError("memory", f"{need / 1e9:.1f} GB", f"one {seq_len}-token prompt needs more than the "
                         f"{budget / 1e9:.1f} GB available (try --control none or a smaller graph)")


# --- the pipeline ------------------------------------------------------------------------------

def case_study(model, tokenizer, graph: str, *, conditions=CONDITIONS, pairs: int = 3, seeds: int = 4,
               seed: int = 0, max_label: int = 99, span: str = "last", control: str | None = "random",
               n_perm: int = 64, chunk: int = 4, max_new_tokens: int = 8, memory_budget: int | None = None) -> dict:
    """Every analysis on one CogEval graph's prompts; a :func:`~algeval.sim.analyses.run_all`-shaped
    result (``accuracy``, ``attention``, ``geometry``, ``orders``, ``probes``, ``verdict``, ``timing``)
    plus ``case_study`` (settings, per-example records, the memory estimate) and ``layout``.

    ``chunk`` prompts go through each forward pass, fewer when :func:`fit_chunk` says the estimate
    would exceed ``memory_budget`` bytes (default: :func:`device_memory`; None on CPU)."""
    from algeval.models.llama import generate_greedy, param_count
    from algeval.sim.analyses import (attention_to_path, collect, graph_info, order_matching, probes,
                                      random_model_like, representation_geometry, verdict)
    from algeval.sim.analyses.common import COLLECT_HOOKS

    timing, t0 = {}, time.perf_counter()

    def lap(name):
        nonlocal t0
        now = time.perf_counter()
        timing[name] = round(now - t0, 3)
        t0 = now

    g = load_cogeval_graphs()[graph]
    examples = build_examples([graph], tuple(conditions), pairs, seeds, seed, max_label)
    if len(examples) < 2:
        raise ParameterError("--seeds", seeds, f"graph {graph} has {len(examples)} example(s) under conditions "
                             f"{', '.join(conditions)}; the analyses need >= 2 (raise --seeds or add conditions)")
    tokenized = [token_mentions(tokenizer, ex.prompt, ex.labels, span) for ex in examples]
    layout, ids = mention_layout(g, examples, tokenized)
    if ids.shape[1] > model.cfg.max_len:
        raise ParameterError("prompt", f"{ids.shape[1]} tokens", f"exceeds the model's max_len={model.cfg.max_len}")
    if control not in ("random", None):
        raise ParameterError("control", control, "must be 'random' or None")
    budget = device_memory() if memory_budget is None else int(memory_budget)
    chunk = fit_chunk(model.cfg, int(ids.shape[1]), min(chunk, len(examples)), control is not None, budget)
    lap("prompts")
    records = []
    for ex, (tid, ments) in zip(examples, tokenized):
        rec = {"condition": ex.condition, "start": ex.start, "goal": ex.goal, "labels": list(ex.labels),
               "answers": list(ex.answers), "tokens": len(tid), "mentions": [[v, list(p)] for v, p in ments]}
        if max_new_tokens > 0:
            reply = tokenizer.decode(generate_greedy(model, tokenizer, tid, max_new_tokens))
            rec["reply"], (rec["parsed"], rec["correct"]) = reply, ex.score(reply)
        records.append(rec)
    lap("generate")
    acts = collect(model, layout, chunk, tokens=ids)
    info = graph_info(layout)
    lap("forward")
    ctrl = None if control is None else collect(random_model_like(model), layout, chunk, tokens=ids)
    lap("control_forward")
    acc = [r["correct"] for r in records if "correct" in r]
    res = {"accuracy": float(np.mean(acc)) if acc else float("nan")}
    res["attention"] = attention_to_path(model, layout, acts=acts, info=info, control=ctrl)
    lap("attention")
    res["geometry"] = representation_geometry(model, layout, acts=acts, info=info, seed=seed)
    lap("geometry")
    res["orders"] = order_matching(model, layout, acts=acts, info=info, control=ctrl, n_perm=n_perm, seed=seed)
    lap("orders")
    res["probes"] = probes(model, layout, acts=acts, info=info, control=ctrl, seed=seed)
    lap("probes")
    res["verdict"] = verdict(res)
    res["timing"] = timing
    T = int(ids.shape[1])
    mem = run_memory(model.cfg, T, chunk, ctrl is not None)
    res["case_study"] = {
        "graph": graph, "conditions": list(conditions), "pairs": pairs, "seeds": seeds, "seed": seed,
        "max_label": max_label, "span": span, "control": control, "max_new_tokens": max_new_tokens,
        "examples": len(examples), "seq_len": T, "hooks": list(COLLECT_HOOKS), "chunk": chunk,
        "accuracy_rule": "greedy reply; its first number must be a correct first room (llm_eval.parse_answer)",
        "memory_estimate_bytes": mem, "memory_budget_bytes": budget, "param_count": param_count(model.cfg),
        "records": records,
    }
    res["layout"] = layout
    return res


# --- writing -----------------------------------------------------------------------------------

def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _header(res: dict, checkpoint: str) -> str:
    cs = res["case_study"]
    m = {k: v / 1e9 for k, v in cs["memory_estimate_bytes"].items()}
    ments = [len(r["mentions"]) for r in cs["records"]]
    return "\n".join([
        f"# Case study: {checkpoint} on CogEval {cs['graph']}", "",
        f"{cs['examples']} prompts ({', '.join(cs['conditions'])}; {cs['seeds']} relabelling(s) per query, "
        f"labels 1..{cs['max_label']}, seed {cs['seed']}); longest prompt {cs['seq_len']} tokens; "
        f"{min(ments)}-{max(ments)} room mentions per prompt, represented by the {cs['span']} token of each.",
        f"Accuracy: {cs['accuracy_rule']}.",
        f"Hooks cached: {', '.join(cs['hooks'])}; estimated peak device memory of this run "
        f"{m['total']:.3g} GB (params {m['params']:.3g}, cache {m['cache']:.3g}, "
        f"{'+ control params, ' if 'control_params' in m else ''}chunk {cs['chunk']}).", "", ""])


def write_case_study(res: dict, out_dir, model_cfg, checkpoint: str = "") -> Path:
    """Write ``results.json``, ``arrays.npz``, ``report.md`` (analyze's layout) to ``out_dir``, atomically."""
    from algeval.sim.analyses.report import report_markdown, results_json

    out = Path(out_dir)
    core = {k: v for k, v in res.items() if k != "layout"}
    js, arrays = results_json(core)
    layout = res["layout"]
    js["batch"] = {"task": "cogeval-llm", "examples": len(layout), "seq_len": int(layout.tokens.shape[1])}
    js["model"] = model_cfg.to_json()
    arrays["layout.tokens"] = layout.tokens
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_bytes(out / "arrays.npz", buf.getvalue())
    _atomic_bytes(out / "results.json", (json.dumps(js, indent=1, allow_nan=False) + "\n").encode())
    md = _header(res, checkpoint) + report_markdown(core, f"{res['case_study']['graph']} (language model)")
    _atomic_bytes(out / "report.md", md.encode())
    return out


# --- command line ------------------------------------------------------------------------------

def add_case_study_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``case-study`` to an argparse ``subparsers``; it calls :func:`case_study_main`."""
    p = subparsers.add_parser(
        "case-study", help="the AlgEval analyses on a Llama checkpoint's CogEval prompts",
        description="Builds CogEval natural-language prompts, maps each room mention's tokens to its graph "
        "node, runs the checkpoint caching only the hooks the analyses read, and writes the analyses "
        "(attention to path, geometry, orders, probes, verdict) per graph to --out.")
    p.add_argument("--model", required=True, metavar="PATH", help="Hugging Face Llama checkpoint directory")
    p.add_argument("--graph", action="append", metavar="NAME",
                   help=f"CogEval graph, repeatable (default: all of {', '.join(GRAPH_NAMES)})")
    p.add_argument("--condition", action="append", metavar="NAME",
                   help=f"repeatable (default: all of {', '.join(CONDITIONS)})")
    p.add_argument("--seeds", type=int, default=4, help="random relabellings of every query (default 4)")
    p.add_argument("--seed", type=int, default=0, help="relabelling, pair and analysis seed (default 0)")
    p.add_argument("--pairs", type=int, default=3, help="start/goal pairs per shortest-path condition (default 3)")
    p.add_argument("--max-label", type=int, default=99, help="room labels are drawn from 1..N (default 99)")
    p.add_argument("--span", default="last", choices=SPANS, help="tokens of a mention kept (default last)")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--control", default="random", choices=("random", "none"),
                   help="random-weights control model of the same config (default random)")
    p.add_argument("--perms", type=int, default=64, help="permutations for order-matching chance (default 64)")
    p.add_argument("--chunk", type=int, default=4,
                   help="prompts per forward pass, lowered to fit --memory-gb (default 4)")
    p.add_argument("--memory-gb", type=float, default=None,
                   help="device memory budget in GB (default: what the GPU reports; none on CPU)")
    p.add_argument("--max-new-tokens", type=int, default=8, help="greedy reply length for accuracy; 0: skip")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=case_study_main)
    return p


def _load(path: str, dtype: str):
    from algeval.models.llama import load_llama

    try:
        return load_llama(path, dtype)
    except ParameterError:
        raise
    except Exception as e:  # a malformed file that the loader's checks do not name
        raise ParameterError("--model", path, f"could not be read ({type(e).__name__}: {e})") from None


def case_study_main(args) -> int:
    """``algeval case-study``; ``args``: the parsed namespace or an argv list.  Returns the exit code."""
    if args is None or isinstance(args, (list, tuple)):
        parser = argparse.ArgumentParser(prog="algeval")
        add_case_study_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["case-study", *(args or [])])
    try:
        graphs = args.graph or list(GRAPH_NAMES)
        for g in graphs:
            if g not in GRAPH_NAMES:
                raise ParameterError("--graph", g, f"unknown graph; known: {', '.join(GRAPH_NAMES)}")
        conds = args.condition or list(CONDITIONS)
        for c in conds:
            if c not in CONDITIONS:
                raise ParameterError("--condition", c, f"unknown condition; known: {', '.join(CONDITIONS)}")
        for name, lo in (("seeds", 1), ("seed", 0), ("pairs", 1), ("perms", 1), ("chunk", 1), ("max_new_tokens", 0)):
            check_int_range("--" + name.replace("_", "-"), getattr(args, name), lo)
        if args.memory_gb is not None and not args.memory_gb > 0:
            raise ParameterError("--memory-gb", args.memory_gb, "must be > 0")
        model, tok = _load(args.model, args.dtype)
        out = Path(args.out)
        summary = {"model": str(args.model), "dtype": args.dtype, "graphs": {}}
        lines = [f"# Case study: {args.model}", "", "| graph | examples | accuracy | verdict |", "|---|---|---|---|"]
        for g in graphs:
            res = case_study(model, tok, g, conditions=conds, pairs=args.pairs, seeds=args.seeds, seed=args.seed,
                             max_label=args.max_label, span=args.span,
                             control=None if args.control == "none" else "random", n_perm=args.perms,
                             chunk=args.chunk, max_new_tokens=args.max_new_tokens,
                             memory_budget=None if args.memory_gb is None else int(args.memory_gb * 1e9))
            write_case_study(res, out / g, model.cfg, str(args.model))
            v = res["verdict"]
            summary["graphs"][g] = {"dir": g, "examples": res["case_study"]["examples"],
                                    "accuracy": res["accuracy"], "verdict": v["verdict"], "best": v["best"]}
            acc = res["accuracy"]
            lines.append(f"| [{g}]({g}/report.md) | {res['case_study']['examples']} | "
                         f"{'-' if acc != acc else f'{acc:.3f}'} | {v['verdict']} |")
            print(f"{g}: verdict: {v['verdict']}")
            for r in v["table"]:
                print("  " + r["line"])
        text = json.dumps(to_jsonable(summary), indent=1, allow_nan=False) + "\n"
        _atomic_bytes(out / "summary.json", text.encode())
        _atomic_bytes(out / "report.md", ("\n".join(lines) + "\n").encode())
    except ParameterError as e:
        sys.stderr.write(f"algeval: error: {e}\n")
        return 2
    print(f"report: {out / 'report.md'}")
    return 0
