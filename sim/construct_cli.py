"""CLI commands of the construction stack: ``build``, ``show``, ``prove``.

    algeval build NAME [--max-len T] [--vocab a,b,c] --out DIR [--force]
    algeval show DIR
    algeval prove NAME [--max-len T] [--vocab ...] | --all   [--dtype float32|float64|both] [--samples N]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from algeval.errors import ParameterError


def _vocab(text: str | None):
    if text is None:
        return None
    items = tuple(x for x in text.split(",") if x)
    if not items:
        raise ParameterError("--vocab", text, "must list tokens separated by commas, e.g. a,b,c")
    return items


def compact(labels) -> str:
    """``["tokens:a", "tokens:b", "one"]`` -> ``"tokens:{a,b}, one"`` (labels grouped by variable)."""
    groups: dict[str, list[str]] = {}
    for lab in labels:
        var, _, val = lab.partition(":")
        groups.setdefault(var, [])
        if val:
            groups[var].append(val)
    parts = []
    for var, vals in groups.items():
        if not vals:
            parts.append(var)
        elif len(vals) > 6:
            parts.append(f"{var}:{{{vals[0]},{vals[1]},..,{vals[-1]}}} ({len(vals)})")
        else:
            parts.append(f"{var}:{{{','.join(vals)}}}")
    return ", ".join(parts)


SEARCH = ("path-merging", "bfs", "path-merging-looped", "shortest-path")
DFS_COT = ("dfs-cot",)


def cmd_build_dfs(args) -> int:
    from algeval.models.io import save_model
    from algeval.proofs.dfs_claims import DFSClaim, build

    claim = DFSClaim(args.max_vertices, "sampled", args.directed)
    model, meta, _ = build(claim)
    out = save_model(model, args.out, meta=meta, overwrite=args.force)
    cfg = model.cfg
    print(f"built dfs-cot for dfs-trace (n={claim.max_vertices}, {claim.kind}): {cfg.n_layers} layers, "
          f"{cfg.n_heads} heads, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, max_len {cfg.max_len} -> {out}")
    return 0


def _prove_dfs(claims, args) -> int:
    """Certify DFS chain-of-thought claims, print one line each; returns the number that failed."""
    from algeval.proofs.certify import write_certificate
    from algeval.proofs.dfs_claims import DEFAULT_SAMPLES, certify_dfs

    failed = 0
    for claim in claims:
        samples = min(args.samples, DEFAULT_SAMPLES) if args.all else args.samples
        dt = "float32" if args.dtype == "both" else args.dtype
        cert = certify_dfs(claim, samples=samples, seed=args.seed, dtype=dt)
        path = write_certificate(cert, args.out)
        g = cert["greedy_generation"]
        print(f"{'PASS' if cert['passed'] else 'FAIL'} {claim.name:<40s} {cert['checked']:>8d} graphs "
              f"({cert['graphs_per_second']:,.0f}/s)  greedy {g['equal_to_reference']}/{g['checked']}  "
              f"min margin {cert['min_decoding_margin']:.3g}  -> {path}")
        if not cert["passed"]:
            failed += 1
            print(f"  first counterexample: {cert['first_counterexample']}  resources: {cert['resources']}")
    return failed


def _search_task(args):
    from algeval.sim.tasks import get_task

    opts = dict(max_vertices=args.max_vertices, distribution=args.distribution, max_out_degree=args.max_out_degree)
    if args.max_lookahead is not None:
        opts["max_lookahead"] = args.max_lookahead
    return get_task("search", **opts)


def cmd_build_search(args) -> int:
    from algeval.models.constructions.search import bfs_search, path_merging_search, shortest_path_next_hop, to_model
    from algeval.models.io import save_model
    from algeval.sim.tasks import get_task

    if args.name == "shortest-path":
        task = get_task("shortest-path", max_vertices=args.max_vertices)
        craft = shortest_path_next_hop(task, args.max_lookahead)
    elif args.name == "bfs":
        task = _search_task(args)
        craft = bfs_search(task)
    else:
        task = _search_task(args)
        looped = args.name == "path-merging-looped"
        craft = path_merging_search(task, loop=looped, iterations=args.iterations if looped else None)
    model, meta = to_model(craft)
    meta = dict(meta, task=task.name, task_options=dict(task.config))
    out = save_model(model, args.out, meta=meta, overwrite=args.force)
    cfg = model.cfg
    print(f"built {args.name} for {task.name} ({', '.join(f'{k}={v}' for k, v in task.config.items() if v is not None)}): "
          f"{cfg.n_unrolled()} layers, {cfg.n_heads} heads, d_model {cfg.d_model}, "
          f"d_mlp {cfg.d_mlp}, max_len {cfg.max_len} -> {out}")
    return 0


KHOP = ("k-hop",)


def cmd_build_khop(args) -> int:
    from algeval.models.constructions.khop import khop_induction
    from algeval.models.io import save_model
    from algeval.sim.tasks import get_task

    task = get_task("k-hop-induction", alphabet=args.alphabet, seq_len=args.seq_len, k=args.hops)
    model, meta = khop_induction(task).to_transformer()
    out = save_model(model, args.out, meta=meta, overwrite=args.force)
    cfg = model.cfg
    print(f"built k-hop for k-hop-induction (k={task.k}, alphabet={task.m}, seq_len={task.max_len}): "
          f"{cfg.n_layers} layers (bound floor(log2 k)+2 = {meta['depth_bound']}), {cfg.n_heads} head, "
          f"d_model {cfg.d_model}, d_mlp {cfg.d_mlp} -> {out}")
    return 0


def _prove_khop(claims, args) -> int:
    """Certify k-hop claims, print one line each; returns the number that failed."""
    from algeval.proofs.certify import write_certificate
    from algeval.proofs.khop_claims import certify_khop

    failed = 0
    for claim in claims:
        for dt in (("float32", "float64") if args.dtype == "both" else (args.dtype,)):
            cert = certify_khop(claim, samples=args.samples, seed=args.seed, dtype=dt)
            path = write_certificate(cert, args.out)
            print(f"{'PASS' if cert['passed'] else 'FAIL'} {claim.name:<30s} {dt:<8s} {cert['checked']:>8d} sequences "
                  f"({cert['inputs_per_second']:,.0f}/s)  depth {cert['depth']['built']} (bound "
                  f"{cert['depth']['bound']})  min margin {cert['min_decoding_margin']:.3g}  -> {path}")
            if not cert["passed"]:
                failed += 1
                print(f"  first counterexample: {cert['first_counterexample']}  resources: {cert['resources']}")
    return failed


def _khop_args(p) -> None:
    g = p.add_argument_group("k-hop construction")
    g.add_argument("--hops", type=int, default=2, help="k-hop: number of hops k (default 2)")
    g.add_argument("--alphabet", type=int, default=4, help="k-hop: alphabet size m (default 4)")
    g.add_argument("--seq-len", type=int, default=32, help="k-hop: sequence length T (default 32)")


VALUE_PATH = ("value-path",)


def _value_path_claim(args):
    from algeval.proofs.value_path_claims import ValuePathClaim

    rs = tuple(int(x) for x in args.reward_set.split(",") if x) if args.method == "exhaustive" else ()
    return ValuePathClaim(args.max_vertices, args.max_steps, args.method, args.min_reward, args.max_reward, rs)


def cmd_build_value_path(args) -> int:
    from algeval.models.constructions.value_path import value_path_model
    from algeval.models.io import save_model
    from algeval.sim.tasks import get_task

    from algeval.proofs.value_path_claims import ValuePathClaim

    task = (get_task("cogeval", graph=args.graph, query="value-path") if args.graph else
            ValuePathClaim(args.max_vertices, args.max_steps, "sampled", args.min_reward, args.max_reward).task())
    model, meta = value_path_model(task, args.max_steps if not args.graph else None).to_transformer()
    out = save_model(model, args.out, meta=dict(meta, task_options=dict(task.config)), overwrite=args.force)
    cfg = model.cfg
    print(f"built value-path for cogeval ({args.graph or f'n={args.max_vertices}'}, H={meta['max_steps']}, rewards "
          f"[{task.min_reward}, {task.max_reward}]): {cfg.n_layers} layers, {cfg.n_heads} heads, "
          f"d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, max_len {cfg.max_len} -> {out}")
    return 0


def _prove_value_path(claims, args) -> int:
    """Certify value-path claims, print one line each; returns the number that failed."""
    from algeval.proofs.certify import write_certificate
    from algeval.proofs.value_path_claims import DEFAULT_SAMPLES, certify_value_path

    failed = 0
    for claim in claims:
        dt = "float32" if args.dtype == "both" else args.dtype
        samples = min(args.samples, DEFAULT_SAMPLES) if args.all else args.samples
        cert = certify_value_path(claim, samples=samples, seed=args.seed, dtype=dt)
        path = write_certificate(cert, args.out)
        fc = cert["float_checks"]
        print(f"{'PASS' if cert['passed'] else 'FAIL'} {claim.name:<48s} {cert['checked']:>8d} graphs "
              f"({cert['graphs_per_second']:,.0f}/s)  min margin {cert['min_decoding_margin']:.3g}  "
              f"rounding {fc['rounding']:.2g}  -> {path}")
        if not cert["passed"]:
            failed += 1
            print(f"  first counterexample: {cert['first_counterexample']}  resources: {cert['resources']}  "
                  f"fast vs dense: {fc['fast_vs_dense']}")
    return failed


def _value_path_args(p) -> None:
    g = p.add_argument_group("value-path construction (CogEval valuePath; also uses --max-vertices, --method)")
    g.add_argument("--max-steps", type=int, default=7, help="value-path: step budget H (default 7, CogEval's)")
    g.add_argument("--min-reward", type=int, default=-20, help="value-path: smallest reward (default -20)")
    g.add_argument("--max-reward", type=int, default=60, help="value-path: largest reward (default 60)")
    g.add_argument("--reward-set", default="-2,-1,0,1,2", help="value-path exhaustive: rewards enumerated")
    g.add_argument("--graph", default=None, help="value-path build: for this fixed CogEval graph (24 labels)")


def cmd_build(args) -> int:
    from algeval.models.compiler import compile_program
    from algeval.models.io import save_model
    from algeval.proofs.claims import make_claim

    if args.name in SEARCH:
        return cmd_build_search(args)
    if args.name in DFS_COT:
        return cmd_build_dfs(args)
    if args.name in KHOP:
        return cmd_build_khop(args)
    if args.name in VALUE_PATH:
        return cmd_build_value_path(args)
    claim = make_claim(args.name, args.max_len, _vocab(args.vocab))
    comp = compile_program(claim.make(), claim.max_len)
    meta = dict(comp.meta, program=claim.program, claim=claim.name, sizes=claim.sizes, domain=claim.domain(),
                resources={k: str(v) for k, v in claim.resources.items()})
    out = save_model(comp.model, args.out, meta=meta, overwrite=args.force)
    cfg = comp.model.cfg
    print(f"built {claim.program} (T={claim.max_len}, vocab={','.join(map(str, claim.vocab))}): "
          f"{cfg.n_layers} layers, {cfg.n_heads} heads, d_model {cfg.d_model}, d_mlp {cfg.d_mlp} -> {out}")
    print(f"inspect: algeval show {args.out}    certify: algeval prove {args.name} --max-len {claim.max_len}")
    return 0


def cmd_show(args) -> int:
    from algeval.models.io import load_model

    model, meta = load_model(args.dir)
    cfg = model.cfg
    print(f"{args.dir}: {meta.get('program') or meta.get('construction') or meta.get('kind', 'model')}  "
          f"{cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, d_head {cfg.d_head}, "
          f"d_mlp {cfg.d_mlp}, vocab {cfg.vocab_size}, max_len {cfg.max_len}, attention {cfg.attention}, "
          f"{model.num_params():,} parameters")
    if "residual_labels" not in meta:
        print("(no named residual directions: a trained or imported model)")
        for k in ("task", "task_options", "final_metrics"):
            if k in meta:
                print(f"{k}: {meta[k]}")
        return 0
    print(f"residual ({len(meta['residual_labels'])} named directions): {compact(meta['residual_labels'])}")
    if "domain" in meta:
        print(f"domain: {meta['domain']}")
    for li, layer in enumerate(meta["layers"]):
        print(f"layer {li}")
        for hi, h in enumerate(layer["heads"]):
            print(f"  head {hi}  computes {h['name']:<14s} beta={h['beta']:.3g} (gap {h.get('delta', 0.5):.3g})"
                  f"  query reads {compact(h['reads_q'])}; values {compact(h['reads_v'])} -> writes {compact(h['writes'])}")
        for m in layer["mlps"]:
            print(f"  mlp      computes {m['name']:<14s} {m['hidden']} hidden units  reads {compact(m['reads'])}"
                  f" -> writes {compact(m['writes'])}")
    return 0


def cmd_prove(args) -> int:
    from algeval.proofs.certify import certify, write_certificate
    from algeval.proofs.claims import default_claims, make_claim

    from algeval.proofs.search_claims import SearchClaim, certify_search, default_search_claims

    if args.all == (args.name is not None):
        raise ParameterError("NAME", args.name, "give one program name or --all")
    from algeval.proofs.khop_claims import KHopClaim, default_khop_claims

    khop_claims = default_khop_claims() if args.all else []
    from algeval.proofs.value_path_claims import default_value_path_claims

    vp_claims = default_value_path_claims() if args.all else []
    from algeval.proofs.dfs_claims import DFSClaim, default_dfs_claims

    dfs_claims = default_dfs_claims() if args.all else []
    if args.name in DFS_COT:
        dfs_claims, search_claims, claims = [DFSClaim(args.max_vertices, args.method, args.directed)], [], []
    elif args.name in VALUE_PATH:
        vp_claims, khop_claims, search_claims, claims = [_value_path_claim(args)], [], [], []
    elif args.name in KHOP:
        khop_claims, search_claims, claims = [KHopClaim(args.hops, args.alphabet, args.seq_len, args.method)], [], []
    elif args.name in SEARCH:
        D = args.max_lookahead if args.max_lookahead is not None else args.max_vertices - 1
        it = args.iterations if args.name == "path-merging-looped" else None
        search_claims = [SearchClaim(args.name, args.max_vertices, D, args.method, it)]
        claims = []
    else:
        search_claims = default_search_claims() if args.all else []
        claims = default_claims() if args.all else [make_claim(args.name, args.max_len, _vocab(args.vocab))]
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    failed = 0
    for claim in claims:
        for dt in dtypes:
            cert = certify(claim, dtype=dt, samples=args.samples, seed=args.seed)
            path = write_certificate(cert, args.out)
            status = "PASS" if cert["passed"] else "FAIL"
            print(f"{status} {claim.name:<22s} {dt:<8s} {cert['method']:<10s} {cert['checked']:>8d} inputs "
                  f"({cert['inputs_per_second']:,.0f}/s)  min margin {cert['min_decoding_margin']:.3g}  "
                  f"worst leak {max([h['worst_leak_measured'] for h in cert['heads']] + [0]):.2g}  -> {path}")
            if not cert["passed"]:
                failed += 1
                if cert["first_counterexample"]:
                    print(f"  first counterexample: {cert['first_counterexample']}")
                if not cert["resources_match"]:
                    print(f"  resources: {cert['resources']}")
    for sc in search_claims:
        cert = certify_search(sc, samples=args.samples, seed=args.seed)
        path = write_certificate(cert, args.out)
        status = "PASS" if cert["passed"] else "FAIL"
        print(f"{status} {sc.name:<40s} {cert['checked']:>8d} graphs ({cert['graphs_per_second']:,.0f}/s)  "
              f"min margin {cert['min_decoding_margin']:.3g}  -> {path}")
        if not cert["passed"]:
            failed += 1
            if cert["first_counterexample"]:
                print(f"  first counterexample: {cert['first_counterexample']}")
    failed += _prove_khop(khop_claims, args)
    failed += _prove_value_path(vp_claims, args)
    failed += _prove_dfs(dfs_claims, args)
    return 1 if failed else 0


def _search_args(p) -> None:
    g = p.add_argument_group("search constructions (path-merging, bfs, path-merging-looped)")
    g.add_argument("--max-vertices", type=int, default=8, help="vertices per graph, at most (default 8)")
    g.add_argument("--max-lookahead", type=int, default=None, help="largest lookahead D (default: the most allowed)")
    g.add_argument("--iterations", type=int, default=2, help="path-merging-looped: merge iterations r (default 2)")


def add_parsers(sub) -> None:
    from algeval.proofs.claims import MAKERS

    names = ", ".join(sorted(MAKERS) + list(SEARCH) + list(KHOP) + list(VALUE_PATH) + list(DFS_COT))
    b = sub.add_parser("build", help="compile a program to a model directory",
                       description=f"Compile a library program to exact transformer weights. Programs: {names}.")
    b.add_argument("name")
    b.add_argument("--max-len", type=int, default=8, help="longest input (default 8)")
    b.add_argument("--vocab", default=None, help="comma-separated tokens (default a,b,c,d,e; dyck1: (,))")
    b.add_argument("--out", required=True, help="model directory to write")
    b.add_argument("--force", action="store_true", help="replace an existing directory")
    _search_args(b)
    _khop_args(b)
    _value_path_args(b)
    b.add_argument("--directed", action="store_true", help="dfs-cot: directed graphs")
    b.add_argument("--distribution", default="naive", help="search: the prompt distribution whose length the model "
                   "must hold (default naive)")
    b.add_argument("--max-out-degree", type=int, default=3, help="search, naive: out-degree cap (default 3)")
    b.set_defaults(func=cmd_build)
    s = sub.add_parser("show", help="layer-by-layer summary of a model directory")
    s.add_argument("dir")
    s.set_defaults(func=cmd_show)
    p = sub.add_parser("prove", help="check existence claims, write certificates",
                       description=f"Check a claim exhaustively (<= 1e6 inputs) or by sampling. Programs: {names}.")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true", help="every default claim")
    p.add_argument("--max-len", type=int, default=6)
    p.add_argument("--vocab", default=None)
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="float32")
    p.add_argument("--samples", type=int, default=100_000, help="inputs for a sampled check (default 1e5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="proofs/certificates", help="certificate folder")
    _search_args(p)
    _khop_args(p)
    _value_path_args(p)
    p.add_argument("--directed", action="store_true", help="dfs-cot: directed graphs")
    p.add_argument("--method", choices=("exhaustive", "sampled"), default="sampled",
                   help="search constructions: exhaustive (every DAG, n <= 5) or sampled (default)")
    p.set_defaults(func=cmd_prove)
