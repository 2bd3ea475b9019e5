"""The prepared device run (benchmarks/device_check.sh calls it): one time-boxed pass that fills the
CUDA-vs-CPU table, built from the same pieces as `python -m benchmarks` (forward.py, generation.py,
timing.py, models.py, patching.py).

    python -m benchmarks.device [--device cuda] [--smoke] [--out DIR] [--budget-s 400]

In order, each part only while the budget lasts (what did not fit is listed as skipped, never guessed):
the matmul peak and copy bandwidth; the forward pass (fast, compiled, run_with_cache against HF's
attention implementations, float32 and bfloat16, peak memory); one GPT-Neo local layer's attention
(compiled block-sparse flex against SDPA with the window mask); greedy generation against HF's
`generate` (eager and compiled: on CUDA the compiled decode step replays a CUDA graph); the patching
engine against its brute-force loop; a profile of one forward; the same forward on the CPU (run second,
after the device's forward; on a CPU-only run, `--smoke` included, the forward part already ran on the CPU, so it
is not measured again: each (model, device, dtype, shape, variant) is measured once per run). A part that raises is recorded under "errors" and the run goes on. Writes
device_run.json and device_run.md into --out. `--smoke` runs every part on tiny shapes (CI: < 1 minute).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch

import minineo
from benchmarks import description
from benchmarks.device_report import write_report
from benchmarks.forward import bench_shape
from benchmarks.generation import bench_generation
from benchmarks.local_attention import bench_local_attention
from benchmarks.models import hf_configs, load_hf, save_random_model, tiny_configs
from benchmarks.patching import brute_force_cells, prompts
from benchmarks.results import Run
from benchmarks.timing import matmul_peak_gflops, memory_bandwidth_gbs

# the shapes (batch, pos); generation (batch, prompt, new tokens); local attention (batch, head, pos, d_head)
FULL = {"forward": {"gpt2-small": [(1, 1024), (8, 128), (32, 1024)], "gpt-neo-125M": [(1, 2048), (8, 2048)]},
        "cpu_forward": {"gpt2-small": [(1, 1024), (8, 128)], "gpt-neo-125M": [(1, 2048)]},
        "generation": [(1, 128, 128), (32, 128, 128)], "attention": [(1, 12, 2048, 64), (8, 12, 2048, 64)],
        "window": 256, "matmul": 8192, "rounds": 5, "patching": (8, 32, 24)}
SMOKE = {"forward": {"gpt2-small": [(1, 32), (2, 16)], "gpt-neo-125M": [(1, 32)]},
         "cpu_forward": {"gpt2-small": [(1, 32)]},
         "generation": [(1, 8, 4)], "attention": [(1, 2, 256, 16)], "window": 32, "matmul": 256, "rounds": 1,
         "patching": (2, 8, 4)}
PACKAGES = ["torch", "triton", "transformers", "safetensors", "tokenizers", "huggingface_hub", "numpy", "typer",
            "rich", "matplotlib", "pytest", "hypothesis", "flash-attn", "datasets"]


class Budget:
    """Seconds left; a part that does not fit is recorded as skipped with the reason."""

    def __init__(self, seconds: float):
        self.end, self.skipped = time.monotonic() + seconds, []

    def allows(self, what: str, needs_s: float) -> bool:
        left = self.end - time.monotonic()
        if left < needs_s:
            self.skipped.append(f"{what}: needs ~{needs_s:.0f} s, {max(0.0, left):.0f} s of the budget left")
            print(f"skipped {self.skipped[-1]}", flush=True)
        return left >= needs_s


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["minineo (imported from)"] = str(Path(minineo.__file__).parent)
    return out


def forward_part(run: Run, plan: dict, device: str, folders: dict, budget: Budget, compile_: bool, smoke: bool,
                 dtypes: list[torch.dtype], rounds: int) -> None:
    for name, shapes in plan.items():
        hf32 = load_hf(folders[name], device, torch.float32)["eager"]
        for dtype in dtypes:
            if not budget.allows(f"forward {name} {device} {str(dtype)[6:]}", 10 if smoke else 45):
                continue
            model = minineo.load(folders[name], device=device, dtype=dtype)
            compiled = (minineo.load(folders[name], device=device, dtype=dtype).compile_fast_path()
                        if compile_ else None)
            hf_models = load_hf(folders[name], device, dtype, flash=device.startswith("cuda") and dtype != torch.float32)
            for shape in shapes:
                bench_shape(run, name, model, compiled, hf_models, hf32, None, device, dtype, shape, rounds)
            del model, compiled, hf_models
        del hf32


def generation_part(run: Run, plan: list, device: str, folders: dict, budget: Budget, compile_: bool,
                    rounds: int) -> None:
    for name, folder in folders.items():
        if not budget.allows(f"generation {name}", 40 if compile_ else 5):
            continue
        hf = load_hf(folder, device, torch.float32)["eager"]
        model = minineo.load(folder, device=device)
        compiled = minineo.load(folder, device=device, compile=True) if compile_ else None
        for shape in plan:
            bench_generation(run, name, model, hf, device, torch.float32, shape, rounds)
            if compiled is not None:
                bench_generation(run, name, compiled, hf, device, torch.float32, shape, rounds,
                                 label="minineo generate (compiled, static cache)")


def patching_part(folder: Path, device: str, plan: tuple[int, int, int]) -> dict:
    """The engine's whole (layer, pos) grid against `model(..., patch=...)` on a sample of its cells."""
    from minineo.analysis import activation_patching

    batch, pos, sample = plan
    model = minineo.load(folder, device=device)
    clean, corrupted = (t.to(device) for t in prompts(batch, pos, model.config.d_vocab))

    def metric(logits):
        return (logits[:, -1, 10] - logits[:, -1, 20]).mean()

    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names=lambda n: n.endswith("resid_pre"))
        start = time.perf_counter()
        grid = activation_patching(model, corrupted, cache, metric, "resid_pre", "pos")
        engine_s = time.perf_counter() - start
        cells = [(layer, i) for layer in range(model.config.n_layers) for i in range(pos)]
        sampled = cells[::max(1, len(cells) // sample)]
        start = time.perf_counter()
        brute = brute_force_cells(model, corrupted, cache, metric, "resid_pre", "pos", sampled)
        brute_s = (time.perf_counter() - start) / len(sampled) * len(cells)
    engine = torch.tensor([float(grid[c]) for c in sampled], dtype=torch.float64)
    return {"shape": [batch, pos], "cells": len(cells), "cells_timed_for_brute_force": len(sampled),
            "engine_s": engine_s, "brute_force_s": brute_s, "speedup": brute_s / engine_s,
            "max_abs_diff": float((engine - brute).abs().max())}


def profile_part(folder: Path, device: str, dtype: torch.dtype, shape: tuple[int, int]) -> list[dict]:
    """The fast path's top operators by self time (CUDA time on CUDA): where one forward's time goes."""
    from torch.profiler import ProfilerActivity, profile

    model = minineo.load(folder, device=device, dtype=dtype)
    tokens = torch.randint(0, model.config.d_vocab, shape, device=device)
    cuda = device.startswith("cuda")
    with torch.inference_mode():
        model(tokens)
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            model(tokens)
            if cuda:
                torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    total = sum(getattr(e, key, 0) for e in events) or 1
    return [{"op": e.key, "ms": getattr(e, key, 0) / 1e3, "share": getattr(e, key, 0) / total, "calls": e.count}
            for e in events[:12]]


def main(argv: list[str] | None = None) -> dict:
    from minineo.boundary import ScriptFailure, ScriptParser
    from minineo.cli.shared import check_device_option

    parser = ScriptParser("benchmarks.device", description=description(__doc__))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, no torch.compile: the whole run in seconds")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/device_runs/latest"))
    parser.add_argument("--budget-s", type=float, default=400.0, help="stop starting new parts after this")
    parser.add_argument("--tests", default=None, help="the device tests' summary line (from device_check.sh)")
    args = parser.parse_args(argv)
    check_device_option(args.device)  # `--device cuda` without CUDA: one error line, before any work
    plan, device, compile_ = (SMOKE if args.smoke else FULL), args.device, not args.smoke
    budget = Budget(args.budget_s)
    args.out.mkdir(parents=True, exist_ok=True)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 (HF's default too)
    run = Run(machine={"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                       "smoke": args.smoke, "budget_s": args.budget_s, "packages": versions(), "tests": args.tests})
    rounds = plan["rounds"]
    extra: dict = {"local_attention": [], "patching": None, "profile": None, "bandwidth_gbs": {}, "errors": []}
    devices = [device] + (["cpu"] if device != "cpu" else [])
    for d in devices:
        for dtype in (torch.float32, torch.bfloat16):
            size = plan["matmul"] if d == device else 2048
            run.matmul_peak_gflops[f"{d}/{str(dtype)[6:]}"] = matmul_peak_gflops(d, dtype, size)
        extra["bandwidth_gbs"][d] = memory_bandwidth_gbs(d, megabytes=16 if args.smoke else 1024)
    with tempfile.TemporaryDirectory() as tmp:
        configs = tiny_configs() if args.smoke else hf_configs(quick=False)
        folders = {name: save_random_model(config, Path(tmp) / name) for name, config in configs.items()}
        def part(what: str, fn) -> None:  # one failing part (an OOM, a kernel HF lacks) must not lose the others
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - recorded in the report, with its type and message
                extra["errors"].append(f"{what}: {type(err).__name__}: {str(err)[:500]}")
                print(f"error in {what}: {extra['errors'][-1]}", flush=True)

        part("forward", lambda: forward_part(run, plan["forward"], device, folders, budget, compile_, args.smoke,
                                             [torch.float32, torch.bfloat16], rounds))
        # the CPU column of the CUDA-vs-CPU table (eager, float32), early: it is the point; on a CPU-only run the
        # forward part's own float32 rows are that column (measuring them again gave each row twice)
        if device != "cpu":
            part("cpu forward", lambda: forward_part(run, plan["cpu_forward"], "cpu", folders, budget, False, args.smoke,
                                                     [torch.float32], 3))
        for shape in plan["attention"]:
            for dtype in (torch.float32, torch.bfloat16):
                if budget.allows(f"local attention {shape} {str(dtype)[6:]}", 5 if args.smoke else 40):
                    part(f"local attention {shape} {dtype}", lambda shape=shape, dtype=dtype: extra["local_attention"].append(
                        bench_local_attention(shape, plan["window"], device, dtype, rounds, compiled=compile_)))
        part("generation", lambda: generation_part(run, plan["generation"], device, folders, budget, compile_,
                                                   max(2, rounds // 2)))
        if budget.allows("patching engine vs brute force", 5 if args.smoke else 30):
            part("patching", lambda: extra.update(patching=patching_part(folders["gpt2-small"], device, plan["patching"])))
        if budget.allows("profile", 5 if args.smoke else 15):
            shape = plan["forward"]["gpt2-small"][0]
            part("profile", lambda: extra.update(profile={
                "model": "gpt2-small", "dtype": "bfloat16", "shape": list(shape),
                "ops": profile_part(folders["gpt2-small"], device, torch.bfloat16, shape)}))
        if device != "cpu" and compile_ and budget.allows("local attention on the CPU", 60):
            part("cpu local attention", lambda: extra["local_attention"].append(bench_local_attention(
                plan["attention"][0], plan["window"], "cpu", torch.float32, 3, compiled=True)))
    report = asdict(run) | extra | {"skipped": budget.skipped}
    (args.out / "device_run.json").write_text(json.dumps(report, indent=1))
    write_report(report, args.out / "device_run.md")
    print(f"wrote {args.out / 'device_run.json'} and {args.out / 'device_run.md'}", flush=True)
    if report["errors"]:
        raise ScriptFailure(f"{len(report['errors'])} part(s) failed: see errors in {args.out / 'device_run.json'}")
    return report


if __name__ == "__main__":
    from minineo.boundary import run_script

    run_script(main)
