"""Where the figures' inputs come from, and how a missing one is (re)made.

:class:`Inputs` hands each figure function its data and makes what is missing, at one scale:

* **experiments** -- ``ROOT/<experiment>/<scale>.json`` from
  :func:`algeval.sim.experiments.run_experiment` (run when the file is absent);
* **certificates** -- every ``proofs/certificates/*.json`` present at call time (never a fixed list);
* **analyses** -- ``ROOT/case-study/<scale>/<model>/`` written by
  :func:`algeval.sim.analyses.analyze` on models the driver builds or trains
  (:data:`CASE`): the path-merging and BFS constructions and a trained model on
  ``search``, and -- when ``algeval.models.constructions.value_path`` can be
  imported -- the value-path construction and a trained model on ``cogeval``.  The
  ``search`` models get every analysis but the causal tests; the ``cogeval`` ones only
  attention and representation geometry (all that figures 2 and 3 read: the value-path
  construction grows as ``n^2`` in width, so probes on it would dominate the run; the
  cogeval graphs are kept small, ``n <= 9`` at the ``cpu`` scale).  After the analysis the directory keeps ``results.json``, ``report.md`` and a
  reduced ``arrays.npz`` (only the arrays the figures read: PCA points, goal-competitor
  distances, consecutive-layer cosines; float32) plus ``roles.npz`` (each vertex's role:
  decision vertex, correct path, competing branch, target), so the committed inputs stay small.

``ROOT`` is ``results/`` for the ``cpu`` and ``full`` scales (committed inputs); for
``smoke`` it is ``OUT/inputs`` beside the figures, so a smoke run never overwrites a
committed result.  Models are built and trained under ``runs/figures/<scale>/`` (``OUT/inputs/runs``
for smoke) and are not needed once their analysis exists.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from algeval.errors import ParameterError

from algeval.figures.make import REPO, SCALES  # noqa: E402

# Case-study settings per scale: the task, the trained model, and the analysis batch.
CASE = {
    "smoke": dict(search=dict(max_vertices=5, distribution="balanced"),
                  cogeval=dict(family="two-branch", query="value-path", max_vertices=7, num_labels=7),
                  train=dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, steps=30, batch_size=16,
                             lr=3e-3, eval_every=30, eval_count=32),
                  count=120, count_light=60, n_perm=8),
    "cpu": dict(search=dict(max_vertices=8, distribution="balanced"),
                cogeval=dict(family="two-branch", query="value-path", max_vertices=9, num_labels=9),
                train=dict(n_layers=5, d_model=64, n_heads=2, d_head=32, d_mlp=128, steps=1000, batch_size=64,
                           lr=1e-3, eval_every=500, eval_count=512),
                count=800, count_light=400, n_perm=32),
    "full": dict(search=dict(max_vertices=16, distribution="balanced"),
                 cogeval=dict(family="two-branch", query="value-path"),
                 train=dict(n_layers=8, d_model=256, n_heads=4, d_head=64, d_mlp=1024, steps=50_000,
                            batch_size=256, lr=3e-4, eval_every=5000, eval_count=4096),
                 count=4000, count_light=2000, n_perm=64),
}
KEEP_ARRAYS = ("geometry.pca", "geometry.pca_nodes", "geometry.goal_competitor_rel", "geometry.consecutive_cosine")
ROLES = ("other", "decision", "correct path", "competing", "target")  # codes 0..4 of roles.npz


def value_path_construction():
    """The value-path construction's builder ``task -> CraftModel`` if its module exists, else ``None``."""
    try:
        from algeval.models.constructions import value_path as vp
    except ImportError:
        return None
    for name in ("value_path_cogeval", "value_path_construction", "value_path_model", "build", "value_path"):
        fn = getattr(vp, name, None)
        if callable(fn):
            return fn
    return None


def _atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


