"""Tests of ``algeval.figures``: every figure draws a non-empty PNG and PDF, deterministically.

Default tests render every figure from the committed ``cpu``-scale inputs (``results/``, with
reruns off, so a missing input fails instead of training) and check byte-identical output on a
second render; the ``slow`` test runs the whole ``smoke`` pipeline (experiments, constructions,
a tiny training run, analyses) in a temporary folder, so it never touches committed results.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from algeval.errors import ParameterError
from algeval.figures.make import make_figures
from algeval.figures.registry import FIGURES, file_name


def _check_files(written, names):
    assert sorted(written) == sorted(names)
    for n in names:
        png, pdf = written[n]
        assert png.name == file_name(n) + ".png" and pdf.name == file_name(n) + ".pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2_000


@pytest.fixture(scope="module")
def cpu_figures(tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    return out, make_figures("cpu", None, out, rerun=False, log=lambda *a: None)


def test_every_figure_renders_from_committed_inputs(cpu_figures):
    out, written = cpu_figures
    _check_files(written, list(FIGURES))
    for spec in FIGURES.values():  # every spec resolves to a function
        assert callable(spec.draw)


def test_same_inputs_give_byte_identical_files(cpu_figures, tmp_path):
    out, written = cpu_figures
    names = ["case-representations", "sample-efficiency", "certificates"]
    again = make_figures("cpu", names, tmp_path, rerun=False, log=lambda *a: None)
    for n in names:
        for a, b in zip(written[n], again[n]):
            assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between two renders"
        png = again[n][0].read_bytes()
        assert b"Software" not in png and b"matplotlib" not in png.lower()
        pdf = again[n][1].read_bytes()
        assert b"CreationDate" not in pdf and b"Producer" not in pdf


def test_overview_is_drawn_from_the_registries():
    from algeval.figures.overview import registry
    from algeval.sim.tasks import TASKS
    from algeval.sim.analyses.verdict import ALGORITHMS

    reg = registry()
    assert reg["tasks"] == sorted(TASKS)
    assert "path_merging" in reg["references"] and "bfs" in reg["references"]
    assert "reach_steps_needed" not in reg["references"]  # returns an int, not a Trace
    assert "attention_to_path" in reg["analyses"] and "collect" not in reg["analyses"]
    assert reg["verdict candidates"] == list(ALGORITHMS)


def test_certificate_table_reads_whatever_is_there():
    from algeval.figures.certificates import rows

    certs = [dict(claim="a-T6", dtype="float32", passed=True), dict(claim="a-T6-float64", dtype="float64",
                                                                    passed=False), dict(claim="b", passed=True),
             dict(claim="a-min-beta", dtype="float32", rows=[])]  # a report without pass/fail: left out
    r = rows(certs)
    assert [x["name"] for x in r] == ["a-T6", "b"]
    assert r[0]["results"] == {"float32": "pass", "float64": "FAIL"}


def test_bad_names_raise_one_line():
    with pytest.raises(ParameterError, match="--only"):
        make_figures("cpu", "no-such-figure")
    with pytest.raises(ParameterError, match="--scale"):
        make_figures("huge")


def test_cli_bad_only_exits_2_with_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "algeval.sim.cli", "figures", "--only", "no-such-figure",
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("algeval: error: --only='no-such-figure'"), p.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_smoke_scale_end_to_end(tmp_path):
    """The whole smoke pipeline (reruns every input into tmp), then a byte-identical second render."""
    first = make_figures("smoke", None, tmp_path / "a", log=lambda *a: None)
    _check_files(first, list(FIGURES))
    assert (tmp_path / "a" / "inputs" / "depth-threshold" / "smoke.json").is_file()
    second = make_figures("smoke", None, tmp_path / "a", rerun=False, log=lambda *a: None)
    for n in FIGURES:
        for a, b in zip(first[n], second[n]):
            assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between two renders"
