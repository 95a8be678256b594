"""Construction stack: compiled models against the interpreter, the craft level, exactness bounds, certificates."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from algeval.errors import ParameterError
from algeval.models.compiler import compile_program
from algeval.models.craft import CraftLayer, CraftModel, HeadSpec, Space, dirs
from algeval.models.io import load_model, save_model
from algeval.proofs.certify import certify, write_certificate
from algeval.proofs.claims import make_claim
from algeval.theory import bounds
from algeval.theory import program as P
from algeval.theory.interpret import interpret
from algeval.theory.programs_library import LIBRARY

VOCAB = ("a", "b", "c", "d")


def random_inputs(vocab, max_len, count, seed, distinct=False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(1, max_len + 1))
        if distinct:
            out.append([vocab[i] for i in rng.permutation(len(vocab))[:min(n, len(vocab))]])
        else:
            out.append([vocab[i] for i in rng.integers(0, len(vocab), n)])
    return out


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_compiled_library_program_matches_interpreter_float32(name):
    claim = make_claim(name, 7, ("(", ")") if name == "dyck1" else VOCAB)
    prog = claim.make()
    comp = compile_program(prog, claim.max_len)
    assert comp.model.cfg.dtype == "float32"
    inputs = random_inputs(claim.vocab, claim.max_len, 300, seed=1, distinct=claim.distinct_tokens)
    outs, margins = comp.run(inputs)
    for x, o in zip(inputs, outs):
        assert o == list(interpret(prog, x).answer), x
    for b, x in enumerate(inputs):
        assert margins[b, 1:len(x) + 1].min() > 0
    # resource formulas of the claim agree with the built model
    cfg = comp.model.cfg
    assert claim.expected_resources() == dict(layers=cfg.n_layers, heads=cfg.n_heads, d_model=cfg.d_model,
                                             d_mlp=cfg.d_mlp)


def test_every_residual_dimension_keeps_its_label(tmp_path):
    claim = make_claim("sort_unique", 5, ("a", "b", "c", "d", "e"))
    prog = claim.make()
    comp = compile_program(prog, 5)
    save_model(comp.model, tmp_path / "m", meta=comp.meta)
    model, meta = load_model(tmp_path / "m")
    labels = meta["residual_labels"]
    assert len(labels) == model.cfg.d_model
    x = ["c", "a", "e", "b"]
    toks = comp.encode_inputs([x])
    _, cache = model.run_with_cache(toks, names_filter="blocks.*.hook_resid_post")
    space = Space(tuple(labels))
    # layer 0 computes target_pos = number of smaller tokens; read it back by name
    names, vals = space.read(cache["blocks.0.hook_resid_post"][0], "target_pos")
    got = [int(names[int(np.argmax(v))].split(":")[1]) for v in vals[1:len(x) + 1]]
    trace = interpret(prog, x)
    assert got == list(trace["target_pos"][0])
    names, vals = space.read(cache["blocks.1.hook_resid_post"][0], "sort")
    assert [names[int(np.argmax(v))].split(":")[1] for v in vals[1:len(x) + 1]] == sorted(x)


def test_hand_written_craft_head_mixes_with_compiled_blocks():
    """A previous-token head written at the craft level, appended to a compiled copy program."""
    T = 5
    comp = compile_program(make_claim("copy", T, VOCAB).make(), T)
    craft = comp.craft
    prev = dirs("prev", VOCAB)
    craft.residual = Space(craft.residual.labels[:-(T + 1)] + prev + craft.residual.labels[-(T + 1):])
    beta = 30.0
    pos = ["pos:BOS"] + [f"indices:{i}" for i in range(T)]
    qk = {(pos[i + 1], pos[i]): beta for i in range(T)}  # position p reads position p-1
    ov = {(f"copy:{v}", f"prev:{v}"): 1.0 for v in VOCAB}
    craft.layers.append(CraftLayer(heads=[HeadSpec("prev", qk, ov, beta)]))
    model, meta = craft.to_transformer()
    x = ["b", "d", "a", "c"]
    toks = comp.encode_inputs([x])
    _, cache = model.run_with_cache(toks, names_filter=f"blocks.{len(craft.layers) - 1}.hook_resid_post")
    resid = cache[f"blocks.{len(craft.layers) - 1}.hook_resid_post"][0]
    names, vals = Space(tuple(meta["residual_labels"])).read(resid, "prev")
    got = [names[int(np.argmax(v))].split(":")[1] for v in vals[2:len(x) + 1]]
    assert got == x[:-1]
    assert np.all(np.abs(vals[2:len(x) + 1].sum(-1) - 1) < 1e-6)


def test_sympy_bound_and_derived_beta():
    assert bounds.check_bound_dominates_exact()
    b = bounds.min_beta(9, 1.0, 0.25, 0.5)
    assert b == pytest.approx(2 * np.log(8 * 4))
    assert bounds.leak_bound(9, b, 0.5) == pytest.approx(0.25)
    # the exact worst-case leak never exceeds the bound
    for T_ in (2, 5, 17):
        for w_ in range(1, T_ + 1):
            exact = float(bounds.LEAK_EXACT.subs({bounds.T: T_, bounds.w: w_, bounds.beta: b, bounds.Delta: 0.5}))
            assert exact <= bounds.leak_bound(T_, b, 0.5) + 1e-15


def test_compiler_uses_the_derived_beta():
    comp = compile_program(make_claim("reverse", 6, VOCAB).make(), 6)
    # reverse aggregates a one-hot (deviation 1) into a clean-up with dead zone 1/4, gap 1/2, 7 keys
    assert comp.betas["reverse"] == pytest.approx(bounds.min_beta(7, 1.0, 0.25, 0.5))
    assert comp.betas["length"] == pytest.approx(bounds.min_beta(7, 1.0, 1 / (4 * 6 * 7), 1.0))


def test_certificate_exhaustive_passes_and_records_everything(tmp_path):
    claim = make_claim("histogram", 4, ("a", "b", "c"))
    cert = certify(claim)
    assert cert["method"] == "exhaustive" and cert["checked"] == 3 + 9 + 27 + 81 == claim.domain_size()
    assert cert["passed"] and cert["exact_on_domain"] and cert["failed"] == 0
    assert cert["min_decoding_margin"] > 0
    for h in cert["heads"]:
        assert h["worst_leak_measured"] <= h["derived_leak_bound"] + 1e-6
    assert cert["resources_match"] and cert["resources"]["d_model"]["formula"] == "2*T + V + 5"
    path = write_certificate(cert, tmp_path)
    assert json.loads(path.read_text())["claim"] == "histogram-T4-V3"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_certificate_sampled_never_claims_exactness():
    claim = make_claim("copy", 5, ("a", "b", "c"))
    cert = certify(claim, samples=200, exhaustive_limit=100)
    assert cert["method"] == "sampled" and cert["checked"] == 200
    assert cert["passed"] and not cert["exact_on_domain"]
    assert "no failure in 200 samples" in cert["statement"]


def test_lowering_beta_below_the_bound_fails_the_certificate():
    claim = make_claim("reverse", 5, ("a", "b", "c"))
    ok = certify(claim)
    assert ok["passed"]
    low = certify(claim, beta_scale=0.15)
    assert not low["passed"] and low["failed"] > 0 and low["first_counterexample"] is not None
    assert not low["exact_on_domain"]


def test_float64_check_passes():
    cert = certify(make_claim("frac_prevs", 4, ("a", "b")), dtype="float64")
    assert cert["passed"] and cert["dtype"] == "float64"


def test_compiler_refusals():
    toks = P.Tokens(P.Categorical(("a", "b")), max_len=4)
    idx = P.Indices(4)
    agg = P.Aggregate(P.Select(idx, idx, P.Predicate.EQ), P.Map(lambda t: float(t == "a"), toks, kind=P.Numerical))
    # a numerical attention output read by a Select is not exact
    bad = P.SelectorWidth(P.Select(P.Map(lambda v: v > 0.5, agg), idx, P.Predicate.EQ))
    compile_program(bad, 4)  # through a threshold MLP: fine
    with pytest.raises(ParameterError, match="max_len"):
        compile_program(agg, 5)
    with pytest.raises(ParameterError, match="max_len"):
        compile_program(agg, 0)
    mixed = P.SequenceMap(lambda a, t: a, agg, toks, kind=P.Numerical)
    with pytest.raises(ParameterError, match="SequenceMap"):
        compile_program(mixed, 4)


def _reach_program(T, rounds):
    """Path merging on a functional graph: token i is the successor of vertex i.

    R_0 = {i, succ(i)};  R_{r+1} = union of R_r[k] over k in R_r[i]  (reach within 2^(r+1) hops);
    the output says whether vertex 0 is reachable from i.
    """
    verts = tuple(range(T))
    toks = P.Tokens(P.Categorical(verts), max_len=T)
    idx = P.Indices(T)
    reach = P.SetUnion(P.SetFromCategorical(idx, verts).named("self_set"),
                       P.SetFromCategorical(toks, verts).named("succ_set")).named("reach0")
    for r in range(rounds):
        sel = P.Select(idx, reach, P.Predicate.MEMBER).named(f"in_reach{r}")
        frac = P.Aggregate(sel, reach).named(f"merge{r}")
        reach = P.Threshold(frac, 0.0).named(f"reach{r + 1}")
    zero = P.Map(lambda i: 0, idx).named("zero")
    return P.Contains(reach, zero).named("reaches0")


@pytest.mark.parametrize("rounds", [1, 2])
def test_set_valued_path_merging_compiles_exactly(rounds):
    T = 6
    prog = _reach_program(T, rounds)
    comp = compile_program(prog, T)
    assert comp.model.cfg.n_layers == rounds + 3  # 2 MLP layers build R_0, one for the answer
    rng = np.random.default_rng(rounds)
    inputs = [list(rng.integers(0, T, T)) for _ in range(300)] + [[1, 2, 3, 4, 5, 0]]
    outs, margins = comp.run(inputs)
    for x, o in zip(inputs, outs):
        tr = interpret(prog, x)
        assert o == list(tr.answer)
        # the reach sets equal the path-merging reference: within 2^(r+1) hops
        from algeval.theory.path_merging import path_merging
        adj = np.zeros((T, T), bool)
        adj[np.arange(T), x] = True
        ref = path_merging(adj)
        want = ref["reach"][min(rounds, len(ref["reach"]) - 1)]
        got = np.array([[u in s for u in range(T)] for s in tr[f"reach{rounds}"][0]]) \
            if tr[f"reach{rounds}"].dtype == object else tr[f"reach{rounds}"][0]
        np.testing.assert_array_equal(got, want)
        # and the answer is "distance(i, 0) <= 2^rounds"
        from algeval.theory.graph import hop_distances
        d = hop_distances(adj)[:, 0]
        assert o == [bool(0 <= d[i] <= 2 ** rounds) for i in range(T)]
    assert margins[:, 1:].min() > 0
