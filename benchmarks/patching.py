"""Activation-patching benchmark: minineo's engine against the brute-force loop over
`model(tokens, patch=...)` and against TransformerLens 3's `transformer_lens.patching` functions,
on a GPT-2-small-shape model (random init), batch 8 x 32 tokens; plus the correlation of attribution
patching with exact patching on the embedded tiny-neo.

    /work/venvs/tl3/bin/python -m benchmarks.patching [--sample 24] [--rounds 1] [--out FILE]

Run it with a Python that has transformer-lens<4 (HookedTransformer) to include TransformerLens; without
it that column is skipped. All variants run interleaved in one process. The brute-force loop and
TransformerLens cost the same full forward pass for every cell, so with `--sample N` they run on N
cells spread over the grid and their time is per cell x the number of cells (the engine always runs
the whole grid; its values are checked against both on the sampled cells).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

import minineo
from minineo.analysis import activation_patching, attribution_patching
from minineo.boundary import ScriptParser, run_script
from benchmarks import description

CASES = [("resid_pre", "pos"), ("attn.z", "head")]


def gpt2_small(folder: Path) -> Path:
    """A randomly initialised GPT-2-small-shape model (12 layers, 768 wide, 50257 vocabulary), saved once."""
    if not (folder / "config.json").exists():
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).eval().save_pretrained(folder)
    return folder


def prompts(batch: int, pos: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random clean tokens; the corrupted copy differs in one token per row, at a random position >= 1
    (as in IOI-style prompt pairs, where one name differs)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (batch, pos), generator=g)
    corrupted = clean.clone()
    where = torch.randint(1, pos, (batch,), generator=g)
    corrupted[torch.arange(batch), where] = (clean[torch.arange(batch), where] + 1) % vocab
    return clean, corrupted


def brute_force_cells(model, corrupted, cache, metric, site, per, cells):
    """metric(model(corrupted, patch={name: value})) for the given (layer, index) cells."""
    out = []
    for layer, index in cells:
        name = f"blocks.{layer}.{site}"

        def patch(value, index=index, name=name):
            value = value.clone()
            if per == "pos":
                value[:, index] = cache[name][:, index]
            else:
                value[:, :, index] = cache[name][:, :, index]
            return value

        out.append(float(metric(model(corrupted, patch={name: patch}))))
    return torch.tensor(out, dtype=torch.float64)


def transformer_lens_model(folder: Path):
    """HookedTransformer with the same weights and no weight processing (its logits are HF's), or None."""
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
        from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    except ImportError:
        return None
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    c = hf.config
    cfg = HookedTransformerConfig(n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
                                  d_mlp=4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new",
                                  normalization_type="LN", eps=c.layer_norm_epsilon, default_prepend_bos=False,
                                  original_architecture="GPT2LMHeadModel")
    tl = HookedTransformer(cfg)
    tl.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False)
    return tl.eval()


