"""The IOI and induction circuits of GPT-2 and GPT-Neo models side by side: ACDC, EAP and EAP-IG at equal size.

    python -m minineo.discovery.compare [--models tiny-neo tiny-gpt2]     (also: minineo discover-compare)

For each model and task (16 pairs, seed 0; `minineo.discovery.tasks`): m(full) and m(empty); ACDC's circuit (default
threshold) and its edges after pruning, N; the faithfulness of ACDC's circuit and of EAP's and EAP-IG-inputs' (5
steps) top-N circuits (by |score|, pruned), so the methods are compared at equal size; the heads in EAP-IG's circuit;
and the share of that circuit's edge score (sum of |EAP-IG score| over its edges) on edges into or out of an MLP (to test
whether GPT-Neo does IOI more through its MLPs than GPT-2 does). Prints a Markdown table; docs/discovery.md quotes it and
tests/test_discovery_compare.py checks the quote is this output. One CPU thread, so the numbers are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minineo.discovery import circuits
from minineo.discovery.acdc import acdc
from minineo.discovery.attribution import attribute
from minineo.discovery.faithfulness import empty_metric, faithfulness, full_metric
from minineo.discovery.graph import Graph
from minineo.discovery.tasks import induction_pairs, ioi_pairs

MODELS = ("tiny-neo", "tiny-gpt2")
N_PAIRS = 16


@dataclass
class Row:
    model: str
    task: str
    full: float
    empty: float
    n_edges: int
    acdc: float
    eap: float
    eap_ig: float
    heads: list[str]
    mlp_share: float


def mlp_share(graph: Graph) -> float:
    """The share of the circuit's sum of |score| on edges whose sender or receiver is an MLP."""
    edges = graph.in_graph & graph.real_edges
    mlp = torch.zeros_like(edges)
    for layer in range(graph.n_layers):
        mlp[graph.sender_index(layer), :] = True
        mlp[:, graph.receiver_index(layer)] = True
    total = float(graph.scores.abs()[edges].sum())
    return float(graph.scores.abs()[edges & mlp].sum()) / total if total > 0 else 0.0


def compare_row(model, name: str, task: str) -> Row:
    pairs = ioi_pairs(model, N_PAIRS) if task == "ioi" else induction_pairs(model, N_PAIRS)
    graph = Graph.from_model(model)
    full, empty = full_metric(model, pairs), empty_metric(model, graph, pairs)
    found = acdc(model, pairs)
    n = found.n_edges_in_graph
    values = {"acdc": faithfulness(model, found, pairs, full=full, empty=empty)}
    scored = {}
    for method in ("eap", "eap-ig-inputs"):
        g = attribute(model, Graph.from_model(model), pairs, method=method)
        circuits.apply_topn(g, n, absolute=True, prune=True)
        values[method] = faithfulness(model, g, pairs, full=full, empty=empty)
        scored[method] = g
    ig = scored["eap-ig-inputs"]
    heads = [node for node in circuits.circuit_nodes(ig) if node.startswith("a")]
    return Row(name, task, full, empty, n, values["acdc"], values["eap"], values["eap-ig-inputs"], heads,
               mlp_share(ig))


@torch.no_grad()
def rows(models: list[str]) -> list[Row]:
    import minineo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = []
        for name in models:
            model = minineo.load(name)
            for task in ("ioi", "induction"):
                with torch.enable_grad():  # the gradient methods need it
                    out.append(compare_row(model, name, task))
        return out
    finally:
        torch.set_num_threads(threads)


def table(models: list[str] = list(MODELS)) -> str:
    """The Markdown table of `rows(models)`."""
    lines = ["| model | task | m(full) | m(empty) | ACDC edges | f ACDC | f EAP | f EAP-IG | heads in (EAP-IG) "
             "| MLP share (EAP-IG) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows(models):
        lines.append(f"| `{r.model}` | {r.task} | {r.full:+.2f} | {r.empty:+.2f} | {r.n_edges} | {r.acdc:.2f} | "
                     f"{r.eap:.2f} | {r.eap_ig:.2f} | {' '.join(r.heads) or '-'} | {r.mlp_share:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from minineo.boundary import ScriptParser

    parser = ScriptParser("minineo.discovery.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="zoo names, hub ids or folders")
    print(table(parser.parse_args(argv).models))


if __name__ == "__main__":
    from minineo.boundary import run_script

    run_script(main)
