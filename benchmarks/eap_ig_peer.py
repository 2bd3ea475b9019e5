"""EAP-IG itself (hannamw/EAP-IG, "eap" 2.0.0, on TransformerLens 3) timed on a saved HF model and given pairs: the
peer of benchmarks/discovery.py. It does not import minineo; run it with the Python of a scratch venv that has
`transformer-lens<4` and EAP-IG installed (never a project dependency; benchmarks/README.md says how to make one):

    /work/venvs/eapig/bin/python benchmarks/eap_ig_peer.py FOLDER PAIRS.pt --method eap --out scores.pt

PAIRS.pt is a torch.save dict {"clean": [[ids]], "corrupted": [[ids]], "answer": [ids], "wrong": [ids]} (unpadded
token lists, BOS included, a pair's prompts of equal length): the same token ids minineo scores, so EAP-IG's tokenizer
is not used. Methods: eap, eap-ig-inputs, clean-corrupted, exact (EAP-IG's get_scores_exact, one evaluate_graph per
edge, on --exact-sample edges spread over EAP-IG's edge order; 0 = all), evaluate (evaluate_graph of each circuit in
--circuits, a torch.save'd (n_circuits, n_senders, n_receivers) bool tensor).

Prints one JSON line: seconds and a plain TransformerLens forward of the same clean batch, measured interleaved
(round by round), the peak extra memory of the first call (process RSS sampled every ms, benchmarks/memory.py), and
where the scores went. --out gets {"scores": (n_senders, n_receivers) float32} (EAP-IG's `graph.scores`, the same
matrix layout as minineo's Graph), or {"edges": [names], "scores": (n,)} for exact, or {"values": (n_circuits, n)}.

Three things are done from the outside, never by changing EAP-IG's code:
- EAP-IG allocates its score matrices with `torch.zeros(..., device='cuda')`; on a CPU-only torch `torch.zeros` is
  wrapped so that 'cuda' means 'cpu' when CUDA is absent;
- `tokenize_plus` (EAP-IG tokenizes strings, right-padded, BOS prepended) is replaced in `eap.attribute` and
  `eap.evaluate` by one that takes the given token ids (right-padded here, with their attention mask);
- the metric is EAP-IG's logit difference at each prompt's last real position, summed over the batch for the
  attribution methods (EAP-IG divides the summed scores by the number of pairs: a per-pair mean) and per pair for
  evaluate_graph / exact.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from memory import PeakMemory  # noqa: E402
from rounds import interleaved_rounds  # noqa: E402

METHODS = {"eap": "EAP", "eap-ig-inputs": "EAP-IG-inputs", "clean-corrupted": "clean-corrupted", "exact": "exact"}


def cpu_zeros() -> None:
    """EAP-IG's score matrices are created on device='cuda': on a CPU-only torch, make that the CPU."""
    if torch.cuda.is_available():
        return
    zeros = torch.zeros

    def patched(*args, device=None, **kwargs):
        if device is not None and str(device).startswith("cuda"):
            device = "cpu"
        return zeros(*args, device=device, **kwargs)

    torch.zeros = patched


class Batch:
    """Token ids right-padded as EAP-IG pads them, with their mask; `len()` is the number of prompts."""

    def __init__(self, rows: list[list[int]], pad: int = 0):
        n_pos = max(len(r) for r in rows)
        self.tokens = torch.full((len(rows), n_pos), pad, dtype=torch.long)  # (batch, pos)
        self.mask = torch.zeros((len(rows), n_pos), dtype=torch.long)
        for i, row in enumerate(rows):
            self.tokens[i, :len(row)] = torch.tensor(row)
            self.mask[i, :len(row)] = 1

    def __len__(self) -> int:
        return self.tokens.shape[0]


def given_tokens(model, batch: Batch, max_length=None):
    """Replaces EAP-IG's tokenize_plus: (tokens, attention_mask, input_lengths, n_pos) of the given ids."""
    return batch.tokens, batch.mask, batch.mask.sum(1), batch.tokens.shape[1]


