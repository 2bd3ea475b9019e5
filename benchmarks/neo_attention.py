"""What GPT-Neo's eager attention costs the fast path: minineo's `model(tokens)` with HF eager's attention operations
(Config.eager_attention, the default, which makes the fast path HF float32 bit for bit) against the same forward with
SDPA's fused kernel (eager_attention=False), and HF eager itself, on a GPT-Neo-125M-shaped random model.

    python -m benchmarks.neo_attention [--shapes 1x128,1x1024,8x128] [--rounds 5] [--threads 1]

Rounds interleave the three forwards; the figures are medians of this thread's CPU seconds (a shared machine's wall
clock measures its load), and the ratios are against the eager-attention fast path.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

import minineo
from benchmarks import description
from benchmarks.models import hf_configs, save_random_model
from minineo.boundary import ScriptParser, comma_list, run_script


def shape(text: str) -> tuple[int, int]:
    import argparse

    batch, _, pos = text.partition("x")
    if not (batch.isdigit() and pos.isdigit() and int(batch) > 0 and 0 < int(pos) <= 2048):
        raise argparse.ArgumentTypeError(f"{text!r} is not BATCHxPOS with batch >= 1 and 1 <= pos <= 2048 (GPT-Neo's "
                                         "context), e.g. 1x1024")
    return int(batch), int(pos)


def main(argv: list[str] | None = None) -> None:
    parser = ScriptParser("benchmarks.neo_attention", description=description(__doc__))
    parser.add_argument("--shapes", type=comma_list(None, shape), default=[(1, 128), (1, 1024), (8, 128)],
                        help="comma-separated BATCHxPOS token shapes (default 1x128,1x1024,8x128)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (the median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be 1 or more")
    torch.set_num_threads(args.threads)
    import transformers  # noqa: F401 (imported first, so that its progress bars can be switched off)
    from transformers import AutoModelForCausalLM

    from minineo import report

    report.quiet_third_parties()
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random_model(hf_configs(False)["gpt-neo-125M"], Path(tmp) / "gpt-neo-125M")
        model = minineo.load(folder)
        hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    eager = model.blocks[0].attn.config
    fused = dataclasses.replace(eager, eager_attention=False)

    def run_with(config):
        def run(tokens):
            for block in model.blocks:
                block.attn.config = config
            model(tokens)
        return run

    variants = {"eager attention (default)": run_with(eager), "SDPA fused kernel": run_with(fused),
                "HF eager": lambda tokens: hf(tokens).logits}
    print(f"| shape | {' | '.join(f'{name} s' for name in variants)} | fused / eager | HF / eager |")
    print("|---|" + "---|" * (len(variants) + 2))
    for batch, pos in args.shapes:
        tokens = torch.randint(0, model.config.d_vocab, (batch, pos), generator=torch.Generator().manual_seed(0))
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        with torch.inference_mode():
            for name, run in variants.items():  # warm-up
                run(tokens)
            for _ in range(args.rounds):
                for name, run in variants.items():
                    start = time.thread_time()
                    run(tokens)
                    seconds[name].append(time.thread_time() - start)
        med = {name: statistics.median(values) for name, values in seconds.items()}
        base = med["eager attention (default)"]
        print(f"| {batch}x{pos} | {' | '.join(f'{m:.3f}' for m in med.values())} | "
              f"{med['SDPA fused kernel'] / base:.3f} | {med['HF eager'] / base:.2f} |")
    for block in model.blocks:
        block.attn.config = eager


if __name__ == "__main__":
    run_script(main)
