"""Path-patching benchmark: `analysis.path_patching` against the brute-force loop of Wang et al.'s definition
(one full forward pass per sender head, every head's z patched: clean, the sender's corrupted), on a
GPT-2-small-shape model (random init), batch 8 x 32 tokens, all 144 sender heads.

    python -m benchmarks.path_patching [--sample 24] [--rounds 3] [--out FILE]

Receivers: the logits (the target: >= 4x faster than brute force), and, as a second case, the queries of
three layer-9/10 heads (the IOI paper's name movers' positions), whose brute force needs two forward passes
per sender. Rounds are interleaved (engine, then brute force, in each round). With `--sample N` the brute
force runs N sender heads spread over the grid and its time is per sender x 144; the engine always runs the
whole sweep, and its values are checked against the brute force on the sampled heads.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

import minineo
from benchmarks import description
from benchmarks.patching import gpt2_small, prompts
from minineo.analysis import path_patching
from minineo.boundary import ScriptParser, run_script

RECEIVERS = {"logits": "logits", "name-mover queries": [(9, 9, "q"), (9, 6, "q"), (10, 0, "q")]}


def brute_force(model, clean, corrupted, metric, heads, receivers):
    """Wang et al. per sender head, from model(tokens, patch=...) and run_with_cache only."""
    n_layers = model.config.n_layers
    z = [f"blocks.{layer}.attn.z" for layer in range(n_layers)]
    _, clean_cache = model.run_with_cache(clean, names=z)
    _, corrupted_cache = model.run_with_cache(corrupted, names=z)
    out = []
    for sender_layer, sender_head in heads:
        frozen = {name: clean_cache[name] for name in z}
        value = clean_cache[z[sender_layer]].clone()
        value[:, :, sender_head] = corrupted_cache[z[sender_layer]][:, :, sender_head]
        frozen[z[sender_layer]] = value
        if receivers == "logits":
            out.append(float(metric(model(clean, patch=frozen))))
            continue
        names = sorted({f"blocks.{layer}.resid_pre" for layer, _, _ in receivers})
        _, recorded = model.run_with_cache(clean, names=names, patch=frozen)
        by_site: dict[str, list[tuple[int, str]]] = {}
        for layer, head, kind in receivers:
            by_site.setdefault(f"blocks.{layer}.{kind}_input", []).append((head, f"blocks.{layer}.resid_pre"))

        def make(entries):
            def patch(x):
                x = x.clone()
                for head, resid in entries:
                    x[:, :, head] = recorded[resid]
                return x
            return patch

        out.append(float(metric(model(clean, patch={site: make(e) for site, e in by_site.items()}))))
    return torch.tensor(out, dtype=torch.float64)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> None:
    parser = ScriptParser("benchmarks.path_patching", description=description(__doc__))
    parser.add_argument("--sample", type=int, default=24, help="sender heads timed for brute force (0: all 144)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pos", type=int, default=32)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/minineo-bench-gpt2-small"))
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    model = minineo.load(str(gpt2_small(args.model_dir)))
    cfg = model.config
    clean, corrupted = prompts(args.batch, args.pos, cfg.d_vocab)

    def metric(logits):
        return (logits[:, -1, 10] - logits[:, -1, 20]).mean()

    every = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    heads = every[:: max(1, len(every) // args.sample)] if args.sample else every
    results = {"machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}",
               "shape": [args.batch, args.pos], "cases": {}}
    with torch.no_grad():
        for label, receivers in RECEIVERS.items():
            times: dict[str, list[float]] = {"path_patching": [], "brute force": []}
            for round_ in range(args.rounds):
                t, grid = timed(lambda: path_patching(model, clean, corrupted, metric, "heads", receivers))
                times["path_patching"].append(t)
                t, brute = timed(lambda: brute_force(model, clean, corrupted, metric, heads, receivers))
                times["brute force"].append(t / len(heads) * len(every))
                ours = torch.tensor([float(grid[h]) for h in heads], dtype=torch.float64)
                scale = max(1.0, float(brute.abs().max()))
                diff = float((ours - brute).abs().max())
                assert diff <= 1e-5 * scale, f"path patching != brute force ({diff:.3g})"
                print(f"{label} round {round_}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                      file=sys.stderr, flush=True)
            ratios = [b / e for b, e in zip(times["brute force"], times["path_patching"])]
            case = {"senders": len(every), "senders_timed_for_brute_force": len(heads),
                    "median_seconds": {k: statistics.median(v) for k, v in times.items()},
                    "speedup_per_round": ratios, "median_speedup": statistics.median(ratios),
                    "max_abs_diff_vs_brute_force": diff}
            results["cases"][label] = case
            print(f"receivers {label}: {json.dumps(case)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    run_script(main)
