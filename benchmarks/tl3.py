"""TransformerLens 3's HookedTransformer.run_with_cache on a saved HF model: peak extra memory and time.

Run with the Python of a venv that has `transformer-lens<4` (it does not import minineo):

    /work/venvs/tl3/bin/python benchmarks/tl3.py FOLDER --shapes 1x1024,8x128 --device cpu

Weights are loaded as they are (no LayerNorm folding, no centring), so it computes what HF computes.
Prints one JSON line per shape: {"shape": [b, p], "peak_extra_mb": ..., "median_ms": ..., "max_abs_dlogit": ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from memory import PeakMemory  # noqa: E402


def load(folder: str, device: str):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import convert_hf_model_config
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_neo_weights
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with tempfile.TemporaryDirectory() as tmp:  # TL3 reads GPT-2's `n_ctx`, which transformers 5 no longer writes
        config = json.loads((Path(folder) / "config.json").read_text())
        config.setdefault("n_ctx", config.get("n_positions", config.get("max_position_embeddings")))
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        cfg = HookedTransformerConfig(**{**convert_hf_model_config(tmp), "tokenizer_name": None}, device=device)
    convert = convert_neo_weights if cfg.original_architecture == "GPTNeoForCausalLM" else convert_gpt2_weights
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    return model.eval(), hf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--shapes", default="1x1024,8x128")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, hf = load(args.folder, args.device)
    for shape in args.shapes.split(","):
        batch, pos = (int(n) for n in shape.split("x"))
        tokens = torch.randint(0, model.cfg.d_vocab, (batch, pos), device=args.device)
        with torch.inference_mode():
            call = lambda: model.run_with_cache(tokens)  # noqa: E731
            logits, _ = call()
            dlogit = float((logits.float() - hf(tokens.cpu()).logits.to(logits.device)).abs().max())
            del logits, _
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            peak = PeakMemory(args.device).measure(call)
        print(json.dumps({"shape": [batch, pos], "peak_extra_mb": peak, "median_ms": 1e3 * statistics.median(times),
                          "max_abs_dlogit": dlogit}), flush=True)


if __name__ == "__main__":
    main()
