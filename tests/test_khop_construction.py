"""The k-hop induction construction: agreement with the reference, depth, certificates, CLI."""

import json

import numpy as np
import pytest
import sympy as sp

from algeval.errors import ParameterError
from algeval.models.constructions.khop import NONE_TOKEN, derived_betas, khop_induction, khop_layers
from algeval.proofs.khop_claims import (DEPTH_BOUND, ONE_BITS, KHopClaim, certify_khop, default_khop_claims,
                                        resources_at)
from algeval.proofs.khop_claims import k as K
from algeval.sim.cli import main
from algeval.sim.tasks import get_task
from algeval.theory.khop import khop


def _predict(k, m, T, seqs):
    task = get_task("k-hop-induction", alphabet=m, seq_len=T, k=k)
    model, meta = khop_induction(task).to_transformer()
    pred = np.asarray(model(seqs + meta["vocab"].index("a0"))).argmax(-1)
    return np.array(meta["vocab"], dtype=object)[pred]


@pytest.mark.parametrize("k", [3, 5, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow),
                               pytest.param(4, marks=pytest.mark.slow), pytest.param(8, marks=pytest.mark.slow)])
def test_agrees_with_reference_on_random_sequences(k):
    m, T = 3, 14
    seqs = np.random.default_rng(k).integers(m, size=(300, T))
    got = _predict(k, m, T, seqs)
    want = np.array([[f"a{a}" if a >= 0 else NONE_TOKEN for a in khop(s, k).answer] for s in seqs], dtype=object)
    assert (got == want).all()
    assert (want == NONE_TOKEN).any() and (want != NONE_TOKEN).any()  # both cases exercised


def test_answers_the_tasks_own_batches():
    task = get_task("k-hop-induction", alphabet=3, seq_len=14, k=3, all_positions=True)
    batch = task.sample(300, seed=5)
    model, _ = khop_induction(task).to_transformer()
    pred = np.asarray(model(batch.tokens)).argmax(-1)
    scored = batch.loss_mask
    assert scored.sum() > 2000
    assert (pred[scored] == batch.answers[..., 0][scored]).all()


def test_depth_is_the_sanford_hsu_telgarsky_bound():
    for k in range(1, 40):
        task = get_task("k-hop-induction", alphabet=2, seq_len=max(k, 4), k=k)
        craft = khop_induction(task)
        assert len(craft.layers) == khop_layers(k) == int(np.floor(np.log2(k))) + 2 == int(DEPTH_BOUND.subs(K, k))
        assert all(len(layer.heads) == 1 for layer in craft.layers)
        assert int(ONE_BITS.subs(K, k).doit()) == bin(k).count("1")


def test_resource_formulas_match_the_craft_model():
    for k in (1, 2, 3, 4, 6, 7, 8):
        task = get_task("k-hop-induction", alphabet=3, seq_len=10, k=k)
        craft = khop_induction(task)
        want = resources_at(k, 10, 3)
        assert len(craft.residual) == want["d_model"]
        assert max(sum(len(mm.hidden) for mm in layer.mlps) for layer in craft.layers) == want["d_mlp"]
        assert len(craft.layers) == want["layers"]


def test_exhaustive_certificate_passes_and_low_beta_fails():
    claim = KHopClaim(3, 2, 8, "exhaustive")
    cert = certify_khop(claim)
    assert cert["passed"] and cert["exact_on_domain"] and cert["checked"] == 2 ** 8
    assert cert["resources_match"] and cert["depth"]["above_bound"] == 0
    assert cert["min_decoding_margin"] == pytest.approx(1.0, abs=1e-4)
    for h in cert["heads"]:  # the measured leak stays within the derived bound
        assert h["worst_leak_measured"] <= h["derived_leak_bound"] + 1e-6
    low = certify_khop(claim, beta_scale=0.05)
    assert not low["passed"] and low["failed"] > 0 and low["first_counterexample"] is not None


def test_bad_input_raises_parameter_error():
    with pytest.raises(ParameterError):
        KHopClaim(2, 4, 32, "exhaustive")  # 4^32 sequences: not exhaustive
    with pytest.raises(ParameterError):
        khop_induction(get_task("search", max_vertices=5))
    with pytest.raises(ParameterError):
        khop_induction(get_task("k-hop-induction", alphabet=2, seq_len=6, k=2), beta_scale=0)
    assert {c.k for c in default_khop_claims()} >= {1, 2, 3, 4}
    assert derived_betas(12)["lookup"] == pytest.approx(2 * sp.log(12 * 11).evalf())


def test_cli_build_and_prove(tmp_path, capsys):
    out = tmp_path / "khop"
    code = main(["build", "k-hop", "--hops", "3", "--alphabet", "2", "--seq-len", "8", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "3 layers (bound floor(log2 k)+2 = 3)" in text
    certs = tmp_path / "certs"
    code = main(["prove", "k-hop", "--hops", "3", "--alphabet", "2", "--seq-len", "8", "--method", "exhaustive",
                 "--out", str(certs)])
    text = capsys.readouterr().out
    assert code == 0 and text.startswith("PASS k-hop-k3-m2-T8-exhaustive")
    cert = json.loads((certs / "k-hop-k3-m2-T8-exhaustive.json").read_text())
    assert cert["passed"] and cert["checked"] == 256
    code = main(["prove", "k-hop", "--method", "exhaustive", "--alphabet", "4", "--seq-len", "32"])
    assert code == 2 and "seq_len=32" in capsys.readouterr().err


def test_min_beta_report_rows():
    """The shared min-beta record: one row per claim, the smallest passing factor in (0, 1], and the betas it
    implies equal to that factor times the derived ones."""
    from algeval.proofs.khop_claims import KHopClaim, beta_report

    r = beta_report([KHopClaim(1, 3, 6, "exhaustive")], tol=0.1)
    assert r["claim"] == "k-hop-min-beta-m3-T6" and r["construction"] == "k-hop" and len(r["rows"]) == 1
    row = r["rows"][0]
    s = row["smallest_passing_scale"]
    assert 0 < s < 1 and row["k"] == 1 and row["T"] == 6
    assert row["smallest_passing_beta"] == {k: b * s for k, b in row["derived_beta"].items()}
