"""Graph-search constructions: correct next vertex, reach variables equal the references, certificates."""

import numpy as np
import pytest

from algeval.models.constructions.search import bfs_search, path_merging_search, to_model
from algeval.proofs.search_claims import RESOURCES, SearchClaim, all_dags, certify_search
from algeval.sim.tasks import answer_set_correct, get_task
from algeval.theory.graph import hop_distances
from algeval.theory.path_merging import path_merging


@pytest.fixture(scope="module")
def naive8():
    return get_task("search", max_vertices=6, distribution="naive", path_prefix="random")


@pytest.fixture(scope="module")
def built(naive8):
    pm, _ = to_model(path_merging_search(naive8))
    bfs, _ = to_model(bfs_search(naive8))
    return {"pm": pm, "bfs": bfs}


@pytest.mark.parametrize("which", ["pm", "bfs"])
def test_constructions_predict_a_correct_next_vertex(built, naive8, which):
    model = built[which]
    for task in (naive8, get_task("search", max_vertices=6, path_prefix="random")):
        b = task.sample(300, seed=7)
        tokens = np.pad(b.tokens, ((0, 0), (model.cfg.max_len - b.tokens.shape[1], 0)))
        answers = np.pad(b.answers, ((0, 0), (model.cfg.max_len - b.tokens.shape[1], 0), (0, 0)), constant_values=-1)
        mask = np.pad(b.loss_mask, ((0, 0), (model.cfg.max_len - b.tokens.shape[1], 0)))
        _, exact = answer_set_correct(model(tokens), answers, mask)
        assert bool(np.all(exact))


def test_depths_follow_the_claims(built):
    assert built["pm"].cfg.n_layers == 3 + 3  # ceil(log2 5) + 3
    assert built["bfs"].cfg.n_layers == 5 + 2


def _read(model, meta, tokens, layer, prefix, shape):
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_post")
    labels = meta["residual_labels"]
    idx = [i for i, lab in enumerate(labels) if lab.startswith(prefix + ":")]
    return np.asarray(cache[f"blocks.{layer}.hook_resid_post"])[:, -1][:, idx].reshape((-1,) + shape)


def test_path_merging_reach_equals_reference_trace_layer_by_layer(naive8):
    model, meta = to_model(path_merging_search(naive8))
    b = naive8.sample(200, seed=3)
    for k in range(meta["merge_layers"] + 1):
        reach = _read(model, meta, b.tokens, 1 + k, "reach", (6, 6)) >= 0.5
        for i in range(len(b)):
            ref = path_merging(b.meta["adj"][i])["reach"]
            np.testing.assert_array_equal(reach[i], ref[min(k, len(ref) - 1)], err_msg=f"layer {1 + k} example {i}")


def test_bfs_reach_grows_one_hop_per_layer(naive8):
    model, meta = to_model(bfs_search(naive8))
    b = naive8.sample(200, seed=4)
    dist = hop_distances(b.meta["adj"])  # (B, u, v)
    to_goal = dist[np.arange(len(b)), :, b.meta["goal"]]
    for j in range(meta["bfs_layers"] + 1):
        got = _read(model, meta, b.tokens, 2 + j, "reachg", (6,)) >= 0.5
        np.testing.assert_array_equal(got, (to_goal >= 0) & (to_goal <= j + 1))


def test_looped_path_merging_buys_lookahead_with_iterations():
    task = get_task("search", max_vertices=9, distribution="star", star_arms=2, max_lookahead=4)
    model, meta = to_model(path_merging_search(task, loop=True, iterations=1))
    b = task.sample(300, seed=1)
    la = b.meta["lookahead"]
    acc = {}
    for r in (1, 2, 3):
        _, exact = answer_set_correct(model(b.tokens, loop_iterations=r), b.answers, b.loss_mask)
        acc[r] = np.asarray(exact)
        assert acc[r][la <= 2 ** r].all()
    # with one merge the construction sees 2 hops past the child: lookahead 4 is beyond it
    assert not acc[1][la == 4].all()


def test_exhaustive_certificate_small_and_resources():
    cert = certify_search(SearchClaim("path-merging", 4, 3, "exhaustive"))
    assert cert["passed"] and cert["exact_on_domain"] and cert["failed"] == 0
    assert cert["edge_order_shuffle"]["same_prediction"] == cert["edge_order_shuffle"]["checked"] > 0
    assert cert["checked"] > 1000 and cert["min_decoding_margin"] >= 1.0 - 1e-5
    assert cert["resources_match"], cert["resources"]
    assert len(all_dags(4)) == 543  # OEIS A003024


def test_bfs_exhaustive_and_sampled_certificates():
    assert certify_search(SearchClaim("bfs", 4, 3, "exhaustive"))["passed"]
    cert = certify_search(SearchClaim("bfs", 5, 4, "sampled"), samples=300)
    assert cert["passed"] and not cert["exact_on_domain"] and "no failure in 300 samples" in cert["statement"]


def test_too_cold_attention_fails_the_certificate():
    cert = certify_search(SearchClaim("path-merging", 5, 4, "sampled"), samples=300, beta_scale=0.05)
    assert not cert["passed"] and cert["first_counterexample"] is not None


def test_resource_formulas_are_sympy_in_n_and_D():
    import sympy as sp
    n, D = sp.symbols("n D", positive=True, integer=True)
    assert sp.simplify(RESOURCES["path-merging"]["layers"].subs(D, 8) - 6) == 0
    assert RESOURCES["bfs"]["layers"].subs(D, 8) == 10


def test_shortest_path_next_hop_on_every_family():
    from algeval.models.constructions.search import shortest_path_next_hop
    from algeval.proofs.search_claims import FAMILIES

    cert = certify_search(SearchClaim("shortest-path", 6, 5, "sampled"), samples=len(FAMILIES) * 60)
    assert cert["passed"] and cert["resources_match"], cert["resources"]
    # directed graphs too
    task = get_task("shortest-path", max_vertices=6, directed=True, family="er", edge_prob=0.4)
    model, _ = to_model(shortest_path_next_hop(task))
    b = task.sample(300, seed=2)
    assert bool(np.all(answer_set_correct(model(b.tokens), b.answers, b.loss_mask)[1]))


def test_beta_bisection_finds_the_threshold_and_refuses_a_failing_claim():
    from algeval.errors import ParameterError
    from algeval.proofs.certify import smallest_passing_scale

    s = smallest_passing_scale(lambda x: x >= 0.3, "toy", tol=0.01)
    assert 0.3 <= s <= 0.31
    with pytest.raises(ParameterError, match="fails even at the derived beta"):
        smallest_passing_scale(lambda x: False, "toy")
