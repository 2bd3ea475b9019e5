"""TransformerLens 3's run_with_cache peak memory on the same weights, in its own venv (a subprocess running
benchmarks/tl3.py): MININEO_TL3_PYTHON, default /work/venvs/tl3/bin/python."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from benchmarks.results import Result, Run

TL3_PYTHON = os.environ.get("MININEO_TL3_PYTHON", "/work/venvs/tl3/bin/python")  # a venv with transformer-lens<4


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
