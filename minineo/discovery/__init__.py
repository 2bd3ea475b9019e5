"""Circuit discovery in EAP-IG's convention (Hanna et al., COLM 2024): the edge graph, the exact edge-patched forward,
edge scores (EAP, EAP-IG, exact), circuits, their faithfulness, ACDC, and EAP-IG's graph files."""

from minineo.discovery.graph import Graph, edge_count
from minineo.discovery.pairs import Metric, Pairs, logit_diff
from minineo.discovery.circuits import (apply_greedy, apply_nodes, apply_threshold, apply_topn, circuit_edges,
                                       circuit_nodes, prune)
from minineo.discovery.files import from_json, from_pt, load_graph, save_graph, to_json, to_pt

__all__ = ["Graph", "Metric", "Pairs", "edge_count", "logit_diff"]
__all__ += ["from_json", "from_pt", "load_graph", "save_graph", "to_json", "to_pt"]  # files.py
__all__ += ["apply_greedy", "apply_nodes", "apply_threshold", "apply_topn", "circuit_edges", "circuit_nodes", "prune"]  # circuits.py
