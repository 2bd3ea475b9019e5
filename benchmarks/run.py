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
import statistics
import os
import subprocess
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

import minineo
from benchmarks.memory import PeakMemory

SHAPES = [(1, 128), (8, 128), (1, 1024), (4, 512)]
QUICK_SHAPES = [(2, 64)]
GENERATION = [(1, 128, 128), (8, 128, 128)]  # (batch, prompt, new tokens)
QUICK_GENERATION = [(2, 8, 4)]
TL3_PYTHON = os.environ.get("MININEO_TL3_PYTHON", "/work/venvs/tl3/bin/python")  # a venv with transformer-lens<4


@dataclass
class Result:
    model: str
    device: str
    dtype: str
    shape: tuple[int, int]
    variant: str
    median_ms: float
    tokens_per_s: float
    gflops: float
    peak_fraction: float
    peak_extra_mb: float | None
    ratio_to_hf: float | None = None
    max_abs_dlogit: float | None = None
    note: str = ""


@dataclass
class GenerationResult:
    model: str
    device: str
    dtype: str
    shape: tuple[int, int, int]  # (batch, prompt, new tokens)
    variant: str
    median_s: float
    tokens_per_s: float  # new tokens (batch x new) per second
    ratio_to_hf: float
    same_tokens_as_hf: bool


@dataclass
class Run:
    machine: dict = field(default_factory=dict)
    matmul_peak_gflops: dict = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    generation: list[GenerationResult] = field(default_factory=list)


# ---- models -----------------------------------------------------------------------------------------