def tl_cells(tl, corrupted, metric, clean_tokens, site, per, cells):
    import pandas as pd
    from transformer_lens import patching

    _, tl_cache = tl.run_with_cache(clean_tokens)
    setter, name, axes = ((patching.layer_pos_patch_setter, "resid_pre", ["layer", "pos"]) if per == "pos" else
                          (patching.layer_head_vector_patch_setter, "z", ["layer", "head"]))
    index_df = pd.DataFrame(cells, columns=axes)
    return patching.generic_activation_patch(tl, corrupted, tl_cache, metric, setter, name, index_df=index_df).double()


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def attribution_correlations() -> dict[str, float]:
    """Correlation of attribution with exact patching (effects over the corrupted run) on tiny-neo, IOI prompts."""
    model = minineo.load("tiny-neo")
    clean = model.to_tokens(["When Mary and John went to the store, John gave a drink to ",
                             "When Anna and Paul went to the store, Paul gave a drink to "])
    corrupted = model.to_tokens(["When Mary and John went to the store, Mary gave a drink to ",
                                 "When Anna and Paul went to the store, Anna gave a drink to "])
    answers, wrongs, rows = torch.tensor([ord("M"), ord("A")]), torch.tensor([ord("J"), ord("P")]), torch.arange(2)

    def metric(logits):
        return (logits[rows, -1, answers] - logits[rows, -1, wrongs]).mean()

    _, cache = model.run_with_cache(clean)
    baseline = float(metric(model(corrupted)))
    out = {}
    for site, per in [("resid_pre", "pos"), ("attn.z", "head"), ("attn.z", "head_pos"), ("attn_out", "pos"),
                      ("mlp_out", "pos")]:
        exact = activation_patching(model, corrupted, cache, metric, site, per) - baseline
        approx = attribution_patching(model, corrupted, cache, metric, site, per)
        out[f"{site} per {per}"] = float(torch.corrcoef(torch.stack([exact.flatten(), approx.flatten()]))[0, 1])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = ScriptParser("benchmarks.patching", description=description(__doc__))
    parser.add_argument("--sample", type=int, default=0, help="cells timed for brute force and TL (0: all)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pos", type=int, default=32)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/minineo-bench-gpt2-small"))
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    folder = gpt2_small(args.model_dir)
    model = minineo.load(str(folder))
    tl = transformer_lens_model(folder)
    clean, corrupted = prompts(args.batch, args.pos, model.config.d_vocab)
    answer, wrong = 10, 20

    def metric(logits):
        return (logits[:, -1, answer] - logits[:, -1, wrong]).mean()

    results = {"machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}", "shape": [args.batch, args.pos],
               "cases": {}}
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names=lambda n: n.endswith(("resid_pre", "attn.z")))
        for site, per in CASES:
            n_cells = model.config.n_layers * (args.pos if per == "pos" else model.config.n_heads)
            width = n_cells // model.config.n_layers
            every = [(layer, i) for layer in range(model.config.n_layers) for i in range(width)]
            step = max(1, n_cells // args.sample) if args.sample else 1
            cells = every[::step]
            times: dict[str, list[float]] = {"engine": [], "brute force": []} | ({"TransformerLens": []} if tl else {})
            for round_ in range(args.rounds):
                t, grid = timed(lambda: activation_patching(model, corrupted, cache, metric, site, per))
                times["engine"].append(t)
                t, brute = timed(lambda: brute_force_cells(model, corrupted, cache, metric, site, per, cells))
                times["brute force"].append(t / len(cells) * n_cells)
                engine_cells = torch.tensor([float(grid[c]) for c in cells], dtype=torch.float64)
                scale = max(1.0, float(brute.abs().max()))
                assert float((engine_cells - brute).abs().max()) <= 1e-4 * scale, "engine != brute force"
                if tl:
                    t, tl_values = timed(lambda: tl_cells(tl, corrupted, metric, clean, site, per, cells))
                    times["TransformerLens"].append(t / len(cells) * n_cells)
                    tl_diff = float((engine_cells - tl_values).abs().max())
                print(f"{site} per {per} round {round_}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
                      file=sys.stderr, flush=True)
            median = {k: statistics.median(v) for k, v in times.items()}
            case = {"cells": n_cells, "cells_timed_for_baselines": len(cells), "seconds": median,
                    "speedup_vs_brute_force": median["brute force"] / median["engine"]}
            if tl:
                case["speedup_vs_transformer_lens"] = median["TransformerLens"] / median["engine"]
                case["max_abs_diff_vs_transformer_lens"] = tl_diff
            results["cases"][f"{site} per {per}"] = case
            print(f"{site} per {per}: {json.dumps(case)}", flush=True)
    results["attribution_vs_exact_correlation_tiny_neo"] = attribution_correlations()
    print(json.dumps(results["attribution_vs_exact_correlation_tiny_neo"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    run_script(main)
