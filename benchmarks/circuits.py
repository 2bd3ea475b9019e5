"""Circuits on the weights at GPT-2-small shape (12 x 12 heads, d_model 768, d_vocab 50257; random init):
minineo's `processed()`, `composition_scores` and `copying_scores` against TransformerLens 3.9 on the same
weights (`all_composition_scores`, and the Main_Demo's copying score: eigenvalues of W_E @ model.OV @ W_U),
interleaved in one process, with the largest difference between their answers.

    PYTHONPATH=$PWD /work/venvs/tl3/bin/python -m benchmarks.circuits [--rounds 1] [--out FILE]

Run it with a Python that has transformer-lens<4; without it only minineo's times are printed.
TransformerLens is given its own processed model (`HookedTransformer.from_pretrained(<the folder>)`, default
processing), minineo `minineo.load(<the folder>).processed()`; both score processed weights.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import warnings
from pathlib import Path

import torch

import minineo
from benchmarks.models import save_random_model
from benchmarks.timing import matmul_peak_gflops, time_calls
from minineo import analysis
from minineo.boundary import ScriptParser, run_script


def transformer_lens(folder: Path):
    """TransformerLens 3's HookedTransformer.from_pretrained on a local folder (default processing), or None."""
    try:
        import transformer_lens.loading_from_pretrained as loading
        from transformer_lens import HookedTransformer
    except ImportError:
        return None
    official = loading.get_official_model_name  # from_pretrained only takes names from its table: pass a folder through
    loading.get_official_model_name = lambda name: name if (Path(name) / "config.json").is_file() else official(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HookedTransformer.from_pretrained(str(folder), device="cpu").eval()


def tl_copying(tl) -> torch.Tensor:
    eigenvalues = (tl.W_E @ tl.OV @ tl.W_U).eigenvalues
    return eigenvalues.sum(-1).real / eigenvalues.abs().sum(-1)


def main(argv: list[str] | None = None) -> None:
    parser = ScriptParser("benchmarks.circuits")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    from transformers import GPT2Config

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        folder = save_random_model(GPT2Config(), Path(tmp) / "gpt2-small")
        config = json.loads((folder / "config.json").read_text())  # TL 3 reads GPT-2's n_ctx, transformers 5 omits it
        (folder / "config.json").write_text(json.dumps({**config, "n_ctx": config["n_positions"]}))
        raw = minineo.load(folder)
        model = raw.processed()
        tl = transformer_lens(folder)
        calls = {"minineo processed()": raw.processed,
                 "minineo composition_scores k": lambda: analysis.composition_scores(model, "k"),
                 "minineo copying_scores": lambda: analysis.copying_scores(model)}
        if tl is not None:
            calls |= {"TL all_composition_scores K": lambda: tl.all_composition_scores("K"),
                      "TL Main_Demo copying score": lambda: tl_copying(tl)}
        times = time_calls(calls, "cpu", args.rounds)
        result = {"peak_gflops_float32": matmul_peak_gflops("cpu", torch.float32, 2048),
                  "seconds": {name: statistics.median(t) for name, t in times.items()}}
        if tl is not None:
            result["max_abs_diff"] = {
                "composition k": float((analysis.composition_scores(model, "k") - tl.all_composition_scores("K")).abs().max()),
                "copying": float((analysis.copying_scores(model) - tl_copying(tl)).abs().max()),
                "W_Q": float((model.blocks[5].attn.W_Q - tl.W_Q[5]).abs().max()),
                "W_U": float((model.W_U - tl.W_U).abs().max()),
            }
            s = result["seconds"]
            result["tl_over_minineo"] = {
                "composition": s["TL all_composition_scores K"] / s["minineo composition_scores k"],
                "copying": s["TL Main_Demo copying score"] / s["minineo copying_scores"]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    run_script(main)
