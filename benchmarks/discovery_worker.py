"""One minineo discovery method timed on a saved model and given pairs: the minineo side of benchmarks/discovery.py,
the mirror of benchmarks/eap_ig_peer.py (same arguments, same JSON line, same files), run as its own process so the
peak memory is this method's alone:

    python -m benchmarks.discovery_worker FOLDER PAIRS.pt --method eap --out scores.pt

Methods: eap, eap-ig-inputs, clean-corrupted, exact (`attribute`, every edge), evaluate (`evaluate` of each circuit
in --circuits). PAIRS.pt holds unpadded token lists (benchmarks/eap_ig_peer.py's docstring); they are left-padded
here, as minineo pads. Rounds interleave a plain forward (`model(tokens)`, the fast path) of the same clean batch
with the method (benchmarks/rounds.py); an untimed first call gives the peak extra memory, the process RSS sampled
every ms (benchmarks/memory.py).
"""

from __future__ import annotations


import json
import time
from contextlib import contextmanager
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
def sampled_chunks(every: int) -> Iterator[dict]:
    """Within the block, `exact` runs one of every `every` forwards of variants (chunks) of each group of receivers
    (minineo.discovery.exact._chunks wrapped from the outside, restored after), and the yielded dict gets the estimate
    of the run over every edge: the fixed part (the recordings, before the first group) plus, group by group, the
    group's CPU time x (its variants / the variants run). A group's chunks have the same receivers and size (but its
    last), so the same cost: the estimate is stratified by group, with little bias; every=1 runs (and times) all."""
    from minineo.discovery import exact

    chunks = exact._chunks
    marks: list[tuple[float, int, int]] = []  # per group: (CPU time at its start, its variants, variants run)
    skipped: list[tuple[int, int]] = []  # the (receiver, sender) variants not run: their scores stay 0

    def some(*args, **kwargs):
        every_chunk = chunks(*args, **kwargs)
        picked = every_chunk[::every]
        skipped.extend(v for i, chunk in enumerate(every_chunk) if i % every for v in chunk)
        marks.append((time.thread_time(), sum(map(len, every_chunk)), sum(map(len, picked))))
        return picked

    info: dict = {}
    start = time.thread_time()
    exact._chunks = some
    try:
        yield info
    finally:
        end = time.thread_time()
        exact._chunks = chunks
    ends = [t for t, _, _ in marks[1:]] + [end]
    fixed = (marks[0][0] if marks else end) - start
    groups = sum((stop - t) * n / max(run, 1) for (t, n, run), stop in zip(marks, ends))
    info.update({"exact_sample": every, "skipped": skipped, "n_variants": sum(n for _, n, _ in marks),
                 "n_variants_timed": sum(run for _, _, run in marks), "estimated_seconds": fixed + groups})


def measure(argv: list[str] | None = None) -> dict:
    """Parse the worker's arguments, time the method, save its scores (--out) and return the result line."""
    parser = ScriptParser("benchmarks.discovery_worker", description=description(__doc__))
    parser.add_argument("folder")
    parser.add_argument("pairs")
    parser.add_argument("--method", required=True, choices=[*METHODS, "evaluate"])
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--circuits", help="evaluate: a .pt (n_circuits, n_senders, n_receivers) bool tensor")
    parser.add_argument("--exact-sample", type=int, default=1,
                        help="exact: run 1 of every N forwards of variants of each receiver group and scale (1: all)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.exact_sample < 1:
        parser.error(f"--exact-sample {args.exact_sample}: give a count of 1 or more (1 runs every edge)")
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

        sample = args.method == "exact" and args.exact_sample > 1
        ran = torch.ones(graph.n_senders, graph.n_receivers, dtype=torch.bool)

        def call():
            graph.scores[:] = 0
            if not sample:
                return attribute(model, graph, pairs, method=args.method, ig_steps=args.ig_steps).scores.clone()
            with sampled_chunks(args.exact_sample) as info:
                scores = attribute(model, graph, pairs, method="exact").scores.clone()
            ran[:] = True  # the edges scored (the parity compares only those)
            for r, s in info.pop("skipped"):
                ran[s, r] = False
            result.update(info)
            return scores
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
        saved = {"values" if args.method == "evaluate" else "scores": value.float(), "sampled": "exact_sample" in result}
        if "exact_sample" in result:
            saved["ran"] = ran  # (n_senders, n_receivers) bool: the edges exact scored
        torch.save(saved, args.out)
        result["out"] = str(args.out)
    return result


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(measure(argv)), flush=True)


if __name__ == "__main__":
    run_script(main)
