"""One minineo discovery method timed on a saved model and given pairs: the minineo side of benchmarks/discovery.py,
the mirror of benchmarks/eap_ig_peer.py (same arguments, same JSON line, same files), run as its own process so the
peak memory is this method's alone:

    python -m benchmarks.discovery_worker FOLDER PAIRS.pt --method eap --out scores.pt

Methods: eap, eap-ig-inputs, clean-corrupted, exact (`attribute`, every edge), evaluate (`evaluate` of each circuit
in --circuits). PAIRS.pt holds unpadded token lists (benchmarks/eap_ig_peer.py's docstring); they are left-padded
here, as minineo pads. Rounds interleave a plain forward (`model(tokens)`, the fast path) of the same clean batch
with the method; the first call's peak extra memory is the process RSS sampled every ms (benchmarks/memory.py).
"""

from __future__ import annotations


import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import torch

import minineo
from benchmarks import description
from minineo.boundary import ScriptParser, run_script
from benchmarks.memory import PeakMemory
from benchmarks.rounds import interleaved_rounds
from minineo.discovery import Graph, Pairs

METHODS = ("eap", "eap-ig-inputs", "clean-corrupted", "exact")


def load_pairs(path: str | Path) -> Pairs:
    """The benchmark's pairs file as minineo's left-padded Pairs (pad id 0 under a zero mask)."""
    data = torch.load(path)
    n_pos = max(len(row) for row in data["clean"])

    def pad(rows: list[list[int]]) -> torch.Tensor:
        out = torch.zeros((len(rows), n_pos), dtype=torch.long)  # (n, pos)
        for i, row in enumerate(rows):
            out[i, n_pos - len(row):] = torch.tensor(row)
        return out

    mask = torch.zeros((len(data["clean"]), n_pos), dtype=torch.long)
    for i, row in enumerate(data["clean"]):
        mask[i, n_pos - len(row):] = 1
    return Pairs(pad(data["clean"]), pad(data["corrupted"]), None if bool(mask.all()) else mask,
                 torch.as_tensor(data["answer"]), torch.as_tensor(data["wrong"]))


@contextmanager
def sampled_receivers(graph: Graph, n: int) -> Iterator[dict]:
    """Within the block, `exact` scores only n of its groups of receivers, evenly spread over its order (so over the
    layers): minineo.discovery.exact.exact_groups is wrapped from the outside, and restored after. Its time over
    every edge is then estimated as the sampled time x (groups / sampled groups). Each group is run as `exact` runs
    all of them, but groups differ in cost (a layer's 3 x n_heads q/k/v receivers, one MLP, the logits), so with
    few groups this is a rough estimate; --exact-receivers 0 times every edge. Yields what the result records."""
    from minineo.discovery import exact

    every = exact.exact_groups
    groups = every(graph)
    picked = torch.linspace(0, len(groups) - 1, min(n, len(groups))).round().long().unique().tolist()
    receivers = sorted(r for i in picked for r in groups[i][-1])
    exact.exact_groups = lambda g: [every(g)[i] for i in picked]
    try:
        yield {"receivers_timed": receivers, "n_edges_timed": sum(graph.senders_before(r) for r in receivers),
               "scale_to_all_edges": len(groups) / len(picked)}
    finally:
        exact.exact_groups = every


def measure(argv: list[str] | None = None) -> dict:
    """Parse the worker's arguments, time the method, save its scores (--out) and return the result line."""
    parser = ScriptParser("benchmarks.discovery_worker", description=description(__doc__))
    parser.add_argument("folder")
    parser.add_argument("pairs")
    parser.add_argument("--method", required=True, choices=[*METHODS, "evaluate"])
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--circuits", help="evaluate: a .pt (n_circuits, n_senders, n_receivers) bool tensor")
    parser.add_argument("--exact-receivers", type=int, default=0,
                        help="exact: time only this many receivers spread over the layers and scale (0: every edge)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = minineo.load(args.folder)
    pairs = load_pairs(args.pairs)
    graph = Graph.from_model(model)
    result: dict = {"method": args.method, "library": "minineo", "n_pairs": len(pairs), "n_pos": pairs.clean.shape[1],
                    "n_edges": graph.n_edges}
    if args.method == "evaluate":
        from minineo.discovery import evaluate

        circuits = torch.load(args.circuits)

        def call():
            values = []
            for circuit in circuits:
                graph.in_graph[:] = circuit
                graph.nodes_in_graph[:] = True
                values.append(evaluate(model, graph, pairs))
            return torch.stack(values)  # (n_circuits, n)
        result["n_circuits"] = len(circuits)
    else:
        from minineo.discovery import attribute

        sample = args.method == "exact" and args.exact_receivers > 0

        def call():
            graph.scores[:] = 0
            with sampled_receivers(graph, args.exact_receivers) if sample else nullcontext() as info:
                result.update(info or {})
                return attribute(model, graph, pairs, method=args.method, ig_steps=args.ig_steps).scores.clone()
        if args.method == "eap-ig-inputs":
            result["ig_steps"] = args.ig_steps

    def forward():
        with torch.inference_mode():
            model(pairs.clean, attention_mask=pairs.attention_mask)

    value, figures = interleaved_rounds(call, forward, args.rounds, PeakMemory("cpu").measure)
    result.update(figures)
    with torch.inference_mode():
        from minineo.discovery import logit_diff

        result["m_clean"] = float(logit_diff(model(pairs.clean, attention_mask=pairs.attention_mask), pairs).mean())
        result["m_corrupted"] = float(logit_diff(model(pairs.corrupted, attention_mask=pairs.attention_mask),
                                                 pairs).mean())
    if args.out:
        torch.save({"values" if args.method == "evaluate" else "scores": value.float(),
                    "receivers": result.get("receivers_timed")}, args.out)
        result["out"] = str(args.out)
    return result


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(measure(argv)), flush=True)


if __name__ == "__main__":
    run_script(main)