def hf_configs(quick: bool):
    from transformers import GPT2Config, GPTNeoConfig

    layers = 2 if quick else 12
    return {
        "gpt2-small": GPT2Config(n_layer=layers),
        "gpt-neo-125M": GPTNeoConfig(hidden_size=768, num_layers=layers, num_heads=12, window_size=256,
                                     attention_types=[[["global", "local"], layers // 2]], max_position_embeddings=2048),
    }


def save_random_model(hf_config, folder: Path) -> Path:
    """The HF model with random weights, saved as safetensors (both libraries load the same file)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(hf_config).save_pretrained(folder)
    return folder


def load_hf(folder: Path, device: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """HF's attention implementations for this model: eager always, sdpa where HF has it (not GPT-Neo)."""
    from transformers import AutoModelForCausalLM

    models = {}
    for impl in ("eager", "sdpa"):
        try:
            models[impl] = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=impl, dtype=dtype).to(device).eval()
        except (ValueError, ImportError):
            pass  # GPT-Neo has no sdpa in HF
    return models


def transformer_lens_model(folder: Path, device: str, dtype: torch.dtype):
    """TransformerLens 4's TransformerBridge on the same saved weights, or None when it is not installed."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformerBridge.boot_transformers(str(folder), device=device, dtype=dtype).eval()


# ---- measurement ----------------------------------------------------------------------------------

def forward_flops(config: minineo.Config, batch: int, pos: int) -> float:
    """Multiply-adds x 2 of one forward: the projections, q.k and pattern.v (causal half), the unembedding."""
    per_token = config.n_layers * (4 * config.d_model**2 + 2 * config.d_model * config.d_mlp) + config.d_model * config.d_vocab
    attention = 0.0
    for window in config.windows:
        keys = pos * (pos + 1) / 2 if window is None else sum(min(i + 1, window) for i in range(pos))
        attention += 2 * keys * config.d_model
    return 2 * batch * (pos * per_token + attention)


def matmul_peak_gflops(device: str, dtype: torch.dtype, size: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = time_calls({"mm": lambda: a @ b}, device, rounds=5)["mm"]
    return 2 * size**3 / statistics.median(times) / 1e9


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(calls: dict[str, Callable], device: str, rounds: int) -> dict[str, list[float]]:
    """Interleaved rounds: every variant once per round, so drift hits all of them alike."""
    times = {name: [] for name in calls}
    for fn in calls.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in calls.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


# ---- the run ----------------------------------------------------------------------------------------

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


@torch.inference_mode()
def bench_shape(run, name, model, compiled, hf_models, hf32, tl, device, dtype, shape, rounds) -> None:
    batch, pos = shape
    tokens = torch.randint(0, model.config.d_vocab, shape, device=device)
    calls: dict[str, Callable] = {"minineo fast": lambda: model(tokens),
                                  "minineo run_with_cache (all names)": lambda: model.run_with_cache(tokens)}
    if compiled is not None:
        calls["minineo compiled"] = lambda: compiled(tokens)
    for impl, hf in hf_models.items():
        calls[f"HF {impl}"] = lambda hf=hf: hf(tokens)
    if tl is not None:
        calls["TransformerLens forward"] = lambda: tl(tokens)
        calls["TransformerLens run_with_cache"] = lambda: tl.run_with_cache(tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = time_calls(calls, device, rounds)
    reference = "HF sdpa" if "HF sdpa" in calls else "HF eager"
    flops = forward_flops(model.config, batch, pos)
    peak = run.matmul_peak_gflops[f"{device}/{str(dtype)[6:]}"]
    float32_logits = hf32(tokens).logits.float()
    memory = PeakMemory(device)
    for variant, ts in times.items():
        median = statistics.median(ts)
        result = Result(name, device, str(dtype)[6:], shape, variant, median * 1e3, batch * pos / median,
                        flops / median / 1e9, flops / median / 1e9 / peak, memory.measure(calls[variant]),
                        statistics.median(times[reference]) / median)
        if variant.startswith("minineo"):
            out = calls[variant]()
            logits = out[0] if isinstance(out, tuple) else out
            result.max_abs_dlogit = float((logits.float() - float32_logits).abs().max())
        if variant == reference:
            result.note = "reference"
        run.results.append(result)
        print(f"{name} {device} {result.dtype} {batch}x{pos} {variant}: {result.median_ms:.1f} ms, "
              f"{result.ratio_to_hf:.2f}x {reference}, {100 * result.peak_fraction:.0f}% of peak", flush=True)


@torch.inference_mode()
def bench_generation(run, name, model, hf, device, dtype, shape, rounds) -> None:
    """Greedy model.generate against HF's generate (use_cache=True, its default attention), same weights."""
    batch, prompt, new = shape
    tokens = torch.randint(0, model.config.d_vocab, (batch, prompt), device=device)
    mask = torch.ones_like(tokens)
    calls = {"minineo generate": lambda: model.generate(tokens, max_new_tokens=new),
             "HF generate": lambda: hf.generate(tokens, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                                do_sample=False, use_cache=True, pad_token_id=0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = torch.equal(calls["minineo generate"](), calls["HF generate"]())
        times = time_calls(calls, device, rounds)
    hf_median = statistics.median(times["HF generate"])
    for variant, ts in times.items():
        median = statistics.median(ts)
        result = GenerationResult(name, device, str(dtype)[6:], shape, variant, median, batch * new / median,
                                  hf_median / median, same)
        run.generation.append(result)
        print(f"{name} {device} {result.dtype} generate {batch}x{prompt}+{new} {variant}: {result.tokens_per_s:.1f} tok/s, "
              f"{result.ratio_to_hf:.2f}x HF, same tokens: {same}", flush=True)


def bench_tl3(run: Run, name: str, folder: Path, device: str, shapes: list[tuple[int, int]]) -> None:
    """TransformerLens 3's run_with_cache peak memory, float32, in its own venv (a subprocess; see tl3.py)."""
    if not Path(TL3_PYTHON).exists():
        print(f"TransformerLens 3 not measured: no {TL3_PYTHON} (set MININEO_TL3_PYTHON)", flush=True)
        return
    shape_arg = ",".join(f"{b}x{p}" for b, p in shapes)
    done = subprocess.run([TL3_PYTHON, str(Path(__file__).parent / "tl3.py"), str(folder), "--shapes", shape_arg,
                           "--device", device, "--rounds", "1"], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"TransformerLens 3 failed: {done.stderr[-2000:]}", flush=True)
        return
    for line in lines:
        r = json.loads(line)
        batch, pos = r["shape"]
        run.results.append(Result(name, device, "float32", (batch, pos), "TransformerLens 3 run_with_cache",
                                  r["median_ms"], batch * pos / r["median_ms"] * 1e3, 0.0, 0.0, r["peak_extra_mb"],
                                  max_abs_dlogit=r["max_abs_dlogit"], note="separate process: time not interleaved"))
        print(f"{name} {device} float32 {batch}x{pos} TransformerLens 3 run_with_cache: peak +{r['peak_extra_mb']:.0f} MB",
              flush=True)


def summary(run: Run) -> list[dict]:
    """Per (model, device, dtype, shape): the ratios the issue asks about."""
    rows = []
    keys = sorted({(r.model, r.device, r.dtype, tuple(r.shape)) for r in run.results})
    for key in keys:
        by = {r.variant: r for r in run.results if (r.model, r.device, r.dtype, tuple(r.shape)) == key}
        fast, rwc = by.get("minineo fast"), by.get("minineo run_with_cache (all names)")
        tl3 = by.get("TransformerLens 3 run_with_cache")
        if fast is None or rwc is None:
            continue
        rows.append({"model": key[0], "device": key[1], "dtype": key[2], "shape": key[3],
                     "fast_vs_hf": fast.ratio_to_hf, "rwc_over_fast": rwc.median_ms / fast.median_ms,
                     "rwc_peak_mb": rwc.peak_extra_mb, "tl3_peak_mb": tl3.peak_extra_mb if tl3 else None,
                     "rwc_peak_over_tl3": (rwc.peak_extra_mb / tl3.peak_extra_mb
                                           if tl3 and tl3.peak_extra_mb and rwc.peak_extra_mb is not None else None)})
    return rows


def print_table(run: Run) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="forward pass: time, throughput, share of the measured matmul peak, ratio to HF (higher = faster)")
    for column in ("model", "device", "dtype", "shape", "variant", "median ms", "tok/s", "GFLOP/s", "% peak",
                   "peak +MB", "speed vs HF", "max|Δlogit| vs f32"):
        table.add_column(column, justify="left" if column in ("model", "variant") else "right")
    for r in run.results:
        table.add_row(r.model, r.device, r.dtype, f"{r.shape[0]}x{r.shape[1]}", r.variant, f"{r.median_ms:.1f}",
                      f"{r.tokens_per_s:,.0f}", f"{r.gflops:.0f}", f"{100 * r.peak_fraction:.0f}%",
                      "-" if r.peak_extra_mb is None else f"{r.peak_extra_mb:.0f}",
                      "-" if r.ratio_to_hf is None else f"{r.ratio_to_hf:.2f}x",
                      "-" if r.max_abs_dlogit is None else f"{r.max_abs_dlogit:.1e}")
    console = Console(width=max(170, Console().width))
    console.print(table)
    rows = summary(run)
    if rows:
        table = Table(title="the targets: fast path vs HF, run_with_cache (every name) vs fast, peak memory vs TransformerLens 3")
        for column in ("model", "device", "dtype", "shape", "fast vs HF", "rwc / fast", "rwc peak +MB",
                       "TL3 rwc peak +MB", "rwc / TL3 memory"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for r in rows:
            table.add_row(r["model"], r["device"], r["dtype"], f"{r['shape'][0]}x{r['shape'][1]}", f"{r['fast_vs_hf']:.2f}x",
                          f"{r['rwc_over_fast']:.2f}", "-" if r["rwc_peak_mb"] is None else f"{r['rwc_peak_mb']:.0f}",
                          "-" if r["tl3_peak_mb"] is None else f"{r['tl3_peak_mb']:.0f}",
                          "-" if r["rwc_peak_over_tl3"] is None else f"{r['rwc_peak_over_tl3']:.2f}")
        console.print(table)
    if run.generation:
        table = Table(title="generation: greedy, new tokens per second (higher = faster)")
        for column in ("model", "device", "dtype", "batch x prompt + new", "variant", "median s", "tok/s", "vs HF",
                       "same tokens as HF"):
            table.add_column(column, justify="left" if column in ("model", "variant") else "right")
        for g in run.generation:
            table.add_row(g.model, g.device, g.dtype, f"{g.shape[0]}x{g.shape[1]}+{g.shape[2]}", g.variant,
                          f"{g.median_s:.2f}", f"{g.tokens_per_s:.1f}", f"{g.ratio_to_hf:.2f}x", str(g.same_tokens_as_hf))
        console.print(table)
    console.print("matmul peak measured in this run (GFLOP/s): " +
                  ", ".join(f"{k} {v:.0f}" for k, v in run.matmul_peak_gflops.items()))


def main(argv: list[str] | None = None) -> Run:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2-layer models, one small shape, few rounds (CI smoke run)")
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (cuda only where present)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--shapes", default=None, help="e.g. 1x1024,8x128 (default: the four standard shapes; 'none')")
    parser.add_argument("--models", default=None, help="gpt2-small, gpt-neo-125M, or both (default)")
    parser.add_argument("--dtypes", default=None, help="float32, bfloat16, or both (default)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--generation", default=None,
                        help="generation shapes BATCHxPROMPT+NEW, e.g. 1x128+128,8x128+128 (default those two; 'none')")
    parser.add_argument("--tl3", choices=("auto", "yes", "no"), default="auto",
                        help="TransformerLens 3 run_with_cache memory in a subprocess (auto: not with --quick)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    args = parser.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    run = Run(machine={"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None})
    rounds = args.rounds or (2 if args.quick else 7)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = [] if args.shapes == "none" else [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    models = args.models.split(",") if args.models else None
    generation = QUICK_GENERATION if args.quick else GENERATION
    if args.generation:
        generation = [] if args.generation == "none" else [
            tuple(int(n) for n in g.replace("+", "x").split("x")) for g in args.generation.split(",")]
    tl3 = args.tl3 == "yes" or (args.tl3 == "auto" and not args.quick)
    for device in devices:
        bench_device(run, device, args.quick, rounds, not args.no_compile and not args.quick, shapes, models,
                     generation, tl3, [getattr(torch, d) for d in args.dtypes.split(",")] if args.dtypes else None)
    print_table(run)
    args.out.write_text(json.dumps(asdict(run), indent=1))
    print(f"wrote {args.out}")
    return run


if __name__ == "__main__":
    main()
