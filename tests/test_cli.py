"""The command line, as a user meets it: outputs, exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from algeval.sim.cli import main

ALGEVAL = [sys.executable, "-m", "algeval.sim.cli"]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_and_task_list(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "tasks" in capsys.readouterr().out
    code, out, _ = run(capsys, "tasks", "list")
    assert code == 0
    for name in ("search", "shortest-path", "reachability", "cogeval", "induction", "k-hop-induction", "dfs-trace"):
        assert name in out
    assert "--max-vertices" in out


def test_tasks_sample_prints_readable_examples(capsys):
    code, out, _ = run(capsys, "tasks", "sample", "search", "--max-vertices", "8", "--count", "2", "--seed", "3")
    assert code == 0
    assert out.count("## example") == 2 and "answer set: {" in out and "tokens: E " in out
    code2, out2, _ = run(capsys, "tasks", "sample", "search", "--max-vertices=8", "--count", "2", "--seed", "3")
    assert out2 == out  # deterministic, and --opt=value works too


@pytest.mark.parametrize("argv,needle", [
    (["tasks", "sample", "nope"], "TASK='nope'"),
    (["tasks", "sample", "search", "--bogus", "3"], "--bogus='3'"),
    (["tasks", "sample", "search", "--max-vertices", "x"], "--max-vertices='x'"),
    (["tasks", "sample", "search", "--max-vertices", "8", "--max-lookahead", "5"], "max_lookahead=5"),
    (["tasks", "sample", "search", "--count", "0"], "--count=0"),
    (["build", "nope", "--out", "/tmp/never"], "program='nope'"),
    (["show", "/nonexistent/dir"], "is not a directory"),
    (["prove"], "NAME"),
    (["pipeline", "--scale", "huge"], "--scale='huge'"),
    (["pipeline", "--samples", "0"], "--samples=0"),
])
def test_user_mistakes_give_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_code_and_no_traceback():
    p = subprocess.run(ALGEVAL + ["tasks", "sample", "search", "--max-vertices", "2"], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("algeval: error: max_vertices=2")
    p = subprocess.run(ALGEVAL + ["tasks", "frobnicate"], capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_build_show_prove(tmp_path, capsys):
    out_dir = tmp_path / "hist"
    code, out, _ = run(capsys, "build", "histogram", "--max-len", "4", "--vocab", "a,b", "--out", str(out_dir))
    assert code == 0 and "1 layers" in out
    assert json.loads((out_dir / "model.json").read_text())["meta"]["program"] == "histogram"
    code, out, err = run(capsys, "build", "histogram", "--out", str(out_dir))
    assert code == 2 and "already exists" in err
    code, out, _ = run(capsys, "show", str(out_dir))
    assert code == 0 and "computes hist" in out and "tokens:{BOS,a,b}" in out
    certs = tmp_path / "certs"
    code, out, _ = run(capsys, "prove", "histogram", "--max-len", "3", "--vocab", "a,b", "--out", str(certs),
                       "--dtype", "both")
    assert code == 0 and out.count("PASS") == 2
    assert sorted(p.name for p in certs.iterdir()) == ["histogram-T3-V2-float64.json", "histogram-T3-V2.json"]


def test_demo_runs_every_task(capsys):
    code, out, _ = run(capsys, "demo", "--count", "16")
    assert code == 0
    for name in ("search", "cogeval", "dfs-trace", "k-hop-inductio"):
        assert name in out
    assert "reference path-merging" in out
