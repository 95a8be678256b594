"""algeval.sim.analyses: bottom-up tests of candidate algorithms in a transformer (AlgEval).

Every analysis is a function of ``(model, batch)`` returning arrays with
named axes (:class:`Named`); a constructed model and a trained one go through
the same calls.  One forward pass (:func:`collect`) can be shared through the
``acts=`` argument, and a random-weights control through ``control=``.

=================================  =====================================================================
:func:`attention_to_path`          attention from the decision position to correct vs competing path; OLS
:func:`representation_geometry`    node representations per layer, PCA, goal-competitor distance, cosines
:func:`order_matching`             node-change order vs best-matching BFS / DFS / path-merging order (DP)
:func:`probes`                     linear probes of reference-trace variables per layer, with controls
:func:`reach_onsets`               newly-reached probes per distance; onset layers vs BFS / path-merging schedules
:func:`causal_tests`               one-edge corrupted pairs, activation + attribution patching, ablation
:func:`verdict`                    the algorithm-alignment table
:func:`analyze`                    all of the above, written as results.json + arrays.npz + report.md
=================================  =====================================================================
"""

from algeval.sim.analyses.attention import attention_to_path, path_regression
from algeval.sim.analyses.binprobe import layer_probe
from algeval.sim.analyses.causal import (
    ablate_heads,
    activation_patching,
    attribution_patching,
    causal_tests,
    corrupted_pairs,
    head_ablation_sweep,
    logit_diffs,
)
from algeval.sim.analyses.common import Acts, GraphInfo, collect, graph_info, ols, random_model_like, resolve_control
from algeval.sim.analyses.geometry import event_times, representation_geometry
from algeval.sim.analyses.named import Named
from algeval.sim.analyses.orders import best_agreement_counts, order_matching, order_scores, state_graph
from algeval.sim.analyses.onsets import newly_reached_check, planted_onsets, reach_onsets
from algeval.sim.analyses.probes import fit_ridge, hop_labels, probe_accuracy, probes
from algeval.sim.analyses.report import add_analyze_parser, analyze, analyze_main, run_all
from algeval.sim.analyses.verdict import format_table, verdict

__all__ = [
    "Acts", "GraphInfo", "Named",
    "ablate_heads", "activation_patching", "add_analyze_parser", "analyze", "analyze_main",
    "attention_to_path", "attribution_patching", "best_agreement_counts", "causal_tests", "collect",
    "corrupted_pairs", "event_times", "fit_ridge", "format_table", "graph_info", "head_ablation_sweep",
    "hop_labels", "layer_probe", "logit_diffs", "newly_reached_check", "planted_onsets", "reach_onsets", "ols", "order_matching", "order_scores", "path_regression", "probe_accuracy",
    "probes", "random_model_like", "representation_geometry", "resolve_control",
    "run_all", "state_graph", "verdict",
]
