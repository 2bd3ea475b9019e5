"""Circuit discovery in EAP-IG's convention (Hanna et al., COLM 2024): the edge graph, the exact edge-patched forward,
edge scores (EAP, EAP-IG, exact), circuits, their faithfulness, ACDC, and EAP-IG's graph files."""

from minineo.discovery.attribution import attribute
from minineo.discovery.graph import Graph, edge_count
from minineo.discovery.pairs import Metric, Pairs, logit_diff
from minineo.discovery.patched import evaluate

__all__ = ["Graph", "Metric", "Pairs", "attribute", "edge_count", "evaluate", "logit_diff"]
