"""Where a jitted training step spends its time on the CPU: an op breakdown from ``jax.profiler``.

:func:`profile_step` runs the trainer's step (``algeval.sim.bench``'s ``jax``
implementation) under ``jax.profiler``, reads back the XLA CPU runtime's
per-thunk events (one per kernel: a fusion, a dot, a copy, ...) and sums
their wall time per kernel and per **category**, the category read off the
compiled HLO: the ops inside each kernel's fused computation.  In order of
precedence:

* ``matmul`` -- contains a ``dot`` or ``convolution`` (XLA CPU hands these to
  its matmul libraries: Eigen, XNNPACK/YNNPACK ``ynn_fusion``, oneDNN);
* ``gather/scatter`` -- embedding lookups and their gradients;
* ``reduce`` -- sums and maxima (norm statistics, softmax, loss, grad norm);
* ``transcendental`` -- ``exp``/``log``/``tanh``/``erf``/``rsqrt`` elementwise;
* ``layout`` -- pure data movement: ``copy``, ``transpose``, ``broadcast``,
  ``concatenate``, ``slice``, ``pad`` and nothing arithmetic;
* ``elementwise`` -- everything else (adds, multiplies, selects: the
  attention mask, AdamW's update).

:func:`profile_torch` does the same for the PyTorch reference with
``torch.profiler``: self CPU time per aten op; its ``matmul`` part is
``mm``, ``addmm``, ``bmm`` and the fused flash-attention kernels (which also
do the softmax and the mask).

Event times are summed over the runtime's threads, so with 2 threads the
total can exceed the step's wall time; ``share`` is each part over that total.
"""

from __future__ import annotations

import collections
import glob
import re
import shutil
import tempfile
import time

__all__ = ["profile_step", "profile_torch", "categorize_hlo", "format_profile", "format_torch_profile"]

_MOVE = {"copy", "transpose", "broadcast", "concatenate", "slice", "dynamic-slice", "pad", "reshape",
         "bitcast", "parameter", "constant", "tuple", "get-tuple-element", "iota", "convert",
         "dynamic-update-slice", "reverse"}
_TRANS = {"exponential", "log", "tanh", "erf", "rsqrt", "sqrt", "logistic", "power", "exponential-minus-one",
          "log-plus-one", "divide"}