class Inputs:
    """Loads (and, when missing, makes) every input of the figures at one scale; see the module docstring."""

    def __init__(self, scale: str, out_dir, *, root=None, llama=None, log=print, rerun: bool = True):
        if scale not in SCALES:
            raise ParameterError("--scale", scale, f"must be one of {', '.join(SCALES)}")
        self.scale, self.out = scale, Path(out_dir)
        if root is None:
            root = self.out / "inputs" if scale == "smoke" else REPO / "results"
        self.root = Path(root)
        self.runs = self.out / "inputs" / "runs" if scale == "smoke" else REPO / "runs" / "figures" / scale
        self.llama = Path(llama) if llama else None
        if self.llama is not None and not (self.llama / "results.json").is_file():
            raise ParameterError("--llama", str(self.llama), "must be a directory holding an `algeval analyze` "
                                 "results.json")
        self.log, self.rerun = log, rerun
        self._cache: dict = {}

    def _missing(self, path: Path, what: str) -> None:
        """Log that ``path`` is missing (or raise when reruns are off)."""
        if not self.rerun:
            raise ParameterError("input", str(path), f"is missing and reruns are off ({what})")
        self.log(f"missing {path}: {what}")

    # -- experiments -----------------------------------------------------------------------
    def experiment(self, name: str) -> dict:
        """``results`` of experiment ``name`` at this scale (runs it when the JSON is missing)."""
        from algeval.sim.experiments import run_experiment

        path = self.root / name / f"{self.scale}.json"
        if not path.is_file():
            self._missing(path, f"running `algeval experiment {name} --scale {self.scale}`")
            run_experiment(name, self.scale, out=path.parent)
        return json.loads(path.read_text())

    # -- certificates ----------------------------------------------------------------------
    def certificates(self) -> list[dict]:
        """Every certificate in ``proofs/certificates/`` now, sorted by file name."""
        from algeval.proofs.certify import CERT_DIR

        out = []
        for p in sorted(Path(CERT_DIR).glob("*.json")):
            try:
                out.append(dict(json.loads(p.read_text()), _file=p.name))
            except json.JSONDecodeError:  # a certificate being written right now
                self.log(f"skipping unreadable certificate {p.name}")
        return out

    # -- analyses --------------------------------------------------------------------------
    def case_study(self) -> tuple[str, dict[str, Path]]:
        """``(task description, {model label: analysis dir})`` for figures 2 and 3.

        The value-path construction and a trained model on ``cogeval`` when the value-path
        module exists, else the path-merging construction and a trained model on ``search``;
        plus the Llama results directory when one was given.
        """
        if "case" not in self._cache:
            build = value_path_construction()
            if build is not None:
                opts = CASE[self.scale]["cogeval"]
                dirs = {"value-path construction": self._analysis("cogeval", opts, "value-path", build, full=False),
                        "trained": self._analysis("cogeval", opts, "trained", full=False)}
                desc = "CogEval valuePath (cogeval, " + ", ".join(f"{k}={v}" for k, v in opts.items()) + ")"
            else:
                dirs = self.search_models(("path-merging", "trained"))
                desc = self._search_desc() + "; value-path construction not available"
            if self.llama is not None:
                dirs[f"Llama ({self.llama.name})"] = self.llama
            self._cache["case"] = (desc, dirs)
        return self._cache["case"]

    def search_models(self, which=("path-merging", "bfs", "trained")) -> dict[str, Path]:
        """``{label: analysis dir}`` on the ``search`` task, for figures 4 and 5 (and 2, 3 as fallback)."""
        from algeval.models.constructions.search import bfs_search, path_merging_search

        opts = CASE[self.scale]["search"]
        makers = {"path-merging": ("path-merging construction", path_merging_search),
                  "bfs": ("BFS construction", bfs_search)}
        out = {}
        for w in which:
            if w == "trained":
                out["trained"] = self._analysis("search", opts, "trained")
            else:
                label, fn = makers[w]
                out[label] = self._analysis("search", opts, w, fn)
        return out

    def _search_desc(self) -> str:
        o = CASE[self.scale]["search"]
        return f"search task, {o['distribution']} graphs, n={o['max_vertices']}"

    def search_desc(self) -> str:
        return self._search_desc()

    def _analysis(self, task_name: str, opts: dict, model: str, build=None, full: bool = True) -> Path:
        """The analysis dir of ``model`` (a construction name or ``trained``) on the task; made if missing.

        ``full``: every analysis but the causal tests (:func:`algeval.sim.analyses.run_all`);
        else only attention and representation geometry (what figures 2 and 3 read), in the
        same ``results.json`` / ``arrays.npz`` format.
        """
        d = self.root / "case-study" / self.scale / f"{task_name}-{model}"
        if (d / "results.json").is_file() and (d / "arrays.npz").is_file() and (d / "roles.npz").is_file():
            return d
        from algeval.sim.tasks import get_task

        task = get_task(task_name, **opts)
        cs = CASE[self.scale]
        if model == "trained":
            self._missing(d, f"training a model on {task_name} ({cs['train']['steps']} steps)")
            m, meta = self._train(task_name, opts)
        else:
            from algeval.models.constructions.search import to_model

            self._missing(d, f"building the {model} construction")
            m, meta = to_model(build(task))
        count = cs["count"] if full else cs["count_light"]
        batch = task.sample(count, 20260)  # the analysis batch: one fixed seed, shared by every model of the task
        self.log(f"analysing {model} on {count} {task_name} examples ({'all but causal' if full else 'attention, geometry'})")
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.", dir=self._mk(d.parent)))
        try:
            title = f"{model} on {task_name} ({self.scale} scale)"
            if full:
                from algeval.sim.analyses import analyze

                analyze(m, batch, tmp, title=title, causal=False, n_perm=cs["n_perm"], seed=0)
            else:
                _light_analysis(m, batch, tmp, title)
            self._reduce(tmp, batch)
            if d.exists():
                shutil.rmtree(d)
            os.replace(tmp, d)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return d

    @staticmethod
    def _mk(p: Path) -> Path:
        p.mkdir(parents=True, exist_ok=True)
        return p

    def _train(self, task_name: str, opts: dict):
        from algeval.models.io import load_model
        from algeval.sim.train import TrainConfig, train

        t = dict(CASE[self.scale]["train"])
        cfg = TrainConfig(task=task_name, task_options=dict(opts), checkpoint_every=t["steps"], keep_checkpoints=1,
                          out_dir=str(self.runs / f"{task_name}-trained"), seed=0, n_seeds=1, **t)
        res = train(cfg, progress=False)
        return load_model(res.model_dirs[0])

    @staticmethod
    def _reduce(d: Path, batch) -> None:
        """Keep only the arrays the figures read (float32) and add ``roles.npz``."""
        from algeval.sim.analyses import graph_info

        with np.load(d / "arrays.npz") as z:
            keep = {k: (z[k].astype(np.float32) if z[k].dtype.kind == "f" else z[k])
                    for k in z.files if k.split(".axes")[0] in KEEP_ARRAYS}
        np.savez_compressed(d / "arrays.npz", **keep)
        info = graph_info(batch)
        role = np.zeros(info.adj.shape[:2], np.int8)
        role[info.competing] = 3
        role[info.correct] = 2
        b = np.arange(info.B)
        role[b, info.decision] = 1
        ok = info.target >= 0
        role[b[ok], info.target[ok]] = 4
        np.savez_compressed(d / "roles.npz", role=role, mentioned=info.mentioned)


