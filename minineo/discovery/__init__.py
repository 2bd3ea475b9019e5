"""Circuit discovery in EAP-IG's convention (Hanna et al., COLM 2024): the edge graph, the exact edge-patched forward,
edge scores (EAP, EAP-IG, exact), circuits, their faithfulness, ACDC, and EAP-IG's graph files."""

from minineo.discovery.attribution import attribute
from minineo.discovery.graph import Graph, edge_count
from minineo.discovery.pairs import Metric, Pairs, logit_diff
from minineo.discovery.patched import evaluate
from minineo.discovery.circuits import (apply_greedy, apply_nodes, apply_threshold, apply_topn, circuit_edges,
                                       circuit_nodes, prune)
from minineo.discovery.files import from_json, from_pt, load_graph, save_graph, to_json, to_pt
from minineo.discovery.faithfulness import FaithfulnessCurve, MIBScores, faithfulness, faithfulness_curve, mib_scores
from minineo.discovery.acdc import acdc, kl_metric
from minineo.discovery.tasks import induction_pairs, ioi_pairs, task_pairs

__all__ = ["Graph", "Metric", "Pairs", "attribute", "edge_count", "evaluate", "logit_diff"]
__all__ += ["from_json", "from_pt", "load_graph", "save_graph", "to_json", "to_pt"]  # files.py
__all__ += ["apply_greedy", "apply_nodes", "apply_threshold", "apply_topn", "circuit_edges", "circuit_nodes", "prune"]  # circuits.py
__all__ += ["FaithfulnessCurve", "MIBScores", "faithfulness", "faithfulness_curve", "mib_scores"]  # faithfulness.py
__all__ += ["acdc", "kl_metric", "induction_pairs", "ioi_pairs", "task_pairs"]  # acdc.py, tasks.py