def categorize_hlo(hlo_text: str) -> dict[str, str]:
    """``{instruction name: category}`` for every instruction of an HLO module's text (see module docstring)."""
    comps: dict[str, set] = {}
    calls: dict[str, list] = {}
    instr_comp: dict[str, tuple[str, str]] = {}
    current = None
    for line in hlo_text.splitlines():
        head = re.match(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s*(?:\(.*\))?.*\{\s*$", line)
        if head and "=" not in line.split("{")[0]:
            current = head.group(1)
            comps[current], calls[current] = set(), []
            continue
        m = re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][\w\-]*)\(", line)
        if m and current is not None:
            name, op = m.group(1), m.group(2)
            comps[current].add(op)
            called = re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
            calls[current] += called
            instr_comp[name] = (op, called[0] if called else None)

    def ops_of(comp, seen=None):
        seen = seen if seen is not None else set()
        if comp in seen or comp not in comps:
            return set()
        seen.add(comp)
        out = set(comps[comp])
        for c in calls[comp]:
            out |= ops_of(c, seen)
        return out

    out = {}
    for name, (op, called) in instr_comp.items():
        ops = {op} | (ops_of(called) if called else set())
        out[name] = _category(ops)
    return out


def _category(ops: set) -> str:
    if ops & {"dot", "convolution"} or any(o.startswith("__onednn") for o in ops):
        return "matmul"
    if ops & {"gather", "scatter"}:
        return "gather/scatter"
    if ops & {"reduce", "reduce-window", "all-reduce"}:
        return "reduce"
    if ops & _TRANS:
        return "transcendental"
    if ops <= _MOVE | {"fusion"}:
        return "layout"
    return "elementwise"


def profile_step(shape, steps: int = 5, compiler_options: dict | None = None, trace_dir: str | None = None) -> dict:
    """Profile ``steps`` steps of the ``jax`` benchmark step of ``shape``; returns the breakdown.

    The trace is kept in ``trace_dir`` when given (for TensorBoard / xprof), else deleted.

    ``{"steps_per_s", "wall_ms_per_step", "op_ms_per_step", "categories": {cat: ms/step},
    "top": [(kernel, category, ms/step, calls/step), ...]}``.
    """
    import jax

    from algeval.sim.bench import _JaxStep, synthetic_batch

    r = _JaxStep(shape, synthetic_batch(shape), compiler_options=compiler_options)
    r.run(2)
    hlo = r.fn.lower(r.params, r.opt, r.batch).compile().as_text()
    cats = categorize_hlo(hlo)
    keep = trace_dir is not None
    trace_dir = trace_dir or tempfile.mkdtemp(prefix="algeval-prof-")
    jax.profiler.start_trace(trace_dir)
    t = time.perf_counter()
    r.run(steps)
    wall = time.perf_counter() - t
    jax.profiler.stop_trace()
    path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
    pd = jax.profiler.ProfileData.from_file(path)
    if not keep:
        shutil.rmtree(trace_dir, ignore_errors=True)
    per, calls = collections.Counter(), collections.Counter()
    for plane in pd.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA") or "PjRtCpuClient" in line.name:
                continue
            for ev in line.events:
                if ev.name in cats:
                    per[ev.name] += ev.duration_ns
                    calls[ev.name] += 1
    by_cat = collections.Counter()
    for name, ns in per.items():
        by_cat[cats[name]] += ns
    ms = lambda ns: ns / 1e6 / steps  # noqa: E731
    return {"shape": shape.name, "steps": steps, "steps_per_s": steps / wall, "wall_ms_per_step": wall * 1e3 / steps,
            "op_ms_per_step": ms(sum(per.values())),
            "categories": {c: ms(v) for c, v in by_cat.most_common()},
            "top": [(n, cats[n], ms(v), calls[n] / steps) for n, v in per.most_common(15)],
            "kernels_per_step": sum(calls.values()) / steps, "trace": path if keep else None}


def format_profile(p: dict) -> str:
    tot = max(p["op_ms_per_step"], 1e-12)
    lines = [f"{p['shape']}: {p['wall_ms_per_step']:.1f} ms/step wall, {p['op_ms_per_step']:.1f} ms/step in "
             f"{p['kernels_per_step']:.0f} kernel calls (summed over threads)",
             f"  {'category':16s} {'ms/step':>8s} {'share':>6s}"]
    lines += [f"  {c:16s} {v:8.1f} {v / tot:6.1%}" for c, v in p["categories"].items()]
    lines.append(f"  top kernels:")
    lines += [f"    {n:34s} {c:15s} {v:7.1f} ms x{k:.0f}" for n, c, v, k in p["top"]]
    return "\n".join(lines)


_TORCH_MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
                 "aten::_scaled_dot_product_flash_attention_for_cpu",
                 "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def profile_torch(shape, steps: int = 5) -> dict:
    """Profile ``steps`` steps of the ``torch`` benchmark step: self CPU ms/step per aten op."""
    from torch.profiler import ProfilerActivity, profile

    from algeval.sim.bench import _torch_step, synthetic_batch

    r = _torch_step(shape, synthetic_batch(shape), steps + 4)
    r.run(2)
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        r.run(steps)
    wall = time.perf_counter() - t
    ka = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    ms = lambda us: us / 1e3 / steps  # noqa: E731
    return {"shape": shape.name, "steps": steps, "wall_ms_per_step": wall * 1e3 / steps,
            "op_ms_per_step": ms(sum(e.self_cpu_time_total for e in ka)),
            "matmul_ms_per_step": ms(sum(e.self_cpu_time_total for e in ka if e.key in _TORCH_MATMUL)),
            "top": [(e.key, ms(e.self_cpu_time_total), e.count / steps) for e in ka[:15]]}


def format_torch_profile(p: dict) -> str:
    tot = max(p["op_ms_per_step"], 1e-12)
    lines = [f"{p['shape']} (torch): {p['wall_ms_per_step']:.1f} ms/step wall (profiled), "
             f"{p['op_ms_per_step']:.1f} ms/step self CPU, of which matmul + flash attention "
             f"{p['matmul_ms_per_step']:.1f} ({p['matmul_ms_per_step'] / tot:.1%})"]
    lines += [f"    {n[:55]:55s} {v:7.1f} ms x{k:.0f}" for n, v, k in p["top"]]
    return "\n".join(lines)