def _light_analysis(model, batch, out: Path, title: str) -> None:
    """Attention and geometry only, written like :func:`algeval.sim.analyses.analyze` (results.json, arrays.npz)."""
    from algeval.sim.analyses import attention_to_path, collect, graph_info, representation_geometry, resolve_control
    from algeval.sim.analyses.common import answer_accuracy
    from algeval.sim.analyses.report import _split

    acts, info = collect(model, batch), graph_info(batch)
    ctrl = resolve_control(model, "random", batch, 256)
    res = {"accuracy": float(answer_accuracy(acts, batch).mean()),
           "control_accuracy": float(answer_accuracy(ctrl, batch).mean()),
           "attention": attention_to_path(model, batch, acts=acts, info=info, control=ctrl),
           "geometry": representation_geometry(model, batch, acts=acts, info=info, seed=0)}
    js, arrays = _split(res)
    js["batch"] = {"task": batch.task, "examples": len(batch), "seq_len": int(batch.tokens.shape[1])}
    js["model"] = model.cfg.to_json()
    js["note"] = f"{title}: attention and representation geometry only (algeval.figures.inputs)"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(js, indent=1, allow_nan=False) + "\n")
    np.savez_compressed(out / "arrays.npz", **arrays)


def load_analysis(d) -> dict:
    """``results.json`` of an analysis dir, with ``arrays`` (npz dict, may be empty) and ``roles`` (or None)."""
    d = Path(d)
    res = json.loads((d / "results.json").read_text())
    arrays = {}
    if (d / "arrays.npz").is_file():
        with np.load(d / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
    roles = None
    if (d / "roles.npz").is_file():
        with np.load(d / "roles.npz") as z:
            roles = {k: z[k] for k in z.files}
    res["arrays"], res["roles"] = arrays, roles
    return res