def logit_diff(logits, clean_logits, input_lengths, label):
    """Per pair: logit[answer] - logit[wrong] at the last real position (EAP-IG's metric signature)."""
    rows = torch.arange(logits.shape[0])
    last = logits[rows, input_lengths - 1]  # (batch, d_vocab)
    return last[rows, label[:, 0]] - last[rows, label[:, 1]]


def summed(logits, clean_logits, input_lengths, label):
    return logit_diff(logits, clean_logits, input_lengths, label).sum()


def load_model(folder: str):
    from tl3 import load  # TransformerLens 3 on the saved weights, no processing (benchmarks/tl3.py)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load(folder, "cpu")
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the whole first paragraph
    parser.add_argument("folder")
    parser.add_argument("pairs")
    parser.add_argument("--method", required=True, choices=[*METHODS, "evaluate"])
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--exact-sample", type=int, default=64, help="edges scored by exact (0: all)")
    parser.add_argument("--circuits", help="evaluate: a .pt (n_circuits, n_senders, n_receivers) bool tensor")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu_zeros()
    import eap.attribute
    import eap.evaluate
    from eap.graph import Graph

    eap.attribute.tokenize_plus = given_tokens
    eap.evaluate.tokenize_plus = given_tokens
    model = load_model(args.folder)
    data = torch.load(args.pairs)
    clean, corrupted = Batch(data["clean"]), Batch(data["corrupted"])
    label = torch.stack([torch.as_tensor(data["answer"]), torch.as_tensor(data["wrong"])], 1)  # (n, 2)
    loader = [(clean, corrupted, label)]
    graph = Graph.from_model(model)
    result: dict = {"method": args.method, "library": "EAP-IG", "n_pairs": len(clean), "n_pos": clean.tokens.shape[1],
                    "n_edges": len(graph.edges)}
    saved: dict = {}

    if args.method == "evaluate":
        circuits = torch.load(args.circuits)

        def call():
            values = []
            for circuit in circuits:
                graph.in_graph[:] = circuit
                graph.nodes_in_graph[:] = True  # evaluate_graph prunes: nodes without in- or outgoing edges go
                values.append(eap.evaluate.evaluate_graph(model, graph, loader, logit_diff, quiet=True))
            return torch.stack(values)
        result["n_circuits"] = len(circuits)
    elif args.method == "exact":
        every = list(graph.edges.items())
        picked = range(len(every)) if not args.exact_sample or args.exact_sample >= len(every) else \
            torch.linspace(0, len(every) - 1, args.exact_sample).round().long().tolist()
        sample = dict(every[i] for i in picked)  # spread evenly over EAP-IG's edge order
        all_edges = graph.edges

        def call():
            graph.edges = sample  # get_scores_exact loops over graph.edges: give it the sampled ones
            try:
                eap.attribute.attribute(model, graph, loader, logit_diff, "exact", quiet=True)
            finally:
                graph.edges = all_edges
            return torch.tensor([graph.edges[name].score for name in sample])
        result["n_edges_timed"] = len(sample)
        saved["edges"] = list(sample)
    else:
        def call():
            graph.scores[:] = 0
            eap.attribute.attribute(model, graph, loader, summed, METHODS[args.method], ig_steps=args.ig_steps,
                                    quiet=True)
            return graph.scores.clone()
        if args.method == "eap-ig-inputs":
            result["ig_steps"] = args.ig_steps

    def forward():
        with torch.inference_mode():
            model(clean.tokens, attention_mask=clean.mask)

    value, figures = interleaved_rounds(call, forward, args.rounds, PeakMemory("cpu").measure)
    result.update(figures)
    with torch.inference_mode():
        clean_logits = model(clean.tokens, attention_mask=clean.mask)
        corrupted_logits = model(corrupted.tokens, attention_mask=corrupted.mask)
    lengths = clean.mask.sum(1)
    result["m_clean"] = float(logit_diff(clean_logits, None, lengths, label).mean())
    result["m_corrupted"] = float(logit_diff(corrupted_logits, None, lengths, label).mean())
    if args.out:
        saved["values" if args.method == "evaluate" else "scores"] = value.float()
        torch.save(saved, args.out)
        result["out"] = str(args.out)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
