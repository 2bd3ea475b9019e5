"""Forward-pass benchmarks: minineo (fast, compiled, run_with_cache) against HF transformers (and
TransformerLens when installed), on CPU and on CUDA where present, float32 and bfloat16.

    python -m benchmarks [--quick] [--device cpu|cuda|all] [--out benchmarks/results.json]

It also times greedy generation against HF's `generate` and, where a TransformerLens 3 venv exists
(MININEO_TL3_PYTHON, default /work/venvs/tl3/bin/python), measures TransformerLens 3's run_with_cache
peak memory on the same saved weights in a subprocess (benchmarks/tl3.py).

Every variant is timed in interleaved rounds inside one process (this machine drifts by up to 40%
between processes), and every time is reported as a ratio to HF's fastest attention (sdpa for GPT-2;
GPT-Neo has only eager in HF) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

import minineo
from benchmarks import description
from benchmarks.forward import bench_shape
from benchmarks.generation import bench_generation
from benchmarks.memory_tl3 import bench_tl3
from benchmarks.models import hf_configs, load_hf, save_random_model, transformer_lens_model
from benchmarks.report import print_table
from benchmarks.results import Run
from benchmarks.timing import matmul_peak_gflops
from minineo.boundary import comma_list

SHAPES = [(1, 128), (8, 128), (1, 1024), (4, 512)]
QUICK_SHAPES = [(2, 64)]
GENERATION = [(1, 128, 128), (8, 128, 128)]  # (batch, prompt, new tokens)
QUICK_GENERATION = [(2, 8, 4)]


def bench_device(run: Run, device: str, quick: bool, rounds: int, compile_: bool,
                 shapes: list[tuple[int, int]], models: list[str] | None, generation: list[tuple[int, int, int]],
                 tl3: bool, dtypes: list[torch.dtype] | None = None) -> None:
    dtypes = [torch.float32, torch.bfloat16] if dtypes is None else dtypes
    for dtype in dtypes:
        run.matmul_peak_gflops[f"{device}/{str(dtype)[6:]}"] = matmul_peak_gflops(device, dtype, 512 if quick else 2048)
    with tempfile.TemporaryDirectory() as tmp:
        for name, hf_config in hf_configs(quick).items():
            if models and name not in models:
                continue
            folder = save_random_model(hf_config, Path(tmp) / name)
            hf32 = load_hf(folder, device, torch.float32)["eager"]
            for dtype in dtypes:
                model = minineo.load(folder, device=device, dtype=dtype)
                compiled = minineo.load(folder, device=device, dtype=dtype).compile_fast_path() if compile_ else None
                tl = transformer_lens_model(folder, device, dtype) if dtype == torch.float32 else None
                hf_models = load_hf(folder, device, dtype)
                for shape in shapes:
                    bench_shape(run, name, model, compiled, hf_models, hf32, tl, device, dtype, shape, rounds)
                for shape in generation:
                    bench_generation(run, name, model, hf_models["eager"], device, dtype, shape, max(2, rounds // 2))
                del hf_models, compiled
            if tl3 and shapes:
                bench_tl3(run, name, folder, device, shapes)


def _sizes(parts: int, example: str):
    """A `type=` for a list of shapes: '1x1024,8x128' -> [(1, 1024), (8, 128)] ('none' -> []); anything else (a
    malformed, empty or repeated item) is argparse's error, one line."""

    def shape(item: str) -> tuple[int, ...]:
        numbers = item.replace("+", "x").split("x")
        if len(numbers) != parts or not all(n.isdigit() and int(n) > 0 for n in numbers):
            raise argparse.ArgumentTypeError(f"{item!r} is not a shape like {example} (whole numbers >= 1; 'none': none)")
        return tuple(int(n) for n in numbers)

    shapes = comma_list(convert=shape)

    def parse(text: str) -> list[tuple[int, ...]]:
        return [] if text == "none" else shapes(text)

    parse.comma_list = True
    return parse


def main(argv: list[str] | None = None) -> Run:
    from minineo import report
    from minineo.boundary import ScriptParser
    from minineo.cli.shared import check_device_option

    import transformers  # noqa: F401 (imported first, so that its progress bars can be switched off)

    report.quiet_third_parties()  # HF's "Loading weights" / "Writing model shards" bars stay out of the report

    models_known = tuple(hf_configs(False))
    parser = ScriptParser("benchmarks", description=description(__doc__))
    parser.add_argument("--quick", action="store_true", help="2-layer models, one small shape, few rounds (CI smoke run)")
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (cuda only where present)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--shapes", type=_sizes(2, "8x128"), default=None,
                        help="e.g. 1x1024,8x128 (default: the four standard shapes; 'none')")
    parser.add_argument("--models", type=comma_list(models_known), default=None,
                        help="gpt2-small, gpt-neo-125M, or both (default)")
    parser.add_argument("--dtypes", type=comma_list(("float32", "bfloat16")), default=None,
                        help="float32, bfloat16, or both (default)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--generation", type=_sizes(3, "8x128+128"), default=None,
                        help="generation shapes BATCHxPROMPT+NEW, e.g. 1x128+128,8x128+128 (default those two; 'none')")
    parser.add_argument("--tl3", choices=("auto", "yes", "no"), default="auto",
                        help="TransformerLens 3 run_with_cache memory in a subprocess (auto: not with --quick)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"argument --rounds: must be at least 1 (got {args.rounds})")
    if args.device != "all":
        check_device_option(args.device)  # the CLI's device check: `--device cuda` without CUDA is one error line
    if args.out.is_dir():
        parser.error(f"argument --out: {args.out} is a folder; give the JSON file to write")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    run = Run(machine={"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None})
    rounds = args.rounds or (2 if args.quick else 7)
    shapes = args.shapes if args.shapes is not None else QUICK_SHAPES if args.quick else SHAPES
    models = args.models
    generation = args.generation if args.generation is not None else QUICK_GENERATION if args.quick else GENERATION
    tl3 = args.tl3 == "yes" or (args.tl3 == "auto" and not args.quick)
    for device in devices:
        bench_device(run, device, args.quick, rounds, not args.no_compile and not args.quick, shapes, models,
                     generation, tl3, [getattr(torch, d) for d in args.dtypes] if args.dtypes else None)
    print_table(run)
    args.out.write_text(json.dumps(asdict(run), indent=1))
    print(f"wrote {args.out}")
    return run


if __name__ == "__main__":
    from minineo.boundary import run_script

    run_script(main)
