"""The training experiments at smoke scale: each runs, writes JSON + report with the expected keys;
targets not reached are reported as such; the numbers are deterministic."""

from __future__ import annotations

import json

import pytest

from algeval.sim.experiments import EXPERIMENTS, SCALES, construction_layers, run_experiment

EXPECTED = {
    "depth-threshold": ["threshold", "criterion", "task", "depths", "lookaheads"],
    "khop-depth": ["task", "depths", "error", "sanford_k4_error", "reached"],
    "sample-efficiency": ["task", "trained", "reached", "best_acc", "best_size", "reference"],
    "lookahead-generalization": ["max_vertices", "n_layers", "table", "note"],
    "inference-compute": ["task", "train_iterations", "trained_lookahead", "test_lookahead", "iterations"],
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    return root, {name: run_experiment(name, "smoke", root / name) for name in EXPERIMENTS}


def _no_timing(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "timing"}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_smoke_writes_json_and_report(smoke, name):
    root, results = smoke
    on_disk = json.loads((root / name / "smoke.json").read_text())
    assert _no_timing(on_disk) == _no_timing(results[name])
    assert on_disk["experiment"] == name and on_disk["scale"] == "smoke"
    assert set(EXPECTED[name]) <= set(on_disk["results"])
    assert on_disk["settings"][name] == json.loads(json.dumps(SCALES["smoke"][name]))
    report = (root / name / "smoke.md").read_text()
    assert report.startswith(f"# {name} (smoke scale)")


def test_not_reached_is_reported(smoke):
    root, results = smoke
    rows = results["depth-threshold"]["results"]["lookaheads"]
    assert set(rows) == {"1", "2", "4", "8"}
    assert rows["1"]["posed"] and rows["1"]["reached"] is False and rows["1"]["threshold_depth"] is None
    assert 0.0 <= rows["1"]["best_acc"] < 0.99
    assert not rows["8"]["posed"] and "not posed" in rows["8"]["note"]
    report = (root / "depth-threshold" / "smoke.md").read_text()
    assert "not reached at this scale" in report and "not posed at this scale" in report
    se = results["sample-efficiency"]["results"]
    assert se["reached"] is False
    assert "not reached at this scale" in (root / "sample-efficiency" / "smoke.md").read_text()


def test_construction_depths_beside_trained(smoke):
    rows = smoke[1]["depth-threshold"]["results"]["lookaheads"]
    want = {1: (3, 4), 2: (4, 4), 4: (5, 6), 8: (6, 10)}  # ceil(log2 D) + 3, max(D, 2) + 2
    for D, (pm, bfs) in want.items():
        assert construction_layers(D) == {"path-merging": pm, "bfs": bfs}
        assert rows[str(D)]["construction_layers"] == {"path-merging": pm, "bfs": bfs}


def test_reference_curves_and_khop_quote(smoke):
    root, results = smoke
    ref = results["sample-efficiency"]["results"]["reference"]
    cov = ref["coupon"]["coverage"]
    assert all(0 <= a <= b <= 1 for a, b in zip(cov, cov[1:]))
    assert ref["occam"]["parameters_nonzero"] > 0 and ref["occam"]["examples_for_99"] > 0
    assert results["khop-depth"]["results"]["sanford_k4_error"] == {"2": 0.42, "3": 0.15, "4": 0.015}
    assert "Sanford" in (root / "khop-depth" / "smoke.md").read_text()
    it = results["inference-compute"]["results"]["iterations"]
    assert {k: v["construction_reach"] for k, v in it.items()} == {"1": 2, "2": 4}


def test_deterministic(smoke, tmp_path):
    again = run_experiment("depth-threshold", "smoke", tmp_path)
    assert _no_timing(again) == _no_timing(smoke[1]["depth-threshold"])


def test_cli(tmp_path, capsys):
    from algeval.sim.cli import main

    assert main(["experiment", "nope", "--scale", "smoke"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert main(["experiment", "khop-depth", "--scale", "tiny"]) == 2
    assert main(["experiment", "khop-depth", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "smoke.json").is_file() and (tmp_path / "smoke.md").is_file()
